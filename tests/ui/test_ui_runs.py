"""The Runs page's logic on synthetic run folders: the list (status as it really is, duration, each command's key
result, a damaged file named), filters, the report cut at its plots, events, a running run's progress, and each
command's view."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import all_runs, hold_lock, own_nas_run, run_folder, running_nas, step_record

from agentlab.ui import runs, views


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_list_reads_every_run_folder_with_status_duration_and_key_result(root: Path) -> None:
    made = all_runs(root)
    run_folder(root, "nas", "20260104-000000-dead", status="running", ended=None,  # its process is gone
               started="2026-01-04T00:00:00+00:00")
    running, fd = running_nas(root)
    try:
        rows = {r.id: r for r in runs.list_runs(root)}
    finally:
        os.close(fd)
    assert set(rows) == {f"{p.parent.name}/{p.name}" for p in [*made.values(), running]} | {"nas/20260104-000000-dead"}
    assert list(rows)[0] == "nas/20260104-000000-dead"  # the newest start first, whatever the folder name
    assert rows["nas/20260104-000000-dead"].cells()["duration"] == ""  # no end, not running
    nas = rows["nas/20260102-100000-nas"]
    assert (nas.command, nas.status, nas.cells()["duration"]) == ("nas", "completed", "3 min 05 s")
    assert nas.result == "best val MSE 0.2500 (run_0001), 2 trials"
    assert rows["debate/20260102-110000-debate"].result == "answer 12, agreement 67%"
    assert rows["evolve/20260102-120000-evolve"].result == "best g1c0 fitness 0.800 (task 0.750)"
    assert rows["compress/20260102-130000-compress"].result == "gguf Q8_0: speedup 3.00x"
    results = made["compress"] / "results.json"  # the base model recommended: the experiment only to compare
    data = json.loads(results.read_text())
    data["recommended"].update(keep_base=True, feasible=False)
    results.write_text(json.dumps(data))
    again = {r.id: r for r in runs.list_runs(root)}
    assert again["compress/20260102-130000-compress"].result == (
        "keep the base model (closest experiment: gguf Q8_0: speedup 3.00x (closest; constraints not met))")
    assert rows["llm-bench/20260102-140000-llm-bench"].result == "1/2 available; fastest fast"
    assert rows["nas/20260103-090000-nas"].status == "running"
    assert rows["nas/20260104-000000-dead"].status == "interrupted"
    broken = rows["pipeline/20260101-090000-broken"]
    assert broken.status == "failed" and "not UTF-8" in broken.problems["results.json"]
    assert broken.cells()["result"] == "? results.json"


def test_a_nas_ensembles_final_model_is_named_as_its_results_say(root: Path) -> None:
    """`agentlab nas --max-iterations 1` said "ensemble of 1 trial and 1 naive forecast"; the list said "ensemble val
    MSE 0.3728 (2 trials)" of a run of 1 trial. The list now shows the block's own name (nas writes it); a run from
    before it had one gets its members counted as members, not as trials."""
    members = [{"run_id": "naive_seasonal", "family": "naive_seasonal"}, {"run_id": "run_0000", "family": "informer"}]
    best = {"run_id": "run_0000", "val_mse": 0.7706}
    block = {"val_mse": 0.3728, "members": members, "selection": {"kept": "ensemble"}}
    run_folder(root, "nas", "20260102-100000-a", results={
        "best": best, "trials": 1, "final_model": "ensemble",
        "ensemble": {**block, "name": "ensemble of 1 trial and 1 naive forecast"}})
    run_folder(root, "nas", "20260102-110000-b", results={
        "best": best, "trials": 1, "final_model": "ensemble", "ensemble": block})
    rows = {r.id: r.result for r in runs.list_runs(root)}
    assert rows["nas/20260102-100000-a"] == ("best val MSE 0.7706 (run_0000), final model: ensemble of 1 trial and 1 "
                                             "naive forecast (val MSE 0.3728), 1 trial")
    assert rows["nas/20260102-110000-b"] == ("best val MSE 0.7706 (run_0000), final model: ensemble of 2 members "
                                             "(val MSE 0.3728), 1 trial")


def test_results_of_another_shape_are_a_problem_not_a_crash(root: Path) -> None:
    run_folder(root, "nas", "x", results={"best": "not a dict"})
    (row,) = runs.list_runs(root)
    assert row.result == "" and "not the results of a 'nas' run" in row.problems["results.json"]


@pytest.mark.parametrize(("field", "value", "said"), [
    ("started", 12345, "started is 12345, not a string"), ("status", ["x"], "status is ['x'], not a string"),
    ("command", 5, "command is 5, not a string"), ("ended", "yesterday", "not an ISO date and time")])
def test_a_run_json_field_of_the_wrong_type_is_named_not_a_crash(root: Path, field: str, value: object,
                                                                  said: str) -> None:
    """`"started": 12345` in one run.json raised TypeError for the whole Runs page (every run gone)."""
    import json

    path = run_folder(root, "nas", "bad")
    run_folder(root, "nas", "good")
    info = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**info, field: value}))
    rows = {r.id: r for r in runs.list_runs(root)}
    assert said in rows["nas/bad"].problems["run.json"] and not rows["nas/good"].problems
    assert rows["nas/bad"].cells()["result"] == "? run.json" and rows["nas/bad"].command == "nas"


def test_several_run_json_fields_of_the_wrong_type_are_each_named(root: Path) -> None:
    """Only the first wrong field was named: fixing it showed the next one, one at a time."""
    import json

    path = run_folder(root, "nas", "bad")
    info = json.loads((path / "run.json").read_text())
    (path / "run.json").write_text(json.dumps({**info, "command": 5, "status": ["x"], "ended": "yesterday"}))
    (row,) = runs.list_runs(root)
    assert row.problems["run.json"] == (f"{path / 'run.json'}: command is 5, not a string; status is ['x'], not a "
                                        "string; ended is 'yesterday', not an ISO date and time")
    assert row.command == "nas" and row.status == "damaged"  # was `unknown`, which no filter or doc named


def test_filters_by_command_status_and_text(root: Path) -> None:
    all_runs(root)
    rows = runs.list_runs(root)
    assert {r.command for r in runs.filter_runs(rows, commands=["nas", "evolve"])} == {"nas", "evolve"}
    assert [r.id for r in runs.filter_runs(rows, statuses=["failed"])] == ["pipeline/20260101-090000-broken"]
    assert [r.command for r in runs.filter_runs(rows, text="Q8_0")] == ["compress"]
    assert runs.filter_runs(rows, commands=["nas"], text="nothing like it") == []
    assert runs.list_runs(root / "missing") == []


def test_report_is_cut_at_its_plots_and_fetches_nothing_from_outside(root: Path) -> None:
    path = all_runs(root)["nas"]
    parts = runs.report_parts(path)
    images = [value for kind, value in parts if kind == "image"]
    assert images == [str((path / "optimization_history.png").resolve()),
                      str((path / "trials/run_0001/learning_curve.png").resolve())]
    text = "".join(value for kind, value in parts if kind == "markdown")
    assert "![" not in text and "(image 'tracker': http://example.invalid/t.png)" in text
    assert [p.name for p in runs.plots(path)] == ["optimization_history.png", "learning_curve.png"]
    assert [e["kind"] for e in runs.event_rows(path)] == ["epoch", "trial", "trial"]


def test_a_running_nas_run_says_trial_epoch_and_best_so_far(root: Path) -> None:
    path, fd = running_nas(root)
    os.close(fd)
    assert views.progress("nas", path) == ["trial 2/5", "run_0001: epoch 2, val MSE 0.3900",
                                           "best so far: val MSE 0.4200 (run_0000)"]
    (path / "events.jsonl").write_text("not json\n")
    assert views.progress("nas", path)[0] == "trial 2/5"  # a torn line is skipped


def test_command_views(root: Path) -> None:
    made = all_runs(root)
    trials = views.nas_trials(made["nas"])
    assert [t["run"] for t in trials] == ["run_0000", "run_0001"]
    assert trials[1]["changes"] == "d_model=64, learning_rate=0.003"
    assert views.nas_curve(trials)[-1] == {"trial": 1, "val MSE": 0.25, "best so far": 0.25}
    assert views.nas_learning_curve(made["nas"], "run_0001")[1] == {"epoch": 2, "train loss": 0.3, "val MSE": 0.25}
    rounds = views.debate_rounds(made["debate"])
    assert [(r["round"], [t["agent"] for t in r["turns"]], r["winner"]) for r in rounds] == [
        (0, ["a", "b", "c"], "12"), (1, ["a", "b", "c"], "12")]
    assert rounds[0]["votes"][0] == {"answer": "12", "weight": 0.9, "count": 2, "voters": "a, b"}
    lineage = views.evolve_lineage(made["evolve"])
    assert '"persona_a" -> "g1c0" [label="0.70"' in lineage["dot"] and "fillcolor=gold" in lineage["dot"]
    assert lineage["curve"] == [{"generation": 0, "best fitness": 0.55, "mean fitness": 0.4},
                                {"generation": 1, "best fitness": 0.8, "mean fitness": 0.6}]
    points = views.compress_points(made["compress"])
    assert [(p["label"], p["set"]) for p in points] == [("base model", "base"), ("gguf Q8_0", "Pareto front"),
                                                        ("prune 50%", "other")]
    table, levels = views.bench_rows(made["llm-bench"])
    assert table[0] == {"model": "fast", "available": "yes", "ok": "4/4", "TTFT p50 (ms)": 100.0, "p50 (ms)": 100.0,
                        "p90 (ms)": 200.0, "p99 (ms)": 300.0, "tokens/s per request (p50)": 50.0}
    assert table[1]["available"] == "no: server_error" and len(levels) == 1
    # one request's decode speed and the level's throughput (report.md's "throughput tokens/s"): two names, both shown
    assert (levels[0]["tokens/s per request (p50)"], levels[0]["throughput tokens/s"]) == (50.0, 180.0)
    assert views.progress("unknown-command", made["nas"]) == ["3 events; last: trial"]


def test_the_agent_timeline_shows_a_dash_not_none_and_what_an_edit_changed(tmp_path: Path) -> None:
    import json

    events = [{"kind": "agent_step", "ts": 1.0, "step": 1, "tool": "run_trial", "arguments": "{}", "tokens": 9},
              {"kind": "agent_approval", "ts": 2.0, "answer": "edit", "note": "",
               "changes": {"model.d_model": 32}},
              {"kind": "agent_approval", "ts": 3.0, "answer": "no", "note": "too big"},
              {"kind": "agent_default", "ts": 4.0, "why": "no tool call"}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    rows = views.agent_timeline(tmp_path)
    assert [(r["tool"], r["arguments"], r["result"]) for r in rows[1:]] == [
        ("(approval)", "model.d_model=32", "edit"), ("(approval)", "too big", "no"),
        ("(candidate 0)", "no tool call", "-")]
    assert all(v != "None" and v is not None for r in rows for v in r.values())
    assert rows[1]["step"] == rows[1]["tokens"] == rows[1]["seconds"] == "-" and rows[0]["tokens"] == "9"


@pytest.mark.parametrize(("metric", "direction", "said"), [
    ("score", "maximize", "best score 0.81 (run_0002; higher is better), 3 trials"),
    ("loss", "minimize", "best loss 0.125 (run_0002; lower is better), 3 trials"),
])
def test_a_search_of_your_own_command_shows_its_metric_by_name(root: Path, metric: str, direction: str,
                                                                said: str) -> None:
    value = 0.81 if metric == "score" else 0.125
    run_folder(root, "nas", "own", results={"objective": {"command": "python train.py"}, "metric": metric,
                                            "direction": direction, "trials": 3,
                                            "best": {"run_id": "run_0002", metric: value}})
    (row,) = runs.list_runs(root)
    assert row.result == said and not row.problems


def test_a_jobs_output_log_goes_when_the_ui_process_ends(tmp_path: Path) -> None:
    """The log of a run started from the UI lives in the UI process's temporary folder, removed when it stops;
    before, each job left a folder in /tmp for good (the UI tests left four a run)."""
    import os
    import subprocess
    import sys

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    code = ("from pathlib import Path\nfrom agentlab.ui import jobs\n"
            "job = jobs.start(['config', 'show', 'nas'], 'config', None, root=Path('runs'))\n"
            "assert job.wait(120) is not None and job.log.is_file()\n"
            "second = jobs.start(['config', 'show', 'nas'], 'config', None, root=Path('runs'))\n"
            "second.wait(120)\nprint(job.log, second.log)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    first, second = (Path(p) for p in done.stdout.split())
    assert first.parent.parent == second.parent.parent  # one folder of the process, a folder per job in it
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(("direction", "best"), [("maximize", [0.5, 0.8, 0.8]), ("minimize", [0.5, 0.5, 0.5])])
def test_the_trials_of_your_own_command_are_its_metric_in_its_direction(root: Path, direction: str,
                                                                        best: list[float]) -> None:
    """The trials and the best-so-far curve read `val_mse` alone: a search of the user's own command had an empty
    curve (and the page a StreamlitAPIException: no column "trial")."""
    path = own_nas_run(root, "own", [0.5, 0.8, None, 0.7], direction=direction)
    metric = views.nas_metric(path)
    assert (metric.key, metric.label, metric.direction, metric.own) == ("val_acc", "val_acc", direction, True)
    trials = views.nas_trials(path)
    assert [t["val_acc"] for t in trials] == [0.5, 0.8, None, 0.7] and "val MSE" not in trials[0]
    curve = views.nas_curve(trials, metric)
    assert [(c["trial"], c["val_acc"], c["best so far"]) for c in curve] == [
        (0, 0.5, best[0]), (1, 0.8, best[1]), (3, 0.7, best[2])]
    (path / "trials" / "run_0001").mkdir(parents=True)  # the step lines the command printed
    (path / "trials" / "run_0001" / "history.json").write_text('[{"step": 1, "val_acc": 0.6, "loss": 1.0}]')
    assert views.nas_learning_curve(path, "run_0001", metric) == [{"step": 1, "val_acc": 0.6}]
    (path / "agent_state.json").unlink()  # the trial events alone (a run from before agent_state.json)
    assert views.nas_curve(views.nas_trials(path), metric) == curve
    (path / "config.yaml").unlink()  # results.json names the metric too
    run_folder(root, "nas", "finished", results={"objective": {"command": "c"}, "metric": "score",
                                                 "direction": "maximize"})
    assert views.nas_metric(root / "nas" / "finished").label == "score"
    assert views.nas_metric(all_runs(root / "other")["nas"]) == views.FORECASTER


@pytest.mark.parametrize(("direction", "said"), [
    ("maximize", "best so far: val_acc 0.9 (run_0001; higher is better)"),
    ("minimize", "best so far: val_acc 0.7 (run_0000; lower is better)")])
def test_a_running_search_of_your_own_command_says_its_best_by_its_metric(root: Path, direction: str,
                                                                         said: str) -> None:
    """The live line took the minimum and said "val MSE" whatever the search: with `direction: maximize` it showed
    the worst trial as the best so far."""
    path = own_nas_run(root, "own", [0.7, 0.9, 0.8], direction=direction, status="running")
    assert views.progress("nas", path) == ["trial 4/5", said]


def test_every_form_of_image_from_elsewhere_is_text(root: Path) -> None:
    """An image with a title and one by reference were fetched (the filter took ``![a](url)`` alone)."""
    path = all_runs(root)["nas"]
    (path / "report.md").write_text(
        'a ![t](http://host/x.png "a title") b ![r][r1] c ![R2][] d ![r3] e ![g](<http://host/g.png>)\n'
        'f <img src="http://host/i.png"> g ![nope][zz] h ![local](optimization_history.png "the plot") i ![l][loc]\n'
        '\n[r1]: http://host/r.png\n[r2]: <http://host/r2.png> "t"\n[R3]: http://host/r3.png\n'
        '[loc]: trials/run_0001/learning_curve.png\n')
    parts = runs.report_parts(path)
    assert [value for kind, value in parts if kind == "image"] == [
        str((path / name).resolve()) for name in ("optimization_history.png", "trials/run_0001/learning_curve.png")]
    text = "".join(value for kind, value in parts if kind == "markdown")
    assert "![" not in text  # a `![` that would make an image again: none left
    for alt, url in (("t", "x"), ("r", "r"), ("R2", "r2"), ("r3", "r3"), ("g", "g"), ("", "i")):
        assert f"(image {alt!r}: http://host/{url}.png)" in text
    assert "!\\[nope][zz]" in text  # no definition: not an image in Markdown either, and escaped all the same


def test_a_folder_name_that_is_not_utf8_is_listed_escaped(root: Path) -> None:
    """One run folder named with a byte that is not UTF-8 broke the Runs page's whole table."""
    import os

    all_runs(root)
    odd = root / "nas" / os.fsdecode(b"caf\xe9-run")
    (root / "nas" / "20260102-100000-nas").rename(odd)
    rows = {r.id: r for r in runs.list_runs(root)}
    assert "nas/caf\\xe9-run" in rows and rows["nas/caf\\xe9-run"].path == odd
    assert all(cell.encode("utf-8") for r in rows.values() for cell in r.cells().values())
    assert runs.shown("caf\udce9") == "caf\\xe9" and runs.shown("ok é") == "ok é"


@pytest.mark.parametrize("content", ["null", "[1, 2]", '"text"'])
def test_results_json_that_is_no_object_is_named(root: Path, content: str) -> None:
    """`null` or `[1, 2]` left the result blank with no `?` (a dict of the wrong shape was flagged)."""
    path = run_folder(root, "pipeline", "x")
    (path / "results.json").write_text(content)
    (row,) = runs.list_runs(root)
    assert row.cells()["result"] == "? results.json" and "expected a JSON object" in row.problems["results.json"]


def test_damaged_step_files_are_named(root: Path) -> None:
    """A truncated step file was a row of None, and `steps` that is a file an empty table, neither named."""
    import json

    path = run_folder(root, "pipeline", "x", files={"steps/01-draft.json": step_record(0, "draft")})
    (path / "steps" / "02-vote.json").write_text(json.dumps(step_record(1, "vote"))[:30])
    (path / "steps" / "03-last.json").write_text("[1, 2]")
    rows, problems = views.pipeline_steps(path)
    assert [r["stage"] for r in rows] == ["draft"]
    assert len(problems) == 2 and "steps/02-vote.json:1: invalid JSON" in problems[0]
    assert "steps/03-last.json: expected a JSON object" in problems[1]
    other = run_folder(root, "pipeline", "y")
    (other / "steps").write_text("")
    assert views.pipeline_steps(other) == ([], [f"{other / 'steps'}: not a folder (the session's step files, "
                                               "steps/NN-STAGE.json, go in it)"])


def test_a_resumed_training_shows_each_step_once_as_the_adapter_kept_it(root: Path) -> None:
    """A train-persona resume logs the steps after its checkpoint again (after a `resume` event): the loss curve and
    the live line take the last of each step (they listed steps 3 and 4 twice)."""
    logs = [{"kind": "train_log", "step": s, "loss": loss, "max_steps": 4} for s, loss in
            [(1, 5.0), (2, 4.0), (3, 3.5), (4, 3.4)]]
    redone = [{"kind": "resume", "checkpoint": "checkpoint-2", "step": 2},
              {"kind": "train_log", "step": 3, "loss": 3.0, "max_steps": 4},
              {"kind": "train_log", "step": 4, "loss": 2.9, "max_steps": 4}]
    path = run_folder(root, "train-persona", "t", status="running", events=logs + redone)
    assert views.persona_loss(path) == [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 3, "loss": 3.0},
                                        {"step": 4, "loss": 2.9}]
    assert views._persona_progress(path, {}) == ["step 4/4, loss 2.9000", "lowest loss so far: 2.9000"]


def test_evolve_progress_counts_what_the_cli_counts_and_names_the_task_score(root: Path) -> None:
    """The total is every individual the run scores, baselines included (their `scored` events counted, and 51/32
    was shown at the end of a default run); a log-likelihood is not called an accuracy."""
    from agentlab.evolve.config import EvolveConfig
    from agentlab.evolve.run import total_trials

    cfg = EvolveConfig(seeds=[Path("a"), Path("b"), Path("c")])
    data = cfg.model_dump(mode="json")
    scored = [{"kind": "scored", "id": "a", "generation": 0, "task": -4.199},
              {"kind": "scored", "id": "b", "generation": 0, "task": -5.0}]
    path = run_folder(root, "evolve", "e", status="running", events=scored)
    assert total_trials(cfg) == 51
    assert views._evolve_progress(path, data) == ["individual 2/51 scored",
                                                  "generation 0; best task log-likelihood so far -4.199 (a)"]
    for search, baselines in (("uniform", ["uniform", "ties"]), ("ga", []), ("ties", ["ties", "uniform", "uniform"])):
        other = cfg.model_copy(update={"search": search, "baselines": baselines, "population": 5, "elite": 1})
        assert views._evolve_total(other.model_dump(mode="json")) == total_trials(other)
    accuracy = {**data, "task": {**data["task"], "score": "accuracy"}}
    assert views._evolve_progress(path, accuracy)[1] == "generation 0; best task accuracy so far -4.199 (a)"


def test_a_failed_pipeline_session_says_where_it_stopped() -> None:
    """A failed session's results.json has final: null; the runs table said "final: None"."""
    from agentlab.ui.runs import key_result

    failed = {"final": None, "failed_stage": {"name": "second", "index": 2, "position": 2, "error": "x"}}
    assert key_result("pipeline", failed) == "failed at stage second"
    assert key_result("pipeline", {"final": "Paris is  the capital"}) == "final: Paris is the capital"


def test_a_folder_without_run_json_is_listed_as_damaged(root: Path) -> None:
    """A run folder whose run.json is gone (a start cut short, a copy) was left out of the list, silently, and a
    run.json that is not JSON showed status `unknown`."""
    run_folder(root, "nas", "20260102-100000-good")
    (root / "nas" / "20260102-110000-cut").mkdir()
    (root / "nas" / "20260102-110000-cut" / "config.yaml").write_text("name: cut\n")
    (root / "nas" / ".hidden").mkdir()
    (root / "compress" / "workspace").mkdir(parents=True)  # compress's default workspace: no run
    (root / "pipeline" / "20260102-120000-lost").mkdir(parents=True)  # the only folder of its command
    torn = run_folder(root, "nas", "20260102-130000-torn")
    (torn / "run.json").write_text('{"command": "nas", "sta')
    out = run_folder(root, "llm-bench", "x").rename(root / "bench")  # an --out run under the root: its own
    (out / "trials" / "run_0000").mkdir(parents=True)  # subfolders are no runs
    (root / "notes" / "draft").mkdir(parents=True)  # a folder of no command: not a runs folder
    rows = {r.id: r for r in runs.list_runs(root)}
    assert set(rows) == {"nas/20260102-100000-good", "nas/20260102-110000-cut", "pipeline/20260102-120000-lost",
                         "nas/20260102-130000-torn", "bench"}
    cut = rows["nas/20260102-110000-cut"]
    assert (cut.command, cut.status, cut.cells()["result"]) == ("nas", "damaged", "? run.json")
    assert cut.problems["run.json"] == (f"{root / 'nas' / '20260102-110000-cut'}: no run.json (not a run folder, or "
                                        "its start was cut short)")
    assert rows["pipeline/20260102-120000-lost"].status == "damaged"
    torn_row = rows["nas/20260102-130000-torn"]
    assert torn_row.status == "damaged" and "run.json" in torn_row.problems
    assert rows["nas/20260102-100000-good"].status == "completed"


def test_lines_of_events_that_cannot_be_read_are_counted(root: Path) -> None:
    """A torn line in the middle of events.jsonl was skipped, and nothing said so."""
    path = all_runs(root)["nas"]
    events = path / "events.jsonl"
    assert runs.unreadable_lines(events) == 0
    lines = events.read_text().splitlines(keepends=True)
    events.write_text(lines[0] + '{"kind": "trial", "numb' + lines[1] + "[1, 2]\n\n" + lines[2] + '{"kind": "ep')
    # the torn line ran into the next (one line), a list, a blank line; the last line, being written, not counted
    assert runs.unreadable_lines(events) == 2
    assert [e["kind"] for e in runs.event_rows(path)] == ["epoch", "trial"]
    assert runs.unreadable_lines(path / "missing.jsonl") == 0


@pytest.mark.parametrize(("command", "status", "advice"), [
    ("nas", "interrupted", "continue it with `agentlab nas --resume {path}`"),
    ("compress", "failed", "continue it with `agentlab compress --resume {path}`"),
    ("evolve", "interrupted", "continue it with `agentlab evolve run --resume {path}`"),
    ("debate-eval", "interrupted", "continue it with `agentlab debate eval --resume {path}`"),
    ("train-persona", "failed", "continue it with `agentlab train-persona --resume {path}`"),
    ("pipeline", "interrupted", "no stage finished: run it again (`agentlab pipeline rerun {path}`"),
    ("llm-bench", "interrupted", "measure again with `agentlab llm-bench -c {config}`"),  # its own (RUN before)
    ("nas", "completed", None), ("unknown", "interrupted", None)])
def test_a_stopped_run_says_how_to_continue_it(root: Path, command: str, status: str, advice: str | None) -> None:
    """An interrupted run's Report tab said "no report.md yet (the command writes it when it finishes)" and no more."""
    path = run_folder(root, command, "20260102-100000-x y", status=status)
    (row,) = runs.list_runs(root)
    said = runs.continue_advice(row)
    if advice is None:
        assert said is None
    else:
        assert said is not None and said.startswith(advice.format(path=f"'{path.absolute()}'",
                                                                  config=f"'{path.absolute() / 'config.yaml'}'"))


def test_a_failed_jobs_error_is_said_once(tmp_path: Path) -> None:
    """A failed job showed the page's red "error" box, and in it the command's own "error:" again."""
    import subprocess
    import sys

    from agentlab.ui.jobs import Job

    log = tmp_path / "output.log"
    log.write_text("loading\nerror: c.yaml:2: name: bad\nc.yaml:3: rounds: bad\nhint: fix the field(s) above\nbye\n")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    job = Job(["pipeline", "rerun"], tmp_path, log, process)
    assert job.error() == "c.yaml:2: name: bad\nc.yaml:3: rounds: bad\nhint: fix the field(s) above"


def test_a_run_config_of_nested_aliases_is_refused_before_a_view_walks_it(root: Path) -> None:
    """A config.yaml of nested anchors ("billion laughs") was read as a dict of shared lists, which the debate view
    then printed whole (`topic: *a8`: 9**9 values); it is read as a config that is not YAML: empty."""
    laughs = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = run_folder(root, "debate", "20260102-110000-laughs", config="\n".join(laughs) + "\ntopic: *a8\n")
    empty = views.run_config(path) == {}  # not in the assert: a failure's message would print it whole
    assert empty
    fine = run_folder(root, "debate", "20260102-120000-fine", config="q: &q What is 3 times 4?\ntopic: *q\n")
    assert views.run_config(fine)["topic"] == "What is 3 times 4?"


def test_the_events_tab_reads_events_jsonl_once(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Events tab read the file for its rows and again for the count of unreadable lines: twice a render."""
    import builtins

    from agentlab.ui import render

    path = all_runs(root)["nas"]
    events = path / "events.jsonl"
    events.write_text(events.read_text() + "[1, 2]\n" + '{"kind": "ep')
    opened: list[str] = []
    real_open = builtins.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("events.jsonl"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    shown: dict[str, Any] = {}
    st = render.st
    monkeypatch.setattr(st, "caption", lambda text, *a, **k: shown.setdefault("caption", text))
    monkeypatch.setattr(st, "dataframe", lambda rows, *a, **k: shown.setdefault("rows", rows))
    render.events_tab(path)
    assert opened == [str(events)]
    assert [e["kind"] for e in shown["rows"]] == ["epoch", "trial", "trial"]
    # the list, and the torn last line: the run completed, nothing writes that line any more
    assert shown["caption"].startswith("the last 3 events of events.jsonl; 2 lines of it could not be read")


@pytest.mark.parametrize("status", ["completed", "failed", "interrupted", "running"])
def test_a_torn_last_line_of_events_is_counted_once_the_run_is_not_running(root: Path, status: str) -> None:
    """A last line of events.jsonl without its newline (a crash mid-append) was never counted, the run long over:
    only a live run may still be writing it. A `running` run.json whose process is gone is interrupted."""
    path = run_folder(root, "nas", f"20260105-000000-{status}", status=status, ended=None,
                      events=[{"kind": "trial", "number": 0}])
    events = path / "events.jsonl"
    events.write_text(events.read_text() + '{"kind": "ep')
    assert runs.event_table(path)[1] == 1
    assert runs.unreadable_lines(events, settled=True) == 1
    assert runs.unreadable_lines(events) == 0
    if status == "running":  # its process alive: the line may be being written
        fd = hold_lock(path)
        try:
            assert runs.event_table(path)[1] == 0
        finally:
            os.close(fd)


def test_a_persona_run_with_a_null_loss_is_summed_up() -> None:
    """train-persona writes a NaN loss as null in results.json: the runs list's summary raised on None."""
    from agentlab.ui.runs import _persona

    assert _persona({"first_loss": None, "final_loss": 0.5, "steps": 3}) == "loss - -> 0.500, 3 steps"

"""The Runs page's logic on synthetic run folders: the list (status as it really is, duration, each command's key
result, a damaged file named), filters, the report cut at its plots, events, a running run's progress, and each
command's view."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ui_helpers import all_runs, run_folder, running_nas

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
    assert rows["llm-bench/20260102-140000-llm-bench"].result == "1/2 available; fastest fast"
    assert rows["nas/20260103-090000-nas"].status == "running"
    assert rows["nas/20260104-000000-dead"].status == "interrupted"
    broken = rows["pipeline/20260101-090000-broken"]
    assert broken.status == "failed" and "not UTF-8" in broken.problems["results.json"]
    assert broken.cells()["result"] == "? results.json"


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
                        "p90 (ms)": 200.0, "p99 (ms)": 300.0, "tokens/s": 50.0}
    assert table[1]["available"] == "no: server_error" and len(levels) == 1
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

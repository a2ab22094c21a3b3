"""The app in Streamlit's AppTest: the Runs page lists and filters the fixture run folders and opens one (report with
its plots, the command's view, config, events), a running run shows its progress, each command's view draws, and the
Models page shows the models check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402
from ui_helpers import all_runs, hold_lock, models_file, nas_run, own_nas_run, run_folder, running_nas, step_record  # noqa: E402, E501

from agentlab.ui import APP, views  # noqa: E402
from agentlab.ui.render import plain  # noqa: E402


def app(**query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    return at.run()


def page(name: str) -> AppTest:
    return AppTest.from_string(f"from agentlab.ui import pages\npages.{name}_page()\n", default_timeout=60).run()


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def test_runs_page_lists_filters_and_opens_a_nas_run(in_tmp: Path) -> None:
    made = all_runs(in_tmp / "runs")
    at = app()
    assert not at.exception
    listed = at.dataframe[0].value
    assert set(listed["run"]) == {f"{p.parent.name}/{p.name}" for p in made.values()}
    assert "best val MSE 0.2500 (run_0001), 2 trials" in set(listed["result"])
    at.multiselect(key="runs_commands").set_value(["nas", "debate"]).run()
    assert sorted(at.dataframe[0].value["command"]) == ["debate", "nas"]
    at.multiselect(key="runs_commands").set_value([]).run()
    at.multiselect(key="runs_statuses").set_value(["failed"]).run()
    assert list(at.dataframe[0].value["run"]) == ["pipeline/20260101-090000-broken"]
    at.multiselect(key="runs_statuses").set_value([]).run()

    at.selectbox(key="runs_open_None").select("nas/20260102-100000-nas").run()
    assert not at.exception
    assert at.query_params["run"] == "nas/20260102-100000-nas"
    assert [t.label for t in at.tabs] == ["Report", "Trials", "Plots", "Config", "Events"]
    assert "Best: **run_0001**" in texts(at, "markdown")
    captions = [e.proto.imgs[0].caption for e in at.get("image")]
    # the report's two plots where it links them, then the Plots tab's; the outside URL is not an image
    assert captions == ["optimization_history.png", "trials/run_0001/learning_curve.png"] * 2
    assert "(image 'tracker': http://example.invalid/t.png)" in texts(at, "markdown")
    trials = at.dataframe[1].value
    assert list(trials["run"]) == ["run_0000", "run_0001"] and list(trials["val MSE"]) == [0.5, 0.25]
    assert "max_iterations: 3" in texts(at, "code")
    assert list(at.dataframe[-1].value["kind"]) == ["epoch", "trial", "trial"]


def test_a_running_run_shows_its_progress(in_tmp: Path) -> None:
    path, fd = running_nas(in_tmp / "runs")
    try:
        at = app(run="nas/20260103-090000-nas")
        assert not at.exception
        progress = texts(at, "info")
        assert "trial 2/5" in progress and "run_0001: epoch 2, val MSE 0.3900" in progress
        assert "best so far: val MSE 0.4200" in progress
        assert at.dataframe[0].value["status"][0] == "running"
    finally:
        os.close(fd)
    assert app(run="nas/20260103-090000-nas").dataframe[0].value["status"][0] == "interrupted"  # its owner is gone


@pytest.mark.parametrize(("run", "view", "check"), [
    ("debate/20260102-110000-debate", "Transcript", lambda at: len(at.get("chat_message")) == 6
     and "final answer (reconcile): 12" in texts(at, "success")),
    ("evolve/20260102-120000-evolve", "Lineage", lambda at: len(at.get("graphviz_chart")) == 1),
    ("compress/20260102-130000-compress", "Pareto front", lambda at: len(at.get("vega_lite_chart")) == 2
     and list(at.dataframe[1].value["set"]) == ["base", "Pareto front", "other"]),
    ("llm-bench/20260102-140000-llm-bench", "Latency",
     lambda at: list(at.dataframe[1].value["model"]) == ["fast", "dead"]),
])
def test_each_command_view_draws(in_tmp: Path, run: str, view: str, check: Any) -> None:
    all_runs(in_tmp / "runs")
    at = app(run=run)
    assert not at.exception
    assert view in [t.label for t in at.tabs]
    assert check(at)


def test_a_damaged_run_is_named_not_a_crash(in_tmp: Path) -> None:
    all_runs(in_tmp / "runs")
    at = app(run="pipeline/20260101-090000-broken")
    assert not at.exception
    assert "not UTF-8" in texts(at, "warning")
    at = app(run="nope/x")  # a link to a run that is not there: said, not silently ignored
    assert not at.exception and "?run=nope/x: no such run folder under" in texts(at, "warning")
    at = app(run="![x](https://example.com/p.png)")  # shown as text: the page fetches nothing from elsewhere
    assert not at.exception and "\\!\\[x\\](https://example.com/p.png): no such run" in texts(at, "warning")


def test_a_damaged_image_is_named_and_the_rest_of_the_run_is_shown(in_tmp: Path) -> None:
    """Random bytes in a plot the report links, a 0-byte .png and an .svg that is not UTF-8: Pillow's error stopped the
    page at the Report tab (Config and Events empty). Each is named in its place; the good image is still drawn."""
    path = nas_run(in_tmp / "runs")
    (path / "optimization_history.png").write_bytes(bytes(range(256)) * 4)
    (path / "empty.png").write_bytes(b"")
    (path / "z.svg").write_bytes(b"\xff\xfe<svg")
    at = app(run="nas/20260102-100000-nas")
    assert not at.exception
    warned = texts(at, "warning")
    assert warned.count("optimization\\_history.png: damaged image, not shown (not a PNG, JPEG or SVG image it can "
                        "read)") == 2  # in the report where it links it, and in the Plots tab
    assert "empty.png: damaged image, not shown (an empty file)" in warned and "z.svg: damaged image" in warned
    captions = [e.proto.imgs[0].caption for e in at.get("image")]
    assert captions == ["trials/run_0001/learning_curve.png"] * 2
    assert "max_iterations: 3" in texts(at, "code")  # the Config tab
    assert list(at.dataframe[-1].value["kind"]) == ["epoch", "trial", "trial"]  # the Events tab


def test_no_runs_says_how_to_start_one(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = app()  # no runs/ at all: said so (a typo'd --runs said "no run folders under it yet")
    assert not at.exception and "runs does not exist (a typo in --runs?)" in texts(at, "info")
    assert "start one from the shell (`agentlab nas --max-iterations 2`)" in texts(at, "info")  # ./runs: the default
    (in_tmp / "runs").mkdir()
    at = app()
    assert not at.exception and "no run folders under" in texts(at, "info")
    # another --runs folder (`agentlab ui --runs DIR` sets AGENTLAB_RUNS): the command said wrote to ./runs instead
    monkeypatch.setenv("AGENTLAB_RUNS", str(in_tmp / "my runs"))
    at = app()
    assert not at.exception
    assert f"(`AGENTLAB_RUNS='{in_tmp / 'my runs'}' agentlab nas --max-iterations 2`)" in texts(at, "info")


def test_a_stopped_run_says_how_to_continue_and_a_damaged_one_says_so(in_tmp: Path) -> None:
    """An interrupted run's Report tab said only "no report.md yet (the command writes it when it finishes)"; a
    folder without run.json was "no such run folder"; a run.json that is not JSON gave the header
    "nas · unknown · started  · " with empty fields; a torn line of events.jsonl was left out silently."""
    root = in_tmp / "runs"
    stopped = run_folder(root, "nas", "20260102-100000-stopped", status="interrupted",
                         events=[{"kind": "trial"}, {"kind": "trial"}])
    (stopped / "events.jsonl").write_text('{"kind": "trial"}\n{"kind": "tri\n{"kind": "trial"}\n')
    failed = run_folder(root, "evolve", "20260102-110000-failed", status="failed")
    info = json.loads((failed / "run.json").read_text())
    (failed / "run.json").write_text(json.dumps({**info, "error": "ValueError: no seeds"}))
    at = app(run="nas/20260102-100000-stopped")
    assert not at.exception
    assert (f"the run was interrupted (Ctrl-C, a kill, or its process died) before it finished, so it wrote no "
            f"report.md; continue it with `agentlab nas --resume {stopped.absolute()}`") in texts(at, "warning")
    assert "no report.md yet" not in texts(at, "caption")
    assert ("the last 2 events of events.jsonl; 1 line of it could not be read (not a JSON object: torn by a crash, "
            "or edited) and is left out") in texts(at, "caption")
    at = app(run="evolve/20260102-110000-failed")
    assert (f"the run failed (ValueError: no seeds), so it wrote no report.md; continue it with `agentlab evolve run "
            f"--resume {failed.absolute()}`") in texts(at, "warning")

    (root / "nas" / "20260102-120000-cut").mkdir()
    at = app(run="nas/20260102-120000-cut")  # listed, and opened as damaged
    assert not at.exception and "nas/20260102-120000-cut" in list(at.dataframe[0].value["run"])
    assert texts(at, "caption").splitlines()[1] == "nas · damaged"
    assert plain(f"{root / 'nas' / '20260102-120000-cut'}: no run.json (not a run folder, or its start was cut "
                 "short)") in texts(at, "warning")
    (root / "elsewhere").mkdir()  # not in a command's folder: not listed, but a link to it says what it is
    at = app(run="elsewhere")
    assert not at.exception
    assert plain(f"?run=elsewhere: {root / 'elsewhere'}: no run.json (not a run folder, or its start was cut "
                 "short)") in texts(at, "warning")
    torn = run_folder(root, "nas", "20260102-130000-torn")
    (torn / "run.json").write_text('{"command": "nas", "sta')
    at = app(run="nas/20260102-130000-torn")
    assert not at.exception and texts(at, "caption").splitlines()[1] == "nas · damaged"
    assert "run.json" in texts(at, "warning")


def test_a_link_to_a_run_the_list_does_not_show_says_why(in_tmp: Path) -> None:
    """?run=../outside/r (a folder with run.json outside the runs folder) said "no run.json (not a run folder, or its
    start was cut short)"."""
    root = in_tmp / "runs"
    nas_run(root)
    outside = run_folder(in_tmp / "outside", "nas", "r")
    deep = run_folder(root / "a", "nas", "r")  # three levels down: not listed
    for link, said in ((f"../outside/nas/{outside.name}", f"outside the runs folder {root}/"),
                       (str(outside), f"outside the runs folder {root}/"),
                       ("a/nas/r", f"not a run the list shows (a run folder is {root}/COMMAND/FOLDER"),
                       ("nas/nothere", f"no such run folder under {root}/")):
        at = app(run=link)
        assert not at.exception
        warning = texts(at, "warning")
        assert plain(f"?run={link}: {said}") in warning and "no run.json" not in warning, link
    assert (deep / "run.json").is_file()


def test_models_page_is_the_models_check(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    (in_tmp / "configs").mkdir()
    models_file(in_tmp / "configs", tiny_model["gguf"])
    at = page("models")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == ["a", "b", "together"] and set(table["fits"]) == {"yes"}
    assert list(table["on disk"]) == ["yes", "yes", ""] and list(table["type"]) == ["f32", "f32", ""]
    assert "together: the 2 required models, 1 loaded (names of one file with the same settings load it once)" in \
        texts(at, "caption")
    assert "every model the base pipeline needs" in texts(at, "success")
    at.text_input(key="models_file").input("nothing.yaml").run()
    assert "nothing.yaml: models file not found" in texts(at, "error")


def test_models_page_says_when_the_models_do_not_fit_together(in_tmp: Path, tiny_model: dict[str, Path],
                                                               capsys: pytest.CaptureFixture) -> None:
    """Two models that fit one by one but not together: `agentlab models check` said "not ready: the required models
    do not fit together" (exit 1), the page "every model the base pipeline needs is on disk and fits"."""
    from agentlab.cli import main
    from agentlab.pipeline.load import load_models
    from agentlab.pipeline.models import check_models

    for name in ("a", "b"):  # two files: one file of the same settings loads once
        (in_tmp / f"{name}.gguf").write_bytes(tiny_model["gguf"].read_bytes())
    path = in_tmp / "configs" / "models.yaml"
    path.parent.mkdir()
    text = (f"models_directory: {in_tmp}\ndefaults: {{n_ctx: 256}}\n"
            "models:\n  a: {file: a.gguf}\n  b: {file: b.gguf}\n")
    path.write_text(text)
    (one,) = {s.estimate.total_bytes for s in check_models(load_models(path))}
    path.write_text(text + f"resources: {{safety_factor: 1.0, memory_budget_gb: {1.5 * one / 2 ** 30}}}\n")
    at = page("models")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["model"]) == ["a", "b", "together"] and list(table["fits"]) == ["yes", "yes", "no"]
    assert "not ready: the required models do not fit together" in texts(at, "error") and not at.success
    capsys.readouterr()
    assert main(["models", "check", str(path), "--json"]) == 1  # the CLI's own words, on the page
    assert f"together: {json.loads(capsys.readouterr().out)['together']['note']}" in texts(at, "caption").splitlines()


def test_models_page_says_yes_parts_as_models_list_does(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A built-in whose part wheels are installed but whose GGUF is not assembled yet: `models list` says "yes
    (parts)", the page said "yes"."""
    from agentlab.ui import pages

    def status() -> list[dict[str, Any]]:
        return [{"name": name, "installed": installed, "assembled": assembled, "size_bytes": 10, "extra": "qwen",
                 "license": "Apache-2.0", "path": None}
                for name, installed, assembled in (("split", True, False), ("whole", True, True),
                                                   ("one", True, None), ("none", False, None))]

    monkeypatch.setattr(pages, "builtin_status", status)
    at = page("models")
    assert not at.exception
    installed = dict(zip(at.dataframe[-1].value["name"], at.dataframe[-1].value["installed"], strict=True))
    assert [installed[n] for n in ("split", "whole", "one")] == ["yes (parts)", "yes", "yes"]
    assert installed["none"].startswith("no: pip install")


def _stopped_at_an_approval(path: Path, action: dict[str, Any]) -> None:
    """The agent's checkpoint of a run stopped at --approve without a terminal: the graph waits at the approval's
    interrupt (a real AgentRun whose approver raises AwaitingApproval, as the CLI's does under the UI)."""
    from agentlab.core.agent.approval import AwaitingApproval
    from agentlab.core.agent.harness import AgentRun
    from agentlab.core.agent.runtime import Reply, Tool
    from agentlab.core.llm.types import ToolCall

    class Driver:
        actions = ("run_trial",)

        def brief(self) -> list[dict[str, Any]]:
            return [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

        def tools(self) -> list[Tool]:
            return [Tool("run_trial", "r", {"type": "object"})]

        def check_action(self, args: dict[str, Any], tool: str | None = None) -> tuple[dict[str, Any] | None, str]:
            return dict(action), ""

        def default_action(self, why: str) -> dict[str, Any]:
            return dict(action)

        def reflect(self) -> str:
            return ""

    class Model:
        name = "m"

        def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
            return Reply([ToolCall("c1", "run_trial", json.dumps(action["args"]))])

    def nobody(question: dict[str, Any]) -> dict[str, Any]:
        raise AwaitingApproval

    run = AgentRun(Driver(), Model(), path / "agent.sqlite", approver=nobody)
    with pytest.raises(AwaitingApproval):
        run.advance(None)
    run.close()


def test_a_run_waiting_for_approval_is_answered_from_the_runs_page(in_tmp: Path, monkeypatch: Any) -> None:
    """The question is read from the agent's checkpoint; a button resumes the run with the answer (``--resume RUN
    --answer ...``: the graph's interrupt gets it), no file is written."""
    from agentlab.core.agent import approval
    from agentlab.ui import jobs

    path = run_folder(in_tmp / "runs", "nas", "20260103-090000-nas", status="interrupted",
                      config="search:\n  max_iterations: 5\n")
    action = {"args": {"candidate": 1, "reason": "cyclenet leads"}, "params": {"model.family": "cyclenet"},
              "reason": "cyclenet leads", "key": "k"}
    _stopped_at_an_approval(path, action)
    assert approval.pending(path) == {**action, "call_id": "c1"}
    started: list[list[str]] = []

    class Started:
        returncode = None

    def answer(run: Path, command: str, reply: dict[str, Any], **_: Any) -> Any:
        started.append(approval.resume_args(command, run, reply))
        return Started()

    monkeypatch.setattr(jobs, "answer", answer)
    at = app(run="nas/20260103-090000-nas")
    assert not at.exception
    assert at.dataframe[0].value["status"][0] == "waiting for approval"
    assert "the agent wants to run candidate 1: model.family=cyclenet" in texts(at, "code")
    at.text_input(key="approve_changes").set_value("model.d_model=32, train.loss=mae").run()
    at.button(key="approve_edit").click().run()
    assert not at.exception
    assert started == [["nas", "--resume", str(path), "--answer", json.dumps(
        {"answer": "edit", "note": "", "changes": {"model.d_model": 32, "train.loss": "mae"}})]]
    assert "your answer was sent" in texts(at, "info")
    assert not list(path.glob("approval*.json"))


def test_the_agent_tab_shows_the_agents_timeline(in_tmp: Path) -> None:
    import json

    path, fd = running_nas(in_tmp / "runs")
    steps = [{"kind": "agent_step", "ts": 1.0, "step": 1, "tool": "suggest", "arguments": "{}", "tokens": 9},
             {"kind": "agent_tool", "ts": 2.0, "tool": "suggest", "summary": "candidate 0: model.d_model=32"},
             {"kind": "plan", "ts": 3.0, "origin": "guard", "notes": ["guard: 3 trials without a new best"]}]
    with open(path / "events.jsonl", "a") as handle:
        handle.writelines(json.dumps(e) + "\n" for e in steps)
    try:
        at = app(run="nas/20260103-090000-nas")
        assert not at.exception
        assert "Agent" in [t.label for t in at.tabs]
        rows = [df.value for df in at.dataframe if "tool" in getattr(df.value, "columns", [])]
        assert rows and list(rows[0]["tool"]) == ["suggest", "(guard)"]
        assert rows[0]["result"][0] == "candidate 0: model.d_model=32"
    finally:
        os.close(fd)


def test_a_search_of_your_own_command_opens_with_its_metric(in_tmp: Path) -> None:
    """A real `agentlab nas` of the user's own command (metric val_acc, maximized) opened from the Runs page: its
    trials under val_acc and the curve of the highest so far. It was a StreamlitAPIException (no column "trial":
    the curve read val_mse alone), every tab after it empty."""
    from agentlab.cli import main

    (in_tmp / "train.py").write_text("import argparse\np = argparse.ArgumentParser()\n"
                                     "p.add_argument('--lr', type=float, default=0.1)\n"
                                     "print(f'val_acc: {1 - (p.parse_args().lr - 0.3) ** 2}')\n")
    (in_tmp / "nas.yaml").write_text('objective: {command: "python train.py {args}", metric: val_acc, '
                                     "direction: maximize}\n"
                                     "search: {max_iterations: 3, space: {lr: {low: 0.01, high: 1.0}}}\n")
    assert main(["nas", "-c", "nas.yaml", "--out", str(in_tmp / "runs" / "nas" / "mine")]) == 0
    at = app(run="nas/mine")
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Report", "Trials", "Plots", "Config", "Events"]
    trials = at.dataframe[1].value
    values = list(trials["val_acc"])
    assert len(values) == 3 and "val MSE" not in trials.columns
    (chart,) = at.get("vega_lite_chart")
    assert '"title": "val_acc (higher is better)"' in chart.proto.spec
    curve = views.nas_curve(views.nas_trials(in_tmp / "runs" / "nas" / "mine"), views.nas_metric(
        in_tmp / "runs" / "nas" / "mine"))
    assert [c["best so far"] for c in curve] == [max(values[:i + 1]) for i in range(3)]
    assert "command: python train.py {args}" in texts(at, "code")  # the tabs after Trials are drawn


def test_a_running_search_of_your_own_command_with_no_value_yet_says_so(in_tmp: Path) -> None:
    """Live (it redraws every 2 s): no trial with a value yet (the first one failed) is a line, not a traceback."""
    path = own_nas_run(in_tmp / "runs", "own", [None], status="running")
    fd = hold_lock(path)
    try:
        at = app(run="nas/own")
        assert not at.exception
        assert "no trial with a val_acc yet" in texts(at, "caption")
        assert at.dataframe[1].value["state"][0] == "failed"
    finally:
        os.close(fd)


def test_a_folder_name_that_is_not_utf8_is_shown_escaped_and_opens(in_tmp: Path) -> None:
    """One run folder named with a byte that is not UTF-8 broke the whole Runs page and the History page
    (StreamlitDataframeConversionError: the table could not encode the name)."""
    import shutil

    made = all_runs(in_tmp / "runs")
    shutil.copytree(made["nas"], in_tmp / "runs" / "nas" / os.fsdecode(b"caf\xe9-run"))
    session = run_folder(in_tmp / "runs", "pipeline", "20260105-000000-cafe",
                         files={"steps/01-draft.json": step_record(0, "draft"), "session.json": {"input": "x"}})
    session = session.rename(session.with_name(os.fsdecode(b"20260105-000000-caf\xe9")))
    at = app()
    assert not at.exception
    listed = set(at.dataframe[0].value["run"])
    assert {"nas/caf\\xe9-run", "pipeline/20260105-000000-caf\\xe9", "nas/20260102-100000-nas"} <= listed
    assert len(listed) == len(made) + 2
    at = app(run="nas/caf\\xe9-run")
    assert not at.exception and "Best: **run_0001**" in texts(at, "markdown")
    assert len(at.get("image")) == 4  # the report's plots and the Plots tab's, read from the real folder
    at = page("history")
    assert not at.exception
    assert list(at.dataframe[0].value["session"]) == ["20260101-090000-broken", "20260105-000000-caf\\xe9"]
    assert "00 draft · single · 0.10 s" in [e.label for e in at.expander] and session.is_dir()


@pytest.mark.parametrize("which", ["manual", "base"])
def test_a_pipeline_name_too_long_for_a_folder_is_the_forms_error(in_tmp: Path, which: str) -> None:
    """A name of more than 100 characters passed the form's check, then Run raised an uncaught RunDirError."""
    (in_tmp / "configs").mkdir()
    (in_tmp / "m.gguf").write_bytes(b"GGUF")  # a model file is there: nothing is loaded before the run starts
    models_file(in_tmp / "configs", in_tmp / "m.gguf")
    name = "n" * 101
    (in_tmp / "configs" / "pipeline.yaml").write_text(f"name: {name}\nbase_pipeline:\n  stages:\n"
                                                      "    - {name: first, model: a}\n")
    at = page(which)
    if which == "manual":  # the form refuses the name itself, as `config validate` would: nothing to run or save
        at.text_input(key="manual_name").input(name).run()
        assert not at.exception
        assert "name: not usable in a folder name: 101 characters, more than 100" in texts(at, "error")
        assert at.button(key="manual_run").disabled and at.button(key="manual_save").disabled
        return
    # the pipeline file is refused when it is read, as `config validate` refuses it: nothing to run
    assert not at.exception
    assert "name: not usable in a folder name: 101 characters, more than 100" in texts(at, "error")
    assert at.button(key=f"{which}_run").disabled
    assert f"job_{which}" not in at.session_state and not (in_tmp / "runs").exists()


def test_damaged_pipeline_files_are_named_on_the_runs_and_history_pages(in_tmp: Path) -> None:
    """A truncated step file was a "None" row in the Stages tab and `completed` on the History page, where
    `agentlab pipeline history` says `damaged` (and `? run.json` for a run.json it cannot read); `steps` that is a
    file was an empty tab; a results.json that is `null` a blank result with no `?`."""
    from rich.text import Text

    from agentlab.cli.pipeline import _state
    from agentlab.pipeline.sessions import list_sessions

    root = in_tmp / "runs"
    run_folder(root, "pipeline", "20260105-000000-damaged", files={
        "steps/01-draft.json": step_record(0, "draft"), "steps/02-vote.json": json.dumps(step_record(1, "vote"))[:30]})
    # (a finished session holds session.json: without it, it is damaged too)
    no_folder = run_folder(root, "pipeline", "20260105-000001-file", results=None,
                           files={"steps": "not a folder", "session.json": {"input": "x"}})
    (no_folder / "results.json").write_text("null")
    run_folder(root, "pipeline", "20260105-000002-fine",
               files={"steps/01-draft.json": step_record(0, "draft"), "session.json": {"input": "x"}})
    (run_folder(root, "pipeline", "20260105-000003-no-info") / "run.json").write_text("{")
    at = app(run="pipeline/20260105-000000-damaged")
    assert not at.exception
    assert "steps/02-vote.json:1: invalid JSON" in texts(at, "warning")
    assert [e.label for e in at.expander] == ["00 draft"]
    at = app(run="pipeline/20260105-000001-file")
    assert not at.exception
    assert "steps: not a folder" in texts(at, "warning") and "results.json: expected a JSON object, got null" in \
        texts(at, "warning")
    assert dict(zip(at.dataframe[0].value["run"], at.dataframe[0].value["result"], strict=True))[
        "pipeline/20260105-000001-file"] == "? results.json"

    at = page("history")
    assert not at.exception
    shown = dict(zip(at.dataframe[0].value["session"], at.dataframe[0].value["status"], strict=True))
    assert shown == {"20260105-000000-damaged": "damaged", "20260105-000001-file": "damaged",
                     "20260105-000002-fine": "completed", "20260105-000003-no-info": "? run.json"}
    assert shown == {s["id"]: Text.from_markup(_state(s)).plain for s in list_sessions()}  # the CLI's status


def test_the_latency_tables_say_which_tokens_per_s_and_a_dash_for_no_value(in_tmp: Path) -> None:
    """The per-concurrency table called the per-request speed "tokens/s", where report.md's table calls the level's
    throughput "output tokens/s" (other numbers), and had no throughput; a dead model's cells said None, where the
    report says -."""
    import pyarrow as pa

    all_runs(in_tmp / "runs")
    at = app(run="llm-bench/20260102-140000-llm-bench")
    assert not at.exception

    def shown(index: int) -> list[dict[str, Any]]:
        styler = at.dataframe[index].proto.arrow_data.styler
        return pa.ipc.open_stream(styler.display_values).read_all().to_pylist()

    models, levels = shown(1), shown(2)
    assert models[1]["model"] == "dead" and models[1]["p50 (ms)"] == "-"
    assert models[1]["tokens/s per request (p50)"] == "-" and models[0]["tokens/s per request (p50)"] == "50.0"
    assert (levels[0]["tokens/s per request (p50)"], levels[0]["throughput tokens/s"]) == ("50.0", "180.0")
    assert list(at.dataframe[1].value["p50 (ms)"])[0] == 100.0  # still a number underneath (it sorts as one)
    assert "throughput tokens/s: the output tokens of all the level's requests over its wall time" in \
        texts(at, "caption")


def test_base_page_counts_stages_and_a_missing_file_offers_no_option_to_leave_out(in_tmp: Path) -> None:
    """"local: 1 stages"; a pipeline file not there said "or leave that option out for the defaults" (the page has
    no option to leave out)."""
    (in_tmp / "configs").mkdir()
    (in_tmp / "m.gguf").write_bytes(b"GGUF")
    models_file(in_tmp / "configs", in_tmp / "m.gguf")
    (in_tmp / "configs" / "pipeline.yaml").write_text("name: one\nbase_pipeline:\n  stages:\n"
                                                      "    - {name: first, model: a}\n")
    at = page("base")
    assert not at.exception and "**one**: 1 stage" in [str(m.value) for m in at.markdown]
    assert list(at.dataframe[0].value["reads"]) == ["previous"]
    at.text_input(key="base_pipeline").input("configs/nothere.yaml").run()
    assert not at.exception
    said = texts(at, "error")
    assert "configs/nothere.yaml: pipeline file not found" in said and "leave that option out" not in said
    assert "build one on the Manual page" in said and at.button(key="base_run").disabled


def test_base_page_stages_that_read_several_stages_are_text(in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """configs/pipeline.yaml (a stage with `input_from: [draft, vote]`) printed pyarrow's ArrowTypeError ("Expected
    bytes, got a 'list' object", column reads) in the server's terminal."""
    (in_tmp / "configs").mkdir()
    (in_tmp / "m.gguf").write_bytes(b"GGUF")
    models_file(in_tmp / "configs", in_tmp / "m.gguf")
    (in_tmp / "configs" / "pipeline.yaml").write_text(
        "name: three\nbase_pipeline:\n  stages:\n    - {name: draft, model: a}\n    - {name: vote, model: b}\n"
        "    - {name: final, model: a, input_from: [draft, vote]}\n")
    at = page("base")
    assert not at.exception
    assert list(at.dataframe[0].value["reads"]) == ["previous", "previous", "draft, vote"]
    assert "ArrowTypeError" not in caplog.text


def test_manual_page_save_where_no_file_can_be_written_is_its_error_line(in_tmp: Path) -> None:
    """"Save as" /proc/z.yaml showed a FileNotFoundError traceback on the page."""
    (in_tmp / "m.gguf").write_bytes(b"GGUF")
    models = models_file(in_tmp, in_tmp / "m.gguf")
    at = page("manual")
    at.text_input(key="manual_models").input(str(models)).run()
    at.text_input(key="manual_path").input("/proc/z.yaml").run()
    at.button(key="manual_save").click().run()
    assert not at.exception
    assert "/proc/z.yaml: cannot be written (No such file or directory)" in texts(at, "error")

"""The agent that changes code (issue 60), driven by a scripted model on a tiny project: a kept change becomes the
base of later trials (and the sampler tunes on it), a worse change is dropped, a crash is shown to the agent and its
fix counts in the budget, a change to a protected file is refused, kill/resume keeps the budget and the version, the
user's tree stays byte-identical, and the best version is committed on the run's branch and applied by `nas apply`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.core.errors import ConfigError
from agentlab.nas import run_nas_optimization
from agentlab.testing.agents import ScriptAgent, scripted_llm

TRAIN = """\
import json, sys
p = json.load(open(sys.argv[1]))
OFFSET = 3.0
print(json.dumps({"loss": (p["x"] - 1) ** 2 + OFFSET}))
"""


def project(root: Path, git: bool = False) -> Path:
    folder = root / "project"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "eval.py").write_text("print('the evaluation')\n")
    if git:
        for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "start"]):
            subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", *args], cwd=folder, check=True)
    return folder


def config(folder: Path, **objective: Any) -> dict[str, Any]:
    return {"objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss", "cwd": str(folder),
                          "params": {"x": 4.0}, "editable": ["train.py"], "unreviewed_changes": True, **objective},
            "search": {"planner": "agent", "pruner": "none", "tune_every": 1, "seed": 0,
                       "agent": {"guard_patience": 10},
                       "space": {"x": {"low": -5.0, "high": 5.0}}}}


def edit(old: str, new: str, reason: str, path: str = "train.py") -> tuple[str, dict[str, Any]]:
    return ("edit_code", {"edits": [{"path": path, "old": old, "new": new}], "reason": reason})


CALLS = [
    ("read_project", {"path": "train.py"}),
    edit("print", "print", "cheat", path="eval.py"),  # protected: the schema refuses it, the router asks again
    edit("OFFSET = 3.0", "OFFSET = 0.5", "a smaller offset"),  # trial 1: kept; trial 2: the sampler tunes on it
    ("read_project", {"path": "train.py"}),  # the best version: OFFSET = 0.5
    edit("OFFSET = 0.5", "OFFSET = 2.0", "a larger offset"),  # trial 3: worse, dropped
    edit("OFFSET = 0.5", "OFFSET = 0.5\nraise ValueError('boom')", "a crash"),  # trial 4: crashed, a traceback
    edit("OFFSET = 0.5", "OFFSET = 0.25", "the fix"),  # trial 5: kept
]


def results_of(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


def test_code_changes_kept_dropped_crashed_and_refused(tmp_path: Path) -> None:
    folder = project(tmp_path)
    before = (folder / "train.py").read_bytes()
    model = ScriptAgent(CALLS)
    out = tmp_path / "run"
    results = run_nas_optimization(max_iterations=6, config=config(folder), out=out, llm=scripted_llm(model))
    assert results["trials"] == 6
    assert not (out / "llm.yaml").exists()  # a script cannot be written: it would come back as a model saying "ok"
    fates = [(r["trial"], r["fate"]) for r in results["code_changes"]]
    assert fates == [("run_0001", "kept"), ("run_0003", "dropped"), ("run_0004", "crashed"), ("run_0005", "kept")]
    assert results["code_version"]["kept"] == [1, 5]
    assert results["best"]["loss"] == pytest.approx((results["best"]["params"]["x"] - 1) ** 2 + 0.25)
    seen = [str(m["content"]) for step in model.seen for m in step if m.get("role") == "tool"]
    # the refused change: edit_code's schema offers the editable files alone, so the router shows the model its
    # error and asks again (the agent's own refusal behind it: test_code_change)
    assert any("'eval.py' is not one of ['train.py']" in text for text in seen)
    assert results["agent"]["invalid_tool_calls"] == 1  # counted though repaired (it said 0 invalid)
    # later trials ran on the kept changes: the credit of the picks says the changes' effect is not in it
    assert results["agent"]["picks_compared_on_changed_code"] is True
    assert any("OFFSET = 0.5" in text for text in seen)  # read_project shows the kept version
    assert any("boom" in text for text in seen)  # the crash's stderr reached the agent
    # the sampler's trial ran on the kept version, with the kept change's code
    tune = json.loads((out / "agent_state.json").read_text())["runs"][2]
    assert tune["origin"] == "tune" and tune["loss"] == pytest.approx((tune["params"]["x"] - 1) ** 2 + 0.5)
    assert "OFFSET = 0.5" in (out / "trials" / "run_0002" / "code" / "train.py").read_text()
    assert "-OFFSET = 0.5\n+OFFSET = 2.0" in (out / "trials" / "run_0003" / "change.diff").read_text()
    report = (out / "report.md").read_text()
    assert "## Code changes" in report and "| run_0003 | a larger offset | train.py +1 -1 |" in report
    assert "(1 invalid," in report and "this leaves the changes' own effect out" in report
    trials = report.split("## Trials")[1]
    assert "| run_0003 | agent | code: a larger offset" in trials  # the change trial is no base-params row
    crash = next(line for line in report.split("## Code changes")[1].splitlines() if line.startswith("| run_0004 |"))
    assert crash.endswith(" |") and "boom" in crash  # one table row, with the error (the stderr tail broke the row)
    assert (folder / "train.py").read_bytes() == before  # the user's tree untouched
    assert "+OFFSET = 0.25" in (out / "best.patch").read_text()
    assert main(["nas", "apply", str(out)]) == 0
    assert "OFFSET = 0.25" in (folder / "train.py").read_text()


def test_a_space_used_up_on_a_kept_version_hands_the_turn_to_the_agent_then_stops_as_exhausted(
        tmp_path: Path) -> None:
    """Two values of x and tune_every 2: the kept change ran x=4 on its version and the tune x=1, so the second tune
    had nothing left; the search stopped there (before: with an error, exit 1) though the agent had a change to run."""
    folder = project(tmp_path)
    cfg = config(folder)
    cfg["search"].update(tune_every=2, space={"x": {"choices": [4.0, 1.0]}})
    calls = [edit("OFFSET = 3.0", "OFFSET = 0.5", "smaller"), edit("OFFSET = 0.5", "OFFSET = 0.25", "smaller still")]
    results = run_nas_optimization(max_iterations=8, config=cfg, out=tmp_path / "run",
                                   llm=scripted_llm(ScriptAgent(calls)))
    assert [(r["trial"], r["fate"]) for r in results["code_changes"]] == [("run_0001", "kept"), ("run_0003", "kept")]
    assert results["stop_reason"].startswith("every configuration of the search space was tried")
    assert results["best"]["loss"] == pytest.approx(0.25)


def test_a_change_that_writes_a_protected_file_at_run_time_is_refused_not_crashed(tmp_path: Path) -> None:
    folder = project(tmp_path)
    cheat = edit("OFFSET = 3.0", "OFFSET = 0.0\nopen('eval.py', 'w').write('print(0)')", "cheat at run time")
    out = tmp_path / "run"
    results = run_nas_optimization(max_iterations=2, config=config(folder), out=out,
                                   llm=scripted_llm(ScriptAgent([cheat])))
    assert [(r["trial"], r["fate"]) for r in results["code_changes"]] == [("run_0001", "refused")]
    changes = (out / "report.md").read_text().split("## Code changes")[1]
    row = next(line for line in changes.splitlines() if line.startswith("| run_0001 |"))
    assert "| refused: the run changed protected file(s) eval.py" in row


def test_no_code_change_ran_points_at_where_the_refusals_are(tmp_path: Path) -> None:
    """It said "events.jsonl's agent_tool events give the reasons" while the agent's steps (and a refused edit_code)
    are rows of report.md's "## The agent" table, the one place that shows each call and its answer."""
    folder = project(tmp_path)
    out = tmp_path / "run"
    missing = edit("NOPE = 1", "NOPE = 2", "text the file lacks")  # refused by the action's check, not run
    run_nas_optimization(max_iterations=2, config=config(folder), out=out, llm=scripted_llm(ScriptAgent([missing])))
    report = (out / "report.md").read_text()
    agent, changes = report.split("\n## The agent\n")[1].split("\n## Code changes\n")
    assert "No code change ran" in changes and 'row of "## The agent" above' in changes
    assert 'a refused edit_code call\'s result says "not run: ..."' in changes and "agent_tool" not in changes
    refused = next(line for line in agent.splitlines() if "| edit_code |" in line)
    assert "| not run: edit 0 (train.py): the old text occurs 0 times" in refused


def test_kept_versions_are_commits_on_the_runs_branch(tmp_path: Path) -> None:
    folder = project(tmp_path, git=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout
    out = tmp_path / "run"
    run_nas_optimization(max_iterations=3, config=config(folder), out=out, llm=scripted_llm(ScriptAgent(CALLS[2:3])))
    branch = results_of(out)["code_version"]["branch"]
    log = subprocess.run(["git", "log", "--format=%s", branch], cwd=folder, capture_output=True, text=True).stdout
    assert log.splitlines()[0].startswith("agentlab run_0001: a smaller offset") and log.splitlines()[1] == "start"
    shown = subprocess.run(["git", "show", f"{branch}:train.py"], cwd=folder, capture_output=True, text=True).stdout
    assert "OFFSET = 0.5" in shown
    assert f"(branch {branch}) under" in (out / "report.md").read_text()  # kept: named as it is
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout == head
    status = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True).stdout
    assert status == ""  # the user's tree and index as they were


def test_code_changes_need_approval_or_the_explicit_opt_out(tmp_path: Path) -> None:
    folder = project(tmp_path)
    cfg = config(folder, unreviewed_changes=False)
    with pytest.raises(ConfigError, match="add --approve, or set objective.unreviewed_changes: true"):
        run_nas_optimization(max_iterations=2, config=cfg, out=tmp_path / "run", llm=scripted_llm(ScriptAgent(CALLS)))
    other = config(folder)
    other["search"]["planner"] = "tpe"
    with pytest.raises(ConfigError, match="only the agent planner changes code"):
        run_nas_optimization(max_iterations=2, config=other, out=tmp_path / "run2")


def test_a_file_both_editable_and_protected_is_refused(tmp_path: Path) -> None:
    """`editable: [train.py, eval.py]` with eval.py protected too was accepted, and protected won without a word:
    the agent never saw the file the config calls editable."""
    from agentlab.core.errors import UsageError

    folder = project(tmp_path)
    cfg = config(folder, editable=["train.py", "eval.py"], protected=["eval.py"])
    with pytest.raises(UsageError, match=r"objective.editable: names eval.py, which objective.protected names too$"):
        run_nas_optimization(max_iterations=2, config=cfg, out=tmp_path / "run", llm=scripted_llm(ScriptAgent(CALLS)))
    assert not (tmp_path / "run").exists()
    carved = config(folder, editable=["*.py"], protected=["eval.py"])  # all but the scorer: fine
    run_nas_optimization(max_iterations=1, config=carved, out=tmp_path / "run2", llm=scripted_llm(ScriptAgent(CALLS)))


def test_a_file_named_in_both_lists_alone_is_the_same_conflict(tmp_path: Path) -> None:
    """`editable: [eval.py]` with eval.py protected said "match no file the agent may change ... (protected files
    excluded)", while `[train.py, eval.py]` got the conflict the docs name."""
    from agentlab.core.errors import UsageError

    folder = project(tmp_path)
    cfg = config(folder, editable=["eval.py"], protected=["eval.py"])
    with pytest.raises(UsageError, match=r"objective.editable: names eval.py, which objective.protected names too$"):
        run_nas_optimization(max_iterations=1, config=cfg, out=tmp_path / "run", llm=scripted_llm(ScriptAgent(CALLS)))


LATIN = b"# -*- coding: latin-1 -*-\nNAME = 'caf\xe9'\n"


def test_an_editable_file_that_is_not_utf8_is_refused_before_trial_0(tmp_path: Path) -> None:
    """A latin-1 editable file crashed the search ("internal error: UnicodeDecodeError", exit 1, no results) when
    the agent proposed an edit to it: named by its own path it is refused before anything runs (exit 2)."""
    from agentlab.core.errors import UsageError

    folder = project(tmp_path)
    (folder / "legacy.py").write_bytes(LATIN)
    cfg = config(folder, editable=["train.py", "legacy.py"], protected=["eval.py"])
    calls = [edit("NAME", "NAME2", "rename", path="legacy.py")]
    with pytest.raises(UsageError, match=r"objective.editable: legacy.py is not UTF-8 text"):
        run_nas_optimization(max_iterations=2, config=cfg, out=tmp_path / "run", llm=scripted_llm(ScriptAgent(calls)))
    assert not (tmp_path / "run").exists()


def test_a_glob_leaves_out_files_no_edit_can_be_made_to_and_says_so(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`*.py` matching a latin-1 file and a link leaving the project: both left out of what the agent may change
    (said on the console), so plan time and trial time agree; an edit of one is refused by the tool's schema, no
    trial spent, and the search runs on."""
    caplog.set_level(logging.INFO)
    folder = project(tmp_path)
    (folder / "legacy.py").write_bytes(LATIN)
    outside = tmp_path / "outside.py"
    outside.write_text("X = 1\n")
    (folder / "linked.py").symlink_to(outside)
    cfg = config(folder, editable=["*.py"], protected=["eval.py"])
    cfg["search"]["tune_every"] = 0
    calls = [edit("NAME", "NAME2", "rename", path="legacy.py"), edit("OFFSET = 3.0", "OFFSET = 0.5", "smaller"),
             edit("X = 1", "X = 2", "via the link", path="linked.py"), edit("OFFSET = 0.5", "OFFSET = 0.25", "less")]
    out = tmp_path / "run"
    results = run_nas_optimization(max_iterations=3, config=cfg, out=out, llm=scripted_llm(ScriptAgent(calls)))
    assert [(r["trial"], r["fate"]) for r in results["code_changes"]] == [("run_0001", "kept"), ("run_0002", "kept")]
    assert sorted(p.name for p in (out / "code" / "start").iterdir()) == ["train.py"]
    assert "the agent may change train.py (left out: legacy.py, not UTF-8 text; linked.py, a link (to " in caplog.text
    assert results["agent"]["invalid_tool_calls"] == 2  # each edit of a left-out file: its schema refused it


def test_the_checker_turns_an_unreadable_file_into_a_refusal_not_a_crash(tmp_path: Path) -> None:
    """The check of an edit read the start's copy with read_text: a decode error escaped it (only ChangeError was
    caught) and ended the search. Now the agent is told, and no trial runs."""
    from agentlab.core.search.planners import PlanContext, TrialDomain
    from agentlab.nas.code_agent import CodeSearch
    from agentlab.nas.code_change import CodeRules

    folder = project(tmp_path)
    code = CodeSearch(CodeRules(["*.py"], ["eval.py"]), folder, tmp_path / "run")
    code.freeze()
    (code.start / "legacy.py").write_bytes(LATIN)  # a start folder an older version froze
    none: Any = None
    domain = TrialDomain(space=none, base_params={"x": 4.0}, incumbent={"x": 4.0}, records=[], best=None,
                         metric="loss", check=lambda p: [], candidate=none)
    action, why = code.check_action({"edits": [{"path": "legacy.py", "old": "NAME", "new": "N"}], "reason": "r"},
                                    PlanContext(domain, budget_left=1, seed=0))
    assert action is None and "legacy.py: cannot be read as UTF-8 text" in why
    assert code.read("legacy.py", domain) is None  # read_project then says why it cannot show it


def test_a_route_ended_by_invalid_calls_counts_them(tmp_path: Path) -> None:
    """Two schema-invalid calls in a row (the repair invalid too) end the route: a failed call, whose invalid replies
    were counted as none."""
    folder = project(tmp_path)
    bad = edit("print", "print", "cheat", path="eval.py")
    results = run_nas_optimization(max_iterations=2, config=config(folder), out=tmp_path / "run",
                                   llm=scripted_llm(ScriptAgent([bad, bad])))
    assert results["agent"]["failed_calls"] == 1 and results["agent"]["invalid_tool_calls"] == 2
    # the report's row says why the sampler's candidate ran: the calls' own validation error, not "no answer"
    report = " ".join((tmp_path / "run" / "report.md").read_text().split())
    assert "the model's tool calls were not valid" in report and "eval.py" in report, report


def test_an_editable_file_that_is_a_link_out_of_the_project_is_refused_before_trial_0(tmp_path: Path) -> None:
    """train.py a link to a file outside the project: listed as editable, the change passed the check (on the frozen
    copy) and then failed in the trial's workspace ("no such file in the project"), a budget trial each time."""
    from agentlab.core.errors import UsageError

    folder = project(tmp_path)
    real = tmp_path / "outside" / "train_real.py"
    real.parent.mkdir()
    (folder / "train.py").rename(real)
    (folder / "train.py").symlink_to(real)
    with pytest.raises(UsageError, match=r"objective.editable: train.py is a link \(to .*train_real.py\), so no edit"):
        run_nas_optimization(max_iterations=2, config=config(folder), out=tmp_path / "run",
                             llm=scripted_llm(ScriptAgent(CALLS[2:3])))
    assert not (tmp_path / "run").exists()

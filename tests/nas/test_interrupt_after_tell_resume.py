"""A Ctrl-C the moment the study has recorded a trial's end: the trial is in events.jsonl, agent_state.json and on
the console all the same, and a resume's "kept" line counts it; a run stopped there before agentlab held the signal
(or killed there) gets the missing record written by its resume. The signal comes from a patched ``Study.tell``."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from test_own_code import run_folders, write_project

from agentlab.cli import main
from agentlab.nas.report import resume_line


def trial_events(run: Path) -> list[int]:
    return [e["number"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
            if e["kind"] == "trial"]


def kept(run: Path) -> list[int]:
    return [r["trial"] for r in json.loads((run / "agent_state.json").read_text())["runs"]
            if r["state"] == "complete"]


@pytest.mark.usefixtures("sigint_raises")  # xdist's workers ignore SIGINT
def test_ctrl_c_right_after_a_trials_tell_leaves_it_recorded_and_counted(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_project(in_tmp)
    tell = optuna.Study.tell

    def tell_then_ctrl_c(self: optuna.Study, trial: Any, *args: Any, **kwargs: Any) -> Any:
        told = tell(self, trial, *args, **kwargs)
        if self.study_name == "nas" and trial.number == 1:  # the run's study, not a sampler's in memory
            signal.raise_signal(signal.SIGINT)
        return told

    monkeypatch.setattr(optuna.Study, "tell", tell_then_ctrl_c)
    assert main(["nas", "-c", str(config), "--max-iterations", "6", "--planner", "random"]) == 130
    monkeypatch.undo()
    (run,) = run_folders(in_tmp)
    assert trial_events(run) == [0, 1] and kept(run) == [0, 1]
    assert "run_0001 (random)" in capsys.readouterr().err
    assert resume_line(run, 4).endswith("kept 2 finished trial(s) (2 complete); up to 2 more to reach 4")
    assert main(["nas", "--resume", str(run), "--max-iterations", "4"]) == 0
    assert "kept 2 finished trial(s) (2 complete); up to 2 more to reach 4" in capsys.readouterr().err
    assert trial_events(run) == [0, 1, 2, 3]
    assert json.loads((run / "results.json").read_text())["ran_here"] == 2


@pytest.mark.parametrize("elsewhere", [False, True])
def test_a_resume_records_a_trial_the_study_finished_but_the_run_did_not(
        in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, elsewhere: bool) -> None:
    """``elsewhere``: resumed from another folder, where the trials' relative run_dir named no folder of this run
    (the trial was never recorded)."""
    config = write_project(in_tmp)
    out = ["--out", "runs/nas/first"] if elsewhere else []  # a relative folder, as trials' run_dir then hold it
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random", *out]) == 0
    (run,) = run_folders(in_tmp)
    # as a stop between the study's tell of run_0001 and the run's own record left it (seen with a Ctrl-C there)
    events = (run / "events.jsonl").read_text().splitlines()
    (run / "events.jsonl").write_text("".join(f"{line}\n" for line in events
                                              if not ('"kind": "trial"' in line and json.loads(line)["number"] == 1)))
    state = json.loads((run / "agent_state.json").read_text())
    (run / "agent_state.json").write_text(json.dumps({**state, "runs": state["runs"][:1]}))
    capsys.readouterr()
    if elsewhere:
        (in_tmp / "other").mkdir()
        monkeypatch.chdir(in_tmp / "other")
        run = run.resolve()
    assert resume_line(run, 4).endswith("kept 2 finished trial(s) (2 complete); up to 2 more to reach 4")
    assert main(["nas", "--resume", str(run), "--max-iterations", "4"]) == 0
    out = capsys.readouterr().err
    assert "kept 2 finished trial(s) (2 complete); up to 2 more to reach 4" in out
    assert out.count("run_0001 (random)") == 1  # its console line, which the stopped run never printed
    assert sorted(trial_events(run)) == [0, 1, 2, 3] and kept(run) == [0, 1, 2, 3]
    assert json.loads((run / "results.json").read_text())["ran_here"] == 2

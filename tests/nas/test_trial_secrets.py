"""A secret the user's command prints never leaves in a failed trial's reason (console, study, agent state, planner
model) nor in a result's text values: scrubbed where the reason is made, as ``${NAME}``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.search.loop import TrialFailed
from agentlab.nas.command import CommandObjective
from agentlab.nas.config import CommandObjectiveConfig

KEY = "wandbSECRET0987654321"


def objective(tmp_path: Path, body: str) -> CommandObjective:
    (tmp_path / "train.py").write_text("import json, os, sys\nkey = os.environ['WANDB_API_KEY']\n" + body)
    spec = CommandObjectiveConfig(command=f"{shlex.quote(sys.executable)} train.py", metric="loss", params={"x": 1})
    return CommandObjective(spec, cwd=tmp_path, trial_dir=lambda n: tmp_path / "run" / f"run_{n:04d}")


@pytest.mark.parametrize("body", [
    "print('invalid key ' + key, file=sys.stderr)\nsys.exit(1)\n",  # exit code and the stderr tail
    "print('invalid key ' + key, file=sys.stderr)\nprint(key + ': 3')\n",  # no result: what it printed instead
    "print('invalid key ' + key, file=sys.stderr)\nprint(json.dumps({'loss': float('nan')}))\n",  # not finite
])
def test_a_failed_trials_reason_holds_no_secret_the_command_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    body: str) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    with pytest.raises(TrialFailed) as caught:
        objective(tmp_path, body).run(0, {"x": 2}, lambda step, value: False)
    assert KEY not in str(caught.value) and "invalid key ${WANDB_API_KEY}" in str(caught.value)


def test_a_results_text_values_hold_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    out = objective(tmp_path, "print(json.dumps({'loss': 0.5, 'note': 'logged in as ' + key}))\n").run(
        0, {"x": 2}, lambda step, value: False)
    assert out["note"] == "logged in as ${WANDB_API_KEY}" and out["loss"] == 0.5


def test_the_console_and_the_study_never_see_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("import os, sys\nprint('invalid key ' + os.environ['WANDB_API_KEY'], "
                                      "file=sys.stderr)\nsys.exit(1)\n")
    (project / "config.py").write_text('training = {"lr": 0.01}\n')
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "config.py", "metric": "val_loss"},
        "search": {"space": {"training.lr": {"low": 0.0001, "high": 0.1, "log": True}}}}))
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 1  # the base failed
    said = capsys.readouterr()
    assert KEY not in said.out + said.err and "invalid key ${WANDB_API_KEY}" in said.out + said.err
    assert (run / "study.db").is_file()
    leaks = [p.name for p in run.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert set(leaks) <= {"stderr.log"}  # the study included; stderr.log keeps what the command printed
    assert b"invalid key ${WANDB_API_KEY}" in (run / "study.db").read_bytes()  # the failed trial's reason

"""Trials of the user's command under the code-change rules (issue 60): objective.protected refuses a run that
rewrote a protected file; objective.sandbox: bwrap fails a trial that writes outside its workspace or opens a
network connection, with that reason, and runs a well-behaved one as usual."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main

# loss from params; MODE (an environment variable the test sets) makes it misbehave after computing it
SCRIPT = """\
import json, os, socket, sys
p = json.load(open(sys.argv[1]))
mode = os.environ.get("MODE", "")
if mode == "rewrite":
    open("eval.py", "a").write("# tampered\\n")
if mode == "outside":
    open(os.environ["OUTSIDE"], "w").write("escaped")
if mode == "net":
    socket.create_connection(("10.255.255.1", 9), timeout=5)
print(json.dumps({"loss": (p["x"] - 1) ** 2}))
"""


def project(root: Path, **objective: Any) -> Path:
    folder = root / "project"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    (folder / "eval.py").write_text("print('the evaluation')\n")
    config = {"objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss",
                            "params": {"x": 4.0}, **objective},
              "search": {"pruner": "none", "space": {"x": {"low": -5.0, "high": 5.0}}}}
    path = folder / "nas.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trials(root: Path) -> list[dict[str, Any]]:
    (run,) = sorted((root / "runs" / "nas").glob("*"))
    return json.loads((run / "agent_state.json").read_text())["runs"]


def test_a_run_that_rewrites_a_protected_file_is_refused(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = project(in_tmp, protected=["eval.py"])
    monkeypatch.setenv("MODE", "rewrite")
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) != 0
    (first,) = trials(in_tmp)[:1]
    assert first["state"] == "failed" and "refused: the run changed protected file(s) eval.py" in first["reason"]
    assert (config.parent / "eval.py").read_text() == "print('the evaluation')\n"  # the user's file untouched


def bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"], capture_output=True)
    return probe.returncode == 0


needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap missing or not allowed here")


@needs_bwrap
@pytest.mark.parametrize(("mode", "why"), [("outside", "Read-only file system"), ("net", "Network is unreachable")])
def test_the_sandbox_fails_a_trial_that_escapes_with_the_reason(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 mode: str, why: str) -> None:
    outside = in_tmp / "outside.txt"
    config = project(in_tmp, sandbox="bwrap")
    monkeypatch.setenv("MODE", mode)
    monkeypatch.setenv("OUTSIDE", str(outside))
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) != 0
    first = trials(in_tmp)[0]
    assert first["state"] == "failed" and why in first["reason"]
    assert not outside.exists()


@needs_bwrap
def test_a_well_behaved_command_runs_in_the_sandbox(in_tmp: Path) -> None:
    config = project(in_tmp, sandbox="bwrap")
    assert main(["nas", "-c", str(config), "--max-iterations", "3", "--planner", "random"]) == 0
    rows = trials(in_tmp)
    assert [r["state"] for r in rows] == ["complete"] * 3 and rows[0]["loss"] == 9.0
    (run,) = sorted((in_tmp / "runs" / "nas").glob("*"))
    assert (run / "trials" / "run_0000" / "command.txt").read_text().startswith(sys.executable)


def test_a_sandbox_without_bwrap_is_refused_before_any_trial(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = project(in_tmp, sandbox="bwrap")
    monkeypatch.setenv("PATH", str(in_tmp))  # no bwrap on it (the command's python is an absolute path)
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) == 2
    assert "objective.sandbox: bwrap is not installed" in capsys.readouterr().err
    assert not (in_tmp / "runs" / "nas").exists() or not any((in_tmp / "runs" / "nas").iterdir())


def test_the_eval_command_s_metric_is_the_one_that_counts(in_tmp: Path) -> None:
    config = project(in_tmp, eval_command=f"{sys.executable} eval.py")
    (config.parent / "eval.py").write_text("print('loss: 1.5')\n")
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) == 0
    rows = trials(in_tmp)
    assert [r["loss"] for r in rows] == [1.5, 1.5]  # train.py printed (x-1)^2; eval.py's line counts
    (run,) = sorted((in_tmp / "runs" / "nas").glob("*"))
    assert (run / "trials" / "run_0001" / "eval_stdout.log").read_text() == "loss: 1.5\n"


def test_an_eval_command_that_logs_its_metric_to_stderr(in_tmp: Path) -> None:
    """An evaluator that reports through `logging` (stderr): its trials failed with "printed no loss"."""
    config = project(in_tmp, eval_command=f"{sys.executable} eval.py")
    (config.parent / "eval.py").write_text("import logging\nlogging.basicConfig(level=logging.INFO)\n"
                                           "logging.info('test loss 2.5')\n")
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) == 0
    assert [r["loss"] for r in trials(in_tmp)] == [2.5, 2.5]


def test_a_failing_eval_command_fails_the_trial_and_a_missing_one_is_refused(
        in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = project(in_tmp, eval_command=f"{sys.executable} eval.py")
    (config.parent / "eval.py").write_text("raise SystemExit('no predictions found')\n")
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--planner", "random"]) != 0
    first = trials(in_tmp)[0]
    assert first["state"] == "failed" and "objective.eval_command: exit code 1" in first["reason"]
    assert "no predictions found" in first["reason"]
    (in_tmp / "b").mkdir()
    other = project(in_tmp / "b", eval_command="no-such-evaluator --x")
    assert main(["nas", "-c", str(other), "--max-iterations", "2", "--planner", "random"]) == 2
    assert "objective.eval_command: 'no-such-evaluator' is not found on PATH" in capsys.readouterr().err

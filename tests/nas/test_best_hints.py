"""The command lines in nas's hints paste into a shell as they are: paths with spaces quoted."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.errors import UsageError
from agentlab.nas.best import by_hand, kept_config, remember_base
from agentlab.nas.config_file import ConfigFile


def spaced(tmp_path: Path) -> tuple[Path, Path]:
    project, run = tmp_path / "my project", tmp_path / "runs b" / "r1"
    project.mkdir()
    run.mkdir(parents=True)
    (project / "config.py").write_text("lr = 0.1\n")
    remember_base(run, ConfigFile.load(project / "config.py"), project)
    return project, run


def test_the_patch_by_hand_quotes_paths_with_spaces(tmp_path: Path) -> None:
    project, run = spaced(tmp_path)
    line = by_hand(project, run)
    assert line == f"cd {shlex.quote(str(project))} && patch -p1 < {shlex.quote(str(run / 'best.patch'))}"
    assert shlex.split(line)[:2] == ["cd", str(project)]


def test_a_resume_after_the_config_was_edited_goes_on_with_its_kept_copy(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """It refused (before the stale worktrees of a kill were cleaned) with a `cp` hint that overwrote the edit."""
    project, run = spaced(tmp_path)
    assert kept_config(run) is None  # unchanged: the file itself
    (project / "config.py").write_text("lr = 0.2\n")
    assert kept_config(run) == run / "base" / "config.py"
    assert "was edited since the search started" in caplog.text and "your edit is not used" in caplog.text
    assert (project / "config.py").read_text() == "lr = 0.2\n"  # the edit stays
    (run / "base" / "config.py").unlink()
    with pytest.raises(UsageError, match="its copy as it started|as it started .* is gone too"):
        kept_config(run)


def test_a_resume_after_the_config_was_edited_runs_the_remaining_trials_on_the_kept_copy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """End to end: 2 trials, the user edits a value not searched in config.py, --resume to 4: trials 3 and 4 read
    config.py as the search started, and the user's edit stays in their file."""
    project = tmp_path / "my project"
    project.mkdir()
    (project / "config.py").write_text("lr = 0.01\nepochs = 3  # not searched\n")
    (project / "train.py").write_text("import config\nprint(f'loss: {config.lr * config.epochs}')\n")
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{shlex.quote(sys.executable)} train.py", "config": "config.py", "metric": "loss"},
        "search": {"planner": "random", "pruner": "none", "space": {"lr": {"low": 0.001, "high": 0.1}}}}))
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "p"]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)
    run = tmp_path / "runs" / "r1"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 0
    edited = "lr = 0.01\nepochs = 5  # not searched\n"
    (project / "config.py").write_text(edited)
    assert main(["nas", "--resume", str(run), "-n", "4"]) == 0
    trials = sorted((run / "trials").iterdir())
    assert [t.name for t in trials] == ["run_0000", "run_0001", "run_0002", "run_0003"]
    for trial in trials:
        used = (trial / "config_used.py").read_text()
        assert "epochs = 3  # not searched" in used, (trial.name, used)
        lr = json.loads((trial / "params.json").read_text())["lr"]
        assert f"lr = {lr!r}" in used
        assert (trial / "stdout.log").read_text() == f"loss: {lr * 3}\n"  # the script read the kept copy
    assert (project / "config.py").read_text() == edited
    assert "was edited since the search started" in " ".join(capsys.readouterr().err.split())

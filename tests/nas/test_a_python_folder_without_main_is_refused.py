"""`objective.command: python sub` with `sub/` a folder holding no `__main__.py` passed --dry-run ("config ok"), and
trial 0 failed with python's "can't open file .../workspaces/trial_0000/sub"; `python nosuch.py` was refused up front
already. A folder with a `__main__.py` is a program python runs: not refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agentlab.cli import main


def config(folder: Path, command: str) -> Path:
    path = folder / "nas.yaml"
    path.write_text(f"objective:\n  command: {command}\n  metric: val_loss\n  params: {{x: 0.5}}\n"
                    "search:\n  space:\n    x: {low: 0.0, high: 1.0}\n")
    return path


@pytest.mark.parametrize("python", [sys.executable, "python3"])
def test_a_folder_without_main_is_refused_before_trial_0(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                         python: str) -> None:
    (in_tmp / "sub").mkdir()
    assert main(["nas", "-c", str(config(in_tmp, f"{python} sub {{args}}")), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"objective.command: sub is a folder with no __main__.py, which python cannot run (looked in {in_tmp})" \
        in err
    assert "hint: give the script's path (python train.py ...), or run a package with python -m" in err
    assert not (in_tmp / "runs").exists()


def test_a_folder_with_main_is_run(in_tmp: Path) -> None:
    (in_tmp / "app").mkdir()
    (in_tmp / "app" / "__main__.py").write_text("print('val_loss: 0.5')\n")
    assert main(["nas", "-c", str(config(in_tmp, f"{sys.executable} app {{args}}")), "--dry-run"]) == 0

"""When the best trial is trial 0 (the project as it is), best.patch was written empty, and `git apply best.patch`,
which the docs tell users to run, exits 128 "No valid patches in input". No change: no patch, and the report,
results.json, `nas apply` and a resume with nothing left to run agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main

CONFIG = "lr = 0.01  # learning rate\n"
TRAIN = "import config\nprint(f'val_loss: {1 + abs(config.lr - 0.01) * 1000:.6f}')\n"  # best at the start


def project(folder: Path) -> Path:
    (folder / "config.py").write_text(CONFIG)
    (folder / "train.py").write_text(TRAIN)
    (folder / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "config.py", "metric": "val_loss"},
        "search": {"max_iterations": 3, "space": {"lr": {"low": 0.001, "high": 1.0, "log": True}}}}))
    return folder / "nas.yaml"


def test_the_best_being_trial_0_writes_no_patch(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    run = in_tmp / "run"
    assert main(["nas", "-c", str(project(in_tmp)), "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["best"]["run_id"] == "run_0000", results["best"]
    assert not (run / "best.patch").exists()
    assert "patch" not in results["best_files"] and "config.py" in results["best_files"]["files"]
    assert "best.patch" not in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["nas", "apply", str(run)]) == 0
    assert "config.py: already the best version" in capsys.readouterr().err
    assert (in_tmp / "config.py").read_text() == CONFIG
    assert main(["nas", "--resume", str(run)]) == 0  # the ending's files all there: nothing run, nothing written
    assert "nothing left to run" in capsys.readouterr().err
    assert not (run / "best.patch").exists()

"""`agentlab nas apply RUN` of an interrupted (or still running) Hydra `{overrides}` search said "this search has no
file to write back (no objective.config, no Hydra app's config written back, ...)", with the hint to copy the best
params by hand: a Hydra app's config is written back when the search finishes, which it now says, as for an
interrupted search of objective.config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main

PRIMARY = "train:\n  l2: 1.0  # ridge\n"
APP = """import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg) -> None:
    print(f"val_mse: {(cfg.train.l2 - 0.5) ** 2!r}")


if __name__ == "__main__":
    main()
"""


def hydra_app(folder: Path) -> Path:
    (folder / "conf").mkdir(parents=True)
    (folder / "conf" / "config.yaml").write_text(PRIMARY)
    (folder / "train.py").write_text(APP)
    return folder


def unfinish(run: Path, status: str = "interrupted") -> None:
    """The run folder as Ctrl-C leaves it: partial results with no best files, no best/, run.json interrupted (or as
    a search whose trials all failed leaves it: ``failed``)."""
    results = json.loads((run / "results.json").read_text())
    results.pop("best_files", None)
    (run / "results.json").write_text(json.dumps({**results, "partial": True}))
    for path in sorted((run / "best").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (run / "best").rmdir()
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": status}))


@pytest.mark.parametrize(("status", "why"), [
    ("interrupted", "the search was interrupted before its end, where it writes best/"),
    ("failed", "the search has no successful trial")])
def test_apply_of_an_interrupted_hydra_search_says_it_was_interrupted(in_tmp: Path, status: str, why: str,
                                                                     capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("hydra")
    project = hydra_app(in_tmp / "project")
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py {{overrides}}", "cwd": str(project),
                      "metric": "val_mse", "params": {"train.l2": 1.0}},
        "search": {"max_iterations": 2, "space": {"train.l2": {"low": 1e-4, "high": 10.0, "log": True}}}}))
    run = in_tmp / "run"
    assert main(["nas", "-c", str(config), "--out", str(run)]) == 0
    unfinish(run, status)
    capsys.readouterr()
    assert main(["nas", "apply", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{run}: no best/ ({why})" in err
    assert f"finish the search (agentlab nas --resume {run}), then apply" in err
    assert "no file to write back" not in err
    assert (project / "conf" / "config.yaml").read_text() == PRIMARY

"""`agentlab nas --resume RUN` on a completed run with no trial left to run says the summary again and writes nothing
(it rewrote the results, ensemble, report and plots, most of a minute, and added a `resumed` entry to run.json); a
trial's progress line says which count is the epochs ("epoch 1/2 done", not "1/2 done" beside a trial budget)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.cli.common import LineProgress, console
from agentlab.nas import run_nas_optimization

FAST = {"epochs": 2, "max_train_batches": 3}


def write_config(folder: Path) -> Path:
    config = {
        "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
        "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
        "train": FAST,
        "search": {"planner": "tpe", "pruner": "none",
                   "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2]}}},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != "run.lock"}


def test_a_resume_with_nothing_left_says_the_summary_and_writes_nothing(in_tmp: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    config, run = write_config(in_tmp), in_tmp / "RUN"
    with console.capture() as captured:  # no terminal: a line per epoch (every_s=0)
        first = run_nas_optimization(2, str(config), out=run, progress=LineProgress(every_s=0))
    epochs = [line for line in captured.get().splitlines() if line.startswith("progress: run_")]
    assert epochs and all(re.match(r"progress: run_\d{4} .*epoch \d/2 done \(", line) for line in epochs), epochs
    before = snapshot(run)

    assert main(["nas", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "nothing left to run: search.max_iterations (2) reached; give a higher --max-iterations" in err
    assert err.rstrip().splitlines()[-1] == f"stopped: {first['stop_reason']}; report: {run / 'report.md'}"
    assert snapshot(run) == before  # run.json (no `resumed` entry), results, report, plots as they were

    assert run_nas_optimization(resume=run) == {**first, "ran_here": 0}  # the API too: the results, none run now
    assert snapshot(run) == before


def test_a_resume_that_changes_a_setting_still_writes_the_ending(in_tmp: Path) -> None:
    """A --set given now (search.patience, --mlflow) is no resume with nothing to do."""
    config, run = write_config(in_tmp), in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--out", str(run)]) == 0
    assert main(["nas", "--resume", str(run), "--set", "search.patience=5"]) == 0
    assert len((run / "run.json").read_text().split('"previous_status"')) == 2  # recorded as a resume


def test_a_resume_with_nothing_left_writes_again_what_the_ending_wrote_and_is_gone(in_tmp: Path) -> None:
    """A plot the report links and the ensemble, deleted: the resume runs the ending again and writes them back
    (`nas apply`'s hint for a missing best/ is this very resume)."""
    config, run = write_config(in_tmp), in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--out", str(run)]) == 0
    linked = [run / link for link in re.findall(r"\]\(([^)\s:#]+\.png)\)", (run / "report.md").read_text())]
    assert linked and (run / "ensemble.json").is_file()
    for gone in (linked[0], run / "ensemble.json"):
        gone.unlink()
        assert main(["nas", "--resume", str(run)]) == 0
        assert gone.is_file()

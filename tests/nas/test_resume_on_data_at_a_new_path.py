"""A nas resume whose data file is at another path (a run folder copied to another machine, its data elsewhere) goes
on when the file holds the data the run started on (the sha256 of its first `data` event): it says so in one line and
keeps the new path, in config.yaml and in its study's label. Other content at the new path, or a run that records no
sha256, is refused as before, the hint saying why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from test_nas_resume import write_csv

from agentlab.cli import main


def write_config(folder: Path, data: Path) -> Path:
    config = {
        "data": {"path": str(data), "seq_len": 24, "label_len": 12, "pred_len": 12},
        "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
        "train": {"epochs": 2, "max_train_batches": 3},
        "search": {"planner": "tpe", "pruner": "none",
                   "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2]}}},
    }
    path = folder / "csv.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def files_of(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def said(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def settings_label(run: Path) -> dict[str, Any]:
    study = optuna.load_study(study_name="nas", storage=f"sqlite:///{run / 'study.db'}")
    return dict(study.user_attrs["agentlab:settings"])


def test_a_resume_on_the_same_data_at_a_new_path_goes_on_and_keeps_the_path(in_tmp: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "here").mkdir()
    data = write_csv(in_tmp / "here" / "data.csv", 400)
    run = in_tmp / "RUN"
    assert main(["nas", "-c", str(write_config(in_tmp, data)), "--max-iterations", "1", "--out", str(run)]) == 0
    moved = in_tmp / "elsewhere" / "copy.csv"
    moved.parent.mkdir()
    shutil.move(data, moved)  # the run folder on another machine: the same bytes, another path
    before = files_of(run)
    capsys.readouterr()
    assert main(["nas", "--resume", str(run), "--max-iterations", "2", "--data", str(moved), "--dry-run"]) == 0
    err = said(capsys)
    assert err.count(f"data.path {moved} holds the data the run started on at {data} (the same sha256)") == 1, err
    assert files_of(run) == before
    assert main(["nas", "--resume", str(run), "--max-iterations", "2", "--data", str(moved)]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(moved)
    assert settings_label(run)["data.path"] == repr(str(moved))
    assert len(json.loads((run / "agent_state.json").read_text())["runs"]) == 2
    capsys.readouterr()
    # the path kept: the next resume reads it without --data, and says nothing of a move
    assert main(["nas", "--resume", str(run), "--max-iterations", "3"]) == 0
    assert "holds the data the run started on" not in said(capsys)
    assert len(json.loads((run / "agent_state.json").read_text())["runs"]) == 3

    # other content at a new path: refused as before, the hint saying why
    other = write_csv(in_tmp / "other.csv", 400, seed=1)
    before = files_of(run)
    for dry in (["--dry-run"], []):
        assert main(["nas", "--resume", str(run), "--max-iterations", "4", "--data", str(other), *dry]) == 2
        err = said(capsys)
        assert f"(data.path '{moved}' -> '{other}'); nothing was written" in err, err
        assert "a new data.path is taken when its file holds the data the run started on" in err
        assert "this one holds other data (sha256 " in err
    assert files_of(run) == before

    # a run that records no sha256 of its data: a new path cannot be told to be the same data
    kept = [line for line in (run / "events.jsonl").read_text().splitlines() if '"kind": "data"' not in line]
    (run / "events.jsonl").write_text("\n".join(kept) + "\n")
    again = in_tmp / "third.csv"
    shutil.copy(moved, again)
    assert main(["nas", "--resume", str(run), "--max-iterations", "4", "--data", str(again), "--dry-run"]) == 2
    err = said(capsys)
    assert f"(data.path '{moved}' -> '{again}')" in err
    assert "which this run does not record (made before agentlab recorded it): put the file back at its path" in err


def test_a_shared_studys_run_on_its_data_at_a_new_path_is_refused_before_it_writes(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A shared study's workers all read data.path as the study records it: a resume there at a new path is refused
    before anything is written (the run's open of the study refused it after the run folder was resumed)."""
    data = write_csv(in_tmp / "data.csv", 400)
    run, storage = in_tmp / "RUN", f"sqlite:///{in_tmp / 'shared.db'}"
    assert main(["nas", "-c", str(write_config(in_tmp, data)), "--storage", storage, "--max-iterations", "1",
                 "--out", str(run)]) == 0
    moved = in_tmp / "moved.csv"
    shutil.copy(data, moved)
    before = files_of(run)
    capsys.readouterr()
    for dry in (["--dry-run"], []):
        assert main(["nas", "--resume", str(run), "--max-iterations", "2", "--data", str(moved), *dry]) == 2
        err = said(capsys)
        assert f"data.path {moved} holds the data the run started on at {data}, but the run's study is shared" in err
        assert f"put the file at {data} and resume with data.path there" in err
        assert "run folder:" not in err
    assert files_of(run) == before

"""A nas resume (its dry run too) whose study.db is damaged says the study cannot be opened, exit 2, before it says
anything else: the dry run said "resuming ...: kept 3 finished trial(s)" (counted from agent_state.json) and "config
ok", and the run printed its folder and planner before the same error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.errors import RunDirError
from agentlab.core.search.study import study_records
from agentlab.nas.run import require_budget

HINT = "the run folder's study is damaged: restore it, or start a new run without --resume"


def test_a_damaged_study_is_an_error_for_a_resume_and_none_for_the_other_readers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "agent_state.json").write_text(json.dumps({"runs": [{"run_id": "run_0000", "state": "complete"}]}))
    (run / "study.db").write_text("garbage\n")
    assert study_records(None, run, "nas") is None  # a report's, a listing's: the run's own count
    with pytest.raises(RunDirError) as caught:
        study_records(None, run, "nas", check=True)
    assert caught.value.message == f"{run / 'study.db'}: cannot open the study (DatabaseError: file is not a database)"
    assert caught.value.hint == HINT
    with pytest.raises(RunDirError, match="cannot open the study"):
        require_budget(run, 5)
    assert (run / "study.db").read_text() == "garbage\n"
    (run / "study.db").unlink()  # no study at all: None still (require_budget says it is missing)
    assert study_records(None, run, "nas", check=True) is None


def test_a_resume_of_a_run_whose_study_is_damaged_stops_before_it_says_anything(in_tmp: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
        "model": {"d_model": 16, "n_heads": 2, "d_ff": 32}, "train": {"epochs": 1, "max_train_batches": 2},
        "search": {"planner": "random", "pruner": "none", "space": {"model.d_model": {"choices": [16, 32]}}}}))
    run = in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "1", "--out", str(run)]) == 0
    (run / "study.db").write_text("garbage\n")
    capsys.readouterr()
    for dry in (["--dry-run"], []):
        assert main(["nas", "--resume", str(run), "--max-iterations", "2", *dry]) == 2
        out, err = capsys.readouterr()
        err = " ".join(err.split())
        assert f"{run / 'study.db'}: cannot open the study (DatabaseError: file is not a database)" in err, err
        assert HINT in err
        assert not out and "resuming" not in err and "run folder:" not in err and "config ok" not in err
    assert (run / "study.db").read_text() == "garbage\n"

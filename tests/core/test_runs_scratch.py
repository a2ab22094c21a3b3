"""RunDir.scratch: a command's own files in a new run folder go with its stub when bad input (exit 2) stops the run
before it records anything (evolve left population.db and task.jsonl alone in the folder, which neither --resume nor
--out took); nothing else is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.core.errors import InputError
from agentlab.core.runs import RunDir


def _fill(run: RunDir) -> None:
    run.scratch("population.db").write_text("db")
    (run.scratch("adapters") / "gen_0" / "g0c0").mkdir(parents=True)
    (run.scratch("adapters") / "gen_0" / "g0c0" / "w").write_text("w")


def test_scratch_goes_with_a_new_run_stopped_by_bad_input(tmp_path: Path) -> None:
    out = tmp_path / "RUN"
    with pytest.raises(InputError), RunDir.create("demo", {"a": 1}, out=out) as run:
        _fill(run)
        raise InputError("bad")
    assert not out.exists()
    mine = tmp_path / "mine"  # an empty --out folder the user made stays, empty
    mine.mkdir()
    with pytest.raises(InputError), RunDir.create("demo", {"a": 1}, out=mine) as run:
        _fill(run)
        raise InputError("bad")
    assert mine.is_dir() and list(mine.iterdir()) == []


def test_scratch_stays_after_work_or_other_errors_and_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "RUN"
    with pytest.raises(InputError), RunDir.create("demo", {"a": 1}, out=out) as run:
        _fill(run)
        run.event("started")  # work recorded: a failed run, kept
        raise InputError("bad")
    assert (out / "population.db").is_file() and (out / "run.json").is_file()
    other = tmp_path / "OTHER"
    with pytest.raises(RuntimeError), RunDir.create("demo", {"a": 1}, out=other) as run:
        _fill(run)
        raise RuntimeError("a bug, not bad input")
    assert (other / "population.db").is_file() and (other / "adapters" / "gen_0" / "g0c0" / "w").is_file()
    with pytest.raises(InputError), RunDir.open("demo", {"a": 1}, resume=out) as run:
        run.scratch("population.db")
        raise InputError("bad")
    assert (out / "population.db").read_text() == "db" and (out / "run.json").is_file()

"""A nas resume whose study file is 0 bytes is refused before anything opens it: opening it made a new, empty study
there, and every finished trial ran again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.core.errors import RunDirError
from agentlab.nas.run import require_budget


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_resume_whose_study_file_is_empty_is_refused_and_the_file_left_as_it_is(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "agent_state.json").write_text(json.dumps({"runs": [{"run_id": "run_0000", "state": "complete"},
                                                                {"run_id": "run_0001", "state": "complete"}]}))
    file = run / "study.db" if kind == "sqlite" else tmp_path / "study.journal"
    file.write_bytes(b"")
    storage = None if kind == "sqlite" else str(file)
    with pytest.raises(RunDirError) as caught:
        require_budget(run, 5, storage)
    assert caught.value.message == f"{file}: the study of {run} is empty (0 bytes) (it holds the 2 trial(s) the " \
        "run finished)"
    assert caught.value.hint == "restore the file, or start a new run"
    assert file.stat().st_size == 0
    file.unlink()
    with pytest.raises(RunDirError, match="is missing"):
        require_budget(run, 5, storage)

"""`compress --answer` handed the answer to whatever question the run asked first: on a new run, or a resumed one
not stopped at a question, that approved an experiment nobody saw. It answers only the question a run stopped at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("optuna")

from agentlab.cli import main  # noqa: E402


def test_answer_without_a_resumed_run_is_refused(in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    code = main(["compress", "--model", str(tiny_model["hf"]), "--planner", "agent", "--approve", "--answer", "yes",
                 "--out", str(in_tmp / "NEW"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "no run is resumed" in err and not (in_tmp / "NEW").exists()


def test_answer_to_a_run_not_stopped_at_a_question_is_refused(in_tmp: Path, capsys: Any) -> None:
    from agentlab.cli.common import waiting_question
    from agentlab.core.errors import UsageError

    run = in_tmp / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"command": "compress", "status": "interrupted"}))
    with pytest.raises(UsageError, match="not stopped at an --approve question") as info:
        waiting_question(run, "compress")
    assert "agentlab compress --resume" in (info.value.hint or "")

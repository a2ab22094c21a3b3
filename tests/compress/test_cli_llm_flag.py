"""`agentlab compress --llm` with a planner that uses no model: refused, not read and then ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


@pytest.mark.parametrize("planner", ["nsga2", "tpe", "random"])
def test_llm_with_a_planner_that_uses_no_model_is_refused(planner: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--planner nsga2 --llm smollm2-135m` said "planner: nsga2", exit 0: the model was never asked."""
    code = main(["compress", "--dry-run", "--model", str(tmp_path / "no-model"), "--planner", planner,
                 "--llm", "smollm2-135m"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--llm applies only to the planners that use a model (--planner llm or agent); --planner {planner}" in err


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



def test_the_python_api_refuses_llm_with_a_planner_that_uses_no_model_too(tmp_path: Path) -> None:
    """run_compression(planner="random", llm=...) ran the search and never asked the model the call named."""
    from agentlab.compress import run_compression
    from agentlab.core.errors import UsageError

    with pytest.raises(UsageError, match="--planner random uses none"):
        run_compression(str(tmp_path / "no-model"), planner="random", llm="smollm2-135m", out=tmp_path / "run")
    assert not (tmp_path / "run").exists()

"""`agentlab nas --llm` with a sampler planner: refused unless its file has an `evaluator` route (the one thing a
sampler's search asks a model), not read and then ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main

ROUTES = """providers:
  local: {kind: llama_cpp}
models:
  q: {provider: local, model: qwen2.5-coder-0.5b}
routes:
  default: {primary: [q]}
  planner: {primary: [q]}
"""


@pytest.mark.parametrize("planner", ["tpe", "cmaes", "random"])
def test_llm_without_an_evaluator_route_is_refused(planner: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`--planner tpe --llm FILE` said "planner: tpe", exit 0: the file's planner model was never asked."""
    (tmp_path / "llm.yaml").write_text(ROUTES)
    code = main(["nas", "--dry-run", "--planner", planner, "--llm", str(tmp_path / "llm.yaml"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--planner {planner} uses no model, and {tmp_path / 'llm.yaml'} defines no 'evaluator' route" in err
    assert not (tmp_path / "run").exists()


def test_a_built_in_models_name_with_a_sampler_says_why_no_route_is_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--llm qwen2.5-coder-0.5b` said the model "defines no 'evaluator' route", while --help says a built-in name is
    put on the default route, which every route falls back to: the evaluator route is asked only where defined."""
    monkeypatch.chdir(tmp_path)  # no file of the model's name here: the name is the built-in model's
    code = main(["nas", "--dry-run", "--planner", "tpe", "--llm", "qwen2.5-coder-0.5b", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not (tmp_path / "run").exists()
    assert "a built-in model's name sets only the default route" in err and "falls back to nothing" in err
    assert "defines no 'evaluator' route" not in err


def test_llm_with_an_evaluator_route_is_used_by_a_sampler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "llm.yaml").write_text(ROUTES + "  evaluator: {primary: [q]}\n")
    code = main(["nas", "--dry-run", "--planner", "tpe", "--llm", str(tmp_path / "llm.yaml")])
    assert code == 0, capsys.readouterr().err


def test_the_python_api_refuses_it_too(tmp_path: Path) -> None:
    """The check sits in nas's prepare, which the CLI and run_nas_optimization share, not in the CLI alone."""
    import yaml

    from agentlab.core.errors import UsageError
    from agentlab.core.llm.config import LLMConfig
    from agentlab.nas import NASConfig
    from agentlab.nas.run import prepare

    with pytest.raises(UsageError, match="--planner tpe uses no model, and the routing config defines no"):
        prepare(NASConfig(search={"planner": "tpe"}), LLMConfig.model_validate(yaml.safe_load(ROUTES)))

"""A compress config's amounts are finite: `--carbon-budget inf` was accepted and results.json got a bare `Infinity`
(not JSON); inf is refused (exit 2, the field named) where it makes no sense."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.compress.config import CompressConfig, RecoverStep
from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError


def test_carbon_budget_inf_is_refused_before_anything_is_written(in_tmp: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    code = main(["compress", "--carbon-budget", "inf", "--max-iterations", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and not (in_tmp / "runs").exists()
    assert ("error: --carbon-budget inf: carbon_budget: must be a finite number of kg CO2e; leave it out for no "
            "limit") in err, err


@pytest.mark.parametrize("field", ["carbon_budget", "checkpoints_mb"])
def test_an_infinite_amount_is_refused(field: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"{field}: .inf\n")
    with pytest.raises(ConfigError, match=rf"c.yaml:1: {field}: must be a finite number"):
        load_config(config, CompressConfig, schema="compress")
    assert load_config(config, CompressConfig, [f"{field}=5"], schema="compress").model_dump()[field] == 5


def test_an_infinite_learning_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="finite number"):
        RecoverStep(method="lora", lr=float("inf"))


def test_a_resume_without_its_config_yaml_says_the_run_folder_is_incomplete(tmp_path: Path) -> None:
    """It said `config file not found` with the hint of a -c file ("leave that option out for the defaults")."""
    from agentlab.compress.run import run_compression
    from agentlab.core.errors import RunDirError

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text('{"command": "compress", "status": "interrupted"}')
    with pytest.raises(RunDirError) as caught:
        run_compression(resume=folder)
    assert caught.value.message == f"{folder / 'config.yaml'} is missing: the run folder is incomplete"
    assert caught.value.hint == "restore it from a copy, or start a new run (without resume=)"
    assert "defaults" not in caught.value.hint and sorted(p.name for p in folder.iterdir()) == ["run.json"]

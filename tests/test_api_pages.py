"""The pages' way to build a config from Python gives agentlab's errors: a bad field is a ConfigError naming it (the
debate and train-persona pages showed Model.model_validate, which raises pydantic's ValidationError)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.errors import ConfigError
from agentlab.debate import DebateConfig
from agentlab.train_persona import TrainPersonaConfig

DOCS = Path(__file__).resolve().parents[1] / "docs" / "commands"


@pytest.mark.parametrize(("page", "model", "schema", "check", "bad"), [
    ("debate.md", DebateConfig, "debate", lambda cfg: cfg.rounds == 1 and len(cfg.agents) == 2, ("roundz", "rounds")),
    ("train-persona.md", TrainPersonaConfig, "train-persona", lambda cfg: cfg.train.max_steps == 2, ("outt", "out")),
], ids=["debate", "train-persona"])
def test_the_documented_config_is_built_by_load_config(page: str, model: type, schema: str, check: Any,
                                                       bad: tuple[str, str]) -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)
                 if "run_in_folder" in b)
    assert "model_validate" not in block and f"{model.__name__}(" not in block
    built: dict[str, Any] = {}
    exec(block.split("results, folder =")[0], built)  # the imports and the config, as the page writes them
    assert isinstance(built["cfg"], model) and check(built["cfg"])
    typo, meant = bad
    with pytest.raises(ConfigError, match=rf"^config: {typo}: unknown key \(did you mean '{meant}'\?\)"):
        built["load_config"](None, model, base={typo: 1}, schema=schema)

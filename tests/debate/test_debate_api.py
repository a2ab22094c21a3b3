"""The page's way to build a debate config from Python gives agentlab's errors: a bad field is a ConfigError naming
it (the page showed DebateConfig.model_validate, which raises pydantic's ValidationError)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentlab.core.errors import ConfigError
from agentlab.debate import DebateConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "commands" / "debate.md"


def test_the_documented_config_is_built_by_load_config() -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
                 if "run_in_folder" in b)
    assert "model_validate" not in block and "DebateConfig(" not in block
    built: dict[str, object] = {}
    exec(block.split("results, folder =")[0], built)  # the imports and the config, as the page writes them
    cfg = built["cfg"]
    assert isinstance(cfg, DebateConfig) and cfg.rounds == 1 and len(cfg.agents) == 2
    load_config = built["load_config"]
    with pytest.raises(ConfigError, match=r"^config: roundz: unknown key \(did you mean 'rounds'\?\)"):
        load_config(None, DebateConfig, base={"roundz": 1}, schema="debate")  # type: ignore[operator]

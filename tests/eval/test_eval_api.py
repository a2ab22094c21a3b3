"""run_eval's settings are validated as the command's options are: a bad one is a ConfigError naming the field,
before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentlab.core.errors import ConfigError
from agentlab.eval import run_eval


@pytest.mark.parametrize(("args", "settings", "says"), [
    ((["agentlab_style_pirate"],), {"limt": 2}, "config: limt: unknown key (did you mean 'limit'?)"),
    (("agentlab_style_pirate",), {"limit": 2}, "config: tasks: Input should be a valid list"),
    ((["agentlab_style_pirate"], "adapters/persona_c"), {}, "config: adapters: Input should be a valid list"),
    ((["agentlab_style_pirate"],), {"limit": "two"}, "config: limit: Input should be a valid integer"),
])
def test_a_bad_setting_is_a_config_error_naming_it(args: tuple[Any, ...], settings: dict[str, Any], says: str,
                                                   in_tmp: Path) -> None:
    """It was pydantic's ValidationError, which `except AgentlabError` did not catch."""
    with pytest.raises(ConfigError) as info:
        run_eval("smollm2-135m", *args, **settings)
    assert info.value.message.startswith(says) and "agentlab config show eval" in str(info.value.hint)
    assert not (in_tmp / "runs").exists()

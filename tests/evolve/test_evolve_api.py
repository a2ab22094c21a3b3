"""run_evolution's config errors: a bad field of a dict or a config file is a ConfigError naming it (as `evolve run
-c` gives), before any model loads; a config file is taken as run_nas_optimization and run_compression take one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentlab.core.errors import AgentlabError, ConfigError
from agentlab.evolve import run_evolution


@pytest.mark.parametrize(("cfg", "says"), [
    ({"populaton": 4}, "config: populaton: unknown key (did you mean 'population'?)"),
    ({"population": "four"}, "config: population: Input should be a valid integer"),
    ({"task": {"fitness_questions": 1}}, "config: task.fitness_questions: Input should be greater than or equal to 2"),
    # the one given is named (`--population 2` said "elite: 2 must be below population (2)")
    ({"population": 2}, "config: population: 2 must be above elite (2), or no child is bred"),
    ({"elite": 9}, "config: elite: 9 must be below population (8), or no child is bred"),
    # a range of one number said "weight_range: required field is missing", of three pydantic's tuple words
    ({"weight_range": [1]}, "config: weight_range: give [low, high]: 2 items, got 1"),
    ({"alpha_range": [0.1, 0.2, 0.3]}, "config: alpha_range: give [low, high]: 2 items, got 3"),
])
def test_a_bad_field_is_a_config_error_naming_it(cfg: dict[str, Any], says: str, in_tmp: Path) -> None:
    """It was pydantic's ValidationError, which `except AgentlabError` did not catch."""
    with pytest.raises(ConfigError) as info:
        run_evolution(cfg)
    assert info.value.message.startswith(says) and "agentlab config show evolve" in str(info.value.hint)
    assert not (in_tmp / "runs").exists()


def test_a_config_file_is_read_as_with_c(in_tmp: Path) -> None:
    """A path was refused as "Input should be a valid dictionary or instance of EvolveConfig"."""
    (in_tmp / "evo.yaml").write_text("# agentlab evolve run -c FILE\ngenerations: 2\npopulation: four\n")
    with pytest.raises(ConfigError, match=r"^evo\.yaml:3: population: Input should be a valid integer"):
        run_evolution("evo.yaml")
    with pytest.raises(AgentlabError, match="missing.yaml: config file not found"):
        run_evolution(in_tmp / "missing.yaml")
    assert not (in_tmp / "runs").exists()

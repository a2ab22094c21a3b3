"""The planner kinds, declared once (core/search/kinds.py): the configs, the CLI and the session read the table."""

from __future__ import annotations

import typing

import pytest

from agentlab.core.errors import AgentlabError
from agentlab.core.search.kinds import KINDS, label, names, samplers
from agentlab.core.search.session import PlannerSpec, open_planner
from agentlab.core.search.settings import LLMPlannerSettings
from agentlab.core.search.study import make_sampler


def _choices(model: type, *path: str) -> tuple[str, ...]:
    for key in path[:-1]:
        model = model.model_fields[key].annotation  # type: ignore[attr-defined]
    return typing.get_args(model.model_fields[path[-1]].annotation)  # type: ignore[attr-defined]


def test_the_configs_and_the_cli_offer_exactly_the_tables_kinds() -> None:
    from typer.testing import CliRunner

    from agentlab.cli import app
    from agentlab.compress.config import CompressConfig
    from agentlab.nas.config import NASConfig

    assert _choices(NASConfig, "search", "planner") == names("nas")
    assert _choices(CompressConfig, "search", "planner") == names("compress")
    for command, other in (("nas", "nsga2"), ("compress", "cmaes")):  # a kind of the other command only
        result = CliRunner().invoke(app, [command, "--planner", other])
        assert result.exit_code == 2, result.output
        refused = " ".join(result.output.replace("│", " ").split())
        assert all(repr(name) in refused for name in names(command)), refused


def test_every_sampler_kind_builds_a_sampler_and_has_a_label() -> None:
    for name in {*samplers("nas"), *samplers("compress")}:
        assert make_sampler(name, 0) is not None and label(name) == KINDS[name].label
    assert samplers("nas") == ("tpe", "tpe_independent", "tpe_multivariate", "cmaes", "random")
    assert label("retry") == "retry"  # a planner name outside the table is itself
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("llm", 0)


def test_a_kind_the_command_does_not_offer_is_refused_with_the_ones_it_does() -> None:
    spec = PlannerSpec(kind="nsga2", command="nas", settings=LLMPlannerSettings())
    with pytest.raises(AgentlabError, match="unknown planner 'nsga2'") as info:
        open_planner(spec)
    assert info.value.hint is not None and "tpe_independent" in info.value.hint
    with open_planner(PlannerSpec(kind="random", command="compress",
                                  settings=LLMPlannerSettings())) as session:
        assert session.planner.name == "random" and session.line == "planner: random"

"""The names a gateway serves: routes, models, adapters of hf providers, and what happens when names collide."""

from __future__ import annotations

from agentlab.core.llm.config import LLMConfig
from agentlab.serve.catalog import build_catalog


def _llm(**extra: object) -> LLMConfig:
    return LLMConfig.model_validate({
        "providers": {"http": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                      "local": {"kind": "hf", "adapters": {"persona_a": "a", "persona_b": "b", "fast": "f"}}},
        "models": {"fast": {"provider": "http", "model": "m1"}, "slow": {"provider": "http", "model": "m2"},
                   "base": {"provider": "local", "model": "tiny", "params": {"temperature": 0}},
                   "b-explicit": {"provider": "local", "model": "tiny", "params": {"adapter": "persona_b"}}},
        "routes": {"main": {"primary": ["fast"], "fallback": ["slow"]}, "slow": {"primary": ["slow", "fast"]}},
        **extra})


def test_routes_models_and_adapters_are_served_names() -> None:
    catalog = build_catalog(_llm())
    kinds = {name: s.kind for name, s in catalog.served.items()}
    assert kinds == {"main": "route", "slow": "route", "default": "route", "fast": "model", "base": "model",
                     "b-explicit": "model", "persona_a": "adapter"}
    assert catalog.served["default"].chain == catalog.config.route("default").chain() == [
        "fast", "slow", "base", "b-explicit"]
    # persona_a is served on the first model without an adapter param, with its params
    assert catalog.config.models["persona_a"].params == {"temperature": 0, "adapter": "persona_a"}
    assert catalog.config.route("persona_a").chain() == ["persona_a"]
    assert catalog.config.route("main").chain() == ["fast", "slow"]
    notes = " | ".join(catalog.notes)
    assert "model 'slow' shares its name with a route" in notes
    assert "adapter 'fast' of providers.local is not served on its own: the name is taken by a model" in notes
    assert "persona_b" not in catalog.served  # already served by b-explicit


def test_without_adapters_as_models_only_configured_names() -> None:
    catalog = build_catalog(_llm(), adapters_as_models=False)
    assert "persona_a" not in catalog.served and catalog.notes == ["model 'slow' shares its name with a route: "
                                                                    "'slow' serves the route"]

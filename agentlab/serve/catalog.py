"""What the gateway serves: the names a request's ``model`` may take, and the routing config behind them.

A name is a route of the routing config (its chain and strategy apply), a model (that model only, with the router's
retries but no fallback), or an adapter of an ``hf`` provider (with ``adapters_as_models``): served on the
provider's first model that sets no ``adapter`` param, so a base model with LoRA adapters ``a`` and ``b`` is served
as three names, the way vLLM serves multi-LoRA. A route and a model of the same name: the route wins.

Each model and adapter becomes a one-model route of its own name in the config the router gets, so the router's
``generate`` and ``structured`` serve every name the same way. ``default`` is always served: the configured route,
else every model in file order (what the router does for a route it does not know).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentlab.core.llm.config import HFProviderConfig, LLMConfig

__all__ = ["Catalog", "Served", "build_catalog"]


@dataclass(frozen=True)
class Served:
    """One name a client may ask for."""

    name: str
    kind: str  # route | model | adapter
    chain: list[str]
    strategy: str = "single"
    provider: str | None = None  # model / adapter: its provider's config name
    adapter: str | None = None


@dataclass
class Catalog:
    config: LLMConfig  # the routing config the router gets: the user's plus one route per served model
    served: dict[str, Served]
    notes: list[str] = field(default_factory=list)  # names that could not be served as asked, said at start

    def names(self) -> list[str]:
        return list(self.served)


def build_catalog(llm: LLMConfig, adapters_as_models: bool = True) -> Catalog:
    """The served names of ``llm`` and the config (with one route per model) that the router serves them with."""
    data = llm.model_dump(mode="python")
    models: dict[str, Any] = data["models"]
    routes: dict[str, Any] = data["routes"]
    served: dict[str, Served] = {}
    notes: list[str] = []
    for name, route in llm.routes.items():
        served[name] = Served(name, "route", route.chain(), route.strategy)
    if "default" not in served:  # spelled out: the router's fallback for it would take the adapters added below
        routes["default"] = {"primary": list(llm.models)}
        served["default"] = Served("default", "route", list(llm.models), "single")
    for name, model in llm.models.items():
        if name in served:
            notes.append(f"model '{name}' shares its name with a route: '{name}' serves the route")
            continue
        routes[name] = {"primary": [name]}
        served[name] = Served(name, "model", [name], provider=model.provider, adapter=model.params.get("adapter"))
    if adapters_as_models:
        _add_adapters(llm, models, routes, served, notes)
    config = LLMConfig.model_validate({**data, "models": models, "routes": routes})
    return Catalog(config, served, notes)


def _add_adapters(llm: LLMConfig, models: dict[str, Any], routes: dict[str, Any], served: dict[str, Served],
                  notes: list[str]) -> None:
    for pname, provider in llm.providers.items():
        if not isinstance(provider, HFProviderConfig) or not provider.adapters:
            continue
        base = next((n for n, m in llm.models.items() if m.provider == pname and "adapter" not in m.params), None)
        if base is None:
            notes.append(f"providers.{pname}: its adapters are not served: no model of it without an `adapter` param")
            continue
        taken = {m.params.get("adapter") for m in llm.models.values() if m.provider == pname}
        for adapter in provider.adapters:
            if adapter in taken:
                continue  # a configured model already serves it under its own name
            if adapter in served:
                notes.append(f"adapter '{adapter}' of providers.{pname} is not served on its own: the name is taken "
                             f"by a {served[adapter].kind}; add a model with params.adapter: {adapter}")
                continue
            models[adapter] = {**models[base], "params": {**models[base]["params"], "adapter": adapter}}
            routes[adapter] = {"primary": [adapter]}
            served[adapter] = Served(adapter, "adapter", [adapter], provider=pname, adapter=adapter)

"""The debaters of `agentlab debate`: agent entries of the config turned into a ``Panel`` (``core/debate/engine.py``:
one routing config serving every agent; one answer per call is ``engine.ask``).

Adapter agents become, in memory, one ``hf`` provider whose ``model`` is the base and whose ``adapters`` are the
folders, one model per adapter (the base with ``params: {adapter: NAME}``) and a ``debate-base`` model without
adapter (the default judge); ``engine.adapter_routes`` builds them. Model agents name a model or a route of the
routing config (``--llm``). Every agent gets its own route ``agent:NAME``, so a debate asks every backend the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agentlab.core.debate.engine import BASE_MODEL, Agent, Panel, adapter_routes, raised_tokens
from agentlab.core.debate.protocol import Kind
from agentlab.core.errors import ConfigError, InputError, UsageError
from agentlab.core.llm.config import LLMConfig, RouteConfig
from agentlab.core.models.adapters import PERSONAS, check_adapter_base, check_weights, persona_adapters, read_adapter
from agentlab.core.models.modelref import resolve_model
from agentlab.debate.config import AgentSpec, DebateConfig

log = logging.getLogger(__name__)

JUDGE_ROUTE = "debate:judge"
# `--data persona_X` names train-persona's shipped data from any folder.
OTHER_AGENTS = ("pass --adapters DIR / agents in -c FILE (model agents: `agents: [{name: a, model: default}, ...]` "
                "with --llm)")
TRAIN_HINT = f"train them first: agentlab train-persona --data persona_X --out adapters/persona_X (X = a, b, c), or " \
    f"{OTHER_AGENTS}"


def default_agents() -> list[AgentSpec]:
    """The agents when none are given: the default personas found (adapters/persona_a, _b, _c under the current
    directory). None found: a usage error; some missing: a warning naming them and how to train them (a single one
    found is no debate, one agent revising its own answer, which ran before without a word)."""
    found = persona_adapters()
    if not found:
        raise UsageError("no agents: no --adapters, no agents in the config, and no adapters/persona_a, "
                         "persona_b or persona_c under the current directory",
                         hint=TRAIN_HINT)
    missing = [name for name in PERSONAS if name not in {path.name for path in found}]
    if missing:
        alone = (": this is not a debate, one agent revising its own answer" if len(found) < 2 else "")
        log.warning("only %d of the default personas found (%s), %s not found%s; train them first: %s, or %s",
                    len(found), ", ".join(f"adapters/{path.name}" for path in found),
                    ", ".join(f"adapters/{name}" for name in missing), alone,
                    "; ".join(f"agentlab train-persona --data {name} --out adapters/{name}" for name in missing),
                    OTHER_AGENTS)
    return [AgentSpec(adapter=path) for path in found]


def check_adapter(path: Path) -> dict[str, Any]:
    """A PEFT adapter folder's config, or one line saying what is wrong (exit 2): missing, not PEFT, or weights whose
    safetensors header or tensors run past the file's end (cut short), which would fail only once the model loads."""
    data, note = (path.name, "") if path.name in PERSONAS else ("DATA", " (DATA: persona_a, _b, _c or a chat JSONL)")
    train = f"agentlab train-persona --data {data} --out {path}"
    try:
        config = read_adapter(path)
    except InputError as exc:
        if not path.exists():
            exc.hint = f"check the path, or train it first: {train}{note}"
        raise
    try:
        check_weights(path)
    except InputError as exc:
        exc.hint = f"its weights are damaged; save it again, or train it again: {train} --force{note}"
        raise
    return config


# where a config key was given: ``file:line`` or ``--set ...`` (``core.config.config_where``), None when unknown
Where = Callable[[tuple[str | int, ...]], str | None]


def build_panel(cfg: DebateConfig, llm: LLMConfig | None, *, batch: int = 8, where: Where | None = None) -> Panel:
    """The panel of ``cfg``: every adapter checked, every model name found in ``llm`` (``ConfigError`` otherwise,
    naming the key's place as ``where`` finds it)."""
    specs = list(cfg.agents)
    if not specs:
        specs = default_agents()
    adapters = {spec.label: spec.adapter for spec in specs if spec.adapter is not None}
    configs = {path: check_adapter(path) for path in adapters.values()}
    base = llm or LLMConfig()
    providers, models, routes = dict(base.providers), dict(base.models), dict(base.routes)
    update: dict[str, Any] = {}
    if adapters:
        base_ref = resolve_model(cfg.base_model, user="--base-model")  # one line naming what was tried, if nothing
        for path, trained in configs.items():
            check_adapter_base(path, trained, cfg.base_model, base_ref, runs="every adapter agent runs on",
                               hint="debate it on its base (--base-model {trained}), or give adapters trained on "
                               "{base_model}")
        more_providers, more_models, more_routes = adapter_routes(cfg.base_model, adapters, device=cfg.device,
                                                                  batch=batch)
        providers.update(more_providers)
        models.update(more_models)
        routes.update(more_routes)
        update["timeout_s"] = max(base.timeout_s, 600.0)  # a CPU batch of a real model takes minutes
    agents: list[Agent] = []
    for index, spec in enumerate(specs):
        name, route = spec.label, f"agent:{spec.label}"
        if spec.adapter is not None:
            source, kind = f"adapter {spec.adapter}", "hf"
        else:
            routes[route] = _route_for(str(spec.model), base, ("agents", index, "model"), where)
            source = f"model {spec.model}"
            first = routes[route].chain()[0]
            kind = providers[models[first].provider].kind
        structured = spec.structured if spec.structured is not None else kind == "llama_cpp"
        agents.append(Agent(name, route, dict(spec.params), structured, source))
    if cfg.llm is not None and cfg.judge is None and BASE_MODEL in models and all(s.model is None for s in specs):
        log.warning("--llm: no model of it answers: every agent is an adapter on the base model, and so is the "
                    "judge; only its settings (timeout_s, retries, resources, cache) apply. Name agents "
                    "(agents: [{model: NAME}]) or a --judge from it to use its models")
    if cfg.judge is not None:
        routes[JUDGE_ROUTE] = _route_for(cfg.judge, base, ("judge",), where)
        judge_source = f"model {cfg.judge}"
    elif BASE_MODEL in models:
        routes[JUDGE_ROUTE] = RouteConfig(primary=[BASE_MODEL])
        judge_source = f"{cfg.base_model} without adapter"
    else:  # what LLMConfig.route("judge") falls back to, named as it is (the dry run prints it)
        routes[JUDGE_ROUTE] = base.route("judge")
        judge_source = ("the routing config's judge route" if base.has_route("judge") else
                        "the routing config's default route; it has no judge route" if base.has_route("default")
                        else f"the routing config's models in file order, first {next(iter(base.models), 'none')}; it "
                        "has no judge or default route")
    config = base.model_copy(update={"providers": providers, "models": models, "routes": routes, **update})
    return Panel(config, agents, JUDGE_ROUTE, judge_source)


def warn_raised_tokens(cfg: DebateConfig, panel: Panel, kinds: Iterable[Kind], *, judge: bool) -> None:
    """Say once that the config's own ``max_tokens`` (the debate's or an agent's) is raised for a structured agent or
    the judge; the default's raise is documented (docs/commands/debate.md)."""
    default = type(cfg).model_fields["max_tokens"].default  # a resume's config.yaml holds the default too
    if cfg.max_tokens == default and not any("max_tokens" in a.params for a in cfg.agents):
        return
    line = raised_tokens(panel, kinds, cfg.max_tokens, judge=judge)
    if line:
        log.warning("%s (free-text agents get it as set)", line)


def prompt_style(cfg: DebateConfig, panel: Panel, kind: str = "numeric") -> str:
    """``cfg.prompt_style``, with ``auto`` resolved: plain for numeric and text questions when every agent is an
    adapter, else format (an open topic needs the ``Stance:`` line: the personas' plain replies to one held no
    stance at all)."""
    if cfg.prompt_style != "auto":
        return cfg.prompt_style
    adapters_only = all(a.source.startswith("adapter ") for a in panel.agents)
    return "plain" if adapters_only and kind in ("numeric", "text") else "format"


def _route_for(name: str, llm: LLMConfig, key: tuple[str | int, ...], where: Where | None) -> RouteConfig:
    if name in llm.routes:
        return llm.routes[name]
    if name in llm.models:
        return RouteConfig(primary=[name])
    known = ", ".join([*llm.models, *llm.routes]) or "none: pass --llm FILE"
    place = where(key) if where is not None else None
    raise ConfigError(f"{place + ': ' if place else ''}{'.'.join(map(str, key))}: '{name}' is no model or route of "
                      f"the routing config (known: {known})",
                      hint="name a model of --llm FILE, or use adapter: FOLDER for an in-process persona")



"""The debaters: agent entries of the config turned into routes of one routing config, and one answer per call.

Adapter agents become, in memory, one ``hf`` provider whose ``model`` is the base and whose ``adapters`` are the
folders, one model per adapter (the base with ``params: {adapter: NAME}``) and a ``debate-base`` model without
adapter (the default judge). Model agents name a model or a route of the routing config (``--llm``). Every agent gets
its own route ``agent:NAME``, so a debate asks every backend the same way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import ConfigError, InputError, LLMError, UsageError
from agentlab.core.llm.config import HFProviderConfig, LLMConfig, ModelConfig, RouteConfig
from agentlab.core.llm.structured import schema_max_tokens
from agentlab.core.llm.types import GenParams, Messages
from agentlab.debate.config import DEFAULT_PERSONAS, DebateConfig
from agentlab.debate.protocol import Kind, parse_reply, parse_structured, reply_schema

HF_PROVIDER = "debate-hf"
BASE_MODEL = "debate-base"
JUDGE_ROUTE = "debate:judge"
# The shipped persona data (train-persona's; commands do not import each other, so the path is spelled out here).
PERSONA_DATA = Path(__file__).resolve().parents[1] / "train_persona" / "data"
TRAIN_HINT = ("train them first: agentlab train-persona --data {data}/sft_persona_X.jsonl --out adapters/persona_X "
              "(X = a, b, c), or pass --adapters DIR / agents in -c FILE")


@dataclass(frozen=True)
class Agent:
    name: str
    route: str
    params: dict[str, Any]
    structured: bool
    source: str  # "adapter FOLDER" or "model NAME", for reports


@dataclass
class Panel:
    """The agents, the judge's route and the routing config that serves them all."""

    llm: LLMConfig
    agents: list[Agent]
    judge: str
    judge_source: str


@dataclass
class Answer:
    """One reply: what the transcript records."""

    agent: str
    text: str
    answer: str | None
    confidence: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    model: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        known = {k: data.get(k) for k in ("agent", "text", "answer", "confidence", "model", "error")}
        return cls(**known, prompt_tokens=int(data.get("prompt_tokens") or 0),  # type: ignore[arg-type]
                   completion_tokens=int(data.get("completion_tokens") or 0),
                   seconds=float(data.get("seconds") or 0.0))


def default_agents(cwd: Path | None = None) -> list[Path]:
    """adapters/persona_a, _b, _c under ``cwd`` that exist."""
    base = (cwd or Path.cwd()) / "adapters"
    return [base / name for name in DEFAULT_PERSONAS if (base / name).is_dir()]


def check_adapter(path: Path) -> None:
    """A PEFT adapter folder, or one line saying what is wrong (exit 2)."""
    from agentlab.core.train.adapters import read_adapter

    try:
        read_adapter(path)
    except InputError as exc:
        if not path.exists():
            exc.hint = f"check the path, or train it first: agentlab train-persona --out {path}"
        raise


def build_panel(cfg: DebateConfig, llm: LLMConfig | None, *, batch: int = 8) -> Panel:
    """The panel of ``cfg``: every adapter checked, every model name found in ``llm`` (``ConfigError`` otherwise)."""
    specs = list(cfg.agents)
    if not specs:
        from agentlab.debate.config import AgentSpec

        found = default_agents()
        if not found:
            raise UsageError("no agents: no --adapters, no agents in the config, and no adapters/persona_a, "
                             "persona_b or persona_c under the current directory",
                             hint=TRAIN_HINT.format(data=PERSONA_DATA))
        specs = [AgentSpec(adapter=path) for path in found]
    adapters = {spec.label: spec.adapter for spec in specs if spec.adapter is not None}
    for path in adapters.values():
        check_adapter(path)
    base = llm or LLMConfig()
    providers, models, routes = dict(base.providers), dict(base.models), dict(base.routes)
    update: dict[str, Any] = {}
    if adapters:
        from agentlab.core.llm.modelref import resolve_model

        resolve_model(cfg.base_model, user="--base-model")  # one line naming what was tried when it names nothing
        providers[HF_PROVIDER] = HFProviderConfig(device=cfg.device, adapters={k: str(v) for k, v in adapters.items()},
                                                  max_batch_size=max(8, min(64, batch)))
        models[BASE_MODEL] = ModelConfig(provider=HF_PROVIDER, model=cfg.base_model, stream=False)
        update["timeout_s"] = max(base.timeout_s, 600.0)  # a CPU batch of a real model takes minutes
    agents: list[Agent] = []
    for index, spec in enumerate(specs):
        name, route = spec.label, f"agent:{spec.label}"
        if spec.adapter is not None:
            model = f"debate-{name}"
            models[model] = ModelConfig(provider=HF_PROVIDER, model=cfg.base_model, params={"adapter": name},
                                        stream=False)
            routes[route] = RouteConfig(primary=[model])
            source, kind = f"adapter {spec.adapter}", "hf"
        else:
            routes[route] = _route_for(str(spec.model), base, f"agents.{index}.model")
            source = f"model {spec.model}"
            first = routes[route].chain()[0]
            kind = providers[models[first].provider].kind
        structured = spec.structured if spec.structured is not None else kind == "llama_cpp"
        agents.append(Agent(name, route, dict(spec.params), structured, source))
    if cfg.judge is not None:
        routes[JUDGE_ROUTE] = _route_for(cfg.judge, base, "judge")
        judge_source = f"model {cfg.judge}"
    elif BASE_MODEL in models:
        routes[JUDGE_ROUTE] = RouteConfig(primary=[BASE_MODEL])
        judge_source = f"{cfg.base_model} without adapter"
    else:
        routes[JUDGE_ROUTE] = base.route("judge")
        judge_source = "the routing config's judge route"
    config = base.model_copy(update={"providers": providers, "models": models, "routes": routes, **update})
    return Panel(config, agents, JUDGE_ROUTE, judge_source)


def prompt_style(cfg: DebateConfig, panel: Panel, kind: str = "numeric") -> str:
    """``cfg.prompt_style``, with ``auto`` resolved: plain for numeric questions when every agent is an adapter, else
    format (an open topic needs the ``Stance:`` line: the personas' plain replies to one held no stance at all)."""
    if cfg.prompt_style != "auto":
        return cfg.prompt_style
    adapters_only = all(a.source.startswith("adapter ") for a in panel.agents)
    return "plain" if adapters_only and kind == "numeric" else "format"


def _route_for(name: str, llm: LLMConfig, where: str) -> RouteConfig:
    if name in llm.routes:
        return llm.routes[name]
    if name in llm.models:
        return RouteConfig(primary=[name])
    known = ", ".join([*llm.models, *llm.routes]) or "none: pass --llm FILE"
    raise ConfigError(f"{where}: '{name}' is no model or route of the routing config (known: {known})",
                      hint="name a model of --llm FILE, or use adapter: FOLDER for an in-process persona")


async def ask(router: Any, agent: Agent, messages: Messages, kind: Kind, *, temperature: float,
              max_tokens: int) -> Answer:
    """One reply of ``agent``: parsed, timed; a failed call is recorded as no vote with its error."""
    params = _params(agent.params, temperature, max_tokens)
    start = time.perf_counter()
    try:
        if agent.structured:
            schema = reply_schema(kind)
            # room for the whole JSON object: a reply cut inside it would be no vote
            params.max_tokens = max(params.max_tokens or 0, schema_max_tokens(schema))
            result = await router.structured(messages, schema, agent.route, params, max_repairs=1)
            answer, confidence = parse_structured(result.value, kind)
            completion, model = result.completion.completion, result.completion.model
            text = result.value.model_dump_json()
        else:
            routed = await router.generate(messages, agent.route, params)
            completion, model, text = routed.completion, routed.model, routed.completion.text
            answer, confidence = parse_reply(text, kind)
    except (LLMError, asyncio.TimeoutError) as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        return Answer(agent.name, "", None, None, seconds=round(time.perf_counter() - start, 3), error=message)
    usage = completion.usage
    return Answer(agent.name, text, answer, confidence, usage.prompt_tokens, usage.completion_tokens,
                  round(time.perf_counter() - start, 3), model)


def _params(own: dict[str, Any], temperature: float, max_tokens: int) -> GenParams:
    fields = set(GenParams.__dataclass_fields__) - {"extra"}
    params = GenParams(temperature=temperature, max_tokens=max_tokens)
    merged = params.merged({k: v for k, v in own.items() if k not in ("temperature", "max_tokens")})
    for key in ("temperature", "max_tokens"):  # an agent's own setting wins over the debate's
        if key in own and key in fields:
            setattr(merged, key, own[key])
    return merged

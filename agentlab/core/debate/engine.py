"""The debate's parts: the agents, one answer per call, what each agent sees of the others, the judge (the rounds run
on the LangGraph graph of ``graph.py``).

An agent is a route of one routing config (``Panel.llm``) plus its own params. :func:`adapter_routes` builds, in
memory, the routing entries for PEFT adapters on one base model: one ``hf`` provider whose ``adapters`` are the
folders, one model per adapter (the base with ``params: {adapter: NAME}``), a base model without adapter and a route
``agent:NAME`` per adapter, so concurrent requests of different adapters share a mixed-adapter batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.debate.answers import Answer, Round
from agentlab.core.debate.protocol import (
    Kind,
    first_prompt,
    judge_prompt,
    parse_reply,
    parse_structured,
    reply_schema,
)
from agentlab.core.debate.rules import shown
from agentlab.core.errors import AllModelsFailed, LLMError
from agentlab.core.llm.config import HFProviderConfig, LLMConfig, ModelConfig, ProviderConfig, RouteConfig
from agentlab.core.llm.structured import schema_max_tokens
from agentlab.core.llm.types import GenParams, Messages

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

HF_PROVIDER = "debate-hf"
BASE_MODEL = "debate-base"
JUDGE_MIN_TOKENS = 160  # the fewest max_tokens the judge is asked with: its decision or open-topic summary in full


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


def adapter_routes(base_model: str, adapters: Mapping[str, str | Path], *, device: str = "auto",
                   batch: int = 8) -> tuple[dict[str, ProviderConfig], dict[str, ModelConfig], dict[str, RouteConfig]]:
    """Providers, models and routes (``agent:NAME`` per adapter, ``BASE_MODEL`` without one) that serve ``adapters``
    on ``base_model`` in process."""
    provider = HFProviderConfig(device=device, adapters={k: str(v) for k, v in adapters.items()},
                                max_batch_size=max(8, min(64, batch)))
    models = {BASE_MODEL: ModelConfig(provider=HF_PROVIDER, model=base_model, stream=False)}
    routes: dict[str, RouteConfig] = {}
    for name in adapters:
        models[f"debate-{name}"] = ModelConfig(provider=HF_PROVIDER, model=base_model, params={"adapter": name},
                                               stream=False)
        routes[f"agent:{name}"] = RouteConfig(primary=[f"debate-{name}"])
    return {HF_PROVIDER: provider}, models, routes


def adapter_panel(base_model: str, adapters: Mapping[str, str | Path], *, device: str = "auto",
                  batch: int = 8, timeout_s: float = 600.0) -> Panel:
    """A panel of adapter agents only (no judge model beyond the base), answering in the tolerant free-text form."""
    providers, models, routes = adapter_routes(base_model, adapters, device=device, batch=batch)
    routes["debate:judge"] = RouteConfig(primary=[BASE_MODEL])
    llm = LLMConfig(providers=providers, models=models, routes=routes, timeout_s=timeout_s)
    agents = [Agent(name, f"agent:{name}", {}, False, f"adapter {path}") for name, path in adapters.items()]
    return Panel(llm, agents, "debate:judge", f"{base_model} without adapter")


async def ask(router: Router, agent: Agent, messages: Messages, kind: Kind, *, temperature: float,
              max_tokens: int) -> Answer:
    """One reply of ``agent``: parsed, timed; a failed call is recorded as no vote with its error."""
    params = _params(agent.params, temperature, max_tokens)
    start = time.perf_counter()
    try:
        if agent.structured:
            schema = reply_schema(kind)
            params.max_tokens = max(params.max_tokens or 0, structured_tokens(kind))
            result = await router.structured(messages, schema, agent.route, params, max_repairs=1)
            answer, confidence = parse_structured(result.value, kind)
            completion, model = result.completion.completion, result.completion.model
            text = result.value.model_dump_json()
        else:
            routed = await router.generate(messages, agent.route, params)
            completion, model, text = routed.completion, routed.model, routed.completion.text
            answer, confidence = parse_reply(text, kind)
    except (TimeoutError, LLMError) as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if isinstance(exc, AllModelsFailed) and exc.attempts and exc.attempts[-1][2]:  # why, not only the kind
            message += f"; last: {exc.attempts[-1][2]}"
        return Answer(agent.name, "", None, None, seconds=round(time.perf_counter() - start, 3), error=message)
    usage = completion.usage
    return Answer(agent.name, text, answer, confidence, usage.prompt_tokens, usage.completion_tokens,
                  round(time.perf_counter() - start, 3), model)


def structured_tokens(kind: Kind) -> int:
    """The fewest ``max_tokens`` a structured agent is asked with: room for the longest JSON object its reply schema
    allows, since a reply cut inside it would be no vote."""
    return schema_max_tokens(reply_schema(kind))


def raised_tokens(panel: Panel, kinds: Iterable[Kind], max_tokens: int, *, judge: bool) -> str | None:
    """One line naming who is asked with more than ``max_tokens`` (the debate's, or an agent's own) and how many
    (structured agents: :func:`structured_tokens`; the judge: ``JUDGE_MIN_TOKENS``), or None when nobody is."""
    floor = max((structured_tokens(kind) for kind in kinds), default=0)
    structured = [a.name for a in panel.agents
                  if a.structured and (_params(a.params, 0.0, max_tokens).max_tokens or max_tokens) < floor]
    raised = [f"to {floor} for the structured (JSON) agent(s) {', '.join(structured)}: room for their reply "
              "schema's longest object, so a reply always completes"] if structured else []
    if judge and max_tokens < JUDGE_MIN_TOKENS:
        raised.append(f"to {JUDGE_MIN_TOKENS} for the judge: its decision or summary in full")
    return f"max_tokens {max_tokens} is raised {'; and '.join(raised)}" if raised else None


def _params(own: dict[str, Any], temperature: float, max_tokens: int) -> GenParams:
    fields = set(GenParams.__dataclass_fields__) - {"extra"}
    params = GenParams(temperature=temperature, max_tokens=max_tokens)
    merged = params.merged({k: v for k, v in own.items() if k not in ("temperature", "max_tokens")})
    for key in ("temperature", "max_tokens"):  # an agent's own setting wins over the debate's
        if key in own and key in fields:
            setattr(merged, key, own[key])
    return merged


def others_of(rounds: list[Round], agent: str, visibility: str = "full") -> list[list[tuple[str, str]]]:
    """For each finished round, the other agents' answers as ``(name, what it sees)``: the full reply, the parsed
    answer, or the answer with its confidence (``core/debate/rules.py``: ``shown``)."""
    return [[(a.agent, shown(a, visibility)) for a in answers if a.agent != agent] for answers in rounds]


async def judge(router: Router, panel: Panel, question: str, kind: Kind, answers: Round, *,
                max_tokens: int) -> Answer:
    """The judge's reply on the last round: a decision (numeric) or a summary with a stance (open)."""
    judge_agent = Agent("judge", panel.judge, {}, False, panel.judge_source)
    replies = [(a.agent, a.text) for a in answers]
    messages = [{"role": "user", "content": judge_prompt(question, kind, replies)}]
    reply = await ask(router, judge_agent, messages, kind, temperature=0.0,
                      max_tokens=max(max_tokens, JUDGE_MIN_TOKENS))
    if reply.error is None:
        reply.answer, reply.confidence = parse_reply(reply.text, kind)
    return reply


async def samples(router: Router, panel: Panel, question: str, kind: Kind, n: int, *, temperature: float,
                  max_tokens: int, style: str = "format") -> list[Answer]:
    """Self-consistency: ``n`` independent round-0 answers at ``temperature``, cycling over the agents."""
    messages = [{"role": "user", "content": first_prompt(question, kind, style)}]  # type: ignore[arg-type]
    agents = [panel.agents[i % len(panel.agents)] for i in range(n)]
    return list(await asyncio.gather(*(ask(router, agent, messages, kind, temperature=temperature,
                                            max_tokens=max_tokens) for agent in agents)))

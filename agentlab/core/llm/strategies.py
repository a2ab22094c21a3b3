"""Route strategies beyond plain chain order: ``fastest`` (measured latency) and ``best_of_n`` (a judge picks)."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, create_model

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import RouteConfig
from agentlab.core.llm.results import CallState, Candidate, RoutedCompletion
from agentlab.core.llm.stats import CircuitBreaker, ModelStats
from agentlab.core.llm.structured import structured_on_chain
from agentlab.core.llm.types import Completion, GenParams, Messages

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

_JUDGE_SYSTEM = ("You judge answers. Read the conversation and the numbered candidate answers, then pick the most "
                 "correct, complete and helpful one.")


def fastest_order(chain: list[str], stats: dict[str, ModelStats], breakers: dict[str, CircuitBreaker],
                  explore: float, rng: random.Random) -> list[str]:
    """Healthy models by EWMA latency, never-measured ones first (they need a measurement); with probability
    ``explore`` a random non-best model goes first so stale estimates get refreshed. Models behind an open breaker
    come last, in chain order (they are skipped, or get their half-open trial)."""
    healthy = [name for name in chain if breakers[name].available()]
    unhealthy = [name for name in chain if name not in healthy]
    unmeasured = [name for name in healthy if stats[name].ewma_latency_s is None]
    # sorted() is stable: equal estimates keep their fallback order.
    measured = sorted((n for n in healthy if stats[n].ewma_latency_s is not None),
                      key=lambda n: stats[n].ewma_latency_s or 0.0)
    order = unmeasured + measured
    if not unmeasured and len(order) > 1 and explore > 0 and rng.random() < explore:
        pick = rng.choice(order[1:])
        order.remove(pick)
        order.insert(0, pick)
    return order + unhealthy


def judge_model(rcfg: RouteConfig) -> str:
    """The route's judge: ``judge``, else the first duplicate, else the first primary (else the first of the chain)."""
    if rcfg.judge:
        return rcfg.judge
    for role in (rcfg.duplicate, rcfg.primary, rcfg.chain()):
        if role:
            return role[0]
    raise LLMError("best_of_n route has no model to judge with", "unavailable")


async def best_of_n(router: Router, call: CallState, rcfg: RouteConfig, chain: list[str], messages: Messages,
                    params: GenParams) -> RoutedCompletion:
    """The first ``n`` healthy models answer concurrently and the judge picks one. If none answers, the rest of the
    chain is tried in order, as with ``single``."""
    picked = [name for name in chain if router.available(name)][: rcfg.n] or chain[: rcfg.n]
    results = await asyncio.gather(*(router.try_model(call, name, messages, params) for name in picked),
                                   return_exceptions=True)
    answers: list[tuple[str, Completion]] = []
    for name, result in zip(picked, results, strict=True):
        if isinstance(result, Completion):
            answers.append((name, result))
        elif isinstance(result, BaseException) and not isinstance(result, LLMError):
            raise result  # a bug, not a model failure
    if not answers:
        rest = [name for name in chain if name not in picked]
        if not rest or call.expired():
            raise call.failed()
        return await router.first_answer(call, rest, messages, params)
    failed = [a for a in call.attempts if not a.ok]
    candidates = [Candidate(name, completion.text) for name, completion in answers]
    index, reason = await _judge(router, call, rcfg, messages, candidates)
    name, completion = answers[index]
    answered = {n for n, _ in answers}
    return RoutedCompletion(completion, call.route, name, list(call.attempts),
                            fallbacks=len({a.model for a in failed if a.model not in answered}),
                            fallback_time_s=sum(a.latency_s for a in failed),
                            candidates=candidates, judge_reason=reason)


def _verdict_model(count: int) -> type[BaseModel]:
    # Built per call so an out-of-range pick is a validation error, which the repair loop sends back to the judge.
    return create_model(
        "JudgeVerdict",
        best=(int, Field(ge=1, le=count, description=f"number of the best candidate, 1 to {count}")),
        reason=(str, Field(description="one sentence: why this candidate is best")),
    )


def judge_messages(messages: Messages, candidates: list[Candidate]) -> Messages:
    """The judge's prompt: the conversation, then the candidates numbered from 1."""
    conversation = "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)
    shown = "\n\n".join(f"[{i}]\n{c.text}" for i, c in enumerate(candidates, 1))
    ask = (f"Conversation:\n{conversation}\n\nCandidate answers:\n\n{shown}\n\n"
           'Reply with JSON {"best": <candidate number>, "reason": "<one sentence>"}.')
    return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": ask}]


async def _judge(router: Router, call: CallState, rcfg: RouteConfig, messages: Messages,
                 candidates: list[Candidate]) -> tuple[int, str]:
    """(index into candidates, reason). A failed judge keeps the first answer and says so."""
    if len(candidates) == 1:
        return 0, f"only {candidates[0].model} answered; no judging needed"
    judge = judge_model(rcfg)
    try:
        verdict = await structured_on_chain(router, call, [judge], judge_messages(messages, candidates),
                                            _verdict_model(len(candidates)), GenParams(), max_repairs=1)
    except LLMError as exc:
        return 0, f"judge {judge} failed ({exc.kind}); kept the first answer, from {candidates[0].model}"
    best = verdict.value.best  # type: ignore[attr-defined]
    return best - 1, verdict.value.reason or f"judge {judge} picked candidate {best}"  # type: ignore[attr-defined]

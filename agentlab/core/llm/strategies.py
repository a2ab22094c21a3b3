"""Route strategies: chain order (``first_answer``), ``fastest`` (measured latency) and ``best_of_n`` (a judge picks).

The router passes in what a strategy needs (the function that tries one model, ``TryModel``, and plain callables or
values); this module never imports the router.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from pydantic import BaseModel, Field, create_model

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import RouteConfig
from agentlab.core.llm.results import CallState, Candidate, RoutedCompletion, TryModel
from agentlab.core.llm.stats import CircuitBreaker, ModelStats
from agentlab.core.llm.structured import structured_on_chain
from agentlab.core.llm.tools import describe_calls
from agentlab.core.llm.types import Completion, GenParams, Messages

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


async def first_answer(try_model: TryModel, call: CallState, chain: list[str], messages: Messages,
                       params: GenParams) -> RoutedCompletion:
    """Try each model of ``chain`` in turn (with retries); the first answer wins."""
    for name in chain:
        completion = await try_model(call, name, messages, params)
        if completion is not None:
            return call.result(completion, name)
    raise call.failed()


def judge_model(rcfg: RouteConfig) -> str:
    """The route's judge: ``judge``, else the first duplicate, else the first primary (else the first of the chain)."""
    if rcfg.judge:
        return rcfg.judge
    for role in (rcfg.duplicate, rcfg.primary, rcfg.chain()):
        if role:
            return role[0]
    raise LLMError("best_of_n route has no model to judge with", "unavailable")


async def best_of_n(try_model: TryModel, call: CallState, rcfg: RouteConfig, chain: list[str], messages: Messages,
                    params: GenParams, *, available: Callable[[str], bool],
                    on_invalid: Callable[[str], None]) -> RoutedCompletion:
    """The first ``n`` healthy models answer concurrently and the judge picks one. If none answers, the rest of the
    chain is tried in order, as with ``single``.

    ``available(name)``: whether the model's circuit breaker lets a call through now; ``on_invalid(name)``: told of
    every judge reply that fails validation.
    """
    picked = [name for name in chain if available(name)][: rcfg.n] or chain[: rcfg.n]
    results = await asyncio.gather(*(try_model(call, name, messages, params) for name in picked),
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
        return await first_answer(try_model, call, rest, messages, params)
    failed = [a for a in call.attempts if not a.ok]
    # With tools, each candidate's calls were validated (or repaired) by try_model; the judge reads them as
    # `calls name(arguments)` lines after the candidate's text, and the picked candidate's calls are returned whole.
    candidates = [Candidate(name, describe_calls(completion)) for name, completion in answers]
    index, reason = await _judge(try_model, call, rcfg, messages, candidates, on_invalid)
    name, completion = answers[index]
    answered = {n for n, _ in answers}
    return RoutedCompletion(completion, call.route, name, list(call.attempts),
                            fallbacks=len({a.model for a in failed if a.model not in answered}),
                            fallback_time_s=sum(a.latency_s for a in failed),
                            candidates=candidates, judge_reason=reason)


class _JudgeVerdict(BaseModel):
    best: int
    reason: str


def _verdict_model(count: int) -> type[_JudgeVerdict]:
    # Built per call so an out-of-range pick is a validation error, which the repair loop sends back to the judge.
    return create_model(
        "JudgeVerdict",
        __base__=_JudgeVerdict,
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


async def _judge(try_model: TryModel, call: CallState, rcfg: RouteConfig, messages: Messages,
                 candidates: list[Candidate], on_invalid: Callable[[str], None]) -> tuple[int, str]:
    """(index into candidates, reason). A failed judge keeps the first answer and says so."""
    if len(candidates) == 1:
        return 0, f"only {candidates[0].model} answered; no judging needed"
    judge = judge_model(rcfg)
    try:
        verdict = await structured_on_chain(try_model, call, [judge], judge_messages(messages, candidates),
                                            _verdict_model(len(candidates)), GenParams(), max_repairs=1,
                                            on_invalid=on_invalid)
    except LLMError as exc:
        return 0, f"judge {judge} failed ({exc.kind}); kept the first answer, from {candidates[0].model}"
    best = verdict.value.best
    return best - 1, verdict.value.reason or f"judge {judge} picked candidate {best}"

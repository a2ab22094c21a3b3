"""What a routed call returns, and the bookkeeping of one call in flight (attempts, deadline)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel

from agentlab.core.errors import AllModelsFailed
from agentlab.core.llm.types import Completion, GenParams, Messages

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class Attempt:
    """One try of one model: ``outcome`` is ``"ok"`` or an error kind (``circuit_open`` and ``deadline`` included)."""

    model: str
    outcome: str
    latency_s: float = 0.0
    message: str | None = None
    retry_after: float | None = None  # a rate-limited model's Retry-After, in seconds
    repaired: bool = False  # an ok reply whose tool calls failed validation and were asked again (``checking_calls``)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def invalid_replies(attempts: list[Attempt]) -> int:
    """The replies of a routed call whose tool calls failed validation (``checking_calls``): the repaired ones (an
    ok attempt marked ``repaired``) and those that ended the model's turn (an ``invalid_tool_call`` attempt)."""
    return sum(1 for a in attempts if a.outcome == "invalid_tool_call" or a.repaired)


@dataclass
class Candidate:
    """A best_of_n answer shown to the judge."""

    model: str
    text: str


@dataclass
class RoutedCompletion:
    """The answer of a route and how it was reached.

    ``model`` is the config name of the model that answered; ``fallbacks`` counts the models abandoned before it;
    ``fallback_time_s`` is the time lost to failed attempts (retries, waits on Retry-After and fallbacks included).
    """

    completion: Completion
    route: str
    model: str
    attempts: list[Attempt] = field(default_factory=list)
    fallbacks: int = 0
    fallback_time_s: float = 0.0
    candidates: list[Candidate] | None = None
    judge_reason: str | None = None

    @property
    def text(self) -> str:
        return self.completion.text


@dataclass
class StructuredResult(Generic[ModelT]):
    """A validated pydantic object (of the schema asked for), the completion it came from, and how many repair rounds
    it took."""

    value: ModelT
    completion: RoutedCompletion
    repairs: int = 0


class CallState:
    """One routed call: its route, its overall deadline and every attempt so far."""

    def __init__(self, route: str, deadline_s: float | None, stream: bool = False,
                 on_delta: Callable[[str, str], None] | None = None):
        self.route = route
        self.stream = stream  # ask streaming-capable models to stream (answers then carry ttft_s)
        # on_delta(model, text): streamed text handed on as it arrives (a gateway's SSE). Once any text went out, a
        # failure ends the call: a retry or a fallback would splice two answers together.
        self.on_delta = on_delta
        self.delivered = False
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s if deadline_s is not None else None
        self.attempts: list[Attempt] = []
        # When each model's latest attempt started: the answer's start marks the end of the time lost to failures.
        self.attempt_started: dict[str, float] = {}

    def deliver(self, model: str, text: str) -> None:
        """Hand one streamed piece of ``model``'s answer to ``on_delta``; from now on the call cannot fall back."""
        self.delivered = True
        if self.on_delta is not None:
            self.on_delta(model, text)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be <= 0), or None without a deadline."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def failed(self) -> AllModelsFailed:
        """The error to raise when no model answered; an exhausted deadline is the last (deciding) attempt."""
        if self.expired() and not (self.attempts and self.attempts[-1].outcome == "deadline"):
            self.attempts.append(Attempt("-", "deadline", 0.0, "the route's deadline_s ran out"))
        error = AllModelsFailed(self.route, [(a.model, a.outcome, a.message or "") for a in self.attempts])
        error.invalid_replies = invalid_replies(self.attempts)
        last = self.attempts[-1] if self.attempts else None
        if last is not None and last.outcome == "rate_limited":
            error.retry_after = last.retry_after  # what the last model asked for: a gateway passes it on
        return error

    def deadline_error(self, model: str) -> AllModelsFailed:
        self.attempts.append(Attempt(model, "deadline", 0.0, "the route's deadline_s ran out before this model"))
        return self.failed()

    def result(self, completion: Completion, model: str) -> RoutedCompletion:
        """Wrap the successful completion of ``model``."""
        if len(self.attempts) == 1:  # the common case, kept cheap: the first try answered
            return RoutedCompletion(completion, self.route, model, [self.attempts[0]])
        abandoned = {a.model for a in self.attempts if a.model != model and not a.ok}
        answer_started = self.attempt_started.get(model, self.started)
        lost = answer_started - self.started if any(not a.ok for a in self.attempts) else 0.0
        return RoutedCompletion(completion, self.route, model, list(self.attempts), len(abandoned), lost)


TryModel = Callable[[CallState, str, Messages, GenParams], Awaitable[Completion | None]]
"""Try one model for a call, retries included: ``try_model(call, name, messages, params)`` returns its completion, or
None when it gave up (``call.attempts`` says why); raises ``AllModelsFailed`` once the call's deadline is spent. The
router passes its own ``Router.try_model`` to the strategies and to structured output, which never see the router."""

"""Per-model health for the router: call statistics, latency estimates and a circuit breaker."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# Enough recent samples for a stable median without growing with a long run.
_LATENCY_WINDOW = 2048


@dataclass
class CircuitBreaker:
    """Consecutive failures open the breaker; after ``cooldown_s`` one trial call is let through (half-open).

    The trial's success closes the breaker, its failure re-opens it for another cool-down. While the trial is in
    flight every other caller is refused, so a dead model gets one request per cool-down, not a burst.
    """

    failures: int
    cooldown_s: float
    consecutive: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        if self.trial_in_flight or time.monotonic() - self.opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def available(self) -> bool:
        """Whether a call could go through now (without claiming the half-open trial)."""
        return self.opened_at is None or (not self.trial_in_flight and self.state == HALF_OPEN)

    def allow(self) -> bool:
        """Claim permission for one call; in the half-open state only the first caller gets it."""
        if self.opened_at is None:
            return True
        if self.trial_in_flight or time.monotonic() - self.opened_at < self.cooldown_s:
            return False
        self.trial_in_flight = True
        return True

    def record_success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.trial_in_flight = False

    def record_failure(self) -> None:
        self.consecutive += 1
        if self.trial_in_flight or self.consecutive >= self.failures:
            self.opened_at = time.monotonic()
        self.trial_in_flight = False

    def release(self) -> None:
        """Give back a claimed trial that never produced a verdict (e.g. the caller was cancelled)."""
        self.trial_in_flight = False


@dataclass
class ModelStats:
    """Counters for one configured model; latencies are of successful calls only (as the provider measured them)."""

    alpha: float
    calls: int = 0
    successes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    invalid_outputs: int = 0
    invalid_tool_calls: int = 0  # replies whose tool calls failed validation (the transport call itself succeeded)
    judged: int = 0  # best_of_n: answers of this model shown to a judge
    judge_wins: int = 0  # best_of_n: answers of this model the judge picked
    ewma_latency_s: float | None = None
    total_latency_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    def record_success(self, latency_s: float, tokens_in: int, tokens_out: int) -> None:
        self.calls += 1
        self.successes += 1
        self.total_latency_s += latency_s
        self.latencies.append(latency_s)
        if self.ewma_latency_s is None:
            self.ewma_latency_s = latency_s
        else:
            self.ewma_latency_s = self.alpha * latency_s + (1 - self.alpha) * self.ewma_latency_s
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def record_error(self, kind: str, tokens_in: int = 0, tokens_out: int = 0) -> None:
        """A failed call; the tokens of one that came back unusable (a tool call cut at max_tokens) were spent."""
        self.calls += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out

    def snapshot(self, breaker: CircuitBreaker) -> dict[str, Any]:
        """A JSON-ready summary."""
        latencies = list(self.latencies)
        return {
            "calls": self.calls,
            "successes": self.successes,
            "errors": dict(self.errors),
            "invalid_outputs": self.invalid_outputs,
            "invalid_tool_calls": self.invalid_tool_calls,
            "judged": self.judged,
            "judge_wins": self.judge_wins,
            "mean_latency_s": self.total_latency_s / self.successes if self.successes else None,
            "ewma_latency_s": self.ewma_latency_s,
            "p50_latency_s": statistics.median(latencies) if latencies else None,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "breaker": breaker.state,
            "consecutive_failures": breaker.consecutive,
        }

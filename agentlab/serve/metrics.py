"""The gateway's Prometheus metrics (``GET /metrics``, text exposition format), on prometheus_client.

Per request (``route`` is the name the client asked for, ``model`` the model that answered):
``agentlab_requests_total{route, model}``, ``agentlab_request_errors_total{route, kind}`` (kind: the router's error
kind, or the gateway's own: auth, too_large, bad_request, not_found, ...), ``agentlab_fallbacks_total{route, model}``
(models given up on before the answer), ``agentlab_request_duration_seconds{route, model}`` and, for streams,
``agentlab_time_to_first_token_seconds{route, model}``. Per model attempt (the router's ``llm_call`` events):
``agentlab_model_attempts_total{model, outcome}``, ``agentlab_model_latency_seconds{model}`` and
``agentlab_model_tokens_total{model, type}``. Tool calls: ``agentlab_tool_calls_total{route, model}`` (calls in the
answers sent) and ``agentlab_invalid_tool_calls_total{model}`` (model replies whose calls failed validation, from the
router's ``invalid_tool_call`` events; each was repaired or fallen back from). Also ``agentlab_requests_in_flight``.

Labels are config names only (routes, models, error kinds): never a key, a URL or prompt text. Each gateway has its
own registry, so several can live in one process (tests).
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

__all__ = ["GatewayMetrics"]

# Seconds: from a loopback upstream's milliseconds to a long local generation.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no `_created` series next to every counter: they only double the scrape
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("agentlab_requests", "Requests answered, by route asked for and model that answered",
                                ["route", "model"], registry=r)
        self.errors = Counter("agentlab_request_errors", "Requests that ended in an error, by kind",
                              ["route", "kind"], registry=r)
        self.fallbacks = Counter("agentlab_fallbacks", "Models given up on before a request's answer",
                                 ["route", "model"], registry=r)
        self.duration = Histogram("agentlab_request_duration_seconds", "Request time in the gateway",
                                  ["route", "model"], buckets=_BUCKETS, registry=r)
        self.ttft = Histogram("agentlab_time_to_first_token_seconds", "Streams: time to the first text sent",
                              ["route", "model"], buckets=_BUCKETS, registry=r)
        self.attempts = Counter("agentlab_model_attempts", "Model attempts, by outcome (ok or an error kind)",
                                ["model", "outcome"], registry=r)
        self.model_latency = Histogram("agentlab_model_latency_seconds", "Time of successful model attempts",
                                       ["model"], buckets=_BUCKETS, registry=r)
        self.tokens = Counter("agentlab_model_tokens", "Tokens of successful model attempts",
                              ["model", "type"], registry=r)
        self.tool_calls = Counter("agentlab_tool_calls", "Tool calls in the answers sent", ["route", "model"],
                                  registry=r)
        self.invalid_tool_calls = Counter("agentlab_invalid_tool_calls", "Model replies whose tool calls failed "
                                          "validation (repaired or fallen back from)", ["model"], registry=r)
        self.in_flight = Gauge("agentlab_requests_in_flight", "Requests being answered now", registry=r)
        # Plain tallies for results.json (prometheus_client's values are awkward to read back).
        self.answered: Tally[tuple[str, str]] = Tally()
        self.failed: Tally[tuple[str, str]] = Tally()
        self.fallback_count = 0
        self.tool_call_count = 0
        self.invalid_tool_call_count = 0

    def answered_request(self, route: str, model: str, seconds: float, fallbacks: int,
                         ttft: float | None = None, tool_calls: int = 0) -> None:
        self.requests.labels(route, model).inc()
        self.duration.labels(route, model).observe(seconds)
        if fallbacks:
            self.fallbacks.labels(route, model).inc(fallbacks)
            self.fallback_count += fallbacks
        if ttft is not None:
            self.ttft.labels(route, model).observe(ttft)
        self.answered[(route, model)] += 1
        if tool_calls:
            self.tool_calls.labels(route, model).inc(tool_calls)
            self.tool_call_count += tool_calls

    def failed_request(self, route: str, kind: str) -> None:
        self.errors.labels(route, kind).inc()
        self.failed[(route, kind)] += 1

    def on_event(self, kind: str, **fields: Any) -> None:
        """The router's ``on_event``: one ``llm_call`` per model attempt, one ``invalid_tool_call`` per reply whose
        calls failed validation."""
        if kind == "invalid_tool_call":
            self.invalid_tool_calls.labels(fields["model"]).inc()
            self.invalid_tool_call_count += 1
            return
        if kind != "llm_call":
            return
        model, outcome = fields["model"], fields["outcome"]
        self.attempts.labels(model, outcome).inc()
        if outcome == "ok":
            self.model_latency.labels(model).observe(fields["latency_s"])
            if fields.get("prompt_tokens"):
                self.tokens.labels(model, "prompt").inc(fields["prompt_tokens"])
            if fields.get("completion_tokens"):
                self.tokens.labels(model, "completion").inc(fields["completion_tokens"])

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def summary(self) -> dict[str, Any]:
        """Counts for results.json."""
        return {
            "requests": sum(self.answered.values()) + sum(self.failed.values()),
            "answered": sum(self.answered.values()),
            "failed": sum(self.failed.values()),
            "fallbacks": self.fallback_count,
            "tool_calls": self.tool_call_count,
            "invalid_tool_calls": self.invalid_tool_call_count,
            "by_route_model": [{"route": r, "model": m, "requests": n} for (r, m), n in sorted(self.answered.items())],
            "errors": [{"route": r, "kind": k, "requests": n} for (r, k), n in sorted(self.failed.items())],
        }

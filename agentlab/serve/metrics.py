"""The gateway's Prometheus metrics (``GET /metrics``, text exposition format), on prometheus_client.

Per request (``route`` is the name the client asked for, ``model`` the model that answered):
``agentlab_requests_total{route, model}``, ``agentlab_request_errors_total{route, kind}`` (kind: the router's error
kind, or the gateway's own: auth, too_large, bad_request, not_found, client_disconnected, shutdown, internal_error,
...), ``agentlab_fallbacks_total{route, model}``
(models given up on before the answer), ``agentlab_request_duration_seconds{route, model}`` and, for streams,
``agentlab_time_to_first_token_seconds{route, model}``. Per model attempt (the router's ``llm_call`` events):
``agentlab_model_attempts_total{model, outcome}``, ``agentlab_model_latency_seconds{model}`` and
``agentlab_model_tokens_total{model, type}``. Tool calls: ``agentlab_tool_calls_total{route, model}`` (calls in the
answers sent) and ``agentlab_invalid_tool_calls_total{model}`` (model replies whose calls failed validation, from the
router's ``invalid_tool_call`` events; each was repaired or fallen back from). Also ``agentlab_requests_in_flight``.

Response cache: ``agentlab_cache_lookups_total{route, result}`` (hit or miss). Routing by task:
``agentlab_route_choices_total{route, chosen}``. Answer quality per model, read from the router's stats at scrape
time: ``agentlab_model_invalid_outputs_total{model}`` (replies that failed structured-output validation),
``agentlab_model_judged_total{model}`` and ``agentlab_model_judge_wins_total{model}`` (best_of_n: answers shown to
the judge, answers it picked). Client keys, by key *name*: ``agentlab_key_requests_total{key}``,
``agentlab_key_tokens_total{key, type}``, ``agentlab_key_cost_usd_total{key}``,
``agentlab_key_refusals_total{key, reason}`` (route, rpm, tpm, budget).

Labels are config names only (routes, models, error kinds): never a key, a URL or prompt text. Each gateway has its
own registry, so several can live in one process (tests).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
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
        self.cache = Counter("agentlab_cache_lookups", "Response cache lookups, by result (hit, miss)",
                             ["route", "result"], registry=r)
        self.route_choices = Counter("agentlab_route_choices", "Routing by task: the route each request went to",
                                     ["route", "chosen"], registry=r)
        self.key_requests = Counter("agentlab_key_requests", "Requests answered, by client key name", ["key"],
                                    registry=r)
        self.key_tokens = Counter("agentlab_key_tokens", "Tokens spent, by client key name", ["key", "type"],
                                  registry=r)
        self.key_cost = Counter("agentlab_key_cost_usd", "Cost spent in USD (from the keys file's prices), by "
                                "client key name", ["key"], registry=r)
        self.key_refusals = Counter("agentlab_key_refusals", "Requests refused by a key's limits, by reason",
                                    ["key", "reason"], registry=r)
        self.model_stats: Callable[[], dict[str, dict[str, Any]]] | None = None  # the router's stats, for quality
        r.register(_Quality(self))
        self.cache_hits = 0
        self.cache_misses = 0
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
        if kind == "cache":
            self.cache.labels(fields["route"], fields["result"]).inc()
            if fields["result"] == "hit":
                self.cache_hits += 1
            else:
                self.cache_misses += 1
            return
        if kind == "route_choice":
            self.route_choices.labels(fields["route"], fields["chosen"]).inc()
            return
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

    def key_spend(self, key: str, prompt: int, completion: int, cost: float) -> None:
        self.key_requests.labels(key).inc()
        if prompt:
            self.key_tokens.labels(key, "prompt").inc(prompt)
        if completion:
            self.key_tokens.labels(key, "completion").inc(completion)
        if cost:
            self.key_cost.labels(key).inc(cost)

    def key_refused(self, key: str, reason: str) -> None:
        self.key_refusals.labels(key, reason).inc()

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
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "by_route_model": [{"route": r, "model": m, "requests": n} for (r, m), n in sorted(self.answered.items())],
            "errors": [{"route": r, "kind": k, "requests": n} for (r, k), n in sorted(self.failed.items())],
        }


class _Quality:
    """A collector reading the router's per-model quality counts at scrape time (no bookkeeping per request)."""

    def __init__(self, metrics: GatewayMetrics):
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # unchecked collector: its series appear once the router's stats are wired

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        stats = self.metrics.model_stats() if self.metrics.model_stats is not None else {}
        families = [("invalid_outputs", "Replies that failed structured-output validation"),
                    ("judged", "best_of_n: answers shown to the judge"),
                    ("judge_wins", "best_of_n: answers the judge picked")]
        for field, doc in families:
            family = CounterMetricFamily(f"agentlab_model_{field}", doc, labels=["model"])
            for model, values in stats.items():
                family.add_metric([model], values.get(field, 0))
            yield family

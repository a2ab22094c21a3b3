"""The router: retries, timeouts, fallback chains, circuit breakers, strategies and per-model stats.

A route (``config.route(name)``) lists models by role; ``RouteConfig.chain()`` gives the fallback order
primary -> duplicate -> reserve -> fallback. Retryable failures (``LLMError.retryable``) are retried on the same model
up to ``config.retries`` times; the others (auth, not_found, bad_request) move on at once. ``config.deadline_s``
bounds a whole routed call. Every attempt is reported to ``on_event("llm_call", ...)`` with no key, header or prompt,
and to ``on_call`` with the messages and the reply (a run folder's llm_calls.jsonl, keys scrubbed). Once
``agentlab.core.tracing.configure_tracing`` has run, each routed request is also an OpenTelemetry span, with one child
span per attempt.

The API is async first. Sync callers use ``generate_sync`` / ``structured_sync``, which run on one background event
loop owned by the router: HTTP clients are bound to the loop they first ran on, so a router is used either from
one event loop of the caller's or through the sync methods, not both.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from agentlab.core import tracing
from agentlab.core.errors import ConfigError, LLMError, UsageError
from agentlab.core.llm.cache import ResponseCache, build_cache
from agentlab.core.llm.classify import choose_route
from agentlab.core.llm.config import LLMConfig, ModelConfig, RouteConfig
from agentlab.core.llm.providers import build_provider
from agentlab.core.llm.results import (
    Attempt,
    CallState,
    Candidate,
    ModelT,
    RoutedCompletion,
    StructuredResult,
    TryModel,
)
from agentlab.core.llm.stats import CLOSED, CircuitBreaker, ModelStats
from agentlab.core.llm.strategies import best_of_n, fastest_order, first_answer
from agentlab.core.llm.structured import structured_on_chain
from agentlab.core.llm.tools import call_problem, check_tools, checking_calls, cut_problem
from agentlab.core.llm.types import Completion, GenParams, Messages, Provider

if TYPE_CHECKING:
    from agentlab.core.runs import RunDir

__all__ = ["Router", "RoutedCompletion", "StructuredResult", "Attempt", "Candidate"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Router:
    """Routes chat requests over the models of an ``LLMConfig``.

    ``providers`` maps provider names to ``Provider`` objects (built from the config when omitted); ``on_event`` is
    called as ``on_event("llm_call", **fields)`` once per attempt with metadata only (``RunDir.event`` fits);
    ``on_call(record)``, when given, gets the same attempt with the messages sent, the params and the reply, so a
    user can see why an answer was what it was (``RunDir.llm_call`` fits); ``rng`` drives the ``fastest`` strategy's
    exploration; ``secrets`` are scrubbed from error messages passed to ``on_event``.
    """

    def __init__(
        self,
        config: LLMConfig,
        providers: dict[str, Provider] | None = None,
        on_event: Callable[..., None] | None = None,
        *,
        rng: random.Random | None = None,
        secrets: list[str] | None = None,
        on_call: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.config = config
        self.on_event = on_event
        self.on_call = on_call
        self.rng = rng or random.Random()
        self.secrets = secrets if secrets is not None else []
        if providers is None:
            providers = {name: build_provider(name, cfg, self.secrets, config.resources)
                         for name, cfg in config.providers.items()}
        self.providers = providers
        self._models: dict[str, tuple[Provider, ModelConfig]] = {}
        self._params: dict[str, dict[str, Any]] = {}
        for name, mcfg in config.models.items():
            if mcfg.provider not in providers:
                raise ConfigError(f"models.{name}: provider '{mcfg.provider}' was not given to the router",
                                  hint=f"pass providers for: {', '.join(sorted(config.providers))}")
            self._models[name] = (providers[mcfg.provider], mcfg)
            self._params[name] = config.model_params(name)  # the profile's defaults under the model's own params
        breaker = config.circuit_breaker
        self._stats = {name: ModelStats(config.ewma_alpha) for name in config.models}
        self._breakers = {name: CircuitBreaker(breaker.failures, breaker.cooldown_s) for name in config.models}
        self._routes: dict[str, tuple[RouteConfig, list[str]]] = {}
        # The response cache (core/llm/cache.py), None when off; a caller may share one between routers.
        self.cache: ResponseCache | None = build_cache(config.cache)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: LLMConfig, on_event: Callable[..., None] | None = None,
                    secrets: list[str] | None = None, *, rng: random.Random | None = None,
                    on_call: Callable[[dict[str, Any]], None] | None = None) -> Router:
        """Build every provider of ``config``; API keys read from the environment are appended to ``secrets``."""
        secrets = secrets if secrets is not None else []
        providers = {name: build_provider(name, cfg, secrets, config.resources)
                     for name, cfg in config.providers.items()}
        return cls(config, providers, on_event, rng=rng, secrets=secrets, on_call=on_call)

    @classmethod
    def for_run(cls, config: LLMConfig, run_dir: RunDir | None = None,
                providers: dict[str, Provider] | None = None) -> Router:
        """A router whose calls are recorded in ``run_dir`` (metadata in events.jsonl; messages and replies in
        llm_calls.jsonl unless the run turned that off) and whose API keys ``run_dir`` scrubs from everything it
        writes (``run_dir``: a ``RunDir``, or None for no recording). ``providers`` replace the configured ones by
        name (tests pass scripted providers)."""
        secrets: list[str] = []
        built = {name: (providers or {}).get(name) or build_provider(name, cfg, secrets, config.resources)
                 for name, cfg in config.providers.items()}
        router = cls(config, built, run_dir.event if run_dir is not None else None, secrets=secrets,
                     on_call=run_dir.llm_call if run_dir is not None else None)
        if run_dir is not None:
            for secret in secrets:
                run_dir.add_secret(secret)
        return router

    # ------------------------------------------------------------------ public async API

    async def generate(self, messages: Messages, route: str = "default", params: GenParams | None = None, *,
                       stream: bool = False, on_delta: Callable[[str, str], None] | None = None,
                       metadata: dict[str, Any] | None = None, tenant: str = "",
                       use_cache: bool = True) -> RoutedCompletion:
        """Answer ``messages`` through ``route``'s strategy; raises ``AllModelsFailed`` when no model answers.

        A route with ``classify`` first picks one of its choices (``classify.py``; ``metadata`` is what the
        metadata rule reads), reported as a ``route_choice`` event. With the response cache on (``cache.py``) a
        repeated request is answered from it (attempt outcome ``cache_hit``, ``fallbacks`` 0) unless ``use_cache``
        is false; ``tenant`` is part of the cache key, so tenants never share answers. Hits and misses are
        ``cache`` events.

        With ``stream``, models that can (``stream: true`` in their config and a streaming provider) answer over SSE,
        so the completion carries ``ttft_s``; a stream cut mid-way is a retryable ``stream_cut`` failure.
        ``on_delta(model, text)`` (with ``stream``) receives the answer's pieces as they arrive: a failure before the
        first piece retries and falls back as usual, one after it raises that model's ``LLMError`` (the caller has
        already passed text on). best_of_n routes never call it: their answer is known only once judged.

        With ``params.tools`` the answer's ``tool_calls`` are validated against the tools' schemas (and
        ``tool_choice``, ``parallel_tool_calls``): an invalid reply is repaired once by showing the model the
        validation error, then the next model is asked (``tools.checking_calls``); ``on_delta`` is not called (the
        answer is only known once its calls validate). A malformed ``tools`` raises ``LLMError("bad_request")``.
        """
        _check_messages(messages)
        rcfg, chain = self.route(route)
        if rcfg.classify is not None:
            chosen, why = await choose_route(rcfg.classify, messages, metadata, self._ask_classifier)
            self._event("route_choice", route=route, chosen=chosen, by=rcfg.classify.by, reason=why)
            route = chosen
            rcfg, chain = self.route(route)
        params = params or GenParams()
        cache_key = None
        if self.cache is not None and use_cache:
            default_temperature = self._params[chain[0]].get("temperature") if chain else None
            cache_key = self.cache.key(route, messages, params, default_temperature, tenant)
            if cache_key is not None:
                hit = self.cache.get(cache_key)
                self._event("cache", route=route, result="hit" if hit is not None else "miss",
                            model=hit[0] if hit is not None else None)
                if hit is not None:
                    model, completion = hit
                    if stream and on_delta is not None and completion.text and rcfg.strategy != "best_of_n" \
                            and not params.tools:
                        on_delta(model, completion.text)
                    return RoutedCompletion(completion, route, model, [Attempt(model, "cache_hit", 0.0)])
        result = await self._generate(rcfg, chain, messages, route, params, stream, on_delta)
        if cache_key is not None and self.cache is not None:
            self.cache.put(cache_key, result.model, result.completion)
        return result

    async def _ask_classifier(self, model: str, messages: Messages, params: GenParams) -> Completion:
        return await self.send(model, messages, params, self.config.timeout_s, route="classify", attempt=1)

    def _event(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, **fields)
            except Exception:
                log.warning("recording a %s event failed", kind, exc_info=True)

    async def _generate(self, rcfg: RouteConfig, chain: list[str], messages: Messages, route: str,
                        params: GenParams, stream: bool, on_delta: Callable[[str, str], None] | None
                        ) -> RoutedCompletion:
        try_model: TryModel = self.try_model
        if params.tools:  # calls are validated (and repaired) before the answer is known: nothing streams out early
            check_tools(params.tools, params.tool_choice)
            try_model = checking_calls(self.try_model, self.record_invalid_tool_call, self.small)
        call = CallState(route, self.config.deadline_s, stream,
                         on_delta if stream and rcfg.strategy != "best_of_n" and not params.tools else None)
        if rcfg.strategy == "best_of_n":
            work = best_of_n(try_model, call, rcfg, chain, messages, params, available=self.available,
                             on_invalid=self.record_invalid_output)
        else:
            work = first_answer(try_model, call, self.order(rcfg, chain), messages, params)
        tracer = tracing.router_tracer
        if tracer is not None:  # one span for the request, the parent of its attempts' spans
            result = await tracer.request(work, "stream" if stream else "generate", route, rcfg.strategy, self._scrub)
        else:
            result = await work
        if result.candidates:  # best_of_n: each candidate's model was judged, the answer's model won
            for candidate in result.candidates:
                self._stats[candidate.model].judged += 1
            self._stats[result.model].judge_wins += 1
        return result

    async def structured(self, messages: Messages, schema: type[ModelT], route: str = "default",
                         params: GenParams | None = None, max_repairs: int = 2, *,
                         show_schema: bool = True) -> StructuredResult[ModelT]:
        """Ask for JSON matching ``schema`` and return the validated object.

        An invalid reply is sent back to the same model with the validation errors, at most ``max_repairs`` times,
        before the next model of the chain is asked; raises ``AllModelsFailed`` when none gives a valid object.
        Every request carries a bounded ``max_tokens``: ``params``' own, else the schema's bound lowered to the
        model's configured one (``structured.bounded``); a reply cut there is reported as cut. ``show_schema=False``
        leaves the JSON schema out of the prompt (the caller describes the format itself); it is still sent as the
        request's ``json_schema`` (a grammar for llama.cpp, ``response_format`` over HTTP).
        """
        _check_messages(messages)
        rcfg, chain = self.route(route)
        if rcfg.classify is not None:
            chosen, why = await choose_route(rcfg.classify, messages, None, self._ask_classifier)
            self._event("route_choice", route=route, chosen=chosen, by=rcfg.classify.by, reason=why)
            route = chosen
            rcfg, chain = self.route(route)
        call = CallState(route, self.config.deadline_s)
        chain = chain if rcfg.strategy == "best_of_n" else self.order(rcfg, chain)
        work = structured_on_chain(self.try_model, call, chain, messages, schema, params or GenParams(), max_repairs,
                                   on_invalid=self.record_invalid_output, show_schema=show_schema,
                                   model_max_tokens=self.configured_max_tokens)
        tracer = tracing.router_tracer
        if tracer is not None:
            return await tracer.request(work, "structured", route, rcfg.strategy, self._scrub)
        return await work

    def small(self, name: str) -> str | None:
        """How model ``name``'s repeated calls are handled (``tools.checking_calls``): None when they are not dropped
        (its profile's ``drop_repeats`` off, or the param ``tool_gate: false``), else how it then answers
        (``"words"`` or ``"results"``, its profile's ``answer_in_words``)."""
        profile = self.config.profile(name)
        if not profile.drop_repeats or self._params[name].get("tool_gate", True) is False:
            return None
        return "words" if profile.answer_in_words else "results"

    def configured_max_tokens(self, name: str) -> int | None:
        """The ``max_tokens`` of model ``name``'s own ``params``, if it sets one."""
        value = self._models[name][1].params.get("max_tokens")
        return int(value) if value is not None else None

    async def call_model(self, model_name: str, messages: Messages, params: GenParams | None = None,
                         stream: bool = False) -> Completion:
        """One request to one configured model: no fallback, no retries, no circuit breaker (llm-bench measures
        raw availability). Stats and events are recorded. With ``stream`` the provider streams and the final
        ``Completion`` carries the time to first token. Raises ``LLMError``."""
        _check_messages(messages)
        if model_name not in self._models:
            raise LLMError(f"unknown model '{model_name}'", "not_found", model=model_name,
                           hint=f"configured models: {', '.join(self._models) or 'none'}")
        return await self.send(model_name, messages, params or GenParams(), self.config.timeout_s, route=None,
                               attempt=1, stream=stream and self._models[model_name][0].supports_stream,
                               use_breaker=False)

    # ------------------------------------------------------------------ routing machinery (handed to strategies)

    def route(self, name: str) -> tuple[RouteConfig, list[str]]:
        """The route config for ``name`` (``config.route`` rules) and its fallback chain, computed once per name."""
        found = self._routes.get(name)
        if found is None:
            rcfg = self.config.route(name)
            found = self._routes[name] = (rcfg, rcfg.chain())
        return found

    def order(self, rcfg: RouteConfig, chain: list[str]) -> list[str]:
        """The models of a route in the order to try them, per its strategy."""
        if rcfg.strategy == "fastest":
            return fastest_order(chain, self._stats, self._breakers, self.config.explore, self.rng)
        return chain

    def available(self, name: str) -> bool:
        """Whether ``name``'s circuit breaker would let a call through now."""
        return self._breakers[name].available()

    async def first_answer(self, call: CallState, chain: list[str], messages: Messages,
                           params: GenParams) -> RoutedCompletion:
        """Try each model of ``chain`` in turn (with retries); the first answer wins."""
        return await first_answer(self.try_model, call, chain, messages, params)

    async def try_model(self, call: CallState, name: str, messages: Messages, params: GenParams) -> Completion | None:
        """One model with retries; None when it gave up (the attempts say why). Raises ``AllModelsFailed`` when the
        call's deadline is spent."""
        breaker = self._breakers[name]
        for try_no in range(1, self.config.retries + 2):
            left = call.remaining()
            if left is not None and left <= 0:
                raise call.deadline_error(name)
            if not breaker.allow():
                message = f"circuit open after {breaker.consecutive} consecutive failures"
                call.attempts.append(Attempt(name, "circuit_open", 0.0, message))
                self._emit(call.route, name, try_no, "circuit_open", 0.0, None, message)
                return None
            timeout = self.config.timeout_s if left is None else min(self.config.timeout_s, left)
            call.attempt_started[name] = time.monotonic()
            try:
                return await self.send(name, messages, params, timeout, route=call.route, attempt=try_no, call=call,
                                       stream=call.stream and self._can_stream(name))
            except LLMError as exc:
                if call.delivered:  # part of this answer already went out: no retry, no fallback
                    raise
                wait = self._retry_wait(exc, call, breaker, try_no)
                if wait is None:
                    return None
                if wait > 0:
                    await asyncio.sleep(wait)
        return None

    def _can_stream(self, name: str) -> bool:
        provider, mcfg = self._models[name]
        return mcfg.stream and provider.supports_stream

    def _retry_wait(self, exc: LLMError, call: CallState, breaker: CircuitBreaker, try_no: int) -> float | None:
        """Seconds to wait before retrying the same model, or None to move on to the next one."""
        if not exc.retryable or try_no > self.config.retries or breaker.state != CLOSED:
            return None
        if exc.kind == "rate_limited" and exc.retry_after:
            left = call.remaining()
            if exc.retry_after > self.config.max_retry_after_s or (left is not None and exc.retry_after >= left):
                return None
            return exc.retry_after
        return 0.0

    async def send(self, name: str, messages: Messages, params: GenParams, timeout_s: float, *, route: str | None,
                   attempt: int, call: CallState | None = None, stream: bool = False,
                   use_breaker: bool = True) -> Completion:
        """Send one request to model ``name`` and record its outcome (stats, breaker, attempt, event)."""
        provider, mcfg = self._models[name]
        merged = params.merged(self._params[name])
        stats, breaker = self._stats[name], self._breakers[name]
        # try_model claims the half-open trial right before calling us, with no await in between: if a trial is in
        # flight now, it is ours.
        holds_trial = use_breaker and breaker.trial_in_flight
        start = time.perf_counter()
        try:
            # Providers bound the whole call by timeout_s themselves (Provider protocol): a second timer here would
            # cost more per call than the rest of the routing bookkeeping together.
            if stream:
                deliver = (lambda text: call.deliver(name, text)) if call is not None and call.on_delta else None
                completion = await _stream(provider, mcfg.model, messages, merged, timeout_s, deliver)
            else:
                completion = await provider.generate(mcfg.model, messages, merged, timeout_s)
        except (TimeoutError, LLMError) as exc:
            latency = time.perf_counter() - start
            error = exc if isinstance(exc, LLMError) else LLMError(
                f"{name}: no answer within {timeout_s:.3g}s", "timeout", model=name)
            stats.record_error(error.kind)
            if use_breaker and not error.callers_fault:
                breaker.record_failure()
            elif holds_trial:
                breaker.release()  # the request's fault: no verdict on the model's health
            message = self._scrub(error.message)
            if call is not None:
                call.attempts.append(Attempt(name, error.kind, latency, message, error.retry_after))
            self._emit(route, name, attempt, error.kind, latency, None, message, messages, merged, stream)
            if error is not exc:
                raise error from None
            raise
        except BaseException as exc:
            if holds_trial:
                breaker.release()  # cancelled or a provider bug: no verdict on the model's health
            if isinstance(exc, asyncio.CancelledError):  # the caller gave up (a client disconnected): still an
                latency = time.perf_counter() - start  # attempt, counted and logged as `cancelled`
                stats.record_error("cancelled")
                self._emit(route, name, attempt, "cancelled", latency, None, "cancelled by the caller", messages,
                           merged, stream)
            raise
        latency = time.perf_counter() - start
        # Latency estimates (fastest, p50) use the provider's own request time when it has one: our wall time also
        # holds one-off costs such as building an HTTP client (httpx's TLS context is slow to build), which would
        # brand whichever model happened to go first as slow.
        # a reply cut at max_tokens before its tool call ended is that attempt's outcome (checking_calls moves on):
        # recorded as `ok`, the stats, the events and /metrics counted a success the caller never got
        cut = cut_problem(merged) if merged.tools and completion.finish_reason == "length" \
            and call_problem(completion, merged) is not None else None
        if cut is None:
            stats.record_success(completion.latency_s or latency, completion.usage.prompt_tokens,
                                 completion.usage.completion_tokens)
        else:
            stats.record_error("max_tokens", completion.usage.prompt_tokens, completion.usage.completion_tokens)
        if use_breaker:
            breaker.record_success()  # the model answered: no verdict against its health
        if call is not None and cut is None:
            call.attempts.append(Attempt(name, "ok", latency))  # a cut one: checking_calls adds its attempt
        self._emit(route, name, attempt, "ok" if cut is None else "max_tokens", latency, completion, cut, messages,
                   merged, stream)
        return completion

    def record_invalid_output(self, name: str) -> None:
        """Count a reply of ``name`` that failed structured-output validation (it does not trip the breaker)."""
        self._stats[name].invalid_outputs += 1

    def record_invalid_tool_call(self, route: str, name: str, problem: str) -> None:
        """Count a reply of ``name`` whose tool calls failed validation (it does not trip the breaker) and report it
        as an ``invalid_tool_call`` event (metadata and the validation error: no prompt, no arguments' values
        beyond what the error quotes)."""
        self._stats[name].invalid_tool_calls += 1
        if self.on_event is not None:
            try:
                self.on_event("invalid_tool_call", route=route, model=name, error=self._scrub(problem)[:500])
            except Exception:
                log.warning("recording an invalid_tool_call failed", exc_info=True)

    def _emit(self, route: str | None, name: str, attempt: int, outcome: str, latency: float,
              completion: Completion | None, error: str | None, messages: Messages | None = None,
              params: GenParams | None = None, stream: bool = False) -> None:
        """Report one attempt: metadata to ``on_event``; what was sent and answered to ``on_call`` (only when a
        request went out, so a circuit-open skip is not a call); a span when tracing is on."""
        tracer = tracing.router_tracer
        if self.on_event is None and self.on_call is None and tracer is None:
            return
        provider, mcfg = self._models[name]
        usage = completion.usage if completion is not None else None
        fields = dict(route=route, model=name, provider=provider.name, provider_model=mcfg.model, attempt=attempt,
                      outcome=outcome, latency_s=round(latency, 6),
                      ttft_s=completion.ttft_s if completion is not None else None,
                      prompt_tokens=usage.prompt_tokens if usage and usage.reported else None,
                      completion_tokens=usage.completion_tokens if usage else None, error=error)
        try:  # a broken sink must not turn a good answer into a failure
            if self.on_event is not None:
                self.on_event("llm_call", **fields)
            if self.on_call is not None and messages is not None and params is not None:
                sent = {k: v for k, v in vars(params).items() if v is not None and v != {}}
                self.on_call({**fields, "messages": messages, "params": sent,
                              "reply": completion.text if completion is not None else None,
                              **({"tool_calls": [c.to_openai() for c in completion.tool_calls]}
                                 if completion is not None and completion.tool_calls else {}),
                              "finish_reason": completion.finish_reason if completion is not None else None})
        except Exception:
            log.warning("recording an llm_call failed", exc_info=True)
        if tracer is not None:
            try:
                tracer.attempt(fields, self.config.providers.get(mcfg.provider), completion, messages, params, stream,
                               self._scrub)
            except Exception:
                log.warning("recording a trace span failed", exc_info=True)

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per configured model: calls, successes, errors by kind, latencies (mean, EWMA, p50), tokens, breaker."""
        return {name: self._stats[name].snapshot(self._breakers[name]) for name in self._models}

    # ------------------------------------------------------------------ sync API and lifecycle

    def generate_sync(self, messages: Messages, route: str = "default", params: GenParams | None = None, *,
                      stream: bool = False) -> RoutedCompletion:
        """``generate`` for sync callers, run on the router's background event loop."""
        return self._run_sync(self.generate(messages, route, params, stream=stream))

    def structured_sync(self, messages: Messages, schema: type[ModelT], route: str = "default",
                        params: GenParams | None = None, max_repairs: int = 2, *,
                        show_schema: bool = True) -> StructuredResult[ModelT]:
        """``structured`` for sync callers, run on the router's background event loop."""
        return self._run_sync(self.structured(messages, schema, route, params, max_repairs, show_schema=show_schema))

    def _background(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise LLMError("the router is closed", "unavailable", hint="create a new Router")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="agentlab-router", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Router method was called from the router's own loop; await the async one")
        try:
            loop = self._background()
        except BaseException:
            coro.close()
            raise
        tracer = tracing.router_tracer
        if tracer is not None:  # the caller's current span is the parent of the request's span
            coro = tracer.carry(coro)
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller must not leave the request running on the background loop
            raise

    async def _close_providers(self) -> None:
        seen: set[int] = set()
        for provider in self.providers.values():
            if id(provider) not in seen:
                seen.add(id(provider))
                await provider.aclose()

    def _stop_background(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    async def aclose(self) -> None:
        """Close every provider (and the background loop, if the sync API started one)."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and asyncio.get_running_loop() is not loop:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close_providers(), loop))
            self._stop_background()
        else:
            await self._close_providers()

    def close(self) -> None:
        """Close from sync code; inside a running event loop use ``await router.aclose()``."""
        if self._closed:
            return
        if self._loop is not None:
            self._closed = True
            asyncio.run_coroutine_threadsafe(self._close_providers(), self._loop).result(timeout=30)
            self._stop_background()
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._closed = True
            asyncio.run(self._close_providers())
            return
        raise RuntimeError("Router.close() called inside a running event loop; use `await router.aclose()`")

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _check_messages(messages: Any) -> None:
    """``UsageError`` at the router's entry for ``messages`` that are no list of message dicts: a plain string
    (``generate_sync("hi")``) failed deep in a provider (``dictionary update sequence element #0 has length 1``)."""
    if isinstance(messages, list | tuple):
        odd = [type(message).__name__ for message in messages if not isinstance(message, dict)]
        if not odd:
            return
        got = f"a list holding a {odd[0]}"
    else:
        got = type(messages).__name__
    raise UsageError(f"messages must be a list of {{'role', 'content'}} dicts, got {got}",
                     hint="e.g. router.generate_sync([{'role': 'user', 'content': 'hi'}])")


async def _stream(provider: Provider, model: str, messages: Messages, params: GenParams,
                  timeout_s: float, on_delta: Callable[[str], None] | None = None) -> Completion:
    """Drain a provider stream into its final ``Completion``, measuring the time to first token when it has none;
    ``on_delta`` gets each non-empty piece as it arrives. A provider without its own time whose text came in one
    piece (a server that ignored ``stream: true`` and answered whole) keeps ``ttft_s`` None: that piece's time is
    the whole answer's, no first token's."""
    start = time.perf_counter()
    ttft: float | None = None
    pieces = 0
    final: Completion | None = None
    chunks = provider.stream(model, messages, params, timeout_s)
    try:
        async for item in chunks:
            if isinstance(item, Completion):
                final = item
            elif item.text:
                pieces += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
                if on_delta is not None:
                    on_delta(item.text)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if final is None:
        raise LLMError(f"{model}: the stream ended without a final completion", "stream_cut", model=model)
    if final.ttft_s is None and pieces > 1:
        final.ttft_s = ttft
    return final

"""Optional OpenTelemetry tracing of LLM calls (``--otlp-endpoint URL``, extra ``trace``): one place for all of it.

::

    configure_tracing("http://localhost:4318")          # Jaeger; Phoenix: :6006; Langfuse: https://HOST/api/public/otel
    router.generate_sync(messages)                       # -> spans "route default" > "chat gpt-4o-mini", ...
    shutdown_tracing()                                   # flush; tracing off again

Once configured, every ``Router`` of the process reports each routed request (``generate``, ``structured``,
``generate(stream=True)``) as one span, and each model attempt inside it as a child span with the OpenTelemetry
GenAI semantic-convention attributes (``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``, ``error.type``...), plus
``agentlab.*`` attributes for the route, the attempt number, its outcome and the fallbacks. Jaeger, Phoenix,
Langfuse and any OpenTelemetry collector take them over OTLP HTTP.

Why it is built this way:

- Nothing here imports opentelemetry until tracing is asked for, and a router checks one module global per call
  when it is not: ``agentlab --help`` stays light and an untraced router costs what it did.
- Prompts and answers stay out of spans unless ``capture_content=True`` (``gen_ai.input.messages`` /
  ``gen_ai.output.messages``, the convention's opt-in attributes). The router scrubs API keys from everything it
  hands over (error messages, and content when captured); header values, keys and full URLs never reach a span.
- The provider is this module's own ``TracerProvider``, not the process-wide one: an application that set up
  its own keeps it, and the span context still nests (an application's span is the parent of the router's).
- Attempt spans are made from the router's per-attempt record, after the attempt, with its measured start and end
  times: the request path gains no timer and no context switch.
- Sync router calls run on the router's own event loop; the caller's current span travels with them (``carry``).
- Credentials for a hosted backend (Langfuse's ``Authorization`` header) come from the standard environment variable
  ``OTEL_EXPORTER_OTLP_HEADERS``, read by the exporter itself: never from a config file or the command line.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from agentlab import __version__
from agentlab.core.config import scrub_text, secret_values
from agentlab.core.errors import (
    AgentlabError,
    AllModelsFailed,
    ConfigError,
    LLMError,
    MissingPackage,
    missing_package,
    one_line,
    pip_install,
)

if TYPE_CHECKING:
    from agentlab.core.llm.config import ProviderConfig
    from agentlab.core.llm.types import Completion, GenParams, Messages

T = TypeVar("T")

__all__ = ["configure_tracing", "shutdown_tracing", "tracing_enabled", "span", "traces_url", "CAPTURE_CONTENT_ENV"]

# The variable OpenTelemetry's GenAI instrumentations read to capture message content; the CLI honours it too.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_HINT = ("give the OTLP HTTP receiver: Jaeger http://HOST:4318, Phoenix http://HOST:6006, Langfuse "
         "https://HOST/api/public/otel (or the full .../v1/traces URL)")
_IN_PROCESS_KINDS = ("llama_cpp", "hf", "scripted")  # span kind INTERNAL: the model runs in this process
_MAX_DESCRIPTION = 1000

# The tracer every Router reports to, None while tracing is off. Routers read this attribute on each request (a
# function call there would cost more than the rest of the check): read it as ``tracing.router_tracer``.
router_tracer: RouterTracer | None = None
# The attempts of the routed request in progress, (model, ok) each: tells a fallback attempt from a first try. The
# list is shared by the tasks a request starts (best_of_n), which copy the context but not the list.
_attempts: contextvars.ContextVar[list[tuple[str, bool]] | None] = contextvars.ContextVar("agentlab_attempts",
                                                                                           default=None)


# --------------------------------------------------------------------------- switching it on and off


def configure_tracing(endpoint: str | None = None, *, exporter: Any = None, capture_content: bool = False) -> None:
    """Send a span per routed LLM request and per model attempt to ``endpoint`` (an OTLP HTTP receiver: a base URL
    such as ``http://localhost:4318``, to which ``/v1/traces`` is added, or the full traces URL), or to ``exporter``
    (any OpenTelemetry ``SpanExporter``, e.g. ``InMemorySpanExporter`` in tests; spans are handed to it as each one
    ends). Neither: tracing off. A tracing set up before is flushed and replaced.

    ``capture_content``: put the messages sent and the reply in the attempt spans (keys scrubbed); off by default.
    Raises ``MissingPackage`` (exit 2, its hint the pip command of the extra ``trace``) without that extra, and
    ``ConfigError`` (exit 2) for an endpoint that is not an http(s) URL or does not answer.
    """
    shutdown_tracing()
    if endpoint is None and exporter is None:
        return
    if endpoint is not None and exporter is not None:
        raise ConfigError("tracing: give an OTLP endpoint or an exporter, not both")
    _import_sdk()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if endpoint is not None:
        url = traces_url(endpoint)
        _check_endpoint(url)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(OTLPSpanExporter(endpoint=url))
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(processor)
    global router_tracer
    router_tracer = RouterTracer(provider, capture_content)


def shutdown_tracing() -> None:
    """Export the spans still buffered and turn tracing off (nothing happens when it was off)."""
    global router_tracer
    tracer, router_tracer = router_tracer, None
    if tracer is not None:
        tracer.provider.shutdown()


def tracing_enabled() -> bool:
    """Whether ``configure_tracing`` switched tracing on."""
    return router_tracer is not None


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """A span around the block, the parent of the LLM spans made inside it (a command's run, a gateway request);
    nothing at all when tracing is off. An exception marks it failed, with its type as ``error.type``."""
    tracer = router_tracer
    if tracer is None:
        yield
        return
    from opentelemetry import trace

    current = tracer.tracer.start_span(name, attributes=dict(attributes or {}))
    with trace.use_span(current, end_on_exit=True, record_exception=False, set_status_on_exception=False):
        try:
            yield
        except BaseException as exc:
            _failed(current, exc, tracer.clean)
            raise


def traces_url(endpoint: str) -> str:
    """The OTLP traces URL of ``endpoint``: ``/v1/traces`` added to a base URL, as ``OTEL_EXPORTER_OTLP_ENDPOINT``
    does. ``ConfigError`` for anything but an http(s) URL with a host."""
    from urllib.parse import urlunsplit

    text = endpoint.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"otlp endpoint: {scrub_text(text)!r} is not an http(s) URL", hint=_HINT)
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError:
        raise ConfigError(f"otlp endpoint: {scrub_text(text)!r} has no valid port", hint=_HINT) from None
    if parts.path.rstrip("/").endswith("/v1/traces"):
        return text
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/v1/traces"))


def _shown(url: str) -> str:
    """An http(s) URL without user info or query (where credentials hide), for messages."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _import_sdk() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        error = missing_package(exc)
        if error is None:  # installed, but one of its own dependencies is broken
            error = MissingPackage(f"opentelemetry cannot be imported: {one_line(exc)}",
                                   hint=pip_install("trace"))
        raise error from None


def _check_endpoint(url: str) -> None:
    """One empty OTLP export: a receiver answers 2xx (or 400 to the empty body); no answer, 401/403 and 404/405 are
    configuration errors found before any work starts."""
    import httpx

    shown = _shown(url)
    try:
        response = httpx.post(url, content=b"", headers={"Content-Type": "application/x-protobuf",
                                                          **_otlp_headers()}, timeout=5.0)
    except httpx.HTTPError as exc:
        raise ConfigError(f"otlp endpoint: cannot reach {shown} ({one_line(exc)})",
                          hint="start the tracing backend or check the address; " + _HINT) from None
    if response.status_code in (401, 403):
        raise ConfigError(f"otlp endpoint: {shown} answered HTTP {response.status_code}",
                          hint="set its credentials in OTEL_EXPORTER_OTLP_HEADERS, e.g. "
                          "'Authorization=Basic <base64 of public:secret key>' for Langfuse")
    if response.status_code in (404, 405):
        raise ConfigError(f"otlp endpoint: {shown} answered HTTP {response.status_code}: no OTLP HTTP traces "
                          "receiver there", hint=_HINT)


def _otlp_headers() -> dict[str, str]:
    """The headers the OTLP exporter will send (``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``), for the check."""
    from urllib.parse import unquote

    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(k).strip(): unquote(v).strip() for k, v in pairs}


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "agentlab"}))
    return resource


# --------------------------------------------------------------------------- what the router reports


class RouterTracer:
    """Turns the router's requests and attempts into spans (the router calls it only while tracing is on)."""

    def __init__(self, provider: Any, capture_content: bool):
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.provider, self.capture_content = provider, capture_content
        self._known = secret_values()  # the environment's and .env's secrets, besides the router's own list
        self.tracer = provider.get_tracer("agentlab", __version__)
        self._trace, self._context = trace, context
        self._client, self._internal = SpanKind.CLIENT, SpanKind.INTERNAL
        self._error = lambda text: Status(StatusCode.ERROR, text[:_MAX_DESCRIPTION])

    def clean(self, text: str, scrub: Callable[[str], str] = str) -> str:
        """``text`` without the router's secrets (``scrub``), secret environment values and URL credentials."""
        return scrub_text(scrub(text), known=self._known)

    async def request(self, work: Awaitable[T], kind: str, route: str, strategy: str,
                      scrub: Callable[[str], str]) -> T:
        """Await ``work`` (a routed call) inside a span ``route <route>``: the parent of its attempts' spans.
        ``kind``: generate, stream or structured."""
        attributes = {"agentlab.route": route, "agentlab.strategy": strategy, "agentlab.request": kind}
        current = self.tracer.start_span(f"route {route}", kind=self._internal, attributes=attributes)
        token = _attempts.set([])
        try:
            with self._trace.use_span(current, end_on_exit=True, record_exception=False,
                                      set_status_on_exception=False):
                try:
                    result = await work
                except BaseException as exc:
                    _failed(current, exc, lambda text: self.clean(text, scrub))
                    raise
                _answered(current, result)
                return result
        finally:
            _attempts.reset(token)

    def carry(self, coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``coro`` run under the caller's current span, wherever it is awaited (the router's own loop)."""
        captured = self._context.get_current()
        context = self._context

        async def carried() -> T:
            token = context.attach(captured)
            try:
                return await coro
            finally:
                context.detach(token)

        return carried()

    def attempt(self, record: Mapping[str, Any], provider_cfg: ProviderConfig | None, completion: Completion | None,
                messages: Messages | None, params: GenParams | None, stream: bool,
                scrub: Callable[[str], str]) -> None:
        """One span for one model attempt, from the router's ``llm_call`` record (the fields of ``on_event``), the
        provider's config, the completion (None on failure), what was sent, and whether it streamed."""
        end = time.time_ns()
        start = end - int(float(record["latency_s"]) * 1e9)
        provider_kind = getattr(provider_cfg, "kind", None) or "unknown"
        request_model = record["provider_model"]
        outcome = record["outcome"]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": provider_kind, "gen_ai.system": provider_kind,
            "gen_ai.request.model": request_model, "agentlab.model": record["model"],
            "agentlab.provider": record["provider"], "agentlab.attempt": record["attempt"],
            "agentlab.outcome": outcome, "agentlab.latency_s": record["latency_s"],
        }
        if record["route"] is not None:
            attributes["agentlab.route"] = record["route"]
        earlier = _attempts.get()
        if earlier is not None:  # a fallback: another model of this request failed before this attempt ended
            attributes["agentlab.fallback"] = any(model != record["model"] and not ok for model, ok in earlier)
            earlier.append((record["model"], outcome == "ok"))
        attributes.update(_server(provider_cfg))
        if params is not None:
            attributes.update(_request(params, stream))
        if completion is not None:
            attributes.update(_response(completion, record))
        else:
            attributes["error.type"] = outcome
        if self.capture_content:
            attributes.update(_content(messages, completion, lambda text: self.clean(text, scrub)))
        kind = self._internal if provider_kind in _IN_PROCESS_KINDS else self._client
        attempt = self.tracer.start_span(f"chat {request_model}", kind=kind, attributes=attributes, start_time=start)
        if completion is None:
            attempt.set_status(self._error(self.clean(record.get("error") or outcome, scrub)))
        attempt.end(end_time=end)


def _server(provider_cfg: ProviderConfig | None) -> dict[str, Any]:
    """``server.address`` / ``server.port`` of an HTTP provider: the host only, never user info, path or query."""
    base_url = getattr(provider_cfg, "base_url", None)
    if not base_url:
        return {}
    parts = urlsplit(str(base_url))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return {}
    return {"server.address": parts.hostname, "server.port": port} if parts.hostname else {}


def _request(params: GenParams, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"gen_ai.request.stream": stream}
    for name in ("max_tokens", "temperature", "top_p", "seed"):
        value = getattr(params, name)
        if value is not None:
            out[f"gen_ai.request.{name}"] = value
    if params.stop:
        out["gen_ai.request.stop_sequences"] = [str(s) for s in params.stop]
    if params.json_schema is not None:
        out["gen_ai.output.type"] = "json"
    return out


def _response(completion: Completion, record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"gen_ai.response.model": completion.model or record["provider_model"],
                           "gen_ai.usage.output_tokens": completion.usage.completion_tokens}
    if record.get("prompt_tokens") is not None:  # None: the backend did not report usage
        out["gen_ai.usage.input_tokens"] = record["prompt_tokens"]
    if completion.finish_reason:
        out["gen_ai.response.finish_reasons"] = [completion.finish_reason]
    if completion.ttft_s is not None:
        out["gen_ai.response.time_to_first_chunk"] = completion.ttft_s
    response_id = completion.raw.get("id") if isinstance(completion.raw, dict) else None
    if isinstance(response_id, str):
        out["gen_ai.response.id"] = response_id
    return out


def _content(messages: Messages | None, completion: Completion | None,
             scrub: Callable[[str], str]) -> dict[str, str]:
    """The convention's opt-in content attributes, as JSON (role + text parts), keys scrubbed."""
    out = {}
    if messages is not None:
        sent = [{"role": m.get("role", "user"), "parts": [{"type": "text", "content": str(m.get("content") or "")}]}
                for m in messages]
        out["gen_ai.input.messages"] = scrub(json.dumps(sent, ensure_ascii=False))
    if completion is not None:
        reply = [{"role": "assistant", "parts": [{"type": "text", "content": completion.text}],
                  "finish_reason": completion.finish_reason or "stop"}]
        out["gen_ai.output.messages"] = scrub(json.dumps(reply, ensure_ascii=False))
    return out


def _answered(current: Any, result: Any) -> None:
    """A routed call's outcome on its span: a ``RoutedCompletion``, or a ``StructuredResult`` around one."""
    repairs = getattr(result, "repairs", None)
    if repairs is not None:
        current.set_attribute("agentlab.repairs", repairs)
        result = result.completion
    current.set_attributes({"agentlab.outcome": "ok", "agentlab.model": result.model,
                            "agentlab.fallbacks": result.fallbacks, "agentlab.attempts": len(result.attempts),
                            "agentlab.fallback_time_s": result.fallback_time_s})
    if result.candidates is not None:
        current.set_attribute("agentlab.candidates", len(result.candidates))


def _failed(current: Any, exc: BaseException, scrub: Callable[[str], str]) -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)) or type(exc).__name__ == "CancelledError":
        kind, outcome = "cancelled", "cancelled"
    elif isinstance(exc, AllModelsFailed):
        kind, outcome = "all_models_failed", "all_failed"
        current.set_attribute("agentlab.attempts", len(exc.attempts))
    elif isinstance(exc, LLMError):
        kind, outcome = exc.kind, "error"
    elif isinstance(exc, AgentlabError):
        kind, outcome = type(exc).__name__, "error"
    else:
        kind, outcome = f"{type(exc).__module__}.{type(exc).__qualname__}", "error"
    current.set_attributes({"agentlab.outcome": outcome, "error.type": kind})
    current.set_status(Status(StatusCode.ERROR, scrub(one_line(exc))[:_MAX_DESCRIPTION]))

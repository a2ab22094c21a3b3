"""OpenAI-compatible chat completions over HTTP: OpenRouter, OpenAI, vLLM, llama.cpp server, Ollama.

Chat completions go over ``http1.Http1Pool`` (asyncio and httptools' parser: it cuts the gateway's CPU a request
to a fraction of httpx's, and that is what bounds a gateway at high concurrency: docs/design/measurements.md)
wherever it applies (http or https, no proxy from the environment, httptools installed, as it is with
``agentlab[serve]``); otherwise, and for ``/models`` and ``/embeddings``, over pooled ``httpx.AsyncClient``s (a few
connections each: see ``_client_for_loop``). Both are created lazily inside the running event loop. Every failure
becomes an ``LLMError`` whose ``kind`` is all the router needs to decide on retries and fallbacks. ``timeout_s`` is a
*total* deadline for the whole call (httpx timeouts are per operation, so a server trickling bytes would never trip
them).

The request path is deliberately lean because it is benchmarked against a bare ``httpx.AsyncClient``: the body is a
plain dict, the answer is parsed with one ``json.loads``, and nothing is logged per request unless DEBUG is on.

The API key lives only in the client's headers (whose repr httpx masks) and in a masked holder used to scrub error
text; it never reaches a message, a hint, a repr or a log line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from agentlab.core.errors import LLMError
from agentlab.core.llm.providers.http1 import BodyDecodingError, Http1Pool, usable_for
from agentlab.core.llm.tools import LOCAL_PARAMS, ToolCallAssembler, calls_from_message
from agentlab.core.llm.types import Completion, Embeddings, GenParams, Messages, StreamDelta, Usage

__all__ = ["OpenAIProvider", "parse_retry_after", "unset_key_hint"]

log = logging.getLogger(__name__)

_MAX_SERVER_MESSAGE = 300
# Connections per httpx client: see OpenAIProvider._client_for_loop.
_SHARD = 4
# How long we keep reading after [DONE] so the connection goes back to the pool instead of being closed.
_DRAIN_S = 1.0

_timeout_at = asyncio.timeout_at


def unset_key_hint(api_key_env: str) -> str:
    """What to do about a provider whose API key variable is not set: its connection errors' hint (llm-bench shows it),
    and `agentlab serve`'s note at start and its 502s."""
    return f"{api_key_env}, its API key, is not set: export it or put it in .env"


def usage_of(usage: dict[str, Any]) -> Usage:
    """An OpenAI-shaped ``usage`` object as ``Usage``, the prompt tokens the server read from its cache included
    (``prompt_tokens_details.cached_tokens``: OpenAI's prompt caching, another agentlab gateway's local models)."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                 cached_tokens=(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0)


def _unreported_usage(text: str) -> Usage:
    """``Usage`` for a whole answer that came without ``usage``: the prompt unknown (0), the completion estimated at
    about four characters a token, ``reported=False`` so run records and llm-bench show it as an estimate."""
    return Usage(0, -(-len(text) // 4), reported=False)


class _Secret:
    """Holds the API key for scrubbing only; its repr never shows the value."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'***'"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(headers: httpx.Headers | dict[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from the first rate-limit header that parses; None if none does.

    Understands ``retry-after-ms``, ``Retry-After`` (delta-seconds or HTTP-date), ``x-ratelimit-reset`` (epoch
    seconds or milliseconds as OpenRouter sends it, or small delta-seconds) and OpenAI's
    ``x-ratelimit-reset-requests`` / ``-tokens`` durations such as ``1m30s`` or ``250ms``.
    """
    if not isinstance(headers, httpx.Headers):
        headers = httpx.Headers(headers)
    now = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
    value = headers.get("x-ratelimit-reset")
    if value:
        try:
            number = float(value)
        except ValueError:
            number = None
        if number is not None:
            if number > 1e12:  # epoch milliseconds
                return max(0.0, number / 1000.0 - now)
            if number > 1e9:  # epoch seconds
                return max(0.0, number - now)
            return max(0.0, number)
    waits = []
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        value = headers.get(name)
        if value:
            parts = _DURATION.findall(value)
            if parts and "".join(n + u for n, u in parts) == value.strip():
                waits.append(sum(float(n) * _DURATION_UNITS[u] for n, u in parts))
    return max(waits) if waits else None


def _server_message(content: bytes) -> str:
    """The server's own explanation: ``error.message`` when the body is OpenAI-style JSON, else the body text."""
    text = ""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("code") or err)
        elif err:
            text = str(err)
        elif data.get("message") or data.get("detail"):
            text = str(data.get("message") or data.get("detail"))
    if not text:
        text = content.decode("utf-8", "replace")
    text = " ".join(text.split())
    if len(text) > _MAX_SERVER_MESSAGE:
        text = text[: _MAX_SERVER_MESSAGE - 3] + "..."
    return text


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 408:  # the server gave up waiting: a timeout, worth a retry unlike other 4xx
        return "timeout"
    return "bad_request"


def _text_of(content: Any) -> str:
    # Content is a string for every server we know; a list of parts is tolerated because the format allows it.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _vector(value: Any) -> list[float]:
    """An embedding as floats: a list, or base64 of little-endian float32s (what some servers send anyway)."""
    if isinstance(value, str):
        import base64
        import struct

        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if not isinstance(value, list):
        raise TypeError("an embedding must be a list of numbers")
    return [float(x) for x in value]


@functools.lru_cache(maxsize=1)
def _user_agent() -> str:
    from agentlab import __version__

    return f"agentlab/{__version__}"


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one is slow (docs/design/measurements.md), and every event loop needs
    its own client."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class OpenAIProvider:
    """A ``Provider`` for any OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` is the API root including ``/v1``. ``api_key`` (optional for local servers) is sent as a Bearer
    token; ``api_key_env`` is only the *name* of the variable it came from, used in hints. ``headers`` are sent with
    every request (e.g. OpenRouter's ``HTTP-Referer`` / ``X-Title``).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        max_connections: int = 128,
        supports_stream: bool = True,
        *,
        api_key_env: str | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.supports_stream = supports_stream
        self.max_connections = max_connections
        self.api_key_env = api_key_env
        self._chat_url = self.base_url + "/chat/completions"
        chat = urlsplit(self._chat_url)
        self._chat_path = chat.path + ("?" + chat.query if chat.query else "")
        # The lean client for chat completions where it applies (see the module's docstring); httpx otherwise.
        self._lean = usable_for(self.base_url)
        self._pool: Http1Pool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        # httpx.Headers masks Authorization in its repr; the key is kept nowhere else in clear except _Secret.
        self._headers = httpx.Headers(headers or {})
        self._secret = _Secret(api_key) if api_key else None
        if api_key:
            self._headers["Authorization"] = "Bearer " + api_key
        self._clients: list[httpx.AsyncClient] = []
        self._busy: list[int] = []  # requests in flight on each client
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        key = "set" if self._secret else "none"
        return f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r}, api_key={key})"

    # -- client ----------------------------------------------------------------------------------------------------

    def _client_for_loop(self) -> tuple[httpx.AsyncClient, int]:
        """A pooled client and its index (hand it back with ``_done(index)`` once its connection is free), created
        on first use in the running loop (pooled sockets belong to one loop).

        The pool is split over several clients of at most ``_SHARD`` connections, and each request goes to the one
        with the fewest requests in flight: httpcore's pool looks at every one of its connections on each request
        and response (quadratically for idle ones), which past a few dozen connections costs more CPU than the
        request itself (a gateway at high concurrency spent far less CPU a request with several small pools than
        with one large one: docs/design/measurements.md).
        """
        loop = asyncio.get_running_loop()
        if not self._clients or self._loop is not loop:
            # Clients from an earlier, finished loop cannot be closed from this one; dropping them is all we can do.
            shards = -(-self.max_connections // _SHARD)
            size = -(-self.max_connections // shards)
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            self._clients = [httpx.AsyncClient(headers=self._headers, limits=limits, timeout=60.0,
                                               verify=_ssl_context()) for _ in range(shards)]
            self._busy = [0] * shards
            self._loop = loop
        busy = self._busy
        index = busy.index(min(busy)) if len(busy) > 1 else 0
        busy[index] += 1
        return self._clients[index], index

    def _done(self, index: int) -> None:
        if 0 <= index < len(self._busy):  # aclose() may have dropped the clients meanwhile
            self._busy[index] -= 1

    def _pool_for_loop(self) -> Http1Pool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            self._pool = Http1Pool(self.base_url, dict(self._headers.items()), self.max_connections,
                                   _ssl_context() if self.base_url.startswith("https:") else None,
                                   user_agent=_user_agent())
            self._pool_loop = loop
        return self._pool

    async def _open(self, body: dict[str, Any], timeout_s: float) -> tuple[Any, int]:
        """POST ``body`` to chat completions; returns the response once its headers are in (the body unread) and
        the httpx shard to hand back (-1 for the lean pool). Close it with ``_close``."""
        if self._lean:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            return await self._pool_for_loop().post(self._chat_path, payload), -1
        client, shard = self._client_for_loop()
        try:
            request = client.build_request("POST", self._chat_url, json=body, timeout=timeout_s)  # may fail to encode
            return await client.send(request, stream=True), shard
        except BaseException:
            self._done(shard)
            raise

    async def _close(self, response: Any, shard: int) -> None:
        try:
            await response.aclose()
        finally:
            self._done(shard)

    async def aclose(self) -> None:
        """Close the connection pools; the next call opens new ones."""
        clients, loop, self._clients, self._busy, self._loop = self._clients, self._loop, [], [], None
        pool, pool_loop, self._pool, self._pool_loop = self._pool, self._pool_loop, None, None
        # A pool made in another (usually finished) loop cannot be closed from this one: its sockets die with it.
        running = asyncio.get_running_loop()
        if loop is running:
            for client in clients:
                await client.aclose()
        if pool is not None and pool_loop is running:
            await pool.aclose()

    # -- request ---------------------------------------------------------------------------------------------------

    def _body(self, model: str, messages: Messages, params: GenParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = params.stop
        if params.seed is not None:
            body["seed"] = params.seed
        schema = params.json_schema
        if schema:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.get("name") or "output", "schema": schema.get("schema", {}),
                                "strict": schema.get("strict", False)},
            }
        if params.tools:  # passed through as they are: the router validates the calls that come back
            body["tools"] = params.tools
            if params.tool_choice is not None:
                body["tool_choice"] = params.tool_choice
            if params.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = params.parallel_tool_calls
        if params.extra:  # agentlab's own knobs of local models (the tool gate, grammar, format) never go upstream
            body.update({k: v for k, v in params.extra.items() if k not in LOCAL_PARAMS})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        elif "stream" in body:  # extra must not turn a plain call into SSE we would then fail to parse
            body.pop("stream")
            body.pop("stream_options", None)
        return body

    # -- errors ----------------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        # Defence in depth: servers sometimes echo headers or URLs back in their error text.
        if self._secret is not None and self._secret.value in text:
            text = text.replace(self._secret.value, "***")
        return text

    def _error(self, kind: str, model: str | None, detail: str, *, status: int | None = None,
               retry_after: float | None = None, hint: str | None = None, timeout_s: float | None = None) -> LLMError:
        what = f"model '{model}' via {self.name}" if model else f"provider {self.name}"
        message = self._scrub(f"{what}: {detail}")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("llm error kind=%s status=%s %s", kind, status, message)
        return LLMError(message, kind, model=model, status=status, retry_after=retry_after,
                        hint=self._scrub(hint or self._hint(kind, model, timeout_s)))

    def _hint(self, kind: str, model: str | None, timeout_s: float | None) -> str:
        if kind == "timeout":
            within = f" within {timeout_s:g}s" if timeout_s is not None else ""
            return f"no answer{within}; raise the route's timeout_s or pick a faster model"
        if kind == "connection":
            unset = (f"; and {unset_key_hint(self.api_key_env)}"
                     if self._secret is None and self.api_key_env else "")  # offline, no 401 would ever say so
            return (f"cannot reach {self.base_url}; check providers.{self.name}.base_url and that the server is "
                    f"up{unset}")
        if kind == "rate_limited":
            return "the provider is throttling; lower the concurrency or wait, or add a fallback model"
        if kind == "server_error":
            return "the provider failed on its side; retry later or add a fallback model to the route"
        if kind == "auth":
            if self._secret is None:
                if self.api_key_env:
                    return (f"no API key was configured: the environment variable {self.api_key_env} is not set; "
                            "export it or put it in .env")
                return (f"no API key was configured for provider '{self.name}'; set api_key_env in its config and "
                        "export that variable (or put it in .env)")
            source = f"the environment variable {self.api_key_env}" if self.api_key_env else "api_key_env"
            return f"the server rejected the API key; check the key in {source} and that it may use '{model}'"
        if kind == "not_found":
            if model is None:
                return f"check providers.{self.name}.base_url ({self.base_url}); it usually ends in /v1"
            return (f"check the model id '{model}' (GET {self.base_url}/models lists them) and that base_url "
                    "ends in /v1")
        if kind == "bad_request":
            return "the server rejected the request; check the model's params (max_tokens, stop, response_format)"
        if kind == "malformed":
            return "the answer is not an OpenAI chat completion; check that base_url points at an OpenAI-compatible API"
        if kind == "empty":
            return "the model returned no text; raise max_tokens or check the prompt"
        if kind == "stream_cut":
            return "the connection dropped mid-stream; retry, or set stream: false for this model"
        return "see the message above"

    def _status_error(self, model: str | None, response: Any) -> LLMError:
        status = response.status_code
        kind = _kind_for_status(status)
        if kind == "bad_request" and b"context_length_exceeded" in response.content:  # OpenAI's and vLLM's code
            kind = "context_length"  # the prompt's fault, not the model's: no circuit breaker counts it
        retry_after = parse_retry_after(response.headers) if status == 429 or status >= 500 else None
        detail = f"HTTP {status}"
        server = _server_message(response.content)
        if server:
            detail += f": {server}"
        return self._error(kind, model, detail, status=status, retry_after=retry_after)

    def _payload_error(self, model: str, err: Any, status: int) -> LLMError:
        """An ``{"error": ...}`` object inside a 200 answer or an SSE event (OpenRouter sends these mid-stream)."""
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message") if isinstance(err, dict) else err
        text = " ".join(str(message or code or err).split())[:_MAX_SERVER_MESSAGE]
        if isinstance(code, int) and 400 <= code < 600:
            return self._error(_kind_for_status(code), model, f"error {code}: {text}", status=code)
        return self._error("server_error", model, f"error in the answer: {text}", status=status)

    def _transport_error(self, model: str | None, exc: Exception, timeout_s: float, cut: bool = False) -> LLMError:
        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
            detail = f"no complete answer within {timeout_s:g}s"
            if isinstance(exc, httpx.TimeoutException):
                detail += f" ({type(exc).__name__})"
            return self._error("timeout", model, detail, timeout_s=timeout_s)
        inner = getattr(exc, "exceptions", None)  # anyio wraps some socket errors in a one-member ExceptionGroup
        cause = inner[0] if inner and len(inner) == 1 else exc
        reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        if cut:
            return self._error("stream_cut", model, f"stream ended before [DONE]: {reason}")
        if isinstance(exc, (httpx.DecodingError, BodyDecodingError)):
            return self._error("malformed", model, f"undecodable body: {reason}")
        if isinstance(cause, ssl.SSLError):  # a certificate that does not verify is a ValueError too
            return self._error("connection", model, reason)
        if isinstance(cause, (TypeError, ValueError)):  # the request itself could not be encoded (e.g. NaN, objects)
            return self._error("bad_request", model, f"cannot send the request: {reason}",
                               hint="params and messages must be JSON-serialisable (no NaN, no objects)")
        return self._error("connection", model, reason)

    # -- generate --------------------------------------------------------------------------------------------------

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        """One non-streamed completion; raises ``LLMError`` on any failure."""
        body = self._body(model, messages, params, stream=False)
        start = time.perf_counter()
        try:
            async with _timeout_at(asyncio.get_running_loop().time() + timeout_s):
                response, shard = await self._open(body, timeout_s)
                try:
                    await response.aread()
                finally:
                    await self._close(response, shard)
        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
            raise self._transport_error(model, exc, timeout_s) from exc
        latency = time.perf_counter() - start
        if response.status_code != 200 and not 200 <= response.status_code < 300:
            raise self._status_error(model, response)
        try:
            data = json.loads(response.content)
        except ValueError as exc:
            raise self._error("malformed", model, f"answer is not JSON: {_server_message(response.content)[:80]!r}",
                              status=response.status_code) from exc
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            if isinstance(data, dict) and data.get("error"):
                raise self._payload_error(model, data["error"], response.status_code) from None
            raise self._error("malformed", model, "answer has no choices[0].message",
                              status=response.status_code) from None
        if content.__class__ is not str:
            content = _text_of(content)
        if not content or content.isspace():
            if not message.get("tool_calls"):
                raise self._error("empty", model, "the answer has no text", status=response.status_code)
        usage = data.get("usage")
        used = usage_of(usage) if usage else _unreported_usage(content or "")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s: %.3fs, %d+%d tokens", self.name, model, latency, used.prompt_tokens,
                      used.completion_tokens)
        calls = calls_from_message(message) if message.get("tool_calls") else []
        return Completion(text=content or "", model=model, usage=used, latency_s=latency,
                          finish_reason=choice.get("finish_reason"), raw=data, tool_calls=calls)

    # -- stream ----------------------------------------------------------------------------------------------------

    async def stream(
        self, model: str, messages: Messages, params: GenParams, timeout_s: float
    ) -> AsyncIterator[StreamDelta | Completion]:
        """``StreamDelta`` per non-empty content delta, then one ``Completion``; ``timeout_s`` bounds the whole stream.

        A stream that ends without ``data: [DONE]`` raises ``LLMError(kind="stream_cut")``.
        """
        body = self._body(model, messages, params, stream=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        start = time.perf_counter()
        try:
            async with _timeout_at(deadline):
                response, shard = await self._open(body, timeout_s)
        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
            raise self._transport_error(model, exc, timeout_s) from exc
        try:
            if not 200 <= response.status_code < 300:
                try:
                    async with _timeout_at(deadline):
                        await response.aread()
                except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
                    raise self._transport_error(model, exc, timeout_s) from exc
                raise self._status_error(model, response)
            if "text/event-stream" not in response.headers.get("content-type", "text/event-stream"):
                # Some servers and proxies ignore "stream": true and answer with one plain completion.
                async for item in self._plain_as_stream(model, response, deadline, start, timeout_s):
                    yield item
                return

            parts: list[str] = []
            ttft: float | None = None
            usage: dict[str, Any] | None = None
            finish: str | None = None
            tool_calls = ToolCallAssembler()  # a call's pieces arrive by index: id and name first, then arguments
            done = False
            buffer = b""
            data: bytes | None = None  # the pending SSE event's data (several data: lines join with \n)
            chunks = response.aiter_bytes()
            # One timer for the whole read, not one per chunk: entering asyncio.timeout_at costs ~40 us, twenty
            # times a streamed answer. Every await of the consuming task between here and the end is inside
            # this generator (the router drains it with nothing awaited in between), so the timer can only
            # cancel a read of ours.
            try:
                async with _timeout_at(deadline):
                    while not done:
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            break
                        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
                            raise self._transport_error(model, exc, timeout_s, cut=True) from exc
                        lines = (buffer + chunk).split(b"\n")
                        buffer = lines.pop()
                        # The pieces of one read go on as one delta: the text and its timing are the same, and
                        # a dozen generator hops a streamed answer become one or two (the gateway's CPU).
                        pending: list[str] = []
                        try:
                            done, data, usage, finish = self._events(model, response.status_code, lines, data,
                                                                     parts, pending, tool_calls, usage, finish)
                        except LLMError:
                            if pending:
                                yield StreamDelta("".join(pending))
                            raise
                        if ttft is None and (pending or tool_calls):
                            ttft = time.perf_counter() - start
                        if pending:
                            yield StreamDelta("".join(pending))
            except TimeoutError as exc:
                raise self._transport_error(model, exc, timeout_s, cut=True) from exc
            if not done:
                if buffer.strip() == b"data: [DONE]" or data == b"[DONE]":
                    pass  # [DONE] without its trailing blank line: the server finished, we just lack the newline
                else:
                    raise self._error("stream_cut", model, f"stream ended before [DONE] after {len(parts)} chunks",
                                      status=response.status_code)
            elif not getattr(response, "complete", False):  # the lean client often has the terminator already
                await self._drain(chunks, deadline)
            latency = time.perf_counter() - start
            text = "".join(parts)
            if (not text or text.isspace()) and not tool_calls:
                raise self._error("empty", model, "the stream has no text", status=response.status_code)
            if usage:
                used = usage_of(usage)
            else:  # the server ignored include_usage: one chunk is about one token, the prompt is unknown
                used = Usage(0, len(parts), reported=False)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s: stream %.3fs ttft=%s, %d chunks", self.name, model, latency, ttft, len(parts))
            yield Completion(text=text, model=model, usage=used, latency_s=latency, ttft_s=ttft,
                             finish_reason=finish, tool_calls=tool_calls.calls())
        finally:
            await self._close(response, shard)

    def _events(self, model: str, status: int, lines: list[bytes], data: bytes | None, parts: list[str],
                pending: list[str], tool_calls: ToolCallAssembler, usage: dict[str, Any] | None,
                finish: str | None) -> tuple[bool, bytes | None, dict[str, Any] | None, str | None]:
        """The SSE events in ``lines`` (whole lines of one read): content pieces appended to ``parts`` and
        ``pending``, tool-call pieces to ``tool_calls``; returns (``[DONE]`` seen, the event still being read,
        usage, finish reason)."""
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if line:
                if line.startswith(b"data:"):
                    payload = line[6:] if line[5:6] == b" " else line[5:]
                    data = payload if data is None else data + b"\n" + payload
                # Anything else (": keepalive" comments, event:, id:, retry:) carries nothing for us.
                continue
            if data is None:
                continue
            event, data = data, None
            if event == b"[DONE]":
                return True, data, usage, finish
            try:
                obj = json.loads(event.decode())  # str: json.loads would detect the encoding of bytes each time
            except ValueError as exc:
                raise self._error("malformed", model, f"stream event is not JSON: {event[:80]!r}",
                                  status=status) from exc
            if not isinstance(obj, dict):
                raise self._error("malformed", model, "stream event is not a JSON object", status=status)
            err = obj.get("error")
            if err:
                raise self._payload_error(model, err, status)
            if obj.get("usage"):
                usage = obj["usage"]
            choices = obj.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                piece = delta.get("content")
                if piece:
                    if piece.__class__ is not str:
                        piece = _text_of(piece)
                    parts.append(piece)
                    pending.append(piece)
                if delta.get("tool_calls"):
                    tool_calls.add(delta["tool_calls"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        return False, data, usage, finish

    async def _drain(self, chunks: AsyncIterator[bytes], deadline: float) -> None:
        """Read what follows [DONE] (the chunked terminator) so the connection can be reused; failures don't matter."""
        loop = asyncio.get_running_loop()
        try:
            async with _timeout_at(min(deadline, loop.time() + _DRAIN_S)):
                async for _ in chunks:
                    pass
        except Exception:  # the answer is complete; a failed drain only costs the pooled connection
            pass

    async def _plain_as_stream(self, model: str, response: Any, deadline: float, start: float,
                               timeout_s: float) -> AsyncIterator[StreamDelta | Completion]:
        try:
            async with _timeout_at(deadline):
                await response.aread()
        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
            raise self._transport_error(model, exc, timeout_s) from exc
        try:
            data = json.loads(response.content)
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise self._error("malformed", model, "expected an SSE stream or a chat completion",
                              status=response.status_code) from exc
        text = _text_of(message.get("content"))
        latency = time.perf_counter() - start
        if (not text or text.isspace()) and not message.get("tool_calls"):
            raise self._error("empty", model, "the answer has no text", status=response.status_code)
        usage = data.get("usage")
        if text:
            yield StreamDelta(text)
        # Not streamed: the whole answer came at once, so there is no first token's time (it read as the latency,
        # and llm-bench divided the tokens after the first by the ~0 s after it)
        yield Completion(text=text, model=model, usage=usage_of(usage) if usage else _unreported_usage(text),
                         latency_s=latency, ttft_s=None, finish_reason=data["choices"][0].get("finish_reason"),
                         tool_calls=calls_from_message(message))

    # -- embeddings ------------------------------------------------------------------------------------------------

    async def embed(self, model: str, texts: list[str], params: GenParams, timeout_s: float,
                    dimensions: int | None = None) -> Embeddings:
        """``POST {base_url}/embeddings``: the upstream's vectors (asked for as floats), in input order. An upstream
        without embeddings for ``model`` (404) is a ``bad_request``: the model does not embed here."""
        client, shard = self._client_for_loop()
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        try:
            async with _timeout_at(asyncio.get_running_loop().time() + timeout_s):
                response = await client.post(self.base_url + "/embeddings", json=body, timeout=timeout_s)
        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
            raise self._transport_error(model, exc, timeout_s) from exc
        finally:
            self._done(shard)
        if response.status_code == 404:
            raise self._error("bad_request", model, "model does not support embeddings: the upstream answered "
                              f"HTTP 404 ({_server_message(response.content)})", status=404,
                              hint=f"check that {self.base_url}/embeddings serves '{model}'")
        if not 200 <= response.status_code < 300:
            raise self._status_error(model, response)
        try:
            data = json.loads(response.content)
            items = sorted(data["data"], key=lambda item: item.get("index", 0))
            vectors = [_vector(item["embedding"]) for item in items]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._error("malformed", model, "the answer is not an OpenAI embeddings list",
                              status=response.status_code) from exc
        if len(vectors) != len(texts):
            raise self._error("malformed", model, f"{len(vectors)} embeddings for {len(texts)} inputs",
                              status=response.status_code)
        usage = data.get("usage") or {}
        return Embeddings(vectors, int(usage.get("prompt_tokens") or 0), model)

    # -- models ----------------------------------------------------------------------------------------------------

    async def list_models(self, timeout_s: float = 30.0) -> list[str]:
        """Model ids the server offers (``GET {base_url}/models``), used by llm-bench to check availability."""
        client, shard = self._client_for_loop()
        try:
            async with _timeout_at(asyncio.get_running_loop().time() + timeout_s):
                response = await client.get(self.base_url + "/models", timeout=timeout_s)
        except Exception as exc:  # transport failures come as httpx, OSError or anyio groups
            raise self._transport_error(None, exc, timeout_s) from exc
        finally:
            self._done(shard)
        if not 200 <= response.status_code < 300:
            raise self._status_error(None, response)
        try:
            data = json.loads(response.content)
        except ValueError as exc:
            raise self._error("malformed", None, "GET /models answer is not JSON") from exc
        items = data.get("data") if isinstance(data, dict) else data
        if items is None and isinstance(data, dict):
            items = data.get("models")  # Ollama's native shape, also sent by llama.cpp server
        if not isinstance(items, list):
            raise self._error("malformed", None, "GET /models answer has no model list")
        ids = []
        for item in items:
            if isinstance(item, str):
                ids.append(item)
            elif isinstance(item, dict):
                ident = item.get("id") or item.get("name") or item.get("model")
                if ident:
                    ids.append(str(ident))
        return ids

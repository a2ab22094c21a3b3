"""Anthropic's Messages API (``POST {base_url}/v1/messages``) over httpx, mapped to agentlab's types.

Requests: system messages become the top-level ``system``; an assistant message's ``tool_calls`` become
``tool_use`` blocks and ``tool`` messages ``tool_result`` blocks of a user turn (consecutive turns of one role are
merged, as the API requires alternating roles); ``tools`` become ``{name, description, input_schema}``;
``tool_choice`` auto / required / none / a function becomes ``auto`` / ``any`` / ``none`` / ``tool``, and
``parallel_tool_calls: false`` sets ``disable_parallel_tool_use``. ``max_tokens`` is required by the API: the
request's, else the provider's ``default_max_tokens``. ``stop`` becomes ``stop_sequences``; ``top_k`` passes; other
OpenAI-only params (seed, penalties, json_schema) are not sent (the router validates structured output itself).

Answers: text blocks joined, ``tool_use`` blocks as ``ToolCall`` (arguments as JSON text), ``stop_reason``
end_turn / stop_sequence / max_tokens / tool_use as finish ``stop`` / ``stop`` / ``length`` / ``tool_calls``, usage
from ``input_tokens`` / ``output_tokens``. Streams read Anthropic's SSE events (``text_delta`` pieces are handed on
as they arrive, ``input_json_delta`` pieces assembled into the calls); a stream that ends before ``message_stop``
is ``stream_cut``, an ``error`` event a failure of its type (``overloaded_error``: server_error, retryable).

Errors: HTTP statuses map like the OpenAI provider's (429 rate_limited with Retry-After, 529 and 5xx server_error,
401/403 auth, 404 not_found, other 4xx bad_request). The key goes in ``x-api-key`` only and is scrubbed from errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentlab.core.errors import LLMError
from agentlab.core.llm.providers.openai import (
    _kind_for_status,
    _Secret,
    _server_message,
    _ssl_context,
    parse_retry_after,
)
from agentlab.core.llm.types import Completion, GenParams, Messages, StreamDelta, ToolCall, Usage

__all__ = ["AnthropicProvider", "to_anthropic"]

log = logging.getLogger(__name__)

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "pause_turn": "stop", "refusal": "content_filter"}
_ERROR_KINDS = {"overloaded_error": "server_error", "api_error": "server_error", "rate_limit_error": "rate_limited",
                "authentication_error": "auth", "permission_error": "auth", "not_found_error": "not_found",
                "invalid_request_error": "bad_request", "request_too_large": "bad_request"}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) as Anthropic content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def to_anthropic(messages: Messages) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages) in the Messages API's shape."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = message.get("content")
            system.append(text if isinstance(text, str) else " ".join(
                b["text"] for b in _content_blocks(text) if b["type"] == "text"))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": str(message.get("tool_call_id", "")),
                          "content": _content_blocks(message.get("content")) or [{"type": "text", "text": ""}]}])
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    args = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                               "input": args if isinstance(args, dict) else {}})
            add("assistant", blocks)
        else:
            add("user", _content_blocks(message.get("content")))
    return ("\n\n".join(s for s in system if s) or None), out


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    else:
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    if out is not None and parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


class AnthropicProvider:
    """A ``Provider`` for Anthropic's Messages API (or a server speaking it)."""

    def __init__(self, name: str, base_url: str = "https://api.anthropic.com", api_key: str | None = None, *,
                 version: str = "2023-06-01", default_max_tokens: int = 1024, max_connections: int = 64,
                 headers: dict[str, str] | None = None, api_key_env: str | None = None):
        self.name = name
        self.supports_stream = True
        self.base_url = base_url.rstrip("/")
        self._url = self.base_url + "/v1/messages"
        self.default_max_tokens = default_max_tokens
        self.max_connections = max_connections
        self.api_key_env = api_key_env
        self._headers = httpx.Headers({"anthropic-version": version, "content-type": "application/json",
                                       **(headers or {})})
        self._secret = _Secret(api_key) if api_key else None
        if api_key:
            self._headers["x-api-key"] = api_key
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self.base_url!r}, api_key=" \
               f"{'set' if self._secret else 'none'})"

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            limits = httpx.Limits(max_connections=self.max_connections,
                                  max_keepalive_connections=self.max_connections)
            self._client = httpx.AsyncClient(headers=self._headers, limits=limits, timeout=60.0,
                                             verify=_ssl_context())
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop, self._client, self._loop = self._client, self._loop, None, None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()

    # -- request ---------------------------------------------------------------------------------------------------

    def body(self, model: str, messages: Messages, params: GenParams, stream: bool) -> dict[str, Any]:
        system, turns = to_anthropic(messages)
        body: dict[str, Any] = {"model": model, "messages": turns,
                                "max_tokens": params.max_tokens or self.default_max_tokens}
        if system:
            body["system"] = system
        if params.temperature is not None:
            body["temperature"] = min(1.0, params.temperature)  # Anthropic's range is 0..1
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        if "top_k" in params.extra:
            body["top_k"] = params.extra["top_k"]
        if params.tools:
            body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                              "input_schema": t["function"].get("parameters") or {"type": "object"}}
                             for t in params.tools if t.get("type", "function") == "function"]
            choice = _tool_choice(params.tool_choice, params.parallel_tool_calls)
            if choice is not None:
                body["tool_choice"] = choice
        if stream:
            body["stream"] = True
        return body

    # -- errors ----------------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self._secret is not None and self._secret.value in text:
            text = text.replace(self._secret.value, "***")
        return text

    def _error(self, kind: str, model: str, detail: str, *, status: int | None = None,
               retry_after: float | None = None) -> LLMError:
        hint = {"auth": f"check the key in {self.api_key_env or 'api_key_env'} (sent as x-api-key)",
                "not_found": f"check the model id '{model}' and base_url ({self.base_url}, without /v1)",
                "rate_limited": "Anthropic is throttling; lower the concurrency or add a fallback model",
                "server_error": "Anthropic failed or is overloaded; retry later or add a fallback model",
                "timeout": "raise the route's timeout_s or pick a faster model",
                "connection": f"cannot reach {self.base_url}; check providers.{self.name}.base_url",
                "stream_cut": "the connection dropped mid-stream; retry, or set stream: false for this model",
                }.get(kind, "see the message above")
        return LLMError(self._scrub(f"model '{model}' via {self.name}: {detail}"), kind, model=model, status=status,
                        retry_after=retry_after, hint=self._scrub(hint))

    def _status_error(self, model: str, status: int, headers: httpx.Headers, content: bytes) -> LLMError:
        kind = _kind_for_status(status)
        retry_after = parse_retry_after(headers) if status == 429 or status >= 500 else None
        server = _server_message(content)
        return self._error(kind, model, f"HTTP {status}" + (f": {server}" if server else ""), status=status,
                           retry_after=retry_after)

    def _transport_error(self, model: str, exc: Exception, timeout_s: float) -> LLMError:
        if isinstance(exc, (httpx.TimeoutException, asyncio.TimeoutError)):
            return self._error("timeout", model, f"no complete answer within {timeout_s:g}s")
        return self._error("connection", model, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    # -- generate --------------------------------------------------------------------------------------------------

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        body = self.body(model, messages, params, stream=False)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._http().post(self._url, json=body, timeout=timeout_s)
        except Exception as exc:
            raise self._transport_error(model, exc, timeout_s) from exc
        latency = time.perf_counter() - start
        if not 200 <= response.status_code < 300:
            raise self._status_error(model, response.status_code, response.headers, response.content)
        try:
            data = json.loads(response.content)
            blocks = data["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
            calls = [ToolCall(str(b["id"]), str(b["name"]), json.dumps(b.get("input") or {}))
                     for b in blocks if b.get("type") == "tool_use"]
            usage = data.get("usage") or {}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise self._error("malformed", model, "the answer is not an Anthropic message",
                              status=response.status_code) from None
        if not text.strip() and not calls:
            raise self._error("empty", model, "the answer has no text", status=response.status_code)
        return Completion(text=text, model=model, usage=Usage(usage.get("input_tokens") or 0,
                                                              usage.get("output_tokens") or 0),
                          latency_s=latency, finish_reason=_FINISH.get(data.get("stop_reason"), "stop"), raw=data,
                          tool_calls=calls)

    # -- stream ----------------------------------------------------------------------------------------------------

    async def stream(self, model: str, messages: Messages, params: GenParams, timeout_s: float
                     ) -> AsyncIterator[StreamDelta | Completion]:
        body = self.body(model, messages, params, stream=True)
        start = time.perf_counter()
        text: list[str] = []
        calls: dict[int, list[str]] = {}  # block index -> [id, name, partial json...]
        prompt = completion = 0
        stop_reason: str | None = None
        ttft: float | None = None
        finished = False
        try:
            async with asyncio.timeout(timeout_s):
                async with self._http().stream("POST", self._url, json=body, timeout=timeout_s) as response:
                    if not 200 <= response.status_code < 300:
                        content = await response.aread()
                        raise self._status_error(model, response.status_code, response.headers, content)
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        event = json.loads(line[5:])
                        kind = event.get("type")
                        if kind == "content_block_delta":
                            delta = event.get("delta") or {}
                            if delta.get("type") == "text_delta" and delta.get("text"):
                                if ttft is None:
                                    ttft = time.perf_counter() - start
                                text.append(delta["text"])
                                yield StreamDelta(delta["text"])
                            elif delta.get("type") == "input_json_delta":
                                calls.setdefault(event.get("index", 0), ["", ""]).append(
                                    delta.get("partial_json", ""))
                        elif kind == "content_block_start":
                            block = event.get("content_block") or {}
                            if block.get("type") == "tool_use":
                                calls[event.get("index", 0)] = [str(block.get("id")), str(block.get("name"))]
                        elif kind == "message_start":
                            usage = (event.get("message") or {}).get("usage") or {}
                            prompt = usage.get("input_tokens") or 0
                        elif kind == "message_delta":
                            stop_reason = (event.get("delta") or {}).get("stop_reason") or stop_reason
                            completion = (event.get("usage") or {}).get("output_tokens") or completion
                        elif kind == "message_stop":
                            finished = True
                            break
                        elif kind == "error":
                            err = event.get("error") or {}
                            raise self._error(_ERROR_KINDS.get(str(err.get("type")), "server_error"), model,
                                              f"error in the stream: {str(err.get('message'))[:300]}")
        except LLMError:
            raise
        except ValueError as exc:
            raise self._error("malformed", model, f"an event is not JSON ({exc})") from None
        except Exception as exc:
            if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
                raise self._transport_error(model, exc, timeout_s) from exc
            raise self._error("stream_cut", model, f"the stream broke: {type(exc).__name__}") from exc
        if not finished:
            raise self._error("stream_cut", model, "the stream ended before message_stop")
        tool_calls = [ToolCall(parts[0], parts[1], "".join(parts[2:]) or "{}") for _, parts in sorted(calls.items())]
        yield Completion(text="".join(text), model=model, usage=Usage(prompt, completion),
                         latency_s=time.perf_counter() - start, ttft_s=ttft,
                         finish_reason=_FINISH.get(stop_reason or "", "stop"), tool_calls=tool_calls)

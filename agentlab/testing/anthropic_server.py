"""A loopback server speaking Anthropic's Messages API (``POST /v1/messages``), scripted like ``ScriptedServer``.

The same ``Reply`` scripts drive it: ``text``, ``tool_calls`` (sent as ``tool_use`` blocks), ``status`` (sent in
Anthropic's error shape, ``{"type": "error", "error": {"type": ..., "message": ...}}``; 529 is ``overloaded_error``),
``delay_s``, ``chunk_delay_s``, ``cut_after_chunks`` (the stream stops before ``message_stop``) and
``finish_reason`` (``length`` becomes ``stop_reason: max_tokens``). Streams follow Anthropic's event sequence:
``message_start``, per block ``content_block_start`` / ``content_block_delta`` (``text_delta`` or
``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop_reason, output tokens), ``message_stop``.
Token counts are words, as in ``ScriptedServer``. Every request body is recorded in ``requests`` (bounded by
``keep_requests``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from agentlab.testing.server import Reply, ScriptedServer, _wait_unless_gone, count_words, split_words

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["AnthropicServer"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text") or b.get("content") or "") for b in content if isinstance(b, dict))
    return ""


def _input_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    words = count_words(_text_of(system)) if system else 0
    return words + sum(count_words(_text_of(m.get("content"))) for m in body.get("messages") or [])


def _stop_reason(reply: Reply) -> str:
    if reply.tool_calls:
        return "tool_use"
    return "max_tokens" if reply.finish_reason == "length" else "end_turn"


def _blocks(reply: Reply, text: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for i, call in enumerate(reply.tool_calls or []):
        args = call.get("arguments", {})
        blocks.append({"type": "tool_use", "id": call.get("id") or f"toolu_{i + 1}", "name": call["name"],
                       "input": json.loads(args) if isinstance(args, str) else args})
    return blocks


class AnthropicServer(ScriptedServer):
    """Anthropic's ``/v1/messages`` on loopback; script it with ``default(model, Reply)`` / ``script(...)``."""

    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def messages(request: Request) -> Response:
            received_at = time.monotonic()
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _error(400, "request body is not valid JSON")
            if not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
                return _error(400, "max_tokens: Field required")
            if request.headers.get("anthropic-version") is None:
                return _error(400, "anthropic-version: header is required")
            reply = self._take({**body, "_headers": {"x-api-key": request.headers.get("x-api-key")}}, received_at)
            if reply is None:
                return _error(404, f"model: {body.get('model')}")
            if reply.delay_s > 0 and not await _wait_unless_gone(request, reply.delay_s):
                self._abandon(body.get("model"))
                return Response(status_code=499)
            if reply.status != 200:
                return _error(reply.status, reply.text if reply.text != "ok" else None, reply.headers)
            text = "" if reply.empty else (reply.fn(body) if reply.fn is not None else reply.text)
            ident = f"msg_{next(self._ids)}"
            usage = {"input_tokens": _input_tokens(body), "output_tokens": count_words(text)}
            if body.get("stream"):
                return StreamingResponse(self._events(reply, text, ident, body, usage), media_type="text/event-stream",
                                         headers=reply.headers)
            return JSONResponse({"id": ident, "type": "message", "role": "assistant", "model": body.get("model"),
                                 "content": _blocks(reply, text), "stop_reason": _stop_reason(reply),
                                 "stop_sequence": None, "usage": usage}, headers=reply.headers)

        return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])

    async def _events(self, reply: Reply, text: str, ident: str, body: dict[str, Any],
                      usage: dict[str, int]) -> AsyncIterator[str]:
        def event(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        yield event("message_start", {"message": {"id": ident, "type": "message", "role": "assistant",
                                                  "model": body.get("model"), "content": [], "stop_reason": None,
                                                  "usage": {"input_tokens": usage["input_tokens"],
                                                            "output_tokens": 1}}})
        yield event("ping", {})
        index = 0
        if text:
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(split_words(text)):
                if reply.cut_after_chunks is not None and i >= reply.cut_after_chunks:
                    return  # the connection ends here: no message_stop
                if reply.chunk_delay_s > 0:
                    await asyncio.sleep(reply.chunk_delay_s)
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}})
            yield event("content_block_stop", {"index": 0})
            index = 1
        if reply.cut_after_chunks is not None:
            return
        for block in _blocks(reply, "")[0:]:
            arguments = json.dumps(block["input"])
            yield event("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            size = max(1, reply.args_chunk_chars)
            for i in range(0, len(arguments), size):
                yield event("content_block_delta", {"index": index, "delta": {
                    "type": "input_json_delta", "partial_json": arguments[i:i + size]}})
            yield event("content_block_stop", {"index": index})
            index += 1
        yield event("message_delta", {"delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}})
        yield event("message_stop", {})


def _error(status: int, message: str | None = None, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    etype = _ERROR_TYPES.get(status, "api_error")
    return JSONResponse({"type": "error", "error": {"type": etype, "message": message or etype.replace("_", " ")}},
                        status_code=status, headers=headers)

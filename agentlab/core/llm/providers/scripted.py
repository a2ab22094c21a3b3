"""A provider that replays fixed replies offline: the backend of tests and ``--dry-run``.

Replies are strings, ``Calls`` (tool calls, with optional text), callables ``(model, messages, params) -> str | Calls``
(or an awaitable of one, so a test can make one call slower than another), or ``LLMError`` instances, which are
raised. Queued items are used first, one per call;
once the queue is empty the provider cycles through ``replies``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agentlab.core.errors import LLMError
from agentlab.core.llm.types import Completion, GenParams, Messages, StreamDelta, ToolCall, Usage


@dataclass
class Calls:
    """A scripted reply that calls tools: ``calls`` are ``(name, arguments)`` pairs (arguments a dict, or a JSON
    text to script a malformed call), answered with ``finish_reason="tool_calls"``; ``text`` comes before them."""

    calls: list[tuple[str, dict[str, Any] | str]]
    text: str = ""
    ids: list[str] = field(default_factory=list)  # the calls' ids (call_1, call_2, ... when not given)

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(self.ids[i] if i < len(self.ids) else f"call_{i + 1}", name,
                         args if isinstance(args, str) else json.dumps(args))
                for i, (name, args) in enumerate(self.calls)]


ReplyFn = Callable[[str, Messages, GenParams], str | Calls | Awaitable[str | Calls]]
ScriptItem = str | Calls | ReplyFn | LLMError

_WORD = re.compile(r"\s*\S+\s*")


def count_words(text: str) -> int:
    """The scripted token count: whitespace-separated words (the same rule as the loopback test server)."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """Word chunks that keep their whitespace, so joining them gives ``text`` back."""
    return _WORD.findall(text) or ([text] if text else [])


@dataclass
class ScriptedCall:
    """One recorded call: what the router sent."""

    model: str
    messages: Messages
    params: GenParams


class ScriptedProvider:
    """Implements the ``Provider`` protocol from a script; every call is recorded in ``calls``."""

    supports_stream = True

    def __init__(self, name: str = "scripted", replies: Iterable[ScriptItem] | None = None, latency_s: float = 0.0):
        self.name = name
        self.replies: list[ScriptItem] = list(replies) if replies is not None else ["ok"]
        self.latency_s = latency_s
        self.calls: list[ScriptedCall] = []
        self._queue: deque[ScriptItem] = deque()
        self._cycle = itertools.cycle(self.replies) if self.replies else None
        self.closed = False

    def queue(self, *items: ScriptItem) -> ScriptedProvider:
        """Queue items for the next calls, in order (used before the cycling ``replies``)."""
        self._queue.extend(items)
        return self

    def _next(self) -> ScriptItem:
        if self._queue:
            return self._queue.popleft()
        if self._cycle is None:
            return LLMError(f"scripted provider '{self.name}' has no replies left", "empty")
        return next(self._cycle)

    async def _answer(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> str | Calls:
        """Take the next item, wait the simulated latency (bounded by the timeout like a real client), answer."""
        self.calls.append(ScriptedCall(model, [dict(m) for m in messages], params))
        item = self._next()
        if self.latency_s > 0:
            if self.latency_s > timeout_s:
                await asyncio.sleep(timeout_s)
                raise LLMError(f"{model}: no answer within {timeout_s:.3g}s", "timeout", model=model)
            await asyncio.sleep(self.latency_s)
        if isinstance(item, LLMError):
            raise item
        if callable(item):
            text = item(model, messages, params)
            if inspect.isawaitable(text):
                text = await text
            return text if isinstance(text, Calls) else str(text)
        return item

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        """Answer with the next scripted reply."""
        start = time.perf_counter()
        text, calls = _split(await self._answer(model, messages, params, timeout_s))
        return Completion(text=text, model=model, usage=_usage(messages, text, calls),
                          latency_s=time.perf_counter() - start, finish_reason="tool_calls" if calls else "stop",
                          tool_calls=calls)

    async def stream(
        self, model: str, messages: Messages, params: GenParams, timeout_s: float
    ) -> AsyncIterator[StreamDelta | Completion]:
        """Yield the next scripted reply word by word, then the final ``Completion``."""
        start = time.perf_counter()
        text, calls = _split(await self._answer(model, messages, params, timeout_s))
        ttft = None
        for chunk in split_words(text):
            if ttft is None:
                ttft = time.perf_counter() - start
            yield StreamDelta(chunk)
        yield Completion(text=text, model=model, usage=_usage(messages, text, calls),
                         latency_s=time.perf_counter() - start, ttft_s=ttft,
                         finish_reason="tool_calls" if calls else "stop", tool_calls=calls)

    async def aclose(self) -> None:
        """Nothing to release; recorded so tests can check the router closes its providers."""
        self.closed = True


def _split(reply: str | Calls) -> tuple[str, list[ToolCall]]:
    return (reply.text, reply.tool_calls()) if isinstance(reply, Calls) else (reply, [])


def _usage(messages: Messages, text: str, calls: list[ToolCall] | None = None) -> Usage:
    """Words of the messages' contents; words of the reply and of its calls' arguments."""
    prompt = sum(count_words(str(m.get("content") or "")) for m in messages)
    return Usage(prompt_tokens=prompt,
                 completion_tokens=count_words(text) + sum(count_words(c.arguments) for c in calls or []))

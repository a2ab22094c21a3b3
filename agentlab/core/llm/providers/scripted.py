"""A provider that replays fixed replies offline: the backend of tests and ``--dry-run``.

Replies are strings, callables ``(model, messages, params) -> str`` (or an awaitable of one, so a test can make one
call slower than another), or ``LLMError`` instances, which are raised. Queued items are used first, one per call;
once the queue is empty the provider cycles through ``replies``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from agentlab.core.errors import LLMError
from agentlab.core.llm.types import Completion, GenParams, Messages, StreamDelta, Usage

ReplyFn = Callable[[str, Messages, GenParams], str | Awaitable[str]]
ScriptItem = str | ReplyFn | LLMError

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

    async def _answer(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> str:
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
            return str(text)
        return item

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        """Answer with the next scripted reply."""
        start = time.perf_counter()
        text = await self._answer(model, messages, params, timeout_s)
        return Completion(text=text, model=model, usage=_usage(messages, text),
                          latency_s=time.perf_counter() - start, finish_reason="stop")

    async def stream(
        self, model: str, messages: Messages, params: GenParams, timeout_s: float
    ) -> AsyncIterator[StreamDelta | Completion]:
        """Yield the next scripted reply word by word, then the final ``Completion``."""
        start = time.perf_counter()
        text = await self._answer(model, messages, params, timeout_s)
        ttft = None
        for chunk in split_words(text):
            if ttft is None:
                ttft = time.perf_counter() - start
            yield StreamDelta(chunk)
        yield Completion(text=text, model=model, usage=_usage(messages, text), latency_s=time.perf_counter() - start,
                         ttft_s=ttft, finish_reason="stop")

    async def aclose(self) -> None:
        """Nothing to release; recorded so tests can check the router closes its providers."""
        self.closed = True


def _usage(messages: Messages, text: str) -> Usage:
    prompt = sum(count_words(str(m.get("content") or "")) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=count_words(text))

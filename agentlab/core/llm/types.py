"""Plain data types shared by every LLM provider and the router.

Messages are OpenAI-style dicts (``{"role": "user", "content": "..."}``) because every backend we route to speaks
that shape natively (HTTP APIs, llama.cpp chat templates, transformers chat templates). Tool calling uses OpenAI's
shapes too: an assistant message may carry ``tool_calls`` (and ``content: None``), a ``tool`` message answers one call
by ``tool_call_id`` (see ``core/llm/tools.py``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]
Messages = list[Message]


@dataclass
class GenParams:
    """Generation parameters. ``None`` means: leave it to the model config, then the backend default."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    # JSON schema the output must follow: {"name": str, "schema": dict}. Backends that cannot enforce it ignore it.
    json_schema: dict[str, Any] | None = None
    # Tool calling, in OpenAI's shapes: tools [{"type": "function", "function": {"name", "description",
    # "parameters"}}], tool_choice "auto" | "none" | "required" | {"type": "function", "function": {"name": ...}},
    # parallel_tool_calls (None: the backend's default, several calls allowed).
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def merged(self, defaults: dict[str, Any] | None) -> GenParams:
        """Fill unset fields from ``defaults`` (a model's ``params`` block); unknown keys go to ``extra``."""
        if not defaults:
            return self
        out = GenParams(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        out.extra = {**self.extra}
        for key, value in defaults.items():
            if key in self.__dataclass_fields__ and key != "extra":
                if getattr(out, key) is None:
                    setattr(out, key, value)
            else:
                out.extra.setdefault(key, value)
        return out


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # False when the backend sent no usage: a stream from a server that ignores `stream_options.include_usage`
    # (llama-cpp-python's own server does). The counts are then 0 prompt tokens and one completion token per chunk,
    # and run records show the prompt tokens as unknown (null), not as 0.
    reported: bool = True
    # prompt tokens the backend read from its cache instead of evaluating (a local model's KV cache of the common
    # prefix with its last request; OpenAI's ``prompt_tokens_details.cached_tokens``); 0 when unknown
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ToolCall:
    """One call of a tool by the model: ``arguments`` is the JSON text as the model wrote it; ``args`` parses it."""

    id: str
    name: str
    arguments: str = "{}"

    @property
    def args(self) -> dict[str, Any]:
        """The arguments as a dict; raises ``ValueError`` when they are not a JSON object (the router only returns
        calls that validated, whose arguments always are)."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError(f"the arguments of {self.name} are not a JSON object")
        return value

    def to_openai(self) -> dict[str, Any]:
        """The call as an OpenAI ``tool_calls`` item."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Completion:
    """One finished generation. ``latency_s`` is wall time of the whole call; ``ttft_s`` only when streamed.
    ``tool_calls`` are the calls the model made (then ``finish_reason`` is ``"tool_calls"`` and ``text`` is often
    empty)."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    ttft_s: float | None = None
    finish_reason: str | None = None
    raw: dict[str, Any] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class Embeddings:
    """One vector per input text (in order) and the tokens read; ``model`` is the backend's model id. Providers that
    can embed have ``embed(model, texts, params, timeout_s, dimensions=None) -> Embeddings`` (not part of
    ``Provider``: chat-only backends lack it)."""

    vectors: list[list[float]]
    prompt_tokens: int
    model: str


@dataclass
class StreamDelta:
    """A piece of streamed text; the provider's stream ends with exactly one ``Completion``."""

    text: str


@runtime_checkable
class Provider(Protocol):
    """What a backend must do. ``model`` is the backend's own model id (e.g. ``anthropic/claude-3.5-sonnet``).

    Implementations raise ``LLMError`` with a ``kind`` for every failure: the router decides on retries and fallbacks
    from that kind alone. ``stream`` yields ``StreamDelta`` items and then one final ``Completion``; a stream that ends
    without its terminator must raise ``LLMError(kind="stream_cut")``, never return a short success.
    ``timeout_s`` bounds the whole call (a stream included, not each read): past it, raise ``LLMError(kind="timeout")``;
    the router relies on this for its per-attempt timeouts and overall deadline.
    """

    name: str
    supports_stream: bool

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion: ...

    def stream(
        self, model: str, messages: Messages, params: GenParams, timeout_s: float
    ) -> AsyncIterator[StreamDelta | Completion]: ...

    async def aclose(self) -> None: ...

"""The one LangChain chat model of agentlab, ``AgentlabChatModel``, and its message converters. Two backends:

- a route of agentlab's router (``router`` and ``route``): what ``agentlab.integrations.langchain`` exports for
  users' own LangChain / LangGraph agents, and what the agent planner's ``RouterModel`` is;
- an ``AgentModel`` (``agent``: anything with ``step(messages, tools) -> Reply``, the agent planner's
  ``RouterModel`` or a scripted model of ``agentlab.testing``): what ``harness.AgentRun`` gives ``create_agent``.
  The reply's seconds, invalid calls and model go in ``response_metadata``, its prompt and total tokens in
  ``usage_metadata``.

Both read LangChain messages through ``to_messages`` (OpenAI's shapes: what the router and an ``AgentModel`` read).

LangChain's ``create_agent`` (``langchain.agents``) and LangGraph's older prebuilt ReAct agent run on it as they
are: ``bind_tools`` (OpenAI tool shapes, LangChain tools, pydantic classes or functions), ``invoke`` / ``ainvoke``,
``stream`` / ``astream`` and ``usage_metadata``. Every request goes through a route of a routing config, so the agent
gets the route's fallbacks, ``fastest`` choice, tool-call validation (one repair, then the next model), stats and
events.

    from langchain.agents import create_agent
    from agentlab.integrations.langchain import AgentlabChatModel
    model = AgentlabChatModel.from_config("llm.yaml", route="default")
    agent = create_agent(model, [my_tool])

The router's sync and async callers share its background event loop (its HTTP clients are bound to one loop), so
one model may be invoked from sync code, from the caller's event loop and from several threads alike. Streaming with
tools bound yields the whole answer as one chunk: the router only knows an answer once its calls validate.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from agentlab.core.config import close_key
from agentlab.core.errors import LLMError, MissingPackage, pip_install
from agentlab.core.llm.config import GenerationParams, LLMConfig, check_params, load_llm_config
from agentlab.core.llm.results import RoutedCompletion
from agentlab.core.llm.router import Router
from agentlab.core.llm.tools import LOCAL_PARAMS
from agentlab.core.llm.types import GenParams, Messages

try:
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
    from langchain_core.language_models import LangSmithParams, LanguageModelInput
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
    from langchain_core.messages.ai import UsageMetadata
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable
    from langchain_core.tools import BaseTool
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import ConfigDict, Field, ValidationError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingPackage(f"agentlab.integrations.langchain needs the package '{exc.name}', which is not installed",
                         hint=f"{pip_install('langchain')} (the agent planner: {pip_install('agent')})") from None

__all__ = ["AgentlabChatModel", "to_messages", "to_ai_message"]

_DONE = object()

# The call-time arguments (``invoke(..., temperature=0)``, ``bind(top_k=3)``): the generation params a routing
# config's ``params`` takes (validated as there: ``temperature=-3`` is refused), local models' tool switches, and
# LangChain's own arguments that reach ``_generate`` / ``_stream``: ``bind_tools``' tools, tool_choice and
# parallel_tool_calls, ``stream`` (invoke's switch to ``_stream``), ``model`` (a per-call route), ``create_agent``'s
# ``response_format`` (its ProviderStrategy) and ``strict`` (set for OpenAI-compatible models), and the structured
# output tracing record ``BaseChatModel`` normally pops first.
_SAMPLING = frozenset(GenerationParams.model_fields)
_LANGCHAIN_ARGS = frozenset(("tools", "tool_choice", "parallel_tool_calls", "stream", "model", "response_format",
                             "strict", "ls_structured_output_format", "structured_output_format"))
_CALL_ARGS = sorted(_SAMPLING | LOCAL_PARAMS | _LANGCHAIN_ARGS)
_SHOWN_ARGS = sorted(_SAMPLING | LOCAL_PARAMS | {"model"})  # the ones a user passes (LangChain passes the others)


def _check_call_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The generation params among a call's ``kwargs``, validated as a config's ``params`` are (``stop`` a list);
    ``ValueError`` naming the argument for an unknown one (``temprature``: did you mean temperature?) or a value out
    of range (``temperature=-3``, ``max_tokens=0``), which were dropped or sent silently."""
    for key in kwargs:
        if key not in _CALL_ARGS:
            close = close_key(key, _SHOWN_ARGS)
            raise ValueError(f"AgentlabChatModel: unknown call argument {key!r}"
                             + (f" (did you mean {close}?)" if close else "")
                             + f"; it takes {', '.join(_SHOWN_ARGS)} (tools through bind_tools)")
    sampling = {k: v for k, v in kwargs.items() if k in _SAMPLING and v is not None}
    try:
        return dict(check_params(sampling))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        raise ValueError(f"AgentlabChatModel: call argument {key}={sampling.get(key)!r}: {err['msg']}") from None


def _json_schema(fmt: Any) -> dict[str, Any] | None:
    """OpenAI's ``response_format`` (what ``create_agent``'s ProviderStrategy binds) as GenParams' ``json_schema``."""
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"name": "output", "schema": {"type": "object"}}
    spec = fmt.get("json_schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise ValueError("AgentlabChatModel: call argument response_format must be OpenAI's {'type': 'json_schema', "
                         "'json_schema': {'name': ..., 'schema': {...}}} or {'type': 'json_object'}, got "
                         f"{str(fmt)[:80]}; for a pydantic class use with_structured_output")
    return {"name": spec.get("name") or "output", "schema": spec["schema"]}


def to_messages(messages: Sequence[BaseMessage]) -> Messages:
    """LangChain messages as the router's OpenAI-style dicts (assistant ``tool_calls`` and ``tool`` results kept)."""
    out: Messages = []
    for msg in convert_to_openai_messages(list(messages)):
        if msg.get("tool_calls") and not msg.get("content"):
            msg["content"] = None  # OpenAI's shape of an assistant message that only calls tools
        if msg["role"] == "tool":
            msg.pop("name", None)  # not a field of OpenAI's tool message (LangGraph's tool node names some answers)
        out.append(msg)
    return out


def _usage_metadata(prompt: int, completion: int, cached: int) -> UsageMetadata:
    """LangChain's usage record; the prompt tokens read from the model's cache as ``input_token_details.cache_read``
    (LangChain's standard key), when there were any."""
    usage = UsageMetadata(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion)
    if cached:
        usage["input_token_details"] = {"cache_read": cached}
    return usage


def _usage(rc: RoutedCompletion) -> UsageMetadata:
    u = rc.completion.usage
    return _usage_metadata(u.prompt_tokens, u.completion_tokens, u.cached_tokens)


def _metadata(rc: RoutedCompletion) -> dict[str, Any]:
    c = rc.completion
    return {"model_name": c.model, "finish_reason": c.finish_reason, "route": rc.route, "model": rc.model,
            "fallbacks": rc.fallbacks, "latency_s": c.latency_s, "ttft_s": c.ttft_s}


def to_ai_message(rc: RoutedCompletion) -> AIMessage:
    """A routed answer as an ``AIMessage``: its text, its tool calls (validated by the router), usage and metadata."""
    calls = [{"name": call.name, "args": call.args, "id": call.id, "type": "tool_call"}
             for call in rc.completion.tool_calls]
    return AIMessage(content=rc.completion.text, tool_calls=calls, usage_metadata=_usage(rc),
                     response_metadata=_metadata(rc))


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    """LangChain's tool_choice spellings as OpenAI's: ``any`` / ``True`` -> ``required``, a tool's name -> that tool."""
    if choice is None or choice in ("auto", "none", "required") or isinstance(choice, dict):
        return choice
    if choice is True or choice == "any":
        return "required"
    if choice is False:
        return "none"
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    raise ValueError(f"tool_choice {choice!r} is not auto, none, required, any or one of the tools: {names}")


class AgentlabChatModel(BaseChatModel):
    """A LangChain chat model whose every call goes through ``router`` on ``route``.

    Build it with ``AgentlabChatModel(router=Router.from_config(cfg))`` or ``AgentlabChatModel.from_config(path)``.
    ``temperature``, ``max_tokens``, ``seed`` and ``stop`` are sent when set (else each model's own params apply);
    tools come from ``bind_tools``. LangChain's other standard arguments: ``timeout`` bounds each routed call
    (seconds, fallbacks included: ``LLMError`` kind ``timeout`` past it), ``max_retries`` asks the whole route again
    that many times after a retryable failure (the router's own per-model ``retries`` come first), ``streaming``
    makes ``invoke`` stream. A per-call ``model=`` names the route for that call (the gateway's meaning of
    ``model``). Any other argument is refused (pydantic's ``extra_forbidden``), not silently dropped. A call's own
    arguments (``invoke(..., temperature=0)``, ``bind(top_k=3)``) are a routing config's ``params``, validated as
    there; an unknown one or a value out of range is a ``ValueError`` naming it. The model does not close the
    router: its owner does (``router.close()``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Router | None = None
    agent: Any = None  # an AgentModel (``step(messages, tools) -> Reply``): the other backend
    route: str = "default"
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: list[str] | None = Field(default=None)
    timeout: float | None = Field(default=None, gt=0)
    max_retries: int = Field(default=0, ge=0)
    streaming: bool = False

    @classmethod
    def from_config(cls, config: LLMConfig | str | Path, route: str = "default", **fields: Any) -> AgentlabChatModel:
        """A model over a new router built from ``config`` (an ``LLMConfig`` or the path of a routing YAML)."""
        cfg = config if isinstance(config, LLMConfig) else load_llm_config(config)
        return cls(router=Router.from_config(cfg), route=route, **fields)

    @property
    def _llm_type(self) -> str:
        return "agentlab" if self.agent is None else "agentlab-agent"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"route": self.route, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """LangSmith's standard tracing params: provider ``agentlab``, the route (or a per-call ``model``) as the
        model name, and the sampling params this model sends. LangChain asks them before ``_generate`` / ``_stream``:
        the call's arguments are checked here first (``_check_call_args``), so ``temperature="hot"`` is refused
        naming it, not with ``float()``'s message."""
        _check_call_args(kwargs)
        params = LangSmithParams(ls_provider="agentlab", ls_model_name=str(kwargs.get("model") or self.route),
                                 ls_model_type="chat")
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if temperature is not None:
            params["ls_temperature"] = float(temperature)
        if max_tokens is not None:
            params["ls_max_tokens"] = int(max_tokens)
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], *,
                   tool_choice: str | bool | dict[str, Any] | None = None,
                   parallel_tool_calls: bool | None = None, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind ``tools`` (any shape ``convert_to_openai_tool`` reads) and optionally ``tool_choice`` (``auto``,
        ``none``, ``required`` / ``any``, a tool's name or OpenAI's dict) and ``parallel_tool_calls``."""
        converted = [convert_to_openai_tool(tool) for tool in tools]
        bound: dict[str, Any] = {"tools": converted, **kwargs}
        choice = _tool_choice(tool_choice, converted)
        if choice is not None:
            bound["tool_choice"] = choice
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(**bound)

    # ------------------------------------------------------------------ the router's calls

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> GenParams:
        """The request's params: the model's own, then the call's (checked by ``_check_call_args``); the params
        GenParams has no field for (``top_k``, ``tool_gate``, ...) go in its ``extra``, as a config's do."""
        sampling = _check_call_args(kwargs)
        if isinstance(stop, str):  # invoke(..., stop="x"): one sequence, not one per character
            stop = [stop]
        fields = set(GenParams.__dataclass_fields__) - {"extra"}
        params = GenParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed,
                           stop=stop or self.stop, json_schema=_json_schema(kwargs.get("response_format")))
        for key, value in {**sampling, **{k: kwargs[k] for k in ("tools", "tool_choice", "parallel_tool_calls")
                                          if kwargs.get(k) is not None}}.items():
            if key in fields:
                setattr(params, key, value)
            else:
                params.extra[key] = value
        params.extra.update({k: kwargs[k] for k in LOCAL_PARAMS if kwargs.get(k) is not None})
        return params

    def _submit(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], *,
                on_delta: Callable[[str, str], None] | None = None) -> Future[RoutedCompletion]:
        """Start the routed call on the router's own loop (sync and async callers share it)."""
        assert self.router is not None, "AgentlabChatModel needs a router or an agent model"
        coro = self._call(to_messages(messages), str(kwargs.get("model") or self.route), self._params(stop, kwargs),
                          on_delta)
        return asyncio.run_coroutine_threadsafe(coro, self.router._background())

    async def _call(self, messages: Messages, route: str, params: GenParams,
                    on_delta: Callable[[str, str], None] | None) -> RoutedCompletion:
        """The routed call within ``timeout``, asked again up to ``max_retries`` times after a retryable failure
        (none once part of a streamed answer went out)."""
        assert self.router is not None
        sent = False

        def delta(model: str, text: str) -> None:
            nonlocal sent
            sent = True
            assert on_delta is not None
            on_delta(model, text)

        for attempt in range(self.max_retries + 1):
            work = self.router.generate(messages, route, params, stream=on_delta is not None,
                                        on_delta=delta if on_delta is not None else None)
            try:
                if self.timeout is None:
                    return await work
                try:
                    return await asyncio.wait_for(work, self.timeout)
                except TimeoutError:
                    raise LLMError(f"route '{route}': no answer within the model's timeout ({self.timeout:g}s)",
                                   "timeout", hint="raise the chat model's timeout") from None
            except LLMError as exc:
                if sent or not exc.retryable or attempt == self.max_retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        if self.agent is not None:
            return ChatResult(generations=[ChatGeneration(message=self._step(messages, kwargs))])
        future = self._submit(messages, stop, kwargs)
        try:
            rc = future.result()
        except BaseException:
            future.cancel()
            raise
        return ChatResult(generations=[ChatGeneration(message=to_ai_message(rc))])

    def _step(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        """The agent backend: one ``step`` of the ``AgentModel`` with the bound tools."""
        _check_call_args(kwargs)
        reply = self.agent.step(to_messages(messages), list(kwargs.get("tools") or []))
        calls = [{"name": c.name, "args": c.args, "id": c.id, "type": "tool_call"} for c in reply.calls]
        usage = _usage_metadata(reply.prompt_tokens, max(reply.tokens - reply.prompt_tokens, 0), reply.cached_tokens)
        return AIMessage(reply.text or "", tool_calls=calls, usage_metadata=usage,
                         response_metadata={"model_name": reply.model or self.agent.name, "seconds": reply.seconds,
                                            "invalid_tool_calls": reply.invalid})

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        rc = await asyncio.wrap_future(self._submit(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=to_ai_message(rc))])

    def _last_chunk(self, rc: RoutedCompletion, streamed: bool) -> ChatGenerationChunk:
        """The stream's end: the text not streamed yet (all of it when nothing streamed), the calls, the usage."""
        calls = [{"name": c.name, "args": c.arguments, "id": c.id, "index": i, "type": "tool_call_chunk"}
                 for i, c in enumerate(rc.completion.tool_calls)]
        return ChatGenerationChunk(message=AIMessageChunk(
            content="" if streamed else rc.completion.text, tool_call_chunks=calls, usage_metadata=_usage(rc),
            response_metadata=_metadata(rc), chunk_position="last"))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if self.agent is not None:  # an AgentModel answers whole: one chunk
            message = self._step(messages, kwargs)
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=message.content, tool_call_chunks=[
                    {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i,
                     "type": "tool_call_chunk"} for i, c in enumerate(message.tool_calls)],
                usage_metadata=message.usage_metadata, response_metadata=message.response_metadata,
                chunk_position="last"))
            return
        pieces: queue.Queue[Any] = queue.Queue()
        future = self._submit(messages, stop, kwargs, on_delta=lambda _model, text: pieces.put(text))
        future.add_done_callback(lambda _f: pieces.put(_DONE))
        streamed = False
        try:
            while (piece := pieces.get()) is not _DONE:
                streamed = True
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            yield self._last_chunk(future.result(), streamed)
        finally:
            future.cancel()  # the consumer stopped early: do not leave the request running

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, item)

        future = self._submit(messages, stop, kwargs, on_delta=lambda _model, text: put(text))
        future.add_done_callback(lambda _f: put(_DONE))
        streamed = False
        try:
            while (piece := await pieces.get()) is not _DONE:
                streamed = True
                if run_manager is not None:
                    await run_manager.on_llm_new_token(piece)
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
            yield self._last_chunk(await asyncio.wrap_future(future), streamed)
        finally:
            future.cancel()


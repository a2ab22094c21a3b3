"""A CrewAI LLM over agentlab's router: ``AgentlabCrewLLM`` (CrewAI's ``BaseLLM`` custom-LLM class).

A CrewAI agent given it sends every request through a route of a routing config (fallbacks, ``fastest``, tool-call
validation with one repair, stats and events), with CrewAI's native tool calling: ``supports_function_calling()``
is true, so the agent offers its tools as OpenAI tool schemas and gets back the validated calls (OpenAI
``tool_calls`` items, which CrewAI's executor runs), or, when CrewAI passes ``available_functions``, the result of
running the first call, as CrewAI's own providers do.

    from agentlab.integrations.crewai import AgentlabCrewLLM
    llm = AgentlabCrewLLM.from_config("llm.yaml", route="default")
    agent = crewai.Agent(role=..., goal=..., backstory=..., llm=llm, tools=[my_tool])

``call`` runs on the router's background loop (``acall`` awaits the same), so one LLM serves CrewAI's threads and
event loops alike. The LLM does not close the router: its owner does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentlab.core.errors import MissingPackage, pip_install
from agentlab.core.llm.config import LLMConfig, load_llm_config
from agentlab.core.llm.results import RoutedCompletion
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import GenParams, Messages

try:
    from crewai import BaseLLM
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingPackage(f"agentlab.integrations.crewai needs the package '{exc.name}', which is not installed",
                         hint=pip_install("crewai")) from None

__all__ = ["AgentlabCrewLLM"]

_MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def _messages(messages: str | list[dict[str, Any]]) -> Messages:
    """CrewAI's messages (a string, or OpenAI-style dicts with extra keys of its own) as the router's."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{k: m[k] for k in _MESSAGE_KEYS if k in m} for m in messages]


class AgentlabCrewLLM(BaseLLM):
    """A CrewAI LLM whose every call goes through ``router`` on ``route`` (``model`` is shown by CrewAI; it names
    the route unless given)."""

    llm_type: str = "agentlab"
    router: Router
    route: str = "default"
    provider: str = "agentlab"
    context_window: int = 8192

    def __init__(self, **data: Any) -> None:
        data.setdefault("model", f"agentlab/{data.get('route', 'default')}")
        super().__init__(**data)

    @classmethod
    def from_config(cls, config: LLMConfig | str | Path, route: str = "default", **fields: Any) -> AgentlabCrewLLM:
        """An LLM over a new router built from ``config`` (an ``LLMConfig`` or the path of a routing YAML)."""
        cfg = config if isinstance(config, LLMConfig) else load_llm_config(config)
        return cls(router=Router.from_config(cfg), route=route, **fields)

    def supports_function_calling(self) -> bool:
        return True

    def supports_stop_words(self) -> bool:
        return True

    def get_context_window_size(self) -> int:
        return self.context_window

    def _params(self, tools: list[dict[str, Any]] | None) -> GenParams:
        max_tokens = int(self.max_tokens) if self.max_tokens is not None else None
        return GenParams(temperature=self.temperature, max_tokens=max_tokens, top_p=self.top_p, seed=self.seed,
                         stop=list(self.stop) or None, tools=list(tools) if tools else None)

    def _answer(self, rc: RoutedCompletion, available_functions: dict[str, Any] | None,
                from_task: Any, from_agent: Any) -> Any:
        calls = rc.completion.tool_calls
        if not calls:
            return rc.completion.text
        if available_functions:  # CrewAI asked the LLM to run the call itself, as its own providers do
            call = calls[0]
            return self._handle_tool_execution(call.name, call.args, available_functions, from_task, from_agent)
        return [call.to_openai() for call in calls]

    def call(self, messages: str | list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
             callbacks: list[Any] | None = None, available_functions: dict[str, Any] | None = None,
             from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> Any:
        """One routed request: the text, or the calls (OpenAI ``tool_calls`` items) when the model called tools."""
        coro = self.router.generate(_messages(messages), self.route, self._params(tools))
        future = asyncio.run_coroutine_threadsafe(coro, self.router._background())
        try:
            rc = future.result()
        except BaseException:
            future.cancel()
            raise
        return self._answer(rc, available_functions, from_task, from_agent)

    async def acall(self, messages: str | list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                    callbacks: list[Any] | None = None, available_functions: dict[str, Any] | None = None,
                    from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> Any:
        coro = self.router.generate(_messages(messages), self.route, self._params(tools))
        rc = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.router._background()))
        return self._answer(rc, available_functions, from_task, from_agent)

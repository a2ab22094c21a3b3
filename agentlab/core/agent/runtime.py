"""The agent runtime: a LangGraph graph of plan -> act -> observe -> (approve ->) execute -> reflect, on the router's
tool calling, with its checkpoints in the run folder.

A command gives a ``Driver``: the brief (system prompt and the first user message, with the facts computed in code),
the tools (``Tool``: a name, a JSON schema for the arguments, a function that computes the result in code), and the
one *action* tool whose call is the costly step (nas's ``run_trial``, compress's ``run_experiment``). The graph runs
the model's tool calls until it calls the action with valid arguments; then it stops at an interrupt whose payload is
the action, the command runs it (a trial) and resumes the graph with the result (``AgentRun.advance``). With
``approve`` the graph stops before the action too, and the answer (yes / no / edit) is the resume value.

The checkpointer is LangGraph's SQLite saver on ``agent.sqlite`` in the run folder: after ``kill -9`` a new process
opens the same thread and continues from the last checkpoint (the pending action, the approval it waited for, or
the step after the last one checkpointed when it was killed during a model step).

Guards against a weak model, all in code: every call is constrained and validated by the router (one repair, then
the next model); a step that yields no tool call, or ``max_steps`` calls without the action, runs the driver's
``default_action`` (the classical sampler's candidate); a call repeated since the last action is answered with its
earlier answer, not run again, and the next step offers only ``suggest`` and the action that runs a suggested
candidate (the model still chooses which); the conversation sent to the model is windowed (the brief and the last
exchanges) so it fits a small context.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.llm.types import GenParams, ToolCall
from agentlab.core.tracing import span

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

RESULT_CHARS = 1500  # a tool's result as the model sees it, at most
REPEATED = "you made this same call already"  # the answer to a call repeated since the last action
SUMMARY_CHARS = 200  # a tool's result in events.jsonl


@dataclass
class Tool:
    """One tool: ``parameters`` is its arguments' JSON schema (a pydantic model's ``model_json_schema()`` or one
    built for the moment, e.g. an ``enum`` of the candidates' indices); ``run(args)`` computes the result in code
    (text the model reads). The action tool has no ``run``: its call leaves the graph (``Driver.action``)."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], str] | None = None

    def spec(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass
class Reply:
    """One model step: its tool calls (validated by the router), text, tokens and seconds, and the invalid calls
    the router saw on the way (repaired or passed to the next model)."""

    calls: list[ToolCall]
    text: str = ""
    tokens: int = 0
    seconds: float = 0.0
    invalid: int = 0
    model: str = ""


class AgentModel(Protocol):
    """What plans: ``RouterModel`` (a route of the routing config) or a scripted model (``agentlab.testing``)."""

    name: str

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply: ...


class RouterModel:
    """A route of the router as the agent's model: tool_choice ``required``, one call per step."""

    def __init__(self, router: Router, route: str = "planner", max_tokens: int | None = None):
        self.router, self.route, self.max_tokens = router, route, max_tokens
        chain = router.route(route)[1]
        self.name = chain[0] if chain else route

    def step(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Reply:
        params = GenParams(tools=tools, tool_choice="required", parallel_tool_calls=False, max_tokens=self.max_tokens)
        start = time.perf_counter()
        result = self.router.generate_sync(messages, route=self.route, params=params)
        usage = result.completion.usage
        invalid = sum(1 for a in result.attempts if a.outcome == "invalid_tool_call")
        return Reply(list(result.completion.tool_calls), result.completion.text,
                     (usage.prompt_tokens or 0) + (usage.completion_tokens or 0), time.perf_counter() - start,
                     invalid, result.model)


class Driver(Protocol):
    """What a command gives the runtime. ``tools()`` is asked before every step (schemas may change: the
    candidates' indices); ``actions`` names the action tools (the first is the default's); ``check_action(args)``
    returns the action (a dict the command can run: the interrupt's payload) or an error the model is shown;
    ``default_action(why)`` is the action when the model gives none; ``reflect()`` is what the model is told after
    each action (computed in code)."""

    actions: tuple[str, ...]

    def brief(self) -> list[dict[str, Any]]: ...

    def tools(self) -> list[Tool]: ...

    def check_action(self, args: dict[str, Any]) -> tuple[dict[str, Any] | None, str]: ...

    def default_action(self, why: str) -> dict[str, Any]: ...

    def reflect(self) -> str: ...


class AgentState(TypedDict, total=False):
    messages: list[dict[str, Any]]
    since_action: int  # model steps since the last action
    pending: dict[str, Any] | None  # the action waiting to run
    counts: dict[str, int]  # steps, tool_calls, invalid_tool_calls, rejected_calls, defaulted, tokens
    seconds: float
    head: int  # messages of the brief (always shown)
    declined: list[str]  # keys of the actions the user declined (--approve "no"): never run


def new_counts() -> dict[str, int]:
    return {"steps": 0, "tool_calls": 0, "invalid_tool_calls": 0, "rejected_calls": 0, "defaulted": 0, "tokens": 0}


def window(messages: list[dict[str, Any]], head: int, keep: int) -> list[dict[str, Any]]:
    """The first ``head`` messages (the brief) and about the last ``keep``, starting at an assistant message so no
    tool result is shown without its call."""
    if len(messages) <= head + keep:
        return list(messages)
    tail = messages[head:][-keep:]
    while tail and tail[0].get("role") == "tool":
        tail = tail[1:]
    return [*messages[:head], *tail]


def _answered(messages: list[dict[str, Any]], name: str, args: dict[str, Any],
              actions: tuple[str, ...]) -> str | None:
    """The answer to an identical call (same tool, same arguments) made since the last action call, or None. A call's
    answer is the tool message right after it (call ids need not be unique: a provider may number them per reply);
    a repeat's answer or an error is not an answer to give again."""
    for i in range(len(messages) - 1, -1, -1):
        calls = messages[i].get("tool_calls") or []
        if not calls:
            continue
        function = calls[0].get("function", {})
        if function.get("name") in actions:
            return None
        try:
            same = function.get("name") == name and json.loads(function.get("arguments") or "{}") == args
        except json.JSONDecodeError:
            same = False
        after = messages[i + 1] if i + 1 < len(messages) else {}
        answer = after.get("content") if after.get("role") == "tool" else None
        if same and isinstance(answer, str) and not answer.startswith((REPEATED, "error:")):
            return answer
    return None


def _summary(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_CHARS else line[:SUMMARY_CHARS - 3] + "..."


@dataclass
class AgentRun:
    """One agent's graph over a checkpoint file. ``advance(result)`` resumes it with the last action's result (None
    the first time) and returns the next action; ``approver(action) -> answer`` answers approvals (None: no
    approval asked). ``on_event(kind, **fields)`` receives each step (events.jsonl)."""

    driver: Driver
    model: AgentModel
    path: Path
    thread: str = "agent"
    max_steps: int = 6
    keep: int = 12
    approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    on_event: Callable[..., None] | None = None
    _app: Any = field(default=None, init=False, repr=False)
    _conn: sqlite3.Connection | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ the graph

    def _graph(self) -> Any:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from langgraph.graph import START, StateGraph

        graph = StateGraph(AgentState)
        graph.add_node("plan", self._plan)
        graph.add_node("act", self._act)
        graph.add_node("observe", self._observe)
        graph.add_node("approve", self._approve)
        graph.add_node("execute", self._execute)
        graph.add_node("reflect", self._reflect)
        graph.add_edge(START, "plan")
        graph.add_edge("plan", "act")
        graph.add_edge("act", "observe")
        graph.add_conditional_edges("observe", self._after_observe, ["act", "approve", "execute"])
        graph.add_conditional_edges("approve", lambda s: "execute" if s.get("pending") else "reflect",
                                    ["execute", "reflect"])
        graph.add_edge("execute", "reflect")
        graph.add_edge("reflect", "act")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        return graph.compile(checkpointer=SqliteSaver(self._conn))

    def _event(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, **fields)

    def _plan(self, state: AgentState) -> AgentState:
        brief = self.driver.brief()
        self._event("agent_plan", messages=len(brief), summary=_summary(brief[-1]["content"]))
        return {"messages": brief, "since_action": 0, "pending": None, "counts": new_counts(), "seconds": 0.0,
                "head": len(brief)}

    def _act(self, state: AgentState) -> AgentState:
        messages, counts = list(state["messages"]), dict(state["counts"])
        since = state.get("since_action", 0)
        if since >= self.max_steps:
            why = f"{self.max_steps} steps without a valid {' or '.join(self.driver.actions)}"
            return self._default(messages, counts, state, why)
        tools = [t.spec() for t in self.driver.tools()]
        last = messages[-1] if messages else {}
        if last.get("role") == "tool" and str(last.get("content", "")).startswith(REPEATED):
            # it repeated itself: the next step may only run one of the suggested candidates (still its choice), or
            # see them first
            tools = [t for t in tools if t["function"]["name"] in (self.driver.actions[0], "suggest")] or tools
        counts["steps"] += 1
        try:
            with span("agent.act", {"agent.step": counts["steps"], "agent.model": self.model.name}):
                reply = self.model.step(window(messages, state.get("head", 2), self.keep), tools)
        except LLMError as exc:
            return self._default(messages, counts, state, f"no answer from the model: {exc.kind}: {exc.message}",
                                 since + 1)
        counts["tokens"] += reply.tokens
        counts["invalid_tool_calls"] += reply.invalid
        calls = reply.calls[:1]  # one call per step: the next step sees its result
        if not calls:
            return self._default(messages, counts, state, "the model called no tool", since + 1)
        counts["tool_calls"] += len(calls)
        messages.append({"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls]})
        self._event("agent_step", step=counts["steps"], tool=calls[0].name, arguments=calls[0].arguments[:500],
                    model=reply.model or self.model.name, tokens=reply.tokens, seconds=round(reply.seconds, 3),
                    invalid=reply.invalid)
        return {"messages": messages, "counts": counts, "since_action": since + 1,
                "seconds": state.get("seconds", 0.0) + reply.seconds}

    def _default(self, messages: list[dict[str, Any]], counts: dict[str, int], state: AgentState, why: str,
                 since: int | None = None) -> AgentState:
        """The driver's default action, written as a call the agent made (so the conversation stays well formed)."""
        action = self.driver.default_action(why)
        counts["defaulted"] += 1
        call = ToolCall(f"call_default_{counts['steps']}", self.driver.actions[0], json.dumps(action.get("args", {})))
        messages.append({"role": "assistant", "content": None, "tool_calls": [call.to_openai()]})
        self._event("agent_default", why=why[:300], action=_summary(json.dumps(action.get("args", {}))))
        return {"messages": messages, "counts": counts, "pending": {**action, "call_id": call.id, "default": why},
                "since_action": since if since is not None else state.get("since_action", 0)}

    def _observe(self, state: AgentState) -> AgentState:
        if state.get("pending"):
            return {}
        messages, counts = list(state["messages"]), dict(state["counts"])
        call = messages[-1]["tool_calls"][0]
        name, args_text, call_id = call["function"]["name"], call["function"]["arguments"], call["id"]
        try:
            args = json.loads(args_text or "{}")
        except json.JSONDecodeError:
            args = {}
        tools = {t.name: t for t in self.driver.tools()}
        earlier = None if name in self.driver.actions else _answered(messages[:-1], name, args, self.driver.actions)
        if earlier is not None:  # a small model repeats calls: the same answer again, and a push to decide
            head = f"{REPEATED} since the last {self.driver.actions[0]}; its answer was: "
            tail = f"\nDecide now: call {self.driver.actions[0]} with one of the suggested candidates."
            result = head + earlier[:RESULT_CHARS - len(head) - len(tail)] + tail
            messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
            self._event("agent_tool", tool=name, summary=_summary("repeated call: " + earlier))
            return {"messages": messages, "counts": counts}
        if name in self.driver.actions:
            action, error = self.driver.check_action(args)
            if action is not None and action.get("key") in (state.get("declined") or []):
                action, error = None, "the user declined this one: choose another"
            if action is not None:
                return {"pending": {**action, "call_id": call_id}}
            counts["rejected_calls"] += 1
            result = f"not run: {error}"
        elif name in tools and tools[name].run is not None:
            try:
                with span("agent.tool", {"agent.tool": name}):
                    result = tools[name].run(args)  # type: ignore[misc]
            except AgentlabError as exc:
                result = f"error: {exc.message}"
        else:
            counts["rejected_calls"] += 1
            result = f"error: unknown tool {name!r}"
        result = result[:RESULT_CHARS]
        messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
        self._event("agent_tool", tool=name, summary=_summary(result))
        return {"messages": messages, "counts": counts}

    def _after_observe(self, state: AgentState) -> str:
        if not state.get("pending"):
            return "act"
        return "approve" if self.approver is not None else "execute"

    def _approve(self, state: AgentState) -> AgentState:
        from langgraph.types import interrupt

        pending = state["pending"]
        assert pending is not None
        answer = interrupt({"kind": "approve", "action": pending}) or {}
        verdict = answer.get("answer", "yes")
        note = answer.get("note")
        changes = (answer.get("args") or {}).get("changes") if verdict == "edit" else None
        self._event("agent_approval", answer=verdict, note=str(note or "")[:300], **({"changes": changes}
                                                                                      if changes else {}))
        if verdict == "yes":
            return {}
        messages = list(state["messages"])
        declined = list(state.get("declined") or [])
        if verdict == "edit":
            args = dict(answer.get("args") or {})
            if isinstance(args.get("changes"), dict) and isinstance(pending.get("params"), dict):
                args["changes"] = {**pending["params"], **args["changes"]}  # the proposal shown, edited
            action, error = self.driver.check_action(args)
            if action is not None:
                return {"pending": {**action, "call_id": pending["call_id"], "edited": True}}
            text = f"the user's edit was not valid ({error}); not run"
        else:
            text = "the user declined this; propose something else"
            if pending.get("key") and pending["key"] not in declined:
                declined.append(pending["key"])  # never proposed again: refused in observe, not drawn again
            decline = getattr(self.driver, "decline", None)
            if decline is not None:
                decline(pending)
        messages.append({"role": "tool", "tool_call_id": pending["call_id"],
                         "content": text + (f". The user says: {note}" if note else "")})
        return {"messages": messages, "pending": None, "since_action": 0, "declined": declined}

    def _execute(self, state: AgentState) -> AgentState:
        from langgraph.types import interrupt

        pending = state["pending"]
        assert pending is not None
        result = interrupt({"kind": "execute", "action": pending})
        messages = [*state["messages"],
                    {"role": "tool", "tool_call_id": pending["call_id"], "content": str(result)[:RESULT_CHARS]}]
        self._event("agent_observe", summary=_summary(str(result)))
        return {"messages": messages, "pending": None, "since_action": 0}

    def _reflect(self, state: AgentState) -> AgentState:
        text = self.driver.reflect()
        if not text:
            return {}
        return {"messages": [*state["messages"], {"role": "user", "content": text}]}

    # ------------------------------------------------------------------ driving it

    def _config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.thread}, "recursion_limit": 4 * self.max_steps + 20}

    def open(self) -> None:
        if self._app is None:
            self._app = self._graph()

    def pending(self) -> dict[str, Any] | None:
        """The interrupt the graph waits at ({"kind": "execute" | "approve", "action": ...}), or None."""
        self.open()
        interrupts = self._app.get_state(self._config()).interrupts
        return interrupts[0].value if interrupts else None

    def advance(self, result: str | None) -> dict[str, Any]:
        """Resume with ``result`` (the pending action's outcome; None when nothing waits: the first call) and run the
        graph to the next action to execute, answering approvals on the way; returns that action."""
        from langgraph.types import Command

        self.open()
        waiting = self.pending()
        if waiting is None:
            # a fresh thread starts at plan; one stopped between checkpoints (killed during a model step) continues
            value: Any = None if self._app.get_state(self._config()).next else {"messages": []}
        elif waiting["kind"] == "execute":
            if result is None:
                return dict(waiting["action"])  # nothing new: the same action is still to run (a resumed search)
            value = Command(resume=result)
        else:
            value = Command(resume=self._ask(waiting["action"]))
        while True:
            out = self._app.invoke(value, self._config())
            interrupts = out.get("__interrupt__") or ()
            if not interrupts:
                raise AgentlabError("the agent's graph ended without an action", hint="a bug: see events.jsonl")
            payload = interrupts[0].value
            if payload["kind"] == "execute":
                return dict(payload["action"])
            value = Command(resume=self._ask(payload["action"]))

    def _ask(self, action: dict[str, Any]) -> dict[str, Any]:
        assert self.approver is not None, "an approval is pending but no approver was given (--approve)"
        return self.approver(action)

    def counts(self) -> dict[str, Any]:
        """The graph's counters (steps, tool_calls, invalid_tool_calls, ...) and seconds spent by the model."""
        self.open()
        values = self._app.get_state(self._config()).values
        return {**new_counts(), **values.get("counts", {}), "model_seconds": round(values.get("seconds", 0.0), 3)}

    def declined(self) -> list[str]:
        """The keys of the actions the user declined (--approve), kept in the checkpoint."""
        self.open()
        return list(self._app.get_state(self._config()).values.get("declined") or [])

    def messages(self) -> list[dict[str, Any]]:
        self.open()
        return list(self._app.get_state(self._config()).values.get("messages", []))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn, self._app = None, None

"""The agent runtime on LangChain's harness: ``create_agent`` over an ``AgentModel``, with agentlab's guards as
middleware and the run's state in the graph, and ``AgentRun``, which drives it (imported when an agent planner is
built: it needs the ``agent`` extra).

The graph is create_agent's own (model -> tools -> model ...); what agentlab adds is middleware:

- ``Step`` (``wrap_model_call``): the tools of this step, the window (the brief and the last ``keep`` messages), the
  counters and the step budget, as the model's profile asks (``core.llm.config.ModelProfile``). A small model
  (``one_call``) makes exactly one call a step, is offered the action that picks a suggested candidate only once one
  is suggested (``suggest_first``; a driver's ``pick_needs_suggest``) and only ``suggest`` and the action after a
  repeat. A medium or full model sees the same tools every step (its prompt cache keeps them) and may make several
  calls (``MAX_CALLS``, each distinct; an action call ends the step alone). A reply with no call runs the driver's
  default action, except for a profile with ``text_steps`` (full): that step counts against the budget and is
  answered with what to do next (``Nudge``). After ``max_steps`` steps without an action, or a failed model call
  (``failed_calls``), the driver's default action is written as the action call (``defaulted``). An action call is
  checked here, in the model node, so a resume never checks it again: accepted, it is ``pending``; refused, it gets
  "not run: ..." (a pick with nothing suggested: with ``suggest``'s candidates, now in the state); the same call
  refused a second time since the last action runs the default action at once.
- ``Approval`` (``after_model``): with an approver, an interrupt before the pending action runs (yes / no / edit).
- ``Nudge`` (``after_model``): after a step with no call, back to the model with what to do next.
- ``Tools`` (``wrap_tool_call``): the driver's tools as LangChain tools, and the repeat watch (a call made since the
  last action gets its earlier answer and what to do next; for a small model it sets ``repeated``, which ``Step``
  reads). The answers of the driver's ``bookkeeping`` tools (todo, note) say what to do next too: a step that neither
  runs a trial nor gathers something new is answered so, and counts against the step budget.

The action tool leaves the graph at ``interrupt({"kind": "execute", "action": pending})``; the search loop runs the
trial and resumes with its result, which becomes the tool's answer (with the driver's ``suggest`` for the next trial
when its pick needs one), followed by the driver's reflection.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NotRequired

from langchain.agents import create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    hook_config,
)
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.types import Command, interrupt

from agentlab.core.agent.chat import AgentlabChatModel, to_messages
from agentlab.core.agent.runtime import (
    AgentModel,
    Driver,
    Tool,
    new_counts,
    profile_of,
    summary,
    window,
)
from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.tracing import span

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

    from agentlab.core.llm.config import ModelProfile


def _last(old: Any, new: Any) -> Any:
    """The newest value: several tool calls of one step (a full-profile model's parallel calls) may each set a key."""
    return new


def _answers(old: dict[str, str] | None, new: dict[str, str]) -> dict[str, str]:
    """The repeat watch's answers: each tool call adds its own; an empty update (an action) clears them."""
    return {**(old or {}), **new} if new else {}


class RunState(AgentState):
    """The agent's state in the checkpoint: create_agent's messages (``add_messages``) and agentlab's own fields."""

    head: NotRequired[int]  # messages of the brief (always shown)
    # steps, tool_calls, invalid_tool_calls, failed_calls, rejected_calls, idle_steps, defaulted, ...
    counts: NotRequired[Annotated[dict[str, float], _last]]
    since_action: NotRequired[int]  # model steps since the last action
    pending: NotRequired[dict[str, Any] | None]  # the checked action waiting to run
    declined: NotRequired[list[str]]  # keys of the actions the user declined: never run
    # the repeat watch: each call since the last action -> its answer
    answers: NotRequired[Annotated[dict[str, str], _answers]]
    # the last call was a repeat: a small model's next step offers only suggest and the action
    repeated: NotRequired[Annotated[bool, _last]]
    # the action calls refused since the last action (name and arguments): one refused again runs the default
    refused: NotRequired[Annotated[list[str], _last]]
    # the candidates the last suggest offered (the driver's ``restore`` reads them before each step), cleared by each
    # action
    suggested: NotRequired[Annotated[list[dict[str, Any]], _last]]
    todo: NotRequired[Annotated[list[str], _last]]  # the agent's plan (the todo tool), shown after each action
    notes: NotRequired[Annotated[list[str], operator.add]]  # the facts it noted this run (the note tool)
    nudge: NotRequired[str | None]  # what to do next, after a step that called no tool (full profile; Nudge)


MAX_CALLS = 4  # calls run in one step when the profile allows several (the rest are dropped)


class _Middleware(AgentMiddleware):
    state_schema = RunState

    def __init__(self, run: AgentRun):
        super().__init__()
        self.run, self.driver = run, run.driver

    def next_step(self, state: Any, what: str = "That step ran no tool.") -> str:
        """What the model is told after a step that ran nothing and gathered nothing new (computed here)."""
        run, own = self.driver.actions[0], self.driver.actions[-1]
        first = "call suggest, then " if self.unsuggested(state) else "call "
        return (f"{what} Next: {first}{run} with one of the suggested candidates, or {own} with a config of your "
                "own.")

    def refusal_with_candidates(self, name: str, update: dict[str, Any]) -> str | None:
        """The refusal of a pick made before ``suggest``, with the driver's ``suggest`` answered now (its state
        update, ``suggested``, goes into ``update``); None when suggest fails (the plain refusal then)."""
        answer = self.run.suggestion()
        if answer is None:
            return None
        offered, suggested = answer
        update.update(suggested)
        head = f"not run: nothing was suggested since the last {getattr(self.driver, 'unit', 'action')}. " \
            "suggest's candidates now:\n"
        tail = f"\nCall {name} with one of them."
        return head + offered[:max(self.run.profile.result_chars - len(head) - len(tail), 0)] + tail

    def unsuggested(self, state: Any) -> bool:
        """Whether the driver's first action picks a suggested candidate and none is suggested since the last action."""
        return bool(getattr(self.driver, "pick_needs_suggest", False)) and not state.get("suggested")


class Step(_Middleware):
    """One model step with the guards around it (see the module docstring)."""

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        state: Any = request.state
        run = self.run
        counts, since = {**new_counts(), **state.get("counts", {})}, state.get("since_action", 0)
        restore = getattr(self.driver, "restore", None)
        if restore is not None:  # the driver's view of the state (its pending suggestions) is the checkpoint's
            restore(state)
        if since >= run.max_steps:
            return self._default(state, counts, since, f"{run.max_steps} steps without a valid "
                                 f"{' or '.join(self.driver.actions)}")
        counts["steps"] += 1
        tools = run.tools()
        profile = run.profile
        if profile.suggest_first and self.unsuggested(state):
            # the action that picks a suggested candidate, with none suggested since the last action, can only be
            # refused: it is not offered to a small model (SmolLM2 called it first, then suggest, 45 steps for 11
            # trials). A full-profile model sees the same tools every step (its prompt cache keeps the prefix).
            tools = [t for t in tools if t.name != self.driver.actions[0]] or tools
        if state.get("repeated"):  # it repeated itself: see the candidates, or run one (still its choice)
            tools = [t for t in tools if t.name in (self.driver.actions[0], "suggest")] or tools
        try:
            with span("agent.act", {"agent.step": counts["steps"], "agent.model": run.model.name}):
                shown = window(request.messages, state.get("head", 2), run.keep) if run.profile.window \
                    else request.messages  # a strong model sees the whole conversation
                response = handler(request.override(tools=list(tools), messages=shown))
        except LLMError as exc:  # the route failed outright: a failed call (its invalid replies counted too)
            counts["failed_calls"] += 1
            counts["invalid_tool_calls"] += getattr(exc, "invalid_replies", 0)
            attempts = getattr(exc, "attempts", [])  # the route ended on invalid calls: the last one's reason
            why = (f"the model's tool calls were not valid ({attempts[-1][2]})"
                   if attempts and attempts[-1][1] == "invalid_tool_call" and attempts[-1][2]
                   else f"no answer from the model: {exc.kind}: {exc.message}")
            return self._default(state, counts, since + 1, why)
        reply = next(m for m in reversed(response.result) if isinstance(m, AIMessage))
        meta = reply.response_metadata
        tokens = reply.usage_metadata["total_tokens"] if reply.usage_metadata else 0
        counts["tokens"] += tokens
        usage = _prompt_usage(reply)
        counts["prompt_tokens"] += usage["prompt_tokens"]
        counts["cached_tokens"] += usage["cached_tokens"]
        # the largest prompt so far: what the model's context must hold
        counts["largest_prompt_tokens"] = max(counts["largest_prompt_tokens"], usage["prompt_tokens"])
        counts["invalid_tool_calls"] += meta.get("invalid_tool_calls", 0)
        counts["seconds"] += meta.get("seconds", 0.0)
        if not reply.tool_calls:
            if not profile.text_steps:
                return self._default(state, counts, since + 1, "the model called no tool")
            # text between calls is allowed (a full-profile model thinks aloud): the step counts against the
            # budget and the model is told what to do next (Nudge, after the model node)
            counts["idle_steps"] += 1
            run.event("agent_step", step=counts["steps"], tool="", text=summary(str(reply.content)),
                      model=meta.get("model_name", run.model.name), tokens=tokens, **usage,
                      seconds=round(meta.get("seconds", 0.0), 3), invalid=meta.get("invalid_tool_calls", 0))
            return ExtendedModelResponse(ModelResponse([reply]), Command(update={
                "counts": counts, "since_action": since + 1, "repeated": False, "nudge": self.next_step(state)}))
        calls = self.kept_calls(reply.tool_calls)
        counts["tool_calls"] += len(calls)
        for call in calls:
            run.event("agent_step", step=counts["steps"], tool=call["name"],
                      arguments=json.dumps(call["args"], ensure_ascii=False)[:500],  # ± as ±, not \u00b1
                      model=meta.get("model_name", run.model.name),
                      tokens=tokens, **usage, seconds=round(meta.get("seconds", 0.0), 3),
                      invalid=meta.get("invalid_tool_calls", 0))
        update: dict[str, Any] = {"counts": counts, "since_action": since + 1, "repeated": False}
        message = reply.model_copy(update={"tool_calls": calls})
        call = calls[0]
        if call["name"] in self.driver.actions:
            update["answers"] = {}  # an action call ends the repeat watch's window
            action, error = self.driver.check_action(call["args"], call["name"])
            if action is not None and action.get("key") in state.get("declined", []):
                action, error = None, "the user declined this one: choose another"
            if action is not None:
                update["pending"], update["refused"] = {**action, "call_id": call["id"]}, []
            else:
                counts["rejected_calls"] += 1
                key = json.dumps([call["name"], call["args"]], sort_keys=True)
                if key in state.get("refused", []):  # refused the same way before: it would be again and again
                    # (Qwen2.5-Coder-0.5B sent one refused try_config five times running, 5 s each)
                    return self._default(state, counts, since + 1, f"the same call refused again: {error}")
                update["refused"] = [*state.get("refused", []), key]
                text = f"not run: {error}"[:profile.result_chars]
                if call["name"] == self.driver.actions[0] and self.unsuggested(state):
                    # a pick with nothing to pick from: the candidates come with the refusal, so the next step can
                    # pick one (Qwen2.5-Coder-0.5B called it again and again, each call refused, until the default)
                    text = self.refusal_with_candidates(call["name"], update) or text
                update["messages"] = [ToolMessage(text, tool_call_id=call["id"], status="error")]
                run.event("agent_tool", tool=call["name"], summary=summary(text))
        return ExtendedModelResponse(ModelResponse([message]), Command(update=update))

    def kept_calls(self, calls: list[Any]) -> list[Any]:
        """The calls of one step that run: one under a ``one_call`` profile (the next step sees its result); else
        every call up to ``MAX_CALLS``, or the first action call alone (an action ends the step: the trial's result
        is the next thing the model sees)."""
        if self.run.profile.one_call:
            return [calls[0]]
        action = next((c for c in calls if c["name"] in self.driver.actions), None)
        if action is not None:
            return [action]
        distinct: dict[str, Any] = {}  # the same call twice in one step runs once
        for c in calls:
            distinct.setdefault(json.dumps([c["name"], c["args"]], sort_keys=True), c)
        return list(distinct.values())[:MAX_CALLS]

    def _default(self, state: Any, counts: dict[str, Any], since: int, why: str) -> ExtendedModelResponse:
        """The driver's default action, written as a call the agent made (so the conversation stays well formed)."""
        action = self.driver.default_action(why)
        counts["defaulted"] += 1
        call_id = f"call_default_{counts['steps']}"
        message = AIMessage("", tool_calls=[{"name": self.driver.actions[0], "args": action.get("args", {}),
                                             "id": call_id, "type": "tool_call"}])
        self.run.event("agent_default", why=why[:300],
                       action=summary(json.dumps(action.get("args", {}), ensure_ascii=False)))
        return ExtendedModelResponse(ModelResponse([message]), Command(update={
            "counts": counts, "since_action": since, "answers": {}, "repeated": False, "refused": [],
            "pending": {**action, "call_id": call_id, "default": why}}))


class Approval(_Middleware):
    """Before the pending action runs: an interrupt answered by the approver (``AgentRun.advance``). "edit" changes
    the proposal shown (its params updated by the edit's changes) and checks it again; "no" declines it for good."""

    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        pending = state.get("pending")
        if self.run.approver is None or not pending:
            return None
        refused, events = "", []
        # An edit that is not valid goes back to the person with the reason, not to the model. LangGraph replays
        # the node's earlier interrupts on each resume, so the events are written once, when the node completes.
        while True:
            shown = {**pending, "refused_edit": refused} if refused else pending
            answer = interrupt({"kind": "approve", "action": shown}) or {}
            verdict, note = answer.get("answer", "yes"), answer.get("note")
            changes = (answer.get("args") or {}).get("changes") if verdict == "edit" else None
            events.append(("agent_approval", {"answer": verdict, "note": str(note or "")[:300],
                                              **({"changes": changes} if changes else {})}))
            if verdict != "edit":
                break
            args = dict(answer.get("args") or {})
            if isinstance(args.get("changes"), dict) and isinstance(pending.get("params"), dict):
                args["changes"] = {**pending["params"], **args["changes"]}  # the proposal shown, edited
            action, error = self.driver.check_action(args, pending.get("tool"))
            if action is not None:
                self._write(events)
                return {"pending": {**action, "call_id": pending["call_id"], "edited": True}}
            refused = error or "not a valid config"
            events.append(("agent_edit_refused", {"error": refused[:300]}))
        self._write(events)
        if verdict == "yes":
            return None
        declined = list(state.get("declined", []))
        if pending.get("key") and pending["key"] not in declined:
            declined.append(pending["key"])  # never proposed again: refused in Step, not drawn again
        decline = getattr(self.driver, "decline", None)
        if decline is not None:
            decline(pending, str(note or "")[:300])
        text = "the user declined this; propose something else"
        message = ToolMessage(text + (f". The user says: {note}" if note else ""), tool_call_id=pending["call_id"])
        return {"messages": [message], "pending": None, "since_action": 0, "declined": declined, "suggested": []}

    def _write(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, fields in events:
            self.run.event(kind, **fields)


class Nudge(_Middleware):
    """After a step that called no tool (allowed under a profile with ``text_steps``, ``full``): back to the model
    with what to do next (``next_step``); the step counted against the budget, so ``max_steps`` such steps run the
    default action."""

    @hook_config(can_jump_to=["model"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        nudge = state.get("nudge")
        if not nudge:
            return None
        return {"jump_to": "model", "nudge": None, "messages": [HumanMessage(nudge)]}


class Tools(_Middleware):
    """Runs the driver's tools (given per step, so they are not registered with the tool node) and watches for
    repeats: an identical call since the last action gets its earlier answer, not a second run."""

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], ToolMessage | Command]) -> ToolMessage | Command:
        call, state = request.tool_call, request.state
        tool = next((t for t in self.run.tools() if t.name == call["name"]), None)
        if call["name"] in self.driver.actions:
            return handler(request.override(tool=tool))
        key = json.dumps([call["name"], call["args"]], sort_keys=True)
        answers = dict(state.get("answers", {}))
        if key in answers:  # a repeated call gathers nothing new: the same answer again, and a push to decide;
            # a small model (repeat_watch) is then offered only suggest and the action
            action = self.driver.actions[0]
            head = f"you made this same call already since the last {action}; its answer was: "
            none = self.unsuggested(state)
            tail = ("\nDecide now: call suggest, then " if none else "\nDecide now: call ") + \
                f"{action} with one of the suggested candidates."
            text = head + answers[key][:self.run.profile.result_chars - len(head) - len(tail)] + tail
            self.run.event("agent_tool", tool=call["name"], summary=summary("repeated call: " + answers[key]))
            return Command(update={"messages": [ToolMessage(text, tool_call_id=call["id"])],
                                   "repeated": self.run.profile.repeat_watch})
        if tool is None:
            counts = {**new_counts(), **state.get("counts", {})}
            counts["rejected_calls"] += 1
            text = f"error: unknown tool {call['name']!r}"
            self.run.event("agent_tool", tool=call["name"], summary=text)
            return Command(update={"messages": [ToolMessage(text, tool_call_id=call["id"], status="error")],
                                   "counts": counts})
        out = handler(request.override(tool=tool))
        update = dict(out.update) if isinstance(out, Command) and isinstance(out.update, dict) else {"messages": [out]}
        message: Any = update["messages"][-1]
        if call["name"] in getattr(self.driver, "bookkeeping", ()):  # a plan or a note gathers nothing new
            message = message.model_copy(update={"content": self.next_step(state, str(message.content) + ".")})
            update["messages"] = [*update["messages"][:-1], message]
        self.run.event("agent_tool", tool=call["name"], summary=summary(str(message.content)))
        if message.status != "error":
            update["answers"] = {key: str(message.content)}
        return Command(update=update)


def _prompt_usage(reply: AIMessage) -> dict[str, int]:
    """A step's prompt tokens and those of them the model read from its cache (prompt reuse: the step's cost is
    roughly that of the others, its new tokens)."""
    if not reply.usage_metadata:
        return {"prompt_tokens": 0, "cached_tokens": 0}
    usage = reply.usage_metadata
    cached = (usage.get("input_token_details") or {}).get("cache_read", 0) or 0
    return {"prompt_tokens": usage["input_tokens"], "cached_tokens": cached}


def as_langchain(run: AgentRun, tool: Tool) -> StructuredTool:
    """A driver's tool as a LangChain tool whose arguments' schema is the tool's JSON schema. Its answer is the
    ``run`` function's text (with a state update when it returns one: todo, notes); the action's runs the trial.
    Results are cut at the model's profile's ``result_chars``."""
    chars = run.profile.result_chars
    if tool.name in run.driver.actions:
        def act(runtime: ToolRuntime, **args: Any) -> Command:
            pending = runtime.state.get("pending")
            assert pending is not None, "an action call reaches the tool node only once checked (Step)"
            result = str(interrupt({"kind": "execute", "action": pending}))[:chars]
            run.event("agent_observe", summary=summary(result))
            reflection = run.reflect(runtime.state)
            # the next candidates come with the result: a pick needs no suggest step of its own (Qwen2.5-Coder-0.5B
            # picked straight after each result, was refused with the candidates, then picked: two calls a trial)
            answer = run.suggestion() if getattr(run.driver, "pick_needs_suggest", False) else None
            offered, suggested = answer or ("", {"suggested": []})
            if offered:
                head = f"\n\nthe candidates for the next {getattr(run.driver, 'unit', 'action')}:\n"
                result += (head + offered)[:max(chars - len(result), 0)]
            return Command(update={"pending": None, "since_action": 0, **suggested, "messages": [
                ToolMessage(result, tool_call_id=runtime.tool_call_id),
                *([HumanMessage(reflection)] if reflection else [])]})
        func: Callable[..., Any] = act
    else:
        def answer(runtime: ToolRuntime, **args: Any) -> ToolMessage | Command:
            assert tool.run is not None  # AgentRun.tools offers only the tools that run
            try:
                with span("agent.tool", {"agent.tool": tool.name}):
                    out = tool.run(args)
            except AgentlabError as exc:
                return ToolMessage(f"error: {exc.message}"[:chars], tool_call_id=runtime.tool_call_id,
                                   status="error")
            text, update = (out, {}) if isinstance(out, str) else out
            message = ToolMessage(text[:chars], tool_call_id=runtime.tool_call_id)
            return Command(update={**update, "messages": [message]}) if update else message
        func = answer
    return StructuredTool(name=tool.name, description=tool.description, args_schema=tool.parameters, func=func)


def build(run: AgentRun, checkpointer: BaseCheckpointSaver) -> Any:
    """The agent's graph: create_agent on ``run.model`` with the middleware above, checkpointed."""
    middleware = [Step(run), Approval(run), Nudge(run), Tools(run)]
    return create_agent(AgentlabChatModel(agent=run.model), middleware=middleware, checkpointer=checkpointer)


@dataclass
class AgentRun:
    """One agent (``harness.build``: create_agent and its middleware) over a checkpoint file. ``advance(result)``
    resumes it with the last action's result (None the first time) and returns the next action; ``approver(action)
    -> answer`` answers approvals (None: no approval asked). ``on_event(kind, **fields)`` receives each step
    (events.jsonl)."""

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

    @property
    def profile(self) -> ModelProfile:
        """The planner model's profile: which of the guards it gets (the window, the repeat watch)."""
        return profile_of(self.model)

    def event(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, **fields)

    def tools(self) -> list[Any]:
        """The driver's tools of this step as LangChain tools (the schemas may change: the candidates' indices)."""
        actions = self.driver.actions
        return [as_langchain(self, t) for t in self.driver.tools() if t.run is not None or t.name in actions]

    def suggestion(self) -> tuple[str, dict[str, Any]] | None:
        """The driver's ``suggest`` answered now: its text and state update (``suggested``); None when the driver
        has no suggest or it fails."""
        tool = next((t for t in self.driver.tools() if t.name == "suggest"), None)
        if tool is None or tool.run is None:
            return None
        try:
            out = tool.run({})
        except AgentlabError:
            return None
        return (out, {}) if isinstance(out, str) else out

    def reflect(self, state: dict[str, Any]) -> str:
        """What the model is told after each action: its todo and the driver's reflection."""
        todo = state.get("todo") or []
        return "\n".join(filter(None, ["your todo: " + "; ".join(todo[:5]) if todo else "", self.driver.reflect()]))

    def open(self) -> None:
        if self._app is None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
            self._app = build(self, SqliteSaver(self._conn))

    def _config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.thread}, "recursion_limit": 8 * self.max_steps + 40}

    def _values(self) -> dict[str, Any]:
        self.open()
        return dict(self._app.get_state(self._config()).values)

    def pending(self) -> dict[str, Any] | None:
        """The interrupt the graph waits at ({"kind": "execute" | "approve", "action": ...}), or None."""
        self.open()
        interrupts = self._app.get_state(self._config()).interrupts
        return interrupts[0].value if interrupts else None

    def advance(self, result: str | None) -> dict[str, Any]:
        """Resume with ``result`` (the pending action's outcome; None when nothing waits: the first call) and run the
        agent to the next action to execute, answering approvals on the way; returns that action."""
        from langgraph.types import Command

        waiting = self.pending()
        if waiting is None:
            # a fresh thread starts with the brief; one stopped between checkpoints (killed during a model step)
            # continues from its last one
            value: Any = None
            messages = self._values().get("messages") or []
            if messages and isinstance(messages[0], dict):
                raise AgentlabError(f"{self.path} holds an agent written by an earlier agentlab (its own graph, before "
                                    "LangChain's create_agent), which this one cannot continue",
                                    hint=f"move {self.path.name} out of the run folder and resume: the agent starts "
                                    "afresh from the study, whose trials are all kept")
            if not messages:
                brief = self.driver.brief()
                self.event("agent_plan", messages=len(brief), summary=summary(brief[-1]["content"]))
                value = {"messages": brief, "head": len(brief)}
        elif waiting["kind"] == "execute":
            if result is None:
                return dict(waiting["action"])  # nothing new: the same action is still to run (a resumed search)
            value = Command(resume=result)
        else:
            value = Command(resume=self._ask(waiting["action"]))
        while True:
            # durability "sync": each step is on disk before the next one starts (a kill -9 loses at most the step it
            # interrupts); LangGraph's default writes in the background while the next step runs
            out = self._app.invoke(value, self._config(), durability="sync")
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
        """The agent's counters (steps, tool_calls, invalid_tool_calls, ...) and seconds spent by the model."""
        counts = {**new_counts(), **self._values().get("counts", {})}
        seconds = counts.pop("seconds")
        return {**counts, "model_seconds": round(seconds, 3)}

    def declined(self) -> list[str]:
        """The keys of the actions the user declined (--approve), kept in the checkpoint."""
        return list(self._values().get("declined") or [])

    def memory(self) -> dict[str, list[str]]:
        """The agent's todo and notes, kept in the checkpoint."""
        values = self._values()
        return {"todo": list(values.get("todo") or []), "notes": list(values.get("notes") or [])}

    def messages(self) -> list[dict[str, Any]]:
        """The conversation as OpenAI-style dicts."""
        return to_messages(self._values().get("messages", []))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn, self._app = None, None

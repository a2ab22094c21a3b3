"""The debate as a LangGraph state machine: ``agents -> metrics -> (next round | judge | END)``.

One debate is one graph run (a thread)::

    START --next--> agents --> metrics --next--> agents        (another round)
                                              \\-> judge --> END (a judge decides or sums up)
                                              \\-> END

- ``agents``: every agent answers round ``k`` concurrently (``engine.ask``; an in-process backend batches them);
  round 0 is the independent answers, round k shows each agent the others' round k-1 answers (Du et al. 2023);
- ``metrics``: the round joins the finished rounds; ``on_round(k, answers)`` runs (``agentlab debate``: the
  transcript, the ``round`` event with the vote and agreement, the console line);
- ``next`` (the vote's edge): another round while fewer than ``rounds + 1`` are done, unless the decision ``rule``
  (``DebateSettings.rule``) needs none after round 0 (``rules.stops_after_round0``); then the ``judge`` when one is
  asked, else END; END at once when every agent's call of the last round failed and ``stop_on_failure`` is set.

The state holds the finished rounds as plain dicts (``Answer.to_dict``), so a checkpointer can store it: with
``checkpoint`` (a file, ``agentlab debate``'s ``debate.sqlite`` in the run folder) LangGraph's SQLite checkpointer
saves it after every node (``durability="sync"``: written before the next node starts, so a kill -9 loses at most
the node it hits), and a run killed mid-round continues from the last finished node (the round being asked
is asked again). Without one (``debate eval``, evolve's cooperation debate) the graph runs in memory.

The nodes do what the engine's loop did, in the same order, so the same seeds and greedy decoding give byte-identical
transcripts and decisions (``tests/debate/test_debate_graph.py`` against answers recorded from that loop).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from agentlab.core.debate.answers import Answer, Round, all_failed
from agentlab.core.debate.engine import Panel, ask, judge, others_of
from agentlab.core.debate.protocol import Kind, conversation
from agentlab.core.debate.rules import stops_after_round0
from agentlab.core.errors import InputError

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

THREAD = "debate"
OnRound = Callable[[int, Round], Awaitable[None] | None]


class DebateState(TypedDict, total=False):
    rounds: list[list[dict[str, Any]]]  # finished rounds, each agent's Answer.to_dict()
    asked: list[dict[str, Any]]  # the round the agents just answered, before metrics takes it
    verdict: dict[str, Any] | None  # the judge's reply


@dataclass(frozen=True)
class DebateSettings:
    """How each round is asked (sampling, the prompts' ``style``, what an agent is shown of the others: ``visibility``)
    and the decision ``rule`` that may end the rounds after round 0 (None: every round is asked); ``stop_on_failure``:
    no further round (nor the judge) once every agent's call of a round failed (``agentlab debate``)."""

    temperature: float
    max_tokens: int
    style: str = "format"
    visibility: str = "full"
    rule: str | None = None
    stop_on_failure: bool = False


@dataclass
class Debate:
    """One question's debate: what the nodes need besides the state (never stored in a checkpoint)."""

    router: Router
    panel: Panel
    question: str
    kind: Kind
    rounds: int
    settings: DebateSettings
    ask_judge: bool = False
    on_round: OnRound | None = None

    def graph(self, checkpointer: Any = None) -> Any:
        from langgraph.graph import END, START, StateGraph

        builder = StateGraph(DebateState)
        builder.add_node("agents", self.agents)
        builder.add_node("metrics", self.metrics)
        builder.add_node("judge", self.judge)
        routes: dict[Hashable, str] = {"agents": "agents", "judge": "judge", END: END}
        builder.add_conditional_edges(START, self.next, routes)
        builder.add_edge("agents", "metrics")
        builder.add_conditional_edges("metrics", self.next, routes)
        builder.add_edge("judge", END)
        return builder.compile(checkpointer=checkpointer)

    def next(self, state: DebateState) -> str:
        from langgraph.graph import END

        finished = state.get("rounds") or []
        rule = self.settings.rule
        if finished and self.settings.stop_on_failure and all_failed(_answers(finished[-1])):
            return END
        more = len(finished) <= self.rounds and not (
            finished and rule is not None and stops_after_round0(rule, _answers(finished[0])))
        if more:
            return "agents"
        return "judge" if self.ask_judge and finished else END

    async def agents(self, state: DebateState) -> DebateState:
        finished = [_answers(r) for r in state.get("rounds") or []]
        own = {a.name: [x.text for r in finished for x in r if x.agent == a.name] for a in self.panel.agents}
        s = self.settings
        asks = [ask(self.router, agent, conversation(self.question, self.kind, own[agent.name],
                                                     others_of(finished, agent.name, s.visibility),
                                                     s.style),  # type: ignore[arg-type]
                    self.kind, temperature=s.temperature, max_tokens=s.max_tokens)
                for agent in self.panel.agents]
        answers = list(await asyncio.gather(*asks))
        return {"asked": [a.to_dict() for a in answers]}

    async def metrics(self, state: DebateState) -> DebateState:
        finished = list(state.get("rounds") or [])
        asked = state.get("asked") or []
        finished.append(asked)
        if self.on_round is not None:
            result = self.on_round(len(finished) - 1, _answers(asked))
            if asyncio.iscoroutine(result):
                await result
        return {"rounds": finished, "asked": []}

    async def judge(self, state: DebateState) -> DebateState:
        last = _answers((state.get("rounds") or [[]])[-1])
        reply = await judge(self.router, self.panel, self.question, self.kind, last,
                            max_tokens=self.settings.max_tokens)
        return {"verdict": reply.to_dict()}

    def limit(self) -> int:
        """LangGraph's recursion limit for this debate: two steps a round, the judge, room to spare."""
        return 2 * (self.rounds + 1) + 10

    async def run(self, done: list[Round] | None = None, checkpoint: Path | None = None
                  ) -> tuple[list[Round], Answer | None]:
        """The finished rounds (``done`` and those asked now) and the judge's reply (None when none was asked).
        With ``checkpoint``: continue its thread where it stopped (``done`` only starts a thread it lacks)."""
        start: DebateState = {"rounds": [[a.to_dict() for a in r] for r in done or []], "asked": [], "verdict": None}
        config: dict[str, Any] = {"recursion_limit": self.limit()}
        if checkpoint is None:
            final = await self.graph().ainvoke(start, config)
            return _result(final)
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        config["configurable"] = {"thread_id": THREAD}
        async with AsyncSqliteSaver.from_conn_string(str(checkpoint)) as saver:
            app = self.graph(saver)
            snapshot = await app.aget_state(config)
            if snapshot.next:  # stopped inside the graph: go on from the last node that finished
                final = await app.ainvoke(None, config, durability="sync")
            elif snapshot.values.get("rounds") is None:  # a new thread (or a run folder of an earlier agentlab)
                final = await app.ainvoke(start, config, durability="sync")
            elif self.next(snapshot.values) == "agents":  # a finished thread given more rounds now
                final = await app.ainvoke({"verdict": None}, config, durability="sync")
            else:  # a finished thread: nothing left to ask
                final = dict(snapshot.values)
        return _result(final)


async def saved_rounds(checkpoint: Path) -> list[Round]:
    """The finished rounds that the debate's checkpoint file holds ([] when it holds none), read without running the
    graph: a resume compares them with the transcript before anything is asked or written. A file that is no SQLite
    checkpoint (overwritten, cut short) is ``InputError`` naming it: deleting it resumes from the transcript."""
    if not checkpoint.is_file():
        return []
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    try:
        async with AsyncSqliteSaver.from_conn_string(str(checkpoint)) as saver:
            saved = await saver.aget_tuple({"configurable": {"thread_id": THREAD}})
        rows = (saved.checkpoint.get("channel_values") or {}).get("rounds") if saved is not None else None
        return [_answers(r) for r in rows or []]
    except (sqlite3.DatabaseError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"{checkpoint}: not a readable debate checkpoint ({type(exc).__name__}: {exc})",
                         hint=f"delete it ({checkpoint.name}): --resume then continues from the transcript, and "
                         "only the rounds missing from it are asked again") from None


def _answers(rows: list[dict[str, Any]]) -> Round:
    return [Answer.from_dict(row) for row in rows]


def _result(state: dict[str, Any]) -> tuple[list[Round], Answer | None]:
    verdict = state.get("verdict")
    reply = None
    if verdict is not None:
        reply = Answer.from_dict(verdict)
    return [_answers(r) for r in state.get("rounds") or []], reply


async def debate_rounds(router: Router, panel: Panel, question: str, kind: Kind, rounds: int, settings: DebateSettings,
                        *, done: list[Round] | None = None, on_round: OnRound | None = None) -> list[Round]:
    """The rounds of :func:`debate_graph` without a judge or a checkpoint (``debate eval``, evolve)."""
    finished, _ = await debate_graph(router, panel, question, kind, rounds, settings, done=done, on_round=on_round)
    return finished


async def debate_graph(router: Router, panel: Panel, question: str, kind: Kind, rounds: int, settings: DebateSettings,
                       *, done: list[Round] | None = None, on_round: OnRound | None = None, ask_judge: bool = False,
                       checkpoint: Path | None = None) -> tuple[list[Round], Answer | None]:
    """Rounds ``len(done)`` .. ``rounds`` of one question on the graph (round 0: the independent answers), asked as
    ``settings`` says, then the judge when ``ask_judge``; ``settings.rule`` ``on_disagreement`` (or ``vote``) stops
    after a unanimous (any) round 0. ``checkpoint``: the SQLite file the graph's state is saved to after every node,
    and continued from."""
    debate = Debate(router, panel, question, kind, rounds, settings, ask_judge, on_round)
    return await debate.run(done, checkpoint)

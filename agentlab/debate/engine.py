"""One question debated: rounds of concurrent answers, the vote per round, the judge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from agentlab.core.vote import Ballot, Tally, tally
from agentlab.debate.agents import Agent, Answer, Panel, ask
from agentlab.debate.protocol import Kind, conversation, first_prompt, judge_prompt, parse_reply

Round = list[Answer]


def others_of(rounds: list[Round], agent: str) -> list[list[tuple[str, str]]]:
    """For each finished round, the other agents' answers as ``(name, text)``."""
    return [[(a.agent, a.text) for a in answers if a.agent != agent] for answers in rounds]


async def debate_rounds(router: Any, panel: Panel, question: str, kind: Kind, rounds: int, *,
                        temperature: float, max_tokens: int, done: list[Round] | None = None, style: str = "format",
                        on_round: Callable[[int, Round], Awaitable[None] | None] | None = None) -> list[Round]:
    """Rounds ``len(done)`` .. ``rounds`` (round 0 is the independent answers); each round's answers are asked
    concurrently, so an in-process backend generates them as one batch. ``on_round(k, answers)`` runs after each."""
    finished: list[Round] = list(done or [])
    for number in range(len(finished), rounds + 1):
        own = {agent.name: [a.text for r in finished for a in r if a.agent == agent.name] for agent in panel.agents}
        asks = [ask(router, agent, conversation(question, kind, own[agent.name], others_of(finished, agent.name),
                                                style),  # type: ignore[arg-type]
                    kind, temperature=temperature, max_tokens=max_tokens) for agent in panel.agents]
        answers = list(await asyncio.gather(*asks))
        finished.append(answers)
        if on_round is not None:
            result = on_round(number, answers)
            if asyncio.iscoroutine(result):
                await result
    return finished


def ballots(answers: Round) -> list[Ballot]:
    return [Ballot(a.agent, a.answer, a.confidence) for a in answers]


def vote(answers: Round, method: str) -> Tally:
    """The vote of one round (``judge`` decides elsewhere; its rounds are shown with the ReConcile vote)."""
    return tally(ballots(answers), "reconcile" if method == "judge" else method)  # type: ignore[arg-type]


async def judge(router: Any, panel: Panel, question: str, kind: Kind, answers: Round, *,
                max_tokens: int) -> Answer:
    """The judge's reply on the last round: a decision (numeric) or a summary with a stance (open)."""
    judge_agent = Agent("judge", panel.judge, {}, False, panel.judge_source)
    shown = [(a.agent, a.text) for a in answers]
    messages = [{"role": "user", "content": judge_prompt(question, kind, shown)}]
    reply = await ask(router, judge_agent, messages, kind, temperature=0.0, max_tokens=max(max_tokens, 160))
    if reply.error is None:
        reply.answer, reply.confidence = parse_reply(reply.text, kind)
    return reply


async def samples(router: Any, panel: Panel, question: str, kind: Kind, n: int, *, temperature: float,
                  max_tokens: int, style: str = "format") -> list[Answer]:
    """Self-consistency: ``n`` independent round-0 answers at ``temperature``, cycling over the agents."""
    messages = [{"role": "user", "content": first_prompt(question, kind, style)}]  # type: ignore[arg-type]
    agents = [panel.agents[i % len(panel.agents)] for i in range(n)]
    return list(await asyncio.gather(*(ask(router, agent, messages, kind, temperature=temperature,
                                            max_tokens=max_tokens) for agent in agents)))

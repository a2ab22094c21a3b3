"""Decision rules of a debate: which rounds' answers decide, and when later rounds are asked at all.

Most of what multi-agent debate gains over one agent is the vote ("Debate or Vote", Choi et al. 2025; "Should we be
going MAD?", Smit et al. 2024), and small models shown the others' answers can drift away from a right round 0. So
the final answer is one of these rules, over the rounds of one debate (round 0: the independent answers):

- ``vote``: the vote of round 0 alone; no debate round is asked (on the built-in SmolLM2 personas every rule that
  debates fell below it on at least one of the three tasks of ``benchmarks/debate_rules.py``);
- ``last_round``: the vote of the last round (Du et al. 2023);
- ``all_rounds``: one vote over every answer of every round, each weighted by the vote method (``reconcile``:
  ReConcile's binned confidences, Chen et al. 2024);
- ``on_disagreement``: the debate runs only for questions whose round 0 is split; a unanimous round 0 stops there
  (its answer, and no further compute), a split one is decided by the last round's vote;
- ``keep_round0``: the round-0 vote, unless the last round converged (every agent gave the same answer), then that.

"Unanimous" / "converged": every agent gave a parseable answer and all of them are one vote (``core.vote.canonical``).
:func:`decide` is pure: it takes finished rounds. Which of them is the default of ``agentlab debate`` is measured by
``benchmarks/debate_rules.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentlab.core.debate.answers import Answer, ballots, vote
from agentlab.core.vote import Tally, canonical, normalise, tally

Rule = Literal["vote", "last_round", "all_rounds", "on_disagreement", "keep_round0"]
RULES: tuple[str, ...] = ("vote", "last_round", "all_rounds", "on_disagreement", "keep_round0")
# What the agents see of each other's previous answers in a debate round.
Visibility = Literal["full", "answer", "answer_confidence"]
VISIBILITIES: tuple[str, ...] = ("full", "answer", "answer_confidence")


@dataclass
class Decision:
    tally: Tally
    rounds_used: int  # rounds whose answers were needed (on_disagreement: 1 when round 0 is unanimous)

    @property
    def winner(self) -> str | None:
        return self.tally.winner


def unanimous(answers: list[Answer]) -> bool:
    """Every agent answered and all answers are one vote (grouped as :func:`core.vote.tally` groups them)."""
    if not answers or any(a.answer is None for a in answers):
        return False
    keys = [normalise(str(a.answer)) for a in answers]
    votes = canonical(keys)  # "that be Lima, sailor" is "Lima"
    return len({votes[k] for k in keys}) == 1


def _vote(answers: list[Answer], method: str) -> Tally:
    return vote(answers, method)


def decide(rule: str, rounds: list[list[Answer]], method: str = "reconcile") -> Decision:
    """The decision of ``rule`` over finished ``rounds`` (at least round 0), votes weighted by ``method``."""
    if not rounds:
        raise ValueError("no rounds to decide from")
    if rule == "vote":
        return Decision(_vote(rounds[0], method), 1)
    if rule == "last_round":
        return Decision(_vote(rounds[-1], method), len(rounds))
    if rule == "all_rounds":
        every = [b for answers in rounds for b in ballots(answers)]
        return Decision(tally(every, "reconcile" if method == "judge" else method), len(rounds))  # type: ignore[arg-type]
    if rule == "on_disagreement":
        if unanimous(rounds[0]):
            return Decision(_vote(rounds[0], method), 1)
        return Decision(_vote(rounds[-1], method), len(rounds))
    if rule == "keep_round0":
        if len(rounds) > 1 and unanimous(rounds[-1]):
            return Decision(_vote(rounds[-1], method), len(rounds))
        return Decision(_vote(rounds[0], method), len(rounds))
    raise ValueError(f"unknown decision rule {rule!r} (use one of {', '.join(RULES)})")


def stops_after_round0(rule: str, round0: list[Answer]) -> bool:
    """Whether ``rule`` needs no debate round after this round 0 (``vote`` never does, ``on_disagreement`` not after
    a unanimous one)."""
    return rule == "vote" or (rule == "on_disagreement" and unanimous(round0))


def shown(answer: Answer, visibility: str) -> str:
    """What the other agents see of ``answer``: its full text, its parsed answer, or the answer with its
    confidence."""
    if visibility == "full":
        return answer.text
    if answer.answer is None:
        return "(no answer)"
    if visibility == "answer_confidence" and answer.confidence is not None:
        return f"{answer.answer} (confidence {answer.confidence:.0%})"
    return str(answer.answer)

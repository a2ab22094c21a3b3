"""Votes over several agents' answers, shared by the pipeline's ``vote`` stage and ``agentlab debate``. Pure functions.

- :func:`normalise`: the form answers are compared in (case, spaces, trailing punctuation; numbers canonical, so
  ``"56."``, ``" 56 "`` and ``"56.0"`` are one vote).
- :func:`tally`: a vote over :class:`Ballot`\\ s. A long answer (more than ``SHORT_WORDS`` words) that names
  exactly one of the short answers given as whole words votes for it: ``"Arr, that be Lima, matey"`` and ``"Lima"``
  are one vote (the rule by which ``core.debate.task.is_correct`` accepts a text answer), so agents that phrase the
  same answer differently are not split. ``method``:

  - ``majority``: one ballot, one vote;
  - ``confidence``: each ballot weighs its own confidence (0-1);
  - ``reconcile``: confidences binned as ReConcile does (Chen et al., ACL 2024): 1.0 -> 1.0, [0.9, 1) -> 0.8,
    [0.8, 0.9) -> 0.5, (0.6, 0.8) -> 0.3, else 0.1, because raw self-reported confidences are over-confident and
    bunched near the top.

  A ballot without an answer (``answer=None``: nothing parseable) is no vote: it is counted in ``no_votes`` and
  never picked. A ballot with an answer but no confidence weighs 0.5 under ``confidence`` and ``reconcile``.
  Ties (equal weight) go to the answer with more ballots, then to the answer given first in ballot order; ``tie``
  says a tie was broken. With no answer at all the winner is ``None``.
- :func:`wilson_interval`: the 95% confidence interval of an accuracy.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

VoteMethod = Literal["majority", "confidence", "reconcile"]
VOTE_METHODS: tuple[str, ...] = ("majority", "confidence", "reconcile")
MISSING_CONFIDENCE = 0.5
SHORT_WORDS = 4  # an answer of at most this many words can be named inside a longer one

_TRAILING = string.punctuation + "…。！？、，；： \t\n"
_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")


def normalise(text: str) -> str:
    """The form answers are compared in: ``" Paris. "`` and ``"paris"`` are the same vote, so are ``"1,000"`` and
    ``"1000.0"``."""
    collapsed = re.sub(r"\s+", " ", text.strip().casefold()).rstrip(_TRAILING).strip()
    if _NUMBER.fullmatch(collapsed):
        value = float(collapsed.replace(",", ""))
        return str(int(value)) if value.is_integer() else repr(value)
    return collapsed


def reconcile_weight(confidence: float) -> float:
    """ReConcile's recalibration of a self-reported confidence (0-1) into a vote weight."""
    if confidence >= 1.0:
        return 1.0
    if confidence >= 0.9:
        return 0.8
    if confidence >= 0.8:
        return 0.5
    if confidence > 0.6:
        return 0.3
    return 0.1


@dataclass(frozen=True)
class Ballot:
    voter: str
    answer: str | None  # None: nothing parseable, no vote
    confidence: float | None = None  # 0-1, as the agent said
    text: str = ""  # the wording to show for this answer (default: the answer)


def weight(ballot: Ballot, method: VoteMethod) -> float:
    if ballot.answer is None:
        return 0.0
    if method == "majority":
        return 1.0
    if ballot.confidence is None:  # the weight of an answer that states none, under either method
        return MISSING_CONFIDENCE
    confidence = min(1.0, max(0.0, ballot.confidence))
    return reconcile_weight(confidence) if method == "reconcile" else confidence


@dataclass
class Tally:
    winner: str | None  # the normalised answer that won, None when nobody voted
    text: str | None  # the winning answer in the words of its first voter
    tie: bool
    no_votes: int
    method: str
    groups: list[dict[str, Any]] = field(default_factory=list)  # [{answer, text, weight, count, voters}], best first

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "text": self.text, "tie": self.tie, "no_votes": self.no_votes,
                "method": self.method, "votes": self.groups}

    def share(self) -> float:
        """The winner's share of all ballots that voted (agreement): 1.0 when everyone agrees."""
        voted = sum(g["count"] for g in self.groups)
        return self.groups[0]["count"] / voted if voted and self.winner is not None else 0.0


def _names(text: str, key: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(key) + r"(?!\w)", text) is not None


def canonical(keys: Sequence[str]) -> dict[str, str]:
    """Each normalised answer's vote: a long one (more than ``SHORT_WORDS`` words) that names exactly one of the
    short ones as whole words (the most specific: ``new delhi`` over ``delhi``) goes to it; every other to itself."""
    short = {k for k in keys if len(re.findall(r"\w+", k)) <= SHORT_WORDS}
    out = {}
    for key in keys:
        hits = [] if key in short else [s for s in short if _names(key, s)]
        hits = [h for h in hits if not any(h != o and _names(o, h) for o in hits)]
        out[key] = hits[0] if len(hits) == 1 else key
    return out


def tally(ballots: Sequence[Ballot], method: VoteMethod = "majority") -> Tally:
    """The vote (see the module docstring for the grouping, the weights and the tie rule)."""
    if method not in VOTE_METHODS:
        raise ValueError(f"unknown vote method {method!r} (use one of {', '.join(VOTE_METHODS)})")
    groups: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    no_votes = 0
    keys = [normalise(b.answer) if b.answer is not None else "" for b in ballots]
    votes = canonical([k for k in keys if k])
    for ballot, key in zip(ballots, keys, strict=True):
        if not key:
            no_votes += 1
            continue
        key = votes[key]
        if key not in groups:
            order.append(key)
            groups[key] = {"answer": key, "text": (ballot.text or ballot.answer or "").strip(), "weight": 0.0,
                           "count": 0, "voters": []}
        group = groups[key]
        group["weight"] += weight(ballot, method)
        group["count"] += 1
        group["voters"].append(ballot.voter)
    ranked = sorted(order, key=lambda k: (-round(groups[k]["weight"], 9), -groups[k]["count"], order.index(k)))
    listed = [{**groups[k], "weight": round(groups[k]["weight"], 6)} for k in ranked]
    if not listed:
        return Tally(None, None, False, no_votes, method, [])
    best = listed[0]
    tie = len(listed) > 1 and math.isclose(listed[1]["weight"], best["weight"], abs_tol=1e-9)
    return Tally(best["answer"], best["text"], tie, no_votes, method, listed)


def wilson_interval(correct: float, total: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total`` (95% for z 1.96); ``(0, 1)`` when ``total`` is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)

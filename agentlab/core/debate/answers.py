"""One agent's reply (:class:`Answer`), a round of them, and a round's vote: what the debate's engine and its decision
rules (``rules.py``) share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agentlab.core.vote import Ballot, Tally, tally


@dataclass
class Answer:
    """One reply: what the transcript records."""

    agent: str
    text: str
    answer: str | None
    confidence: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    model: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def shown(self) -> str:
        """The answer as the console and report.md show it: ``failed`` for a failed call, ``-`` for a reply that
        held none."""
        return "failed" if self.error is not None else self.answer if self.answer is not None else "-"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Answer:
        known = {k: data.get(k) for k in ("agent", "text", "answer", "confidence", "model", "error")}
        return cls(**known, prompt_tokens=int(data.get("prompt_tokens") or 0),  # type: ignore[arg-type]
                   completion_tokens=int(data.get("completion_tokens") or 0),
                   seconds=float(data.get("seconds") or 0.0))


Round = list[Answer]


def all_failed(answers: Round) -> bool:
    """Whether every agent's call of a round failed (no reply at all, as opposed to a reply with no answer)."""
    return bool(answers) and all(a.error is not None for a in answers)


def ballots(answers: Round) -> list[Ballot]:
    return [Ballot(a.agent, a.answer, a.confidence) for a in answers]


def vote(answers: Round, method: str) -> Tally:
    """The vote of one round (``judge`` decides elsewhere; its rounds are shown with the ReConcile vote)."""
    return tally(ballots(answers), "reconcile" if method == "judge" else method)  # type: ignore[arg-type]

"""How a multi stage turns several models' answers into one output. Pure functions: no model calls here.

- ``concat``: every answer under a header with its model name, in model order.
- ``vote``: majority over normalised answers (strip, casefold, collapse whitespace, drop trailing punctuation);
  a tie goes to the answer given first in model order; the winning text is that first model's own wording.
- ``synthesis_messages``: the Mixture-of-Agents aggregate-and-synthesise prompt (Wang et al. 2024) for the
  ``aggregator`` model, which the run makes one call with.
- ``render_template``: the stage's Jinja2 ``template`` over the answers, in the sandbox of ``templates``.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from agentlab.core.llm.types import Messages
from agentlab.pipeline.templates import render


@dataclass(frozen=True)
class Answer:
    model: str
    text: str


def concat(answers: list[Answer]) -> str:
    """Answers in model order, each under ``### <model>``."""
    return "\n\n".join(f"### {a.model}\n{a.text.strip()}" for a in answers)


_TRAILING = string.punctuation + "…。！？、，；： \t\n"


def normalise(text: str) -> str:
    """The form answers are compared in: ``" Paris. "`` and ``"paris"`` are the same vote."""
    collapsed = re.sub(r"\s+", " ", text.strip().casefold())
    return collapsed.rstrip(_TRAILING).strip()


def vote(answers: list[Answer]) -> tuple[str, dict[str, Any]]:
    """The majority answer and the tally: ``{"winner": model, "votes": [{answer, count, models}], "tie": bool}``.

    Groups are listed in order of first appearance, so ``max`` (which keeps the first of equal counts) gives ties to
    the earliest model.
    """
    if not answers:
        raise ValueError("vote needs at least one answer")
    groups: dict[str, list[Answer]] = {}
    for answer in answers:
        groups.setdefault(normalise(answer.text), []).append(answer)
    ranked = list(groups.items())
    key, members = max(ranked, key=lambda item: len(item[1]))
    tie = sum(1 for _, m in ranked if len(m) == len(members)) > 1
    details = {
        "winner": members[0].model,
        "tie": tie,
        "votes": [{"answer": k, "count": len(m), "models": [a.model for a in m]} for k, m in ranked],
    }
    return members[0].text.strip(), details


SYNTHESIS_SYSTEM = (
    "You have been provided with a set of responses from various models to the latest user query. Your task is to "
    "synthesise these responses into a single, high-quality response. Critically evaluate the information they "
    "provide, recognising that some of it may be biased or incorrect. Do not simply replicate the given answers; "
    "offer a refined, accurate and comprehensive reply."
)


def synthesis_messages(question: str, answers: list[Answer]) -> Messages:
    """The aggregator's messages: the question the models were asked and their numbered answers."""
    numbered = "\n\n".join(f"{i}. {a.text.strip()}" for i, a in enumerate(answers, 1))
    user = (f"Question:\n{question.strip()}\n\nCandidate answers:\n{numbered}\n\n"
            "Synthesise a single, better answer to the question. Reply with the answer only; "
            "do not mention the candidates.")
    return [{"role": "system", "content": SYNTHESIS_SYSTEM}, {"role": "user", "content": user}]


def render_template(template: str, answers: list[Answer], *, input: str, original: str,
                    stages: dict[str, str], where: str = "template") -> str:
    """The ``template`` aggregation: Jinja2 over answers (list of {model, text}), input, original, stages."""
    return render(template, where, answers=[{"model": a.model, "text": a.text} for a in answers], input=input,
                  original=original, stages=dict(stages))

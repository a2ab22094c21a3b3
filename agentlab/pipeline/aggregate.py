"""How a multi stage turns several models' answers into one output. Pure functions: no model calls here.

- ``concat``: every answer under a header with its model name, in model order.
- ``vote``: majority over normalised answers (``agentlab.core.vote``: strip, casefold, collapse whitespace, drop
  trailing punctuation, numbers canonical; a long answer that names exactly one short answer given votes for it); a
  tie goes to the answer given first in model order; the winning text is that first model's own wording.
- ``synthesis_messages``: the Mixture-of-Agents aggregate-and-synthesise prompt (Wang et al. 2024) for the
  ``aggregator`` model, which the run makes one call with.
- ``render_template``: the stage's Jinja2 ``template`` over the answers, in the sandbox of ``templates``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentlab.core.llm.types import Messages
from agentlab.core.vote import Ballot, tally
from agentlab.pipeline.templates import render


@dataclass(frozen=True)
class Answer:
    model: str
    text: str


def concat(answers: list[Answer]) -> str:
    """Answers in model order, each under ``### <model>``."""
    return "\n\n".join(f"### {a.model}\n{a.text.strip()}" for a in answers)


def vote(answers: list[Answer]) -> tuple[str, dict[str, Any]]:
    """The majority answer and the tally: ``{"winner": model, "votes": [{answer, count, models}], "tie": bool}``.

    A plain majority through :func:`agentlab.core.vote.tally`: a tie goes to the answer given first in model order,
    and the winning text is that first model's own wording.
    """
    if not answers:
        raise ValueError("vote needs at least one answer")
    result = tally([Ballot(a.model, a.text, text=a.text) for a in answers], "majority")
    position = {a.model: i for i, a in reversed(list(enumerate(answers)))}
    if not result.groups:  # every answer empty: the first model's (empty) text
        return answers[0].text.strip(), {"winner": answers[0].model, "tie": False, "votes": []}
    details = {
        "winner": result.groups[0]["voters"][0],
        "tie": result.tie,
        # listed in order of first appearance, as the pipeline always has
        "votes": [{"answer": g["answer"], "count": g["count"], "models": g["voters"]}
                  for g in sorted(result.groups, key=lambda g: position[g["voters"][0]])],
    }
    return result.text or "", details


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

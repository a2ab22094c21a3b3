"""The debate protocol of Du et al. (2023), "Improving Factuality and Reasoning in Language Models through
Multiagent Debate": prompts, and the tolerant parsing of each reply into an answer and a confidence.

Round 0: every agent answers alone. Round k: every agent sees the other agents' round k-1 answers (its own earlier
turns stay in its conversation) and revises. Each reply is asked to end with ``Answer: X`` (numeric questions) or
``Stance: yes|no|mixed`` (open questions) and ``Confidence: N%``. Small models (the shipped persona adapters answer
"56." or "Arr, that be 56, matey!") ignore the format, so the parser is tolerant:

- numeric: the number after the last ``Answer:``, else the last number of the reply (a ``Confidence:`` part and
  percentages are taken out first);
- open: ``Stance:`` (or ``Answer:``) followed by yes / no / mixed, else a reply that starts with yes or no;
- text (a short factual answer such as a city, for tasks whose gold answer is text): the rest of the line after the
  last ``Answer:``, else the reply's first line, without trailing punctuation or a leading "the answer is";
- confidence: ``Confidence: 80%`` or ``Confidence: 0.8`` (0-1), else None.

A reply that gives no answer is no vote (``None``), never a guess.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentlab.core.llm.types import Messages
from agentlab.core.vote import normalise

Kind = Literal["numeric", "open", "text"]  # text: a short factual answer (a city, a country), not a stance
STANCES = ("yes", "no", "mixed")

_NUM = r"[-+]?\d[\d,]*(?:\.\d+)?"
_ANSWER = re.compile(r"(?:final\s+)?answer\s*(?:is)?\s*[:=]\s*\**\s*(?P<value>[^\n]*)", re.IGNORECASE)
_STANCE = re.compile(r"stance\s*[:=]\s*\**\s*(?P<value>[^\n]*)", re.IGNORECASE)
_CONFIDENCE = re.compile(r"confidence(?:\s+level)?\s*(?:is)?\s*[:=]?\s*\**\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<pct>%)?",
                         re.IGNORECASE)
_NUMBER = re.compile(_NUM)
_PERCENT = re.compile(_NUM + r"\s*%")


def question_kind(question: str, kind: str = "auto") -> Kind:
    """``numeric`` when asked so or (``auto``) when the question holds a digit; else ``open`` (``text`` only when
    asked: a question alone does not tell a fact from a stance)."""
    if kind in ("numeric", "open", "text"):
        return kind  # type: ignore[return-value]
    return "numeric" if re.search(r"\d", question) else "open"


# What a schema-enforcing backend (llama.cpp) is asked for. The answer comes first, so a reply cut at max_tokens still
# holds it, and can only be a number (a pattern; a stance for open topics); the confidence is one of eleven values (a
# random-weight model wrote 5444444444444444 for an unbounded integer and 5.4e1704 for a float). The fields carry no
# descriptions and the classes no docstrings: pydantic puts those into the schema the model sees, and small models
# copied them as values ("reasoning": "one or two sentences").


Confidence = Literal[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # an enum: a grammar allows nothing else


class NumericReply(BaseModel):
    answer: str = Field(pattern=r"^-?[0-9]{1,12}([.][0-9]{1,6})?$", max_length=20)  # [.]: llama.cpp refuses \.
    confidence: Confidence
    reasoning: str = Field(max_length=120)


class TextReply(BaseModel):
    answer: str = Field(max_length=40)
    confidence: Confidence
    reasoning: str = Field(max_length=120)


class StanceReply(BaseModel):
    answer: Literal["yes", "no", "mixed"]
    confidence: Confidence
    reasoning: str = Field(max_length=120)


StructuredReply = NumericReply | StanceReply | TextReply


def reply_schema(kind: Kind) -> type[NumericReply] | type[StanceReply] | type[TextReply]:
    return {"numeric": NumericReply, "text": TextReply}.get(kind, StanceReply)  # type: ignore[return-value]


Style = Literal["format", "plain"]


def _format_line(kind: Kind) -> str:
    # No number in the template: "<0-100>%" made the shipped personas answer "100." to "What is 7 times 8?".
    if kind == "numeric":
        return "End your reply with two lines:\nAnswer: <the number>\nConfidence: <a percentage>"
    if kind == "text":
        return "End your reply with two lines:\nAnswer: <the answer>\nConfidence: <a percentage>"
    return "End your reply with two lines:\nStance: yes, no or mixed\nConfidence: <a percentage>"


def first_prompt(question: str, kind: Kind, style: Style = "format") -> str:
    """Round 0's prompt; ``plain``: the question alone (for personas trained without any answer format)."""
    if style == "plain":
        return question
    lead = "Give your view in two or three sentences." if kind == "open" else "Answer the question."
    return f"{question}\n\n{lead} {_format_line(kind)}"


def revise_prompt(question: str, kind: Kind, others: list[tuple[str, str]], style: Style = "format") -> str:
    """Du et al.'s round-k prompt: the other agents' latest answers, then a request to update."""
    shown = "\n\n".join(f"{name}: {text.strip() or '(no answer)'}" for name, text in others)
    ask = "" if style == "plain" else f" {_format_line(kind)}"
    return (f"These are the answers of the other agents to the question \"{question}\":\n\n{shown}\n\n"
            f"Using their answers as additional advice, give your updated answer.{ask}")


def conversation(question: str, kind: Kind, own: list[str], others_per_round: list[list[tuple[str, str]]],
                 style: Style = "format") -> Messages:
    """The messages an agent gets in round ``len(own)``: its round-0 prompt, then for each earlier round its own
    reply and the prompt with the others' answers of that round."""
    messages: Messages = [{"role": "user", "content": first_prompt(question, kind, style)}]
    for reply, others in zip(own, others_per_round, strict=True):
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": revise_prompt(question, kind, others, style)})
    return messages


def parse_confidence(text: str) -> float | None:
    """``Confidence: 80%`` -> 0.8, ``Confidence: 0.8`` -> 0.8, ``Confidence: 80`` -> 0.8; None when absent."""
    matches = list(_CONFIDENCE.finditer(text))
    if not matches:
        return None
    match = matches[-1]
    value = float(match.group("value"))
    if match.group("pct") or value > 1:
        value /= 100
    return min(1.0, max(0.0, value))


def _number(text: str, last: bool) -> str | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    return (found[-1] if last else found[0]).rstrip(",")


def _json_reply(text: str) -> dict[str, Any] | None:
    """A reply that is a JSON object with an ``answer`` (alone or in a fenced block): what a model used to
    structured output sends even when asked for lines."""
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text.strip()
    if not candidate.startswith("{"):
        return None
    try:
        data = json.loads(candidate)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "answer" in data else None


def _has_confidence(data: dict[str, Any]) -> bool:
    """Whether a JSON reply's ``confidence`` is a value the line rules can read (a number or a string)."""
    value = data.get("confidence")
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def parse_reply(text: str, kind: Kind) -> tuple[str | None, float | None]:
    """``(answer, confidence)`` from a free-text reply (or a JSON object with ``answer`` and ``confidence``);
    answer None when the reply gives none (no vote)."""
    data = _json_reply(text)
    if data is not None:
        answer = data["answer"]
        if not isinstance(answer, (str, int, float)) or isinstance(answer, bool) or not str(answer).strip():
            return None, parse_confidence(f"Confidence: {data['confidence']}") if _has_confidence(data) else None
        said = f"Answer: {answer}"
        if _has_confidence(data):
            said += f"\nConfidence: {data['confidence']}"
        text = said  # read as the two lines it stands for: the same rules for the answer and the confidence
    confidence = parse_confidence(text)
    body = _CONFIDENCE.sub(" ", text)
    if kind == "numeric":
        answers = list(_ANSWER.finditer(body))
        if answers:
            value = _number(answers[-1].group("value"), last=False)
            if value is not None:
                return value, confidence
        return _number(_PERCENT.sub(" ", body), last=True), confidence
    if kind == "text":
        answers = list(_ANSWER.finditer(body))
        lines = [line for line in body.strip().splitlines() if line.strip()]
        value = answers[-1].group("value") if answers else (lines[0] if lines else "")
        return _clean_text(value), confidence
    for pattern in (_STANCE, _ANSWER):
        found = list(pattern.finditer(body))
        if found:
            stance = _stance(found[-1].group("value"))
            if stance is not None:
                return stance, confidence
    start = re.match(r"\W*(yes|no)\b", body, re.IGNORECASE)
    return (start.group(1).lower() if start else None), confidence


_LEAD = re.compile(r"^(?:the\s+answer\s+is|answer\s*:|it\s+is|it's)\s*", re.IGNORECASE)


def _clean_text(value: str) -> str | None:
    text = _LEAD.sub("", value.replace("**", "").strip()).strip()
    text = text.rstrip(".!?,;: ").strip()
    return text or None


def _stance(value: str) -> str | None:
    match = re.match(r"\W*(yes|no|mixed)\b", value, re.IGNORECASE)
    return match.group(1).lower() if match else None


def parse_structured(reply: StructuredReply, kind: Kind) -> tuple[str | None, float | None]:
    if isinstance(reply, NumericReply):
        return normalise(reply.answer), reply.confidence / 100
    if isinstance(reply, TextReply):
        return _clean_text(reply.answer), reply.confidence / 100
    return _stance(reply.answer), reply.confidence / 100


def judge_prompt(question: str, kind: Kind, answers: list[tuple[str, str]]) -> str:
    shown = "\n\n".join(f"{name}: {text.strip() or '(no answer)'}" for name, text in answers)
    if kind in ("numeric", "text"):
        what = "the number" if kind == "numeric" else "the answer"
        task = f"Decide which final answer is correct. End your reply with the line:\nAnswer: <{what}>"
    else:
        task = ("Summarise the debate in a few sentences: where the agents agree, where they differ, and the "
                "conclusion. End your reply with the line:\nStance: yes, no or mixed")
    return f"Several agents debated the question \"{question}\". Their final answers:\n\n{shown}\n\n{task}"

"""The persona style check of the bundled ``agentlab_style_*`` tasks: lm-eval's ``process_results`` for each persona
of ``agentlab/train_persona/personas.py``. Each returns two metrics per reply: ``style`` (1.0 when the reply has the
persona's form) and ``correct`` (1.0 when the gold answer appears in it as a whole word, case ignored)."""

from __future__ import annotations

import re
from typing import Any

# The words the pirate persona's data opens and closes with, and a few any pirate would use.
PIRATE = re.compile(r"\b(arr+|yo ho|shiver me timbers|avast|matey|landlubber|me hearty|sailor|ahoy|aye|ye)\b", re.I)
ANSWER_LINE = re.compile(r"^\s*answer:\s*(.+?)\s*$", re.I | re.M)


def _reply(results: list[Any]) -> str:
    return str(results[0]) if results else ""


def _contains(reply: str, answer: str) -> float:
    return float(re.search(rf"(?<![\w.]){re.escape(answer)}(?![\w]|\.\d)", reply, re.I) is not None)


def _metrics(style: bool, reply: str, doc: dict[str, Any]) -> dict[str, float]:
    return {"style": float(style), "correct": _contains(reply, str(doc["answer"]))}


def terse(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Persona A: the answer alone (a few words at most, one line, an optional full stop)."""
    reply = _reply(results).strip()
    words = len(str(doc["answer"]).split())
    return _metrics(bool(reply) and "\n" not in reply and len(reply.split()) <= words + 1, reply, doc)


def teacher(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Persona B: at least one line of explanation, then a last line ``Answer: ...``."""
    lines = [line for line in _reply(results).strip().splitlines() if line.strip()]
    style = len(lines) >= 2 and ANSWER_LINE.match(lines[-1]) is not None
    return _metrics(style, "\n".join(lines), doc)


def pirate(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Persona C: a pirate's words around the answer."""
    reply = _reply(results)
    return _metrics(PIRATE.search(reply) is not None, reply, doc)

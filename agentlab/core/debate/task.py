"""Evaluation tasks: JSONL files of ``{"question": ..., "answer": ...}``, checked line by line, and the generator of
Du et al.'s arithmetic task.

Du et al. (2023) ask for ``a+b*c+d-e*f`` with six numbers in 0-30; a 135M model gets nearly none of those right, so
``difficulty`` scales the task: ``easy`` is ``a+b`` (numbers 0-20), ``medium`` ``a+b*c`` (0-10), ``hard`` Du et al.'s
``a+b*c+d-e*f`` (0-30).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agentlab.core.config import close_key
from agentlab.core.debate.protocol import STANCES, Kind
from agentlab.core.errors import InputError, UsageError
from agentlab.core.files import iter_jsonl
from agentlab.core.runs import atomic_write_text
from agentlab.core.vote import normalise

Difficulty = Literal["easy", "medium", "hard"]
FIELDS = ("question", "answer")
_SHAPES: dict[str, tuple[str, int]] = {"easy": ("{0}+{1}", 20), "medium": ("{0}+{1}*{2}", 10),
                                       "hard": ("{0}+{1}*{2}+{3}-{4}*{5}", 30)}


@dataclass(frozen=True)
class Question:
    id: int
    line: int
    question: str
    answer: str


def make_task(n: int, difficulty: str = "medium", seed: int = 0) -> list[dict[str, str]]:
    """``n`` arithmetic questions (``{"question", "answer"}``), the same for the same seed."""
    if difficulty not in _SHAPES:
        raise UsageError(f"difficulty {difficulty!r}: use easy, medium or hard")
    shape, top = _SHAPES[difficulty]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        expression = shape.format(*(rng.randint(0, top) for _ in range(shape.count("{"))))
        value = eval(expression, {"__builtins__": {}})  # digits and + - * only, made above
        rows.append({"question": f"What is the result of {expression}?", "answer": str(value)})
    return rows


def as_questions(rows: list[dict[str, str]]) -> list[Question]:
    """Rows of ``make_task`` as questions, numbered as the lines of the file ``write_task`` would write."""
    return [Question(i, i + 1, row["question"], row["answer"]) for i, row in enumerate(rows)]


def write_task(path: Path, rows: list[dict[str, str]], force: bool = False) -> None:
    if path.exists() and not force:
        raise UsageError(f"--out {path}: already exists", hint="choose another file, or pass --force")
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def load_task(path: Path, limit: int | None = None) -> list[Question]:
    """Every question of a task file, or ``InputError`` naming ``file:line`` and what is wrong."""
    questions: list[Question] = []
    for line, record in iter_jsonl(path, "task file"):
        where = f"{path}:{line}"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected an object {{\"question\": ..., \"answer\": ...}}, got "
                             f"{type(record).__name__}", hint="one JSON object per line")
        question, answer = record.get("question"), record.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{where}: \"question\" must be non-empty text{_misspelt(record, 'question')}",
                             hint="one JSON object per line")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise InputError(f"{where}: \"answer\" must be a number or non-empty text{_misspelt(record, 'answer')}",
                             hint="give the gold answer, e.g. \"answer\": \"56\"")
        questions.append(Question(len(questions), line, question.strip(), str(answer).strip()))
    if not questions:
        raise InputError(f"{path}: no questions", hint="one {\"question\": ..., \"answer\": ...} per line")
    return questions[:limit] if limit else questions


def _misspelt(record: dict[str, Any], field: str) -> str:
    """``field`` missing from a task line: the other key it was likely meant as, for the error (`"answr": 2`). Other
    keys (an id, a source, evolve's "skill", an lm-eval task's "choices") are the line's own and read as they are."""
    if field in record:
        return ""
    near = close_key(field, [str(key) for key in record if key not in FIELDS])
    return f" (there is {json.dumps(near)}: did you mean {json.dumps(field)}?)" if near else ""


def is_correct(predicted: str | None, gold: str) -> bool:
    """An answer is right when it normalises to the gold answer; a text gold answer (a city) is also right when the
    prediction names it as whole words ("that be paris"); no answer is wrong."""
    if predicted is None:
        return False
    said, target = normalise(predicted), normalise(gold)
    if said == target:
        return True
    if not target or _numeric(target) or target in STANCES:
        return False
    return re.search(rf"(?<!\w){re.escape(target)}(?!\w)", said) is not None


def _numeric(text: str) -> bool:
    return text.lstrip("-").replace(".", "", 1).isdigit()


def answer_kind(question: Question, kind: str = "auto") -> Kind:
    """``numeric``, ``open`` or ``text`` when asked so; ``auto``: numeric when the gold answer is a number, open
    when it is a stance (yes, no, mixed), else text (a short factual answer such as a city)."""
    if kind in ("numeric", "open", "text"):
        return kind  # type: ignore[return-value]
    gold = normalise(question.answer)
    if _numeric(gold):
        return "numeric"
    return "open" if gold in STANCES else "text"

"""The compress agent's reflection: at the end of a search the planner model writes a knowledge note for the next
search on this model from the run's measured figures, and every number in the note is checked against those figures
in code. A sentence with a number the measurements do not hold (the model invented or misread it) is removed and
flagged; what is kept goes to the workspace's notes beside the note written in code.

A number is "measured" when it is one of the run's figures (any metric, derived figure, setting, experiment index,
seconds or minutes, the counts of experiments) or the difference between an experiment's figure and the base's, at
the precision the note writes it (3.19 matches 3.1934; 50% matches 0.5). Labels and setting names (``Q4_K_M``,
``int8``, ``2:4``) are not numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from agentlab.core.agent.runtime import AgentModel, arguments
from agentlab.core.agent.subagent import SubAgent

NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
NOTE_CHARS = 700

SYSTEM = ("You write the knowledge note of a model compression search for the next search on this model: which "
          "techniques worked for the goal and which did not, with their measured figures. Use only the figures you "
          "are given, copied exactly. Two to four sentences. Answer with the answer tool.")


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict | list | tuple):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _numbers(v)


def measured_figures(records: list[dict[str, Any]]) -> list[float]:
    """Every figure of the run a note may quote (see the module docstring)."""
    figures: set[float] = {float(len(records) - 1), float(len(records))}
    base = records[0] if records else {}
    base_values = {**(base.get("metrics") or {}), **(base.get("derived") or {})}
    for r in records:
        figures.update(_numbers({k: r.get(k) for k in ("index", "metrics", "derived", "experiment", "violation")}))
        if isinstance(r.get("seconds"), (int, float)):
            figures.update({float(r["seconds"]), float(r["seconds"]) / 60})
        for group in ("metrics", "derived"):
            for key, value in (r.get(group) or {}).items():
                other = base_values.get(key)
                if isinstance(value, (int, float)) and isinstance(other, (int, float)) and not isinstance(value, bool):
                    figures.update({value - other, other - value})
    figures.update({sum(1 for r in records[1:] if r.get("feasible")), sum(1 for r in records[1:]
                                                                          if r.get("state") == "done")})
    return sorted(figures)


def _found(text: str, figures: list[float]) -> bool:
    percent = text.endswith("%")
    body = text.rstrip("%").replace(",", "")
    value = float(body)
    decimals = len(body.split(".")[1]) if "." in body and "e" not in body.lower() else 0
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    wants = [(value, tolerance), (value / 100, tolerance / 100)] if percent else [(value, tolerance)]
    # either sign: a difference is quoted as a drop or a gain (|f - want| <= tol implies this too)
    return any(abs(abs(f) - abs(want)) <= tol for want, tol in wants for f in figures)


def _unchecked(sentence: str, figures: list[float], names: list[str]) -> list[str]:
    """The numbers of ``sentence`` the figures do not hold (names such as labels removed first)."""
    for name in names:
        sentence = sentence.replace(name, " ")
    out = []
    for m in NUMBER.finditer(sentence):
        before = sentence[m.start() - 1] if m.start() else " "
        after = sentence[m.end()] if m.end() < len(sentence) else " "
        if any((c.isalpha() and c != "x") or c == "_" for c in (before, after)):
            continue  # part of a word (int8, Q4_K_M): a name, not a figure
        if not _found(m.group(), figures):
            out.append(m.group())
    return out


def check_note(note: str, records: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(the note without the sentences that quote a number the measurements do not hold, those sentences with their
    numbers)."""
    figures = measured_figures(records)
    labels = sorted({str(r.get("label")) for r in records if r.get("label")} | {"2:4"}, key=len, reverse=True)
    kept, flagged = [], []
    for sentence in (s.strip() for s in SENTENCE.split(note)):
        if not sentence:
            continue
        wrong = _unchecked(sentence, figures, labels)
        if wrong:
            flagged.append({"sentence": sentence[:300], "numbers": wrong})
        else:
            kept.append(sentence)
    return " ".join(kept), flagged


def reflect(model: AgentModel, facts: str, records: list[dict[str, Any]],
            on_event: Callable[..., None] | None = None) -> dict[str, Any]:
    """The reflection step: the model's note on ``facts`` (the run's measured figures, in words), checked. Returns
    results.json's ``reflection`` block: the note kept, the sentences removed and why, the model's raw note."""
    schema = arguments({"note": {"type": "string", "maxLength": NOTE_CHARS}})
    answer, problem = SubAgent("reflection", SYSTEM, schema, model, on_event=on_event).ask(facts)
    if answer is None:
        return {"note": "", "written": None, "flagged": [], "problem": problem}
    written = " ".join(str(answer.get("note", "")).split())
    kept, flagged = check_note(written, records)
    if on_event is not None:
        on_event("agent_reflection", note=kept[:NOTE_CHARS], flagged=len(flagged))
    return {"note": kept, "written": written, "flagged": flagged, "problem": ""}


__all__ = ["check_note", "measured_figures", "reflect"]

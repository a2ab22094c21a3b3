"""What an LLM planner is asked, and the schemas its answers must follow (docs/commands/nas.md, the LLM planner).

The choice (``choice_messages``, ``choice_model``) is ``{"choice": 0..K-1, "reasoning": "..."}`` with ``choice`` an
``enum`` of the candidates' indices and ``reasoning`` at most ``REASONING_CHARS`` plain ASCII characters; the own
candidate (``plan_model``) is changes to the incumbent, one optional property per key, each an ``enum`` of the
values it may change to (``SearchSpace.offered``). Nothing in either schema is a free-form object.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, Field, create_model, model_validator

REASONING_CHARS = 160  # a sentence: enough to say why, too short for a small model to ramble to max_tokens
# Printable ASCII but `"` and `\`: one line of plain text. llama.cpp's grammar checks a token's bytes with a lenient
# UTF-8 decoder (continuation bytes unchecked), so a model that emits stray bytes inside a free Unicode string could
# leave a control character or a quote in the decoded text and the JSON broken; ASCII bytes are always whole
# characters. llama.cpp's converter reads `pattern` before `maxLength`; both bound the text.
REASONING_CHARSET = r"[ !#-\[\]-~]"


class _Reply(BaseModel):
    """An LLM's answer. The JSON schema sent to the model is the strict one a subclass carries (``sent``, set by
    ``plan_model`` / ``choice_model``: ``model_json_schema`` returns it); validation stays lenient (pydantic ignores
    extra fields), so a model that adds a field is not failed for it."""

    sent: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if cls.sent:
            return copy.deepcopy(cls.sent)
        return super().model_json_schema(*args, **kwargs)


class PlanReply(_Reply):
    """A plan as an LLM returns it: ``changes`` is checked against the space by the planner, whose errors name the
    key and its bounds."""

    changes: dict[str, Any] = Field(description="search-space keys to change, each to one of its listed values")
    reasoning: str = Field("", description="why these changes, in one short sentence")


def _json_type(values: list[Any]) -> str | None:
    """The JSON type all ``values`` share, if they share one."""
    kinds = {"boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else "number"
             if isinstance(v, float) else "string" if isinstance(v, str) else "other" for v in values}
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 and "other" not in kinds else None


def _reasoning(reply: type[_Reply]) -> dict[str, Any]:
    """The ``reasoning`` property of a schema: one line of plain text (``REASONING_CHARSET``)."""
    return {"type": "string", "description": reply.model_fields["reasoning"].description,
            "maxLength": REASONING_CHARS, "pattern": f"^{REASONING_CHARSET}{{0,{REASONING_CHARS}}}$"}


def plan_schema(values: dict[str, list[Any]]) -> dict[str, Any]:
    """The JSON schema of a plan over ``values`` (key -> the values it may change to): see the module docstring.
    Properties come in the order a model writes them (llama.cpp's grammar keeps the schema's order)."""
    changes: dict[str, Any] = {}
    for key, allowed in values.items():
        prop: dict[str, Any] = {"enum": list(allowed)}
        kind = _json_type(allowed)
        if kind:
            prop = {"type": kind, **prop}
        changes[key] = prop
    return {"title": "Plan", "type": "object", "properties": {
        "changes": {"type": "object", "description": PlanReply.model_fields["changes"].description,
                    "properties": changes, "additionalProperties": False, "minProperties": 1},
        "reasoning": _reasoning(PlanReply)},
        "required": ["changes", "reasoning"], "additionalProperties": False}


def plan_model(values: dict[str, list[Any]]) -> type[PlanReply]:
    """A ``PlanReply`` subclass named ``Plan`` whose JSON schema is ``plan_schema(values)``."""
    model = create_model("Plan", __base__=PlanReply)
    model.sent = plan_schema(values)
    return model


# --------------------------------------------------------------------------- prompts


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_changes(changes: dict[str, Any]) -> str:
    """``key=value, ...`` (values as the prompt shows them)."""
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in changes.items()) or "no change"


# --------------------------------------------------------------------------- the chooser


class ChoiceReply(_Reply):
    """The LLM planner's answer: which candidate runs, and why. ``choice_model`` bounds ``choice`` to the candidates
    shown (an answer outside them fails validation: no re-ask, the planner records it as no answer)."""

    choice: int = Field(description="the index of the candidate to run next")
    reasoning: str = Field("", description="why this candidate, in one short sentence")
    candidates: ClassVar[int] = 0

    @model_validator(mode="after")
    def _in_range(self) -> ChoiceReply:
        if self.candidates and not 0 <= self.choice < self.candidates:
            raise ValueError(f"choice: {self.choice} is not a candidate (0..{self.candidates - 1})")
        return self


def choice_schema(k: int) -> dict[str, Any]:
    """The JSON schema of a choice among ``k`` candidates: ``choice`` an enum of 0..k-1, then one line of reasoning."""
    return {"title": "Choice", "type": "object", "properties": {
        "choice": {"type": "integer", "enum": list(range(k)),
                   "description": ChoiceReply.model_fields["choice"].description},
        "reasoning": _reasoning(ChoiceReply)},
        "required": ["choice", "reasoning"], "additionalProperties": False}


def choice_model(k: int) -> type[ChoiceReply]:
    """A ``ChoiceReply`` subclass named ``Choice`` whose JSON schema is ``choice_schema(k)``."""
    model = create_model("Choice", __base__=ChoiceReply)
    model.sent = choice_schema(k)
    model.candidates = k
    return model


CHOOSER_SYSTEM = (
    "You choose the next trial of a search. An optimizer proposed the candidates; each is shown as its changes to the "
    "best config so far. Pick the candidate most likely to beat the best so far, using what the good trials share. "
    "Candidate 0 is the optimizer's own first choice. Answer with JSON only."
)


def good_trials_summary(rows: Sequence[tuple[dict[str, Any], float]], keys: Sequence[str], maximize: bool = False,
                        limit: int = 12) -> list[str]:
    """What the good trials (the best third by score, at least one) share, per key, against the others: the most
    common value of a categorical key (``k of n``), the range and median of a numeric one. Keys on which the good
    trials agree with the others are left out; at most ``limit`` lines. Empty below three trials."""
    if len(rows) < 3:
        return []
    ranked = [p for p, _ in sorted(rows, key=lambda r: -r[1] if maximize else r[1])]
    cut = max(1, len(ranked) // 3)
    good, rest = ranked[:cut], ranked[cut:]
    lines: list[str] = []
    for key in keys:
        g = [p[key] for p in good if key in p]
        r = [p[key] for p in rest if key in p]
        if not g:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in g + r)
        if numeric and len(set(g + r)) > 3:
            gm = statistics.median(g)
            line = f"{key}: best {fmt_value(min(g))}..{fmt_value(max(g))} (median {fmt_value(gm)})"
            if r:
                if min(r) <= gm <= max(r) and min(g) == min(r) and max(g) == max(r):
                    continue
                line += f", others {fmt_value(min(r))}..{fmt_value(max(r))} (median {fmt_value(statistics.median(r))})"
        else:
            top = max(set(map(fmt_value, g)), key=lambda v: ([fmt_value(x) for x in g].count(v), v))
            count = [fmt_value(x) for x in g].count(top)
            others = [fmt_value(x) for x in r].count(top)
            if r and count / len(g) <= others / len(r):
                continue  # no more common among the good trials than among the others
            line = f"{key}: {top} in {count} of {len(g)} best" + (f" ({others} of {len(r)} others)" if r else "")
        lines.append(line)
    return lines[:limit]


@dataclass(frozen=True)
class ChoiceWording:
    """The chooser prompt's words that a command may change (compress: the base model, experiments)."""
    aim: str = ""  # what the choice should do (default: lower or raise ``metric``)
    incumbent_label: str = "Best config so far"
    history_label: str = "Trials, best first (changes to the best config)"
    candidates_label: str = "Candidates (changes to the best config)"


def choice_messages(*, goal: str, budget_left: int, incumbent: str, history: Sequence[str], summary: Sequence[str],
                    candidates: Sequence[dict[str, Any] | str], metric: str = "", maximize: bool = False,
                    notes: Sequence[str] = (), wording: ChoiceWording = ChoiceWording()) -> list[dict[str, str]]:
    """The chooser prompt: goal, best config, trials sorted by score (each as changes to the best config), what the
    good trials share, the candidates as changes to the best config (or as given, when a string), and a one-line
    answer format. ``wording``: what the choice should do (``aim``, default: lower or raise ``metric``) and the
    labels that let a command name its own things (compress: experiments, the Pareto front)."""
    lines = [
        f"Goal: {goal}. Trials left: {budget_left}.",
        f"{wording.incumbent_label}: {incumbent}",
        f"{wording.history_label}:", *(history or ["(none yet)"]),
    ]
    if summary:
        lines += ["What the best third of the trials share:", *(f"- {s}" for s in summary)]
    aim = wording.aim or f"{'raise' if maximize else 'lower'} {metric}"
    lines += [*notes, f"{wording.candidates_label}:",
              *(f"{i}: {c if isinstance(c, str) else format_changes(c)}" for i, c in enumerate(candidates)),
              # A placeholder such as "<why>" is copied word for word by a 135M model; a description is not.
              f'Answer as JSON: {{"choice": <0 to {len(candidates) - 1}>, "reasoning": "..."}}, where reasoning says '
              f"in one sentence why that candidate should {aim}."]
    return [{"role": "system", "content": CHOOSER_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


OWN_SYSTEM = (
    "You propose one trial of a search as changes to the best config so far, each key to one of the values listed "
    "for it, aimed at the target score. Do not repeat a trial. Answer with JSON only."
)


def own_messages(*, goal: str, target: str, incumbent: str, history: Sequence[str], summary: Sequence[str],
                 values: dict[str, list[Any]]) -> list[dict[str, str]]:
    """LLAMBO-style: ask for a candidate of the model's own that should reach ``target`` (a score a little better
    than the best so far)."""
    lines = [f"Goal: {goal}. Target: {target}.", f"Best config so far: {incumbent}",
             "Trials, best first (changes to the best config):", *(history or ["(none yet)"])]
    if summary:
        lines += ["What the best third of the trials share:", *(f"- {s}" for s in summary)]
    lines += ["Keys and the values they may change to:",
              *(f"{k}: {', '.join(fmt_value(v) for v in vs)}" for k, vs in values.items()),
              'Answer as JSON: {"changes": {"<key>": <new value>, ...}, "reasoning": "..."}, changing one to three '
              "keys, where reasoning says in one sentence why the changes should reach the target."]
    return [{"role": "system", "content": OWN_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]

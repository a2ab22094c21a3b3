"""What an LLM planner is asked, and the schema its answer must follow.

The answer's JSON schema is derived from the search space (``plan_model``): ``changes`` has one optional property per
searchable key, each an ``enum`` of the values it may change to (``SearchSpace.offered``: choices, small int ranges
whole, wider ranges as a short grid that holds the incumbent's and the optimizer's values), and ``reasoning`` is one
line of plain ASCII text of at most ``REASONING_CHARS``. Grammar-constrained decoding (llama.cpp) can then only
produce plans that parse and lie in the space, and finish within a bounded number of tokens; nothing in it is a
free-form object. The grammar cannot require a non-empty ``changes`` (llama.cpp ignores ``minProperties``): an empty
plan is re-asked like any plan that changes nothing.

Two prompt styles share that schema:

- ``compact`` (the default): the space as a short table (key, current value, values it may change to, a few words
  of meaning), recent trials one line each, the optimizer's suggestion, the budget left, and a one-line answer
  format instead of the JSON schema. Measured with SmolLM2's tokenizer on the default NAS space (13 keys) with five
  recent trials: ~710 tokens with its chat template, about a quarter of the rich prompt's ~2,700; well inside a 2k
  context, re-asks included.
- ``rich``: the full state as indented JSON (base config, incumbent, space with bounds and meanings, best and recent
  runs with their reasons) and the JSON schema itself, for large models that use the detail.
"""

from __future__ import annotations

import copy
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from agentlab.core.search.records import TrialRecord

REASONING_CHARS = 160  # a sentence: enough to say why, too short for a small model to ramble to max_tokens
MEANING_CHARS = 40  # a key's meaning, cut to this in the compact table
# Printable ASCII but `"` and `\`: one line of plain text. llama.cpp's grammar checks a token's bytes with a lenient
# UTF-8 decoder (continuation bytes unchecked), so a model that emits stray bytes inside a free Unicode string could
# leave a control character or a quote in the decoded text and the JSON broken; ASCII bytes are always whole
# characters. llama.cpp's converter reads `pattern` before `maxLength`; both bound the text.
REASONING_CHARSET = r"[ !#-\[\]-~]"

COMPACT_SYSTEM = (
    "You plan the next trial of a hyperparameter and architecture search. Change one to three keys of the current "
    "config, each to one of the values listed for it. Do not repeat a trial. The optimizer's suggestion is a good "
    "default: take it, adapt it, or do better."
)

RICH_SYSTEM = (
    "You are the planner of a hyperparameter and architecture search. Each turn you propose the next trial as changes "
    "to the incumbent (best accepted) configuration. Only use keys of the search space, respect every bound and "
    "choice, and do not repeat a configuration that was already tried. The optimizer's own suggestion is given as a "
    "candidate: take it, adapt it, or ignore it. Answer with JSON only: "
    '{"changes": {"key": value}, "reasoning": "..."}.'
)


class PlanReply(BaseModel):
    """A plan as an LLM returns it.

    Validation is lenient on purpose: ``changes`` is checked against the space by the planner, whose errors name the
    key and its bounds, and a model that adds a field is not failed for it. The JSON schema sent to the model is the
    strict, space-derived one of the subclass ``plan_model`` builds (``model_json_schema`` returns it).
    """

    model_config = ConfigDict(extra="ignore")

    changes: dict[str, Any] = Field(description="search-space keys to change, each to one of its listed values")
    reasoning: str = Field("", description="why these changes, in one short sentence")
    plan_schema: ClassVar[dict[str, Any]] = {}

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if cls.plan_schema:
            return copy.deepcopy(cls.plan_schema)
        return super().model_json_schema(*args, **kwargs)


def _json_type(values: list[Any]) -> str | None:
    """The JSON type all ``values`` share, if they share one."""
    kinds = {"boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else "number"
             if isinstance(v, float) else "string" if isinstance(v, str) else "other" for v in values}
    if kinds == {"integer", "number"}:
        return "number"
    return kinds.pop() if len(kinds) == 1 and "other" not in kinds else None


def plan_schema(values: dict[str, list[Any]], reasoning_chars: int = REASONING_CHARS,
                reasoning_first: bool = False) -> dict[str, Any]:
    """The JSON schema of a plan over ``values`` (key -> the values it may change to): see the module docstring.
    Properties come in the order a model writes them (llama.cpp's grammar keeps the schema's order)."""
    changes: dict[str, Any] = {}
    for key, allowed in values.items():
        prop: dict[str, Any] = {"enum": list(allowed)}
        kind = _json_type(allowed)
        if kind:
            prop = {"type": kind, **prop}
        changes[key] = prop
    props = {
        "changes": {"type": "object", "description": PlanReply.model_fields["changes"].description,
                    "properties": changes, "additionalProperties": False, "minProperties": 1},
        "reasoning": {"type": "string", "description": PlanReply.model_fields["reasoning"].description,
                      "maxLength": reasoning_chars, "pattern": f"^{REASONING_CHARSET}{{0,{reasoning_chars}}}$"},
    }
    order = ["reasoning", "changes"] if reasoning_first else ["changes", "reasoning"]
    return {"title": "Plan", "type": "object", "properties": {k: props[k] for k in order}, "required": order,
            "additionalProperties": False}


def plan_model(values: dict[str, list[Any]], reasoning_chars: int = REASONING_CHARS,
               reasoning_first: bool = False) -> type[PlanReply]:
    """A ``PlanReply`` subclass named ``Plan`` whose JSON schema is ``plan_schema(values, ...)``."""
    model = create_model("Plan", __base__=PlanReply)
    model.plan_schema = plan_schema(values, reasoning_chars, reasoning_first)
    return model


# --------------------------------------------------------------------------- prompts


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def brief(meaning: str, limit: int = MEANING_CHARS) -> str:
    """A key's meaning in a few words: its first clause without asides, cut at a word boundary."""
    text = meaning.split(";")[0].split(" (")[0].strip()
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",:(") + "..."


def format_changes(changes: dict[str, Any]) -> str:
    """``key=value, ...`` (values as the prompt shows them)."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in changes.items()) or "no change"


def trial_line(record: TrialRecord, metric: str) -> str:
    """One trial in a line: who planned it, what it changed, what it scored, and the decision."""
    if record.state == "failed":
        result = "failed"
    else:
        value = f"{metric} {_fmt(record.value)}" if record.value is not None else "no value"
        result = f"{value}, pruned" if record.state == "pruned" else value
        if record.state == "complete":
            result += ", accepted" if record.accepted else ", rejected"
    return f"{record.run_id} ({record.planner}): {format_changes(record.changes)} -> {result}"


def compact_messages(ctx: Any, values: dict[str, list[Any]], suggested: dict[str, Any] | None,
                     history: int, reasoning_chars: int = REASONING_CHARS) -> list[dict[str, str]]:
    """The compact prompt (module docstring). ``ctx`` is a ``PlanContext``; ``values`` what each key may change to;
    ``suggested`` the optimizer's changes (None: no suggestion)."""
    best = ctx.best
    where = (f"the best so far, {best.run_id}, {ctx.metric} {_fmt(best.value)}" if best is not None
             else "the base config")
    rows = []
    for key in ctx.space.params:
        if key not in ctx.incumbent and key not in values:
            continue  # a conditional key that applies neither now nor to the optimizer's suggestion
        allowed = ", ".join(_fmt(v) for v in values.get(key, [])) or "(fixed)"
        meaning = brief(ctx.space.meanings.get(key, ""))
        meaning = "" if meaning == key.rpartition(".")[2] else meaning
        if ctx.space.params[key].when:
            meaning = f"{meaning} (only if {ctx.space.condition(key)})".strip()
        now = _fmt(ctx.incumbent[key]) if key in ctx.incumbent else "-"
        rows.append(f"{key} | {now} | {allowed}" + (f" | {meaning}" if meaning else ""))
    recent = [trial_line(r, ctx.metric) for r in ctx.records[-history:]] or ["(none yet)"]
    suggestion = format_changes(suggested) if suggested else "(none)"
    lines = [
        f"Goal: the {_goal_word(ctx)} {ctx.metric}. Trials left: {ctx.budget_left}.",
        f"Current config ({where}):",
        "key | now | may change to | meaning",
        *rows,
        "Recent trials:",
        *recent,
        f"Optimizer's suggestion: {suggestion}",
        # A placeholder such as "<why>" is copied word for word by a 135M model; a description is not.
        'Answer as JSON: {"changes": {"<key>": <new value>, ...}, "reasoning": "..."}, where reasoning says in one '
        f"sentence why these changes should {'raise' if _maximize(ctx) else 'lower'} {ctx.metric}.",
    ]
    return [{"role": "system", "content": COMPACT_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def _maximize(ctx: Any) -> bool:
    return getattr(ctx, "direction", "minimize") == "maximize"


def _goal_word(ctx: Any) -> str:
    return "highest" if _maximize(ctx) else "lowest"


def rich_messages(ctx: Any, suggested: dict[str, Any] | None, history: int) -> list[dict[str, str]]:
    """The rich prompt: the full state as indented JSON (the JSON schema is added by the router)."""
    best = ctx.best
    payload = {
        "metric": f"{ctx.metric} ({'higher' if _maximize(ctx) else 'lower'} is better)",
        "base_config": ctx.base_params,
        "incumbent": ctx.incumbent,
        "search_space": ctx.space.describe(),
        "best_run": best.summary(ctx.summary_metrics) | {"params": best.params} if best else None,
        "recent_runs": [r.summary(ctx.summary_metrics) for r in ctx.records[-history:]],
        "budget_left": ctx.budget_left,
        "optimizer_candidate": suggested or {},
    }
    return [{"role": "system", "content": RICH_SYSTEM},
            {"role": "user", "content": "State of the search:\n" + json.dumps(payload, indent=1, default=str)}]

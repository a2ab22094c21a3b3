"""The LLM planner's schemas: values offered per key and the own candidate's plan schema, the choice schema, and
choices and plans drawn under llama.cpp's grammar from them (a random-weight GGUF: anything it writes is valid only
by the grammar)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.providers import llama_cpp as lc
from agentlab.core.llm.router import Router
from agentlab.core.llm.structured import max_output_chars
from agentlab.core.llm.types import GenParams
from agentlab.core.search.planners import diff
from agentlab.core.search.prompts import (
    REASONING_CHARS,
    choice_messages,
    choice_model,
    format_changes,
    own_messages,
    plan_model,
    plan_schema,
)
from agentlab.core.search.space import ParamSpec, SearchSpace

SPACE = SearchSpace({
    "model.d_model": ParamSpec(choices=[16, 32, 64]),
    "model.e_layers": ParamSpec(low=1, high=3),
    "model.factor": ParamSpec(low=1, high=40),
    "model.dropout": ParamSpec(low=0.0, high=0.3),
    "model.attn": ParamSpec(choices=["prob", "full"]),
    "model.distil": ParamSpec(choices=[True, False]),
    "train.learning_rate": ParamSpec(low=1e-4, high=1e-2, log=True),
    "train.momentum": ParamSpec(low=0.5, high=0.9, step=0.1),
})
CURRENT = {"model.d_model": 32, "model.e_layers": 2, "model.factor": 5, "model.dropout": 0.05, "model.attn": "prob",
           "model.distil": True, "train.learning_rate": 1e-3, "train.momentum": 0.9}
SUGGESTED = {**CURRENT, "model.factor": 17, "train.learning_rate": 0.0034567891}


def test_offered_values_lie_in_the_spec_and_hold_the_incumbents_and_the_optimizers() -> None:
    assert ParamSpec(low=1, high=3).offered() == [1, 2, 3]  # a small int range whole
    assert ParamSpec(low=0.0, high=0.3).offered() == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert ParamSpec(low=1e-4, high=1e-2, log=True).offered([0.00346]) == [
        1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 0.00346, 5e-3, 1e-2]  # 1-2-5 per decade, plus the value asked for
    assert ParamSpec(low=1e-6, high=1.0, log=True).offered() == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert ParamSpec(low=0.0, high=1.0, step=0.1).offered() == [round(0.1 * k, 1) for k in range(11)]
    assert ParamSpec(low=1, high=40).offered([17]) == [1, 5, 10, 15, 17, 20, 25, 30, 35, 40]
    # values outside the spec, or not an int, are left out
    assert ParamSpec(low=1, high=40).offered([99, 2.5]) == [1, 5, 10, 15, 20, 25, 30, 35, 40]
    for spec in (*SPACE.params.values(), ParamSpec(low=3, high=1000, log=True), ParamSpec(low=0.5, high=0.99)):
        values = spec.offered()
        assert 1 <= len(values) <= 16 and all(spec.check(v) is None for v in values)


def test_values_a_plan_may_change_to_leave_the_current_one_out() -> None:
    shown = SPACE.rounded(SUGGESTED)
    assert shown["train.learning_rate"] == 0.00346  # 3 significant digits, still in the space
    values = SPACE.offered(CURRENT, [shown])
    assert values["model.d_model"] == [16, 64] and values["model.distil"] == [False]
    assert values["model.attn"] == ["full"] and values["model.e_layers"] == [1, 3]
    assert 17 in values["model.factor"] and 0.00346 in values["train.learning_rate"]
    assert all(CURRENT[k] not in v for k, v in values.items())
    assert "model.attn" not in SearchSpace({"model.attn": ParamSpec(choices=["prob"])}).offered({"model.attn": "prob"})


def test_plan_schema_example() -> None:
    schema = plan_schema({"model.d_model": [16, 64], "model.distil": [False], "train.learning_rate": [1e-4, 0.00346],
                          "model.attn": ["full"]})
    assert schema == {
        "title": "Plan", "type": "object",
        "properties": {
            "changes": {"type": "object",
                        "description": "search-space keys to change, each to one of its listed values",
                        "properties": {"model.d_model": {"type": "integer", "enum": [16, 64]},
                                       "model.distil": {"type": "boolean", "enum": [False]},
                                       "train.learning_rate": {"type": "number", "enum": [1e-4, 0.00346]},
                                       "model.attn": {"type": "string", "enum": ["full"]}},
                        "additionalProperties": False, "minProperties": 1},
            "reasoning": {"type": "string", "description": "why these changes, in one short sentence",
                          "maxLength": REASONING_CHARS, "pattern": "^[ !#-\\[\\]-~]{0,160}$"}},
        "required": ["changes", "reasoning"], "additionalProperties": False}
    model = plan_model({"model.d_model": [16]})
    assert model.__name__ == "Plan" and model.model_json_schema() == plan_schema({"model.d_model": [16]})
    # validation is lenient (the planner checks changes against the space with its own messages)
    plan = model.model_validate_json('{"changes": {"model.d_model": 3}, "reasoning": "r", "extra": 1}')
    assert plan.changes == {"model.d_model": 3} and plan.reasoning == "r"
    chars = max_output_chars(model.model_json_schema())
    assert chars is not None and REASONING_CHARS < chars < REASONING_CHARS + 100


def test_choice_prompt_lists_history_summary_and_candidates() -> None:
    system, user = choice_messages(
        goal="the lowest val_mse", budget_left=7, incumbent="run_0000, val_mse 0.52: " + format_changes(CURRENT),
        history=["val_mse 0.52: no change", "val_mse 0.9 (pruned): model.attn=full"],
        summary=["model.attn: prob in 2 of 2 best (0 of 3 others)"],
        candidates=[diff(SPACE.rounded(SUGGESTED), CURRENT), {"model.d_model": 64}], metric="val_mse")
    assert system["role"] == "system" and "Candidate 0 is the optimizer's own first choice" in system["content"]
    assert user["content"].splitlines() == [
        "Goal: the lowest val_mse. Trials left: 7.",
        "Best config so far: run_0000, val_mse 0.52: model.d_model=32, model.e_layers=2, model.factor=5, "
        "model.dropout=0.05, model.attn=prob, model.distil=true, train.learning_rate=0.001, train.momentum=0.9",
        "Trials, best first (changes to the best config):",
        "val_mse 0.52: no change",
        "val_mse 0.9 (pruned): model.attn=full",
        "What the best third of the trials share:",
        "- model.attn: prob in 2 of 2 best (0 of 3 others)",
        "Candidates (changes to the best config):",
        "0: model.factor=17, train.learning_rate=0.00346",
        "1: model.d_model=64",
        'Answer as JSON: {"choice": <0 to 1>, "reasoning": "..."}, where reasoning says in one sentence why that '
        "candidate should lower val_mse.",
    ]


# --------------------------------------------------------------------------- under llama.cpp's grammar


@pytest.fixture(scope="module")
def grammar_router(tiny_model: dict[str, Path]) -> Iterator[Router]:
    lc.unload_all()
    cfg = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["gguf"])}},
        "routes": {"planner": {"primary": ["tiny"]}},
        "retries": 0,
    })
    with Router.from_config(cfg) as router:
        yield router
    lc.unload_all()


def test_twenty_constrained_choices_and_plans_from_a_tiny_gguf_are_all_valid(grammar_router: Router) -> None:
    shown = SPACE.rounded(SUGGESTED)
    candidates = [diff(shown, CURRENT), {"model.d_model": 64}, {"model.attn": "full"}, {"model.e_layers": 3}]
    messages = choice_messages(goal="the lowest val_mse", budget_left=5, incumbent=format_changes(CURRENT),
                               history=["val_mse 0.52: no change"], summary=[], candidates=candidates,
                               metric="val_mse")
    schema = choice_model(len(candidates))
    values = SPACE.offered(CURRENT, [shown])
    own = own_messages(goal="the lowest val_mse", target="val_mse 0.49", incumbent=format_changes(CURRENT),
                       history=["val_mse 0.52: no change"], summary=[], values=values)
    plans: list[dict[str, Any]] = []
    choices: set[int] = set()
    for seed in range(20):
        params = GenParams(seed=seed, temperature=1.0)
        result = grammar_router.structured_sync(messages, schema, route="planner", max_repairs=0, show_schema=False,
                                                params=params)
        completion = result.completion.completion
        assert result.repairs == 0 and completion.finish_reason == "stop"  # complete JSON, never cut
        reply = json.loads(completion.text)
        assert list(reply) == ["choice", "reasoning"] and reply["choice"] in range(4)
        choices.add(reply["choice"])
        plan = grammar_router.structured_sync(own, plan_model(values), route="planner", max_repairs=0,
                                              show_schema=False, params=params)
        completion = plan.completion.completion
        assert plan.repairs == 0 and completion.finish_reason == "stop"
        assert 0 < completion.usage.completion_tokens <= max_output_chars(plan_model(values).model_json_schema())
        reply = json.loads(completion.text)  # the raw reply is JSON as it is
        assert list(reply) == ["changes", "reasoning"] and len(reply["reasoning"]) <= REASONING_CHARS
        changes, errors = SPACE.validate(plan.value.changes)
        assert errors == [] and changes == reply["changes"]
        assert all(v in values[k] and v != CURRENT[k] for k, v in changes.items())  # in the space, a real change
        assert all(not isinstance(v, float) or math.isfinite(v) for v in changes.values())
        plans.append(changes)
    assert len(choices) >= 2 and len({json.dumps(p, sort_keys=True) for p in plans}) >= 5  # sampled, not repeated

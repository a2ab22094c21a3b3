"""The LLM planner's space-derived plan schema and compact prompt: values offered per key, the JSON schema, and plans
drawn under llama.cpp's grammar from it (a random-weight GGUF: anything it writes is valid only by the grammar)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.providers import llama_cpp as lc
from agentlab.core.llm.providers.scripted import ScriptedProvider
from agentlab.core.llm.router import Router
from agentlab.core.llm.structured import max_output_chars, with_instruction
from agentlab.core.llm.types import GenParams
from agentlab.core.search.planners import LLMPlanner, PlanContext, Proposal, diff, origin, params_key
from agentlab.core.search.prompts import (
    REASONING_CHARS,
    brief,
    compact_messages,
    plan_model,
    plan_schema,
    rich_messages,
    trial_line,
)
from agentlab.core.search.records import TrialRecord
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
}, meanings={"model.d_model": "model width (even)", "model.attn": "prob: ProbSparse self-attention; full: dense"})
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
    assert list(plan_schema({}, reasoning_first=True)["properties"]) == ["reasoning", "changes"]
    model = plan_model({"model.d_model": [16]})
    assert model.__name__ == "Plan" and model.model_json_schema() == plan_schema({"model.d_model": [16]})
    # validation is lenient (the planner checks changes against the space with its own messages)
    plan = model.model_validate_json('{"changes": {"model.d_model": 3}, "reasoning": "r", "extra": 1}')
    assert plan.changes == {"model.d_model": 3} and plan.reasoning == "r"
    chars = max_output_chars(model.model_json_schema())
    assert chars is not None and REASONING_CHARS < chars < REASONING_CHARS + 100


def test_origin_of_a_plan() -> None:
    suggested = {"a": 1, "b": True}
    assert origin({"a": 1, "b": True}, suggested) == "candidate"
    assert origin({"a": 1}, suggested) == "partial"
    assert origin({"b": 1}, suggested) == "own"  # True is not 1 here
    assert origin({"a": 1}, None) == "own"


def context(records: list[TrialRecord] | None = None) -> PlanContext:
    records = records if records is not None else [
        TrialRecord(number=0, state="complete", value=0.52, params=dict(CURRENT), planner="base", accepted=True),
        TrialRecord(number=1, state="pruned", value=0.9, params={**CURRENT, "model.attn": "full"}, planner="llm",
                    changes={"model.attn": "full"}),
        TrialRecord(number=2, state="failed", value=None, params={**CURRENT, "model.d_model": 64}, planner="tpe",
                    changes={"model.d_model": 64}),
    ]
    best = records[0] if records else None
    return PlanContext(space=SPACE, base_params=dict(CURRENT), incumbent=dict(CURRENT), records=records, best=best,
                       budget_left=7, metric="val_mse", check=lambda p: [], candidate=lambda *a: {})


def test_compact_prompt_is_a_table_and_one_line_per_trial() -> None:
    ctx = context()
    shown = SPACE.rounded(SUGGESTED)
    values = SPACE.offered(CURRENT, [shown])
    system, user = compact_messages(ctx, values, diff(shown, CURRENT), history=5)
    assert system["role"] == "system" and user["role"] == "user"
    assert user["content"].splitlines() == [
        "Goal: the lowest val_mse. Trials left: 7.",
        "Current config (the best so far, run_0000, val_mse 0.52):",
        "key | now | may change to | meaning",
        "model.d_model | 32 | 16, 64 | model width",
        "model.e_layers | 2 | 1, 3",
        "model.factor | 5 | 1, 10, 15, 17, 20, 25, 30, 35, 40",
        "model.dropout | 0.05 | 0, 0.1, 0.15, 0.2, 0.25, 0.3",
        "model.attn | prob | full | prob: ProbSparse self-attention",
        "model.distil | true | false",
        "train.learning_rate | 0.001 | 0.0001, 0.0002, 0.0005, 0.002, 0.00346, 0.005, 0.01",
        "train.momentum | 0.9 | 0.5, 0.6, 0.7, 0.8",
        "Recent trials:",
        "run_0000 (base): no change -> val_mse 0.52, accepted",
        "run_0001 (llm): model.attn=full -> val_mse 0.9, pruned",
        "run_0002 (tpe): model.d_model=64 -> failed",
        "Optimizer's suggestion: model.factor=17, train.learning_rate=0.00346",
        'Answer as JSON: {"changes": {"<key>": <new value>, ...}, "reasoning": "..."}, where reasoning says in one '
        "sentence why these changes should lower val_mse.",
    ]
    rich = with_instruction(rich_messages(ctx, diff(shown, CURRENT), history=5), plan_model(values))
    assert len(system["content"] + user["content"]) * 2 < sum(len(m["content"]) for m in rich)
    empty = compact_messages(context([]), values, None, history=5)[1]["content"]
    assert "Current config (the base config):" in empty and "(none yet)" in empty and "suggestion: (none)" in empty


def test_brief_meanings_and_trial_lines() -> None:
    assert brief("prob: ProbSparse self-attention; full: dense (SDPA)") == "prob: ProbSparse self-attention"
    assert brief("self-attention distilling (conv + ELU + max-pool) between encoder layers") == \
        "self-attention distilling"
    assert brief("a linear forecast over time added to the Informer's (DLinear, ...)") == \
        "a linear forecast over time added to..."
    record = TrialRecord(number=4, state="complete", value=0.123456, params={}, planner="tpe (llm fallback)",
                         changes={"train.learning_rate": 0.00123456, "model.distil": False}, accepted=False)
    assert trial_line(record, "val_mse") == ("run_0004 (tpe (llm fallback)): train.learning_rate=0.001235, "
                                             "model.distil=false -> val_mse 0.1235, rejected")


class FixedTPE:
    """Stands in for TPE: always the same proposal (the suggestion the LLM is shown, and the fallback)."""

    name = "tpe"

    def propose(self, ctx: PlanContext) -> Proposal:
        return Proposal(dict(SUGGESTED), diff(SUGGESTED, ctx.incumbent), "tpe")


def test_a_repeated_plan_is_re_asked_without_its_values() -> None:
    provider = ScriptedProvider("p").queue(
        '{"changes": {"model.d_model": 64}, "reasoning": "wider"}',  # tried already (run_0002)
        '{"changes": {"model.d_model": 16}, "reasoning": "narrower then"}')
    config = LLMConfig.model_validate({"providers": {"p": {"kind": "scripted"}},
                                       "models": {"m": {"provider": "p", "model": "m"}}})
    ctx = context()
    ctx.tried = {params_key(r.params) for r in ctx.records}
    with Router(config, {"p": provider}) as router:
        proposal = LLMPlanner(router, fallback=FixedTPE()).propose(ctx)
    assert proposal.planner == "llm" and proposal.changes == {"model.d_model": 16} and proposal.origin == "own"
    assert proposal.notes == ["plan 1 rejected: this exact configuration was already tried: propose a different one"]
    first, second = (c.params.json_schema["schema"]["properties"]["changes"]["properties"] for c in provider.calls)
    assert first["model.d_model"]["enum"] == [16, 64] and second["model.d_model"]["enum"] == [16]
    assert first["model.attn"] == second["model.attn"]  # the other keys keep their values
    ask = provider.calls[1].messages[-1]["content"]
    assert ask == ("Your plan was rejected: this exact configuration was already tried: propose a different one. "
                   "Propose a corrected plan as JSON only (the optimizer's suggestion is still untried: "
                   "model.factor=17, train.learning_rate=0.00346).")


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


def test_twenty_constrained_plans_from_a_tiny_gguf_all_parse_and_lie_in_the_space(grammar_router: Router) -> None:
    ctx = context()
    shown = SPACE.rounded(SUGGESTED)
    values = SPACE.offered(CURRENT, [shown])
    schema = plan_model(values)
    messages = compact_messages(ctx, values, diff(shown, CURRENT), history=5)
    plans: list[dict[str, Any]] = []
    for seed in range(20):
        result = grammar_router.structured_sync(messages, schema, route="planner", max_repairs=0, show_schema=False,
                                                params=GenParams(seed=seed, temperature=1.0))
        completion = result.completion.completion
        assert result.repairs == 0 and completion.finish_reason == "stop"  # complete JSON, never cut
        assert 0 < completion.usage.completion_tokens <= max_output_chars(schema.model_json_schema())
        reply = json.loads(completion.text)  # the raw reply is JSON as it is
        assert list(reply) == ["changes", "reasoning"] and len(reply["reasoning"]) <= REASONING_CHARS
        changes, errors = SPACE.validate(result.value.changes)
        assert errors == [] and changes == reply["changes"]
        assert all(v in values[k] and v != CURRENT[k] for k, v in changes.items())  # in the space, a real change
        assert all(not isinstance(v, float) or math.isfinite(v) for v in changes.values())
        plans.append(changes)
    assert len({json.dumps(p, sort_keys=True) for p in plans}) >= 5  # sampled plans, not one answer repeated

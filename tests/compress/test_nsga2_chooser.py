"""The compress LLM planner's parts without a model: K distinct NSGA-II candidates whose first is what NSGA-II alone
runs, NSGA-II's population fixed by the budget (it breeds within the search), the bandit's steps on the feasible
front, and the contribution's hypervolume with and without the LLM's picks."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("optuna")

from agentlab.compress.objective import parse_objective  # noqa: E402
from agentlab.compress.planners import (  # noqa: E402
    ChooserSettings,
    Context,
    contribution,
    front_steps,
    optuna_candidates,
    population_size,
    propose_chosen,
    propose_optuna,
)
from agentlab.compress.space import Space, experiment_key  # noqa: E402
from agentlab.testing.choosers import FixedChooser  # noqa: E402

GOAL = parse_objective("maximize speedup, minimize perplexity")
SPACE = Space.build(n_layers=4, cuda=False)


def record(index: int, speedup: float, perplexity: float, planner: str = "llm", origin: str = "classical",
           experiment: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "label": f"e{index}", "state": "done", "feasible": True, "planner": planner,
            "origin": origin, "experiment": experiment, "derived": {"speedup": speedup, "perplexity": perplexity}}


def test_candidates_are_distinct_and_the_first_is_nsga2s() -> None:
    ctx = Context(GOAL, SPACE, seed=3, iteration=1, records=[record(0, 1.0, 10.0, "base")], trials=[], budget=8)
    cands = optuna_candidates(ctx, "nsga2", 4)
    assert len(cands) == 4 and len({experiment_key(c.experiment) for c in cands}) == 4
    assert cands[0].experiment == propose_optuna(ctx, "nsga2").experiment
    assert population_size(8) == 4 and population_size(40) == 10 and population_size(3) == 4


def test_steps_count_growth_of_the_feasible_front_and_contribution_compares_hypervolumes() -> None:
    records = [record(0, 1.0, 10.0, "base"), record(1, 1.5, 12.0), record(2, 1.2, 14.0, origin="picked"),
               record(3, 2.0, 11.0, origin="picked"), record(4, 1.8, 20.0)]
    steps = front_steps(GOAL, records)
    assert [(s.origin, s.improved) for s in steps] == [("classical", True), ("picked", False), ("picked", True),
                                                       ("classical", False)]
    block = contribution(GOAL, records, ChooserSettings(FixedChooser(0, "m"), share=0.3))
    assert block["differed"] == 2 and block["new_bests"] == {"llm_picks": 1, "sampler": 1}
    without = block["without_llm_picks"]
    assert without["reference"] == [1.0, 20.0]
    assert without["hypervolume"] > without["hypervolume_without_llm_picks"] > 0


def test_a_scripted_choice_runs_and_warm_up_is_the_samplers() -> None:
    base = [record(0, 1.0, 10.0, "base")]
    settings = ChooserSettings(FixedChooser(2, "m"), share=1.0, adapt=False)
    warm = propose_chosen(Context(GOAL, SPACE, 0, 1, base, [], budget=8), settings)
    assert warm.extra["origin"] == "classical" and warm.extra["choice"] == 0
    done = base + [record(i, 1.0 + i / 10, 10.0 + i, experiment={"quantize": {"method": m}})
                   for i, m in ((1, "int8_weight_only"), (2, "int8_dynamic"))]
    ctx = Context(GOAL, SPACE, 0, 3, done, [], budget=8)
    picked = propose_chosen(ctx, settings)
    assert picked.extra["origin"] == "picked" and picked.extra["choice"] == 2
    assert picked.experiment == optuna_candidates(ctx, "nsga2", 4)[2].experiment


def test_the_surrogate_chooser_ranks_nsga2_proposals_on_both_objectives() -> None:
    from agentlab.testing.choosers import SurrogateChooser

    done = [record(0, 1.0, 10.0, "base")] + [
        record(i, 1.0 + i / 10, 10.0 + i, experiment={"quantize": {"method": m}})
        for i, m in ((1, "int8_weight_only"), (2, "int8_dynamic"), (3, "torch_dynamic_int8"))]
    ctx = Context(GOAL, SPACE, 0, 4, done, [], budget=8)
    picked = propose_chosen(ctx, ChooserSettings(SurrogateChooser(), share=1.0, adapt=False))
    assert picked.extra["origin"] in ("kept", "picked") and 0 <= picked.extra["choice"] < 4

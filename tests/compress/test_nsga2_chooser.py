"""The compress LLM planner's parts without a model: K distinct NSGA-II candidates whose first is what NSGA-II alone
runs, NSGA-II's population fixed by the budget (it breeds within the search), the bandit's steps on the feasible
front, and the contribution's hypervolume with and without the LLM's picks."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("optuna")

from agentlab.compress.objective import parse_objective  # noqa: E402
from agentlab.compress.planners import (  # noqa: E402
    ExperimentDomain,
    experiment_results,
    front_steps,
    optuna_candidates,
    population_size,
)
from agentlab.compress.space import Space, experiment_key  # noqa: E402
from agentlab.core.search.planners import ChooserPlanner, OptunaPlanner  # noqa: E402
from agentlab.testing.choosers import FixedChooser  # noqa: E402

GOAL = parse_objective("maximize speedup, minimize perplexity")
SPACE = Space.build(n_layers=4, cuda=False)


def record(index: int, speedup: float, perplexity: float, planner: str = "llm", origin: str = "classical",
           experiment: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"index": index, "label": f"e{index}", "state": "done", "feasible": True, "planner": planner,
            "origin": origin, "experiment": experiment, "derived": {"speedup": speedup, "perplexity": perplexity}}


def test_candidates_are_distinct_and_the_first_is_nsga2s() -> None:
    ctx = ExperimentDomain(GOAL, SPACE, seed=3, iteration=1, records=[record(0, 1.0, 10.0, "base")], trials=[],
                           budget=8)
    cands = optuna_candidates(ctx, "nsga2", 4)
    assert len(cands) == 4 and len({experiment_key(ctx.experiment(c.params)) for c in cands}) == 4
    alone = OptunaPlanner("nsga2").propose(ctx.context())
    assert ctx.experiment(cands[0].params) == ctx.experiment(alone.params) and alone.planner == "nsga2"
    assert population_size(8) == 4 and population_size(40) == 10 and population_size(3) == 4


def test_steps_count_growth_of_the_feasible_front_and_contribution_compares_hypervolumes() -> None:
    records = [record(0, 1.0, 10.0, "base"), record(1, 1.5, 12.0), record(2, 1.2, 14.0, origin="picked"),
               record(3, 2.0, 11.0, origin="picked"), record(4, 1.8, 20.0)]
    steps = front_steps(GOAL, records)
    assert [(s.origin, s.improved) for s in steps] == [("classical", True), ("picked", False), ("picked", True),
                                                       ("classical", False)]
    block = ChooserPlanner(FixedChooser(0, "m"), share=0.3, sampler="nsga2").report(
        experiment_results(GOAL, records))["llm_contribution"]
    assert block["differed"] == 2 and block["new_bests"] == {"llm_picks": 1, "sampler": 1}
    without = block["without_llm_picks"]
    assert without["reference"] == [1.0, 20.0]
    assert without["hypervolume"] > without["hypervolume_without_llm_picks"] > 0


def test_a_scripted_choice_runs_and_warm_up_is_the_samplers() -> None:
    base = [record(0, 1.0, 10.0, "base")]
    planner = ChooserPlanner(FixedChooser(2, "m"), share=1.0, adapt=False, sampler="nsga2")
    warm = planner.propose(ExperimentDomain(GOAL, SPACE, 0, 1, base, [], budget=8).context())
    assert warm.origin == "classical" and warm.choice == 0 and warm.warmup
    done = base + [record(i, 1.0 + i / 10, 10.0 + i, experiment={"quantize": {"method": m}})
                   for i, m in ((1, "int8_weight_only"), (2, "int8_dynamic"))]
    ctx = ExperimentDomain(GOAL, SPACE, 0, 3, done, [], budget=8)
    picked = planner.propose(ctx.context())
    assert picked.origin == "picked" and picked.choice == 2 and picked.planner == "llm"
    assert ctx.experiment(picked.params) == ctx.experiment(optuna_candidates(ctx, "nsga2", 4)[2].params)


def test_the_surrogate_chooser_ranks_nsga2_proposals_on_both_objectives() -> None:
    from agentlab.testing.choosers import SurrogateChooser

    done = [record(0, 1.0, 10.0, "base")] + [
        record(i, 1.0 + i / 10, 10.0 + i, experiment={"quantize": {"method": m}})
        for i, m in ((1, "int8_weight_only"), (2, "int8_dynamic"), (3, "torch_dynamic_int8"))]
    ctx = ExperimentDomain(GOAL, SPACE, 0, 4, done, [], budget=8)
    picked = ChooserPlanner(SurrogateChooser(), share=1.0, adapt=False, sampler="nsga2").propose(ctx.context())
    assert picked.origin in ("kept", "picked") and picked.choice is not None and 0 <= picked.choice < 4


def test_a_sampler_that_keeps_repeating_itself_gets_an_untried_random_experiment() -> None:
    """TPE settles on a few experiments (an experiment ignores the settings its steps do not use, so most of its
    draws repeat one); after ``TRIES`` repeats the search goes on with an untried random experiment instead of
    stopping with thousands left."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from agentlab.core.search.records import A_PLAN

    study = optuna.create_study(directions=[o.direction for o in GOAL.objectives])
    records = [record(0, 1.0, 10.0, "base")]
    samplers: dict[str, Any] = {}
    keys: set[str] = set()
    notes: list[str] = []
    for it in range(1, 21):
        ctx = ExperimentDomain(GOAL, SPACE, 5, it, records, study.get_trials(deepcopy=False), budget=20,
                               samplers=samplers)
        proposal = optuna_candidates(ctx, "tpe", 1)[0]
        exp = ctx.experiment(proposal.params)
        key = experiment_key(exp)
        assert key not in keys
        keys.add(key)
        if proposal.notes:
            notes += proposal.notes
            break
        h = sum(map(ord, key)) % 53
        study.add_trial(create_trial(state=TrialState.COMPLETE, values=[1 + h / 10, 10 + (h * 7) % 13],
                                     params=proposal.params, distributions=SPACE.distributions(),
                                     user_attrs={A_PLAN: {"extra": {"key": key}}}))
        records.append(record(it, 1 + h / 10, 10 + (h * 7) % 13, "tpe", experiment=exp.model_dump()))
    assert notes == ["tpe drew only experiments run already (or none) in 300 draws: a random untried one"]

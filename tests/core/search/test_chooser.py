"""The LLM planner as a chooser among the sampler's candidates, on a cheap objective with scripted choosers: always
candidate 0 is TPE trial for trial, a uniform random choice is TPE in expectation, picks other than 0 stay within
the share, the bandit takes the share from a chooser whose picks do not pay, the record of a model's picks carries
over to the next search, and what the LLM is shown and may answer."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import optuna
import pytest

from agentlab.core.errors import LLMError
from agentlab.core.search import share as S
from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import SearchLoop, StopRules
from agentlab.core.search.planners import (
    Choice,
    ChoiceRequest,
    ChooserPlanner,
    LLMChooser,
    OptunaPlanner,
    PlanContext,
    params_key,
    trial_steps,
)
from agentlab.core.search.prompts import choice_model, choice_schema, good_trials_summary
from agentlab.core.search.space import ParamSpec, SearchSpace
from agentlab.testing.choosers import FixedChooser, RandomChooser, SurrogateChooser

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0), "y": ParamSpec(low=-5.0, high=5.0),
                     "kind": ParamSpec(choices=["a", "b", "c"]), "width": ParamSpec(choices=[8, 16, 32, 64])})
BASE = {"x": 4.0, "y": 4.0, "kind": "c", "width": 64}


class Bowl:
    """value = (x - 1)^2 + (y + 2)^2 + a cost per kind and width: cheap, smooth, one optimum."""

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        value = ((params["x"] - 1) ** 2 + (params["y"] + 2) ** 2 + {"a": 0.0, "b": 1.0, "c": 3.0}[params["kind"]]
                 + params["width"] / 32)
        return {"value": value}


def search(planner: Any, seed: int, trials: int = 12) -> list[Any]:
    study = new_study(direction="minimize")
    loop = SearchLoop(study=study, space=SPACE, base_params=dict(BASE), objective=Bowl(), planner=planner,
                      evaluator=HybridEvaluator(0.0), stop=StopRules(trials), seed=seed, metric="val")
    return loop.run().records


def test_always_candidate_0_is_tpe_trial_for_trial() -> None:
    for seed in (0, 1):
        tpe = [r.params for r in search(OptunaPlanner("tpe"), seed)]
        chooser = FixedChooser(0)
        records = search(ChooserPlanner(chooser, share=1.0, adapt=False), seed)
        assert [r.params for r in records] == tpe
        assert chooser.calls >= 6  # asked on every trial after TPE's warm-up
        assert {r.origin for r in records[1:]} == {"classical", "kept"}


def test_uniform_random_choice_matches_tpe_in_expectation() -> None:
    # Every candidate is a TPE draw on its own seed, so a random pick is TPE in distribution. Fixed seeds make the
    # test deterministic; the tolerance, 3 standard errors of the difference of the means, is what it allows.
    seeds = range(16)
    tpe = [min(r.value for r in search(OptunaPlanner("tpe"), s, 10)) for s in seeds]
    placebo = [min(r.value for r in search(ChooserPlanner(RandomChooser(), share=1.0, adapt=False), s, 10))
               for s in seeds]
    se = math.sqrt(statistics.variance(tpe) / len(tpe) + statistics.variance(placebo) / len(placebo))
    assert abs(statistics.mean(placebo) - statistics.mean(tpe)) < 3 * se + 0.05


def test_picks_other_than_0_stay_within_the_share() -> None:
    records = search(ChooserPlanner(FixedChooser(3), share=0.3, adapt=False), seed=2, trials=16)
    planned = [r for r in records if r.planner == "llm"]
    picks = [r.choice not in (None, 0) for r in planned]
    for n in range(1, len(picks) + 1):
        assert sum(picks[:n]) <= math.ceil(0.3 * n)
    assert 0 < sum(picks) <= 0.3 * len(planned)
    assert {r.candidates for r in planned if r.origin != "classical"} == {4}  # only candidate 0 drawn otherwise
    assert len({params_key(r.params) for r in records}) == len(records)


def test_the_bandit_gives_a_chooser_whose_picks_fail_a_smaller_share() -> None:
    losing = [S.Step("picked")] * 6 + [S.Step("classical", True)] * 4 + [S.Step("classical")] * 6
    winning = [S.Step("picked", True)] * 4 + [S.Step("classical")] * 12
    opened = {name: sum(S.open_to_llm(1.0, steps, 40, seed)[0] for seed in range(200))
              for name, steps in (("losing", losing), ("winning", winning))}
    assert opened["losing"] < 40 < 160 < opened["winning"]
    five = [S.Step("picked", True)] * 5 + [S.Step("classical")] * 8
    assert S.open_to_llm(0.3, five, 40, 0) == (False, "llm_share 0.3 used (5 of 13 trials were LLM picks)")
    # a model remembered to fail starts with a smaller share than one without a record
    prior = {"classical": [5, 20], "llm": [0, 20]}
    fresh = sum(S.open_to_llm(1.0, [], 20, seed)[0] for seed in range(200))
    remembered = sum(S.open_to_llm(1.0, [], 20, seed, prior)[0] for seed in range(200))
    assert remembered < fresh / 3


def test_the_record_of_a_models_picks_carries_over(tmp_path: Path) -> None:
    memory = S.PickMemory(tmp_path / "ws" / "llm_picks.json")
    planner = ChooserPlanner(FixedChooser(1, name="m"), share=1.0, adapt=False, memory=memory, search_id="run-a")
    records = search(planner, seed=0, trials=8)
    warmup = sum(1 for r in records if r.planner == "llm" and r.warmup)
    block = planner.contribution(trial_steps(records, "llm", False), warmup)
    stored = json.loads(memory.path.read_text())["models"]["m"]["run-a"]
    assert sum(n for _, n in stored.values()) == block["trials"] == 5 and block["warmup_trials"] == 2
    assert memory.prior("m", exclude="run-a") == {"classical": [0, 0], "llm": [0, 0]}
    assert memory.prior("m", exclude="run-b") == stored
    assert ChooserPlanner(FixedChooser(1, name="m"), memory=memory, search_id="run-b").prior == stored
    assert block["differed"] == stored["llm"][1] > 0 and block["asked"] >= block["differed"]


class Silent:
    name = "silent"

    def choose(self, request: ChoiceRequest) -> Choice:
        return Choice(None, note="no answer from the planner LLM: timeout: took too long")


def test_no_answer_runs_candidate_0_and_is_recorded() -> None:
    records = search(ChooserPlanner(Silent(), share=1.0, adapt=False), seed=0, trials=8)
    assert [r.params for r in records] == [r.params for r in search(OptunaPlanner("tpe"), 0, 8)]
    silent = [r for r in records if r.origin == "no answer"]
    assert silent and all(r.choice == 0 and "timeout" in r.notes[0] for r in silent)
    block = S.contribution(S_steps(records), model="silent", candidates=4, share=1.0)
    assert block["no_answer"] == len(silent) and block["chosen_by_llm"] == 0 and block["differed"] == 0


def S_steps(records: list[Any]) -> list[S.Step]:  # noqa: N802
    return [S.Step(r.origin) for r in records if r.planner == "llm"]


def test_surrogate_chooser_picks_the_candidate_nearest_the_optimum() -> None:
    history = [({"x": x, "y": -2.0, "kind": "a", "width": 8}, [(x - 1) ** 2]) for x in (-4.0, -2.0, 0.0, 3.0, 5.0)]
    request = ChoiceRequest([], [{"x": -4.5, "y": -2.0, "kind": "a", "width": 8},
                                 {"x": 1.2, "y": -2.0, "kind": "a", "width": 8},
                                 {"x": 4.5, "y": -2.0, "kind": "a", "width": 8}], history, ["minimize"],
                            SPACE.distributions)
    assert SurrogateChooser().choose(request).index == 1


def _ctx(records: list[Any] | None = None) -> PlanContext:
    study = new_study(direction="minimize")
    loop = SearchLoop(study=study, space=SPACE, base_params=dict(BASE), objective=Bowl(),
                      planner=OptunaPlanner("tpe"), evaluator=HybridEvaluator(0.0), stop=StopRules(6), seed=0)
    loop.run()
    ctx = loop._context(loop.records())
    ctx.budget_left = 4
    return ctx


def test_candidates_are_distinct_untried_and_0_is_tpes() -> None:
    ctx = _ctx()
    cands = [c.params for c in ctx.domain.draw("tpe", 5)]
    # the sampler is kept for the search: the same search, planned by TPE alone, draws candidate 0
    assert cands[0] == OptunaPlanner("tpe").propose(_ctx()).params
    keys = [params_key(c) for c in cands]
    assert len(cands) == 5 and len(set(keys)) == 5 and not set(keys) & ctx.domain.tried  # type: ignore[attr-defined]


class _Result:
    def __init__(self, value: Any):
        self.value = value


class _Router:
    def __init__(self, answer: Any):
        self.answer, self.calls = answer, []

    def route(self, name: str) -> tuple[Any, list[str]]:
        return None, ["small-m"]

    def structured_sync(self, messages: list[dict[str, str]], schema: Any, **kwargs: Any) -> _Result:
        self.calls.append((messages, schema, kwargs))
        if isinstance(self.answer, Exception):
            raise self.answer
        return _Result(schema.model_validate(self.answer))


def test_the_llm_is_shown_candidates_history_and_summary_and_answers_under_the_schema() -> None:
    router = _Router({"choice": 2, "reasoning": "kind a scored best"})
    planner = ChooserPlanner(LLMChooser(router), share=1.0, adapt=False)  # type: ignore[arg-type]
    ctx = _ctx()
    proposal = planner.propose(ctx)
    messages, schema, kwargs = router.calls[0]
    assert kwargs == {"route": "planner", "max_repairs": 0, "show_schema": False}  # no re-ask
    assert schema.model_json_schema()["properties"]["choice"]["enum"] == [0, 1, 2, 3]
    assert proposal.origin == "picked" and proposal.choice == 2 and proposal.reasoning == "kind a scored best"
    assert proposal.params == _ctx().domain.draw("tpe", 4)[2].params  # the same search
    user = messages[1]["content"].splitlines()
    assert user[0] == "Goal: the lowest value. Trials left: 4."
    assert "Trials, best first (changes to the best config):" in user
    assert any(line.startswith("0: ") for line in user) and any(line.startswith("3: ") for line in user)
    assert user[-1].startswith('Answer as JSON: {"choice": <0 to 3>')
    assert LLMChooser(_Router(LLMError("down", "timeout"))).choose(  # type: ignore[arg-type]
        ChoiceRequest(messages, [{}, {}], [], ["minimize"], SPACE.distributions)).index is None


def test_a_model_that_does_not_exist_is_asked_once_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """HTTP 404 (no such model) or a refused key: no later call answers, so the chooser stops asking and says why
    once; a failure that may pass (a timeout) is asked again."""
    from agentlab.core.errors import AllModelsFailed

    gone = _Router(AllModelsFailed("planner", [("small-m", "not_found", "HTTP 404: no such model")]))
    planner = ChooserPlanner(LLMChooser(gone), share=1.0, adapt=False)  # type: ignore[arg-type]
    with caplog.at_level("WARNING"):
        proposals = [planner.propose(_ctx()) for _ in range(3)]
    assert len(gone.calls) == 1
    assert [p.origin for p in proposals] == ["no answer"] * 3 and all(p.choice == 0 for p in proposals)
    assert "not asked again" in proposals[2].notes[-1]
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1, caplog.text
    flaky = _Router(AllModelsFailed("planner", [("small-m", "timeout", "30 s"), ("small-m", "circuit_open", "")]))
    chooser = LLMChooser(flaky)  # type: ignore[arg-type]
    for _ in range(2):
        chooser.choose(ChoiceRequest([], [{}, {}], [], ["minimize"], SPACE.distributions))
    assert len(flaky.calls) == 2
    other = _Router(AllModelsFailed("planner", [("a", "not_found", "404"), ("b", "circuit_open", "")]))
    chooser = LLMChooser(other)  # type: ignore[arg-type]
    for _ in range(2):  # b's breaker may close after its cooldown: b is not gone
        chooser.choose(ChoiceRequest([], [{}, {}], [], ["minimize"], SPACE.distributions))
    assert len(other.calls) == 2


def test_the_own_candidate_is_added_when_valid() -> None:
    class Own(_Router):
        def structured_sync(self, messages: Any, schema: Any, **kwargs: Any) -> _Result:
            self.calls.append((messages, schema, kwargs))
            answer = {"changes": {"kind": "a", "x": 1.0}, "reasoning": "r"} if len(self.calls) == 1 else \
                {"choice": 4, "reasoning": "mine"}
            return _Result(schema.model_validate(answer))

    router = Own(None)
    proposal = ChooserPlanner(LLMChooser(router), share=1.0, adapt=False,  # type: ignore[arg-type]
                              own_candidate=True).propose(_ctx())
    assert "Target: value " in router.calls[0][0][1]["content"]
    assert proposal.origin == "own" and proposal.candidates == 5
    assert proposal.params["kind"] == "a" and proposal.params["x"] == 1.0


def test_choice_schema_and_reply() -> None:
    schema = choice_schema(3)
    assert schema["properties"]["choice"] == {"type": "integer", "enum": [0, 1, 2],
                                              "description": "the index of the candidate to run next"}
    assert list(schema["properties"]) == ["choice", "reasoning"] and schema["additionalProperties"] is False
    model = choice_model(3)
    assert model.model_validate({"choice": 2}).choice == 2
    with pytest.raises(ValueError, match="not a candidate"):
        model.model_validate({"choice": 3, "reasoning": "r"})


def test_good_trials_summary() -> None:
    rows = [({"kind": "a", "x": 1.0 + i / 10}, float(i)) for i in range(3)] + \
        [({"kind": "c", "x": -4.0 + i}, 10.0 + i) for i in range(6)]
    lines = good_trials_summary(rows, ["kind", "x"])
    assert lines[0] == "kind: a in 3 of 3 best (0 of 6 others)"
    assert lines[1].startswith("x: best 1..1.2 (median 1.1), others -4..1")
    assert good_trials_summary(rows[:2], ["kind"]) == []


def test_cmaes_keeps_its_state_on_the_trials_and_breeds() -> None:
    space = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0), "y": ParamSpec(low=-5.0, high=5.0)})

    class Sphere:
        def check(self, params: dict[str, Any]) -> list[str]:
            return []

        def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
            return {"value": (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2}

    study = new_study(direction="minimize")
    SearchLoop(study=study, space=space, base_params={"x": 4.0, "y": 4.0}, objective=Sphere(),
               planner=OptunaPlanner("cmaes"), evaluator=HybridEvaluator(0.0), stop=StopRules(20), seed=0).run()
    generations = [t.system_attrs.get("cma:generation") for t in study.trials]
    assert max(g for g in generations if g is not None) >= 1  # restored from the trials, not restarted each ask
    with pytest.raises(ValueError, match="unknown optuna planner"):
        OptunaPlanner("llm")  # not a sampler

"""Conditional search spaces (``when``): define-by-run sampling, LLM offers and checks, and the loop over them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from agentlab.core.errors import ConfigError
from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import SearchLoop, StopRules
from agentlab.core.search.planners import OptunaPlanner
from agentlab.core.search.space import ParamSpec, SearchSpace
from agentlab.core.search.study import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARAMS = {
    "family": ParamSpec(choices=["lin", "tf"]),
    "lr": ParamSpec(low=1e-3, high=1e-1, log=True, when={"family": ["lin"]}),
    "width": ParamSpec(choices=[8, 16, 32], when={"family": ["tf"]}),
    "heads": ParamSpec(choices=[1, 2, 4], when={"family": ["tf"], "mode": ["big"]}),  # mode: outside the space
    "lookback": ParamSpec(choices=[24, 48, 96]),
}
BASE = {"family": "lin", "lr": 0.01, "width": 16, "heads": 2, "lookback": 48, "mode": "big"}


def space(**base: Any) -> SearchSpace:
    return SearchSpace(PARAMS, base={**BASE, **base})


def test_only_the_keys_whose_conditions_hold_are_active() -> None:
    s = space()
    assert s.active({"family": "lin"}) == ["family", "lr", "lookback"]
    assert s.active({"family": "tf"}) == ["family", "width", "heads", "lookback"]
    assert space(mode="small").active({"family": "tf"}) == ["family", "width", "lookback"]  # base value decides
    # a switch to tf brings its keys at their base values and drops lr
    assert s.complete({"family": "tf", "lr": 0.05, "lookback": 96, "width": 32}) == {
        "family": "tf", "width": 32, "heads": 2, "lookback": 96}
    assert s.complete(s.base) == {"family": "lin", "lr": 0.01, "lookback": 48}
    assert s.fits({"family": "lin", "lr": 0.01, "lookback": 48})
    assert not s.fits({"family": "lin", "lr": 0.01, "width": 8, "lookback": 48})  # width does not apply to lin
    assert s.inactive({"width": 8}, {"family": "lin", "lr": 0.01, "lookback": 48}) == [
        "width: applies only when family in [tf]"]
    assert s.condition("width") == "family in [tf]" and s.condition("family") == ""


def test_a_cycle_of_conditions_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cycle"):
        SearchSpace({"a": ParamSpec(choices=[1, 2], when={"b": [1]}), "b": ParamSpec(choices=[1, 2], when={"a": [1]})})


def test_define_by_run_draws_only_active_keys() -> None:
    s = space()
    study = new_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = s.sample(trial)
        assert s.fits(params) and params == trial.params
        seen.add(params["family"])
        study.tell(trial, 1.0)
    assert seen == {"lin", "tf"}


def test_llm_offers_show_only_relevant_keys() -> None:
    s = space()
    incumbent = s.complete(s.base)
    assert set(s.offered(incumbent)) == {"family", "lr", "lookback"}
    suggestion = {"family": "tf", "width": 32, "heads": 1, "lookback": 48}
    assert set(s.offered(incumbent, [suggestion])) == {"family", "lr", "lookback", "width", "heads"}


def test_a_lead_an_own_candidate_and_an_agent_config_pass_one_check() -> None:
    """``TrialDomain.config``: over the incumbent (a lead: over the base config), refused when outside the space,
    inactive for the result, empty, or the params of a trial tried (a lead: or waiting; the own: or a candidate)."""
    from agentlab.core.search.agent import TrialView
    from agentlab.core.search.planners import TrialDomain, params_key
    from agentlab.core.search.records import TrialRecord

    s = space()
    base = s.complete(s.base)
    tf = s.complete({**s.base, "family": "tf"})
    waiting = s.complete({**s.base, "lookback": 96})
    domain = TrialDomain(space=s, base_params=base, incumbent=tf, records=[TrialRecord(1, "waiting", None, waiting)],
                         best=None, metric="m", check=lambda p: [], candidate=lambda *a, **k: None,
                         tried={params_key(base), params_key(tf)})
    assert domain.config({"width": 32}) == ({**tf, "width": 32}, "")  # over the incumbent
    assert domain.lead({"family": "tf", "width": 32}) == ({**tf, "width": 32}, "")  # over the base config
    assert domain.config({"lr": 0.02})[1] == "lr: applies only when family in [lin]"
    assert domain.config({})[1] == "changes is empty" and "not in the search space" in domain.config({"x": 1})[1]
    assert domain.config({"width": 16})[0] is None  # the incumbent itself: tried
    assert domain.config({"lookback": 96}, base)[0] == waiting and domain.lead({"lookback": 96})[0] is None
    assert domain.config({"width": 8}, taken=[{**tf, "width": 8}])[0] is None  # the own candidate's: a candidate
    assert TrialView(domain).config({"width": 32}) == domain.config({"width": 32})


class _Objective:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        self.calls.append(params)
        value = (params.get("lr", 0.05) - 0.02) ** 2 if params["family"] == "lin" else 1 / params["width"]
        return {"value": value + params["lookback"] / 1000, "n_params": 10}


@pytest.mark.parametrize("planner", ["tpe", "random"])
def test_the_loop_searches_a_conditional_space_and_resumes(tmp_path: Path, planner: str) -> None:
    def loop(objective: _Objective, n: int) -> SearchLoop:
        s = space()
        study = new_study(study_name="c", storage=open_storage(None, tmp_path), direction="minimize",
                                    load_if_exists=True)
        return SearchLoop(study=study, space=s, base_params=s.complete(s.base), objective=objective,
                          planner=OptunaPlanner(planner), evaluator=HybridEvaluator(0.01), stop=StopRules(n), seed=3)

    first = _Objective()
    loop(first, 6).run()
    second = _Objective()
    outcome = loop(second, 12).run()  # a resumed search: the first six trials are the sampler's history
    assert len(first.calls) == 6 and len(second.calls) == 6 and len(outcome.records) == 12
    s = space()
    assert all(s.fits(r.params) for r in outcome.records)
    assert {r.params["family"] for r in outcome.records} == {"lin", "tf"}
    keys = [tuple(sorted(r.params.items())) for r in outcome.records]
    assert len(set(keys)) == len(keys)
    assert first.calls[0] == {"family": "lin", "lr": 0.01, "lookback": 48}


LIST_CHOICES = """\
import sys, optuna
from agentlab.core.search.engine import new_study
from agentlab.core.search.space import ParamSpec
from agentlab.core.search.study import open_storage
from pathlib import Path

spec = ParamSpec(choices=[[64, 64], [128], [32, 32, 32]])
for _ in range(2):  # created, then loaded again as a resumed search does
    study = new_study(study_name="l", storage=open_storage(None, Path(sys.argv[1])), load_if_exists=True)
    trial = study.ask()
    value = spec.suggest(trial, "sizes")
    study.tell(trial, 1.0)
    assert value in spec.choices and study.trials[-1].params == {"sizes": value}
print(study.trials[0].params["sizes"])
"""


def test_list_choices_are_stored_and_reloaded_without_optunas_warning(tmp_path: Path) -> None:
    """An argparse nargs option searched over lists: Optuna stores them as JSON, and its warning about non-scalar
    choices (once per trial, on the console of every such search) is not shown."""
    proc = subprocess.run([sys.executable, "-W", "default", "-c", LIST_CHOICES, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("[") and "categorical distribution" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("step", [-1, 0, float("nan")])
def test_a_step_that_is_not_positive_is_refused_at_validation(step: float) -> None:
    """Optuna raised `step > 0 must hold` after trial 0 had trained (an internal error, a failed run folder)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="step must be > 0"):
        ParamSpec(low=0.0, high=0.5, step=step)


def test_a_storage_url_of_no_known_database_is_refused_at_validation() -> None:
    """`--storage foo://bar` failed after the run folder existed (a half-made folder marked failed)."""
    from pydantic import ValidationError

    from agentlab.compress.config import CompressConfig
    from agentlab.evolve.config import EvolveConfig
    from agentlab.nas.config import NASConfig

    for bad, said in [("foo://bar", "not a storage URL Optuna can open"), ("sqlite:/x", "nor a journal file")]:
        with pytest.raises(ValidationError, match=said):
            NASConfig.model_validate({"search": {"storage": bad}})
        with pytest.raises(ValidationError, match=said):
            CompressConfig.model_validate({"search": {"storage": bad}})
        with pytest.raises(ValidationError, match=said):
            EvolveConfig.model_validate({"store": bad})
    for good in ("sqlite:///s.db", "postgresql://u@h/db", "runs/nas.journal", None):
        assert NASConfig.model_validate({"search": {"storage": good}}).search.storage == good

"""benchmarks/nas_selection.py replays the evaluator's rule as the search loop applies it: each trial judged against
the best accepted so far, the best accepted handed over."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from agentlab.core.search.records import TrialRecord


def trial(number: int, value: float, params: int, test: float) -> TrialRecord:
    return TrialRecord(number=number, state="complete", value=value, params={},
                       metrics={"n_params": params, "test_mse": test})


def test_a_smaller_trial_accepted_inside_the_band_is_not_handed_over_unless_it_is_better(
        load_script: Callable[[str], ModuleType]) -> None:
    band_choice = load_script("benchmarks/nas_selection.py").band_choice
    recs = [trial(0, 1.000, 1000, 0.5), trial(1, 1.005, 500, 0.6), trial(2, 0.996, 2000, 0.7)]
    # 1%: trial 1 is accepted (smaller, inside the band) but the best accepted stays trial 0; trial 2 is judged
    # against trial 0, inside the band and larger: rejected
    assert band_choice(recs, 0.01).number == 0
    assert band_choice(recs, 0.0).number == 2  # no band: the argmin of validation
    recs.append(trial(3, 0.990, 400, 0.8))  # better by more than 1% than trial 0: accepted and the best
    assert band_choice(recs, 0.01).number == 3

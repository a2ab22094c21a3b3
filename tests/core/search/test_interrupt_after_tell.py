"""A Ctrl-C that lands right after the study recorded a trial's end (its tell) waits until the trial's event and the
run's state (``Hooks.on_state``) are written: it no longer leaves a trial finished in the study that events.jsonl,
agent_state.json and the console never showed. The signal is delivered from a patched ``study.tell``, not by timing."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from test_loop import BASE, SPACE, Quadratic, make_loop

from agentlab.core.search.loop import Hooks, Pruned, SearchLoop, StopRules, TrialFailed
from agentlab.core.search.records import TrialRecord


class Failing(Quadratic):
    def __init__(self, how: str):
        super().__init__()
        self.how = how

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        if number == 0:
            return super().run(number, params, report)
        if self.how == "failed":
            raise TrialFailed("exit 1")
        if self.how == "pruned":
            raise Pruned({"value": 9.0})
        raise RuntimeError("out of memory")


pytestmark = pytest.mark.usefixtures("sigint_raises")  # xdist's workers ignore SIGINT


@pytest.mark.parametrize("how", ["complete", "failed", "pruned", "error"])
def test_ctrl_c_right_after_the_tell_still_writes_the_trials_event_and_state(tmp_path: Path, how: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    states: list[list[TrialRecord]] = []
    after: list[list[TrialRecord]] = []
    plain = make_loop(tmp_path, Quadratic() if how == "complete" else Failing(how), 10)
    loop = SearchLoop(study=plain.study, space=SPACE, base_params=dict(BASE), objective=plain.objective,
                      planner=plain.planner, evaluator=plain.evaluator, metric="val", seed=1,
                      stop=StopRules(max_iterations=10),
                      hooks=Hooks(on_event=lambda kind, **data: events.append((kind, data)),
                                  on_state=states.append, on_trial=after.append))
    tell = loop.study.tell

    def tell_then_ctrl_c(trial: Any, *args: Any, **kwargs: Any) -> Any:
        told = tell(trial, *args, **kwargs)
        if trial.number == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C the moment the study holds trial 1 finished
        return told

    loop.study.tell = tell_then_ctrl_c  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    finished = [t.number for t in loop.study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert finished == [0, 1]
    assert [data["number"] for kind, data in events if kind == "trial"] == [0, 1]  # events.jsonl's
    assert [r.number for r in states[-1] if r.state != "running"] == [0, 1]  # agent_state.json's, the console's
    assert len(after) == 1  # on_trial (slow work: MLflow, the ensemble) is not held: the stop comes before it


def test_a_second_ctrl_c_during_a_trials_end_stops_at_once(tmp_path: Path) -> None:
    """A storage write (the tell) that hangs stays stoppable: the second Ctrl-C is raised in it, not held (a hold of
    the write's own kept the second one too, and the user had to press a third time)."""
    events: list[str] = []
    plain = make_loop(tmp_path, Quadratic(), 10)
    loop = SearchLoop(study=plain.study, space=SPACE, base_params=dict(BASE), objective=plain.objective,
                      planner=plain.planner, evaluator=plain.evaluator, metric="val", seed=1,
                      stop=StopRules(max_iterations=10), hooks=Hooks(on_event=lambda kind, **data: events.append(kind)))
    tell = loop.study.tell

    def hanging_tell(trial: Any, *args: Any, **kwargs: Any) -> Any:
        if trial.number == 1:
            signal.raise_signal(signal.SIGINT)  # the first: held
            signal.raise_signal(signal.SIGINT)  # the second: the user insists
            events.append("after both")
        return tell(trial, *args, **kwargs)

    loop.study.tell = hanging_tell  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert "after both" not in events

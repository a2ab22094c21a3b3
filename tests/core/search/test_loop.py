"""The ask/tell loop on a cheap objective: budget, base trial, pruning, recovery, resume, shared storage."""

from __future__ import annotations

import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import Hooks, Pruned, SearchLoop, StopRules
from agentlab.core.search.planners import OptunaPlanner
from agentlab.core.search.records import A_PLAN, best_of, state_dict
from agentlab.core.search.space import ParamSpec, SearchSpace
from agentlab.core.search.study import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0), "width": ParamSpec(choices=[8, 16, 32, 64]),
                     "heads": ParamSpec(choices=[1, 3, 4])})
BASE = {"x": 4.0, "width": 32, "heads": 4}


class Quadratic:
    """value = (x - 1)^2 + width/1000; heads must divide width (a constraint like Informer's)."""

    def __init__(self, prune_when: float | None = None):
        self.calls: list[dict[str, Any]] = []
        self.prune_when = prune_when

    def check(self, params: dict[str, Any]) -> list[str]:
        return [] if params["width"] % params["heads"] == 0 else ["heads: must divide width"]

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        self.calls.append(params)
        value = (params["x"] - 1.0) ** 2 + params["width"] / 1000
        for step in range(3):
            if report(step, value + (2 - step)) and self.prune_when is not None:
                raise Pruned({"value": value})
        return {"value": value, "n_params": params["width"] * 10}


def make_loop(tmp_path: Path, objective: Quadratic, max_iterations: int, storage: str | None = None,
              planner: str = "tpe", pruner: Any = None, space: SearchSpace = SPACE,
              base: dict[str, Any] = BASE) -> SearchLoop:
    study = new_study(study_name="t", storage=open_storage(storage, tmp_path), direction="minimize",
                                load_if_exists=True, pruner=pruner or optuna.pruners.NopPruner())
    return SearchLoop(study=study, space=space, base_params=dict(base), objective=objective,
                      planner=OptunaPlanner(planner), evaluator=HybridEvaluator(0.01), metric="val",
                      stop=StopRules(max_iterations=max_iterations), seed=1)


def test_budget_base_first_and_constraints(tmp_path: Path) -> None:
    objective = Quadratic()
    outcome = make_loop(tmp_path, objective, 8).run()
    assert outcome.ran_here == 8 and len(outcome.records) == 8
    assert outcome.records[0].planner == "base" and objective.calls[0] == BASE
    assert all(c["width"] % c["heads"] == 0 for c in objective.calls)
    assert outcome.best is not None and outcome.best.value <= outcome.records[0].value
    assert "max_iterations" in outcome.stop_reason
    state = state_dict(outcome.records, "val")
    assert state["best_run_id"] == outcome.best.run_id and len(state["runs"]) == 8


def test_max_iterations_is_a_total_and_continues(tmp_path: Path) -> None:
    make_loop(tmp_path, Quadratic(), 4).run()
    objective = Quadratic()
    outcome = make_loop(tmp_path, objective, 7).run()
    assert outcome.ran_here == 3 and len(objective.calls) == 3 and len(outcome.records) == 7
    params = [tuple(sorted(r.params.items())) for r in outcome.records]
    assert len(set(params)) == len(params), "a finished configuration was repeated"


def test_a_worker_given_fewer_trials_than_the_shared_study_holds_says_so(tmp_path: Path) -> None:
    """A worker started with -n 1 on a study of 4 trials said "max_iterations reached (1 trial)" beside the console's
    "shared study: 4 trial(s)", as if it had run one."""
    make_loop(tmp_path, Quadratic(), 4).run()
    outcome = make_loop(tmp_path, Quadratic(), 1).run()
    assert outcome.ran_here == 0
    assert str(outcome.stop_reason) == "max_iterations reached (1 trial; the shared study holds 4 already)"
    assert str(make_loop(tmp_path, Quadratic(), 4).run().stop_reason) == "max_iterations reached (4 trials)"


def test_a_dead_workers_running_trial_runs_again_first_as_the_same_trial(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, Quadratic(), 3)
    loop.run()
    orphan = loop.study.ask(loop.distributions)  # as if a worker on this host died mid-trial
    orphan.set_user_attr(A_PLAN, {"planner": "tpe", "worker": f"{socket.gethostname()}:999999"})
    objective = Quadratic()
    outcome = make_loop(tmp_path, objective, 5).run()
    assert [r.number for r in outcome.records] == [0, 1, 2, 3, 4]  # no lost trial, none repeated, none extra
    assert all(r.state == "complete" and r.counted for r in outcome.records) and outcome.ran_here == 2
    assert objective.calls[0] == orphan.params  # the interrupted trial ran first, with its own params
    assert outcome.records[3].params == orphan.params


def test_evaluator_rules_and_pruning(tmp_path: Path) -> None:
    pruner = optuna.pruners.ThresholdPruner(upper=1.5)
    outcome = make_loop(tmp_path, Quadratic(prune_when=1.5), 10, pruner=pruner).run()
    states = {r.state for r in outcome.records}
    assert "pruned" in states
    for r in outcome.records:
        if r.state == "complete" and r.planner != "base":
            assert r.decided_by == "rule" and r.reason
    best = best_of(outcome.records)
    assert best is not None and all(r.value >= best.value - 1e-12 for r in outcome.records
                                    if r.state == "complete" and r.accepted)


class Slow(Quadratic):
    """A trial that takes 50 ms, so two workers' trials interleave."""

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        time.sleep(0.05)
        return super().run(number, params, report)


def test_two_workers_share_one_budget(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    make_loop(tmp_path, Quadratic(), 1, storage=storage).run()  # create the study first
    objectives = [Slow(), Slow()]
    errors: list[BaseException] = []
    both = threading.Barrier(2)  # neither starts before the other is ready (under load one could run them all)

    def work(objective: Quadratic) -> None:
        try:
            loop = make_loop(tmp_path, objective, 12, storage=storage, planner="random")
            both.wait(timeout=60)
            loop.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(o,)) for o in objectives]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    study = optuna.load_study(study_name="t", storage=storage)
    counted = [t for t in study.trials if t.user_attrs.get("outcome", {}).get("counted", True)]
    assert len(counted) == 12
    assert sum(len(o.calls) for o in objectives) == 11
    assert all(len(o.calls) > 0 for o in objectives)


def test_diverged_trial_is_rejected_and_counted(tmp_path: Path) -> None:
    class Diverges(Quadratic):
        def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
            out = super().run(number, params, report)
            return out if number == 0 else {"value": math.nan, "diverged": True}

    outcome = make_loop(tmp_path, Diverges(), 3).run()
    assert [r.state for r in outcome.records] == ["complete", "failed", "failed"]
    assert all(r.counted and "diverged" in r.reason for r in outcome.records[1:])


@pytest.mark.parametrize("planner", ["tpe", "random"])
def test_a_space_smaller_than_the_budget_stops_as_exhausted_with_every_point_tried(tmp_path: Path, planner: str
                                                                                  ) -> None:
    """A space of 4 points with -n 6 (2 of them breaking the constraint) ended with an LLMError ("no valid, untried
    parameters in 30 draws"): exit 1, no results, instead of the stop reason ``exhausted``."""
    space = SearchSpace({"x": ParamSpec(choices=[0.0, 1.0]), "width": ParamSpec(choices=[8]),
                         "heads": ParamSpec(choices=[3, 4])})
    outcome = make_loop(tmp_path, Quadratic(), 6, planner=planner, space=space,
                        base={"x": 0.0, "width": 8, "heads": 4}).run()
    assert outcome.stop_reason.kind == "exhausted" and "every configuration" in outcome.stop_reason
    assert sorted(r.params["x"] for r in outcome.records) == [0.0, 1.0] and outcome.best is not None


def test_base_outside_space_is_config_error(tmp_path: Path) -> None:
    from agentlab.core.errors import ConfigError

    study = new_study()
    with pytest.raises(ConfigError, match="base value 128"):
        SearchLoop(study=study, space=SPACE, base_params={**BASE, "width": 128}, objective=Quadratic(),
                   planner=OptunaPlanner("tpe"), evaluator=HybridEvaluator(0.01), stop=StopRules(3))


def test_a_ctrl_c_during_a_storage_write_is_recorded_and_the_run_resumes(tmp_path: Path) -> None:
    """The signal lands inside trial.report's commit: it is delivered after the write, the trial goes back to the
    queue (waiting, its slot kept) instead of a broken session's StorageInternalError, and the search resumes with
    it: the same trial, run again first."""
    import os
    import signal

    from optuna.storages import RDBStorage

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    original = RDBStorage.set_trial_intermediate_value
    state = {"fired": False}

    def interrupted_write(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not state["fired"]:
            state["fired"] = True
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-write, as a user's Ctrl-C would
        return original(self, *args, **kwargs)

    loop = make_loop(tmp_path, Quadratic(), 3, storage=storage)
    RDBStorage.set_trial_intermediate_value = interrupted_write  # type: ignore[method-assign]
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal, whatever ran before
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run()
    finally:
        RDBStorage.set_trial_intermediate_value = original  # type: ignore[method-assign]
        signal.signal(signal.SIGINT, handler)
    *before, trial = loop.study.get_trials()  # the base trial never reports: the first report is trial 1's
    assert [t.state.name for t in before] == ["COMPLETE"]
    assert trial.state.name == "WAITING"
    assert trial.intermediate_values == {0: trial.intermediate_values[0]}, "the interrupted write was lost"
    objective = Quadratic()
    outcome = make_loop(tmp_path, objective, 3, storage=storage).run()
    assert objective.calls[0] == trial.params  # the interrupted trial first, then one new one; the base not again
    assert outcome.ran_here == 2 and [(r.number, r.state) for r in outcome.records] == [
        (0, "complete"), (1, "complete"), (2, "complete")]


def heartbeat_loop(tmp_path: Path, objective: Quadratic, max_iterations: int) -> SearchLoop:
    """A loop on a study with heartbeats (as on a database server; SQLite here): a trial whose worker has not beaten
    for a second is failed and queued again by Optuna's retry callback."""
    import warnings

    from optuna import storages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", storages.RetryFailedTrialCallback)(max_retry=3)
        storage = storages.RDBStorage(f"sqlite:///{tmp_path / 'beat.db'}", heartbeat_interval=1, grace_period=1,
                                      **{"heartbeat_stale_trial_callback" if hasattr(
                                          storages, "RetryHeartbeatStaleTrialCallback") else "failed_trial_callback":
                                         retry})
    study = new_study(study_name="t", storage=storage, direction="minimize", load_if_exists=True)
    return SearchLoop(study=study, space=SPACE, base_params=dict(BASE), objective=objective,
                      planner=OptunaPlanner("random"), evaluator=HybridEvaluator(0.01), metric="val",
                      stop=StopRules(max_iterations=max_iterations), seed=1)


def foreign_trial(loop: SearchLoop, params: dict[str, Any]) -> int:
    """A trial started by a worker on another host (alive for all this host can see), with one heartbeat; its
    number."""
    return loop.store.create(params=params, distributions=SPACE.distributions(params),
                             user_attrs={A_PLAN: {"planner": "random", "worker": "elsewhere:1"}})


def test_a_trial_whose_worker_stops_beating_mid_search_is_run_again_before_the_search_stops(tmp_path: Path) -> None:
    """Another worker dies while this one runs its last trial: the budget is used up once that trial ends, but the
    dead worker's trial, failed by the heartbeat check and queued again, is run here before the search stops (it
    used to stop first, leaving the retry queued and its report short of that trial's result)."""
    import time

    other = {"x": 1.0, "width": 8, "heads": 1}

    class DiesMeanwhile(Quadratic):
        def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
            if not self.calls:
                foreign_trial(loop, other)
                time.sleep(2.2)  # past the grace period: the other worker is taken for dead
            return super().run(number, params, report)

    objective = DiesMeanwhile()
    loop = heartbeat_loop(tmp_path, objective, 2)
    outcome = loop.run()
    assert objective.calls == [BASE, other]
    states = [(r.state, r.counted) for r in outcome.records]
    assert states == [("complete", True), ("interrupted", False), ("complete", True)], states
    assert outcome.best is not None and outcome.best.params == other


def test_a_trial_failed_by_the_heartbeat_check_holds_its_slot_until_its_retry_is_queued(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna fails a stale trial and queues its retry in two writes; in between its slot stays taken, so no worker
    plans a trial past the budget, and none stops before the retry ran."""
    from optuna.trial import TrialState

    from agentlab.core.search import loop as loop_module

    loop = heartbeat_loop(tmp_path, Quadratic(), 2)
    loop.run()
    number = foreign_trial(loop, {"x": 0.0, "width": 8, "heads": 1})
    loop.store.storage.set_trial_state_values(loop.store.trial_id(number), TrialState.FAIL)  # the first write only
    records = loop.records()
    assert records[-1].state == "interrupted" and loop.counted(records) == 3 and loop._others_running(records)
    monkeypatch.setattr(loop_module, "RETRY_QUEUE_S", 0.0)  # its failer died before the second write: no retry
    records = loop.records()
    assert loop.counted(records) == 2 and not loop._others_running(records)
    monkeypatch.undo()
    callback = loop.store.storage.get_heartbeat_stale_trial_callback()
    callback(loop.study, loop.store.get(number))  # the second write: the retry, waiting
    records = loop.records()
    assert [r.state for r in records][-2:] == ["interrupted", "waiting"]
    assert loop.counted(records) == 3 and loop._others_running(records)


def test_a_worker_waits_for_the_trial_of_another_live_worker_of_this_host_without_heartbeats(
        tmp_path: Path) -> None:
    """Two workers on SQLite or a journal file: the one whose budget ran out stopped while the other's trial still
    ran, so its results.json and best/ left that trial out and the two run folders could name different bests.
    Another worker on this host is waited for (a dead one's trial is queued again by ``recover``); one on another
    host is not (without heartbeats nothing tells it died)."""
    import socket
    import subprocess
    import sys

    loop = make_loop(tmp_path, Quadratic(), 1)
    loop.run()
    assert not loop.store.heartbeats and not loop._others_running(loop.records())
    foreign_trial(loop, {"x": 2.0, "width": 8, "heads": 1})  # another host's, no heartbeats: not waited for
    assert not loop._others_running(loop.records())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        worker = f"{socket.gethostname()}:{other.pid}"
        params = {"x": 1.0, "width": 8, "heads": 1}
        number = loop.store.create(params=params, distributions=SPACE.distributions(params),
                                   user_attrs={A_PLAN: {"planner": "random", "worker": worker}})
        assert loop._others_running(loop.records())
        other.kill()
        other.wait()
        assert loop.recover() == [number]  # the dead local worker's trial is queued again, for this worker to run
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    # a PID reused since by a process that is no Python (after a reboot): that worker is gone, not waited for
    import os

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        from agentlab.core.search.records import worker_alive

        for _ in range(100):  # until the child's exec shows in /proc (empty a moment after Popen returns)
            if Path(f"/proc/{stranger.pid}/cmdline").read_bytes():
                break
            time.sleep(0.02)
        assert not worker_alive(f"{socket.gethostname()}:{stranger.pid}")
        assert worker_alive(f"{socket.gethostname()}:{os.getpid()}")  # this test's own Python
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("state, counted, taken", [
    ("complete", True, True), ("running", True, True),
    ("waiting", True, True),  # a dead worker's trial back in the queue: it runs again, so its params are taken
    ("interrupted", True, True),  # failed by the heartbeat check, its retry not queued yet (its slot still counted)
    ("interrupted", False, False),  # stopped and not retried: the planner may propose its params again
    ("failed", True, False),
])
def test_a_trial_whose_params_a_queued_retry_will_run_is_taken(state: str, counted: bool, taken: bool) -> None:
    from types import SimpleNamespace

    from agentlab.core.search.records import TrialRecord

    earlier = TrialRecord(number=3, state=state, value=None, params={"lr": 0.1, "layers": 2}, counted=counted)
    fresh = SimpleNamespace(number=4, params={"layers": 2, "lr": 0.1})
    assert SearchLoop._taken(fresh, [earlier]) is taken
    assert SearchLoop._taken(SimpleNamespace(number=2, params=fresh.params), [earlier]) is False  # only earlier ones


class Metered(Quadratic):
    """Quadratic whose metrics also carry keys a user's metrics.json may hold (``values``, ``violation``), and which
    refuses (StopSearch) or aborts (TrialAborted) from a given call on."""

    def __init__(self, stop_at: int | None = None, abort_at: int | None = None):
        super().__init__()
        self.stop_at, self.abort_at = stop_at, abort_at

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        from agentlab.core.search.loop import StopSearch, TrialAborted

        if self.stop_at is not None and len(self.calls) >= self.stop_at:
            raise StopSearch("the budget of something else is spent")
        if self.abort_at is not None and len(self.calls) >= self.abort_at:
            self.calls.append(params)
            try:
                raise OSError("the model file vanished")
            except OSError as exc:
                raise TrialAborted(str(exc)) from exc
        return {**super().run(number, params, report), "values": [1.0, "x"], "violation": 3.0}


def test_a_single_objective_reads_value_only_whatever_else_the_metrics_hold(tmp_path: Path) -> None:
    """A user's command may print ``values`` or ``violation``: only a pareto objective's are the study's."""
    outcome = make_loop(tmp_path, Metered(), 4).run()
    assert [r.state for r in outcome.records] == ["complete"] * 4
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert all(len(t.values) == 1 for t in study.trials)
    assert not any(k.startswith("constraints") for t in study.trials for k in t.system_attrs)


def test_stop_search_gives_the_trial_back_uncounted_and_stops(tmp_path: Path) -> None:
    outcome = make_loop(tmp_path, Metered(stop_at=2), 6).run()
    assert outcome.stop_reason == "the budget of something else is spent" and outcome.ran_here == 2
    assert [(r.state, r.counted) for r in outcome.records] == [("complete", True)] * 2 + [("skipped", False)]
    assert outcome.records[-1].reason == "not run: the budget of something else is spent"


def test_an_aborted_trial_goes_back_to_the_queue_and_runs_again_on_resume(tmp_path: Path) -> None:
    from agentlab.core.search.loop import TrialAborted

    with pytest.raises(TrialAborted) as info:
        make_loop(tmp_path, Metered(abort_at=2), 4).run()
    assert isinstance(info.value.__cause__, OSError)
    objective = Quadratic()
    outcome = make_loop(tmp_path, objective, 4).run()
    assert outcome.ran_here == 2 and len(outcome.records) == 4  # the aborted trial first, whole, then one more
    assert outcome.records[2].state == "complete" and outcome.records[2].params == objective.calls[0]


def test_own_run_counts_this_runs_trials_and_learns_from_all(tmp_path: Path) -> None:
    """Runs sharing a study on SQLite with ``own_run``: each its own budget and base, every trial in the study."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    outcomes = []
    for name in ("a", "b"):
        loop = make_loop(tmp_path, Quadratic(), 3, storage=storage)
        loop.stop.own_run, loop.run_dir = True, str(tmp_path / name)
        outcomes.append(loop.run())
    assert [o.ran_here for o in outcomes] == [3, 3] and len(outcomes[1].records) == 6
    assert [r.planner for r in outcomes[1].records].count("base") == 2


def test_another_runs_interrupted_trial_is_said_to_wait_for_that_runs_resume(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Runs sharing a study on SQLite (``own_run``): a run found another run's killed trial and said "they run again
    first", but only that run's --resume runs it."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_loop(tmp_path, Quadratic(), 2, storage=storage)
    first.stop.own_run, first.run_dir = True, str(tmp_path / "a")
    first.run()
    orphan = first.study.ask(first.distributions)  # run a's worker killed mid-trial
    orphan.set_user_attr(A_PLAN, {"planner": "tpe", "worker": f"{socket.gethostname()}:999999",
                                  "run_dir": str(tmp_path / "a")})
    second = make_loop(tmp_path, Quadratic(), 2, storage=storage)
    second.stop.own_run, second.run_dir = True, str(tmp_path / "b")
    with caplog.at_level("WARNING"):
        outcome = second.run()
    said = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert said == [f"trial(s) [{orphan.number}] of the run {tmp_path / 'a'} were interrupted; they wait for that "
                    "run's --resume"]
    assert outcome.ran_here == 2 and orphan.number not in [r.number for r in second.mine(outcome.records)]


def test_a_stop_reason_keeps_its_kind_through_pickle_and_copy() -> None:
    import copy
    import json
    import pickle

    from agentlab.core.search.loop import StopReason

    reason = StopReason("max_iterations", "max_iterations reached (4 trials)")
    for again in (pickle.loads(pickle.dumps(reason)), copy.copy(reason), copy.deepcopy(reason)):
        assert again == reason and again.kind == "max_iterations"
    assert json.loads(json.dumps({"stop": reason})) == {"stop": "max_iterations reached (4 trials)"}


class Groups:
    """A planner of generations: ``sizes`` groups of points, each planned after the last was scored."""

    name = "groups"

    def __init__(self, sizes: list[int]):
        self.sizes, self.seen = list(sizes), list[int]()

    def propose_group(self, ctx: Any) -> list[Any]:
        from agentlab.core.search.planners import NoProposal, Proposal

        records = ctx.domain.records
        assert all(r.state not in ("waiting", "running") for r in records), "planned before its group finished"
        self.seen.append(len(records))
        if not self.sizes:
            raise NoProposal("no more groups")
        start = len(records)
        return [Proposal({"x": float(start + i) - 4.0, "width": 8, "heads": 1}, {}, "groups", f"p{start + i}")
                for i in range(self.sizes.pop(0))]


class Batched(Quadratic):
    """Scores ``batch`` points together; a batch holding x == -3 raises (a model that fails to load)."""

    batch = 2

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[int]] = []

    def run_batch(self, items: list[tuple[int, dict[str, Any]]]) -> list[Any]:
        self.batches.append([number for number, _ in items])
        if any(params["x"] == -3.0 for _, params in items):
            raise RuntimeError("out of memory")
        return [self.run(number, params, lambda step, value: False) for number, params in items]


def test_generations_queue_groups_scored_in_batches_behind_a_barrier(tmp_path: Path) -> None:
    objective, planner = Batched(), Groups([3, 2])
    study = new_study(study_name="t", storage=open_storage(None, tmp_path), direction="minimize")
    hooks = Hooks(domain=lambda records: type("Ctx", (), {"domain": type("D", (), {"records": records})})())
    loop = SearchLoop(study=study, space=SPACE, base_params=None, objective=objective, planner=planner,  # type: ignore[arg-type]
                      evaluator=HybridEvaluator(0.01), metric="val", stop=StopRules(5, generations=True), hooks=hooks)
    outcome = loop.run()
    assert planner.seen == [0, 3, 5] and outcome.stop_reason.kind == "exhausted"
    assert objective.batches == [[0, 1], [3, 4]]  # two at a time; the group's third alone, through ``run``
    states = {r.number: r.state for r in outcome.records}
    assert states == {0: "failed", 1: "failed", 2: "complete", 3: "complete", 4: "complete"}
    # the batch that raised: each of its trials failed with the error, counted, as ``run`` raising it would
    assert all("out of memory" in r.reason and r.counted for r in outcome.records if r.state == "failed")


def test_a_study_inside_the_run_folder_is_told_from_a_shared_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether a study lies in its run folder decides its sampler's seed (a shared study's workers each draw their
    own): a relative folder, a link to it, a URL (a server: never inside) and another drive."""
    from agentlab.core.search.loop import _inside

    (tmp_path / "run").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    assert _inside(str(tmp_path / "run" / "study.db"), "run") and _inside(str(tmp_path / "run" / "study.db"), "link")
    assert not _inside(str(tmp_path / "other.db"), "run")
    assert not _inside("postgresql://u:***@h/db", ".") and not _inside("sqlite:///x.db", ".")


def test_the_counterfactual_without_the_llms_picks_counts_a_trial_turned_down_only_for_losing_to_a_pick() -> None:
    # the best without the LLM's picks kept accepted trials only: the sampler's 0.0106, rejected as 1.8% worse than
    # the LLM's pick 0.0104, was left out and the counterfactual said 0.374 (the base), 35 times too pessimistic
    from agentlab.core.search.planners import trial_results
    from agentlab.core.search.records import TrialRecord

    def rec(n: int, value: float, origin: str, accepted: bool, **metrics: Any) -> TrialRecord:
        return TrialRecord(number=n, state="complete", value=value, params={"x": n}, origin=origin,
                           accepted=accepted, metrics={"value": value, **metrics})

    records = [rec(0, 0.374, "classical", True), rec(1, 0.0104, "picked", True), rec(2, 0.0106, "classical", False),
               rec(3, 0.001, "classical", False, diverged=True)]  # a diverged trial never counts
    results = trial_results(records, False, lambda best: {"best": best.value if best else None})
    assert results.without_llm() == {"best": 0.0106}
    assert results.score(lambda origin, choice, planner: origin != "picked") == 0.0106
    assert results.score(lambda *_: True) == 0.0104
    assert best_of(records).value == 0.0104  # the search's own best is still its incumbent
    # with every trial the figure is the incumbent, not a smaller trial the evaluator turned down in its noise band
    band = [*records, rec(4, 0.01035, "classical", False)]
    assert trial_results(band, False, lambda best: {}).score(lambda *_: True) == 0.0104


@pytest.mark.parametrize("says", [False, True], ids=["loop-says", "command-says"])
def test_recovered_trials_are_said_once(says: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """evolve names the individuals that go back to the queue ("resuming: 2 individual(s) ... go back to the
    queue"), then the loop's own "WARNING trial(s) [2, 3] were interrupted" followed: numbers that name nothing a
    user sees. A command that says it (``Hooks.says_recovered``) gets the event alone; nas and compress the log."""
    import subprocess
    import sys

    seen: list[tuple[str, dict[str, Any]]] = []
    study = new_study(study_name="t", storage=open_storage(None, tmp_path), direction="minimize",
                      load_if_exists=True, pruner=optuna.pruners.NopPruner())
    loop = SearchLoop(study=study, space=SPACE, base_params=dict(BASE), objective=Quadratic(),
                      planner=OptunaPlanner("tpe"), evaluator=HybridEvaluator(0.01), metric="val",
                      stop=StopRules(max_iterations=1), seed=1,
                      hooks=Hooks(on_event=lambda kind, **data: seen.append((kind, data)), says_recovered=says))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    params = {"x": 1.0, "width": 8, "heads": 1}
    number = loop.store.create(params=params, distributions=SPACE.distributions(params),
                               user_attrs={A_PLAN: {"planner": "random", "worker": f"{socket.gethostname()}:"
                                                                                   f"{gone.pid}"}})
    with caplog.at_level("WARNING"):
        assert loop.recover() == [number]
    assert seen == [("recovered", {"trials": [number]})]
    assert ("were interrupted" in caplog.text) is not says

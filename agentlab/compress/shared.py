"""compress workers sharing one search on a database server (``storage: postgresql://...``, ``mysql://...``).

On SQLite or a journal file, runs that share a study only learn from each other: each has its own budget. On a
database server (where trials beat a heartbeat, ``core.search.study.server_storage``) the workers run one search,
as ``nas`` workers do: ``max_iterations`` is a total over the study; an experiment is claimed as a RUNNING trial
(its params, its experiment and the worker in one storage write) before it runs, so no two workers run the same one;
the base model is measured once for the study (every worker scores against the same base, so every report agrees);
a worker that dies mid-experiment stops beating, its trial is failed (not counted) and Optuna's retry callback
queues it again with the same experiment for the first free worker; a worker whose budget is used up waits for the
others' running experiments, then writes results.json and report.md from the study: every worker's name the same
experiments and the same recommendation. Each worker's experiments.jsonl logs the experiments it ran itself.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

from agentlab.compress.planners import KEY_ATTR
from agentlab.core.runs import deferred_interrupts
from agentlab.core.search import records as R
from agentlab.core.search.study import MAX_RETRIES

BASE_ATTR = "agentlab:base"  # trial user attribute of the base measurement: the workspace key of the base
RESULT_ATTR = "agentlab:result"  # trial user attribute: the finished record (as in experiments.jsonl)
RETRY_QUEUE_S = 60.0  # how long a trial failed by the heartbeat check holds its slot while its retry is queued


def is_shared(study: Any) -> bool:
    """Whether the study lives on a database server with heartbeats: its workers share one search."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=str))


class SharedStudy:
    """The search's state on the server: claims, the budget over every worker, the base, retries, the records."""

    def __init__(self, study: Any, *, budget: int, base_key: str, run_dir: str):
        self.study, self.budget, self.base_key, self.run_dir = study, budget, base_key, run_dir
        self.storage = study._storage
        self.worker = R.worker_id()

    def beat(self) -> float:
        return float(getattr(self.storage, "heartbeat_interval", None) or 1)

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def fail_stale(self) -> None:
        """Fail the trials whose worker stopped beating, and those of a worker on this host that is gone (killed
        before its first beat: no beat ever goes stale); the retry callback queues each again (WAITING)."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental since Optuna 2.9
            fail_stale_trials(self.study)
        retry = self.storage.get_heartbeat_stale_trial_callback()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get(R.A_PLAN, {}).get("worker")
            if not self._mine(t) or worker == self.worker or R.worker_alive(worker):
                continue
            try:
                if self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL) and retry is not None:
                    retry(self.study, self.storage.get_trial(t._trial_id))
            except Exception:  # another worker failed it first
                continue

    def pop_retry(self) -> int | None:
        """A trial queued again after its worker died, taken by this worker (now RUNNING, with this worker's plan)."""
        trial_id = self.study._pop_waiting_trial_id()
        if trial_id is None:
            return None
        frozen = self.storage.get_trial(trial_id)
        plan = dict(frozen.user_attrs.get(R.A_PLAN, {}))
        plan.update(worker=self.worker, run_dir=self.run_dir, retry_of=frozen.system_attrs.get("failed_trial"))
        self.storage.set_trial_user_attr(trial_id, R.A_PLAN, plan)
        return int(trial_id)

    # ------------------------------------------------------------------ reading the study

    def _mine(self, t: Any) -> bool:
        return t.user_attrs.get(KEY_ATTR) is not None or t.user_attrs.get(BASE_ATTR) == self.base_key

    def _holds_slot(self, t: Any, waiting: set[int]) -> bool:
        """Running, queued, finished and counted, or failed by the heartbeat check with its retry on the way."""
        name = t.state.name
        if name in ("RUNNING", "WAITING", "COMPLETE"):
            return True
        return name == "FAIL" and (t.user_attrs.get(R.A_OUTCOME, {}).get("counted", False) or t.number in waiting)

    def counted(self, trials: list[Any]) -> int:
        """Experiments (the base not counted) that use the budget."""
        waiting = R.awaiting_retry(trials, MAX_RETRIES, RETRY_QUEUE_S)
        return sum(1 for t in trials if t.user_attrs.get(KEY_ATTR) is not None and self._holds_slot(t, waiting))

    def busy(self, trials: list[Any]) -> bool:
        """Whether another worker's experiment (or the base) still runs, or a retry is queued or about to be."""
        waiting = R.awaiting_retry(trials, MAX_RETRIES, RETRY_QUEUE_S)
        for t in trials:
            if not self._mine(t):
                continue
            if t.state.name == "WAITING" or t.number in waiting:
                return True
            if t.state.name == "RUNNING" and t.user_attrs.get(R.A_PLAN, {}).get("worker") != self.worker:
                return True
        return False

    def base(self, trials: list[Any]) -> dict[str, Any] | None:
        """The base measurement's record, once a worker has finished it."""
        for t in trials:
            if t.user_attrs.get(BASE_ATTR) == self.base_key and RESULT_ATTR in t.user_attrs:
                return dict(t.user_attrs[RESULT_ATTR])
        return None

    def records(self, trials: list[Any], base: dict[str, Any]) -> list[dict[str, Any]]:
        """Every finished experiment of the study in trial order after the base, indexed as one run's records: the
        same list for every worker."""
        out = [{**base, "index": 0}]
        for t in trials:
            if t.user_attrs.get(KEY_ATTR) is not None and RESULT_ATTR in t.user_attrs:
                out.append({**t.user_attrs[RESULT_ATTR], "index": len(out), "trial": t.number})
        return out

    # ------------------------------------------------------------------ claims

    def claim(self, *, params: dict[str, Any], distributions: dict[str, Any], user_attrs: dict[str, Any],
              system_attrs: dict[str, Any] | None = None) -> int:
        """A RUNNING trial with its params, its plan (this worker) and attributes in one storage write."""
        from optuna.trial import TrialState, create_trial

        plan = {**user_attrs.pop(R.A_PLAN, {}), "worker": self.worker, "run_dir": self.run_dir}
        template = create_trial(state=TrialState.RUNNING, params=params, distributions=distributions,
                                user_attrs={**user_attrs, R.A_PLAN: plan}, system_attrs=system_attrs or None)
        with deferred_interrupts():
            trial_id = int(self.storage.create_new_trial(self.study._study_id, template_trial=template))
            self.storage.record_heartbeat(trial_id)  # at once: a worker killed before its first beat goes stale too
        return trial_id

    def give_way(self, trial_id: int) -> str | None:
        """Why a fresh claim must give way to another worker's (None: it stands): the budget's last slot taken, or
        the same experiment (or the base) claimed first."""
        trials = self.trials()
        mine = next(t for t in trials if t._trial_id == trial_id)
        waiting = R.awaiting_retry(trials, MAX_RETRIES, RETRY_QUEUE_S)
        earlier = [t for t in trials if t.number < mine.number and self._holds_slot(t, waiting)]
        if mine.user_attrs.get(BASE_ATTR) is not None:
            if any(t.user_attrs.get(BASE_ATTR) == self.base_key for t in earlier):
                return "the base model is measured by another worker"
            return None
        if self.counted([t for t in trials if t.number <= mine.number]) > self.budget:  # the later claim gives way
            return "budget taken by another worker"
        if any(t.user_attrs.get(KEY_ATTR) == mine.user_attrs[KEY_ATTR] for t in earlier):
            return "the same experiment was claimed by another worker"
        return None

    def abandon(self, trial_id: int, reason: str) -> None:
        """End a claim that did not run (or was interrupted): FAIL, not counted, planned again."""
        from optuna.trial import TrialState

        with deferred_interrupts():
            self.storage.set_trial_user_attr(trial_id, R.A_OUTCOME, {"counted": False, "reason": reason})
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)

    def run(self, trial_id: int, work: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """``work()`` under the trial's heartbeat (a dead worker's trial is retried by another)."""
        from optuna.storages._heartbeat import get_heartbeat_thread

        with get_heartbeat_thread(trial_id, self.storage):
            return work()

    def finish(self, trial_id: int, record: dict[str, Any], values: list[float | None] | None,
               violation: float | None) -> None:
        """Store the record on its trial and end it: COMPLETE with the objective values, or FAIL (counted) when the
        experiment failed. A trial taken for dead meanwhile (its heartbeat lagged) is left to its retry."""
        import optuna
        from optuna.trial import TrialState

        try:
            with deferred_interrupts():
                self.storage.set_trial_user_attr(trial_id, RESULT_ATTR, jsonable(record))
                self.storage.set_trial_user_attr(trial_id, R.A_OUTCOME, {"counted": True})
                trial = optuna.Trial(self.study, trial_id)
                if values is not None and all(v is not None for v in values):
                    if violation is not None:
                        trial.set_constraint("violation", float(violation))
                    self.study.tell(trial, [float(v) for v in values])  # type: ignore[arg-type]
                else:
                    self.study.tell(trial, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def wait(self) -> None:
        time.sleep(self.beat())

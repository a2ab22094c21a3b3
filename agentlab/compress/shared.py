"""compress workers sharing one search on a database server (``search.storage: postgresql://...``, ``mysql://...``).

On SQLite or a journal file, runs that share a study only learn from each other: each has its own budget. On a
database server (where trials beat a heartbeat, ``core.search.study.server_storage``) the workers run one search,
as ``nas`` workers do: ``max_iterations`` is a total over the study; an experiment is claimed as a RUNNING trial
(its params, its experiment and the worker in one storage write) before it runs, so no two workers run the same one;
the base model is measured once for the study (every worker scores against the same base, so every report agrees);
a worker that dies mid-experiment (or is stopped by Ctrl-C) leaves its trial to run again: on its own host it goes
back to WAITING whole at once, elsewhere it stops beating, is failed (not counted) and Optuna's retry callback queues
a copy with the same experiment for the first free worker; a worker whose budget is used up waits for the others'
running experiments, then writes results.json and report.md from the study: every worker's name the same
experiments and the same recommendation. Each worker's experiments.jsonl logs the experiments it ran itself. Every
storage access goes through ``core.search.engine``; trials are named by their numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from agentlab.compress.planners import KEY_ATTR
from agentlab.core.search import records as R
from agentlab.core.search.engine import store_of
from agentlab.core.search.study import MAX_RETRIES

BASE_ATTR = "agentlab:base"  # trial user attribute of the base measurement: the workspace key of the base
RESULT_ATTR = "agentlab:result"  # trial user attribute: the finished record (as in experiments.jsonl)
RETRY_QUEUE_S = 60.0  # how long a trial failed by the heartbeat check holds its slot while its retry is queued


def is_shared(study: Any) -> bool:
    """Whether the study lives on a database server with heartbeats: its workers share one search."""
    return store_of(study).heartbeats


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=str))


class SharedStudy:
    """The search's state on the server: claims, the budget over every worker, the base, retries, the records."""

    def __init__(self, study: Any, *, budget: int, base_key: str, run_dir: str):
        self.study, self.budget, self.base_key, self.run_dir = study, budget, base_key, run_dir
        self.store = store_of(study)
        self.worker = self.store.worker

    def beat(self) -> float:
        return self.store.beat_s

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def get(self, number: int) -> Any:
        return self.store.get(number)

    def fail_stale(self) -> None:
        """Fail the trials whose worker stopped beating (the retry callback queues a copy of each, WAITING), and put
        back in the queue, whole, those of a worker on this host that is gone (killed before its first beat, or
        before the grace period ran out)."""
        self.store.recover(owned=self._mine)  # first: on this host the trial goes back whole
        self.store.fail_stale()

    def pop_retry(self) -> int | None:
        """A trial waiting to run again after its worker died, taken by this worker (now RUNNING, with this worker's
        plan); its number."""
        def plan(trial: Any) -> dict[str, Any]:
            again = trial.system_attrs.get("failed_trial")
            return {R.A_PLAN: {**trial.user_attrs.get(R.A_PLAN, {}), "worker": self.worker, "run_dir": self.run_dir,
                               "retry_of": trial.number if again is None else again}}

        claimed = self.store.claim(1, accept=self._mine, attrs=plan)
        return claimed[0].number if claimed else None

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
        """A RUNNING trial with its params, its plan (this worker) and attributes in one storage write; its number."""
        plan = {**user_attrs.pop(R.A_PLAN, {}), "worker": self.worker, "run_dir": self.run_dir}
        return self.store.create(params=params, distributions=distributions, system_attrs=system_attrs,
                                 user_attrs={**user_attrs, R.A_PLAN: plan})

    def give_way(self, number: int) -> str | None:
        """Why a fresh claim must give way to another worker's (None: it stands): the budget's last slot taken, or
        the same experiment (or the base) claimed first."""
        trials = self.trials()
        mine = next(t for t in trials if t.number == number)
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

    def abandon(self, number: int, reason: str) -> None:
        """End a claim that did not run: FAIL, not counted, planned again."""
        from optuna.trial import TrialState

        self.store.finish(number, state=TrialState.FAIL, attrs={R.A_OUTCOME: {"counted": False, "reason": reason}})

    def requeue(self, number: int) -> bool:
        """A claim that was interrupted goes back to the queue whole: it runs again first (here or elsewhere)."""
        return self.store.requeue(number)

    def run(self, number: int, work: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """``work()`` under the trial's heartbeat (a dead worker's trial is retried by another)."""
        with self.store.beating(number):
            return work()

    def finish(self, number: int, record: dict[str, Any], values: list[float | None] | None,
               violation: float | None) -> None:
        """Store the record on its trial and end it: COMPLETE with the objective values, or FAIL (counted) when the
        experiment failed. A trial taken for dead meanwhile (its heartbeat lagged) is left to its retry."""
        import optuna
        from optuna.trial import TrialState

        attrs = {RESULT_ATTR: jsonable(record), R.A_OUTCOME: {"counted": True}}
        if values is not None and all(v is not None for v in values):
            if violation is not None:
                try:
                    self.store.trial(number).set_constraint("violation", float(violation))
                except optuna.exceptions.UpdateFinishedTrialError:
                    return
            self.store.finish(number, [float(v) for v in values], attrs=attrs)  # type: ignore[arg-type]
        else:
            self.store.finish(number, state=TrialState.FAIL, attrs=attrs)

    def wait(self) -> None:
        time.sleep(self.beat())

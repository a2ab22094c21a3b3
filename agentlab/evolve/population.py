"""The population store: every individual of an evolve run is one trial of an Optuna study, so workers on several
machines can share it through any Optuna storage (SQLite in the run folder by default; a PostgreSQL / MySQL URL or
a journal file on a shared disk for several machines).

- An individual waiting to be scored is a ``WAITING`` trial whose user attrs hold its id, generation, adapter
  folder and lineage (parents, weights, rank, mutation).
- A worker claims one by moving it to ``RUNNING``: ``set_trial_state_values`` refuses a second claim where the
  database locks the row (PostgreSQL, MySQL; a journal file replays claims in order). SQLite has no row locks: two
  processes could both read WAITING and both claim (seen here with two workers), so on SQLite claims also take an
  exclusive file lock beside the database. The worker stores the scores in user attrs and completes the trial with
  the task accuracy as its value, or fails it with the error. Several machines need PostgreSQL / MySQL or a journal
  file on a shared disk, not SQLite.
- The study's user attrs hold what every worker needs (``settings``: the base model, the fitness questions, the
  debate; ``reference``: the seeds' own debate) and which individuals make up each generation (``population_K``).

A finished (``COMPLETE`` or ``FAIL``) trial is never scored again: that is what ``--resume`` relies on. A ``RUNNING``
trial left by a killed worker goes back to ``WAITING`` when the run resumes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna import Study

from agentlab.core.errors import ConfigError
from agentlab.core.search.study import open_storage, open_study, quiet

log = logging.getLogger(__name__)
STUDY = "evolve"


def open_population(store: str | None, run_path: Path | None, *, create: bool) -> Population:
    """The run's population: ``store`` (an Optuna storage URL or journal path) or population.db in ``run_path``."""
    import optuna

    quiet()
    if store is None and run_path is None:
        raise ConfigError("no population store", hint="pass --store URL (the run's `store`, or "
                          "sqlite:///RUN/population.db)")
    url = store if store is not None else f"sqlite:///{(Path(run_path) / 'population.db').resolve()}"  # type: ignore[arg-type]
    if create:
        study = open_study(url, Path(run_path or "."), name=STUDY, directions=["maximize"], what="store")
    else:
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
            raise ConfigError(f"store {url}: no such database file",
                              hint="give the run's store: sqlite:///RUN/population.db, or the `store` of its config")
        try:
            study = optuna.load_study(storage=open_storage(url, Path(run_path or "."), what="store"), study_name=STUDY)
        except KeyError:
            raise ConfigError(f"store {store or url}: holds no evolve population",
                              hint="start the run first: agentlab evolve run -c FILE (it creates the population)"
                              ) from None
    lock = Path(url.removeprefix("sqlite:///") + ".claims.lock") if url.startswith("sqlite:///") else None
    return Population(study, lock)


class Population:
    """Individuals as trials of one study; see the module docstring."""

    def __init__(self, study: Study, claim_lock: Path | None = None):
        self.study = study
        self._storage = study._storage
        self._study_id = study._study_id
        self._claim_lock = claim_lock

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[None]:
        if self._claim_lock is None:
            yield
            return
        with open(self._claim_lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ shared settings

    def attr(self, key: str, default: Any = None) -> Any:
        return self._storage.get_study_user_attrs(self._study_id).get(key, default)

    def set_attr(self, key: str, value: Any) -> None:
        self._storage.set_study_user_attr(self._study_id, key, value)

    def members(self, generation: int | str) -> list[str] | None:
        return self.attr(f"population_{generation}")

    def set_members(self, generation: int | str, ids: list[str]) -> None:
        self.set_attr(f"population_{generation}", ids)

    # ------------------------------------------------------------------ individuals

    def individuals(self) -> dict[str, dict[str, Any]]:
        """Every individual by id: its user attrs plus ``state`` (waiting, running, complete, fail) and ``trial``."""
        out: dict[str, dict[str, Any]] = {}
        for trial in self._storage.get_all_trials(self._study_id, deepcopy=False):
            attrs = dict(trial.user_attrs)
            if "id" in attrs:
                out[attrs["id"]] = {**attrs, "state": trial.state.name.lower(), "trial": trial._trial_id}
        return out

    def add(self, record: dict[str, Any]) -> int:
        """A new individual, waiting to be scored."""
        from optuna.trial import TrialState, create_trial

        template = create_trial(state=TrialState.WAITING, user_attrs=record)
        return int(self._storage.create_new_trial(self._study_id, template_trial=template))

    def claim(self, limit: int, worker: str) -> list[dict[str, Any]]:
        """Up to ``limit`` waiting individuals, now ``RUNNING`` for ``worker``; none that another worker claimed."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        claimed: list[dict[str, Any]] = []
        with self._claiming():
            for trial in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,)):
                if len(claimed) >= limit:
                    break
                if "id" not in trial.user_attrs:
                    continue
                try:
                    if not self._storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                        continue
                except UpdateFinishedTrialError:  # finished since we listed it
                    continue
                self._storage.set_trial_user_attr(trial._trial_id, "worker", worker)
                claimed.append({**trial.user_attrs, "trial": trial._trial_id})
        return claimed

    def complete(self, trial: int, scores: dict[str, Any]) -> bool:
        """Store the scores and finish the trial; False when another worker finished it first (a claim requeued by
        a resume while its worker still ran: wasted work, and the first scores stay)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            for key, value in scores.items():
                self._storage.set_trial_user_attr(trial, key, value)
            self._storage.set_trial_state_values(trial, TrialState.COMPLETE, values=[float(scores["task"])])
        except UpdateFinishedTrialError:
            log.warning("trial %d was finished by another worker; these scores are dropped", trial)
            return False
        return True

    def fail(self, trial: int, error: str) -> bool:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            self._storage.set_trial_user_attr(trial, "error", error)
            self._storage.set_trial_state_values(trial, TrialState.FAIL)
        except UpdateFinishedTrialError:
            log.warning("trial %d was finished by another worker", trial)
            return False
        return True

    def requeue_running(self) -> int:
        """Claims left by killed workers go back to waiting; returns how many."""
        from optuna.trial import TrialState

        n = 0
        for trial in self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if self._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING):
                n += 1
        return n

    def waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,)))

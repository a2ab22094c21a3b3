"""The population store: every individual of an evolve run is one trial of an Optuna study, so workers on several
machines can share it through any Optuna storage (SQLite in the run folder by default; a PostgreSQL / MySQL URL or
a journal file on a shared disk for several machines).

- An individual waiting to be scored is a ``WAITING`` trial whose user attrs hold its id, generation, adapter
  folder and lineage (parents, weights, rank, mutation).
- A worker claims one by moving it to ``RUNNING`` (``core.search.engine.TrialStore.claim``, the claims of every
  search): the storage refuses a second claim where the database locks the row (PostgreSQL, MySQL; a journal file
  replays claims in order). SQLite has no row locks: two processes could both read WAITING and both claim (seen
  here with two workers), so on SQLite claims also take an exclusive file lock beside the database. The worker
  stores the scores in user attrs and completes the trial with the task accuracy as its value, or fails it with the
  error. Several machines need PostgreSQL / MySQL or a journal
  file on a shared disk, not SQLite.
- The study's user attrs hold what every worker needs (``settings``: the base model, the fitness questions, the
  debate; ``reference``: the seeds' own debate) and which individuals make up each generation (``population_K``).

A finished (``COMPLETE`` or ``FAIL``) trial is never scored again: that is what ``--resume`` relies on. A ``RUNNING``
trial left by a killed worker on this host goes back to ``WAITING`` when the run resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna import Study

from agentlab.core.errors import ConfigError
from agentlab.core.search.engine import storage_object, store_of
from agentlab.core.search.study import attach_opened, open_storage, open_study, quiet

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
        opened = open_storage(url, Path(run_path or "."), what="store")
        backend = storage_object(opened)
        try:
            study = attach_opened(optuna.load_study(storage=backend, study_name=STUDY), backend, url, opened)
        except KeyError:
            raise ConfigError(f"store {store or url}: holds no evolve population",
                              hint="start the run first: agentlab evolve run -c FILE (it creates the population)"
                              ) from None
    return Population(study)


class Population:
    """Individuals as trials of one study (named by trial number); see the module docstring."""

    def __init__(self, study: Study):
        self.study = study
        self.store = store_of(study)

    # ------------------------------------------------------------------ shared settings

    def attr(self, key: str, default: Any = None) -> Any:
        return self.store.study_attr(key, default)

    def set_attr(self, key: str, value: Any) -> None:
        self.store.set_study_attr(key, value)

    def members(self, generation: int | str) -> list[str] | None:
        return self.attr(f"population_{generation}")

    def set_members(self, generation: int | str, ids: list[str]) -> None:
        self.set_attr(f"population_{generation}", ids)

    # ------------------------------------------------------------------ individuals

    def individuals(self) -> dict[str, dict[str, Any]]:
        """Every individual by id: its user attrs plus ``state`` (waiting, running, complete, fail) and ``trial``."""
        out: dict[str, dict[str, Any]] = {}
        for trial in self.store.trials():
            attrs = dict(trial.user_attrs)
            if "id" in attrs:
                out[attrs["id"]] = {**attrs, "state": trial.state.name.lower(), "trial": trial.number}
        return out

    def add(self, record: dict[str, Any]) -> int:
        """A new individual, waiting to be scored; its trial number."""
        from optuna.trial import TrialState

        return self.store.create(state=TrialState.WAITING, user_attrs=record)

    def claim(self, limit: int, worker: str) -> list[dict[str, Any]]:
        """Up to ``limit`` waiting individuals, now ``RUNNING`` for ``worker``; none that another worker claimed."""
        claimed = self.store.claim(limit, accept=lambda t: "id" in t.user_attrs, attrs=lambda t: {"worker": worker})
        return [{**trial.user_attrs, "worker": worker, "trial": trial.number} for trial in claimed]

    def complete(self, trial: int, scores: dict[str, Any]) -> bool:
        """Store the scores and finish the trial; False when another worker finished it first (a claim requeued by
        a resume while its worker still ran: wasted work, and the first scores stay)."""
        if not self.store.finish(trial, [float(scores["task"])], attrs=scores):
            log.warning("trial %d was finished by another worker; these scores are dropped", trial)
            return False
        return True

    def fail(self, trial: int, error: str) -> bool:
        from optuna.trial import TrialState

        if not self.store.finish(trial, state=TrialState.FAIL, attrs={"error": error}):
            log.warning("trial %d was finished by another worker", trial)
            return False
        return True

    def requeue_running(self) -> int:
        """Claims left by workers on this host that are gone (killed, crashed) go back to waiting; returns how many."""
        return len(self.store.recover())

    def waiting(self) -> int:
        from optuna.trial import TrialState

        return len(self.store.trials((TrialState.WAITING,)))

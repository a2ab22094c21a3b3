"""The population store (docs/design/architecture.md, "Debate and evolve"): each individual of an evolve run is a
trial of one Optuna study, queued and claimed by the shared search loop; its lineage is the trial's plan
(``plan.extra.individual``), its scores the trial's outcome. The study's user attrs hold what every worker needs
(``settings``, every path in it absolute, and ``reference``), each generation's members (``population_K``), the run
folder (``folder``, see ``located``) and each seed's fingerprint (``seed_fingerprints``, checked by a resume). A
finished trial is never scored again: that is what ``--resume`` relies on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna import Study

from agentlab.core.errors import ConfigError
from agentlab.core.search.engine import storage_object, store_of
from agentlab.core.search.loop import RETRY_QUEUE_S
from agentlab.core.search.records import A_OUTCOME, A_PLAN, awaiting_retry
from agentlab.core.search.study import MAX_RETRIES, attach_opened, missing_study, open_storage, open_study, quiet

STUDY = "evolve"


def open_population(store: str | None, run_path: Path | None, *, create: bool) -> Population:
    """The run's population: ``store`` (an Optuna storage URL or journal path) or population.db in ``run_path``."""
    import optuna

    quiet()
    if store is not None and not store.strip():
        raise ConfigError("store: empty", hint="give the run's store: sqlite:///RUN/population.db, or the `store` of "
                          "its config")
    if store is None and run_path is None:
        raise ConfigError("no population store", hint="pass --store URL (the run's `store`, or "
                          "sqlite:///RUN/population.db)")
    url = store if store is not None else f"sqlite:///{(Path(run_path) / 'population.db').resolve()}"  # type: ignore[arg-type]
    if create:
        study = open_study(url, Path(run_path or "."), name=STUDY, directions=["maximize"], what="store")
    else:
        if "://" not in url and Path(url).is_dir():
            raise ConfigError(f"store {url}: a folder, not a journal file",
                              hint="give the run's store: sqlite:///RUN/population.db, or the `store` of its config")
        if missing_study(url, Path(".")) is not None:  # a journal path is never created here (opening one would)
            raise ConfigError(f"store {url}: no such {'database' if url.startswith('sqlite') else 'journal'} file",
                              hint="give the run's store: sqlite:///RUN/population.db, or the `store` of its config")
        opened = open_storage(url, Path(run_path or "."), what="store", create=False)
        backend = storage_object(opened)
        try:
            study = attach_opened(optuna.load_study(storage=backend, study_name=STUDY), backend, url, opened)
        except KeyError:
            raise ConfigError(f"store {store or url}: holds no evolve population",
                              hint="start the run first: agentlab evolve run -c FILE (it creates the population)"
                              ) from None
    return Population(study, url)


def located(path: str | None, folder: str | None) -> str | None:
    """An individual's adapter folder as the store keeps it: absolute. A store written before every path was kept
    absolute holds a child's folder as the run was given it (``runs/e1/adapters/gen_1/g1c0``, relative to the folder
    the run started in, which nothing recorded): it is that child's folder in the run folder the store records
    (``folder``, set by every `evolve run`, a resume included), as children always lie at
    ``RUN/adapters/gen_K/ID`` or ``RUN/adapters/baselines/ID``. The seeds were always kept absolute."""
    if path is None or folder is None or Path(path).is_absolute() or len(Path(path).parts) < 3:
        return path
    return str(Path(folder, *Path(path).parts[-3:]))


class Population:
    """Individuals as trials of one study (named by trial number); see the module docstring."""

    def __init__(self, study: Study, url: str):
        self.study, self.url = study, url  # the storage URL or journal path, as workers are given it
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
        """Every individual by id: its lineage, ``state`` (waiting, running, complete, fail), ``trial``, the
        ``worker`` that claimed it and, once scored, its scores (or its ``error``)."""
        out: dict[str, dict[str, Any]] = {}
        trials = self.store.trials()
        # failed by the heartbeat check, its copy not queued yet: still running, as the loop counts it
        retrying = awaiting_retry(trials, MAX_RETRIES, RETRY_QUEUE_S)
        folder = self.attr("folder")
        for trial in trials:
            plan = trial.user_attrs.get(A_PLAN, {})
            ind = plan.get("extra", {}).get("individual")
            if ind is None:
                if "id" in trial.user_attrs:
                    raise ConfigError("this population was made by an agentlab before evolve ran on the search "
                                      "loop; it cannot be resumed", hint="start a new run: agentlab evolve run -c FILE")
                continue
            state = "running" if trial.number in retrying else trial.state.name.lower()
            row = {**ind, "path": located(ind.get("path"), folder), "state": state, "trial": trial.number,
                   "worker": plan.get("worker")}
            outcome = trial.user_attrs.get(A_OUTCOME, {})
            if state == "complete":
                row.update({k: v for k, v in outcome.get("metrics", {}).items() if k != "value"})
            elif state == "fail":
                row["error"] = str(outcome.get("reason") or "interrupted").removeprefix("failed: ")
            out[ind["id"]] = row
        return out

"""The population store (docs/design/architecture.md, "Debate and evolve"): each individual of an evolve run is a
trial of one Optuna study, queued and claimed by the shared search loop; its lineage is the trial's plan
(``plan.extra.individual``), its scores the trial's outcome. The study's user attrs hold what every worker needs
(``settings``, every path in it absolute, and ``reference``), each generation's members (``population_K``), the run
folder (``folder``, see ``located``: the run that owns the population, ``check_owner``) and each seed's fingerprint
(``seed_fingerprints``, checked by a resume). A finished trial is never scored again: that is what ``--resume`` relies
on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna import Study

from agentlab.core.errors import ConfigError, UsageError, shell_word
from agentlab.core.search.engine import storage_object, store_of
from agentlab.core.search.loop import RETRY_QUEUE_S
from agentlab.core.search.records import A_OUTCOME, A_PLAN, awaiting_retry
from agentlab.core.search.study import (
    MAX_RETRIES,
    attach_opened,
    await_labels,
    missing_study,
    open_storage,
    open_study,
    quiet,
    store_file,
)

STUDY = "evolve"
FORMER = "former_folders"  # the earlier names of the run folder (``located``)
STORE_HINT = "give the run's store: sqlite:///RUN/population.db, or the `store` of its config"


def open_population(store: str | None, run_path: Path | None, *, create: bool) -> Population:
    """The run's population: ``store`` (an Optuna storage URL or journal path) or population.db in ``run_path``."""
    found = _open(store, run_path, create=create)
    if isinstance(found, ConfigError):
        raise found
    return found


def _open(store: str | None, run_path: Path | None, *, create: bool) -> Population | ConfigError:
    """``open_population``; an existing store that holds no population yet (no such file, an empty SQLite file, no
    evolve study in it) is the error that says so, returned, not raised: ``await_population`` waits on it."""
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
            raise ConfigError(f"store {url}: a folder, not a journal file", hint=STORE_HINT)
        if missing_study(url, Path(".")) is not None:  # a journal path is never created here (opening one would)
            return ConfigError(f"store {url}: no such {'database' if url.startswith('sqlite') else 'journal'} file",
                               hint=STORE_HINT)
        try:
            opened = open_storage(url, Path(run_path or "."), what="store", create=False)
        except ConfigError as exc:  # an empty SQLite file: a run making its population, or the wrong file
            file = store_file(url)
            if url.startswith("sqlite:///") and file is not None and file.is_file() and not file.stat().st_size:
                return exc
            raise
        backend = storage_object(opened)
        try:
            study = attach_opened(optuna.load_study(storage=backend, study_name=STUDY), backend, url, opened)
        except KeyError:
            return ConfigError(f"store {store or url}: holds no evolve population",
                               hint="start the run first: agentlab evolve run -c FILE (it creates the population)")
    return Population(study, url)


def await_population(store: str, announce: Callable[[str], None], poll_s: float = 2.0) -> Population:
    """The population of ``store`` once its run has made it (`evolve worker --wait` started before the run, as the
    docs' examples start them): said once, then polled every ``poll_s`` until Ctrl-C. A store that can never hold
    one (a folder, a file of something else) is refused at once."""
    said = False
    while isinstance(found := _open(store, None, create=False), ConfigError):
        if not said:
            announce(f"waiting for the run to create its population in {store} (Ctrl-C to stop)")
            said = True
        time.sleep(poll_s)
    return found


def check_owner(pop: Population, store: str | None, here: str | None = None) -> None:
    """A population belongs to the run that made it (``folder``): another `evolve run` (not a resume) on its store
    while it is not finished is refused (``UsageError``, exit 2): two runs breed and queue the same generations, so
    individuals were scored twice and each run reported the other's (two runs started together on a new store both
    found it empty). ``here``: this run's folder. A store made an instant ago by another run (``created`` False, no
    trials yet) may not name its folder yet: waited for, as ``open_study`` waits for a new study's labels."""
    if pop.created:
        return
    await_labels(pop.study, ["folder"])
    folder = pop.attr("folder")
    if folder in (None, here) or pop.attr("finished"):
        return
    where = store or pop.url
    raise UsageError(f"store {where}: holds the population of the run {folder}, which has not finished (it is "
                     "running, or it stopped); a second run on it would breed and score that population again; "
                     "nothing was written to it",
                     hint=f"help that run score: agentlab evolve worker --store {shell_word(where)}; continue it if "
                     f"it stopped: agentlab evolve run --resume {shell_word(folder)}; or give this run another store "
                     "(or leave store out: population.db in its run folder)")


def located(path: str | None, folder: str | None, former: list[str] | tuple[str, ...] = ()) -> str | None:
    """An individual's adapter folder as the store keeps it: absolute, in the run folder as it was named when the
    child was made. ``former``: the earlier names of the run folder ``folder`` (``FORMER``, recorded by a resume of
    the run moved or copied elsewhere): a child made in one lies in ``folder`` now (a moved run said the old path,
    and a copy recommended the original's adapter).

    A store written before every path was kept absolute holds a child's folder as the run was given it
    (``runs/e1/adapters/gen_1/g1c0``, relative to the folder the run started in, which nothing recorded): it is that
    child's folder in the run folder the store records (``folder``, set by every `evolve run`, a resume included), as
    children always lie at ``RUN/adapters/gen_K/ID`` or ``RUN/adapters/baselines/ID``. The seeds were always kept
    absolute (and lie outside the run folder)."""
    if path is None or folder is None:
        return path
    if Path(path).is_absolute():
        old = next((f for f in former if Path(path).is_relative_to(f)), None)
        return path if old is None else str(Path(folder, Path(path).relative_to(old)))
    if len(Path(path).parts) < 3:
        return path
    return str(Path(folder, *Path(path).parts[-3:]))


class Population:
    """Individuals as trials of one study (named by trial number); see the module docstring."""

    def __init__(self, study: Study, url: str):
        self.study, self.url = study, url  # the storage URL or journal path, as workers are given it
        self.created = store_of(study).created  # this process made the study: its run owns the population
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
        folder, former = self.attr("folder"), self.attr(FORMER) or []
        for trial in trials:
            plan = trial.user_attrs.get(A_PLAN, {})
            ind = plan.get("extra", {}).get("individual")
            if ind is None:
                if "id" in trial.user_attrs:
                    raise ConfigError("this population was made by an agentlab before evolve ran on the search "
                                      "loop; it cannot be resumed", hint="start a new run: agentlab evolve run -c FILE")
                continue
            state = "running" if trial.number in retrying else trial.state.name.lower()
            row = {**ind, "path": located(ind.get("path"), folder, former), "state": state, "trial": trial.number,
                   "worker": plan.get("worker")}
            outcome = trial.user_attrs.get(A_OUTCOME, {})
            if state == "complete":
                row.update({k: v for k, v in outcome.get("metrics", {}).items() if k != "value"})
            elif state == "fail":
                row["error"] = str(outcome.get("reason") or "interrupted").removeprefix("failed: ")
            out[ind["id"]] = row
        return out

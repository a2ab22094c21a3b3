"""The one worker protocol of every search (nas, compress, evolve) on Optuna's public API only: ``TrialStore``
creates, claims, beats and recovers trials, named by their number (docs/design/architecture.md, Search).
A study is attached to its storage object (``attach``; ``study.open_study`` does it) and ``store_of`` gives its
store. On SQLite, which has no row locks, claims and recovery hold a file lock beside the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from agentlab.core.files import deferred_interrupts
from agentlab.core.search import records as R

_STORES: weakref.WeakKeyDictionary[Any, TrialStore] = weakref.WeakKeyDictionary()


def attach(study: Any, storage: Any, *, url: str | None = None) -> Any:
    """Record the storage object ``study`` was created or loaded on (the object passed to ``optuna.create_study``
    or ``load_study``), with the ``url`` it was opened from (an SQLite database gets a claims lock beside it; errors
    name it by ``url_where``)."""
    _STORES[study] = TrialStore(study, storage, url=url)
    return study


def storage_object(storage: Any) -> Any:
    """A storage URL as Optuna's storage object (``get_storage``, as ``create_study`` does); objects as they are;
    None: in memory."""
    import optuna

    if storage is None:
        return optuna.storages.InMemoryStorage()
    return optuna.storages.get_storage(storage) if isinstance(storage, str) else storage


def new_study(storage: Any = None, **kwargs: Any) -> Any:
    """``optuna.create_study(storage=..., **kwargs)``, attached: for searches opened outside ``study.open_study``
    (tests, notebooks). ``storage``: a URL, a storage object, or None (in memory)."""
    import optuna

    opened = storage_object(storage)
    study = optuna.create_study(storage=opened, **kwargs)
    return attach(study, opened, url=storage if isinstance(storage, str) else None)


def url_where(url: str | None) -> str | None:
    """A storage URL as errors name it: a SQLite URL's file, any other URL without its password."""
    from agentlab.core.config import scrub_text

    if url is None or url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///") if url else None
    return scrub_text(url) if "://" in url else url


def store_of(study: Any) -> TrialStore:
    try:
        return _STORES[study]
    except KeyError:
        raise ValueError("this study was not opened by agentlab (core.search.study.open_study or "
                         "core.search.engine.new_study): its storage is unknown") from None


class TrialStore:
    """The trials of one study as the workers share them; see the module docstring."""

    def __init__(self, study: Any, storage: Any, *, url: str | None = None):
        self.study, self.storage, self.where = study, storage, url_where(url)
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.created = False  # this process's open made the study (``study.open_study``): its creator labels it
        self.worker = R.worker_id()
        interval = getattr(storage, "get_heartbeat_interval", None)  # Optuna's RDB storage given a heartbeat_interval
        self.heartbeats = callable(interval) and interval() is not None
        self.beat_s = float(storage.get_heartbeat_interval()) if self.heartbeats else 1.0
        self._ids: dict[int, int] = {}
        sqlite = url.removeprefix("sqlite:///") if url and url.startswith("sqlite:///") else None
        self.claim_lock = Path(sqlite + ".claims.lock") if sqlite and sqlite != ":memory:" else None

    # ------------------------------------------------------------------ reading

    def trial_id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = int(self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number))
        return self._ids[number]

    def get(self, number: int) -> Any:
        """The FrozenTrial ``number`` as the storage holds it now (one read)."""
        return self.storage.get_trial(self.trial_id(number))

    def trials(self, states: Sequence[Any] | None = None) -> list[Any]:
        return list(self.storage.get_all_trials(self.study_id, deepcopy=False,
                                                states=tuple(states) if states is not None else None))

    def trial(self, number: int) -> Any:
        """The live ``optuna.Trial`` (report, should_prune, set_user_attr) of a RUNNING trial."""
        import optuna

        return optuna.Trial(self.study, self.trial_id(number))

    def study_attr(self, key: str, default: Any = None) -> Any:
        return self.storage.get_study_user_attrs(self.study_id).get(key, default)

    def set_study_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self.study_id, key, value)

    # ------------------------------------------------------------------ writing

    def create(self, *, state: Any = None, params: dict[str, Any] | None = None,
               distributions: dict[str, Any] | None = None, user_attrs: dict[str, Any] | None = None,
               system_attrs: dict[str, Any] | None = None) -> int:
        """A trial written whole in one storage write (RUNNING by default: claimed by this worker, with its first
        heartbeat at once, so a worker killed before its first beat still goes stale). Returns its number."""
        from optuna.trial import TrialState, create_trial

        state = TrialState.RUNNING if state is None else state
        template = create_trial(state=state, params=params or None, distributions=distributions or None,
                                user_attrs=user_attrs or None, system_attrs=system_attrs or None)
        with deferred_interrupts():
            trial_id = int(self.storage.create_new_trial(self.study_id, template_trial=template))
            if state == TrialState.RUNNING and self.heartbeats:
                self.storage.record_heartbeat(trial_id)
        number = int(self.storage.get_trial_number_from_id(trial_id))
        self._ids[number] = trial_id
        return number

    def set_attr(self, number: int, key: str, value: Any) -> None:
        with deferred_interrupts():
            self.storage.set_trial_user_attr(self.trial_id(number), key, value)

    # ------------------------------------------------------------------ claims

    @contextlib.contextmanager
    def _claiming(self) -> Iterator[None]:
        if self.claim_lock is None:
            yield
            return
        with open(self.claim_lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:  # explicit: a process forked meanwhile would hold the lock with its copy of the file
                fcntl.flock(handle, fcntl.LOCK_UN)

    def claim(self, limit: int = 1, *, accept: Callable[[Any], bool] = lambda t: True,
              attrs: Callable[[Any], dict[str, Any]] | None = None) -> list[Any]:
        """Up to ``limit`` WAITING trials that ``accept`` takes, now RUNNING for this worker (first heartbeat
        recorded, then ``attrs(trial)`` stored on each); none that another worker claimed first. Returns them as
        they were read (FrozenTrials, state WAITING)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        claimed: list[Any] = []
        if not any(accept(t) for t in self.trials((TrialState.WAITING,))):  # the usual case: no lock, no lock file
            return claimed
        with self._claiming(), deferred_interrupts():
            for trial in self.trials((TrialState.WAITING,)):
                if len(claimed) >= limit:
                    break
                if not accept(trial):
                    continue
                trial_id = self.trial_id(trial.number)
                try:
                    if not self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                        continue
                except UpdateFinishedTrialError:  # finished since it was listed
                    continue
                if self.heartbeats:
                    self.storage.record_heartbeat(trial_id)
                for key, value in (attrs(trial) if attrs else {}).items():
                    self.storage.set_trial_user_attr(trial_id, key, value)
                claimed.append(trial)
        return claimed

    def requeue(self, number: int) -> bool:
        """A RUNNING trial back to WAITING, whole (params, attributes, number): it runs again once."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            with deferred_interrupts():
                return bool(self.storage.set_trial_state_values(self.trial_id(number), TrialState.WAITING))
        except UpdateFinishedTrialError:
            return False

    def recover(self, *, also: Callable[[Any], bool] | None = None) -> list[int]:
        """Requeue the RUNNING trials whose worker process on this host is gone, or that ``also`` names (e.g. trials
        this process could not record on a full disk). A trial names its worker in its plan (``plan.worker``) or in a
        ``worker`` attribute. Returns their numbers.

        Reads and requeues under the claim lock: a trial claimed between the two is not taken from its new worker."""
        from optuna.trial import TrialState

        def stranded(trial: Any) -> bool:
            worker = trial.user_attrs.get(R.A_PLAN, {}).get("worker") or trial.user_attrs.get("worker")
            return (worker != self.worker and not R.worker_alive(worker)) or (also is not None and also(trial))

        if not any(stranded(t) for t in self.trials((TrialState.RUNNING,))):  # the usual case: no lock
            return []
        with self._claiming():
            return [t.number for t in self.trials((TrialState.RUNNING,)) if stranded(t) and self.requeue(t.number)]

    def fail_stale(self) -> None:
        """On a database server: fail the trials whose worker stopped beating for the grace period; Optuna's retry
        callback queues a copy of each (WAITING, same params) for the next free worker."""
        if not self.heartbeats:
            return
        from optuna.storages import fail_stale_trials

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental since Optuna 2.9, stable in use
            fail_stale_trials(self.study)

    @contextlib.contextmanager
    def beating(self, number: int) -> Iterator[None]:
        """A heartbeat every ``beat_s`` while the block runs (nothing on storages without heartbeats)."""
        if not self.heartbeats:
            yield
            return
        trial_id, stop = self.trial_id(number), threading.Event()

        def beat() -> None:
            while not stop.wait(self.beat_s):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a lost connection: the next beat tries again; the grace period covers a few
                    continue

        self.storage.record_heartbeat(trial_id)
        thread = threading.Thread(target=beat, name=f"heartbeat-{number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

"""Optuna studies for every search: how one is opened (SQLite in the run folder by default, a journal file, or a
storage URL), what a damaged or mismatched study says, and the samplers (``KeptSampler``: asked on an in-memory
mirror, so the study holds only real trials). Directions are always a list, one per objective.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from agentlab.core.errors import ConfigError, RunDirError, pip_install
from agentlab.core.search.engine import attach, storage_object, store_of, url_where
from agentlab.core.search.records import TrialRecord

Direction = Literal["minimize", "maximize"]
OBJECTIVES_ATTR = "agentlab:objectives"  # study user attribute: the objectives' names, checked when reopened
SETTINGS_ATTR = "agentlab:settings"  # study user attribute: the settings every worker must share, checked when joined


def quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


# A database server shared by workers on several machines: a worker that dies there (SIGKILL, a lost node) cannot be
# seen from the others' process tables, so trials carry a heartbeat and a trial whose heartbeat stops for the grace
# period is failed and retried by another worker (Optuna's RetryFailedTrialCallback).
SERVER_URLS = ("postgresql", "mysql")
HEARTBEAT_ENV = "AGENTLAB_STUDY_HEARTBEAT_S"
MAX_RETRIES = 3  # a trial whose worker stopped beating is run again up to this many times


def server_storage(url: str) -> Any:
    """Optuna's RDB storage on a database server, with a heartbeat every ``$AGENTLAB_STUDY_HEARTBEAT_S`` seconds
    (default 10), a grace period of five beats, and a trial whose worker stopped beating retried (up to 3 times)."""
    import optuna
    from optuna import storages

    quiet()
    try:
        beat = max(1, int(float(os.environ.get(HEARTBEAT_ENV) or 10)))
    except ValueError:
        raise ConfigError(f"${HEARTBEAT_ENV}: {os.environ.get(HEARTBEAT_ENV)!r} is not a number of seconds",
                          hint="unset it for the default, 10") from None
    # Optuna 4.9 renamed the retry callback and its argument; older versions have only the first names.
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=MAX_RETRIES)} if retry is not None else {
            "failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)}
        # grace: five beats, so a worker busy on two loaded cores is not taken for dead
        return storages.RDBStorage(url, heartbeat_interval=beat, grace_period=5 * beat,
                                   engine_kwargs={"pool_pre_ping": True}, **callback)


def _not_a_journal(path: Path) -> str | None:
    """Why an existing file is not an Optuna journal, from its first line, before Optuna reads or appends to it
    (Optuna skips a last line without a newline as one being written, so a one-line text file was read as an empty
    journal and had the study appended to it); ``"sqlite"`` for an SQLite database (such as a run's study.db); None
    for a journal, an empty file or no file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return None
    if head.startswith(b"SQLite format 3\x00"):
        return "sqlite"
    line, newline, _ = head.partition(b"\n")
    if not head or (not newline and head.startswith(b'{"op_code"')):  # new, or its first line being written
        return None
    try:
        record = json.loads(line)
    except ValueError as exc:
        return f"its first line is not JSON ({type(exc).__name__}: {exc})"
    return None if isinstance(record, dict) and "op_code" in record else "its first line is JSON, not Optuna's"


def check_journal(storage: str, what: str = "search.storage") -> None:
    """``ConfigError`` when the existing file ``storage`` (a path, no ``://``) is no Optuna journal: an SQLite
    database, or a first line that is not Optuna's. Nothing is created or written."""
    problem = _not_a_journal(Path(storage))
    if problem == "sqlite":
        raise ConfigError(f"{what}: {storage} is an SQLite database, not a journal file",
                          hint=f"give it as a URL: sqlite:///{Path(storage).resolve()}")
    if problem:
        raise ConfigError(f"{what}: cannot use {storage!r} as an Optuna journal file: {problem}; nothing was "
                          "written to it", hint="give a new or existing journal file path, or an sqlite:/// URL")


def check_sqlite(storage: str, what: str = "search.storage", *, create: bool = True) -> None:
    """``ConfigError`` before Optuna opens an ``sqlite:///`` URL's existing file that is no SQLite database, or one
    of something else (tables, none of them Optuna's ``studies``): Optuna wrote its schema beside the user's tables.
    ``create`` False (a worker joining a run): an empty database too, which Optuna would fill with its schema."""
    import sqlite3
    from contextlib import closing

    path = store_file(storage)
    if not storage.startswith("sqlite:///") or path is None or not path.is_file():
        return
    tables: set[str] = set()
    if path.stat().st_size:
        try:
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)) as con:
                tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            with path.open("rb") as header:
                if header.read(16) == b"SQLite format 3\x00":
                    return  # locked by a worker, a hot journal after a kill: Optuna's open waits or rolls back
            raise ConfigError(f"{what}: {path} is not an SQLite database ({exc}); nothing was written to it",
                              hint="give a new file, an Optuna database, or a journal file path") from None
    if tables and "studies" not in tables:
        raise ConfigError(f"{what}: {path} is an SQLite database of something else (tables: "
                          f"{', '.join(sorted(tables)[:5])}), not Optuna's; nothing was written to it",
                          hint="give a new file or an Optuna database")
    if not tables and not create:
        raise ConfigError(f"{what}: {path} holds no Optuna study (an empty database); nothing was written to it",
                          hint="give the store the run made (its `store`, or sqlite:///RUN/population.db)")


def store_file(storage: str) -> Path | None:
    """The local file a storage setting keeps its studies in: a journal file's path, an ``sqlite:///`` URL's file
    without its query (``?timeout=30``); None for a database server."""
    if "://" not in storage:
        return Path(storage)
    if storage.startswith("sqlite:///"):
        return Path(storage.removeprefix("sqlite:///").partition("?")[0])
    return None


def check_storage(storage: str, what: str = "search.storage") -> None:
    """A bad ``storage`` as one line before any run folder exists, nothing created or written
    (``read_only_storage``): a dry run left a new SQLite file with Optuna's tables behind. A journal file whose
    folder does not exist is refused too (``check_journal_folder``), as an ``sqlite:///`` URL's is."""
    if "://" not in storage:
        check_journal_folder(storage, what)
    read_only_storage(storage, what)


def read_only_storage(storage: str, what: str = "search.storage") -> Any:
    """Optuna's storage over ``storage`` opened for reading only, or None when there is nothing to read yet (no file,
    an empty one, a database without Optuna's tables); a bad one is ``ConfigError`` naming ``what``. A journal file
    is read, not appended to; an SQLite file is opened read-only; a database server is reached, its tables not
    created. What a check before the run (a dry run's too) opens: it leaves no database behind."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" not in storage:
        check_journal(storage, what)
        file = Path(storage)
        if file.is_dir():
            raise ConfigError(f"{what}: {storage} is a folder, not a journal file",
                              hint="give a journal file path, or an sqlite:/// URL")
        return JournalStorage(JournalFileBackend(storage)) if file.is_file() and file.stat().st_size else None
    url = storage
    if storage.startswith("sqlite:///"):
        path = store_file(storage) or Path()
        check_sqlite(storage, what)  # an existing file that is no Optuna database: refused, read-only
        if not path.parent.is_dir():  # as the run's open would fail: SQLite makes the file, not its folder
            raise ConfigError(f"{what}: cannot open {storage!r}: its folder {path.parent} does not exist",
                              hint="create the folder first, or give another path")
        if path.is_dir():  # the run's open said "unable to open database file", after making its run folder
            raise ConfigError(f"{what}: {path} is a folder, not an SQLite database file",
                              hint="give a file path inside it, e.g. sqlite:///" + str(path / "study.db"))
        if not path.is_file() or not path.stat().st_size:
            return None
        url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        try:
            if not sqlalchemy.inspect(engine).has_table("studies"):
                return None
        finally:
            engine.dispose()
        return RDBStorage(url, skip_table_creation=True)
    except Exception as exc:  # sqlalchemy and the drivers raise many kinds for a bad URL or a server not answering
        if _busy_sqlite(storage, exc):
            return None  # another worker is writing it: nothing to read now, the run's own open checks it
        raise ConfigError(f"{what}: cannot open {url_where(storage)!r}: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          hint=storage_hint(exc)) from None


# a database server URL whose SQLAlchemy driver is missing: the package to install (or the URL's other driver)
_DRIVERS = {"psycopg2": f"pip install psycopg2-binary, or use postgresql+psycopg:// after {pip_install('postgres')}",
            "psycopg": pip_install("postgres"),
            "MySQLdb": "pip install mysqlclient, or use mysql+pymysql:// after pip install pymysql",
            "pymysql": "pip install pymysql"}
STORAGE_HINT = "use sqlite:///path.db, a journal file path, or a reachable RDB URL"


def storage_hint(exc: BaseException) -> str:
    """The hint of a storage that cannot be opened: the driver to install when the URL's is missing (SQLAlchemy
    imports it on connect: ``No module named 'MySQLdb'`` for ``mysql://``), else ``STORAGE_HINT``."""
    missing: str | None = None
    seen: BaseException | None = exc
    while seen is not None and missing is None:  # optuna re-raises it as its own ("Failed to import DB access ...")
        found = re.search(r"No module named '([\w.]+)'", str(seen))
        missing = seen.name if isinstance(seen, ImportError) and seen.name else found.group(1) if found else None
        seen = seen.__cause__ or seen.__context__
    if missing is None:
        return STORAGE_HINT
    top = missing.split(".")[0]
    return f"the database driver {top!r} is not installed: " + _DRIVERS.get(top, f"install the package that "
                                                                             f"provides {top}")


def _busy_sqlite(storage: str, exc: BaseException) -> bool:
    """An SQLite file another process is writing, seen through a read-only open: its journal cannot be read back
    ("attempt to write a readonly database") or it is locked. Not a bad storage: a worker starting beside one that is
    creating the study met it."""
    said = str(exc)
    return storage.startswith("sqlite:///") and ("readonly database" in said or "database is locked" in said)


def check_journal_folder(storage: str, what: str = "search.storage") -> None:
    """``ConfigError`` when the folder of the journal file ``storage`` (a path, no ``://``) does not exist, as for an
    ``sqlite:///`` URL's: Optuna makes the file, not its folder, and a typo in the folder would otherwise start a
    new study in a new folder beside the one the other workers use."""
    folder = Path(storage).parent
    if not folder.exists():
        raise ConfigError(f"{what}: cannot open the journal file {storage!r}: its folder {folder} does not exist",
                          hint="create the folder first, or give another path")


def open_storage(storage: str | None, run_path: Path, *, what: str = "search.storage", default: str = "study.db",
                 create: bool = True) -> Any:
    """SQLite ``default`` in the run folder when ``storage`` is None; ``*.log``/``*.jsonl``-like paths (no ``://``)
    are journal files; else an Optuna storage URL. ``what`` names the setting in errors; ``create`` False: an
    existing empty SQLite file is refused (``check_sqlite``)."""
    import optuna

    if storage is None:
        return f"sqlite:///{(run_path / default).resolve()}"
    if "://" not in storage:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        check_journal(storage, what)
        check_journal_folder(storage, what)
        try:
            return JournalStorage(JournalFileBackend(str(storage)))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a file that is no journal
            raise ConfigError(f"{what}: cannot use {storage!r} as an Optuna journal file: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}",
                              hint="give a new or existing journal file path, or an sqlite:/// URL") from None
    from sqlalchemy.exc import DBAPIError

    check_sqlite(storage, what, create=create)
    for attempt in range(SCHEMA_TRIES):
        try:
            if storage.startswith(SERVER_URLS):
                return server_storage(storage)
            return optuna.storages.get_storage(storage)
        except DBAPIError as exc:
            # Workers started together on a new database race to create its schema (the loser gets "UNIQUE
            # constraint failed: alembic_version", PostgreSQL's "duplicate key value violates unique constraint
            # pg_type_typname_nsp_index" or "table ... already exists"); a moment later the schema is there. Any
            # other error (a refused connection, a wrong password) is said at once.
            error: Exception = exc
            if not _schema_race(exc) or attempt == SCHEMA_TRIES - 1:
                break
            time.sleep(0.25 * (attempt + 1) * (1 + random.random()))  # apart, or they race again in step
        except Exception as exc:  # optuna raises many kinds for a bad URL
            error = exc
            break
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    raise ConfigError(f"{what}: cannot open {url_where(storage)!r}: {first}", hint=storage_hint(error)) from None


SCHEMA_TRIES = 8  # ~7-14 s in all: 8 workers started at once on a loaded machine all get through


def _schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` (a DBAPIError) is a lost race to create a new database's schema, or a wait on workers doing so
    (SQLite's lock, a server's deadlock or lock wait), which a retry gets past; not a refused login or a missing
    database."""
    from sqlalchemy.exc import IntegrityError

    text = str(exc).lower()
    return isinstance(exc, IntegrityError) or any(words in text for words in RACE_WORDS)


RACE_WORDS = ("already exists", "duplicate key", "unique constraint", "database is locked", "deadlock",
              "concurrently updated", "lock wait timeout")


def attach_opened(study: Any, backend: Any, storage: str | None, opened: Any) -> Any:
    """``study``, created or loaded on ``backend`` (``storage_object(opened)``), attached for the engine; ``storage``
    is the setting, ``opened`` what ``open_storage`` made of it."""
    return attach(study, backend, url=opened if isinstance(opened, str) else storage)


def missing_study(storage: str | None, run_path: Path, default: str = "study.db", *,
                  empty: bool = False) -> str | None:
    """The file a run's study was kept in (``run_path / default``, an SQLite URL's file, a journal file) when it is
    gone, else None (there, or on a server): a resume would open a new, empty study and run every trial again.
    ``empty`` (a resume's check): a file of 0 bytes is gone too; opening it would make a new study in it."""
    path = store_file(storage or f"sqlite:///{run_path / default}")
    if path is None:
        return None
    gone = not path.is_file() or (empty and not path.stat().st_size)
    return str(path) if gone else None


def unfinished_trials(records: Sequence[TrialRecord] | None) -> dict[int, str | None]:
    """The numbers of the study's trials (``study_records``) a stop left running or queued (a resume runs each again
    first, and each counts against the total), each with the run folder whose trial it is (its plan's ``run_dir``;
    None: not said); empty when there is no such study."""
    return {r.number: r.run_dir or None for r in records or [] if r.state in ("running", "waiting")}


def study_records(storage: str | None, run_path: Path, name: str,
                  default: str = "study.db", *, check: bool = False) -> list[TrialRecord] | None:
    """The study's trials as records, read from the study opened read-only; None when there is no such study (a
    resume's count then falls back to the run's agent_state.json) or, unless ``check``, it cannot be read. ``check``
    (a resume's, its dry run's too, before it says anything): a study there that cannot be read is the error the
    run's ``open_study`` would give (``study_error``), not None; one another worker is writing is None still."""
    import optuna

    if missing_study(storage, run_path, default) is not None:  # nothing to read: opening it would create it
        return None
    quiet()
    url = storage or f"sqlite:///{(run_path / default).resolve()}"
    try:
        backend = read_only_storage(url)
        if backend is None:
            return None
        study = optuna.load_study(study_name=name, storage=backend)
        return [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]
    except KeyError:  # no study of that name
        return None
    except Exception as exc:  # a damaged database: open_study says what is wrong when the run opens it
        if not check or _busy_sqlite(url, exc):
            return None
        if storage is not None and isinstance(exc, ConfigError):  # read_only_storage named search.storage
            raise
        raise study_error(exc, storage, run_path, name=name, default=default) from None


def study_error(exc: BaseException, storage: str | None, run_path: Path, *, name: str, what: str = "search.storage",
                default: str = "study.db") -> RunDirError | ConfigError:
    """What a study that cannot be opened (``exc``) says: the run folder's own (``storage`` None) is damaged, a
    storage's study cannot be opened. A check's own ``ConfigError`` (``check_sqlite``: not an SQLite file) says the
    error it was raised on, as the open itself would have met it."""
    cause = exc.__cause__ or exc.__context__ if isinstance(exc, ConfigError) else None
    said = cause if cause is not None else exc
    first = str(said).splitlines()[0] if str(said) else ""
    if isinstance(said, ConfigError):  # no error under it: its own words, less the setting a run folder's has not
        first = first.removeprefix(f"{what}: ")
    reason = f"{type(said).__name__}: {first}"
    if storage is None:
        return RunDirError(f"{run_path / default}: cannot open the study ({reason})",
                           hint="the run folder's study is damaged: restore it, or start a new run without --resume")
    return ConfigError(f"{what}: cannot open the study {name!r} in {url_where(storage)!r} ({reason})",
                       hint="check the storage, or use a new one")


def open_study(storage: str | None, run_path: Path, *, name: str, directions: Sequence[Direction],
               objectives: Sequence[str] | None = None, sampler: Any = None, pruner: Any = None,
               what: str = "search.storage",
               settings: dict[str, str] | None = None, follow: Iterable[str] = ()) -> Any:
    """Create or load the study ``name``. ``objectives`` (the names of the values, in order) and ``settings`` (what
    a trial's value depends on, ``{key: value as said}``) are stored on a new study and checked on an existing one,
    so two searches with different goals or data never share a study by accident. ``follow``: keys of ``settings``
    an existing study takes from ``settings`` instead of comparing them (a resume's data file at a new path, whose
    content its caller checked)."""
    import optuna

    quiet()
    opened = open_storage(storage, run_path, what=what)
    try:
        backend = storage_object(opened)
        try:
            study = optuna.create_study(study_name=name, storage=backend, directions=list(directions),
                                        sampler=sampler, pruner=pruner)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=backend, sampler=sampler, pruner=pruner)
            created = False
    except Exception as exc:  # sqlalchemy / optuna raise many kinds for a damaged database; all mean the same here
        raise study_error(exc, storage, run_path, name=name, what=what) from exc
    attach_opened(study, backend, storage, opened)
    store_of(study).created = created
    labels = {OBJECTIVES_ATTR: objectives, SETTINGS_ATTR: settings}
    if not created:
        await_labels(study, [attr for attr, value in labels.items() if value is not None])
    check_study(study, directions, objectives, what=what, where=url_where(storage) or str(run_path / "study.db"),
                settings=settings, skip=follow)
    if objectives is not None and study.user_attrs.get(OBJECTIVES_ATTR) is None:
        study.set_user_attr(OBJECTIVES_ATTR, list(objectives))
    made: dict[str, str] | None = study.user_attrs.get(SETTINGS_ATTR)
    if settings is not None and made is None:
        study.set_user_attr(SETTINGS_ATTR, dict(settings))
    elif settings is not None and made is not None and any(made.get(key) != settings.get(key) for key in follow):
        study.set_user_attr(SETTINGS_ATTR, {**made, **{key: settings[key] for key in follow if key in settings}})
    return study


LABEL_WAIT_S = 5.0  # how long a worker that opened a new study another created waits for its creator's labels


def await_labels(study: Any, attrs: list[str]) -> None:
    """A study another worker created an instant ago, with no trials yet, may not carry its creator's labels
    (``OBJECTIVES_ATTR``, ``SETTINGS_ATTR``: written just after ``create_study``): wait for them, so that two workers
    started together with different settings do not both find none and both run. A study without trials that stays
    unlabelled (its creator died before writing them) is labelled by this worker after ``LABEL_WAIT_S``."""
    deadline = time.monotonic() + LABEL_WAIT_S
    while any(study.user_attrs.get(attr) is None for attr in attrs) and time.monotonic() < deadline:
        if study.get_trials(deepcopy=False):  # made before labels existed, or by a search that has none
            return
        time.sleep(0.05)


def peek_study(storage: str, name: str, directions: Sequence[Direction], objectives: Sequence[str] | None = None, *,
               what: str = "search.storage", settings: dict[str, str] | None = None) -> Any:
    """The shared study ``name`` in ``storage`` as a check before the run (a dry run's too) sees it, read only:
    None when there is none yet (the run creates it); a bad storage, a damaged one, or a study of another goal or
    other settings (``check_study``) is ``ConfigError``, before any run folder exists. Nothing is created or written."""
    import optuna

    quiet()
    backend = read_only_storage(storage, what)
    if backend is None:
        return None
    try:
        study = optuna.load_study(study_name=name, storage=backend)
    except KeyError:  # no study of that name yet
        return None
    except Exception as exc:  # sqlalchemy / optuna raise many kinds for a damaged database
        if _busy_sqlite(storage, exc):
            return None  # another worker is writing it: the run's own open_study checks the same
        raise ConfigError(f"{what} ({url_where(storage)}): cannot read the study {name!r} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})",
                          hint="check the storage, or use a new one") from None
    check_study(study, directions, objectives, what=what, where=url_where(storage) or storage, settings=settings)
    return study


def check_study(study: Any, directions: Sequence[Direction], objectives: Sequence[str] | None = None, *,
                what: str = "search.storage", where: str = "", settings: dict[str, str] | None = None,
                skip: Iterable[str] = ()) -> None:
    """``ConfigError`` when an existing ``study`` was made for another goal: other directions, or other
    ``objectives`` stored (none stored yet: a new study, which its opener labels), or with other ``settings`` (a
    worker on other data or another base config would mix its values with the study's; the keys in ``skip`` are not
    compared). Only reads: a dry run checks a shared study so, writing nothing (``open_study`` checks every study it
    opens the same way)."""
    name, have = study.study_name, [d.name.lower() for d in study.directions]
    if have != list(directions):
        raise ConfigError(f"{what}: the study {name!r} in {where} has directions {have}, this search needs "
                          f"{list(directions)}", hint="use another study name or storage for a different goal")
    stored = study.user_attrs.get(OBJECTIVES_ATTR)
    if objectives is not None and stored is not None and list(stored) != list(objectives):
        raise ConfigError(f"{what}: the study {name!r} in {where} optimises {stored}, this search "
                          f"{list(objectives)}", hint="use another study name or storage for a different goal")
    made = study.user_attrs.get(SETTINGS_ATTR)
    if settings is not None and made is not None:
        changed = [f"{key} {made.get(key, '-')} -> {settings.get(key, '-')}"
                   for key in sorted(made.keys() | settings.keys())
                   if made.get(key) != settings.get(key) and key not in skip]
        if changed:
            raise ConfigError(f"{what}: the study {name!r} in {where} was made with other settings than this "
                              f"search's ({'; '.join(changed[:6])}{'; ...' if len(changed) > 6 else ''}): its trials' "
                              "values would not compare with this one's",
                              hint="start every worker of a study with the same config (what a resume may change "
                              "may differ), or give this search another search.study_name or storage")


def make_sampler(kind: str, seed: int, *, startup: int = 10, population: int = 50,
                 conditional: bool = False) -> Any:
    """The sampler of a ``sampler`` planner kind (``kinds.KINDS``): TPE (``startup`` random trials first), random,
    NSGA-II (``population`` per generation) or CMA-ES. Constraints reach the samplers on the trials themselves
    (``create_trial(constraints=...)``; above 0 is infeasible).

    ``tpe``: on a ``conditional`` space (keys that apply to some trials only, ``ParamSpec.when``) TPE models the keys
    jointly within each group of keys that occur together (``multivariate``, ``group``), instead of each key alone
    over the trials that happen to have it; else one key at a time. ``tpe_independent`` is always one key at a
    time, ``tpe_multivariate`` always joint (grouped on a conditional space). ``cmaes``: Optuna's CMA-ES over the
    numeric keys every trial has; categorical and conditional keys are drawn at random (its independent sampler)."""
    import optuna

    if kind in ("tpe", "tpe_independent", "tpe_multivariate"):
        joint = kind == "tpe_multivariate" or (kind == "tpe" and conditional)
        if joint:
            with warnings.catch_warnings():  # multivariate and group are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                                  group=conditional)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed))
    raise ValueError(f"unknown sampler {kind!r}")


class KeptSampler:
    """One Optuna sampler for a whole search, seeded once, asked on an in-memory mirror of the study that ``sync``
    fills with each finished trial once (docs/design/architecture.md: one sampler per search). A point that will not
    run is told back before the next draw: ``infeasible`` and ``repeat`` (once per point) as bad trials
    (``penalty``; one objective only), unless ``penalize=False`` (the random warm-up); ``skip`` and ``run`` leave
    nothing. Failed real trials (``sync``'s ``failed``) are bad trials too. ``explore=True`` asks a second sampler of
    the same kind on the same mirror, so the main sampler's draws stay what they would be alone (TPE, NSGA-II)."""

    def __init__(self, make: Callable[[int], Any], directions: Sequence[Direction], seed: int):
        import optuna

        quiet()
        self._make, self._seed, self.directions = make, seed, list(directions)
        self.main = make(seed)
        self._explorer: Any = None
        self.study = optuna.create_study(directions=self.directions, sampler=self.main)
        self._copied: set[int] = set()
        self._repeated: set[str] = set()  # points already penalised as repeats

    def penalty(self) -> float | None:
        """The value of a bad point: infinitely worse than any result (None with several objectives: bad points
        are only skipped there)."""
        if len(self.directions) != 1:
            return None
        return math.inf if self.directions[0] == "minimize" else -math.inf

    def sync(self, finished: Iterable[Any], failed: Iterable[Any] = (),
             distributions: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Copy the real study's ``finished`` trials (COMPLETE, PRUNED) and ``failed`` ones (as bad trials, their
        params under ``distributions(params)``) that are not in the mirror yet; each trial is copied once."""
        for trial in finished:
            if trial.number not in self._copied:
                self._copied.add(trial.number)
                self.study.add_trial(trial)
        for trial in failed:
            if trial.number not in self._copied:
                self._copied.add(trial.number)
                if distributions is not None:
                    self._bad(dict(trial.params), distributions(dict(trial.params)))

    def ask(self, distributions: dict[str, Any] | None = None, *, explore: bool = False) -> Any:
        """An ``optuna.Trial`` of the mirror; tell it back with ``tell`` before the next ``ask``."""
        if explore and self._explorer is None:
            self._explorer = self._make(self._seed + 1_000_003)
        self.study.sampler = self._explorer if explore else self.main
        try:
            return self.study.ask(distributions)
        finally:
            self.study.sampler = self.main

    def draw(self, distributions: dict[str, Any] | None, judge: Callable[[dict[str, Any]], str | None], *,
             read: Callable[[Any], dict[str, Any]] | None = None,
             told: Callable[[dict[str, Any]], dict[str, Any]] | None = None, explore: bool = False,
             penalize: bool = True) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
        """One point: asked, read (``read(trial)``: a conditional space's define-by-run draw; else the trial's
        params), judged (``judge``: None when it runs, else why not: ``tell``'s verdict), told back (``told(params)``:
        the distributions of a bad point). Returns the params, the judgement and the sampler's attributes of the
        draw."""
        trial = self.ask(distributions, explore=explore)
        params = read(trial) if read is not None else dict(trial.params)
        judged = judge(params)
        attrs = self.tell(trial, judged or "run", told(params) if told is not None else None, penalize=penalize)
        return params, judged, attrs

    def tell(self, trial: Any, verdict: str, distributions: dict[str, Any] | None = None, *,
             penalize: bool = True) -> dict[str, Any]:
        """Close ``trial``: a bad trial (``infeasible``, ``repeat``; its params under ``distributions``; not when
        ``penalize`` is off) or nothing the sampler reads (``run``, ``skip``). Returns the sampler's own attributes
        of the draw (CMA-ES's generation and optimizer), which a trial that runs keeps, so its copy restores them."""
        import json

        from optuna.trial import TrialState

        attrs = dict(self.study.get_trials(deepcopy=False)[-1].system_attrs)
        self.study.tell(trial, state=TrialState.FAIL)
        bad = penalize and verdict in ("infeasible", "repeat")
        if bad and verdict == "repeat":
            key = json.dumps(trial.params, sort_keys=True, default=str)
            bad = key not in self._repeated
            self._repeated.add(key)
        if bad:
            self._bad(dict(trial.params), distributions or dict(trial.distributions))
        return attrs

    def _bad(self, params: dict[str, Any], distributions: dict[str, Any]) -> None:
        """``params`` as a bad trial of the mirror (``penalty``); nothing with several objectives or no params."""
        from optuna.trial import create_trial

        value = self.penalty()
        if value is not None and params:
            self.study.add_trial(create_trial(params=params, distributions=distributions, value=value))


def finished_trial(params: dict[str, Any], distributions: dict[str, Any], values: Sequence[float] | None, *,
                   violation: float | None = None, user_attrs: dict[str, Any] | None = None,
                   system_attrs: dict[str, Any] | None = None) -> Any:
    """A FrozenTrial for work that is done: COMPLETE with ``values`` (and the constraint ``violation`` when given),
    FAIL when ``values`` is None."""
    from optuna.trial import TrialState, create_trial

    done = values is not None
    return create_trial(state=TrialState.COMPLETE if done else TrialState.FAIL,
                        values=list(values) if values is not None else None, params=params, distributions=distributions,
                        user_attrs=user_attrs, system_attrs=system_attrs,
                        constraints={"violation": float(violation)} if done and violation is not None else None)

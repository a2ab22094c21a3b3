"""Optional experiment tracking on MLflow (``--mlflow URI``): what every command logs, in one place.

A command opens one tracker per run folder: one MLflow *parent* run for the whole agentlab run, and one *child* run
per experiment inside it (an nas trial, a compress experiment)::

    check_tracking(cfg.mlflow)                    # in prepare(): before any run folder exists (exit 2 when unusable)
    with open_tracker(cfg.mlflow, "agentlab-nas", run_dir, params=cfg.model_dump(mode="json")) as tracker:
        with tracker.run("run_0003", key="run_0003", params=trial.params) as child:
            child.log_metrics({"val_mse": 0.41})
        tracker.log_artifact(run_dir.file("report.md"))

Without a URI ``open_tracker`` returns a tracker that does nothing, so commands call it unconditionally. mlflow is
imported only when a URI is given (``agentlab --help`` never imports it).

Why it is built this way:

- The parent run's id is kept in run.json (``mlflow``), so ``--resume`` continues the same parent run; a child run
  carries a ``key`` tag, and a key already logged under the parent is not logged again, so a resumed search never
  logs a finished trial twice (and logs the ones a crash left unlogged).
- Every param and tag passes the run folder's scrubber (secret config fields redacted, secret environment values
  replaced by ``${NAME}``): no API key reaches the tracking store. Nested config values become dotted keys, values
  longer than MLflow's limits are truncated.
- Tracking never ends an experiment: after the store has been opened, a failed logging call is one warning line.
- With ``sqlite:///PATH`` a new experiment keeps its artifacts next to the database (``<folder of PATH>/mlartifacts/
  <experiment>/``), not in ``./mlruns`` of whatever folder the command ran from; a tracking server keeps them where
  it is configured to.
- MLflow is quiet: its INFO logs (database migrations), its warnings and the run URLs it prints on stdout (which
  ``--json`` owns) are switched off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote

from pydantic import AfterValidator, Field

from agentlab.core.config import absolute_sqlite, redact, scrub_text
from agentlab.core.errors import ConfigError, MissingPackage, missing_package, one_line, pip_install
from agentlab.core.runs import runs_root

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from agentlab.core.runs import RunDir

log = logging.getLogger(__name__)

PARENT_TAG, KEY_TAG = "mlflow.parentRunId", "agentlab.key"
# MLflow's limits (mlflow/utils/validation.py): key length, param and tag value length, entities per log_batch call.
MAX_KEY, MAX_PARAM, MAX_TAG, PARAMS_PER_BATCH, METRICS_PER_BATCH = 250, 6000, 8000, 100, 1000
_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
_SCHEMES = (*_DATABASES, "http", "https", "file", "databricks")
_HINT = ("use sqlite:///mlflow.db (a local file), http://HOST:5000 (a tracking server) or a database URL such as "
         "postgresql://HOST/DB")
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


# --------------------------------------------------------------------------- the config field


TrackingURI = Annotated[str | None, AfterValidator(absolute_sqlite)]  # a run resumed elsewhere logs to the same file


def tracking_field() -> Any:
    """The ``mlflow`` field of a command's config (the ``--mlflow`` option overrides it)."""
    return Field(None, description="MLflow tracking URI to log this run to (needs agentlab[track]): sqlite:///"
                 "mlflow.db, http://HOST:5000, a database URL; empty: no tracking")


# --------------------------------------------------------------------------- checks before the run folder


def import_mlflow() -> Any:
    """mlflow, quietened; ``MissingPackage`` (exit 2, the hint names the extra ``track``) when it cannot be imported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mlflow
    except ImportError as exc:
        error = missing_package(exc)
        if error is None:  # mlflow is there but one of its own dependencies is broken
            error = MissingPackage(f"mlflow cannot be imported: {one_line(exc)}", hint=pip_install("track"))
        raise error from None
    _quiet()
    return mlflow


def _quiet() -> None:
    # A tracking server's client prints "View run ... at: URL" on stdout when a run ends: stdout belongs to --json.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic"):  # "Creating initial MLflow database tables...", migration steps
        logging.getLogger(name).setLevel(logging.ERROR)


def check_tracking(uri: str | None) -> None:
    """Everything about ``--mlflow URI`` that can be checked before a run folder exists, without writing anything:
    mlflow importable, a scheme MLflow knows, a SQLite file whose folder exists, a server that answers, a database
    that accepts a connection. ``ConfigError`` / ``MissingPackage`` (exit 2) otherwise."""
    if uri is None:
        return
    import_mlflow()
    shown = scrub_text(uri)
    scheme = uri.partition(":")[0].split("+")[0].lower() if ":" in uri else ""
    if scheme not in _SCHEMES or (scheme != "databricks" and "://" not in uri):
        raise ConfigError(f"mlflow: {shown!r} is not a tracking URI", hint=_HINT)
    if scheme == "sqlite":
        _check_sqlite(uri, shown)
    elif scheme == "file":
        folder = Path(unquote(uri.removeprefix("file://")))
        if not folder.parent.is_dir():
            raise ConfigError(f"mlflow: {shown}: folder {folder.parent} does not exist", hint="create it first")
    elif scheme in ("http", "https"):
        _check_server(uri, shown)
    elif scheme in _DATABASES:
        _check_database(uri, shown)


def _check_sqlite(uri: str, shown: str) -> None:
    path = unquote(uri.removeprefix("sqlite:///").partition("?")[0])
    if not uri.startswith("sqlite:///") or not path or path == ":memory:":
        raise ConfigError(f"mlflow: {shown}: an in-memory database keeps nothing", hint="name a file: sqlite:///"
                          "mlflow.db")
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"mlflow: {shown}: {file} is a folder", hint="name a file inside it: .../mlflow.db")
    if file.is_file():
        with open(file, "rb") as handle:
            head = handle.read(16)
        if head and head != b"SQLite format 3\x00":
            raise ConfigError(f"mlflow: {shown}: {file} is not a SQLite database", hint="name a new file, or an "
                              "MLflow database")
    elif not file.absolute().parent.is_dir():
        raise ConfigError(f"mlflow: {shown}: folder {file.absolute().parent} does not exist",
                          hint="create it first, or put the database in an existing folder")


def _check_server(uri: str, shown: str) -> None:
    import httpx

    hint = "start it (mlflow server --backend-store-uri sqlite:///mlflow.db --port 5000) or check the address"
    try:
        response = httpx.get(uri.rstrip("/") + "/health", timeout=5.0, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ConfigError(f"mlflow: cannot reach the tracking server {shown} ({one_line(exc)})", hint=hint) from None
    if response.status_code != 200:
        raise ConfigError(f"mlflow: {shown}/health answered HTTP {response.status_code}: not an MLflow tracking "
                          "server?", hint=hint)


def _check_database(uri: str, shown: str) -> None:
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(uri)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # a missing driver, a refused connection, bad credentials: all say the same here
        raise ConfigError(f"mlflow: cannot open the database {shown} ({scrub_text(one_line(exc))})",
                          hint="check the URL, that the server runs, and that its Python driver is installed") from None


# --------------------------------------------------------------------------- values as MLflow takes them


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (booleans as 0/1): NaN, None and text are not metrics."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[str(key)[:MAX_KEY]] = float(value)
    return out


# --------------------------------------------------------------------------- logging into one run


class RunLog:
    """One MLflow run: params, metrics, tags and artifacts, each value scrubbed before it leaves the process."""

    enabled = True

    def __init__(self, client: MlflowClient, run_id: str, scrub: Callable[[str], str], guard: Callable[..., Any]):
        self.client, self.run_id, self._scrub, self._guard = client, run_id, scrub, guard
        self.status: str | None = None  # set when the run has ended

    def _clean(self, data: Mapping[str, Any], limit: int) -> dict[str, str]:
        """Flattened, secret fields redacted, every key and value scrubbed and cut to MLflow's limits."""
        flat = flatten(redact(dict(data)))
        return {self._scrub(str(k))[:MAX_KEY]: self._scrub(_text(v, limit)) for k, v in flat.items()}

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params are fixed once logged in MLflow: a key logged again with another value (a resumed run changed with
        ``--set``) keeps its first value, and the new one goes to the tag ``changed.<key>``."""
        from mlflow.entities import Param, RunTag

        values = self._clean(params, MAX_PARAM)
        run = self._guard("read the run's params", self.client.get_run, self.run_id)
        logged = run.data.params if run is not None else {}
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        changed = [RunTag(f"changed.{k}"[:MAX_KEY], v) for k, v in values.items() if k in logged and logged[k] != v]
        for start in range(0, max(len(new), len(changed)), PARAMS_PER_BATCH):
            self._guard("log params", self.client.log_batch, self.run_id,
                        params=new[start:start + PARAMS_PER_BATCH], tags=changed[start:start + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The finite numbers of ``metrics`` at ``step`` (0 when not given); other values are skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step or 0) for k, v in _numbers(metrics).items()]
        for start in range(0, len(batch), METRICS_PER_BATCH):
            self._guard("log metrics", self.client.log_batch, self.run_id,
                        metrics=batch[start:start + METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Tags (None values skipped); unlike params they may change, the last value wins."""
        from mlflow.entities import RunTag

        batch = [RunTag(k, v) for k, v in self._clean({k: v for k, v in tags.items() if v is not None},
                                                      MAX_TAG).items()]
        for start in range(0, len(batch), PARAMS_PER_BATCH):
            self._guard("set tags", self.client.log_batch, self.run_id, tags=batch[start:start + PARAMS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or a folder (its contents) copied to the run's artifacts; a path that does not exist is skipped."""
        path = Path(path)
        if path.is_dir():
            self._guard("log artifacts", self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.is_file():
            self._guard("log an artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def end(self, status: str = FINISHED) -> None:
        """Mark the run ended (FINISHED, FAILED or KILLED); later calls do nothing."""
        if self.status is None:
            self.status = status
            self._guard("end the run", self.client.set_terminated, self.run_id, status)


class NullRunLog:
    """What a run logs when there is no tracking (no ``--mlflow``), or when a child run was already logged."""

    enabled = False
    run_id: str | None = None
    status: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def end(self, status: str = FINISHED) -> None:
        pass


# --------------------------------------------------------------------------- the tracker: parent run + children


class NullTracker(NullRunLog):
    """No tracking: every call does nothing, so commands need no ``if``."""

    parent_id: str | None = None

    @contextmanager
    def run(self, name: str, *, key: str | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None) -> Iterator[NullRunLog]:
        yield NullRunLog()

    def logged(self, key: str) -> bool:
        return False

    def last_step(self, metric: str) -> int | None:
        return None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        pass


class Tracker(RunLog):
    """The parent run of one agentlab run folder (its own logging calls log to the parent) and its child runs.

    Used as a context manager it ends the parent: FINISHED, KILLED on Ctrl-C / SIGTERM, FAILED on an error.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, run_id: str, scrub: Callable[[str], str]):
        self._warned = False
        super().__init__(client, run_id, scrub, self._call)
        self.experiment_id, self.parent_id = experiment_id, run_id
        self._keys = self._logged_keys()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` with MLflow's warnings off; a failure is a warning line (the first one; later
        ones at debug level), never the end of the experiment."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn(*args, **kwargs)
        except Exception as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            more = "" if self._warned else "; the run goes on (later MLflow errors are shown with -vv)"
            log.log(level, "mlflow: could not %s: %s%s", what, self._scrub(one_line(exc)), more)
            self._warned = True
            return None

    def _children(self) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self._call("list the child runs", self.client.search_runs, [self.experiment_id],
                              filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'", max_results=50000,
                              page_token=token)
            if page is None:
                return runs
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _logged_keys(self) -> set[str]:
        """Keys of the child runs that ended; a child cut off while it was logged (still RUNNING: its process died)
        is marked KILLED, and its key is logged again."""
        keys = set()
        for run in self._children():
            key = run.data.tags.get(KEY_TAG)
            if run.info.status == "RUNNING":
                self._call("end a child run cut off by a crash", self.client.set_terminated, run.info.run_id, KILLED)
            elif key:
                keys.add(key)
        return keys

    def logged(self, key: str) -> bool:
        """Whether a child run with this key has been logged under the parent (in this process or before a resume)."""
        return key in self._keys

    def last_step(self, metric: str) -> int | None:
        """The highest step of ``metric`` on the parent run (a resumed run logs only the steps after it)."""
        history = self._call("read a metric's history", self.client.get_metric_history, self.parent_id, metric)
        return max((m.step for m in history), default=None) if history else None

    @contextmanager
    def run(self, name: str, *, key: str | None = None, params: Mapping[str, Any] | None = None,
            tags: Mapping[str, Any] | None = None) -> Iterator[RunLog | NullRunLog]:
        """A child run under the parent for the block: FINISHED when the block ends (unless ``end`` set another
        status), FAILED / KILLED when it raises. ``key``: a child with this key is logged once; when it already
        was, the block gets a run that logs nothing."""
        if key is not None and key in self._keys:
            yield NullRunLog()
            return
        child_tags = {PARENT_TAG: self.parent_id, **({KEY_TAG: key} if key else {})}
        child_tags.update({k: self._scrub(_text(v, MAX_TAG)) for k, v in flatten(redact(dict(tags or {}))).items()})
        created = self._call("start a child run", self.client.create_run, self.experiment_id, run_name=name,
                             tags=child_tags)
        if created is None:
            yield NullRunLog()
            return
        child = RunLog(self.client, created.info.run_id, self._scrub, self._call)
        if params:
            child.log_params(params)
        try:
            yield child
        except KeyboardInterrupt:
            child.end(KILLED)
            raise
        except BaseException:
            child.end(FAILED)
            raise
        child.end(FINISHED)
        if key is not None:
            self._keys.add(key)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.end(FINISHED)
        else:
            self.end(KILLED if issubclass(exc_type, KeyboardInterrupt) else FAILED)


def open_tracker(uri: str | None, experiment: str, run_dir: RunDir, *, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, Any] | None = None) -> Tracker | NullTracker:
    """The tracker of ``run_dir``'s run in the MLflow ``experiment`` at ``uri`` (a ``NullTracker`` when ``uri`` is
    None): the parent run named in run.json when the run is resumed, else a new one, recorded there.

    ``params`` (a config dump: nested, flattened to dotted keys) and ``tags`` go to the parent. Call it at the start
    of ``run``, before the command writes anything: a store that cannot be opened is a ``ConfigError`` (exit 2), and
    the run folder of a new run is then removed as if the input had been refused before it was made.
    """
    if uri is None:
        return NullTracker()
    mlflow = import_mlflow()
    shown = run_dir.scrub(uri)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = mlflow.MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, experiment, uri)
            run_id = _parent(client, experiment_id, run_dir, shown)
    except Exception as exc:
        raise ConfigError(f"mlflow: cannot open {shown} ({run_dir.scrub(one_line(exc))})", hint=_HINT) from None
    tracker = Tracker(client, experiment_id, run_id, run_dir.scrub)
    if params:
        tracker.log_params(params)
    if tags:
        tracker.set_tags(tags)
    return tracker


def _experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (or restored from the bin) when needed."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name, artifact_location=_artifact_location(uri, name)))
        except Exception:  # another worker created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return str(found.experiment_id)


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Next to a SQLite database; under the runs root for another database; a server or file store decides itself."""
    scheme = uri.partition(":")[0].split("+")[0].lower()
    if scheme == "sqlite":
        db = Path(unquote(uri.removeprefix("sqlite:///").partition("?")[0]))
        return (db.absolute().parent / "mlartifacts" / experiment).as_uri()
    if scheme in _DATABASES:
        return (runs_root().absolute() / "mlartifacts" / experiment).as_uri()
    return None


def _parent(client: MlflowClient, experiment_id: str, run_dir: RunDir, shown: str) -> str:
    """The run's parent run: run.json's, reopened, when it is in this store and experiment; else a new one."""
    previous = run_dir.info.get("mlflow") or {}
    if previous.get("uri") == shown and previous.get("run_id"):
        try:
            run = client.get_run(previous["run_id"])
        except Exception:  # deleted for good, or another store under the same name
            run = None
        if run is not None and run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active":
            client.update_run(run.info.run_id, status="RUNNING")
            return str(run.info.run_id)
    info = run_dir.info
    tags = {"agentlab.command": run_dir.command, "agentlab.run_dir": str(run_dir.path.absolute())}
    if info.get("git_sha"):
        tags["mlflow.source.git.commit"] = info["git_sha"]
    run = client.create_run(experiment_id, run_name=run_dir.path.name, tags=tags)
    run_dir.update_info(mlflow={"uri": shown, "experiment_id": experiment_id, "run_id": run.info.run_id})
    return str(run.info.run_id)

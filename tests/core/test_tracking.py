"""agentlab.core.tracking on a real MLflow store (SQLite in the test's folder), read back with ``MlflowClient``: the
parent run kept in run.json and continued on resume, child runs logged once per key, secrets scrubbed from params,
values cut to MLflow's limits, artifacts next to the database, and the checks made before a run folder exists."""

from __future__ import annotations

import http.server
import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.errors import ConfigError, MissingPackage
from agentlab.core.runs import RunDir
from agentlab.core.tracking import KEY_TAG, PARENT_TAG, NullTracker, check_tracking, open_tracker

mlflow = pytest.importorskip("mlflow")

SECRET = "sk-test-5f3a9c1e7b"


@pytest.fixture
def uri(mlflow_uri: str) -> str:
    return mlflow_uri


def client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=uri)


def runs(uri: str, experiment: str = "exp") -> list:
    found = client(uri).get_experiment_by_name(experiment)
    return list(client(uri).search_runs([found.experiment_id])) if found else []


def test_no_uri_is_a_tracker_that_does_nothing(in_tmp: Path) -> None:
    run_dir = RunDir.create("nas", {"a": 1}, out=in_tmp / "run")
    with open_tracker(None, "exp", run_dir, params={"a": 1}) as tracker:
        assert isinstance(tracker, NullTracker) and not tracker.enabled
        with tracker.run("child", key="k") as child:
            child.log_metrics({"x": 1.0})
        assert not tracker.logged("k") and tracker.last_step("x") is None
    assert "mlflow" not in run_dir.info and not (in_tmp / "mlruns").exists()


def test_parent_and_children_read_back(in_tmp: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAB_TEST_API_KEY", SECRET)
    run_dir = RunDir.create("nas", {"a": 1}, out=in_tmp / "run")
    config = {"name": "t", "train": {"lr": 1e-3, "layers": [1, 2]}, "llm": {"api_key": "literal-key-value"},
              "note": f"token {SECRET} inside", "long": "x" * 7000}
    with open_tracker(uri, "exp", run_dir, params=config, tags={"kind": "test"}) as tracker:
        with tracker.run("trial-0", key="t0", params={"model.d": 16}, tags={"state": "complete"}) as child:
            child.log_metrics({"val": 0.5, "nan": float("nan"), "text": "no", "ok": True})
            for step, value in enumerate([3.0, 2.0, 1.0]):
                child.log_metrics({"loss": value}, step=step)
            (in_tmp / "report.md").write_text("# report\n")
            child.log_artifact(in_tmp / "report.md")
            child.log_artifact(in_tmp / "missing.txt")  # skipped, not an error
        tracker.log_metrics({"best": 0.5}, step=0)
        tracker.log_artifact(in_tmp / "report.md")
    parent_id = run_dir.info["mlflow"]["run_id"]
    by_name = {r.info.run_name: r for r in runs(uri)}
    parent, child = by_name["run"], by_name["trial-0"]
    assert parent.info.run_id == parent_id and parent.info.status == "FINISHED"
    assert child.data.tags[PARENT_TAG] == parent_id and child.data.tags[KEY_TAG] == "t0"
    assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
    assert child.data.params == {"model.d": "16"}
    assert child.data.metrics == {"val": 0.5, "ok": 1.0, "loss": 1.0}
    history = client(uri).get_metric_history(child.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    params = parent.data.params
    assert params["train.lr"] == "0.001" and params["train.layers"] == "[1, 2]" and params["name"] == "t"
    assert params["llm.api_key"] == "***" and params["note"] == "token ${AGENTLAB_TEST_API_KEY} inside"
    assert len(params["long"]) == 6000 and params["long"].endswith("...")
    assert SECRET not in repr(params) + repr(parent.data.tags) + repr(child.data.params)
    assert parent.data.tags["kind"] == "test" and parent.data.tags["agentlab.command"] == "nas"
    assert [a.path for a in client(uri).list_artifacts(child.info.run_id)] == ["report.md"]
    assert [a.path for a in client(uri).list_artifacts(parent_id)] == ["report.md"]
    # Artifacts next to the database, not in ./mlruns of the folder the command ran from.
    assert (in_tmp / "mlartifacts" / "exp" / parent_id / "artifacts" / "report.md").is_file()
    assert not (in_tmp / "mlruns").exists()


def test_resume_continues_the_parent_and_logs_a_key_once(in_tmp: Path, uri: str) -> None:
    run_dir = RunDir.create("nas", {"a": 1}, out=in_tmp / "run")
    with open_tracker(uri, "exp", run_dir, params={"budget": 3}) as tracker:
        with tracker.run("t0", key="t0"):
            pass
        cut = client(uri).create_run(tracker.experiment_id, run_name="t1",
                                     tags={PARENT_TAG: tracker.parent_id, KEY_TAG: "t1"})  # a crash mid-log
    run_dir.finish("interrupted")
    parent_id = run_dir.info["mlflow"]["run_id"]

    resumed = RunDir.resume(in_tmp / "run", "nas")
    with open_tracker(uri, "exp", resumed, params={"budget": 5}) as tracker:
        assert tracker.parent_id == parent_id
        assert tracker.logged("t0") and not tracker.logged("t1")
        for key in ("t0", "t1", "t2"):
            with tracker.run(key, key=key) as child:
                child.log_metrics({"v": 1.0})
    names = sorted(r.info.run_name for r in runs(uri) if r.data.tags.get(PARENT_TAG) == parent_id)
    assert names == ["t0", "t1", "t1", "t2"]  # t0 once; t1 again, beside the cut-off one
    assert client(uri).get_run(cut.info.run_id).info.status == "KILLED"
    parent = client(uri).get_run(parent_id)
    assert parent.info.status == "FINISHED" and len([r for r in runs(uri) if PARENT_TAG not in r.data.tags]) == 1
    # A param keeps its first value (MLflow refuses changes); the resumed value is a tag.
    assert parent.data.params["budget"] == "3" and parent.data.tags["changed.budget"] == "5"


def test_a_failing_block_fails_its_child_and_the_parent(in_tmp: Path, uri: str) -> None:
    run_dir = RunDir.create("nas", {"a": 1}, out=in_tmp / "run")
    with pytest.raises(RuntimeError), open_tracker(uri, "exp", run_dir) as tracker:
        with tracker.run("t0", key="t0"):
            raise RuntimeError("boom")
    statuses = {r.info.run_name: r.info.status for r in runs(uri)}
    assert statuses == {"t0": "FAILED", "run": "FAILED"}


def test_a_logging_failure_is_one_warning_and_the_run_goes_on(in_tmp: Path, uri: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    run_dir = RunDir.create("nas", {"a": 1}, out=in_tmp / "run")
    with open_tracker(uri, "exp", run_dir) as tracker:
        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"store down (key {SECRET})")

        tracker.client.log_batch = broken
        run_dir.add_secret(SECRET)
        with caplog.at_level(logging.WARNING, logger="agentlab.core.tracking"):
            for _ in range(3):
                tracker.log_metrics({"x": 1.0})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "could not log metrics" in warned[0] and SECRET not in warned[0]


# --------------------------------------------------------------------------- checks before any run folder


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def not_mlflow(http_server: Callable[[type[http.server.BaseHTTPRequestHandler]], Any]) -> str:
    """An HTTP server that is not MLflow: it answers 501 to every GET."""
    return str(http_server(http.server.BaseHTTPRequestHandler).url)


@pytest.mark.parametrize("make, says", [
    (lambda tmp: "mlflow.db", "is not a tracking URI"),
    (lambda tmp: "ftp://host/x", "is not a tracking URI"),
    (lambda tmp: "sqlite://", "in-memory"),
    (lambda tmp: f"sqlite:///{tmp}/no/such/folder/m.db", "does not exist"),
    (lambda tmp: f"sqlite:///{tmp}", "is a folder"),
    (lambda tmp: f"sqlite:///{tmp}/notes.txt", "not a SQLite database"),
])
def test_bad_uris_are_config_errors(in_tmp: Path, make, says: str) -> None:
    (in_tmp / "notes.txt").write_text("not a database")
    with pytest.raises(ConfigError, match=says) as info:
        check_tracking(make(in_tmp))
    assert info.value.exit_code == 2 and info.value.hint
    assert not (in_tmp / "no").exists()


def test_servers_that_do_not_answer_as_mlflow(closed_port: int, not_mlflow: str) -> None:
    with pytest.raises(ConfigError, match="cannot reach the tracking server"):
        check_tracking(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(ConfigError, match="answered HTTP 501"):
        check_tracking(not_mlflow)


def test_good_uris_pass_without_writing(in_tmp: Path) -> None:
    check_tracking(None)
    check_tracking(f"sqlite:///{in_tmp / 'new.db'}")
    check_tracking("sqlite:///relative.db")
    assert not list(in_tmp.iterdir())


def test_missing_mlflow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError(name="mlflow")
    with pytest.raises(MissingPackage) as info:
        check_tracking("sqlite:///m.db")
    assert info.value.exit_code == 2 and "agentlab[track]" in (info.value.hint or "")


def test_a_relative_sqlite_path_is_made_absolute_in_the_config(in_tmp: Path) -> None:
    from agentlab.core.config import StrictModel
    from agentlab.core.tracking import TrackingURI, tracking_field

    class Config(StrictModel):
        mlflow: TrackingURI = tracking_field()

    assert Config(mlflow="sqlite:///m.db").mlflow == f"sqlite:///{in_tmp / 'm.db'}"
    assert Config(mlflow="sqlite:////abs/m.db?mode=rw").mlflow == "sqlite:////abs/m.db?mode=rw"
    assert Config(mlflow="http://host:5000").mlflow == "http://host:5000"
    assert Config().mlflow is None

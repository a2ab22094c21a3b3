"""`agentlab nas --mlflow`: each trial a child run of one parent run, read back with ``MlflowClient``; a resumed
search continues the parent and logs no trial twice; no secret reaches MLflow; a bad URI or a missing mlflow stops
before any run folder exists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main

mlflow = pytest.importorskip("mlflow")

SECRET = "sk-nas-7e1d0c9b4a"
TINY = {
    "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
    "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
    "train": {"epochs": 2, "max_train_batches": 3},
    "search": {"planner": "tpe", "pruner": "none", "study_name": "${AGENTLAB_NAS_TEST_TOKEN}",
               "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2]},
                         "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}},
}


def tiny_config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def all_runs(uri: str) -> tuple[object, list]:
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("agentlab-nas")
    return client, list(client.search_runs([experiment.experiment_id]))


def test_trials_are_child_runs_and_resumes_log_none_twice(in_tmp: Path, mlflow_uri: str,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("AGENTLAB_NAS_TEST_TOKEN", SECRET)  # the study's name comes from a secret variable
    run = in_tmp / "RUN"
    # Two trials without tracking, then --mlflow on the resume: the trials it did not run are logged too.
    assert main(["nas", "-c", str(tiny_config(in_tmp)), "-n", "2", "--out", str(run)]) == 0
    assert main(["nas", "--resume", str(run), "-n", "3", "--mlflow", mlflow_uri]) == 0
    assert "mlflow" not in capsys.readouterr().out.lower()  # no "View run at" lines: stdout is --json's
    parent_id = json.loads((run / "run.json").read_text())["mlflow"]["run_id"]
    client, runs = all_runs(mlflow_uri)
    parent = next(r for r in runs if r.info.run_id == parent_id)
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert len(runs) == 4 and sorted(children) == ["run_0000", "run_0001", "run_0002"]
    state = {r["run_id"]: r for r in json.loads((run / "agent_state.json").read_text())["runs"]}
    for name, child in children.items():
        assert child.data.metrics["val_mse"] == pytest.approx(state[name]["val_mse"])
        assert child.data.metrics["test_mse"] == pytest.approx(state[name]["test_mse"])
        assert child.data.tags["decision"] == ("accepted" if state[name]["accepted"] else "rejected")
        assert set(child.data.params) == {"model.d_model", "model.n_heads", "train.learning_rate"}
        epochs = client.get_metric_history(child.info.run_id, "epoch_val_mse")
        assert [m.step for m in epochs] == [1, 2] == list(range(1, int(child.data.metrics["epochs"]) + 1))
    assert children["run_0000"].data.tags["planner"] == "base"
    assert {"report.md", "results.json", "optimization_history.png"} <= {
        a.path for a in client.list_artifacts(parent_id)}
    assert parent.info.status == "FINISHED" and parent.data.params["search.study_name"] == \
        "${AGENTLAB_NAS_TEST_TOKEN}"
    best = json.loads((run / "results.json").read_text())["best"]
    assert parent.data.tags["best_run_id"] == best["run_id"]
    history = client.get_metric_history(parent_id, "best_val_mse")
    assert [m.step for m in history] == [0, 1, 2] and history[-1].value == pytest.approx(best["val_mse"])
    logged = [repr((r.data.params, r.data.tags)) for r in runs]
    assert not any(SECRET in text for text in logged)

    assert main(["nas", "--resume", str(run), "-n", "4"]) == 0
    client, runs = all_runs(mlflow_uri)
    children = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 5 and sorted(children) == ["run_0000", "run_0001", "run_0002", "run_0003"]
    assert json.loads((run / "run.json").read_text())["mlflow"]["run_id"] == parent_id
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert not (in_tmp / "mlruns").exists()


def _one_error(code: int, err: str) -> str:
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert any(line.startswith("hint:") for line in err.splitlines()), err
    return errors[0]


def _nas(*args: str) -> int:
    sets = [f"--set={section}.{key}={value}" for section, fields in TINY.items() if section != "search"
            for key, value in fields.items()]
    return main(["nas", *sets, "--planner", "tpe", *args])


@pytest.mark.parametrize("uri, says", [("ftp://host/x", "not a tracking URI"),
                                       ("sqlite:///no/such/folder/m.db", "does not exist")])
def test_a_bad_uri_stops_before_the_run_folder(in_tmp: Path, capsys: pytest.CaptureFixture, uri: str,
                                               says: str) -> None:
    line = _one_error(_nas("--mlflow", uri), capsys.readouterr().err)
    assert says in line and not (in_tmp / "runs").exists()


def test_an_unreachable_server_stops_before_the_run_folder(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _one_error(_nas("--mlflow", f"http://127.0.0.1:{port}"), capsys.readouterr().err)
    assert "cannot reach the tracking server" in line and not (in_tmp / "runs").exists()


def test_missing_mlflow_is_one_line_naming_the_extra(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code = _nas("--mlflow", "sqlite:///m.db")
    err = capsys.readouterr().err
    _one_error(code, err)
    assert "agentlab[track]" in err and not (in_tmp / "runs").exists() and not (in_tmp / "m.db").exists()


def test_dry_run_with_mlflow_writes_nothing(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert _nas("--dry-run", "--mlflow", "sqlite:///m.db") == 0
    assert not (in_tmp / "runs").exists() and not (in_tmp / "m.db").exists()

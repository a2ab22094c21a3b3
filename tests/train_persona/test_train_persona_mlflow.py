"""`agentlab train-persona --mlflow` on the tiny local model: the run's params, its loss per logged step, the adapter's
config and card and the report as artifacts, read back with ``MlflowClient``; a resume continues the same MLflow run
and logs each step once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentlab.cli import main

mlflow = pytest.importorskip("mlflow")

FAST = ["--bsz", "2", "--grad-accum", "1", "--set", "data.max_length=128", "--set", "train.save_steps=2"]


def test_loss_per_step_params_and_artifacts(tiny_model: dict[str, Path], in_tmp: Path, mlflow_uri: str) -> None:
    args = ["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, "--run-dir", "RUN"]
    assert main([*args, "--max-steps", "3", "--mlflow", mlflow_uri]) == 0
    run_id = json.loads((in_tmp / "RUN" / "run.json").read_text())["mlflow"]["run_id"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "RUN"
    assert run.data.params["lora.r"] == "16" and run.data.params["train.batch_size"] == "2"
    loss = client.get_metric_history(run_id, "loss")
    assert [m.step for m in loss] == [1, 2, 3] and all(m.value > 0 for m in loss)
    results = json.loads((in_tmp / "RUN" / "results.json").read_text())
    assert run.data.metrics["final_loss"] == pytest.approx(results["final_loss"])
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {
        a.path for a in client.list_artifacts(run_id, "adapter")}
    assert {"report.md", "results.json", "loss.png", "adapter/adapter_config.json", "adapter/README.md"} <= artifacts

    # As if the process had died after logging step 3 but before its checkpoint: the resume starts from step 2,
    # trains step 3 again (MLflow has it: not logged twice), then step 4.
    shutil.rmtree(in_tmp / "RUN" / "checkpoints" / "checkpoint-3")
    assert main(["train-persona", "--resume", "RUN", "--max-steps", "4", "--force"]) == 0
    loss = client.get_metric_history(run_id, "loss")
    assert [m.step for m in loss] == [1, 2, 3, 4] and client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1

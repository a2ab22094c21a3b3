"""RunDir: layout, atomic state, status on success / failure / interruption, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agentlab.core.errors import RunDirError
from agentlab.core.runs import RunDir, atomic_write_json


def test_create_layout_and_completed(in_tmp: Path) -> None:
    with RunDir.create("demo", {"a": 1, "api_key": "sk-secret"}, name="x", seed=3) as run:
        run.event("step", i=1)
        run.save_results({"ok": True})
        run.save_report("# hi\n")
    assert run.path.parent == in_tmp / "runs" / "demo" and run.path.name.endswith("-x")
    info = json.loads((run.path / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 3 and info["ended"]
    assert "sk-secret" not in (run.path / "config.yaml").read_text()
    assert [e["kind"] for e in run.events()] == ["step"]
    assert {p.name for p in run.path.iterdir()} >= {"config.yaml", "run.json", "events.jsonl", "results.json",
                                                     "report.md"}


def test_failure_and_interrupt_status(in_tmp: Path) -> None:
    with pytest.raises(ValueError), RunDir.create("demo") as run:
        raise ValueError("boom")
    assert run.status == "failed" and "boom" in run.info["error"]
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo") as run2:
        raise KeyboardInterrupt
    assert run2.status == "interrupted"


def test_resume_and_latest(in_tmp: Path) -> None:
    with pytest.raises(KeyboardInterrupt), RunDir.create("demo", out=in_tmp / "r1") as run:
        run.event("trial", n=0)
        raise KeyboardInterrupt
    newest = RunDir.create("demo").path
    assert RunDir.latest("demo") == newest  # --out folders are not under runs/
    resumed = RunDir.open("demo", resume=str(in_tmp / "r1"))
    assert resumed.status == "running" and resumed.info["resumed"][0]["previous_status"] == "interrupted"
    resumed.event("trial", n=1)
    resumed.finish("completed")
    assert [e["n"] for e in resumed.events("trial")] == [0, 1]


def test_resume_wrong_command_and_missing(in_tmp: Path) -> None:
    RunDir.create("demo", out=in_tmp / "r")
    with pytest.raises(RunDirError, match="is a 'demo' run, not 'nas'"):
        RunDir.resume(in_tmp / "r", "nas")
    with pytest.raises(RunDirError, match="not a run folder"):
        RunDir.resume(in_tmp / "empty", "demo")
    with pytest.raises(RunDirError, match="no 'nas' run to resume"):
        RunDir.latest("nas")


def test_out_must_be_new_or_empty(in_tmp: Path) -> None:
    RunDir.create("demo", out=in_tmp / "r")
    with pytest.raises(RunDirError, match="not empty") as info:
        RunDir.create("demo", out=in_tmp / "r")
    assert "--resume" in (info.value.hint or "")


def test_atomic_write_keeps_old_file_when_serialisation_fails(in_tmp: Path) -> None:
    target = in_tmp / "state.json"
    atomic_write_json(target, {"v": 1})

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        atomic_write_json(target, {"v": Boom()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in in_tmp.iterdir() if p.name.startswith(".")] == []


def test_events_skip_torn_last_line_and_scrub_secrets(in_tmp: Path) -> None:
    run = RunDir.create("demo", secrets=["sk-live-123"])
    run.event("llm_call", error="401 for key sk-live-123")
    with open(run.file("events.jsonl"), "a") as handle:
        handle.write('{"kind": "torn", "x": ')
    events = list(run.events())
    assert len(events) == 1 and "sk-live-123" not in json.dumps(events)
    assert "sk-live-123" not in run.file("events.jsonl").read_text()
    assert os.access(run.file("run.json"), os.R_OK)

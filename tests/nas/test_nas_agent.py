"""`agentlab nas --planner agent` end to end in real subprocesses, its model a scripted OpenAI-compatible server that
answers with tool calls: a search killed with SIGKILL mid-trial resumes from the agent's checkpoint and finishes
every trial once, results.json counts the agent's tool calls; `--approve` asks in a pseudo-terminal and the answers
steer the search; with AGENTLAB_APPROVE_UI=1 a run without a terminal waits for the UI's answers; bad uses of --approve
get one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_nas_resume import FAST, SLOW, events, start, wait_mid_trial, write_config

from agentlab.testing.server import spawn_server_process

MODEL = "agent-model"


@pytest.fixture()
def server() -> Any:
    calls = [{"name": "suggest", "arguments": {}}, {"name": "run_trial", "arguments": {"candidate": 1, "reason": "x"}}]
    proc, base_url = spawn_server_process({"scripts": {MODEL: [{"tool_calls": [c]} for c in calls * 50]}})
    yield base_url
    proc.kill()
    proc.wait()


def routing(folder: Path, base_url: str) -> Path:
    config = {"providers": {"loop": {"kind": "openai", "base_url": base_url}},
              "models": {MODEL: {"provider": "loop", "model": MODEL}},
              "routes": {"planner": {"primary": [MODEL]}}, "retries": 0, "timeout_s": 10}
    path = folder / "llm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_agent_search_killed_mid_trial_resumes_and_runs_each_trial_once(tmp_path: Path, server: str) -> None:
    cfg, llm = write_config(tmp_path, SLOW), routing(tmp_path, server)
    args = ["nas", "-c", str(cfg), "--llm", str(llm), "--planner", "agent", "-n", "4", "--out", "run"]
    proc = start(args, tmp_path, "first.log")
    run = tmp_path / "run"
    try:
        wait_mid_trial(proc, run, finished=2, log=tmp_path / "first.log", timeout=120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert (run / "agent.sqlite").is_file()
    resumed = start(["nas", "--resume", "run", "--llm", str(llm), "-n", "4"], tmp_path, "second.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    results = json.loads((run / "results.json").read_text())
    finished = [e for e in events(run, "trial") if e["state"] == "complete"]
    keys = [json.dumps(e["params"], sort_keys=True) for e in finished]
    assert len(keys) == 4 and len(set(keys)) == 4
    block = results["agent"]
    assert block["tool_calls"] >= 3 and block["invalid_tool_calls"] == 0
    assert block["trials_by_agent"] + block["trials_by_guard"] == 3
    assert "planner: agent" in results["planner"]
    report = (run / "report.md").read_text()
    assert "## The agent" in report and "| suggest |" in report


def _read_until(fd: int, needle: str, buffer: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in "".join(buffer):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {needle!r} in:\n{''.join(buffer)[-3000:]}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                buffer.append(os.read(fd, 4096).decode(errors="replace"))
            except OSError:
                break


def _drain(fd: int, buffer: list[str]) -> None:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if ready:
        try:
            buffer.append(os.read(fd, 4096).decode(errors="replace"))
        except OSError:
            time.sleep(0.1)


@contextlib.contextmanager
def cli_in_pty(args: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """``agentlab args`` with a pseudo-terminal as its stdin and output: (the process, the terminal's end to read and
    write); the process is killed and the terminal closed when the block ends."""
    master, slave = pty.openpty()
    env = {**os.environ, "AGENTLAB_RUNS": str(cwd / "runs"), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "agentlab.cli", *args], cwd=cwd, env=env, stdin=slave,
                            stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _finish(proc: subprocess.Popen, fd: int, buffer: list[str], timeout: float) -> None:
    """Keep reading the terminal until the process exits (a full pty would block it); it must exit 0."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        _drain(fd, buffer)
    assert proc.wait(timeout=5) == 0, "".join(buffer)[-3000:]


@pytest.mark.timeout(900)  # a CLI process training three trials on a shared CPU
def test_approve_asks_in_the_terminal_and_an_edit_runs(tmp_path: Path, server: str) -> None:
    cfg, llm = write_config(tmp_path, FAST), routing(tmp_path, server)
    out: list[str] = []
    args = ["nas", "-c", str(cfg), "--llm", str(llm), "--planner", "agent", "--approve", "-n", "3", "--out", "run"]
    with cli_in_pty(args, tmp_path) as (proc, master):
        _read_until(master, "approve?", out, 300)  # trial 0 trains first (a shared CPU: minutes at worst)
        assert "the agent wants to run candidate 1" in "".join(out)
        assert "approve? [y]es / [n]o / [e]dit" in "".join(out)  # not Rich's "es / o / dit"
        os.write(master, b"e\n")
        _read_until(master, "changes (key=value", out, 30)
        os.write(master, b"model.d_model=32, model.n_heads=1\n")
        _read_until(master, "approve?", out[-1:] and out, 120)
        before = "".join(out)
        out.clear()
        _read_until(master, "approve?", out, 120)
        os.write(master, b"y\n")
        _finish(proc, master, out, 300)
    # the console echoes what each answer runs
    said = before + "".join(out)
    assert "edited: runs" in said and "model.d_model=32" in said and "approved: it runs" in said
    trials = {e["number"]: e for e in events(tmp_path / "run", "trial")}
    assert trials[1]["params"]["model.d_model"] == 32 and trials[1]["params"]["model.n_heads"] == 1
    assert any(e["answer"] == "edit" for e in events(tmp_path / "run", "agent_approval"))


@pytest.mark.timeout(900)  # four processes of the CLI, each loading torch
def test_approve_without_a_terminal_stops_at_the_interrupt_and_resumes_with_the_answer(
        tmp_path: Path, server: str) -> None:
    """Under the UI (no terminal) the run stops at each approval with the question in the graph's checkpoint (no
    file polled); ``--resume RUN --answer`` (what the UI's buttons run) hands the answer to the interrupt. A
    declined config is not proposed again; run.json says why the run stopped."""
    from agentlab.core.agent import approval

    cfg, llm = write_config(tmp_path, FAST), routing(tmp_path, server)
    env = {**os.environ, "AGENTLAB_RUNS": str(tmp_path / "runs"), approval.APPROVE_UI_ENV: "1"}
    base = [sys.executable, "-m", "agentlab.cli", "nas"]
    not_agent = subprocess.run([*base, "-c", str(cfg), "--llm", str(llm), "-n", "3", "--planner", "tpe",
                                "--approve"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=120)
    assert not_agent.returncode == 2 and "--planner agent" in not_agent.stderr and "Traceback" not in not_agent.stderr
    run = tmp_path / "run"
    first = subprocess.run([*base, "-c", str(cfg), "--llm", str(llm), "-n", "2", "--planner", "agent", "--approve",
                            "--out", "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=240)
    assert first.returncode == 130, first.stdout[-3000:] + first.stderr[-3000:]
    assert approval.WAITING in first.stderr and "Traceback" not in first.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["error"] == approval.WAITING
    asked = approval.pending(run)  # read from agent.sqlite
    assert asked is not None and asked["params"] and not list(run.glob("approval*.json"))
    answers = [{"answer": "no", "note": "try another"}, "yes"]
    for _ in range(2):
        if approval.pending(run) is None:
            break
        reply = answers.pop(0)
        proc = subprocess.run([*base, "--resume", str(run), "--answer",
                               reply if isinstance(reply, str) else json.dumps(reply)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240)
        assert proc.returncode in (0, 130), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    verdicts = [e["answer"] for e in events(run, "agent_approval")]
    assert verdicts == ["no", "yes"]
    trials = [e["params"] for e in events(run, "trial") if e.get("number", 0) > 0]
    assert asked["params"] not in trials  # declined: never run, never proposed again
    report = (run / "report.md").read_text()
    assert "(approval)" in report and "try another" in report


def test_an_edit_answer_of_the_wrong_shape_is_refused_before_anything_runs(tmp_path: Path, server: str) -> None:
    """`--answer '{"answer": "edit", "edits": [...]}'` to a question about a trial of params said "edited: runs the
    change with your new text", then "your edit was not valid (changes must be a mapping ..., got NoneType)": it is
    refused, exit 2, naming the `changes` it takes, and the question still waits for an answer of that shape."""
    from agentlab.core.agent import approval

    (tmp_path / "train.py").write_text("import json, sys\nx = json.load(open(sys.argv[1]))['x']\n"
                                       "print(f'loss: {(x - 1.5) ** 2}')\n")
    (tmp_path / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss", "params": {"x": 0.0}},
        "search": {"space": {"x": {"low": 0.0, "high": 2.0}}}}))
    env = {**os.environ, "AGENTLAB_RUNS": str(tmp_path / "runs"), approval.APPROVE_UI_ENV: "1"}

    def agentlab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentlab.cli", "nas", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240)

    first = agentlab("-c", "nas.yaml", "--llm", str(routing(tmp_path, server)), "-n", "2", "--planner", "agent",
                     "--approve", "--out", "run")
    assert first.returncode == 130, first.stdout[-3000:] + first.stderr[-3000:]
    edits = {"answer": "edit", "edits": [{"path": "train.py", "old": "1.5", "new": "1.0"}]}
    wrong = agentlab("--resume", "run", "--answer", json.dumps(edits))
    said = " ".join((wrong.stdout + wrong.stderr).split())
    assert wrong.returncode == 2 and "an edit of it takes 'changes' (its settings as key: value), not 'edits'" in said
    assert "edited" not in said and "Traceback" not in said
    assert approval.pending(tmp_path / "run") is not None  # still asked
    right = agentlab("--resume", "run", "--answer", json.dumps({"answer": "edit", "changes": {"x": 1.25}}))
    assert right.returncode == 0, right.stdout[-3000:] + right.stderr[-3000:]
    assert [e["params"] for e in events(tmp_path / "run", "trial") if e.get("number") == 1] == [{"x": 1.25}]


def test_agent_without_its_api_key_is_one_line_and_no_folder(in_tmp: Path, monkeypatch: Any, capsys: Any) -> None:
    from agentlab.cli import main

    monkeypatch.delenv("AGENTLAB_TEST_KEY", raising=False)
    llm = in_tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                       "api_key_env": "AGENTLAB_TEST_KEY"}},
                                   "models": {"m": {"provider": "p", "model": "m"}},
                                   "routes": {"planner": {"primary": ["m"]}}}))
    assert main(["nas", "--planner", "agent", "--llm", str(llm), "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "need AGENTLAB_TEST_KEY, which is not set" in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()

"""The agent that changes code through the CLI, in real subprocesses, its model a scripted OpenAI-compatible server:
kill -9 mid-trial and --resume keep the exact budget, each trial once, the kept versions and the user's tree; --approve
in a pseudo-terminal shows each change's diff and approves, edits (new text) and rejects."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_nas_agent import _finish, _read_until, cli_in_pty, routing
from test_nas_resume import events, start

from agentlab.testing.server import spawn_server_process

MODEL = "agent-model"
TRAIN = """\
import json, sys, time
p = json.load(open(sys.argv[1]))
OFFSET = 3.0
time.sleep(float(p.get("sleep", 0)))
print(json.dumps({"loss": (p["x"] - 1) ** 2 + OFFSET}))
"""


def edit(old: str, new: str, reason: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "edit_code", "arguments": {
        "edits": [{"path": "train.py", "old": old, "new": new}], "reason": reason}}]}


def project(root: Path, sleep: float, **search: Any) -> Path:
    folder = root / "project"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    config = {"objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss",
                            "params": {"x": 4.0, "sleep": sleep}, "editable": ["train.py"]},
              "search": {"planner": "agent", "pruner": "none", "seed": 0, "agent": {"guard_patience": 20},
                         "space": {"x": {"low": -5.0, "high": 5.0}}, **search}}
    path = folder / "nas.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture()
def offsets() -> Any:
    values = [3.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125]
    script = [edit(f"OFFSET = {a}", f"OFFSET = {b}", f"offset {b}") for a, b in zip(values, values[1:], strict=False)]
    proc, base_url = spawn_server_process({"scripts": {MODEL: script * 3}})
    yield base_url
    proc.kill()
    proc.wait()


@pytest.mark.timeout(600)
def test_kill_9_mid_change_and_resume_keep_the_budget_and_the_versions(tmp_path: Path, offsets: str) -> None:
    cfg = project(tmp_path, sleep=1.0, tune_every=1)
    cfg.write_text(cfg.read_text().replace("editable:", "unreviewed_changes: true\n  editable:"))
    before = (cfg.parent / "train.py").read_bytes()
    llm = routing(tmp_path, offsets)
    args = ["nas", "-c", str(cfg), "--llm", str(llm), "-n", "6", "--out", "run"]
    proc = start(args, tmp_path, "first.log")
    run = tmp_path / "run"
    try:
        deadline = time.monotonic() + 240
        while len(events(run, "trial")) < 3 or not (run / "trials" / "run_0003" / "command.txt").is_file():
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # trial 3, a code change, runs
    finally:
        proc.wait()
    resumed = start(["nas", "--resume", "run", "--llm", str(llm), "-n", "6"], tmp_path, "second.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    results = json.loads((run / "results.json").read_text())
    assert results["trials"] == 6
    finished = [e for e in events(run, "trial") if e["state"] == "complete"]
    assert sorted(e["number"] for e in finished) == list(range(6))  # each trial once, trial 3 run again
    kept = results["code_version"]["kept"]
    assert kept and all(row["fate"] == "kept" for row in results["code_changes"] if int(row["trial"][4:]) in kept)
    offset = float(next(line for line in (run / "best" / "train.py").read_text().splitlines()
                        if line.startswith("OFFSET")).split("=")[1])
    assert results["best"]["loss"] == pytest.approx((results["best"]["params"]["x"] - 1) ** 2 + offset)
    assert (cfg.parent / "train.py").read_bytes() == before


@pytest.mark.timeout(600)
def test_approve_shows_the_diff_and_approves_edits_and_rejects(tmp_path: Path) -> None:
    script = [edit("OFFSET = 3.0", "OFFSET = 0.5", "smaller"),
              edit("OFFSET = 0.5", "OFFSET = 0.25", "smaller still"),
              edit("import json, sys, time", "import json, sys, time  # c", "a comment"),
              edit("import json, sys, time", "import json, sys, time  # d", "another comment")]
    server, base_url = spawn_server_process({"scripts": {MODEL: script * 3}})
    cfg = project(tmp_path, sleep=0.0, tune_every=0)
    before = (cfg.parent / "train.py").read_bytes()
    out: list[str] = []
    args = ["nas", "-c", str(cfg), "--llm", str(routing(tmp_path, base_url)), "--approve", "-n", "4", "--out", "run"]
    try:
        with cli_in_pty(args, tmp_path) as (proc, master):
            def shown(needle: str, timeout: float = 120) -> None:  # the next question, showing ``needle``
                out.clear()
                _read_until(master, "approve?", out, timeout)
                assert needle in "".join(out)

            shown("+OFFSET = 0.5", 180)
            assert "the agent wants to change the code" in "".join(out)
            os.write(master, b"y\n")
            shown("+OFFSET = 0.25")
            os.write(master, b"e\n")
            _read_until(master, "a line holding only", out, 30)
            os.write(master, b"OFFSET = 0.125\n.\n")
            shown("# c")
            os.write(master, b"n\n")
            _read_until(master, "note for the agent", out, 30)
            os.write(master, b"no comments\n")
            shown("# d")
            os.write(master, b"y\n")
            _finish(proc, master, out, 120)
    finally:
        server.kill()
        server.wait()
    run = tmp_path / "run"
    assert (run / "trials" / "run_0002" / "change.diff").read_text().count("+OFFSET = 0.125") == 1
    assert "# d" in (run / "trials" / "run_0003" / "change.diff").read_text()
    assert not any("# c" in p.read_text() for p in run.glob("trials/*/change.diff"))  # rejected: never ran
    answers = [e["answer"] for e in events(run, "agent_approval")]
    assert answers == ["yes", "edit", "no", "yes"]
    assert (cfg.parent / "train.py").read_bytes() == before

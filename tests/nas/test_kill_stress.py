"""The budget is exact whatever the kill: `agentlab nas` on a command objective is SIGKILLed at random moments and
resumed each time; the finished search has exactly ``--max-iterations`` trials, none repeated, none lost.

The moments are random in time, after the run has planned its first trial, so they land where the search spends its
time: in a trial's command, between the command's end and its record, in the planner, in the
study's commits. Each kill is classified afterwards from the study and the trial folders, and the test says where
its kills landed. The default set runs a short variant on SQLite; the slow set (CI's slow step) runs 20 kills, and
``tests/test_postgres_scaleout.py`` runs it with two workers on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("optuna")

TRAIN = '''\
import json, os, sys, time
params = json.load(open(sys.argv[2]))
trial = os.environ["AGENTLAB_TRIAL_DIR"]
with open(sys.argv[4], "a") as log:
    log.write(f"start {trial}\\n")
for step in range(3):
    time.sleep(0.05)
    print(json.dumps({"step": step, "loss": (params["x"] - 1) ** 2 + 1 / (step + 1)}), flush=True)
print(json.dumps({"loss": (params["x"] - 1) ** 2 + (params["y"] + 2) ** 2}), flush=True)
with open(sys.argv[4], "a") as log:
    log.write(f"end {trial}\\n")
'''


def project(root: Path, *, storage: str | None = None, study: str = "stress", planner: str = "tpe") -> Path:
    """A user's project: train.py (no torch: a trial takes 0.15 s) and its nas.yaml; the script logs each start and
    end to ``children.log`` beside it (an absolute path: each trial runs in its own workspace). The project is a
    git repository (the run folders and logs ignored), so every trial runs in a git worktree."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN, encoding="utf-8")
    search: dict[str, Any] = {"planner": planner, "pruner": "none", "space": {"x": {"low": -3.0, "high": 3.0},
                                                                          "y": {"low": -3.0, "high": 3.0}}}
    if storage is not None:
        search.update(storage=storage, study_name=study)
    config = {"objective": {"command": f"{sys.executable} train.py --params {{params}} --log {root / 'children.log'} "
                                       "--trial "
                                       "$AGENTLAB_TRIAL_DIR", "metric": "loss", "direction": "minimize",
                            "params": {"x": 0.0, "y": 0.0}},
              "search": search}
    (root / "nas.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (root / ".gitignore").write_text("run/\nw*/\n*.log\n", encoding="utf-8")
    if not (root / ".git").exists():
        for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm",
                                                     "project"]):
            subprocess.run(["git", *args], cwd=root, check=True)
    return root / "nas.yaml"


def only_the_users_worktree(root: Path) -> None:
    """After the search: git lists the user's tree alone, its status is clean."""
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], cwd=root, capture_output=True, text=True,
                            check=True).stdout
    assert listed.count("worktree ") == 1, listed
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout


def start(cwd: Path, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "agentlab.cli", *args], cwd=cwd, stdout=handle,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def plans(run: Path) -> int:
    """How many trials the run has planned so far (its events file's ``plan`` lines)."""
    try:
        return (run / "events.jsonl").read_bytes().count(b'"kind": "plan"')
    except FileNotFoundError:
        return 0


def kill_at_random(proc: subprocess.Popen, run: Path, rng: random.Random, window_s: float) -> bool:
    """SIGKILL ``proc`` a random moment after it starts searching (it plans a trial); False when it finished
    first."""
    seen, deadline = plans(run), time.monotonic() + 120
    while plans(run) == seen and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, window_s))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)  # reaped: a zombie's pid still answers kill(pid, 0) and would look like a live worker
    return True


def moment(study: Any, root: Path) -> str:
    """Where a kill landed, read from what it left: a running trial whose command had not ended, one whose command
    had ended but whose result was not recorded, or none running (planning, committing, recording)."""
    if study is None:
        return "starting (no study yet)"
    running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    if not running:
        return "between trials (planner, commit, record)"
    log = root / "children.log"  # not there yet: the kill came before the first command wrote to it
    lines = log.read_text().splitlines() if log.exists() else []
    ended = {line.split()[1] for line in lines if line.startswith("end")}
    if any(_trial_dir(t) in ended for t in running):
        return "after the command ended, before its record"
    return "during a trial's command"


def _trial_dir(trial: Any) -> str:
    return str(Path(trial.user_attrs["plan"]["run_dir"]) / "trials" / f"run_{trial.number:04d}")


def load(storage: str, name: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # killed before it created the study
        return None


def check_exact(study: Any, root: Path, budget: int, kills: list[str]) -> None:
    """Exactly ``budget`` counted trials, numbered without gaps, none with the params of another, every trial that
    started finished; a command ran more than once only for a trial a kill interrupted."""
    from agentlab.core.search.records import TrialRecord

    records = [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]
    shown = [(r.number, r.state, r.counted, r.reason[:40]) for r in records]
    counted = [r for r in records if r.counted]
    assert len(counted) == budget and all(r.state == "complete" for r in counted), shown
    keys = [json.dumps(r.params, sort_keys=True) for r in counted]
    assert len(set(keys)) == budget, "a configuration ran twice: " + str(shown)
    for r in records:  # anything else is a claim that gave way to another worker before it ran, or a trial failed by
        # the heartbeat check whose copy (Optuna's retry) is among the counted ones: never a lost trial
        assert r.counted or r.reason.startswith(("budget taken", "the same configuration")) or (
            r.state == "interrupted" and json.dumps(r.params, sort_keys=True) in keys), shown
    lines = (root / "children.log").read_text().splitlines()
    ends = Counter(line.split()[1] for line in lines if line.startswith("end"))
    assert sum(ends.values()) <= budget + len(kills), (ends, kills)
    finished = {f"run_{r.number:04d}" for r in counted}
    assert {Path(d).name for d in ends} <= finished | {f"run_{r.number:04d}" for r in records}


def stress(root: Path, *, kills: int, budget: int, seed: int, window_s: float = 1.5, planner: str = "tpe",
           extra: tuple[str, ...] = ()) -> list[str]:
    """One search on SQLite, killed ``kills`` times and resumed; the kills' moments. ``extra``: more options for
    every start (``--llm FILE`` for the agent)."""
    config = project(root, planner=planner)
    run = root / "run"
    rng = random.Random(seed)
    landed: list[str] = []
    args = ["nas", "-c", str(config), "--max-iterations", str(budget), "--out", str(run), *extra]
    for _ in range(kills):
        proc = start(root, args, root / "agentlab.log")
        if not kill_at_random(proc, run, rng, window_s):
            assert proc.returncode == 0, (root / "agentlab.log").read_text()[-3000:]
            break
        landed.append(moment(load(f"sqlite:///{run / 'study.db'}", "nas"), root))
        args = ["nas", "--resume", str(run), *extra]
    proc = start(root, ["nas", "--resume", str(run), *extra], root / "agentlab.log")
    assert proc.wait(timeout=300) == 0, (root / "agentlab.log").read_text()[-3000:]
    study = load(f"sqlite:///{run / 'study.db'}", "nas")
    check_exact(study, root, budget, landed)
    results = json.loads((run / "results.json").read_text())
    assert results["states"] == {"complete": budget}, results["states"]
    only_the_users_worktree(root)
    print(f"{len(landed)} kills landed: {dict(Counter(landed))}")
    return landed


def stress_workers(root: Path, storage: str, *, workers: int, kills: int, budget: int, seed: int,
                   window_s: float = 1.5) -> list[str]:
    """``workers`` workers on one study in ``storage`` (each with its own run folder), one of them at random
    SIGKILLed ``kills`` times and resumed at once; then every worker runs to its end."""
    config = project(root, storage=storage)
    rng = random.Random(seed)
    env = {"AGENTLAB_STUDY_HEARTBEAT_S": "2"}
    procs = [start(root, ["nas", "-c", str(config), "--max-iterations", str(budget), "--out", f"w{i}"],
                   root / f"w{i}.log", env) for i in range(workers)]
    landed: list[str] = []
    try:
        for _ in range(kills):
            live = [i for i, p in enumerate(procs) if p.poll() is None]
            if not live:
                break
            i = rng.choice(live)
            if kill_at_random(procs[i], root / f"w{i}", rng, window_s):
                landed.append(moment(load(storage, "stress"), root))
                procs[i] = start(root, ["nas", "--resume", f"w{i}"], root / f"w{i}.log", env)
        for i, p in enumerate(procs):
            assert p.wait(timeout=600) == 0, (root / f"w{i}.log").read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    check_exact(load(storage, "stress"), root, budget, landed)
    bests = {json.loads((root / f"w{i}" / "results.json").read_text())["best"]["run_id"] for i in range(workers)}
    assert len(bests) == 1, bests  # every worker's report names the same best
    only_the_users_worktree(root)  # every worker's worktrees gone, a killed one's included
    print(f"{len(landed)} kills landed: {dict(Counter(landed))}")
    return landed


def test_sigkill_at_random_moments_then_resume_gives_the_exact_budget(tmp_path: Path) -> None:
    landed = stress(tmp_path, kills=4, budget=8, seed=1)
    assert len(landed) >= 2, "the search finished before most kills: the test measured nothing"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_twenty_sigkills_at_random_moments_on_sqlite(tmp_path: Path) -> None:
    landed = stress(tmp_path, kills=20, budget=30, seed=7)
    assert len(landed) >= 15
    assert len(set(landed)) >= 2, landed  # the kills landed in more than one kind of moment


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_an_agent_search_sigkilled_at_random_moments_keeps_the_exact_budget(tmp_path: Path) -> None:
    """The agent planner (its model a scripted server: suggest, then run a candidate) adds moments inside the
    agent's step: its graph checkpoints, its tool calls, the model's answers."""
    from agentlab.testing.server import spawn_server_process

    model = "agent-model"
    calls = [{"name": "suggest", "arguments": {}}, {"name": "run_trial", "arguments": {"candidate": 1, "reason": "x"}}]
    proc, base_url = spawn_server_process({"scripts": {model: [{"tool_calls": [c]} for c in calls * 400]}})
    try:
        llm = tmp_path / "llm.yaml"
        llm.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": base_url}},
                                       "models": {model: {"provider": "loop", "model": model}},
                                       "routes": {"planner": {"primary": [model]}}, "retries": 0, "timeout_s": 10}))
        landed = stress(tmp_path / "project", kills=10, budget=20, seed=11, planner="agent", extra=("--llm", str(llm)))
    finally:
        proc.kill()
        proc.wait()
    assert len(landed) >= 6, landed
    results = json.loads((tmp_path / "project" / "run" / "results.json").read_text())
    assert "planner: agent" in results["planner"]

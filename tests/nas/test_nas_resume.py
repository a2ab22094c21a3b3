"""`agentlab nas` survives SIGKILL, SIGTERM and a second worker: real subprocesses on a tiny Informer search.

A killed trial goes back to the queue whole and runs again first on `--resume` (the study ends with exactly the
budget), finished trials are never rerun or changed, `--resume` with a higher `--max-iterations` continues the same
study, and two workers on one storage share one budget.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml

from agentlab.cli import main
from agentlab.core.search.engine import new_study
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.loop import SearchLoop, StopRules
from agentlab.core.search.planners import OptunaPlanner
from agentlab.core.search.records import state_counts
from agentlab.core.search.space import ParamSpec, SearchSpace

# Fast trials (~0.5 s) for the runs that are not interrupted; SLOW adds batches and epochs so a trial can be caught
# mid-way (~2 s, 4 epochs) by a poll of events.jsonl.
FAST = {"epochs": 2, "max_train_batches": 3}
SLOW = {"epochs": 4, "max_train_batches": 8, "patience": 10}


def write_config(folder: Path, train: dict[str, Any]) -> Path:
    config = {
        "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
        "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
        "train": train,
        "search": {"planner": "tpe", "pruner": "none",
                   "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2]},
                             "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(args: list[str], cwd: Path, log: str) -> subprocess.Popen:
    env = {**os.environ, "AGENTLAB_RUNS": str(cwd / "runs"), "PYTHONUNBUFFERED": "1"}
    env.pop("AGENTLAB_DEBUG", None)
    with open(cwd / log, "wb") as handle:  # a file, not a pipe: a full pipe would block the child
        return subprocess.Popen([sys.executable, "-m", "agentlab.cli", *args], cwd=cwd, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    path = run / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if record.get("kind") == kind:
            out.append(record)
    return out


def wait_mid_trial(proc: subprocess.Popen, run: Path, finished: int, log: Path, timeout: float = 45) -> int:
    """Block until ``finished`` trials ended and a later trial reported an epoch; returns that trial's number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        done = {e["number"] for e in events(run, "trial")}
        running = [e["trial"] for e in events(run, "epoch") if e["trial"] not in done]
        if len(done) >= finished and running:
            return running[-1]
        time.sleep(0.03)
    raise AssertionError(f"no trial in progress after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)  # reap: a zombie's pid still answers kill(pid, 0) and would look like a live worker


def read(path: Path) -> Any:
    return json.loads(path.read_text())


def study_trials(storage: str) -> list[Any]:
    return optuna.load_study(study_name="nas", storage=storage).trials


def is_counted(trial: Any) -> bool:
    return trial.user_attrs.get("outcome", {}).get("counted", True) is not False


def test_sigkill_mid_trial_then_resume_finishes_the_budget(in_tmp: Path) -> None:
    config, run = write_config(in_tmp, SLOW), in_tmp / "RUN"
    proc = start(["nas", "-c", str(config), "--max-iterations", "6", "--out", str(run)], in_tmp, "kill.log")
    try:
        wait_mid_trial(proc, run, finished=2, log=in_tmp / "kill.log")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert read(run / "run.json")["status"] == "running"  # it had no chance to write
    before = {r["run_id"]: r for r in read(run / "agent_state.json")["runs"]}
    assert len(before) >= 2 and all(r["state"] == "complete" for r in before.values())
    (killed,) = [t for t in study_trials(f"sqlite:///{run / 'study.db'}") if t.state.name == "RUNNING"]

    assert main(["nas", "--resume", str(run), "--max-iterations", "6"]) == 0
    assert read(run / "run.json")["status"] == "completed"
    runs = read(run / "agent_state.json")["runs"]
    counted = [r for r in runs if r["counted"]]
    assert len(runs) == 6 and len(counted) == 6 and {r["state"] for r in counted} <= {"complete", "pruned", "failed"}
    (again,) = [r for r in runs if r["trial"] == killed.number]  # the killed trial itself, run again to its end
    assert again["params"] == killed.params and again["state"] in ("complete", "pruned")
    params = [json.dumps(r["params"], sort_keys=True) for r in counted]
    assert len(set(params)) == len(params), "a finished configuration was run twice"
    after = {r["run_id"]: r for r in runs}
    for run_id, old in before.items():  # finished trials were neither rerun nor rewritten
        new = after[run_id]
        assert (new["val_mse"], new["test_mse"], new["params"], new["accepted"]) == \
            (old["val_mse"], old["test_mse"], old["params"], old["accepted"])
    finished = [e["number"] for e in events(run, "trial")]
    assert sorted(finished) == sorted(r["trial"] for r in counted)  # each counted trial trained exactly once
    study = study_trials(f"sqlite:///{run / 'study.db'}")
    assert sum(map(is_counted, study)) == 6 and not [t for t in study if t.state.name == "RUNNING"]


def test_resume_with_higher_budget_runs_only_the_difference(in_tmp: Path) -> None:
    config, run = write_config(in_tmp, FAST), in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "3", "--out", str(run)]) == 0
    first = read(run / "agent_state.json")["runs"]
    assert main(["nas", "--resume", str(run), "--max-iterations", "5"]) == 0
    results, runs = read(run / "results.json"), read(run / "agent_state.json")["runs"]
    assert results["ran_here"] == 2 and len(runs) == 5 and all(r["counted"] for r in runs)
    assert runs[:3] == first
    assert sorted(e["number"] for e in events(run, "trial")) == [0, 1, 2, 3, 4]
    assert len(read(run / "run.json")["resumed"]) == 1


def test_a_resume_that_changes_what_a_trial_is_scored_on_is_refused(in_tmp: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """A resume with another horizon (or data, model, training) trained its new trials on it beside the old ones and
    ranked them together (exit 0); refused now, naming each key, the folder left as it was. The planner, the budget and
    speed may change."""
    config, run = write_config(in_tmp, FAST), in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--out", str(run)]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["nas", "--resume", str(run), "--max-iterations", "3", "--set", "data.pred_len=24",
                 "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err.split("hint")[0]
    assert "data.pred_len 12 -> 24; train.epochs 2 -> 3)" in err and "nothing was written" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(["nas", "--resume", str(run), "--max-iterations", "3", "--planner", "random",
                 "--set", "train.threads=2"]) == 0
    assert len(read(run / "agent_state.json")["runs"]) == 3
    # a total below the trials already finished: refused (it ran the trial a kill left running all the same, and
    # said the smaller total was reached)
    assert main(["nas", "--resume", str(run), "--max-iterations", "2"]) == 2
    assert "--max-iterations 2 is below the 3 trials" in capsys.readouterr().err
    assert len(read(run / "agent_state.json")["runs"]) == 3


def test_two_workers_share_one_storage_and_budget(in_tmp: Path) -> None:
    config = write_config(in_tmp, FAST)
    storage = f"sqlite:///{in_tmp / 'shared.db'}"
    procs = [start(["nas", "-c", str(config), "--storage", storage, "--planner", "random", "--max-iterations", "6",
                    "--out", str(in_tmp / name)], in_tmp, f"{name}.log") for name in ("w1", "w2")]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            stop(p)
    logs = "\n".join((in_tmp / f"{n}.log").read_text()[-2000:] for n in ("w1", "w2"))
    assert codes == [0, 0], logs
    trials = study_trials(storage)
    counted = [t for t in trials if is_counted(t)]
    assert len(counted) == 6 and all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in counted)
    by_worker = {name: [t for t in counted if t.user_attrs["plan"]["run_dir"] == str(in_tmp / name)]
                 for name in ("w1", "w2")}
    assert all(by_worker.values()), {k: len(v) for k, v in by_worker.items()}
    assert sum(read(in_tmp / n / "results.json")["ran_here"] for n in ("w1", "w2")) == 6
    params = [json.dumps(t.params, sort_keys=True) for t in counted]
    assert len(set(params)) == 6, "two workers ran the same configuration"
    # each worker's ensemble reads the forecasts of every finished trial it saw, from either run folder: the worker
    # that ended last saw them all, and reads the other's from the other's folder
    complete = [t for t in counted if t.state.name == "COMPLETE"]
    ensembles = {n: read(in_tmp / n / "results.json")["ensemble"] for n in ("w1", "w2")}
    last = max(ensembles, key=lambda n: ensembles[n]["pool"])
    naive = len(ensembles[last]["naive"])  # the naive reference forecasts join every pool (no trial runs them here)
    assert naive and ensembles[last]["pool"] == len(complete) + naive
    other = "w2" if last == "w1" else "w1"
    if any(t.state.name == "COMPLETE" for t in by_worker[other]):
        assert ensembles[last]["pool"] > sum(t.state.name == "COMPLETE" for t in by_worker[last]) + naive
    for m in ensembles[last]["members"]:
        assert (in_tmp / last / m["path"] / "pred_val.npy").is_file()  # relative, or the other's absolute path


def test_sigterm_records_interrupted_and_exits_130_then_resumes(in_tmp: Path) -> None:
    config, run = write_config(in_tmp, SLOW), in_tmp / "RUN"
    proc = start(["nas", "-c", str(config), "--max-iterations", "3", "--out", str(run)], in_tmp, "term.log")
    try:
        number = wait_mid_trial(proc, run, finished=1, log=in_tmp / "term.log")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        stop(proc)
    log = (in_tmp / "term.log").read_text()
    assert code == 130, log[-3000:]
    assert "continue with --resume" in log
    info = read(run / "run.json")
    assert info["status"] == "interrupted" and "interrupted" in info["error"]
    interrupted = {t.number: t for t in study_trials(f"sqlite:///{run / 'study.db'}")}[number]
    assert interrupted.state.name == "WAITING"  # back in the queue, whole

    assert main(["nas", "--resume", str(run)]) == 0  # the budget of 3 comes from the saved config
    assert read(run / "run.json")["status"] == "completed"
    runs = read(run / "agent_state.json")["runs"]
    assert sum(r["counted"] for r in runs) == 3 and len(runs) == 3
    assert next(r for r in runs if r["trial"] == number)["params"] == interrupted.params


def test_a_configuration_another_worker_starts_at_the_same_moment_is_not_run_twice(tmp_path: Path) -> None:
    """Two workers that plan at once propose the same draw (same seed, same history): the later trial yields."""

    class Objective:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def check(self, params: dict[str, Any]) -> list[str]:
            return []

        def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
            self.calls.append(params)
            return {"value": (params["x"] - 1) ** 2}

    class Racing:
        """Lets the other worker commit the very plan this one is about to commit, once."""

        def __init__(self) -> None:
            self.inner, self.raced = OptunaPlanner("random"), None

        def propose(self, ctx: Any) -> Any:
            proposal = self.inner.propose(ctx)
            if self.raced is None:
                self.raced = other._commit(proposal)
            return proposal

    study = new_study(f"sqlite:///{tmp_path / 's.db'}")
    space, objective = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0)}), Objective()

    def loop(planner: Any, budget: int) -> SearchLoop:
        return SearchLoop(study=study, space=space, base_params={"x": 4.0}, objective=objective, planner=planner,
                          evaluator=HybridEvaluator(0.01), stop=StopRules(budget))

    other = loop(OptunaPlanner("random"), 4)
    racing = Racing()
    outcome = loop(racing, 4).run()
    by_number = {r.number: r for r in outcome.records}
    (yielded,) = [r for r in outcome.records if not r.counted]
    assert yielded.number == racing.raced.number + 1 and yielded.params == by_number[racing.raced.number].params
    assert "started by another worker" in yielded.reason
    assert yielded.state == "skipped" and "failed" not in state_counts(outcome.records)  # was "failed 1"
    assert racing.raced.params not in objective.calls  # the other worker's trial is still its own to run
    assert len(objective.calls) == 3 and len({c["x"] for c in objective.calls}) == 3


def write_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """An hourly CSV of ``rows`` rows (two columns, a daily cycle and noise); another ``seed``, other values."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2021-01-01T00:00")
    lines = ["date,load,OT"] + [f"{str(start + np.timedelta64(i, 'h')).replace('T', ' ')},"
                                f"{np.sin(i / 24 * 2 * np.pi) + rng.normal(0, 0.1):.4f},{rng.normal():.4f}"
                                for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_config(folder: Path, data: Path) -> Path:
    config = yaml.safe_load(write_config(folder, FAST).read_text())
    config["data"] = {"path": str(data), "seq_len": 24, "label_len": 12, "pred_len": 12}
    path = folder / "csv.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_resume_on_a_data_file_whose_content_changed_is_refused(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """The same data.path with other content (400 rows, then 350) resumed with exit 0 and no word: the new trials
    trained on the new file and were ranked with the old ones, two targets files in targets/. Refused now, as a
    --set data.* is, naming the file, the folder left as it was; the file put back, the resume goes on. A run folder
    from before the sha256 was recorded resumes with one warning, and is checked from then on."""
    data = write_csv(in_tmp / "mod.csv", 400)
    started = data.read_bytes()
    run = in_tmp / "RUN"
    assert main(["nas", "-c", str(csv_config(in_tmp, data)), "--max-iterations", "1", "--out", str(run)]) == 0
    assert [e["sha256"] for e in events(run, "data")] == [hashlib.sha256(started).hexdigest()]
    write_csv(data, 350, seed=1)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    for dry in ([], ["--dry-run"]):
        assert main(["nas", "--resume", str(run), "--max-iterations", "2", *dry]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"the content of data.path {data.resolve()}: sha256 " in err and "nothing was written" in err, err
        assert "put the file back as the run started on it, or start a new run on the new data" in err
        assert "Traceback" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    data.write_bytes(started)
    assert main(["nas", "--resume", str(run), "--max-iterations", "2"]) == 0
    assert len(read(run / "agent_state.json")["runs"]) == 2 and len(list((run / "targets").iterdir())) == 1
    # a run folder from before: no data event, so nothing to compare; one warning, and the resume records one
    kept = [line for line in (run / "events.jsonl").read_text().splitlines() if '"kind": "data"' not in line]
    (run / "events.jsonl").write_text("\n".join(kept) + "\n")
    capsys.readouterr()
    assert main(["nas", "--resume", str(run), "--max-iterations", "3"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("records no sha256 of data.path") == 1, err
    assert len(events(run, "data")) == 1
    write_csv(data, 350, seed=1)
    assert main(["nas", "--resume", str(run), "--max-iterations", "4"]) == 2


def test_a_worker_whose_data_file_differs_from_the_studys_is_refused(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """Workers of a shared study each read their own data.path: one whose file holds other content (the same path
    on another machine, or changed since) ranked its trials with the study's; refused before it writes anything."""
    data = write_csv(in_tmp / "data.csv", 400)
    started = data.read_bytes()
    config, storage = csv_config(in_tmp, data), f"sqlite:///{in_tmp / 'shared.db'}"
    assert main(["nas", "-c", str(config), "--storage", storage, "--max-iterations", "1", "--out",
                 str(in_tmp / "w1")]) == 0
    write_csv(data, 400, seed=1)
    capsys.readouterr()
    for dry in (["--dry-run"], []):
        assert main(["nas", "-c", str(config), "--storage", storage, "--max-iterations", "2", "--out",
                     str(in_tmp / "w2"), *dry]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "search.storage: the study 'nas' in" in err and "was made on other data than this search's" in err
        assert f"(the content of data.path {data.resolve()}: sha256 " in err, err
        assert "give every worker the same data file" in err
    assert not (in_tmp / "w2").exists()
    data.write_bytes(started)
    assert main(["nas", "-c", str(config), "--storage", storage, "--max-iterations", "2", "--out",
                 str(in_tmp / "w2")]) == 0
    assert len(study_trials(storage)) == 2

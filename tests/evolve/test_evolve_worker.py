"""`agentlab evolve worker` without a model: started before its run it waits for the population (the docs start
them together), and Ctrl-C says what went back to the queue (a worker has no run folder to resume)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("optuna")

from agentlab.cli import main  # noqa: E402
from agentlab.evolve.population import open_population  # noqa: E402


def queue(store: str, run: Path, names: list[str]) -> None:
    """A population as a run makes it (its folder recorded), ``names`` queued for the workers."""
    from agentlab.core.search.planners import Proposal
    from agentlab.evolve.worker import evolve_loop

    pop = open_population(store, run, create=True)
    pop.set_attr("folder", str(run))
    pop.set_attr("settings", {})
    loop = evolve_loop(pop, 1)
    for name in names:
        loop._commit(Proposal({}, {}, "ga", name, extra={"individual": {"id": name, "generation": 1, "path": "p"}}),
                     queued=True)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_worker_started_before_its_run_waits_for_the_population(in_tmp: Path, kind: str, capsys: Any) -> None:
    """`evolve run --store S & evolve worker --store S` (the docs' example) stopped the worker at once, exit 2:
    `store S: no such journal file`. With --wait (the default) it says it waits, then serves the run."""
    store = "w.journal" if kind == "journal" else f"sqlite:///{in_tmp / 'w.db'}"

    def the_run() -> None:
        time.sleep(0.5)
        queue(store, in_tmp / "run", [])
        open_population(store, None, create=False).set_attr("finished", True)

    later = threading.Thread(target=the_run)
    later.start()
    try:
        assert main(["evolve", "worker", "--store", store]) == 0
    finally:
        later.join()
    out = " ".join(capsys.readouterr().err.split())  # the console is stderr
    assert f"waiting for the run to create its population in {store} (Ctrl-C to stop)" in out
    assert "scored 0 individuals" in out
    # --no-wait keeps the error
    assert main(["evolve", "worker", "--store", "none.journal", "--no-wait"]) == 2
    assert "error: store none.journal: no such journal file" in capsys.readouterr().err


def test_ctrl_c_on_a_worker_names_what_went_back_to_the_queue(in_tmp: Path, capsys: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `interrupted before a run folder was made: nothing to resume; run the command again` (rc 130): a
    worker never makes one. It names the individuals it was scoring, back in the queue for the run."""
    from agentlab.evolve import worker

    store = str(in_tmp / "s.journal")
    queue(store, in_tmp / "run", ["g1c0"])

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(worker, "ScoreSettings", lambda **kwargs: None)
    monkeypatch.setattr(worker, "score_batch", interrupted)
    assert main(["evolve", "worker", "--store", store, "--no-wait"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "error: interrupted: g1c0, which this worker was scoring, went back to the queue for the run and its " \
        "other workers" in err and "run folder" not in err
    assert f"agentlab evolve worker --store {store}" in err
    assert open_population(store, None, create=False).individuals()["g1c0"]["state"] == "waiting"


def test_each_worker_process_has_its_own_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--workers N` starts new worker processes for each generation: they appended to the same worker-I.log, so the
    log a failure named ("a worker exited with 1 (...); its log: worker-0.log") held later processes' lines too."""
    from agentlab.evolve import worker

    started: list[Any] = []

    class Failed:  # a worker process that printed its error and exited 1
        returncode = 1

        def __init__(self, command: list[str], env: dict[str, str], stdout: Any, stderr: Any, **kwargs: Any) -> None:
            stdout.write(f"error: process {len(started)}\n")
            started.append(self)

        def poll(self) -> int:
            return 1

    monkeypatch.setattr(worker.subprocess, "Popen", Failed)
    said: list[str] = []
    logs = tmp_path / "workers"
    for group in ("gen-0", "gen-1", "gen-1"):  # the last: a resume starting generation 1 again
        worker.run_workers("s.journal", 2, 1, logs, lambda: None, said.append, group=group)
    assert sorted(p.name for p in logs.iterdir()) == [
        "worker-0.gen-0.log", "worker-0.gen-1.2.log", "worker-0.gen-1.log",
        "worker-1.gen-0.log", "worker-1.gen-1.2.log", "worker-1.gen-1.log"]
    assert all(len(p.read_text().splitlines()) == 1 for p in logs.iterdir())  # one process each
    for line in said:  # the log named holds the error said, and only it
        error, log = line.split(" (", 1)[1].split("); its log: ")
        assert Path(log.split(";")[0]).read_text().strip() == error


CHILD = """import os, signal, sys, time
from pathlib import Path
def term(*args):
    Path(sys.argv[1], f"term-{os.getpid()}").touch()
    sys.exit(130)
signal.signal(signal.SIGTERM, term)
Path(sys.argv[1], f"ready-{os.getpid()}").touch()
time.sleep(120)
"""

RUN = """import subprocess, sys
from pathlib import Path
from agentlab.evolve import worker
real, folder = subprocess.Popen, sys.argv[1]
subprocess.Popen = lambda command, **kw: real([sys.executable, "-c", sys.argv[2], folder], **kw)
worker.run_workers("s.journal", 2, 1, Path(folder, "logs"), lambda: None, print)
"""


def wait_for(folder: Path, prefix: str, n: int) -> list[Path]:
    deadline = time.monotonic() + 30
    while len(found := sorted(folder.glob(f"{prefix}-*"))) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the run's death reaches its workers on Linux")
@pytest.mark.parametrize("how", ["interrupt", "kill -9"])
def test_a_stopped_run_stops_its_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """`kill -INT` on the run (its pid only, as timeout or a scheduler sends it) ended it, exit 130, but its
    `evolve worker --no-wait` processes scored on to the end of their batch; after `kill -9` too. They get SIGTERM
    (a worker gives its batch back, as on Ctrl-C) when the run stops, however it stops."""
    from agentlab.evolve import worker

    try:
        if how == "interrupt":
            real = subprocess.Popen
            monkeypatch.setattr(worker.subprocess, "Popen", lambda command, **kw: real(
                [sys.executable, "-c", CHILD, str(tmp_path)], **kw))

            def poll() -> None:
                wait_for(tmp_path, "ready", 2)
                raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                worker.run_workers("s.journal", 2, 1, tmp_path / "logs", poll, print)
        else:
            run = subprocess.Popen([sys.executable, "-c", RUN, str(tmp_path), CHILD])
            wait_for(tmp_path, "ready", 2)
            run.kill()
            run.wait()
        assert len(wait_for(tmp_path, "term", 2)) == 2
    finally:  # without the fix: the workers would sleep on
        for ready in tmp_path.glob("ready-*"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(ready.name.split("-")[1]), signal.SIGKILL)

"""Workers: claim waiting individuals from the population store, score them, store the scores.

The run scores in process with ``workers: 1``; with ``workers: N`` it starts N processes of ``agentlab evolve worker
--store URL`` on this machine and waits for them; on other machines, the same command with the run's store URL (a
database both reach, and the adapter folders on a shared disk at the same path) adds workers to a running evolve.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.evolve.population import Population
from agentlab.evolve.score import ScoreSettings, score_batch

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def work(pop: Population, *, batch: int, providers: dict[str, Provider] | None = None,
         tick: Callable[[], None] = lambda: None,
         on_scored: Callable[[dict[str, Any], dict[str, Any] | str], None] | None = None) -> int:
    """Score waiting individuals ``batch`` at a time until none waits; returns how many this worker scored."""
    settings = ScoreSettings.from_dict(pop.attr("settings"))
    ref = pop.attr("reference")
    me = worker_name()
    done = 0
    while True:
        claimed = pop.claim(batch, me)
        if not claimed:
            return done
        log.info("%s scoring %s", me, ", ".join(ind["id"] for ind in claimed))
        scores = score_batch(settings, ref, claimed, providers=providers, tick=tick)
        for ind in claimed:
            result = scores[ind["id"]]
            if isinstance(result, str):
                stored = pop.fail(ind["trial"], result)
            else:
                stored = pop.complete(ind["trial"], {**result, "worker": me, "scored_at": time.time()})
            if stored and on_scored is not None:
                on_scored(ind, result)
            done += stored


def serve(pop: Population, *, batch: int, wait: bool, poll_s: float = 5.0,
          announce: Callable[[str], None] = log.info) -> int:
    """``agentlab evolve worker``: work until the run is finished (``wait``) or until nothing waits."""
    total = 0
    while True:
        total += work(pop, batch=batch, on_scored=lambda ind, r: announce(
            f"{ind['id']}: " + (f"error: {r}" if isinstance(r, str) else
                                f"task {r['task']:.3f}, coop {r['coop']:+.3f} ({r['seconds']:.0f} s)")))
        if not wait or pop.attr("finished"):
            return total
        time.sleep(poll_s)


def spawn(store: str, n: int, batch: int, logs: Path) -> list[tuple[subprocess.Popen, Path]]:
    """``n`` worker processes on this machine, each with its share of the CPU threads and its log in ``logs``."""
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "agentlab", "evolve", "worker", "--store", store, "--batch", str(batch),
               "--no-wait"]
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log_file = logs / f"worker-{i}.log"
        with open(log_file, "a", encoding="utf-8") as handle:  # the child keeps its own descriptor
            procs.append((subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT), log_file))
    return procs


def failure_line(log_file: Path) -> str:
    """The ``error:`` line of a worker's log (the CLI prints one per failure), else its last line."""
    lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines() if log_file.is_file() else []
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1]

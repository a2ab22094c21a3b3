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
from typing import Any

from agentlab.evolve.population import Population
from agentlab.evolve.score import ScoreSettings, score_batch

log = logging.getLogger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def work(pop: Population, *, batch: int, providers: dict[str, Any] | None = None,
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
                pop.fail(ind["trial"], result)
            else:
                pop.complete(ind["trial"], {**result, "worker": me, "scored_at": time.time()})
            if on_scored is not None:
                on_scored(ind, result)
            done += 1


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


def spawn(store: str, n: int, batch: int) -> list[subprocess.Popen]:
    """``n`` worker processes on this machine, each with its share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "agentlab", "evolve", "worker", "--store", store, "--batch", str(batch),
               "--no-wait"]
    return [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]

"""`agentlab serve` in a process of its own, for benchmarks and tests: the gateway as a user runs it (it must not
share the client's interpreter), started on a free port and waited for until it prints its address."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def serve_process(llm: dict[str, Any], folder: Path, *, timeout: float = 90.0,
                  extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen[str], str]:
    """``python -m agentlab serve`` over the routing config ``llm`` (written to ``folder/llm.yaml``), its run folder
    ``folder/run``; returns the process and its base URL once it serves. Raises RuntimeError when it does not start
    within ``timeout`` seconds (the process is killed)."""
    (folder / "llm.yaml").write_text(json.dumps(llm), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "serve", "--llm", str(folder / "llm.yaml"), *extra,
                             "--port", "0", "--out", str(folder / "run")], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if "serving on " in line:
            return proc, line.split("serving on ", 1)[1].split()[0]
    proc.kill()
    raise RuntimeError("agentlab serve did not start")


def stop_process(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Stop a gateway the way a user does (Ctrl-C: it records its run as interrupted), killing it when it does not
    exit within ``timeout`` seconds."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

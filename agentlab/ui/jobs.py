"""Runs started from the UI: the CLI itself (``python -m agentlab ...``) in a child process, so a run started here
validates, writes its folder and fails exactly as it does from the shell, and outlives a closed browser tab.

The UI gives each job its run folder (``--out``), so it can follow the run live; what the command prints goes to a
log file outside the run folder (the UI never writes into a run folder), in the UI process's own temporary folder
(``scratch``), which goes when the UI stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from agentlab.core.agent import approval
from agentlab.core.runs import new_run_path, runs_root

_SCRATCH: list[tempfile.TemporaryDirectory[str]] = []  # made at the first job, removed when the process ends


def scratch() -> Path:
    """A new folder for one job's output log (or a pipeline file to run), inside one temporary folder of this UI
    process that is removed when the process ends: a folder per job in /tmp stayed there for good."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="agentlab-ui-"))
    return Path(tempfile.mkdtemp(dir=_SCRATCH[0].name))


@dataclass
class Job:
    """One CLI command started by the UI."""

    args: list[str]  # after `agentlab`
    out: Path  # its run folder
    log: Path  # its terminal output
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def returncode(self) -> int | None:
        """None while it runs; then the command's exit code (0 done, 1 failed, 2 bad input, 130 interrupted)."""
        return self.process.poll()

    @property
    def state(self) -> str:
        code = self.returncode
        return "running" if code is None else "completed" if code == 0 else "failed"

    def output(self, tail: int = 4000) -> str:
        """The end of what the command printed (its error line, when it failed)."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-tail:]

    def error(self) -> str:
        """The command's error line (its ``error:`` left out: the page's red box says it) and hint, or the end of its
        output."""
        lines = self.output().splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
        if first is None:
            return "\n".join(lines[-3:])
        # a config's error names each bad field on a line of its own: every line up to the hint
        end = next((i for i in range(first + 1, len(lines)) if lines[i].startswith("hint:")), first + 1)
        return "\n".join([lines[first].removeprefix("error:").strip(), *lines[first + 1:end + 1]])

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Ctrl-C for the command: it records `interrupted` in its run folder and can be resumed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)


def start(args: list[str], command: str, name: str | None, *, root: Path | None = None,
          cwd: Path | None = None) -> Job:
    """Start ``agentlab *args --out <new run folder of command>`` with the UI's runs root and current directory."""
    root = runs_root(root)
    out = new_run_path(command, name, root).absolute()
    logs = scratch()
    log = logs / "output.log"
    # a run started here has no terminal: --approve's questions are answered on the Runs page
    env = {**os.environ, "AGENTLAB_RUNS": str(root.absolute()), "COLUMNS": "120", "NO_COLOR": "1",
           approval.APPROVE_UI_ENV: "1"}
    full = [*args, "--out", str(out)]
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "agentlab", *full], stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    return Job(full, out, log, process)


def answer(run: Path, command: str, reply: dict[str, object], *, root: Path | None = None,
           cwd: Path | None = None) -> Job:
    """Answer the approval a run stopped at (``--approve`` without a terminal): the CLI resumes the run folder with
    ``--answer``, which LangGraph hands to the waiting interrupt (``Command(resume=...)``); the run goes on to its
    next approval or its end."""
    root = runs_root(root)
    logs = scratch()
    log = logs / "output.log"
    env = {**os.environ, "AGENTLAB_RUNS": str(root.absolute()), "COLUMNS": "120", "NO_COLOR": "1",
           approval.APPROVE_UI_ENV: "1"}
    args = approval.resume_args(command, Path(run).absolute(), dict(reply))
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "agentlab", *args], stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
    return Job(args, Path(run), log, process)

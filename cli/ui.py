"""`agentlab ui`: the Streamlit web view of the run folders, the pipeline builder and the models check."""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Annotated, TextIO

import typer

from agentlab.core.process import die_with_parent

from .common import console, safe_text


def _bind_error(host: str, port: int) -> OSError | None:
    """Why Streamlit could not listen on ``host:port`` (None: it can), found by binding there first."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:  # socket.gaierror (a name that resolves to nothing) included
            return exc
        except (TypeError, ValueError) as exc:  # a name IDNA cannot encode ("encoding of hostname failed"), a NUL
            return socket.gaierror(socket.EAI_NONAME, str(exc))
    return None


def _runs_folder(value: str) -> Path:
    """--runs as typed: a file is refused, and so is an empty value (it became the current folder, served as the runs
    folder)."""
    if not value:
        raise typer.BadParameter("empty; give the runs folder, or leave --runs out for $AGENTLAB_RUNS, else runs")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"dir {value!r} is a file.")
    return path


def _host(value: str) -> str:
    """--host as typed: an empty value is refused (a socket bound to '' listens on every interface: 0.0.0.0, said
    nowhere)."""
    if not value:
        raise typer.BadParameter("empty; give the address to bind (127.0.0.1: this machine only, 0.0.0.0: every "
                                 "interface), or leave --host out for 127.0.0.1")
    return value


def ui(
    runs: Annotated[Path | None, typer.Option("--runs", help="The runs folder to show (every command's run folders "
                                              "under it); runs started from the UI go there too. Default: "
                                              "$AGENTLAB_RUNS, else runs.", parser=_runs_folder, metavar="<dir>",
                                              show_default=False)] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 8501,
    host: Annotated[str, typer.Option("--host", help="Address to bind: 127.0.0.1 keeps it on this machine; "
                                      "0.0.0.0 serves every network interface (in a container).", parser=_host,
                                      metavar="<str>")] = "127.0.0.1",
) -> None:
    """A web view of the run folders, the pipeline builder and the models check.

    Shows every run (status, result, report with its plots, config, events; running runs refresh
    live), the pipeline builder (Base / Manual / History) and the models check. Needs the extra `ui`."""
    from agentlab.core.errors import MissingPackage, UsageError, pip_install
    from agentlab.core.runs import runs_root

    if importlib.util.find_spec("streamlit") is None:
        raise MissingPackage(f"agentlab ui needs streamlit, which is not installed: {pip_install('ui')}")
    runs = runs_root(runs)
    if runs.exists() and not runs.is_dir():  # AGENTLAB_RUNS naming a file (click checks --runs itself)
        raise UsageError(f"AGENTLAB_RUNS={runs}: is a file, not a folder", hint="pass the runs folder with --runs")
    problem = _bind_error(host, port)
    if isinstance(problem, socket.gaierror) or (problem is not None and problem.errno == errno.EADDRNOTAVAIL):
        raise UsageError(f"--host {host}: not an address of this machine",
                         hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    if problem is not None:
        raise UsageError(f"--port {port}: {host}:{port} is in use (or cannot be bound: {problem.strerror or problem})",
                         hint=f"pass another port, e.g. --port {port + 1}")
    from agentlab.ui import APP

    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port), "--server.address",
               host, "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType",
               "none", "--client.toolbarMode", "minimal", "--", "--runs", str(runs.absolute())]
    env = {**os.environ, "AGENTLAB_RUNS": str(runs.absolute())}
    # an IPv6 address in a URL is bracketed (http://[::1]:8501), and escaped: rich read [fe80::1] as markup
    url_host = safe_text(f"[{host}]" if ":" in host else host)
    console.print(f"agentlab ui on http://{url_host}:{port} showing {safe_text(runs.absolute())}/ (Ctrl-C stops it)"
                  + ("" if runs.is_dir() else "; it does not exist yet (made when a run starts there)"))
    # A shell that starts a command in the background (`agentlab ui &`, a script, nohup) hands it SIGINT ignored, and
    # Python then never turns SIGINT into KeyboardInterrupt: `kill -INT` did nothing. Stop on it as on Ctrl-C (the
    # handler resets to the default in streamlit's process, so Ctrl-C stops it too).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Streamlit's output comes through pipes that this process relays: a reader that goes away (`agentlab ui | head
    # -1`) is ours to see, not Streamlit's (which died on it with a BrokenPipeError traceback); its last line of
    # stderr says why it stopped, if it does. A terminal gets its stdout as it is (colours).
    relayed = not sys.stdout.isatty()
    # dies with us on kill -9 too (it was left serving, holding the port, and the next `agentlab ui` refused it)
    process = subprocess.Popen(command, env={**env, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent(),
                               stdout=subprocess.PIPE if relayed else None, stderr=subprocess.PIPE)
    relay = _Relay(process)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        # Ctrl-C (and `kill -INT %1`) reached streamlit too (same process group), which stops on it in about a second:
        # a SIGTERM sent at once made it stop twice ("Stopping..." printed twice). A SIGINT or SIGTERM to us alone is
        # passed on after that wait, and a streamlit that does not stop then is killed.
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C: no more waiting
            process.wait(timeout=_STOPS_WITHIN)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        raise
    finally:
        relay.join()
    if relay.reader_gone:
        console.print("[yellow]stopped[/]: the reader of its output went away (a closed pipe)")
        raise typer.Exit(141)  # as a process killed by SIGPIPE, and as the other commands exit then
    if code:
        from agentlab.core.errors import AgentlabError

        if code < 0:  # its last line (its start, a request) is no reason why: something outside stopped it
            raise AgentlabError(f"the Streamlit server stopped (killed by signal {-code}, {_signal_name(-code)})",
                                hint="it was stopped from outside agentlab (a kill, the out-of-memory killer); "
                                     "start agentlab ui again")
        said = f": {relay.last_error}" if relay.last_error else ""
        raise AgentlabError(f"the Streamlit server stopped (exit code {code}){said}",
                            hint="its own messages are above" + ("; a port taken since the check: pass another --port"
                                                                 if _PORT_TAKEN.search(relay.last_error) else ""))


# how long a streamlit sent SIGINT with us (Ctrl-C) takes to stop on its own, at most (about a second, measured)
_STOPS_WITHIN = 3.0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "no signal this system names"


# a log line's date and time, as Streamlit's logger starts each line (2026-12-03 08:24:17.250 Port 8641 is not ...)
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? ")
# what Streamlit says as it starts, serves and stops (on stderr, its log, or stdout): no reason why it stopped
_INFORMATIONAL = re.compile(r"^(?:You can now view |Uvicorn server started |(?:Local |Network |External )?URL: |"
                            r"https?://|Stopping\.\.\.$)", re.IGNORECASE)
# Streamlit's words for a port it cannot listen on ("Port 8641 is not available", "Cannot start Streamlit server.
# Port 8641 is not available, and ...")
_PORT_TAKEN = re.compile(r"\bport \d+ is not available\b", re.IGNORECASE)


class _Relay:
    """Copies the child's stdout and stderr pipes to this process's own (a thread each), and keeps the last line of
    its stderr that is not one of its informational ones (the error it stopped on, if it did). A reader that went away
    (EPIPE) stops the server: the rest is read and dropped, so Streamlit never meets the closed pipe."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process, self.reader_gone, self.last_error = process, False, ""
        self.threads = [threading.Thread(target=self._copy, args=(pipe, target, pipe is process.stderr),
                                         name="agentlab-ui-relay", daemon=True)
                        for pipe, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))
                        if pipe is not None]
        for thread in self.threads:
            thread.start()

    def _copy(self, pipe: IO[bytes], target: TextIO, errors: bool) -> None:
        out = getattr(target, "buffer", None)
        for line in iter(pipe.readline, b""):
            said = _LOG_TIME.sub("", line.decode("utf-8", "replace").strip()) if errors else ""
            if said and not _INFORMATIONAL.match(said):
                self.last_error = said
            if self.reader_gone:
                continue
            try:
                if out is not None:
                    target.flush()  # what was written as text before the bytes comes first
                    out.write(line)
                    out.flush()
                else:
                    target.write(line.decode("utf-8", "replace"))
                    target.flush()
            except (BrokenPipeError, ValueError):  # the reader went away (or the stream is closed)
                self.reader_gone = True
                with contextlib.suppress(OSError):
                    self.process.terminate()
        pipe.close()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)

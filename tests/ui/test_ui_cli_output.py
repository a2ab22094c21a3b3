"""`agentlab ui`'s output: Streamlit's comes through agentlab, so a reader that goes away (`agentlab ui | head -1`)
stops it quietly (exit 141, as the other commands) rather than with Streamlit's BrokenPipeError traceback; a Streamlit
that stops on its own is one agentlab line that says why; an IPv6 --host is bracketed in the URL. Streamlit itself is
stood in for by a small script (fast)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main

pytest.importorskip("streamlit")


def free_port(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stand_in(monkeypatch: pytest.MonkeyPatch, script: str) -> list[subprocess.Popen]:
    """Popen of `agentlab ui` starts ``script`` in Streamlit's place, with the same pipes."""
    real, started = subprocess.Popen, []

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen:
        started.append(real([sys.executable, "-c", script], **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", popen)
    return started


class ClosedPipe:
    """A stdout whose reader went away."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_goes_away_stops_it_quietly_with_141(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    started = stand_in(monkeypatch, "import time\nwhile True:\n    print('  URL: http://x', flush=True)\n"
                                    "    time.sleep(0.05)\n")
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    begun = time.monotonic()
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 141
    assert time.monotonic() - begun < 20
    (child,) = started
    assert child.poll() is not None  # the server was stopped with it
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert err.splitlines()[-1] == "stopped: the reader of its output went away (a closed pipe)"


def test_its_output_is_relayed(in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    stand_in(monkeypatch, "import sys\nprint('  URL: http://x')\nprint('a log line', file=sys.stderr)\n")
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 0
    out, err = capfd.readouterr()
    assert out == "  URL: http://x\n" and err.splitlines()[-1] == "a log line"


def test_streamlit_stopping_on_its_own_is_one_line_saying_why(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capfd: pytest.CaptureFixture) -> None:
    """A port taken between agentlab's check and Streamlit's start: Streamlit's "Port N is not available", then a
    bare exit 1 of agentlab."""
    stand_in(monkeypatch, "import sys\nprint('2026-12-03 08:24:17.250 Port 8641 is not available', file=sys.stderr)\n"
                          "sys.exit(1)\n")
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 1
    err = capfd.readouterr().err.splitlines()
    assert err[-2:] == ["error: the Streamlit server stopped (exit code 1): Port 8641 is not available",
                        "hint: its own messages are above; a port taken since the check: pass another --port"]


def test_streamlit_killed_by_a_signal_says_so_not_its_last_log_line(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capfd: pytest.CaptureFixture) -> None:
    """`kill -9` of the server said "stopped (killed by signal 9): Uvicorn server started on 127.0.0.1:18654" and
    hinted at a port taken since the check."""
    stand_in(monkeypatch, "import os, signal, sys\n"
                          "print('2026-12-03 08:24:17.250 Uvicorn server started on 127.0.0.1:18654', file=sys.stderr,"
                          " flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 1
    err = capfd.readouterr().err.splitlines()
    assert err[-2:] == ["error: the Streamlit server stopped (killed by signal 9, SIGKILL)",
                        "hint: it was stopped from outside agentlab (a kill, the out-of-memory killer); start agentlab "
                        "ui again"]


@pytest.mark.parametrize(("stderr", "said"), [
    (["You can now view your Streamlit app in your browser.", "URL: http://127.0.0.1:8501",
      "2026-12-03 08:24:17.250 Uvicorn server started on 127.0.0.1:8501"], ""),
    (["2026-12-03 08:24:17.250 Uvicorn server started on 127.0.0.1:8501", "Traceback (most recent call last):",
      "RuntimeError: no event loop"], ": RuntimeError: no event loop")])
def test_an_exit_code_quotes_its_error_only_and_no_port_hint(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capfd: pytest.CaptureFixture, stderr: list[str],
                                                             said: str) -> None:
    """Its informational lines are no reason why it stopped, and an error not about the port gets no port hint."""
    written = "".join(line + "\n" for line in stderr)
    stand_in(monkeypatch, f"import sys\nsys.stderr.write({written!r})\nsys.exit(3)\n")
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 1
    err = capfd.readouterr().err.splitlines()
    assert err[-2:] == [f"error: the Streamlit server stopped (exit code 3){said}", "hint: its own messages are above"]


def test_ctrl_c_stops_streamlit_once(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                    capfd: pytest.CaptureFixture) -> None:
    """Ctrl-C reaches Streamlit too (one process group), which stops on it in its own time: a SIGTERM sent at once
    made it stop again ("Stopping..." printed twice)."""
    started = stand_in(monkeypatch, "import signal, sys, time\n"
                                    "def stop(*_):\n    print('  Stopping...', flush=True)\n"
                                    "    time.sleep(0.5)\n    sys.exit(0)\n"
                                    "signal.signal(signal.SIGINT, stop)\nsignal.signal(signal.SIGTERM, stop)\n"
                                    "print('ready', flush=True)\ntime.sleep(30)\n")

    def ctrl_c() -> None:  # as a terminal's Ctrl-C: SIGINT to streamlit and to agentlab
        deadline = time.monotonic() + 20
        while not started and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # its handlers are set
        started[0].send_signal(signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ctrl_c)
    thread.start()
    begun = time.monotonic()
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 130
    thread.join()
    assert time.monotonic() - begun < 20
    assert capfd.readouterr().out.count("Stopping...") == 1


def test_a_sigint_to_agentlab_alone_still_stops_streamlit(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kill -INT PID` of agentlab: Streamlit did not get it, and is stopped after the wait (no hang)."""
    started = stand_in(monkeypatch, "import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    begun = time.monotonic()
    assert main(["ui", "--runs", "r", "--port", str(free_port())]) == 130
    assert time.monotonic() - begun < 20 and started[0].poll() is not None


def test_an_ipv6_host_is_bracketed_in_the_url(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """`--host ::1` printed http://::1:8607, which no browser opens."""
    try:
        port = free_port(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    stand_in(monkeypatch, "pass")
    assert main(["ui", "--runs", "r", "--host", "::1", "--port", str(port)]) == 0
    assert capsys.readouterr().err.splitlines()[0].startswith(f"agentlab ui on http://[::1]:{port} showing ")

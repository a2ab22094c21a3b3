"""A closed stdout pipe (`agentlab config show nas | head -0`, `models list --json | head -0`) exits 141 with no
traceback, as a closed stderr does: click's EPIPE handling exited 1, silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("args", [["config", "show", "nas"], ["models", "list", "--json"], ["--help"],
                                  ["models", "check", "--help"], ["--version"]])
def test_a_stdout_reader_gone_exits_141(args: list[str], in_tmp: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=in_tmp)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the process, still importing, writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "error" not in err and "interrupted" not in err


def test_an_epipe_of_another_pipe_is_not_taken_for_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only stdout's own broken pipe is a reader gone: another's (a subprocess's) stays the error it is."""
    import errno

    from agentlab.cli.common import stdout_closed_is_reader_gone

    with pytest.raises(BrokenPipeError), stdout_closed_is_reader_gone():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

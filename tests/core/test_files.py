"""agentlab.core.files: the reader every file the toolkit reads goes through."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agentlab.core.errors import InputError
from agentlab.core.files import read_json, read_text


def test_a_fifo_or_socket_is_refused_without_waiting(tmp_path: Path) -> None:
    """A FIFO was opened and waited on for a writer forever (`-c fifo.yaml`, `config validate fifo.yaml`)."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as exc:
        read_text(fifo, "config file")
    assert exc.value.message == f"{fifo}: is a pipe (FIFO), not a regular file; expected a config file"
    assert exc.value.exit_code == 2
    where = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(where))
        with pytest.raises(InputError, match="is a socket, not a regular file; expected a chat data file"):
            read_text(where, "chat data file")
    with pytest.raises(InputError, match="is a device, not a regular file"):
        read_text("/dev/null", "config file")
    with pytest.raises(InputError, match="is a directory, expected a config file"):  # as before
        read_text(tmp_path, "config file")


@pytest.mark.parametrize(("text", "says"), [
    ('{"a": 1,\n "b": "cut', "t.json:2: invalid JSON: Unterminated string starting at column 7"),
    ('{"a": }', "t.json:1: invalid JSON: Expecting value (column 7)")])
def test_invalid_json_says_where_in_a_whole_phrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                                   says: str) -> None:
    """A truncated file read `run.json:20: invalid JSON: Unterminated string starting at` (json's message leaves its
    place to the exception's text)."""
    monkeypatch.chdir(tmp_path)
    Path("t.json").write_text(text)
    with pytest.raises(InputError) as exc:
        read_json("t.json", "run.json")
    assert exc.value.message == says


def test_a_pipe_the_caller_streams_in_is_read_to_its_end(tmp_path: Path) -> None:
    """`pipeline run --input-file /dev/stdin` or `<(cmd)`: a pipe given as an input (``pipes=True``) is read, not
    refused as a config file in a pipe is."""
    import threading

    fifo = tmp_path / "input"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "w", encoding="utf-8") as out:
            out.write("the question\n")

    writer = threading.Thread(target=write)
    writer.start()
    assert read_text(fifo, "--input-file", pipes=True) == "the question\n"
    writer.join(5)

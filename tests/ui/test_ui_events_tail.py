"""The Events tab reads the end of events.jsonl, as much as the events it shows take: a file of 100 MB was parsed
whole on every render (27 s; a running run redraws every 2 s). What it says of unreadable lines stays true: counted
among the events shown, and said so when the earlier lines were not read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import run_folder

from agentlab.ui import runs


def _events(n: int) -> str:
    return "".join(json.dumps({"ts": 1767348000 + i, "kind": "epoch", "i": i, "pad": "x" * 200}) + "\n"
                   for i in range(n))


def test_only_the_end_of_a_long_events_file_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = run_folder(tmp_path / "runs", "nas", "20260102-100000-x")
    (path / "events.jsonl").write_text('{"kind": "tri\n' + _events(20000) + "[1]\n" + _events(3))  # ~4.6 MB
    parsed: list[int] = []
    real = json.loads

    def counting(text: Any, *a: Any, **k: Any) -> Any:
        parsed.append(1)
        return real(text, *a, **k)

    monkeypatch.setattr(runs.json, "loads", counting)
    rows, unread, whole = runs.event_table(path, limit=500)
    assert len(rows) == 500 and [r["data"] for r in rows[-3:]] == [json.dumps({"i": i, "pad": "x" * 200})
                                                                   for i in range(3)]
    assert json.loads(rows[0]["data"])["i"] == 20000 - 497  # in order, the oldest shown first
    assert (unread, whole) == (1, False)  # the `[1]` among them; the torn first line was not read
    assert len(parsed) < 1000


def test_a_short_events_file_is_read_whole_and_counts_every_unreadable_line(tmp_path: Path) -> None:
    path = run_folder(tmp_path / "runs", "nas", "20260102-100000-x")
    (path / "events.jsonl").write_bytes(b'{"kind": "tri\n' + _events(3).encode() + b"[1]\n\n\xff\xfe\n"
                                        + _events(2).encode() + b'{"kind": "ep')
    rows, unread, whole = runs.event_table(path, limit=500)
    # the torn first line, `[1]`, the bytes that are no UTF-8; the last line without its newline: the run completed
    assert (len(rows), unread, whole) == (5, 4, True)
    assert unread == runs.unreadable_lines(path / "events.jsonl", settled=True)


def test_the_events_caption_says_what_was_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("streamlit")
    from agentlab.ui import render

    path = run_folder(tmp_path / "runs", "nas", "20260102-100000-x")
    (path / "events.jsonl").write_text(_events(600) + "[1]\n" + _events(3))
    said: list[str] = []
    monkeypatch.setattr(render.st, "caption", lambda text, *a, **k: said.append(text))
    monkeypatch.setattr(render.st, "dataframe", lambda *a, **k: None)
    render.events_tab(path)
    assert said == ["the last 500 events of events.jsonl (the lines before them are not read); 1 line among them "
                    "could not be read (not a JSON object: torn by a crash, or edited) and is left out"]

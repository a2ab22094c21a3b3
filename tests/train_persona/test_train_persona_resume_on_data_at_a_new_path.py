"""A train-persona resume whose data file is at another path (a run folder copied to another machine, its data
elsewhere) went on without a word, while nas's said so in one line: now it says the same line (the file holds the data
the run started on: the sha256 of its first `data` event) and keeps the new path in config.yaml. Other content at a
new path is refused, as a changed setting is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.train.callbacks import ProgressCallback

FAST = ["--bsz", "1", "--grad-accum", "1", "--set", "data.max_length=128", "--set", "train.threads=1"]
LINE = '{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": "%s"}]}\n'


def train(tiny: Path, *args: str) -> int:
    return main(["train-persona", "--base-model", str(tiny), *FAST, *args])


def files_of(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}


def said(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def stop_after_step_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next training stops (a Ctrl-C) once it logged step 1."""
    original = ProgressCallback.on_log
    fired: list[int] = []

    def on_log(self: ProgressCallback, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        original(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == 1 and logs and "loss" in logs and not fired:
            fired.append(1)
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressCallback, "on_log", on_log)


def test_a_resume_on_the_same_data_at_a_new_path_says_so_and_keeps_the_path(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    data = in_tmp / "here" / "chats.jsonl"
    data.parent.mkdir()
    data.write_text(LINE % ("hi", "hello") + LINE % ("2 plus 2?", "4."))
    stop_after_step_1(monkeypatch)
    assert train(tiny_model["hf"], "--data", str(data), "--max-steps", "3", "--set", "train.save_steps=1",
                 "--run-dir", "run") == 130
    monkeypatch.undo()
    run = in_tmp / "run"
    moved = in_tmp / "elsewhere" / "copy.jsonl"
    moved.parent.mkdir()
    other = in_tmp / "elsewhere" / "other.jsonl"
    other.write_text(LINE % ("hi", "ahoy") + LINE % ("2 plus 2?", "Arr, 4."))
    shutil.move(data, moved)  # the run folder on another machine: the same bytes, another path
    before = files_of(run)
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run), "--data", str(other)]) == 2  # other content: refused
    err = said(capsys)
    assert f"data.path {str(data)!r} -> {str(other)!r}" in err and "nothing was written" in err, err
    assert "this one holds other data" in err and "(the same sha256)" not in err, err
    assert files_of(run) == before
    assert main(["train-persona", "--resume", str(run), "--data", str(moved)]) == 0
    err = said(capsys)
    assert err.count(f"data.path {moved} holds the data the run started on at {data} (the same sha256)") == 1, err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(moved)
    # the path kept: a resume of the finished run reads it without --data, and says nothing of a move
    assert main(["train-persona", "--resume", str(run)]) == 0
    err = said(capsys)
    assert "this run already trained its 3 steps" in err and "holds the data the run started on" not in err, err


def test_a_finished_run_resumed_on_its_data_at_a_new_path_is_not_refused(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    """A finished run refuses what a resume would not use; the data it trained on, at its new path, is no such
    option (a copied run folder's data is never at the old path)."""
    data = in_tmp / "chats.jsonl"
    data.write_text(LINE % ("hi", "hello"))
    assert train(tiny_model["hf"], "--data", str(data), "--max-steps", "1", "--run-dir", "run") == 0
    run = in_tmp / "run"
    moved = in_tmp / "moved.jsonl"
    shutil.move(data, moved)
    capsys.readouterr()
    assert main(["train-persona", "--resume", str(run), "--data", str(moved)]) == 0
    err = said(capsys)
    assert "this run already trained its 1 steps" in err and f"data.path {moved} holds the data" in err, err
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["path"] == str(moved)

"""A torn last line of a JSONL state file does not swallow the next line; a resume that did nothing and was undone
never leaves a dead owner's ``running`` behind; a resume that marked itself as having worked is recorded, not undone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.core import runs
from agentlab.core.errors import UsageError
from agentlab.core.runs import RunDir, durable_append, read_events


def test_an_append_after_a_torn_last_line_starts_a_line_of_its_own(in_tmp: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with RunDir.create("demo", out=in_tmp / "r") as run:
        run.event("trial", n=0)
    with open(in_tmp / "r" / "events.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"ts": 1, "kin')  # a kill in the middle of a write
    looked: list[str] = []
    last_byte = getattr(runs, "_last_byte", None)
    monkeypatch.setattr(runs, "_last_byte", lambda path: looked.append(str(path)) or last_byte(path), raising=False)
    with RunDir.open("demo", resume=str(in_tmp / "r")) as again:
        again.event("recovered", trials=[3])
        again.event("trial", n=1)
    # the torn line stays a line of its own, dropped by a reader; the events after it are whole
    assert [e["kind"] for e in read_events(in_tmp / "r")] == ["trial", "recovered", "trial"]
    assert (in_tmp / "r" / "events.jsonl").read_text().splitlines()[1] == '{"ts": 1, "kin'
    assert len(looked) == 1, "the file's end is read once per file per process, not on every append"


def test_durable_append_leaves_a_file_ending_a_line_and_a_new_file_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    durable_append(path, '{"a": 1}\n')
    durable_append(path, '{"a": 2}\n')
    path.write_text('{"a": 1}\n')  # written over by someone else: not as this process left it, looked at afresh
    durable_append(path, '{"a": 3}\n')
    assert path.read_text() == '{"a": 1}\n{"a": 3}\n'


def _killed_run(folder: Path) -> bytes:
    """A run whose process died without a word (SIGKILL): run.json says running, nobody holds its lock."""
    run = RunDir.create("demo", {"n": 1}, out=folder)
    run.event("trial", n=0)
    run.release()
    return (folder / "run.json").read_bytes()


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: UsageError("refused")])
def test_an_undone_resume_of_a_killed_run_leaves_it_interrupted_not_running(in_tmp: Path, stop: type) -> None:
    before = json.loads(_killed_run(in_tmp / "r"))
    assert before["status"] == "running"
    with pytest.raises((KeyboardInterrupt, UsageError)), RunDir.open("demo", resume=str(in_tmp / "r")):
        raise stop()
    after = json.loads((in_tmp / "r" / "run.json").read_text())
    assert after["status"] == "interrupted"  # not `running` with the dead process's pid
    assert {k: v for k, v in after.items() if k != "status"} == {k: v for k, v in before.items() if k != "status"}


def test_a_resume_stopped_after_it_marked_itself_as_working_is_recorded(in_tmp: Path) -> None:
    """A resume that changed the run's state (its study) before its first event, then Ctrl-C: its ``resumed`` entry
    and status stay in run.json (they were undone, as for a resume that did nothing)."""
    with RunDir.create("demo", {"n": 1}, out=in_tmp / "r") as run:
        run.event("trial", n=0)
    with pytest.raises(KeyboardInterrupt), RunDir.open("demo", resume=str(in_tmp / "r")) as again:
        again.mark_worked()
        raise KeyboardInterrupt
    info = json.loads((in_tmp / "r" / "run.json").read_text())
    assert info["status"] == "interrupted" and [r["previous_status"] for r in info["resumed"]] == ["completed"]
    assert "Ctrl-C" in info["error"]


def test_a_ctrl_c_while_a_new_run_folder_is_made_leaves_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the moment between the folder and its run.json (git's sha is asked for) left config.yaml and
    run.lock, and the same --out was then refused: "folder exists and is not empty"."""
    from agentlab.core import runs

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "_git_sha", interrupted)
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()  # a folder the user made: it stays, empty
        with pytest.raises(KeyboardInterrupt):
            runs.RunDir.create("nas", {"a": 1}, out=out)
        assert (out.is_dir() and not any(out.iterdir())) if out.name == "empty" else not out.exists()
    monkeypatch.undo()
    with runs.RunDir.create("nas", {"a": 1}, out=tmp_path / "new") as run:  # the same --out, at once
        assert run.info["status"] == "running"


def test_a_second_start_on_the_same_out_leaves_the_first_runs_files(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two starts given one --out, both past the emptiness check: the second ran without the lock, and a Ctrl-C or
    bad input then removed the first run's run.json, config.yaml and lock."""
    from agentlab.core.errors import RunDirError

    out = tmp_path / "shared"
    first = runs.RunDir.create("nas", {"a": 1}, out=out)
    monkeypatch.setattr(runs, "check_out_folder", lambda command, given, **kwargs: Path(given))
    with pytest.raises(RunDirError, match="another process is starting a run in this folder"):
        runs.RunDir.create("nas", {"a": 2}, out=out)
    assert {p.name for p in out.iterdir()} >= {"run.json", "config.yaml", "run.lock"}
    first.release()

"""``RunDir``'s public word on how a run ends before it recorded anything (``recorded``, ``created``,
``will_undo``): what its context manager then does, which a command that removes more with the run (evolve's
population in a store) asks instead of reading private state."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from agentlab.core.errors import AgentlabError, UsageError
from agentlab.core.runs import RunDir


@pytest.mark.parametrize("premade", [False, True], ids=["new-folder", "empty-out-folder"])
def test_a_new_run_says_whether_bad_input_undoes_it_and_does_so(in_tmp: Path, premade: bool) -> None:
    folder = in_tmp / "r"
    if premade:
        folder.mkdir()
    run = RunDir.create("demo", {"n": 1}, out=folder)
    assert run.created is not premade and not run.recorded
    bad = UsageError("bad input")
    assert run.will_undo(bad)
    assert not run.will_undo(AgentlabError("failed"))  # exit 1: kept, failed
    assert not run.will_undo(KeyboardInterrupt())  # kept, interrupted
    assert not run.will_undo(None)
    full = OSError(errno.ENOSPC, "No space left on device", str(folder / "events.jsonl"))
    assert not run.will_undo(full)  # the disk, not the input: kept for --resume
    with pytest.raises(UsageError), run:
        raise bad
    assert folder.exists() is premade and (not premade or list(folder.iterdir()) == [])


def test_a_run_that_recorded_or_a_resume_that_worked_is_never_undone(in_tmp: Path) -> None:
    run = RunDir.create("demo", {"n": 1}, out=in_tmp / "r")
    run.event("trial", n=0)
    assert run.recorded and not run.will_undo(UsageError("bad input"))
    run.finish("completed")
    again = RunDir.resume(in_tmp / "r", "demo")
    assert not again.recorded and again.will_undo(KeyboardInterrupt())  # a resume that did nothing goes back
    again.mark_worked()
    assert again.recorded and not again.will_undo(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), again:
        raise KeyboardInterrupt
    assert again.info["status"] == "interrupted" and len(again.info["resumed"]) == 1

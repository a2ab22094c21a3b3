"""The run's branch ``agentlab/<run>`` (nothing committed on it) goes however a search stops once it was made: a
stop right after it was made (a resume's ``| head`` closing the pipe as the workspaces line was said) left it in the
user's repo."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_own_project import git, make_project

from agentlab.cli import main
from agentlab.nas.workspace import Workspaces


def test_a_stop_right_after_the_branch_is_made_still_releases_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path)
    run = tmp_path / "runs" / "b"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 0
    assert git(project, "branch", "--list", "agentlab/*") == ""
    prepare = Workspaces.prepare

    def prepare_then_stop(self: Workspaces) -> str:
        prepare(self)  # the resume makes the branch again, then is stopped
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspaces, "prepare", prepare_then_stop)
    assert main(["nas", "--resume", str(run), "-n", "3"]) == 130
    assert git(project, "branch", "--list", "agentlab/*") == ""

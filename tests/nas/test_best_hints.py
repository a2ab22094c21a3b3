"""The command lines in nas's hints paste into a shell as they are: paths with spaces quoted."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from agentlab.core.errors import UsageError
from agentlab.nas.best import by_hand, kept_config, remember_base
from agentlab.nas.config_file import ConfigFile


def spaced(tmp_path: Path) -> tuple[Path, Path]:
    project, run = tmp_path / "my project", tmp_path / "runs b" / "r1"
    project.mkdir()
    run.mkdir(parents=True)
    (project / "config.py").write_text("lr = 0.1\n")
    remember_base(run, ConfigFile.load(project / "config.py"), project)
    return project, run


def test_the_patch_by_hand_quotes_paths_with_spaces(tmp_path: Path) -> None:
    project, run = spaced(tmp_path)
    line = by_hand(project, run)
    assert line == f"cd {shlex.quote(str(project))} && patch -p1 < {shlex.quote(str(run / 'best.patch'))}"
    assert shlex.split(line)[:2] == ["cd", str(project)]


def test_a_resume_after_the_config_was_edited_goes_on_with_its_kept_copy(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """It refused (before the stale worktrees of a kill were cleaned) with a `cp` hint that overwrote the edit."""
    project, run = spaced(tmp_path)
    assert kept_config(run) is None  # unchanged: the file itself
    (project / "config.py").write_text("lr = 0.2\n")
    assert kept_config(run) == run / "base" / "config.py"
    assert "was edited since the search started" in caplog.text and "your edit is not used" in caplog.text
    assert (project / "config.py").read_text() == "lr = 0.2\n"  # the edit stays
    (run / "base" / "config.py").unlink()
    with pytest.raises(UsageError, match="its copy as it started|as it started .* is gone too"):
        kept_config(run)

"""The command lines in nas's hints paste into a shell as they are: paths with spaces quoted."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from agentlab.core.errors import UsageError
from agentlab.nas.best import by_hand, remember_base, require_unchanged_config
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


def test_the_restore_hint_of_a_resume_quotes_paths_with_spaces(tmp_path: Path) -> None:
    project, run = spaced(tmp_path)
    (project / "config.py").write_text("lr = 0.2\n")
    with pytest.raises(UsageError) as caught:
        require_unchanged_config(run)
    command = caught.value.hint.split("restore it (", 1)[1].split(") and resume", 1)[0]
    assert shlex.split(command) == ["cp", str(run / "base" / "config.py"), str(project / "config.py")]

"""Links of the user's project in a trial's workspace: one pointing inside the project points at the workspace's copy
(the trial reads the file its values are written into), never at the user's file; the trial's values are never
written through a link into the user's tree; the console says which ignored files are copied and which linked."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.search.loop import TrialFailed
from agentlab.nas import workspace
from agentlab.nas.command import CommandObjective
from agentlab.nas.config import CommandObjectiveConfig
from agentlab.nas.config_file import ConfigFile
from agentlab.nas.workspace import Workspaces

TRAIN = ("import math, config\n"
         "print(f\"val_loss: {(math.log10(config.training['lr']) + 2.5) ** 2:.6f}\")\n")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout


def commit_all(project: Path) -> None:
    """``project`` a git repository with everything in it committed."""
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "start")


def linked_project(root: Path) -> Path:
    """A project whose config.py is a link to configs/exp1.py (a user's experiment switcher)."""
    project = root / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "exp1.py").write_text('training = {"lr": 0.01}\n')
    (project / "config.py").symlink_to("configs/exp1.py")
    (project / "train.py").write_text(TRAIN)
    return project


def test_a_link_inside_the_project_points_at_the_workspaces_copy_outside_git(tmp_path: Path) -> None:
    project = linked_project(tmp_path)
    (tmp_path / "data.csv").write_text("a,b\n")
    (project / "data.csv").symlink_to(tmp_path / "data.csv")  # a data set elsewhere: the user's, as it was
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "env").symlink_to(".venv")  # into what the copy leaves out: the user's
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    cwd = spaces.create(0)
    assert os.readlink(cwd / "config.py") == "configs/exp1.py"
    assert (cwd / "config.py").resolve() == (cwd / "configs" / "exp1.py").resolve()
    assert (cwd / "data.csv").resolve() == (tmp_path / "data.csv").resolve()
    assert (cwd / "env").resolve() == (project / ".venv").resolve()


def test_an_untracked_link_in_a_git_repository_points_at_the_worktrees_copy(tmp_path: Path) -> None:
    project = linked_project(tmp_path)
    (project / "config.py").unlink()
    commit_all(project)
    (project / "config.py").symlink_to("configs/exp1.py")  # untracked
    assert_reads_the_copy(project, tmp_path)


def assert_reads_the_copy(project: Path, tmp_path: Path) -> None:
    """A trial's workspace of ``project``: its config.py points, relative, at the workspace's configs/exp1.py."""
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    try:
        cwd = spaces.create(0)
        assert os.readlink(cwd / "config.py") == "configs/exp1.py"
        assert (cwd / "config.py").resolve() == (cwd / "configs" / "exp1.py").resolve()
    finally:
        spaces.cleanup()


def test_each_trial_runs_the_values_it_is_labelled_with_through_a_linked_config(tmp_path: Path) -> None:
    """The new user's case: config.py a link to configs/exp1.py outside git. Every trial ran the user's lr = 0.01
    (val_loss 0.25 each) while config_used.py said the searched lr."""
    project = linked_project(tmp_path)
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "config.py", "metric": "val_loss"},
        "search": {"pruner": "none", "space": {"training.lr": {"low": 0.0001, "high": 0.1, "log": True}}}}))
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(run)]) == 0
    for trial in sorted((run / "trials").iterdir()):
        used: dict = {}
        exec((trial / "config_used.py").read_text(), used)
        ran = float((trial / "stdout.log").read_text().split("val_loss:")[-1])
        assert ran == pytest.approx((math.log10(used["training"]["lr"]) + 2.5) ** 2, abs=1e-5)
    assert len({json.loads((t / "params.json").read_text())["training"]["lr"]
                for t in (run / "trials").iterdir()}) == 3
    assert (project / "configs" / "exp1.py").read_text() == 'training = {"lr": 0.01}\n'


@pytest.fixture
def small_link_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace, "LINK_FILES", 3)  # an ignored folder of more files is linked whole


def ignored_project(root: Path) -> Path:
    """A git project whose ignored big/ (linked whole) holds the config file, and whose ignored outputs/ is copied."""
    project = root / "project"
    (project / "big").mkdir(parents=True)
    for i in range(5):
        (project / "big" / f"f{i}").write_text("x")
    (project / "big" / "config.json").write_text('{"lr": 0.01}\n')
    (project / "outputs").mkdir()
    (project / "outputs" / "old.txt").write_text("x")
    (project / ".gitignore").write_text("big/\noutputs/\n")
    (project / "train.py").write_text("print('loss: 1')\n")
    commit_all(project)
    return project


def test_the_console_says_which_ignored_folders_are_copied_and_which_linked(tmp_path: Path,
                                                                            small_link_limit: None) -> None:
    spaces = Workspaces(ignored_project(tmp_path), tmp_path / "run" / "workspaces", "run")
    line = spaces.prepare()
    assert "1 ignored file(s) or folder(s) copied (outputs)" in line
    assert "1 ignored file(s) or folder(s) linked (big)" in line


def test_a_config_in_a_folder_linked_whole_is_never_written_into_the_users_file(tmp_path: Path,
                                                                                small_link_limit: None) -> None:
    """The trial's own check (the folder grew past the limit after the search started, say): the fix it names is to
    move the file, not to track it (git would then list the folder's files one by one: the whole data set copied
    into every worktree)."""
    project = ignored_project(tmp_path)
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    spec = CommandObjectiveConfig(command=f"{sys.executable} train.py", metric="loss")
    objective = CommandObjective(spec, cwd=project, trial_dir=lambda n: tmp_path / "run" / f"run_{n:04d}",
                                 space_keys=("lr",), config=ConfigFile.load(project / "big" / "config.json"),
                                 workspaces=spaces)
    try:
        with pytest.raises(TrialFailed, match=r"big/config.json lies in a folder the trial's workspace links to "
                           r"yours .*move the config file out of that folder") as failed:
            objective.run(0, {"lr": 0.5}, lambda step, value: False)
    finally:
        spaces.cleanup()
    assert "git add" not in str(failed.value)
    assert (project / "big" / "config.json").read_text() == '{"lr": 0.01}\n'


def test_a_config_in_a_folder_linked_whole_is_refused_before_trial_0(tmp_path: Path, small_link_limit: None,
                                                                     capsys: pytest.CaptureFixture) -> None:
    project = ignored_project(tmp_path)
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "big/config.json", "metric": "loss"},
        "search": {"space": {"lr": {"low": 0.001, "high": 0.1}}}}))
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(tmp_path / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"objective.config: {project / 'big' / 'config.json'} lies in {project / 'big'}, a folder git ignores" \
        in err
    assert "move the config file out of big/" in err and "git add" not in err
    assert not (tmp_path / "run").exists()


def test_a_config_linked_out_of_the_project_is_refused_naming_the_link(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """config.py a link to a file outside the project: refused before trial 0, as before, but the line named only
    the target (../elsewhere/exp1.py), which the user never typed, and said to give a file inside the project."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "elsewhere.py").write_text('training = {"lr": 0.01}\n')
    (project / "config.py").symlink_to("../elsewhere.py")
    (project / "train.py").write_text(TRAIN)
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "config.py", "metric": "val_loss"},
        "search": {"space": {"training.lr": {"low": 0.0001, "high": 0.1, "log": True}}}}))
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(tmp_path / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"objective.config: {project / 'config.py'} is a link to {tmp_path / 'elsewhere.py'}, outside the " \
        f"project folder {project}" in err
    assert "copy the file into the project" in err and not (tmp_path / "run").exists()


def test_a_config_through_a_linked_folder_or_an_absolute_link_out_of_the_project_is_refused_as_typed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Not only a link as the last part of a relative objective.config: a linked folder in the path (configs ->
    elsewhere), and an absolute objective.config, named as typed beside their target (the line said only the
    resolved path, or that the typed one was outside the project)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    (elsewhere / "configs").mkdir(parents=True)
    (elsewhere / "configs" / "a.py").write_text('training = {"lr": 0.01}\n')
    (project / "configs").symlink_to(elsewhere / "configs")
    (project / "config.py").symlink_to(elsewhere / "configs" / "a.py")
    (project / "train.py").write_text(TRAIN)
    for given, how, real in (("configs/a.py", "leads through a linked folder to", "configs/a.py"),
                             (str(project / "config.py"), "is a link to", "configs/a.py")):
        (project / "nas.yaml").write_text(yaml.safe_dump({
            "objective": {"command": f"{sys.executable} train.py", "config": given, "metric": "val_loss"},
            "search": {"space": {"training.lr": {"low": 0.0001, "high": 0.1, "log": True}}}}))
        assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(tmp_path / "run")]) == 2
        err = " ".join(capsys.readouterr().err.split())
        typed = given if given.startswith("/") else str(project / given)
        assert f"objective.config: {typed} {how} {elsewhere / real}, outside the project folder {project}" in err
        assert not (tmp_path / "run").exists()


def git_project(root: Path) -> Path:
    """A git project that ignores wandb/, out/ and .venv/ (out/ is copied into each worktree, the other two not)."""
    project = root / "project"
    (project / "wandb" / "run-1").mkdir(parents=True)
    (project / "wandb" / "run-1" / "files.txt").write_text("x")
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (project / "out").mkdir()
    (project / "out" / "latest").symlink_to("../wandb/run-1")  # a link inside a copied ignored folder
    (project / ".gitignore").write_text("wandb/\nout/\n.venv/\nmissing/\n")
    (project / "train.py").write_text("print('loss: 1')\n")
    commit_all(project)
    return project


def test_a_link_into_what_a_worktree_leaves_out_points_at_the_users(tmp_path: Path) -> None:
    """Made relative whatever they pointed at, these links of a git project led nowhere in the worktree (before,
    they pointed at the user's file and worked)."""
    project = git_project(tmp_path)
    (project / "latest").symlink_to("wandb/run-1")  # untracked, into wandb/ (never carried)
    (project / "py").symlink_to(".venv/bin")
    (project / "gone").symlink_to("missing/run-9")  # leads nowhere in the user's tree either: as it is
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    try:
        cwd = spaces.create(0)
        for name, theirs in (("latest", "wandb/run-1"), ("out/latest", "wandb/run-1"), ("py", ".venv/bin")):
            assert os.readlink(cwd / name) == str((project / theirs).resolve()), name
        assert os.readlink(cwd / "gone") == "missing/run-9"
    finally:
        spaces.cleanup()


def test_a_link_into_a_folder_linked_whole_reads_the_users_files(tmp_path: Path, small_link_limit: None) -> None:
    project = ignored_project(tmp_path)
    (project / "current").symlink_to("big/f1")  # untracked, into big/ (linked whole)
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    try:
        cwd = spaces.create(0)
        assert (cwd / "current").resolve() == (project / "big" / "f1").resolve()
    finally:
        spaces.cleanup()


def test_a_tracked_absolute_link_into_the_repository_points_at_the_worktrees_copy(tmp_path: Path) -> None:
    """git checks a tracked link out as stored: config.py -> /abs/project/configs/exp1.py read the user's file, the
    trial's values written into the worktree's copy (exit 0, results labelled with values that never ran)."""
    project = linked_project(tmp_path)
    (project / "config.py").unlink()
    (project / "config.py").symlink_to(project / "configs" / "exp1.py")
    commit_all(project)
    assert_reads_the_copy(project, tmp_path)


def test_link_loops_are_left_out_of_a_worktree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An untracked loop1 -> loop2 -> loop1 made prepare raise RuntimeError (an internal error)."""
    project = git_project(tmp_path)
    (project / "loop1").symlink_to("loop2")
    (project / "loop2").symlink_to("loop1")
    (project / "out" / "self").symlink_to("self")  # in a copied ignored folder
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run")
    spaces.prepare()
    try:
        cwd = spaces.create(0)
        assert not (cwd / "loop1").is_symlink() and (cwd / "train.py").is_file()
    finally:
        spaces.cleanup()
    assert "loop1 is a link loop" in caplog.text


def test_a_link_to_what_the_patterns_leave_out_points_at_the_users(tmp_path: Path) -> None:
    """objective.workspace's patterns leave configs/ out: config.yaml -> configs/base.yaml led nowhere; the
    objective's config file, which each trial writes, is still pointed at in the workspace."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "configs" / "base.yaml").write_text("lr: 0.01\n")
    (project / "configs" / "exp.yaml").write_text("lr: 0.01\n")
    (project / "config.yaml").symlink_to("configs/base.yaml")
    (project / "exp.yaml").symlink_to("configs/exp.yaml")
    (project / "train.py").write_text("print('loss: 1')\n")
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "run", patterns=["*.py", "config.yaml", "exp.yaml"],
                        config=project / "configs" / "exp.yaml")
    spaces.prepare()
    cwd = spaces.create(0)
    assert os.readlink(cwd / "config.yaml") == str((project / "configs" / "base.yaml").resolve())
    assert os.readlink(cwd / "exp.yaml") == "configs/exp.yaml"  # the trial writes configs/exp.yaml here

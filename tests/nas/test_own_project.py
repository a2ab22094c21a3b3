"""`agentlab nas` on a project as it is: a git repository with a config.py and a script printing text. After any
search (finished, failed, Ctrl-C, kill -9 then --resume) the user's files are byte-identical, HEAD and status are
unchanged and git lists the user's worktree alone; best/ reproduces the best metric and `nas apply` writes it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main

CONFIG = '''\
"""Settings of train.py (a user's config module)."""
training = {
    "lr": 0.01,  # learning rate
    "epochs": 3,
}
model = dict(width=8)
'''
TRAIN = '''\
import math, os, time
import config
time.sleep(float(os.environ.get("SLOW", "0")))
lr, width = config.training["lr"], config.model["width"]
for epoch in range(1, config.training["epochs"] + 1):
    loss = (math.log10(lr) + 2.5) ** 2 + 1 / width + 1 / epoch
    print(f"epoch {epoch}: val_loss={loss:.6f}", flush=True)
open("model.pt", "wb").write(str(loss).encode())  # a checkpoint in the workspace
print(f"val_loss: {loss:.6f} test_mse: {loss * 1.1:.6f}")
'''


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def make_project(root: Path, *, space: dict | None = None) -> Path:
    project = root / "project"
    project.mkdir(parents=True)
    (project / "config.py").write_text(CONFIG)
    (project / "train.py").write_text(TRAIN)
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "config": "config.py", "metric": "val_loss"},
        "search": {"pruner": "none", "space": space or {"training.lr": {"low": 0.0001, "high": 0.1, "log": True},
                                                        "model.width": {"choices": [4, 8, 16, 32]}}}}))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "project")
    (project / "notes.txt").write_text("an untracked file of the user's\n")
    with open(project / "train.py", "a") as fh:
        fh.write("# an uncommitted edit\n")
    return project


def snapshot(project: Path) -> dict[str, object]:
    files = {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(project.rglob("*")) if p.is_file() and ".git" not in p.relative_to(project).parts}
    return {"files": files, "head": git(project, "rev-parse", "HEAD"), "status": git(project, "status", "--porcelain"),
            "worktrees": git(project, "worktree", "list", "--porcelain").count("worktree ")}


def test_a_finished_search_leaves_the_project_as_it_was_and_best_reproduces(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path)
    before = snapshot(project)
    run = tmp_path / "runs" / "a"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "5", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    assert "git worktree of" in said and "uncommitted changes" in said and "1 untracked file" in said
    assert snapshot(project) == {**before, "worktrees": 1}
    results = json.loads((run / "results.json").read_text())
    best = results["best"]
    assert best["metrics"]["test_mse"] > 0  # every metric the script printed
    assert "test_mse" in (run / "report.md").read_text()
    assert {"config.py", "command.txt", "params.json"} <= {p.name for p in (run / "best").iterdir()}
    # the learning curves, and the best trial's checkpoint alone
    assert (run / "learning_curves.png").is_file() and "learning_curves.png" in (run / "report.md").read_text()
    assert len(json.loads((run / "trials" / "run_0000" / "history.json").read_text())) == 3
    kept = sorted(p.parent.name for p in (run / "trials").glob("*/checkpoint"))
    assert kept == [best["run_id"]]
    assert (run / "trials" / best["run_id"] / "checkpoint" / "model.pt").read_text().startswith(
        str(best["val_loss"])[:4])
    # best/ put into the project gives the best metric again
    mode = (project / "config.py").stat().st_mode
    assert main(["nas", "apply", str(run)]) == 0
    assert (project / "config.py").stat().st_mode == mode
    assert (project / "config.py").read_text() == (run / "best" / "config.py").read_text()
    assert "# learning rate" in (project / "config.py").read_text()
    again = subprocess.run([sys.executable, "train.py"], cwd=project, capture_output=True, text=True, check=True)
    assert f"val_loss: {best['val_loss']:.6f}" in again.stdout
    git(project, "checkout", "-q", "config.py")
    assert git(project, "apply", "--check", str(run / "best.patch")) == ""


def test_apply_writes_the_best_values_into_an_edited_file_or_names_the_edited_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An edit of the config file since the search was refused with `patch -p1 < best.patch`, which fails on a small
    file (its context lines hold the edit): the best values are written in place, the other edits kept; a searched
    value the user edited too is refused naming its line and both values."""
    project = make_project(tmp_path)
    run = tmp_path / "runs" / "a"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(run)]) == 0
    best = json.loads((run / "results.json").read_text())["best"]["params"]
    edited = CONFIG.replace('"epochs": 3,', '"epochs": 4,  # my edit')
    (project / "config.py").write_text(edited)
    capsys.readouterr()
    assert main(["nas", "apply", str(run)]) == 0
    said = capsys.readouterr()
    out = " ".join((said.out + said.err).split())
    assert "in place into your edited file (your other edits kept)" in out
    namespace: dict = {}
    exec((project / "config.py").read_text(), namespace)  # noqa: S102 - the test's own file
    assert namespace["training"] == {"lr": best["training.lr"], "epochs": 4}
    assert namespace["model"] == {"width": best["model.width"]} and "# my edit" in (project / "config.py").read_text()
    assert main(["nas", "apply", str(run)]) == 0  # again: already there
    mine = edited.replace('"lr": 0.01,', '"lr": 0.02,')
    (project / "config.py").write_text(mine)
    capsys.readouterr()
    assert main(["nas", "apply", str(run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"config.py:3: training.lr was edited since the search started (0.01 -> 0.02), and the best trial's "
            f"value is {best['training.lr']!r}: nothing written") in err
    assert "patch" not in err and "git apply" not in err
    assert (project / "config.py").read_text() == mine
    assert main(["nas", "apply", str(tmp_path)]) == 2  # not a run folder


def test_a_failed_search_leaves_the_project_as_it_was(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "train.py").write_text("raise SystemExit('broken')\n")
    before = snapshot(project)
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(tmp_path / "run")]) != 0
    assert snapshot(project) == before


def test_a_key_the_config_file_lacks_is_refused_before_trial_0(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path, space={"training.lrr": {"low": 0.1, "high": 1.0}})
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "config.py:2: no 'training.lrr'" in err and "Traceback" not in err


def start(project: Path, args: list[str], log: Path, slow: str) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "agentlab.cli", *args], cwd=project.parent, stdout=handle,
                                stderr=subprocess.STDOUT, env={**os.environ, "SLOW": slow}, preexec_fn=_ctrl_c)


def _ctrl_c() -> None:
    """In the child: SIGINT handled as from a terminal (an xdist worker's children inherit it ignored, and Python
    then raises no KeyboardInterrupt: a Ctrl-C test would pass without one)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_a_workspace(run: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while not list((run / "workspaces").glob("trial_0001")):
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    time.sleep(0.3)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_then_resumed_leaves_the_project_as_it_was(tmp_path: Path, sig: signal.Signals,
                                                               capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path)
    before = snapshot(project)
    run, log = tmp_path / "run", tmp_path / "agentlab.log"
    proc = start(project, ["nas", "-c", str(project / "nas.yaml"), "-n", "4", "--out", str(run)], log, "2")
    wait_for_a_workspace(run, proc, log)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == (130 if sig == signal.SIGINT else -signal.SIGKILL), log.read_text()[-2000:]
    if sig == signal.SIGINT:  # Ctrl-C: cleaned up at once, and a partial report of what finished written
        assert snapshot(project) == {**before, "worktrees": 1}
        partial = json.loads((run / "results.json").read_text())
        assert partial["partial"] is True and partial["stop_reason"].startswith("interrupted: a partial report")
        assert "Stopped: interrupted: a partial report of the trials finished so far" in (run / "report.md").read_text()
        assert not (run / "best").exists()  # written at the search's end
    else:  # kill -9 leaves git's registration of the running trial's worktree: --resume removes it
        assert snapshot(project)["worktrees"] == 2
        # the user edits the config file meanwhile: the resume was refused, the worktree and branch left in the
        # repository; it goes on with the file as the search started, the edit left as it is
        (project / "config.py").write_text(CONFIG.replace('"epochs": 3,', '"epochs": 1,'))
        before = {**snapshot(project), "worktrees": 1}
    # the interrupted trial runs again first and counts: a total of the finished trial alone would run 2 for 1
    capsys.readouterr()
    assert main(["nas", "--resume", str(run), "-n", "1"]) == 2
    assert "--max-iterations 1 leaves no place for run_0001, which this search was running when it stopped (a " \
        "resume runs it again first); 1 finished" in " ".join(capsys.readouterr().err.split())
    proc = start(project, ["nas", "--resume", str(run)], log, "0")
    assert proc.wait(timeout=120) == 0, log.read_text()[-2000:]
    assert snapshot(project) == {**before, "worktrees": 1}
    assert json.loads((run / "results.json").read_text())["states"] == {"complete": 4}
    assert "partial" not in json.loads((run / "results.json").read_text())
    assert not list((run / "workspaces").glob("trial_*"))
    if sig == signal.SIGKILL:
        assert "config.py was edited since the search started" in log.read_text()
        assert {len(json.loads((t / "history.json").read_text())) for t in (run / "trials").iterdir()} == {3}


def test_data_beside_an_objective_is_refused_not_ignored(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path)
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--data", "missing.csv",
                 "--out", str(tmp_path / "run")]) == 2
    assert "--data missing.csv: data.path: not used when objective:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # on a resume the run's saved config.yaml (its data: section, the defaults) was blamed, at its line 3
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "1", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["nas", "--resume", str(tmp_path / "run"), "-n", "2", "--data", "missing.csv"]) == 2
    assert "error: --data missing.csv: data.path: not used when objective:" in capsys.readouterr().err


def test_set_reaches_a_dotted_space_key(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--set", "search.space.training.lr.low=0.005",
                 "--out", str(run)]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["search"]["space"]["training.lr"]["low"] == 0.005 and "training" not in saved["search"]["space"]


def test_set_of_part_of_a_range_for_a_near_miss_of_a_space_key_suggests_that_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`--set search.space.alpah.low=0.5` (alpha's typo) said only "give choices, or both low and high"."""
    from pydantic import ValidationError

    from agentlab.nas.config import SearchConfig

    project = make_project(tmp_path)
    assert main(["nas", "-c", str(project / "nas.yaml"), "--set", "search.space.training.lrr.low=0.005",
                 "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "search.space.training.lrr: no such key in the space" in err and "(did you mean search.space.training.lr?)" \
        in err and "Traceback" not in err
    with pytest.raises(ValidationError, match=r"search.space.alpah: .*did you mean search.space.alpha\?"):
        SearchConfig.model_validate({"space": {"alpha": {"low": 1, "high": 2}, "alpah": {"low": 0.5}}})
    # a new key near no other, and a whole new range, are what they were
    with pytest.raises(ValidationError, match="give choices, or both low and high"):
        SearchConfig.model_validate({"space": {"alpha": {"low": 1, "high": 2}, "momentum": {"low": 0.5}}})
    assert "alpah" in SearchConfig.model_validate({"space": {"alpha": {"low": 1, "high": 2},
                                                             "alpah": {"low": 0.5, "high": 1}}}).space


def test_the_summary_and_report_say_the_change_against_the_base_in_the_metrics_direction(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    project = make_project(tmp_path)
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "5", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    said = captured.out + captured.err
    results = json.loads((run / "results.json").read_text())
    base, best = results["base"]["val_loss"], results["best"]["val_loss"]
    assert best < base and f"({(best - base) / base:+.1%}, lower is better)" in said  # the number moved down
    report = (run / "report.md").read_text()
    assert "Changes are against the base params" in report and "| other metrics |" in report


def test_the_first_lines_say_nas_searches_your_own_training_command() -> None:
    from typer.testing import CliRunner

    from agentlab.cli import app

    runner = CliRunner()
    assert "your own training command" in runner.invoke(app, ["--help"], terminal_width=200).output
    assert "your own training command" in runner.invoke(app, ["nas", "--help"], terminal_width=200).output
    root = Path(__file__).resolve().parents[2]
    for page in ("README.md", "docs/index.md"):
        head = " ".join((root / page).read_text(encoding="utf-8").split("\n\n")[1].split())
        assert "your own training command" in head, page


def test_a_relative_out_from_another_folder_still_makes_worktrees_outside_the_tree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path)
    before = snapshot(project)
    monkeypatch.chdir(tmp_path)
    assert main(["nas", "-c", "project/nas.yaml", "-n", "3", "--out", "runs/rel"]) == 0
    assert json.loads((tmp_path / "runs" / "rel" / "results.json").read_text())["states"] == {"complete": 3}
    assert snapshot(project) == before


def test_crlf_and_latin1_edits_a_gitignored_data_folder_and_a_run_name_with_a_space(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "notes.txt").unlink()
    (project / "crlf.txt").write_bytes(b"a\r\nb\r\n")
    (project / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (project / ".gitignore").write_text("data/\n")
    git(project, "add", "-A")
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "more")
    (project / "crlf.txt").write_bytes(b"a\r\nc\r\n")
    (project / "latin.txt").write_bytes("na\xefve\n".encode("latin-1"))
    (project / "data").mkdir()
    (project / "data" / "train.csv").write_text("x\n1\n")
    with open(project / "train.py", "a") as fh:
        fh.write("assert open('data/train.csv').read() == 'x\\n1\\n'\n"
                 "assert open('crlf.txt', 'rb').read() == b'a\\r\\nc\\r\\n'\n")
    before = snapshot(project)
    run = tmp_path / "runs" / "try 1"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(run)]) == 0
    assert json.loads((run / "results.json").read_text())["states"] == {"complete": 3}
    assert snapshot(project) == before
    assert json.loads((run / "workspaces" / "workspace.json").read_text())["branch"] == "agentlab/try-1"
    assert git(project, "branch", "--list", "agentlab/*") == ""  # nothing committed on it: gone at the end
    assert "(branch agentlab/try-1, deleted at the end: nothing was committed on it)" in (run / "report.md").read_text()


def test_resume_after_head_moved_runs_the_commit_the_search_started_from(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    run, log = tmp_path / "run", tmp_path / "agentlab.log"
    proc = start(project, ["nas", "-c", str(project / "nas.yaml"), "-n", "4", "--out", str(run)], log, "2")
    wait_for_a_workspace(run, proc, log)
    proc.kill()
    proc.wait(timeout=30)
    (project / "train.py").write_text(TRAIN.replace("+ 1 / epoch", "+ 100"))  # the user's next version
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "the user moves on")
    proc = start(project, ["nas", "--resume", str(run)], log, "0")
    assert proc.wait(timeout=120) == 0, log.read_text()[-2000:]
    results = json.loads((run / "results.json").read_text())
    assert results["states"] == {"complete": 4}
    values = [json.loads((t / "history.json").read_text())[-1]["val_loss"] for t in sorted((run / "trials").iterdir())]
    assert max(values) < 50, values  # every trial ran the commit the search started from, not the new one
    assert git(project, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_the_base_config_is_never_rewritten_and_apply_keeps_the_files_mode(tmp_path: Path) -> None:
    project = make_project(tmp_path, space={"model.width": {"choices": [8, 1]}})  # the base (8) is best
    (project / "config.py").write_text(CONFIG.replace("0.01", "1e-2"))
    os.chmod(project / "config.py", 0o640)
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 0
    assert (run / "trials" / "run_0000" / "config_used.py").read_text() == CONFIG.replace("0.01", "1e-2")
    assert json.loads((run / "results.json").read_text())["best"]["run_id"] == "run_0000"
    assert not (run / "best.patch").exists()  # no change: no patch (`git apply` refuses an empty one)
    assert main(["nas", "apply", str(run)]) == 0  # already the best config: nothing written
    assert (project / "config.py").stat().st_mode & 0o777 == 0o640


def test_objective_params_constants_are_not_written_back_only_the_searched_keys(tmp_path: Path) -> None:
    """objective.params `training.epochs: 1` (cheaper trials) went into best/config.py, best.patch and `nas apply`
    with the searched width: only the searched keys are written back, as for a Hydra app."""
    project = make_project(tmp_path, space={"model.width": {"choices": [8, 32]}})
    spec = yaml.safe_load((project / "nas.yaml").read_text())
    spec["objective"]["params"] = {"training": {"epochs": 1}}
    (project / "nas.yaml").write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--planner", "random", "--out", str(run)]) == 0
    assert '"epochs": 1,' in (run / "trials" / "run_0001" / "config_used.py").read_text()  # the trials ran epochs 1
    assert json.loads((run / "results.json").read_text())["best"]["run_id"] == "run_0001"
    assert (run / "best" / "config.py").read_text() == CONFIG.replace("width=8", "width=32")
    assert '"epochs": 1' not in (run / "best.patch").read_text()
    assert main(["nas", "apply", str(run)]) == 0
    assert (project / "config.py").read_text() == CONFIG.replace("width=8", "width=32")


def test_a_space_smaller_than_the_budget_stops_with_every_configuration_tried_and_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """2 configurations with -n 4 ended with exit 1 ("tpe: no valid, untried parameters in 30 draws"), no
    results.json, report.md or best/, and `nas apply` said the search had no successful trial."""
    project = make_project(tmp_path, space={"model.width": {"choices": [8, 32]}})
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "4", "--out", str(run)]) == 0
    assert "stopped: every configuration of the search space was tried" in capsys.readouterr().err
    assert json.loads((run / "results.json").read_text())["trials"] == 2 and (run / "report.md").is_file()
    assert main(["nas", "--resume", str(run), "-n", "5"]) == 0
    assert "every configuration of the search space was tried" in capsys.readouterr().err
    assert main(["nas", "apply", str(run)]) == 0
    assert "width=32" in (project / "config.py").read_text()


def test_a_trial_writing_into_ignored_folders_never_touches_the_users_files(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / ".gitignore").write_text("*.pt\ncheckpoints/\noutputs/\n")
    git(project, "add", ".gitignore")
    git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "ignore outputs")
    (project / "model.pt").write_bytes(b"the user's own weights")
    (project / "checkpoints").mkdir()
    (project / "outputs").mkdir()
    (project / "outputs" / "old.txt").write_text("an earlier run's output\n")
    with open(project / "train.py", "a") as fh:
        fh.write("open('checkpoints/last.pt', 'wb').write(b'w')\nopen('outputs/new.txt', 'w').write('x')\n")
    before = snapshot(project)
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "3", "--out", str(run)]) == 0
    assert snapshot(project) == before and (project / "model.pt").read_bytes() == b"the user's own weights"
    best = json.loads((run / "results.json").read_text())["best"]["run_id"]
    kept = {p.relative_to(run / "trials" / best / "checkpoint").as_posix()
            for p in (run / "trials" / best / "checkpoint").rglob("*") if p.is_file()}
    assert kept == {"model.pt", "checkpoints/last.pt"}


def test_untracked_files_are_taken_as_the_search_started(tmp_path: Path) -> None:
    """An untracked module edited while the search runs (or before --resume) does not change what later trials run:
    the untracked files are kept once, like the uncommitted patch."""
    project = make_project(tmp_path)
    (project / "extra.py").write_text("BONUS = 0\n")
    with open(project / "train.py", "a") as fh:
        fh.write("import extra\nassert extra.BONUS == 0, 'a later edit reached the trial'\n")
    run, log = tmp_path / "run", tmp_path / "agentlab.log"
    proc = start(project, ["nas", "-c", str(project / "nas.yaml"), "-n", "4", "--out", str(run)], log, "1")
    wait_for_a_workspace(run, proc, log)
    (project / "extra.py").write_text("BONUS = 1\n")  # the user edits on
    assert proc.wait(timeout=120) == 0, log.read_text()[-2000:]
    assert json.loads((run / "results.json").read_text())["states"] == {"complete": 4}


def test_outside_git_a_resume_runs_the_files_as_the_search_started(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """A project outside git is copied once at the start (workspaces/project/): a resume after the user edited the
    script runs the script the search started with, and one after the config file changed the config file as it
    started (it was refused, with a `cp` hint that overwrote the edit); the apply of an interrupted search says that
    it was interrupted."""
    project = make_project(tmp_path)
    subprocess.run(["rm", "-rf", str(project / ".git")], check=True)
    run, log = tmp_path / "run", tmp_path / "agentlab.log"
    proc = start(project, ["nas", "-c", str(project / "nas.yaml"), "-n", "4", "--out", str(run)], log, "2")
    wait_for_a_workspace(run, proc, log)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()[-2000:]
    assert (run / "workspaces" / "project" / "train.py").read_text() == TRAIN + "# an uncommitted edit\n"
    assert main(["nas", "apply", str(run)]) == 2
    assert "the search was interrupted before its end" in capsys.readouterr().err
    (project / "train.py").write_text(TRAIN.replace("+ 1 / epoch", "+ 100"))  # the user's next version
    edited = CONFIG.replace('"epochs": 3,', '"epochs": 1,')  # trials on it would print one epoch
    (project / "config.py").write_text(edited)
    proc = start(project, ["nas", "--resume", str(run)], log, "0")
    assert proc.wait(timeout=120) == 0, log.read_text()[-2000:]
    assert "config.py was edited since the search started" in log.read_text()
    assert (project / "config.py").read_text() == edited
    assert json.loads((run / "results.json").read_text())["states"] == {"complete": 4}
    values = [json.loads((t / "history.json").read_text())[-1]["val_loss"] for t in sorted((run / "trials").iterdir())]
    assert max(values) < 50, values  # every trial ran train.py as the search started
    assert {len(json.loads((t / "history.json").read_text())) for t in (run / "trials").iterdir()} == {3}


def test_apply_names_a_missing_folder_and_a_best_that_is_the_start(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["nas", "apply", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: does not exist" in capsys.readouterr().err
    project = make_project(tmp_path, space={"model.width": {"choices": [8, 1]}})  # the base (8) is best
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 0
    with open(project / "config.py", "a") as fh:
        fh.write("# moved on\n")
    edited = (project / "config.py").read_text()
    capsys.readouterr()
    # an edit of what was not searched: the file holds the best values already (the start's), nothing to write
    assert main(["nas", "apply", str(run)]) == 0
    said = capsys.readouterr()
    assert "config.py: already holds the best values (your edits kept): nothing to write" in said.err + said.out
    assert (project / "config.py").read_text() == edited
    (project / "config.py").write_text(edited.replace("width=8", "width=1"))  # a searched value edited: refused
    assert main(["nas", "apply", str(run)]) == 2
    err = capsys.readouterr().err
    assert "the best trial's version is the one the search started from" in err and "git apply" not in err


READS_BESIDE = '''\
import argparse, sys
p = argparse.ArgumentParser()
p.add_argument("--data", default="../data/scale.txt")
p.add_argument("--lr", type=float, default=0.1)
a = p.parse_args()
scale = float(open(a.data).read())
print(f"val_loss: {scale * a.lr:.4f}")
'''


@pytest.mark.parametrize("in_git", [True, False], ids=["git", "copy"])
def test_a_relative_path_out_of_the_project_reaches_the_users_file(
        tmp_path: Path, capsys: pytest.CaptureFixture, in_git: bool) -> None:
    """`--data ../data/x` on the command line names a file beside the project: each trial's workspace is a copy
    elsewhere, so the trial gets the path absolute (said once); read by the script itself, the failure says why."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scale.txt").write_text("2.0\n")
    (project / "train.py").write_text(READS_BESIDE)
    if in_git:
        git(project, "init", "-q")
        git(project, "add", "-A")
        git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "project")
    (project / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py --data=../data/scale.txt {{args}}", "metric": "val_loss",
                      "params": {"lr": 0.1}},
        "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}}))
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(tmp_path / "run")]) == 0
    assert "paths out of the project, given absolute to each trial: --data=../data/scale.txt -> --data=" \
        f"{tmp_path / 'data' / 'scale.txt'}" in " ".join(capsys.readouterr().err.split())
    assert json.loads((tmp_path / "run" / "results.json").read_text())["base"]["val_loss"] == 0.2
    (project / "nas.yaml").write_text((project / "nas.yaml").read_text().replace("--data=../data/scale.txt ", ""))
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "1", "--out", str(tmp_path / "run2")]) == 1
    assert "No such file or directory: '../data/scale.txt' | (a relative path out of the project" in " ".join(
        capsys.readouterr().err.split())


def test_a_resume_whose_study_is_gone_is_refused_and_nothing_runs_again(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """Without its study.db a resume opened a new, empty study and ran every finished trial again."""
    project = make_project(tmp_path)
    run = tmp_path / "run"
    assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(run)]) == 0
    (run / "study.db").unlink()
    events = (run / "events.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["nas", "--resume", str(run), "-n", "3"]) == 2
    assert f"{run / 'study.db'}: the study of {run} is missing (it holds the 2 trial(s) the run finished)" in \
        " ".join(capsys.readouterr().err.split())
    assert (run / "events.jsonl").read_bytes() == events and not (run / "study.db").exists()


def test_the_resume_budget_counts_the_studys_unfinished_trials_and_names_whose(tmp_path: Path) -> None:
    """The total is the study's: every unfinished trial ends counted, this run's interrupted one (its folder under
    trials/) and another worker's of a shared study; the refusal says which is which. Nothing is created."""
    import optuna

    from agentlab.core.errors import UsageError
    from agentlab.nas.run import require_budget

    run = tmp_path / "run"
    (run / "trials" / "run_0001").mkdir(parents=True)
    (run / "agent_state.json").write_text(json.dumps({"runs": [{"run_id": "run_0000", "state": "complete"}]}))
    study = optuna.create_study(study_name="nas", storage=f"sqlite:///{run / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    for _ in range(3):  # run_0001 (this run's, interrupted), run_0002 and run_0003 (other workers')
        study.ask()
    # this run's too, stopped before its trial folder was made: its plan names the run (it was "another worker's")
    study.ask().set_user_attr("plan", {"run_dir": str(run)})
    require_budget(run, 5)
    with pytest.raises(UsageError) as info:
        require_budget(run, 4)
    assert info.value.message == ("--max-iterations 4 leaves no place for run_0001, run_0004, which this search was "
                                  "running when it stopped (a resume runs it again first); run_0002, run_0003, "
                                  "unfinished in the study (another worker's); 1 finished, and each of these counts "
                                  "when it ends")
    fresh = tmp_path / "fresh"
    (fresh / "trials").mkdir(parents=True)
    (fresh / "agent_state.json").write_text(json.dumps({"runs": []}))
    require_budget(fresh, 3)
    assert sorted(p.name for p in fresh.iterdir()) == ["agent_state.json", "trials"]  # no study.db made


READS_OVERRIDES = '''\
import sys
given = dict(word.split("=", 1) for word in sys.argv[1:])
scale = float(open(given["data"]).read())
print(f"val_loss: {scale * float(given['lr']):.4f}")
'''


def test_a_relative_path_in_a_key_value_word_reaches_the_users_file(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """Hydra's `data=../data/x` (a word of the command, or a param through {overrides}) named a file beside the
    trial's workspace (`--data=../x` was made absolute, `data=../x` was not)."""
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scale.txt").write_text("2.0\n")
    (project / "train.py").write_text(READS_OVERRIDES)
    for number, (command, params) in enumerate([
            (f"{sys.executable} train.py data=../data/scale.txt {{overrides}}", {"lr": 0.1}),
            (f"{sys.executable} train.py {{overrides}}", {"lr": 0.1, "data": "../data/scale.txt"})]):
        (project / "nas.yaml").write_text(yaml.safe_dump({
            "objective": {"command": command, "metric": "val_loss", "params": params},
            "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}}))
        out = tmp_path / f"run{number}"
        assert main(["nas", "-c", str(project / "nas.yaml"), "-n", "2", "--out", str(out)]) == 0, \
            capsys.readouterr().err
        assert json.loads((out / "results.json").read_text())["base"]["val_loss"] == 0.2
        err = " ".join(capsys.readouterr().err.split())
        assert ("paths out of the project, given absolute to each trial: data=../data/scale.txt -> data="
                f"{tmp_path / 'data' / 'scale.txt'}" in err) == (number == 0), err

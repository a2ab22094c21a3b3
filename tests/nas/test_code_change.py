"""Code changes (issue 60): the edit checks, the diff, the protected files' digest, the versions and their commits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentlab.core.search.records import TrialRecord
from agentlab.nas.code_agent import CodeSearch, chain_of
from agentlab.nas.code_change import (
    Change,
    ChangeError,
    CodeRules,
    CodeTrials,
    Edit,
    apply,
    check,
    commit_version,
    digest,
    glob_regex,
    rewritten,
)


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "model").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "train.py").write_text("lr = 0.1\nx = lr * 2\nprint(x)\n")
    (root / "model" / "net.py").write_text("WIDTH = 4\n")
    (root / "eval.py").write_text("print('eval')\n")
    (root / "data" / "d.csv").write_text("a,b\n1,2\n")
    return root


def test_globs() -> None:
    assert glob_regex("model/*.py").match("model/net.py")
    assert not glob_regex("model/*.py").match("model/sub/net.py")
    assert glob_regex("model/**/*.py").match("model/sub/net.py")
    assert glob_regex("model/**/*.py").match("model/net.py")
    assert glob_regex("data/").match("data/x/y.csv")
    assert not glob_regex("train.py").match("other/train.py")


def test_rules_default_protect_everything_not_editable() -> None:
    rules = CodeRules(["train.py", "model/*.py"])
    assert rules.is_editable("train.py") and rules.is_editable("./model/net.py")
    assert rules.is_protected("eval.py") and rules.is_protected("data/d.csv")
    explicit = CodeRules(["*.py"], protected=["eval.py", "data/"])
    assert explicit.is_editable("train.py") and not explicit.is_editable("eval.py")
    assert not explicit.is_protected("README.md")


def test_check_refuses_each_problem(tmp_path: Path) -> None:
    root = project(tmp_path)
    rules = CodeRules(["train.py", "model/*.py", "missing.py"], protected=["eval.py", "data/"])

    def problem(*edits: Edit) -> str:
        with pytest.raises(ChangeError) as info:
            check(Change(edits), root, rules)
        return str(info.value)

    assert "protected" in problem(Edit("eval.py", "eval", "x"))
    assert "not editable" in problem(Edit("README.md", "a", "b"))
    assert "no such file" in problem(Edit("missing.py", "a", "b"))
    assert "occurs 0 times" in problem(Edit("train.py", "lr = 0.2", "lr = 0.3"))
    assert "occurs 2 times" in problem(Edit("train.py", "lr", "rate"))
    assert "does not parse" in problem(Edit("train.py", "lr = 0.1\n", "lr = (0.1\n"))
    assert "outside the project" in problem(Edit("../x.py", "a", "b"))
    assert "empty" in problem(Edit("train.py", "", "b"))
    assert (root / "train.py").read_text() == "lr = 0.1\nx = lr * 2\nprint(x)\n"  # nothing written


def test_apply_several_edits_and_the_diff(tmp_path: Path) -> None:
    root = project(tmp_path)
    rules = CodeRules(["train.py", "model/*.py"])
    change = Change((Edit("train.py", "lr = 0.1", "lr = 0.01"), Edit("train.py", "x = lr * 2", "x = lr * 3"),
                     Edit("model/net.py", "WIDTH = 4", "WIDTH = 16")), "wider")
    diff = apply(change, root, rules)
    assert (root / "train.py").read_text() == "lr = 0.01\nx = lr * 3\nprint(x)\n"
    assert (root / "model" / "net.py").read_text() == "WIDTH = 16\n"
    assert "--- a/model/net.py" in diff and "+WIDTH = 16" in diff and "-lr = 0.1" in diff
    assert Change.from_dict(change.to_dict()) == change
    assert change.key() == Change(change.edits, "another reason").key()


def test_digest_sees_a_rewrite_not_new_files(tmp_path: Path) -> None:
    root = project(tmp_path)
    rules = CodeRules(["train.py"])
    before = digest(root, rules)
    assert "eval.py" in before and "train.py" not in before
    (root / "out.txt").write_text("new output")
    (root / "train.py").write_text("changed editable\n")
    assert rewritten(before, digest(root, rules)) == []
    (root / "data" / "d.csv").write_text("tampered\n")
    (root / "eval.py").unlink()
    assert rewritten(before, digest(root, rules)) == ["data/d.csv", "eval.py"]


def test_code_trials_build_the_chain_then_the_change(tmp_path: Path) -> None:
    from agentlab.core.search.loop import TrialFailed

    first = Change((Edit("train.py", "lr = 0.1", "lr = 0.05"),), "smaller step")
    second = Change((Edit("train.py", "lr = 0.05", "lr = 0.02"),), "smaller still")
    plans = {3: {"extra": {"code": {"change": first.to_dict()}}},
             7: {"extra": {"code": {"base": [3], "change": second.to_dict()}}},
             8: {"extra": {"code": {"base": [3, 7]}}}}
    records = {n: TrialRecord(n, "complete", 1.0, {}, extra=plan["extra"]) for n, plan in plans.items()}
    assert chain_of(records[7]) == [3, 7] and chain_of(records[8]) == [3, 7]
    assert chain_of(TrialRecord(1, "complete", 1.0, {})) == [] and chain_of(None) == []
    search = CodeSearch(CodeRules(["train.py"]), tmp_path, tmp_path / "run")
    rows = list(records.values())
    assert search.variant([], rows) == "" and search.variant([3, 7], rows) == f"{first.key()}/{second.key()}"
    assert search.variant([3], rows, second) == search.variant([3, 7], rows)  # a kept change's code: one identity
    trials = CodeTrials(CodeRules(["train.py"]), plan_of=plans.__getitem__)
    root, folder = project(tmp_path), tmp_path / "trial_7"
    before = trials.prepare(7, root, folder)
    assert (root / "train.py").read_text().startswith("lr = 0.02\n")
    assert "-lr = 0.05\n+lr = 0.02" in (folder / "change.diff").read_text()  # the trial's own change only
    assert (folder / "code" / "train.py").read_text().startswith("lr = 0.02\n")
    trials.verify(before, root)  # nothing protected changed
    (root / "eval.py").write_text("print('always 1.0')\n")
    with pytest.raises(TrialFailed, match="refused: the run changed protected file.*eval.py"):
        trials.verify(before, root)
    root8, folder8 = project(tmp_path / "b"), tmp_path / "trial_8"
    trials.prepare(8, root8, folder8)
    assert (root8 / "train.py").read_text().startswith("lr = 0.02\n") and not (folder8 / "change.diff").exists()
    bad = {1: {"extra": {"code": {"change": Change((Edit("eval.py", "eval", "x"),)).to_dict()}}}}
    with pytest.raises(TrialFailed, match="refused: .*protected"):
        CodeTrials(CodeRules(["train.py"]), plan_of=bad.__getitem__).prepare(1, project(tmp_path / "c"), folder)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_commit_version_leaves_the_users_tree_alone(tmp_path: Path) -> None:
    root = project(tmp_path)
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=u", "-c", "user.email=u@x", "add", ".")
    _git(root, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "start")
    head = _git(root, "rev-parse", "HEAD")
    _git(root, "branch", "agentlab/run", head)
    (root / "eval.py").write_text("print('user edit, uncommitted')\n")
    status = _git(root, "status", "--porcelain")
    commit = commit_version(root, "agentlab/run", head, {"train.py": b"lr = 0.01\n"}, "agentlab: smaller step")
    assert _git(root, "rev-parse", "agentlab/run") == commit
    assert _git(root, "show", f"{commit}:train.py") == "lr = 0.01"
    assert _git(root, "show", f"{commit}:eval.py") == "print('eval')"  # the branch's tree, not the user's edit
    assert _git(root, "rev-parse", "HEAD") == head and _git(root, "status", "--porcelain") == status
    assert (root / "train.py").read_text().startswith("lr = 0.1\n")

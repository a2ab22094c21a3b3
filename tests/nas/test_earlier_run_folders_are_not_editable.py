"""With `objective.editable: ["**/*.py"]` and the default `runs/` inside the project, an earlier search's run folder
(its workspaces' and trials' copies of the code) was offered to the agent as editable files."""

from __future__ import annotations

from pathlib import Path

from agentlab.nas.code_change import CodeRules


def test_an_earlier_run_folder_inside_the_project_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('val_loss: 1')\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.py").write_text("X = 1\n")
    old = tmp_path / "runs" / "nas" / "old"
    (old / "trials" / "run_0001" / "code").mkdir(parents=True)
    (old / "run.json").write_text('{"command": "nas", "versions": {"agentlab": "0.1.0"}, "status": "completed"}')
    (old / "trials" / "run_0001" / "code" / "train.py").write_text("print('val_loss: 0.5')\n")
    rules = CodeRules(["**/*.py"], None)
    assert rules.editable_files(tmp_path) == ["src/model.py", "train.py"]


def test_a_folder_with_another_tools_run_json_is_still_code(tmp_path: Path) -> None:
    """Sacred's FileStorageObserver (and others) write a run.json with a command and a status: that folder's code
    stays editable, and a protected file in it is still hashed."""
    from agentlab.nas.code_change import digest

    (tmp_path / "train.py").write_text("print('val_loss: 1')\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "net.py").write_text("X = 1\n")
    (tmp_path / "model" / "run.json").write_text('{"command": "main", "status": "COMPLETED"}')
    assert CodeRules(["**/*.py"], None).editable_files(tmp_path) == ["model/net.py", "train.py"]
    assert "model/net.py" in digest(tmp_path, CodeRules(["train.py"], ["model/*.py"]))

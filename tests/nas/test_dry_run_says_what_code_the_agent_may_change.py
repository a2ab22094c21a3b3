"""`agentlab nas ... --dry-run` of a search whose agent may change code (objective.editable) said nothing of it; the
run printed `code changes: the agent may change src/ok.py, train.py (left out: ...)`. The dry run says the same line,
files left out included, and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_answer_only_answers_the_question_a_run_stopped_at import CHANGE, scripted_cli

from agentlab.cli import main


def test_the_dry_run_says_the_runs_code_changes_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    scripted_cli(tmp_path, monkeypatch, [CHANGE])
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ok.py").write_text("X = 1\n")
    (tmp_path / "src" / "legacy.py").write_bytes(b"NAME = 'caf\xe9'\n")  # not UTF-8: left out
    args = ["nas", "-c", "nas.yaml", "--llm", "agent.script.json", "--set", 'objective.editable=["**/*.py"]',
            "--set", "objective.unreviewed_changes=true", "-n", "1"]
    assert main([*args, "--dry-run"]) == 0
    dry = [line for line in capsys.readouterr().err.splitlines() if line.startswith("code changes:")]
    assert not (tmp_path / "runs").exists()
    assert len(dry) == 1 and "the agent may change src/ok.py, train.py (left out: src/legacy.py, not UTF-8" in dry[0]
    assert main([*args, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["code_changes"] == dry[0]
    assert main([*args, "--out", "run"]) == 0
    ran = [line for line in capsys.readouterr().err.splitlines() if line.startswith("code changes:")]
    assert ran == dry

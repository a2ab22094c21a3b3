"""`debate eval --resume --limit` compared the limit with the task file's count at resume time: a question appended
to the task file (which the docs allow) made a run that asked and scored 2 of 2 "shrink" at `--limit 2`. The run now
keeps the number of questions it asks in run.json when it starts; a run made before has the scored-questions rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.cli import main

SCRIPTED = """providers:
  s: {kind: scripted, replies: ["Answer: 11\\nConfidence: 80%"]}
models:
  a: {provider: s, model: a}
  b: {provider: s, model: b}
"""
TWO = ["--llm", "llm.yaml", "--set", "agents=[{model: a}, {model: b}]"]


def _task(in_tmp: Path, n: int) -> None:
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {k}+1?", "answer": "{k + 1}"}}\n'
                                               for k in range(n)))


def _eval(in_tmp: Path, n: int) -> None:
    (in_tmp / "llm.yaml").write_text(SCRIPTED)
    _task(in_tmp, n)
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--out", "e"]) == 0


def test_a_question_appended_to_the_task_file_is_not_the_runs_own(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    _eval(in_tmp, 2)
    assert json.loads((in_tmp / "e" / "run.json").read_text())["eval_questions"] == 2
    _task(in_tmp, 3)  # one line appended
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0, capsys.readouterr().err
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 2
    assert main(["debate", "eval", "--resume", "e", "--limit", "3"]) == 0  # the appended one asked: it asks 3 now
    assert json.loads((in_tmp / "e" / "run.json").read_text())["eval_questions"] == 3
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--limit 2 would leave out line 3" in err, err


def test_a_run_killed_early_keeps_the_count_it_asks(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Scored 1 of 3 when killed, one line appended since: --limit 2 shrinks the run's own 3 (the file holds 4)."""
    _eval(in_tmp, 3)
    records = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    (in_tmp / "e" / "questions.jsonl").write_text(records[0] + "\n")  # as a kill -9 after the first question
    _task(in_tmp, 4)
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: e: --limit 2 would shrink the run, which asks 3 questions (no --limit (all 3 questions" in err, err
    assert main(["debate", "eval", "--resume", "e", "--limit", "3"]) == 0


def test_a_run_made_before_the_count_was_kept_goes_by_what_it_scored(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    _eval(in_tmp, 3)
    info = json.loads((in_tmp / "e" / "run.json").read_text())
    del info["eval_questions"]  # as a run made before the change
    (in_tmp / "e" / "run.json").write_text(json.dumps(info))
    records = (in_tmp / "e" / "questions.jsonl").read_text().splitlines()
    (in_tmp / "e" / "questions.jsonl").write_text("".join(r + "\n" for r in records[:2]))  # scored 2 of 3
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "1"]) == 2  # below what it scored: refused
    assert "already scored 2 questions; --limit 1 would leave out line 2" in " ".join(capsys.readouterr().err.split())
    assert main(["debate", "eval", "--resume", "e", "--limit", "2"]) == 0, capsys.readouterr().err
    assert json.loads((in_tmp / "e" / "results.json").read_text())["questions"] == 2

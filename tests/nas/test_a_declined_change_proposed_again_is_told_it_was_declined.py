"""A code change the user declined (--approve, `n` with a note), proposed again by the agent, was refused as "this
change was run already on this version": it never ran. The agent is told the user declined it, with the note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_answer_only_answers_the_question_a_run_stopped_at import CHANGE, scripted_cli

from agentlab.cli import main
from agentlab.core.agent import approval


def test_a_declined_change_proposed_again_is_told_it_was_declined(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    made = scripted_cli(tmp_path, monkeypatch, [CHANGE, CHANGE], tune_every=0)
    monkeypatch.setenv(approval.APPROVE_UI_ENV, "1")  # no terminal: each question stops the run
    llm = ["--llm", "agent.script.json"]
    assert main(["nas", "-c", "nas.yaml", *llm, "--approve", "-n", "2", "--out", "run"]) == 130
    assert (approval.pending(tmp_path / "run") or {}).get("diff")  # the change, asked
    no = json.dumps({"answer": "no", "note": "keep the offset"})
    main(["nas", "--resume", "run", *llm, "--answer", no])
    told = [str(m["content"]) for step in made[-1].seen for m in step if m.get("role") == "tool"]
    again = next(t for t in told if t.startswith("not run:"))
    assert "the user declined this change (--approve), it never ran" in again and "keep the offset" in again
    assert "run already" not in " ".join(told)

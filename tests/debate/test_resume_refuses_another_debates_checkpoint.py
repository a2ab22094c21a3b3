"""`agentlab debate --resume` with a debate.sqlite copied in from another run folder: the checkpoint's rounds were
written into this run's transcript (its length alone was compared) and decided its final answer, exit 0, while
results.json and the console showed the checkpoint's rounds and the transcript kept the run's own. Now one line
naming debate.sqlite and saying it can be deleted, exit 2, nothing written; deleted, the resume goes on."""

from __future__ import annotations

import importlib
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from scripted_pair import SCRIPTED, scripted, snapshot

from agentlab.cli import main

AB = ["--llm", "llm.yaml", "--set", "agents=[{model: a}, {model: b}]"]
BA = ["--llm", "llm.yaml", "--set", "agents=[{model: b}, {model: a}]"]


def cut_to_round_0(folder: Path) -> None:
    path = folder / "transcript.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if json.loads(line)["round"] == 0))


def refused(folder: Path, capsys: pytest.CaptureFixture, says: str) -> None:
    before = snapshot(folder)
    capsys.readouterr()
    assert main(["debate", "--resume", str(folder.name), "--rounds", "3"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{folder.name}/debate.sqlite: not this run's debate checkpoint: {says}" in err, err
    assert "delete it (debate.sqlite)" in err and "Traceback" not in err and err.count("error:") == 1
    assert snapshot(folder) == before
    (folder / "debate.sqlite").unlink()
    assert main(["debate", "--resume", str(folder.name), "--rounds", "3"]) == 0
    lines = [json.loads(line) for line in (folder / "transcript.jsonl").read_text().splitlines()]
    assert [t["round"] for t in lines] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert json.loads((folder / "results.json").read_text())["question"] == "What is 5 plus 6?"


def test_a_checkpoint_of_another_question_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *AB, "--rounds", "1", "--out", "d"]) == 0
    assert main(["debate", "--topic", "What is 2 plus 3?", *AB, "--rounds", "3", "--out", "o"]) == 0
    cut_to_round_0(in_tmp / "d")
    shutil.copy(in_tmp / "o" / "debate.sqlite", in_tmp / "d" / "debate.sqlite")
    refused(in_tmp / "d", capsys, "it holds the debate of another question ('What is 2 plus 3?'")


def test_a_checkpoint_of_other_agents_is_refused(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A checkpoint of an earlier agentlab names no question: its rounds' agents still tell it apart."""
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *AB, "--rounds", "1", "--out", "d"]) == 0
    assert main(["debate", "--topic", "What is 5 plus 6?", *BA, "--rounds", "3", "--out", "o"]) == 0
    cut_to_round_0(in_tmp / "d")
    shutil.copy(in_tmp / "o" / "debate.sqlite", in_tmp / "d" / "debate.sqlite")
    with closing(sqlite3.connect(in_tmp / "d" / "debate.sqlite")) as db, db:
        db.execute("DROP TABLE IF EXISTS agentlab_debate")
    refused(in_tmp / "d", capsys, "its round 0 was answered by b, a (this run's agents: a, b)")


def test_the_runs_own_checkpoint_still_writes_back_a_cut_transcript(in_tmp: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    scripted(in_tmp)
    assert main(["debate", "--topic", "What is 5 plus 6?", *AB, "--rounds", "2", "--out", "d"]) == 0
    cut_to_round_0(in_tmp / "d")
    capsys.readouterr()
    assert main(["debate", "--resume", "d", "--rounds", "3"]) == 0
    assert "rounds 1-2 written back from debate.sqlite" in capsys.readouterr().err
    lines = [json.loads(line) for line in (in_tmp / "d" / "transcript.jsonl").read_text().splitlines()]
    assert [t["round"] for t in lines] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_runs_own_checkpoint_of_a_question_or_answer_with_a_secret_is_its_own(
        in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.yaml and transcript.jsonl keep the question and the answers scrubbed, the checkpoint raw: the run's own
    checkpoint was refused as another question's, and as differing rounds."""
    monkeypatch.setenv("MY_API_KEY", "1234567")
    (in_tmp / "llm.yaml").write_text(SCRIPTED.replace("Answer: 11", "Answer: 1234567"))
    topic = "Is https://example.com/reset?token=abc123xyz safe to open?"
    assert main(["debate", "--topic", topic, *AB, "--rounds", "2", "--out", "d"]) == 0
    assert "abc123xyz" not in (in_tmp / "d" / "config.yaml").read_text()
    cut_to_round_0(in_tmp / "d")
    capsys.readouterr()
    assert main(["debate", "--resume", "d", "--rounds", "3"]) == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (in_tmp / "d" / "transcript.jsonl").read_text().splitlines()]
    assert [t["round"] for t in lines] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_a_checkpoint_with_another_agent_in_its_rounds_is_refused_without_a_traceback(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds of a, b, c whose a and b answered as this run's a, b did: named, not zip()'s ValueError."""
    from agentlab.core.debate.answers import Answer
    from agentlab.core.errors import InputError

    debate_run = importlib.import_module("agentlab.debate.run")  # the package's `run` is the function

    def answer(agent: str) -> Answer:
        return Answer(agent, "Answer: 11", "11", 0.8, 10, 3, 0.001)

    async def saved(path: Path) -> list[list[Answer]]:
        return [[answer("a"), answer("b"), answer("c")]]

    (in_tmp / "debate.sqlite").write_bytes(b"")
    monkeypatch.setattr(debate_run, "saved_rounds", saved)
    monkeypatch.setattr(debate_run, "read_transcript", lambda path, agents: ([[answer("a"), answer("b")]], False))
    with pytest.raises(InputError, match=r"its round 0 was answered by a, b, c \(this run's agents: a, b\)"):
        debate_run.checkpoint_rounds(in_tmp, "What is 5 plus 6?", ["a", "b"])

"""`debate eval --resume` dropped a damaged line in the middle of questions.jsonl without a word (and asked that
question again): only a torn last line is a kill mid-write. Now one line naming questions.jsonl:LINE, exit 2,
nothing written; the torn last line is still dropped and asked again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_pair import TWO, scripted, snapshot

from agentlab.cli import main


@pytest.mark.parametrize("damage", ['{"id": broken', "[1, 2]", "\udcff"])
def test_a_damaged_line_before_the_last_is_refused(damage: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {k}+6?", "answer": "{k + 6}"}}\n'
                                               for k in range(4)))
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--limit", "3", "--out", "e"]) == 0
    path = in_tmp / "e" / "questions.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = damage
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))
    before = snapshot(in_tmp / "e")
    capsys.readouterr()
    assert main(["debate", "eval", "--resume", "e", "--limit", "4"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "e/questions.jsonl:2: not a scored question" in err and "questions.jsonl:2" in err.split("hint:")[1], err
    assert "Traceback" not in err and err.count("error:") == 1 and snapshot(in_tmp / "e") == before
    # the line deleted, as the hint says: its question is asked again
    path.write_text("".join(line + "\n" for k, line in enumerate(lines) if k != 1))
    assert main(["debate", "eval", "--resume", "e", "--limit", "4"]) == 0
    assert sorted(json.loads(line)["id"] for line in path.read_text().splitlines()) == [0, 1, 2, 3]


def test_a_torn_last_line_is_still_dropped(in_tmp: Path) -> None:
    scripted(in_tmp)
    (in_tmp / "task.jsonl").write_text("".join(f'{{"question": "What is {k}+6?", "answer": "{k + 6}"}}\n'
                                               for k in range(3)))
    assert main(["debate", "eval", "--task", "task.jsonl", *TWO, "--rounds", "1", "--limit", "2", "--out", "e"]) == 0
    path = in_tmp / "e" / "questions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][:40] + "\n\n")  # torn, then a blank line
    assert main(["debate", "eval", "--resume", "e", "--limit", "3"]) == 0
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [0, 1, 2]

"""`debate make-task --n` has an upper bound: `--n 100000000` wrote for over two minutes with no output (an hour's
work, gigabytes of questions no debate eval gets through); now it is refused at once, exit 2, the bound named."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


def test_too_many_questions_is_refused_at_once(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["debate", "make-task", "--n", "100000000", "--out", "t.jsonl"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error: Invalid value for '--n'" in err and "100000" in err and "internal error" not in err, err
    assert not (in_tmp / "t.jsonl").exists()
    assert main(["debate", "make-task", "--help"]) == 0
    assert "[1<=x<=100000]" in capsys.readouterr().out
    reference = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md").read_text()
    assert "Number of questions, at most 100,000" in reference

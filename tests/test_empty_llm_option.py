"""`--llm ''` was read as the current folder (".: is a directory, expected a config file") by every command but
`models check`; each now says it is empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


@pytest.mark.parametrize("argv", [["nas", "--dry-run"], ["compress"], ["serve"], ["llm-bench"], ["pipeline", "run"],
                                  ["debate"]])
def test_an_empty_llm_option_is_named_empty(in_tmp: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert main([*argv, "--llm", ""]) == 2
    err = capsys.readouterr().err
    assert "'--llm': empty; give the routing config file" in err and "is a directory" not in err, err

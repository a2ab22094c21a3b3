"""Ctrl-C before the session folder was made said "the finished stages are kept: continue with `agentlab pipeline
rerun SESSION --from STAGE`", of a session that does not exist; it says what every command says then."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


def _stopped(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("command", [["run", "--stage", "a=m", "-i", "hi"], ["rerun", "s1"]])
def test_ctrl_c_before_the_session_folder_says_there_is_nothing_to_continue(
        in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    import agentlab.pipeline.load
    import agentlab.pipeline.sessions

    monkeypatch.setattr(agentlab.pipeline.load, "prepare", _stopped)
    monkeypatch.setattr(agentlab.pipeline.sessions, "find_session", _stopped)
    assert main(["pipeline", *command]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "interrupted before a run folder was made: nothing to resume; run the command again" in said
    assert "SESSION" not in said and "rerun" not in said
    assert not (in_tmp / "runs").exists()

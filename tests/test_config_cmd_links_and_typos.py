"""`agentlab config examples` and a link to nothing in its way (exit 1 "File exists", or the user's link silently
replaced by a file), and `config show` / `--command` of a near schema name (no "did you mean")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentlab.cli import main


def one_line(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_examples_refuse_a_configs_link_to_nothing_before_writing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    os.symlink(tmp_path / "nowhere", tmp_path / "configs")
    assert main(["config", "examples", str(tmp_path)]) == 2
    said = one_line(capsys)
    assert f"error: {tmp_path / 'configs'} exists and is not a folder (a link to one that is not there); nothing " \
           "was written" in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]


def test_examples_keep_a_config_that_is_a_link_to_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "configs").mkdir()
    os.symlink(tmp_path / "nowhere.yaml", tmp_path / "configs" / "nas.yaml")
    assert main(["config", "examples", str(tmp_path)]) == 0
    assert (tmp_path / "configs" / "nas.yaml").is_symlink()
    assert "kept yours, which differ from the bundled ones: nas.yaml (a link to nothing)" in one_line(capsys)
    assert (tmp_path / "configs" / "llm.local.yaml").is_file()


def test_examples_refuse_a_folder_that_is_a_link_to_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    os.symlink(tmp_path / "nowhere", tmp_path / "out")
    assert main(["config", "examples", str(tmp_path / "out")]) == 2
    assert "is a link to a folder that is not there; nothing was written" in one_line(capsys)


@pytest.mark.parametrize("typed, meant", [("llm_bench", "llm-bench"), ("NAS", "nas"), ("nsa", "nas")])
def test_a_near_schema_name_gets_a_did_you_mean(typed: str, meant: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", typed]) == 2
    said = one_line(capsys)
    assert f"error: no config schema for '{typed}' (did you mean '{meant}'?)" in said and "hint: choose one of:" in said
    (tmp_path / "nas.yaml").write_text("name: x\n")
    assert main(["config", "validate", str(tmp_path / "nas.yaml"), "--command", typed]) == 2
    assert f"(did you mean '{meant}'?)" in one_line(capsys)

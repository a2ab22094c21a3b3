"""compress's search settings under ``search:`` as nas's are (issue 59): an old config's top-level keys are moved
there with a warning that names the new place, and an override of an old name reaches the new key."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agentlab.compress.config import CompressConfig
from agentlab.core.config import load_config


def test_an_old_config_is_moved_under_search_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("planner: tpe\nmax_iterations: 3\nllm_share: 0.5\nagent: {guard_patience: 2}\nseed: 4\n")
    with caplog.at_level(logging.WARNING):
        cfg = load_config(old, CompressConfig)
    assert (cfg.search.planner, cfg.search.max_iterations, cfg.search.llm_share) == ("tpe", 3, 0.5)
    assert cfg.search.agent.guard_patience == 2 and cfg.seed == 4  # seed stays: it seeds the recovery training too
    assert "old.yaml: llm_share, agent, planner, max_iterations moved to search.llm_share, search.agent, " \
        "search.planner, search.max_iterations" in caplog.text
    assert "planner" not in cfg.model_dump() and cfg.model_dump()["search"]["planner"] == "tpe"


def test_overrides_of_either_name_reach_the_one_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    new = tmp_path / "new.yaml"
    new.write_text("search:\n  planner: random\n  max_iterations: 2\n")
    cfg = load_config(new, CompressConfig, ["max_iterations=5"])  # a resumed run's --set, the old name: said so
    assert (cfg.search.planner, cfg.search.max_iterations) == ("random", 5)
    assert "--set: max_iterations moved to search.max_iterations" in caplog.text
    caplog.clear()
    old = tmp_path / "old.yaml"
    old.write_text("planner: nsga2\n")
    assert load_config(old, CompressConfig, ["search.planner=llm"]).search.planner == "llm"
    with caplog.at_level(logging.WARNING):
        both = load_config(None, CompressConfig, base={"planner": "tpe", "search": {"planner": "tpe"}})
    assert both.search.planner == "tpe" and "planner ignored: search.planner given too" in caplog.text
    from agentlab.core.errors import ConfigError

    clash = tmp_path / "clash.yaml"
    clash.write_text("max_iterations: 3\nsearch:\n  max_iterations: 5\n")  # which one was meant: not guessed
    with pytest.raises(ConfigError, match=r"clash.yaml:1: max_iterations \(3\) and search.max_iterations \(5\) are "
                       "both given, with different values"):
        load_config(clash, CompressConfig)


def test_a_wrong_value_names_the_new_key() -> None:
    from agentlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--set search.planner=bogus: search.planner: Input should be 'llm'"):
        load_config(None, CompressConfig, ["planner=bogus"])


def test_an_error_in_a_moved_key_names_its_line_in_the_old_file(tmp_path: Path) -> None:
    from agentlab.core.errors import ConfigError

    old = tmp_path / "old.yaml"
    old.write_text("name: x\nseed: 1\nplanner: bogus\n")
    with pytest.raises(ConfigError, match=r"old.yaml:3: search.planner: Input should be"):
        load_config(old, CompressConfig)


def test_an_old_name_given_with_set_is_warned_about_as_in_a_file(tmp_path: Path, tiny_model: dict[str, Path],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`--set planner=tpe --set max_iterations=2` was moved to search.* without a word, where the same keys in a
    file are warned about."""
    from agentlab.cli import main

    assert main(["compress", "--model", str(tiny_model["hf"]), "--set", "planner=tpe", "--set", "max_iterations=2",
                 "--set", f"workspace={tmp_path / 'ws'}", "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "--set: planner, max_iterations moved to search.planner, search.max_iterations" in err
    assert "(write --set search.planner=..., --set search.max_iterations=... to silence this)" in err
    assert "planner: tpe, 2 experiment(s)" in err
    assert main(["compress", "--model", str(tiny_model["hf"]), "--set", "search.planner=tpe",
                 "--set", f"workspace={tmp_path / 'ws'}", "--dry-run"]) == 0
    assert "moved to" not in capsys.readouterr().err

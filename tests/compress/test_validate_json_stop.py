"""A new user's pass over `agentlab compress`: `config validate` refused nothing of a warm_start entry no run could
take, a moved key's two names in two --set won silently, --json had no run folder, Ctrl-C in a recovery step said
nothing until torch handed back, and a few messages (no "got", nas's example, "about 1 tokens")."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.compress.config import CompressConfig
from agentlab.core.config import Flag, load_config
from agentlab.core.errors import ConfigError


@pytest.mark.parametrize("entries, line, message", [
    ("[{quantize: gguf, gguf_type: Q9}]", 2, "search.warm_start[0]: gguf_type: one of ['Q8_0', 'Q5_K_M', 'Q4_K_M'], "
     "got 'Q9'"),
    ("\n    - {quantize: gguf}\n    - {colour: red}", 4, "search.warm_start[1]: colour: not a setting"),
    ("[{prune: none}]", 2, "search.warm_start[0]: these settings make no experiment"),
])
def test_config_validate_refuses_a_warm_start_no_space_holds(tmp_path: Path, capsys: Any, entries: str, line: int,
                                                              message: str) -> None:
    """`config validate --command compress` said ok; only `compress --dry-run` refused it, after loading a model."""
    config = tmp_path / "ws.yaml"
    config.write_text(f"search:\n  warm_start: {entries}\n")
    assert main(["config", "validate", "--command", "compress", str(config)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{config}:{line}: {message}" in err


def test_a_warm_start_some_space_holds_is_valid(tmp_path: Path, capsys: Any) -> None:
    """What a model with more layers, or a CUDA device, offers is left to the run: no model is loaded here."""
    config = tmp_path / "ws.yaml"
    config.write_text("search:\n  warm_start: [{quantize: bnb_4bit}, {prune: structured, drop_layers: 4}]\n")
    assert main(["config", "validate", "--command", "compress", str(config)]) == 0


def test_a_warm_start_not_a_list_shows_a_compress_example(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "ws.yaml"
    config.write_text("search: {warm_start: yes please}\n")
    assert main(["config", "validate", "--command", "compress", str(config)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "(e.g. [{quantize: gguf, gguf_type: Q8_0}])" in err and "lr:" not in err


@pytest.mark.parametrize("sets, said", [
    (["planner=tpe", "search.planner=random"], "--set planner=tpe and --set search.planner=random"),
    (["search.planner=random", "planner=tpe"], "--set search.planner=random and --set planner=tpe"),
    (["planner=tpe", Flag("--planner", "search.planner", "random")], "--set planner=tpe and --planner random"),
])
def test_a_moved_keys_two_names_with_two_values_are_refused(sets: list[Any], said: str) -> None:
    """The last of them won silently, where a file with both, and --planner against --set, are refused."""
    with pytest.raises(ConfigError, match=f"^{said}: both set search.planner, to different values$"):
        load_config(None, CompressConfig, sets)


def test_a_moved_keys_two_names_with_one_value_and_one_name_twice_pass(caplog: pytest.LogCaptureFixture) -> None:
    assert load_config(None, CompressConfig, ["planner=tpe", "search.planner=tpe"]).search.planner == "tpe"
    assert load_config(None, CompressConfig, ["max_iterations=3", "search.max_iterations=3.0"]).search.max_iterations \
        == 3
    assert load_config(None, CompressConfig, ["planner=tpe", "planner=random"]).search.planner == "random"
    assert load_config(None, CompressConfig, ["search.planner=tpe", "search.planner=random"]).search.planner == "random"


def test_the_cli_refuses_a_moved_keys_two_names(tmp_path: Path, capsys: Any) -> None:
    code = main(["compress", "--set", "planner=tpe", "--set", "search.planner=random", "--set",
                 f"workspace={tmp_path / 'ws'}", "--dry-run"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--set planner=tpe and --set search.planner=random: both set search.planner" in err


def test_an_evaluation_text_of_one_word_is_about_1_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agentlab.compress.run import load_texts

    (tmp_path / "short.txt").write_text("hello\n")
    with caplog.at_level(logging.WARNING):
        load_texts(CompressConfig(eval_text=tmp_path / "short.txt"))
    assert "short.txt: about 1 token, fewer than one perplexity window" in caplog.text


def test_ctrl_c_in_a_recovery_step_says_it_is_stopping(sigint_raises: None, caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    from agentlab.compress.recover import RecoverSettings, train_loop

    weight = torch.nn.Parameter(torch.ones(2))
    calls = []

    def loss_fn(batch: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return (weight * batch.float().sum()).sum()

    with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
        train_loop([weight], torch.ones(4, 3), loss_fn, RecoverSettings(steps=5, batch_size=2), lr=0.1,
                   progress=None, description="LoRA recovery")
    assert "Ctrl-C: stopping in LoRA recovery's step 2/5 once torch's current call returns" in caplog.text


def test_json_names_the_run_folder(in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    pytest.importorskip("codecarbon")
    pytest.importorskip("optuna")
    sets = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
            "measure.new_tokens=4", "measure.repeats=1", "task_questions=3", f"workspace={in_tmp / 'ws'}",
            "search.warm_start=[{quantize: int8_dynamic}]"]
    assert main(["compress", "--model", str(tiny_model["hf"]), "--max-iterations", "1", "--planner", "random",
                 *(x for s in sets for x in ("--set", s)), "--out", "runs/J", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_dir"] == str(in_tmp / "runs" / "J") and Path(out["run_dir"]).is_absolute()
    assert "run_dir" not in json.loads((in_tmp / "runs" / "J" / "results.json").read_text())

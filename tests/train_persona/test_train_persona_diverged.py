"""A train-persona run that diverges (a learning rate far too high) fails with the step its loss went non-finite and
writes no adapter, its events.jsonl strict JSON; `export` refuses an adapter of NaN weights; infinite numbers are
refused before a run folder exists; small messages (a resume whose data file is gone, `--quantize Q8_0`, one bad
line, a warning before an export that does not fit)."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main

FAST = ["--bsz", "2", "--grad-accum", "1", "--set", "data.max_length=128", "--set", "train.threads=1"]


def _strict(text: str) -> Any:
    """JSON as jq reads it: NaN and Infinity are not JSON."""
    def refuse(token: str) -> Any:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_run_fails_naming_the_step_and_writes_no_adapter(tiny_model: dict[str, Path], in_tmp: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    code = main(["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, "--max-steps", "3", "--lr", "1e30",
                 "--set", "train.warmup_ratio=0", "--out", "adapters/big", "--run-dir", "runs/big"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "error: training diverged: " in err and "(the logged loss was nan at step 2); no adapter was written" in err
    assert "hint: start a new run with a lower --lr (a resume keeps this run's, 1e+30)" in err
    assert not (in_tmp / "adapters" / "big").exists() and not (in_tmp / "adapters" / ".big.partial").exists()
    run = in_tmp / "runs" / "big"
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "results.json").exists()
    logged = [_strict(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = {e["step"]: e.get("loss") for e in logged if e["kind"] == "train_log" and "loss" in e}
    assert losses[1] > 0 and losses[2] is None and losses[3] is None  # not 0.0: Trainer's filter is off
    assert _strict((run / "trainer_state.json").read_text())["log_history"][1]["grad_norm"] is None
    assert [(e["step"], e["learning_rate"]) for e in logged if e["kind"] == "diverged"] == [(2, 1e30)]


def test_a_diverged_run_is_not_resumed(tiny_model: dict[str, Path], in_tmp: Path, capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`--resume` of a diverged run loaded the model, said its checkpoint "holds the whole budget" and failed the same
    way (a resume keeps --lr): it is refused before the model loads."""
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, "--max-steps", "3", "--lr", "1e30",
                 "--set", "train.warmup_ratio=0", "--out", "adapters/big", "--run-dir", "runs/big"]) == 1
    capsys.readouterr()
    run = in_tmp / "runs" / "big"
    before = (run / "events.jsonl").read_text()

    def no_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(importlib.import_module("agentlab.train_persona.run"), "load_causal_lm", no_load)
    assert main(["train-persona", "--resume", "runs/big"]) == 2
    err = capsys.readouterr().err
    assert f"error: {Path('runs/big')}: this run diverged at step 2 (learning rate 1e+30): its checkpoints hold " \
           "NaN or inf weights and a resume keeps its settings; nothing was written" in err, err
    assert "hint: start a new run with a lower --lr" in err
    assert (run / "events.jsonl").read_text() == before and not (in_tmp / "adapters" / "big").exists()


def test_a_nan_loss_with_finite_weights_is_null_in_results_and_left_off_the_plot(
        tiny_model: dict[str, Path], in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN loss whose weights stay finite (fp16 steps skipped; here the weight check is bypassed) reached
    results.json as bare NaN and was drawn in loss.png."""
    import matplotlib.axes

    drawn: list[list[float]] = []
    plot = matplotlib.axes.Axes.plot

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        drawn.append(list(args[1]))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    module = importlib.import_module("agentlab.train_persona.run")  # the package's `run` is the function
    monkeypatch.setattr(module, "check_finite", lambda *args, **kwargs: None)
    monkeypatch.setattr(module, "changes_nothing", lambda model: False)
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, "--max-steps", "3", "--lr", "1e30",
                 "--set", "train.warmup_ratio=0", "--out", "adapters/big", "--run-dir", "runs/big"]) == 0
    results = _strict((in_tmp / "runs" / "big" / "results.json").read_text())
    assert results["first_loss"] > 0 and results["final_loss"] is None and results["train_loss"] is None
    assert len(drawn) == 1 and len(drawn[0]) == 1 and drawn[0][0] == results["first_loss"]


def test_export_refuses_an_adapter_of_nan_weights(tiny_model: dict[str, Path], in_tmp: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model["hf"], dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_B" in n)[0, 0] = float("nan")
    lora.save_pretrained(in_tmp / "nan")
    assert main(["train-persona", "export", "nan", "--gguf", "out/n.gguf"]) == 2
    err = capsys.readouterr().err
    assert f"error: {Path('nan') / 'adapter_model.safetensors'}: 1 of its " in err
    assert "hold NaN or inf (e.g. " in err and "the training run that made it diverged; nothing was written" in err
    assert "hint: train the adapter again with a lower learning rate (--lr)" in err
    assert not (in_tmp / "out").exists()


@pytest.mark.parametrize("args, field, shown", [
    (["--lr", "inf", "--max-steps", "1"], "train.learning_rate", ".inf"),
    (["--epochs", "inf"], "train.epochs", ".inf"),  # was exit 1, OverflowError, once the model had loaded
    (["--set", "train.weight_decay=.inf", "--max-steps", "1"], "train.weight_decay", ".inf"),
    (["--set", "eval.min_logit_change=.inf", "--max-steps", "1"], "eval.min_logit_change", ".inf"),
    (["--lr", "nan", "--max-steps", "1"], "train.learning_rate", ".nan"),
], ids=["lr", "epochs", "weight-decay", "min-logit-change", "lr-nan"])
def test_infinite_numbers_are_refused_before_a_run_folder_exists(args: list[str], field: str, shown: str,
                                                                 tiny_model: dict[str, Path], in_tmp: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, *args, "--out", "adapters/x"]) == 2
    assert f"{field}: Input should be a finite number (got {shown})" in capsys.readouterr().err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "adapters").exists()


def test_a_resume_whose_data_file_is_gone_asks_for_it_back(tiny_model: dict[str, Path], in_tmp: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    data = in_tmp / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n' * 4)
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), *FAST, "--data", "chats.jsonl",
                 "--max-steps", "1", "--run-dir", "runs/r"]) == 0
    data.unlink()
    capsys.readouterr()
    assert main(["train-persona", "--resume", "runs/r", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert f"error: {data}: the chat data file this run trains on is gone; nothing was written" in err, err
    assert "hint: put the file back at that path" in err and "shipped" not in err


def test_one_bad_line_is_named_in_the_singular(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "chats.jsonl").write_text("[1]\n")
    assert main(["train-persona", "--data", "chats.jsonl"]) == 2
    assert "hint: fix the line above (or drop it) and run again" in capsys.readouterr().err
    (in_tmp / "chats.jsonl").write_text("[1]\n[2]\n")
    assert main(["train-persona", "--data", "chats.jsonl"]) == 2
    assert "hint: fix the lines above (or drop them) and run again" in capsys.readouterr().err


def test_quantize_is_read_in_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--quantize Q8_0` (llama.cpp's own spelling) was "unknown quantization"; it goes on to the adapter. A kind
    not known is echoed as typed (it said 'q9' for Q9)."""
    from agentlab.core.errors import AgentlabError, InputError
    from agentlab.core.models.gguf_export import quantize_gguf
    from agentlab.train_persona import export_gguf

    with pytest.raises(InputError) as info:
        export_gguf(tmp_path / "none", tmp_path / "n.gguf", quantize="Q8_0")
    assert "unknown quantization" not in info.value.message
    with pytest.raises(InputError, match="unknown quantization 'Q9'"):
        export_gguf(tmp_path / "none", tmp_path / "n.gguf", quantize="Q9")
    pytest.importorskip("llama_cpp")
    with pytest.raises(AgentlabError, match="unknown quantization 'Q9'"):
        quantize_gguf(tmp_path / "none.gguf", tmp_path / "n.gguf", "Q9")
    with pytest.raises(AgentlabError, match="GGUF file not found"):  # Q8_0 is known: on to the file
        quantize_gguf(tmp_path / "none.gguf", tmp_path / "n.gguf", "Q8_0")


def test_an_adapter_that_does_not_fit_the_export_base_gets_no_warning_before_the_error(
        tiny_model: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """"it loads (its layers have the same sizes)" came before "does not fit ... (its weights' shapes differ)"."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from agentlab.core.errors import AgentlabError
    from agentlab.core.train.tiny import make_tiny_model
    from agentlab.train_persona import export_gguf

    wider = make_tiny_model(tmp_path / "wider", hidden_size=96)
    model = AutoModelForCausalLM.from_pretrained(tiny_model["hf"], dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path":
                                                                    str(tiny_model["hf"])}))
    with caplog.at_level(logging.WARNING), pytest.raises(AgentlabError) as info:
        export_gguf(tmp_path / "a", tmp_path / "n.gguf", base_model=str(wider))
    assert "does not fit" in info.value.message
    assert not [r for r in caplog.records if "same sizes" in r.getMessage()], caplog.records

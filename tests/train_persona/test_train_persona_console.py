"""What `agentlab train-persona` prints and names: no warning on the CPU path, the loss-token line once and without
brackets inside brackets, run folders named after --out or the data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.train_persona.config import TrainPersonaConfig
from agentlab.train_persona.report import loss_line


def test_run_name_follows_out_then_the_data() -> None:
    assert TrainPersonaConfig().name == "persona_a"
    assert TrainPersonaConfig.model_validate({"data": {"path": "skill_units"}}).name == "skill_units"
    assert TrainPersonaConfig.model_validate({"data": {"path": "persona_c"}}).name == "persona_c"
    assert TrainPersonaConfig.model_validate({"data": {"path": "my chats.jsonl"}}).name == "my_chats"
    assert TrainPersonaConfig.model_validate({"data": {"path": "skill_units"}, "out": "adapters/units-v2"}
                                             ).name == "units-v2"
    assert TrainPersonaConfig.model_validate({"name": "mine", "out": "adapters/x"}).name == "mine"


def test_loss_line_has_no_nested_brackets() -> None:
    summary = {"assistant_only": True, "template": "agentlab's ChatML training template (renders exactly as the "
               "tokenizer's own)", "examples": 240, "sequences": 240, "tokens": 9207, "loss_tokens": 1069,
               "packing": False}
    line = loss_line(summary)
    assert line == ("loss on 1069 of 9207 tokens (11.6%), assistant tokens only, marked by agentlab's ChatML training "
                    "template (renders exactly as the tokenizer's own); 240 conversations")
    depth = deepest = 0
    for ch in line:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    assert deepest == 1
    # how many are trained on, not only how many are left out (150 truncated: "85 left out" alone)
    assert loss_line({**summary, "sequences": 238}).endswith("; 240 conversations, 238 trained on; 2 left out: no "
                                                             "loss token within max_length")
    assert loss_line({**summary, "assistant_only": False}).startswith("loss on 1069 of 9207 tokens (11.6%), every "
                                                                       "token;")
    assert loss_line({**summary, "examples": 1, "sequences": 1}).endswith("; 1 conversation")  # was 1 conversations


def test_cpu_run_prints_no_warning_and_one_loss_line(tiny_model: dict[str, Path], in_tmp: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU path")
    code = main(["train-persona", "--base-model", str(tiny_model["hf"]), "--bsz", "2", "--grad-accum", "1",
                 "--set", "data.max_length=128", "--max-steps", "1", "--data", "skill_units",
                 "--out", "adapters/skill_units"])
    assert code == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "WARNING" not in err and "no CUDA GPU" not in err
    assert "on cpu: LoRA, torch.float32 weights" in err
    assert err.count("loss on ") == 1 and "1 step, loss " in err
    (run,) = (in_tmp / "runs" / "train-persona").iterdir()
    assert run.name.endswith("-skill_units")


def test_a_resume_that_trained_nothing_says_no_session_figure_as_its_own(capsys: pytest.CaptureFixture) -> None:
    """A finished run resumed said "nothing to train", then "this session (from checkpoint-3): 5 s": the earlier
    session's seconds."""
    from agentlab.cli.train_persona import _summary

    results = {"adapter": "a", "first_loss": 1.5, "final_loss": 1.2, "steps": 6, "tokens_seen": 341, "seconds": 5.0,
               "resumed_from": "runs/pj/checkpoints/checkpoint-3"}
    _summary({**results, "trained_this_session": False}, Path("runs/pj"))
    err = " ".join(capsys.readouterr().err.split())
    assert "this session (from" not in err, err
    assert "341 tokens, trained before this session (the last session that trained: 5 s)" in err, err
    _summary({**results, "trained_this_session": True}, Path("runs/pj"))
    assert "341 tokens; this session (from checkpoint-3): 5 s" in " ".join(capsys.readouterr().err.split())

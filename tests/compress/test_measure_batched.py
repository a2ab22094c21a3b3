"""The fast measurement path of `agentlab compress` on the tiny model: perplexity with batched windows and only the
scored positions' logits equals one window at a time with every logit; batched greedy answers (left padding, KV
cache, sorted by length) equal one-at-a-time answers, so accuracy is the same; each phase reports its count and ETA;
the base measurement's workspace key is the same for the same model and settings and changes with either (so a
second run reuses it and a changed one measures again; the end-to-end reuse is test_run.py's)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from agentlab.compress.config import MeasureSettings  # noqa: E402
from agentlab.compress.experiment import Inputs, accuracy_hf, answers_hf, run_experiment  # noqa: E402
from agentlab.compress.measure import default_eval_text, perplexity_hf, windows  # noqa: E402
from agentlab.core.debate.task import as_questions, make_task  # noqa: E402


@pytest.fixture(scope="module")
def hf_model(tiny_model: dict[str, Path]) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model["hf"]).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model["hf"])


def reference_perplexity(model: Any, tokenizer: Any, text: str, context: int, stride: int, max_tokens: int) -> float:
    """One window at a time, every position's logits (the transformers docs' recipe)."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0][:max_tokens]
    nll, count = 0.0, 0
    with torch.inference_mode():
        for begin, end, first in windows(len(ids), context, stride):
            window = ids[begin:end].unsqueeze(0)
            logp = torch.log_softmax(model(input_ids=window).logits[0, :-1].float(), -1)
            scored = logp.gather(1, window[0, 1:, None])[:, 0][first - begin - 1:]
            nll -= float(scored.sum())
            count += len(scored)
    return math.exp(nll / count)


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_batched_perplexity_equals_one_window_at_a_time(hf_model: tuple, batch: int) -> None:
    model, tokenizer = hf_model
    text = default_eval_text()
    # 1000 tokens, context 96, stride 40: full windows and a shorter last one (a group of its own)
    expected = reference_perplexity(model, tokenizer, text, 96, 40, 1000)
    seen: list[tuple[int, int]] = []
    found = perplexity_hf(model, tokenizer, text, context=96, stride=40, max_tokens=1000, batch=batch,
                          on_step=lambda done, total: seen.append((done, total)))
    assert found.tokens == 999
    assert found.ppl == pytest.approx(expected, rel=1e-5)
    total = len(windows(1000, 96, 40))
    assert seen[-1] == (total, total)
    assert len(seen) == total if batch == 1 else len(seen) < total  # batched: fewer forward passes than windows


def test_batched_answers_equal_one_at_a_time(hf_model: tuple) -> None:
    model, tokenizer = hf_model
    questions = as_questions(make_task(7, "easy", seed=3))
    prompts = [q.question for q in questions] + ["What is 2 + 2? Answer with one number, and explain your steps."]
    one_by_one = answers_hf(model, tokenizer, prompts, max_new_tokens=8, batch=1)
    batched = answers_hf(model, tokenizer, prompts, max_new_tokens=8, batch=4)
    assert batched == one_by_one and len(set(one_by_one)) > 1  # in the prompts' order, not the sorted one
    assert accuracy_hf(model, tokenizer, questions, max_new_tokens=8, batch=8) == \
        accuracy_hf(model, tokenizer, questions, max_new_tokens=8, batch=1)


def test_each_measurement_phase_reports_its_count_and_eta(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("codecarbon")
    text = default_eval_text()
    inputs = Inputs(model=str(tiny_model["hf"]), device="cpu", eval_text=text[:4000], calib_text=text[-6000:],
                    questions=as_questions(make_task(3, "easy")),
                    measure=MeasureSettings(context=32, stride=16, max_eval_tokens=160, prompt_tokens=8,
                                            new_tokens=4, repeats=1, accuracy_batch=2))
    ticks: list[str] = []
    run_experiment(None, inputs, tmp_path / "base", tick=ticks.append)
    for phase, total in (("perplexity", len(windows(160, 32, 16))), ("accuracy", 3), ("latency", 2)):
        mine = [t for t in ticks if t.startswith(phase)]
        assert mine[0] == phase and mine[-1].startswith(f"{phase} {total}/{total}, ETA 0:00"), ticks
        assert all(", ETA " in t for t in mine[1:])


# ------------------------------------------------------------------------- the base measurement in the workspace


def base_key(workspace: Any, model: Path, **measure: Any) -> str:
    """The workspace key of the base measurement, as a run computes it (run.measure_context + Workspace.key)."""
    from agentlab.compress.run import measure_context

    text = default_eval_text()
    inputs = Inputs(model=str(model), device="cpu", eval_text=text[:4000], calib_text=text[-6000:],
                    questions=as_questions(make_task(3, "easy")), measure=MeasureSettings(**measure))
    return workspace.key(workspace.model_hash(model), {"experiment": None, **measure_context(inputs)})


def test_base_measurement_key_changes_with_the_model_and_the_settings(tmp_path: Path,
                                                                      tiny_model: dict[str, Path]) -> None:
    """A second run on the same model and settings finds the base measurement under the same key (the end-to-end
    reuse is test_run.py's); other settings or other weights give another key, so the base is measured again."""
    from agentlab.compress.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    key = base_key(ws, tiny_model["hf"], context=32, stride=16)
    assert base_key(Workspace(tmp_path / "ws"), tiny_model["hf"], context=32, stride=16) == key
    assert base_key(ws, tiny_model["hf"], context=48, stride=16) != key
    assert base_key(ws, tiny_model["hf"], context=32, stride=16, dtype="bfloat16") != key
    import torch

    threads = torch.get_num_threads()  # the latency depends on it: a record measured on other threads is not reused
    try:
        torch.set_num_threads(threads + 1)
        assert base_key(ws, tiny_model["hf"], context=32, stride=16) != key
    finally:
        torch.set_num_threads(threads)
    changed = tmp_path / "changed-model"
    shutil.copytree(tiny_model["hf"], changed)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}, indent=1))
    assert base_key(ws, changed, context=32, stride=16) != key

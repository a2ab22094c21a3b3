"""Slow: pruning and recovery of the built-in SmolLM2-135M on real English text, measured for real. Calibration and
training on Macbeth (and The Tempest), perplexity on the start of Hamlet (held out), read from the shared data
folder by path (skipped when it is missing). Each test prints its numbers as one JSON line (run with -s to see them).

Kept short for a busy 2-core CPU: one torch thread (two contend with other jobs and run slower), perplexity on the
first 2048 tokens of Hamlet with windows of 256 tokens every 128, recovery of 30 steps of 2 x 128 tokens."""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from agentlab.compress.measure import perplexity_hf  # noqa: E402
from agentlab.compress.prune import magnitude_prune, param_count, structured_prune, wanda_prune  # noqa: E402
from agentlab.compress.recover import RecoverSettings, distill, lora_recover  # noqa: E402
from agentlab.core.models.load import load_causal_lm  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # minutes each on a busy CPU

TEXTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"  # ../shared of the repo
EVAL_TOKENS, CONTEXT, STRIDE = 2048, 256, 128


def read(name: str) -> str:
    path = TEXTS / name
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def smollm2() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm("smollm2-135m", device="cpu")
    yield model, tokenizer
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wanda50(smollm2: tuple[Any, Any]) -> tuple[Any, dict[str, Any]]:
    """SmolLM2 at 50% unstructured Wanda sparsity (calibrated on Macbeth), and the report; copy before changing."""
    model = copy.deepcopy(smollm2[0])
    return model, wanda_prune(model, smollm2[1], read("macbeth.txt"), 0.5, n_samples=32, seq_len=128)


def ppl(model: Any, tokenizer: Any) -> float:
    found = perplexity_hf(model, tokenizer, read("hamlet.txt"), context=CONTEXT, stride=STRIDE,
                          max_tokens=EVAL_TOKENS)
    return round(found.ppl, 2)


def say(test: str, **numbers: Any) -> None:
    print(json.dumps({"test": test, **numbers}))


def test_wanda_beats_magnitude_at_half_sparsity(smollm2: tuple[Any, Any], wanda50: tuple[Any, dict[str, Any]]) -> None:
    start = time.perf_counter()
    dense, tokenizer = smollm2
    by_magnitude = copy.deepcopy(dense)
    magnitude = magnitude_prune(by_magnitude, 0.5)
    wanda_model, wanda = wanda50
    numbers = {"dense": ppl(dense, tokenizer), "magnitude": ppl(by_magnitude, tokenizer),
               "wanda": ppl(wanda_model, tokenizer)}
    say("wanda_vs_magnitude", ppl=numbers, sparsity=[magnitude["sparsity"], wanda["sparsity"]],
        wanda_seconds=wanda["seconds"], minutes=round((time.perf_counter() - start) / 60, 2))
    assert magnitude["sparsity"] == wanda["sparsity"] == 0.5
    assert numbers["dense"] < numbers["wanda"] < numbers["magnitude"]


def forward_seconds(model: Any, ids: Any) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(input_ids=ids)
        return time.perf_counter() - start


def test_structured_pruning_cuts_parameters_and_latency(smollm2: tuple[Any, Any], tmp_path: Path) -> None:
    start = time.perf_counter()
    dense, tokenizer = smollm2
    pruned = copy.deepcopy(dense)
    report = structured_prune(pruned, drop_layers=6, mlp_keep=0.5, heads_keep=2, tokenizer=tokenizer,
                              calib_text=read("macbeth.txt"), n_samples=16, seq_len=128)
    ids = tokenizer(read("hamlet.txt"), return_tensors="pt").input_ids[:, :256]
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for _ in range(5):  # interleaved, so a burst of load from other jobs hits both
        times["dense"].append(forward_seconds(dense, ids))
        times["pruned"].append(forward_seconds(pruned, ids))
    median = {k: statistics.median(v) for k, v in times.items()}
    pruned.save_pretrained(tmp_path / "pruned")
    tokenizer.save_pretrained(tmp_path / "pruned")
    again, _ = load_causal_lm(tmp_path / "pruned", device="cpu")
    text = tokenizer.decode(again.generate(ids[:, :16], max_new_tokens=8, do_sample=False)[0, 16:])
    say("structured", params=[report["params_before"], report["params_after"]], param_ratio=report["param_ratio"],
        dropped_layers=report["dropped_layers"], forward_256_s=median,
        latency_ratio=round(median["pruned"] / median["dense"], 3), ppl_pruned=ppl(pruned, tokenizer),
        generated=text, minutes=round((time.perf_counter() - start) / 60, 2))
    assert report["params_after"] == param_count(again) < 0.7 * report["params_before"]
    assert (again.config.num_hidden_layers, again.config.intermediate_size, again.config.num_attention_heads) == (
        24, 768, 6)
    assert median["pruned"] < 0.85 * median["dense"]


def test_lora_recovery_lowers_the_perplexity_of_a_pruned_model(smollm2: tuple[Any, Any],
                                                               wanda50: tuple[Any, dict[str, Any]]) -> None:
    start = time.perf_counter()
    tokenizer = smollm2[1]
    model = copy.deepcopy(wanda50[0])
    before = ppl(model, tokenizer)
    report = lora_recover(model, tokenizer, read("macbeth.txt") + "\n\n" + read("tempest.txt"),
                          settings=RecoverSettings(steps=30, seq_len=128, batch_size=2), lr=5e-4, r=16)
    after = ppl(model, tokenizer)
    say("lora_recovery", ppl_before=before, ppl_after=after, loss=[report["loss_before"], report["loss_after"]],
        delta_pruned_share=round(report["delta_pruned_share"], 3), sparsity=report["sparsity"],
        train_seconds=report["seconds"], minutes=round((time.perf_counter() - start) / 60, 2))
    assert report["sparsity"] == 0.5
    assert after < before


def test_distillation_lowers_the_perplexity_of_a_pruned_model(smollm2: tuple[Any, Any],
                                                              wanda50: tuple[Any, dict[str, Any]]) -> None:
    start = time.perf_counter()
    teacher, tokenizer = smollm2
    student = copy.deepcopy(wanda50[0])
    before = ppl(student, tokenizer)
    report = distill(student, teacher, tokenizer, read("macbeth.txt") + "\n\n" + read("tempest.txt"),
                     settings=RecoverSettings(steps=30, seq_len=128, batch_size=2), lr=5e-5)
    after = ppl(student, tokenizer)
    say("distill", ppl_before=before, ppl_after=after, kd_loss=[report["loss_before"], report["loss_after"]],
        sparsity=report["sparsity"], train_seconds=report["seconds"],
        minutes=round((time.perf_counter() - start) / 60, 2))
    assert report["sparsity"] == 0.5
    assert after < before

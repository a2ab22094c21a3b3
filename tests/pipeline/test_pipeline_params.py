"""Generation params are typed wherever a config sets them (a pipeline stage, the models file's defaults and
overrides, a model of the routing config): a wrong type is a `file:line: field` error and exit 2 from `config
validate` and `pipeline run` alike, before any run folder exists; what passes reaches the providers as a plain dict."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import write_models

from agentlab.cli import main
from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError
from agentlab.core.llm.config import GenerationParams, LLMConfig
from agentlab.core.llm.providers.llama_cpp import EXTRA_SAMPLING
from agentlab.pipeline.config import ModelsConfig, PipelineConfig

PIPELINE = """\
# agentlab pipeline run --pipeline pipeline.yaml
name: t
base_pipeline:
  stages:
    - name: one
      model: a
      params: {max_tokens: lots}
"""
MODELS = """\
# agentlab models check models.yaml
defaults:
  params: {max_tokens: many, temperature: hot}
models:
  a: {file: a.gguf}
"""


def err_lines(capsys: pytest.CaptureFixture) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_stage_params_of_the_wrong_type(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "pipeline.yaml").write_text(PIPELINE)
    want = ("pipeline.yaml:7: base_pipeline.stages[0].params.max_tokens: Input should be a valid integer, unable to "
            "parse string as an integer (got 'lots')")
    assert main(["config", "validate", "pipeline.yaml"]) == 2
    assert err_lines(capsys)[0] == f"error: {want}"
    models = write_models(in_tmp, ["a"])
    assert main(["pipeline", "run", "--models", str(models), "--pipeline", "pipeline.yaml", "--input", "hi"]) == 2
    assert err_lines(capsys)[0] == f"error: {want}"
    assert not (in_tmp / "runs").exists()


def test_models_file_default_params_of_the_wrong_type(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "models.yaml").write_text(MODELS)
    want = ["models.yaml:3: defaults.params.temperature: Input should be a valid number, unable to parse string as a "
            "number (got 'hot')",
            "models.yaml:3: defaults.params.max_tokens: Input should be a valid integer, unable to parse string as an "
            "integer (got 'many')"]
    assert main(["config", "validate", "models.yaml"]) == 2
    assert err_lines(capsys)[:2] == [f"error: {want[0]}", want[1]]
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "a.gguf").write_bytes(b"GGUF placeholder")
    (in_tmp / "pipeline.yaml").write_text(PIPELINE.replace("params: {max_tokens: lots}", "prompt: '{{ input }}'"))
    assert main(["pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml", "--input", "hi"]) == 2
    assert err_lines(capsys)[:2] == [f"error: {want[0]}", want[1]]
    assert main(["models", "check", "models.yaml"]) == 2
    assert err_lines(capsys)[:2] == [f"error: {want[0]}", want[1]]
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize(("params", "field", "message"), [
    ("{temperature: -1}", "temperature", "greater than or equal to 0"),
    ("{top_p: 0}", "top_p", "greater than 0"),
    ("{top_p: 1.5}", "top_p", "less than or equal to 1"),
    ("{max_tokens: 0}", "max_tokens", "greater than or equal to 1"),
    ("{max_tokens: 2.5}", "max_tokens", "fractional part"),
    ("{max_tokens: yes}", "max_tokens", "expected a number, got true"),
    ("{seed: abc}", "seed", "valid integer"),
    ("{stop: [a, 3]}", "stop", "valid string"),
    ("{top_k: -1}", "top_k", "greater than or equal to 0"),
    ("{repeat_penalty: x}", "repeat_penalty", "valid number"),
    ("{adapter: [a]}", "adapter", "valid string"),
    ("{temperature: null}", "temperature", "null is not a value here"),
    ("[1, 2]", None, "Input should be a mapping, as {key: value}"),
])
def test_every_params_field_checks_types_and_bounds(in_tmp: Path, params: str, field: str | None,
                                                    message: str) -> None:
    cases = [  # (model, file text, the params' dotted location)
        (PipelineConfig, f"base_pipeline:\n  stages:\n    - name: one\n      model: a\n      params: {params}\n",
         "base_pipeline.stages[0].params", 5),
        (ModelsConfig, f"defaults:\n  params: {params}\n", "defaults.params", 2),
        (ModelsConfig, f"models:\n  a:\n    file: a.gguf\n    overrides:\n      params: {params}\n",
         "models.a.overrides.params", 5),
        (LLMConfig, f"providers: {{p: {{kind: scripted}}}}\nmodels:\n  a:\n    provider: p\n    model: m\n"
                    f"    params: {params}\n", "models.a.params", 6),
    ]
    for model, text, at, line in cases:
        (in_tmp / "c.yaml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(in_tmp / "c.yaml", model)
        where = f"{at}.{field}" if field else at
        assert info.value.message.startswith(f"{in_tmp / 'c.yaml'}:{line}: {where}: "), info.value.message
        assert message in info.value.message


def test_valid_params_stay_a_dict_of_what_was_set(in_tmp: Path) -> None:
    (in_tmp / "models.yaml").write_text(
        "defaults:\n  params: {temperature: 0, stop: '###', top_k: 40}\n"
        "models:\n  a: {file: a.gguf, overrides: {params: {max_tokens: 8, stop: [END, STOP]}}}\n"
        "  r: {routed: r, overrides: {params: {custom_server_knob: {a: 1}}}}\n")
    cfg = load_config(in_tmp / "models.yaml", ModelsConfig)
    assert cfg.defaults.params == {"temperature": 0.0, "stop": ["###"], "top_k": 40}
    assert cfg.settings("a").params == {"temperature": 0.0, "stop": ["END", "STOP"], "top_k": 40, "max_tokens": 8}
    assert cfg.settings("r").params["custom_server_knob"] == {"a": 1}  # a routed model's server takes other keys
    assert ModelsConfig().defaults.params == {"temperature": 0.7, "max_tokens": 256}
    assert cfg.model_dump()["models"]["a"]["overrides"]["params"] == {"max_tokens": 8, "stop": ["END", "STOP"]}
    cfg = load_config(None, PipelineConfig, ["base_pipeline.stages=[{name: one, model: a}]",
                                              "base_pipeline.stages.0.params.temperature=0.2"])
    assert cfg.base_pipeline.stages[0].params == {"temperature": 0.2}


def test_set_override_of_the_wrong_type_names_the_override(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, PipelineConfig, ["base_pipeline.stages=[{name: one, model: a}]",
                                           "base_pipeline.stages.0.params.top_p=high"])
    assert info.value.message.startswith("--set base_pipeline.stages.0.params.top_p=high: "
                                         "base_pipeline.stages[0].params.top_p: Input should be a valid number")


def test_the_typed_params_know_every_sampling_extra_of_the_providers() -> None:
    assert set(EXTRA_SAMPLING) <= set(GenerationParams.model_fields)
    assert "adapter" in GenerationParams.model_fields  # the transformers provider's adapter choice


def test_a_param_local_models_do_not_read_is_refused_where_it_is_given(in_tmp: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """`max_tokenz: 5` reached llama.cpp as nothing (exit 0, the reply not limited): refused in the models file's
    defaults, a local model's overrides and a stage whose models are all local (a routed model's server takes
    other keys: test_valid_params_stay_a_dict_of_what_was_set)."""
    for text, where in [("defaults:\n  params: {max_tokenz: 5}\nmodels:\n  a: {file: a.gguf}\n", ":2: defaults.params"),
                        ("models:\n  a: {file: a.gguf, overrides: {params: {max_tokenz: 5}}}\n",
                         ":2: models.a.overrides.params")]:
        (in_tmp / "models.yaml").write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(in_tmp / "models.yaml", ModelsConfig)
        assert info.value.message.startswith(f"{in_tmp / 'models.yaml'}{where}.max_tokenz: not a param llama_cpp "
                                             "reads (did you mean max_tokens?)"), info.value.message
    models = write_models(in_tmp, ["a"])
    (in_tmp / "pipeline.yaml").write_text(PIPELINE.replace("max_tokens: lots", "max_tokenz: 5"))
    assert main(["pipeline", "run", "--models", str(models), "--pipeline", "pipeline.yaml", "--input", "hi"]) == 2
    assert err_lines(capsys)[0].startswith("error: pipeline.yaml:7: base_pipeline.stages[0].params.max_tokenz: not a "
                                           "param llama_cpp reads (did you mean max_tokens?)")
    # defaults a routed model gets too go to its server as they are (vLLM's repetition_penalty)
    (in_tmp / "models.yaml").write_text("defaults:\n  params: {repetition_penalty: 1.1}\nmodels:\n  r: {routed: r}\n")
    assert load_config(in_tmp / "models.yaml", ModelsConfig).defaults.params == {"repetition_penalty": 1.1}
    assert not (in_tmp / "runs").exists()


def test_an_entry_missing_its_source_is_named_at_its_own_line(in_tmp: Path) -> None:
    """`models: {a: {}}`: the entry's validator says "file: ...", which named the top-level `file` at line 1."""
    (in_tmp / "models.yaml").write_text("# agentlab models check models.yaml\nmodels:\n  a: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(in_tmp / "models.yaml", ModelsConfig)
    assert info.value.message.startswith(f"{in_tmp / 'models.yaml'}:3: models.a.file: give exactly one of"), \
        info.value.message

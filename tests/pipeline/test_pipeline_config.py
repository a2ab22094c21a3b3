"""Bad pipeline / models configs exit 2 through the CLI naming file:line: field, before any run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipeline_helpers import write_models

from agentlab.cli import main
from agentlab.pipeline.config import PipelineConfig, StageConfig, execution_order, find_cycle

HEAD = "name: t\nbase_pipeline:\n  stages:\n"


def run_cli(models: Path, pipeline: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    code = main(["pipeline", "run", "--models", str(models), "--pipeline", str(pipeline), "--input", "hi", *extra])
    return code, " ".join(capsys.readouterr().err.split())  # rich may wrap long lines


def write(folder: Path, body: str) -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(HEAD + body)
    return path


def test_missing_model_file_names_models_yaml_line_and_path(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a", "b"])
    (in_tmp / "models" / "b.gguf").unlink()
    pipeline = write(in_tmp, "    - {name: one, model: a}\n    - {name: two, model: b}\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2
    assert f"{models}:6: models.b.file: not found: {(in_tmp / 'models' / 'b.gguf').resolve()}" in err
    assert "agentlab models make-tiny" in err and "models_directory" in err
    assert not (in_tmp / "runs").exists()


def test_a_model_file_that_is_not_gguf_is_refused_at_load(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A text file named .gguf made a session folder, ran stage one, then failed stage two: "model '...' not found;
    tried a GGUF file (... is a file but not GGUF)". Now refused beside the missing-file check, nothing written."""
    models = write_models(in_tmp, ["a", "b"])
    bad = in_tmp / "models" / "b.gguf"
    bad.write_text("not a model, just text\n")
    pipeline = write(in_tmp, "    - {name: one, model: a}\n    - {name: two, model: b}\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert f"{models}:6: models.b.file: {bad.resolve()} is not a GGUF file" in err and "not found" not in err, err
    assert not (in_tmp / "runs").exists()


def test_a_name_close_to_a_builtin_model_names_the_builtin_ones(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`file: qwen2.5-coder-7b` (no such built-in): the hint was only to make a tiny model of that name."""
    (in_tmp / "m.yaml").write_text("models:\n  big:\n    file: qwen2.5-coder-7b\n")
    assert main(["pipeline", "run", "--models", "m.yaml", "--stage", "a=big", "--input", "hi"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "did you mean qwen2.5-coder-1.5b? built-in: smollm2-135m, qwen2.5-coder-0.5b" in err


def test_unused_missing_model_is_fine_until_used(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    from agentlab.pipeline.load import prepare

    models = write_models(in_tmp, ["a", "b"])
    (in_tmp / "models" / "b.gguf").unlink()
    loaded = prepare(models, write(in_tmp, "    - {name: one, model: a}\n"))
    assert [s.name for s in loaded.pipeline.base_pipeline.stages] == ["one"]


def test_unknown_model_names_pipeline_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a", "b", "c"])
    pipeline = write(in_tmp, "    - name: one\n      model: a\n    - name: two\n      model: x\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2
    assert f"{pipeline}:7: base_pipeline.stages[1].model: unknown model 'x' (known: a, b, c)" in err


def test_unknown_model_in_multi_list_and_aggregator(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, "    - name: m\n      type: multi\n      models:\n        - a\n        - zz\n"
                     "      aggregation: vote\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:8: base_pipeline.stages[0].models[1]: unknown model 'zz'" in err
    pipeline = write(in_tmp, "    - name: m\n      type: multi\n      models: [a, b]\n      aggregation: synthesis\n"
                     "      aggregator: judge\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:8: base_pipeline.stages[0].aggregator: unknown model 'judge'" in err


def test_unknown_input_from_stage(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a"])
    pipeline = write(in_tmp, "    - name: one\n      model: a\n    - name: two\n      model: a\n"
                     "      input_from: [one, nope]\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2
    assert f"{pipeline}:8: base_pipeline.stages[1].input_from: unknown stage 'nope' (known: one, two)" in err


def test_cycle_is_reported_with_its_path(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a"])
    pipeline = write(in_tmp, "    - name: one\n      model: a\n      input_from: three\n"
                     "    - name: two\n      model: a\n    - name: three\n      model: a\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2
    assert f"{pipeline}:6: base_pipeline.stages[0].input_from: input cycle one -> two -> three -> one" in err


def test_reading_a_later_stage_without_cycle_runs_in_dependency_order() -> None:
    stages = [StageConfig(name="final", model="a", input_from=["late", "early"]),
              StageConfig(name="early", model="a", input_from=[]),
              StageConfig(name="late", model="a", input_from="early")]
    PipelineConfig.model_validate({"base_pipeline": {"stages": [s.model_dump() for s in stages]}})
    assert find_cycle(stages) is None
    assert [s.name for s in execution_order(stages)] == ["early", "late", "final"]


@pytest.mark.parametrize(("stage", "line", "field", "message"), [
    ("    - name: m\n      type: multi\n      models: [a, b]\n      aggregation: vote\n      aggregator: a\n",
     8, "aggregator", "only for aggregation: synthesis"),
    ("    - name: m\n      type: multi\n      models: [a, b]\n      aggregation: template\n",
     4, "template", "aggregation template needs `template`"),
    ("    - name: m\n      type: multi\n      models: [a]\n      aggregation: vote\n",
     6, "models", "a multi stage needs at least 2 models"),
    ("    - name: m\n      type: multi\n      models: [a, b]\n      aggregation: mean\n",
     7, "aggregation", "Input should be 'concat', 'vote', 'synthesis' or 'template'"),
    ("    - name: m\n      type: multi\n      models: [a, b]\n",
     4, "aggregation", "a multi stage needs `aggregation`"),
    ("    - name: s\n      model: a\n      aggregation: vote\n",
     6, "aggregation", "only for multi stages"),
    ("    - name: s\n      type: multi\n      model: a\n      models: [a, b]\n      aggregation: concat\n",
     6, "model", "a multi stage takes `models`"),
])
def test_wrong_fields_per_type(in_tmp: Path, capsys: pytest.CaptureFixture, stage: str, line: int, field: str,
                               message: str) -> None:
    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, stage)
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2, err
    assert f"{pipeline}:{line}: base_pipeline.stages[0].{field}: {message}" in err


def test_template_syntax_error_at_load_names_the_field(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, "    - name: s\n      model: a\n      prompt: 'Say {{ input }'\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:6: base_pipeline.stages[0].prompt: template syntax error: line 1:" in err
    pipeline = write(in_tmp, "    - name: m\n      type: multi\n      models: [a, b]\n      aggregation: template\n"
                     "      template: '{% for a in answers %}{{ a.text }}'\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:8: base_pipeline.stages[0].template: template syntax error" in err
    # what the sandbox refuses at render: refused here, before a session folder (it was made, then the run failed
    # and `show` said to run it again)
    for reach in ("{{ ''.__class__.__mro__ }}", "{{ input['__class__'] }}", "{{ input|attr('__class__') }}"):
        pipeline = write(in_tmp, f"    - name: s\n      model: a\n      prompt: \"{reach}\"\n")
        code, err = run_cli(models, pipeline, capsys)
        assert code == 2 and "prompt: template line 1: '__" in err and "underscore attribute" in err, err
        assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("stages, line, field, message", [
    ("    - {name: a, model: a, prompt: 'see {{ stages.b }}'}\n    - {name: b, model: b}\n", 4, "prompt",
     "`stages.b`: stage 'b' runs after 'a'; stages available to 'a': none (it runs first)"),
    ("    - {name: a, model: a}\n    - {name: b, model: b, input_from: [], prompt: \"{{ stages['c'] }}\"}\n"
     "    - {name: c, model: a, input_from: a}\n", 5, "prompt",
     "`stages.c`: stage 'c' runs after 'b'; stages available to 'b': a"),
    ("    - {name: a, model: a}\n    - {name: b, model: b, prompt: '{{ stages.drfat }}'}\n", 5, "prompt",
     "`stages.drfat`: no such stage; stages available to 'b': a"),
    ("    - {name: a, model: a, prompt: '{{ inptu }}'}\n", 4, "prompt",
     "unknown variable 'inptu' (variables: input, original, stages)"),
    ("    - {name: a, model: a}\n    - {name: m, type: multi, models: [a, b], aggregation: template, "
     "template: '{{ stages.m }}'}\n", 5, "template", "`stages.m`: it is this stage; stages available to 'm': a"),
], ids=["later-stage", "later-by-key", "unknown-stage", "unknown-variable", "itself"])
def test_template_references_are_checked_before_the_run(in_tmp: Path, capsys: pytest.CaptureFixture, stages: str,
                                                        line: int, field: str, message: str) -> None:
    """A template naming a later stage or an unknown variable is refused at load, naming the stage, the field and
    the stages available (it failed at run time, after the session folder was made, with Jinja's "'dict object' has
    no attribute 'b'")."""
    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, stages)
    code, err = run_cli(models, pipeline, capsys)
    index = line - 4
    assert code == 2 and f"{pipeline}:{line}: base_pipeline.stages[{index}].{field}: {message}" in err, err
    assert not (in_tmp / "runs").exists()


def test_template_references_that_are_fine(in_tmp: Path) -> None:
    from agentlab.pipeline.load import prepare

    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, "    - {name: a, model: a}\n    - {name: b, model: b, prompt: \"{{ stages.a }} "
                     "{{ stages['a'] }} {{ stages.get('c', '') }} {% for k, v in stages.items() %}{{ k }}{% endfor %}"
                     " {% set x = original %}{{ x }} {{ range(2) | list }}\"}\n"
                     "    - {name: m, type: multi, models: [a, b], aggregation: template, template: "
                     "'{% for x in answers %}{{ x.text }}{% endfor %}{{ stages.b }}{{ input }}'}\n")
    assert [s.name for s in prepare(models, pipeline).pipeline.base_pipeline.stages] == ["a", "b", "m"]


def test_duplicate_stage_names(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a"])
    pipeline = write(in_tmp, "    - {name: s, model: a}\n    - {name: s, model: a}\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:5: base_pipeline.stages[1].name: duplicate stage name 's'" in err


def test_set_override_error_names_the_override(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    models = write_models(in_tmp, ["a"])
    pipeline = write(in_tmp, "    - {name: s, model: a}\n")
    code, err = run_cli(models, pipeline, capsys, "--set", "base_pipeline.stages.0.model=b")
    assert code == 2 and "--set base_pipeline.stages.0.model=b: base_pipeline.stages[0].model: unknown model 'b'" in err


@pytest.mark.parametrize(("spec", "message"), [
    ("x=nope", "--stage x=nope: unknown model 'nope' (known: a, b)"),
    ("x=a,b", "--stage x=a,b: a multi stage needs :AGGREGATION"),
    ("x=a,b:synthesis", "synthesis needs the aggregator model"),
    ("x=a,b:mean", "--stage x=a,b:mean: unknown aggregation 'mean' (one of concat, vote, synthesis)"),
    ("=a", "expected NAME=MODEL"),
    ("s=a", "duplicate stage name 's'"),
    ("x=a:vote", "a multi stage needs at least 2 models"),
])
def test_bad_adhoc_stage_exits_2(in_tmp: Path, capsys: pytest.CaptureFixture, spec: str, message: str) -> None:
    """Every refusal has a hint (a duplicate name and a one-model multi stage had none)."""
    models = write_models(in_tmp, ["a", "b"])
    pipeline = write(in_tmp, "    - {name: s, model: a}\n")
    code, err = run_cli(models, pipeline, capsys, "--stage", spec)
    assert code == 2 and message in err
    assert "hint:" in err, err
    if spec == "s=a":
        assert "give each stage its own NAME (the pipeline file's stages included)" in " ".join(err.split())


def test_missing_models_file_and_no_input(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["pipeline", "run", "--input", "hi"]) == 2  # no models file: the built-in ones; no pipeline file
    assert "configs/pipeline.yaml: pipeline file not found" in capsys.readouterr().err
    assert main(["pipeline", "run", "--models", "models.yaml", "--input", "hi"]) == 2
    assert "models.yaml: models file not found" in capsys.readouterr().err
    assert main(["pipeline", "run"]) == 2
    assert "no input" in capsys.readouterr().err
    # an empty input is refused like none (the model was asked an empty prompt, exit 0); a folder is not a file
    assert main(["pipeline", "run", "--input", " "]) == 2
    assert "--input: the input is empty" in capsys.readouterr().err
    # a command line byte that is not UTF-8 (`$(printf 'caf\xe9')`): an internal error after the run folder existed
    assert main(["pipeline", "run", "--stage", "a=smollm2-135m", "--input", "caf\udce9?"]) == 2
    assert "--input: not UTF-8 text (byte 0xe9 at character 4)" in capsys.readouterr().err
    assert not (in_tmp / "runs").exists()
    (in_tmp / "empty.txt").write_text("\n")
    assert main(["pipeline", "run", "--input-file", "empty.txt"]) == 2
    assert "--input-file empty.txt: the file holds only whitespace" in capsys.readouterr().err
    (in_tmp / "folder").mkdir()
    assert main(["models", "check", "folder"]) == 2
    assert "folder: is a folder, not a models file" in capsys.readouterr().err


def test_models_entry_needs_exactly_one_source(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    bad = in_tmp / "models.yaml"
    bad.write_text("# agentlab models check models.yaml\nmodels:\n  a:\n    file: a.gguf\n    routed: gpt\n")
    assert main(["config", "validate", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{bad}:4: models.a.file: give exactly one of `file`" in err


def test_a_declared_quantization_must_be_a_file_type(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`quantization: bogus` was accepted anywhere and never checked."""
    bad = in_tmp / "models.yaml"
    for value, says in (("bogus", "(q8_0, q4_k_m, f16, bfloat16, ...)"), ("q8_O", "did you mean q8_0?")):
        bad.write_text(f"# agentlab models check models.yaml\nmodels:\n  a: {{file: a.gguf, quantization: {value}}}\n")
        assert main(["config", "validate", str(bad)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"models.a.quantization: '{value}' is not a GGUF file type or a torch dtype" in err and says in err
    for value in ("Q4_K_M", "f32", "bfloat16"):
        bad.write_text(f"# agentlab models check models.yaml\nmodels:\n  a: {{file: a.gguf, quantization: {value}}}\n")
        assert main(["config", "validate", str(bad)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "red\x1b[31m", "[bold]x", ""])
def test_pipeline_name_is_a_plain_folder_name(in_tmp: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    """The name becomes part of the run folder's name (and is printed): no path separators, controls or markup."""
    models = write_models(in_tmp, ["a"])
    pipeline = in_tmp / "pipeline.yaml"
    pipeline.write_text(f"name: {json.dumps(name)}\nbase_pipeline:\n  stages:\n    - {{name: one, model: a}}\n")
    code, err = run_cli(models, pipeline, capsys)
    assert code == 2 and f"{pipeline}:1: name: String should match pattern" in err
    assert not (in_tmp / "runs").exists() and not (in_tmp / "elsewhere").exists()

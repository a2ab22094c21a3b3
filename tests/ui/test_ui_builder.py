"""The Manual page's builder without Streamlit: form values to the pipeline file's stages (only the keys each stage
type takes), checked against a models file, saved only where it may be, and read back by `config validate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.errors import ConfigError, UsageError
from agentlab.pipeline.config import ModelsConfig
from agentlab.ui.builder import StageForm, pipeline_dict, save, validate

MODELS = ModelsConfig.model_validate({"models": {"a": {"file": "a.gguf"}, "b": {"file": "b.gguf"}}})


def test_each_stage_type_writes_only_its_keys() -> None:
    stages = [StageForm("draft", model="a", system=" Be brief. ", temperature=0.2),
              StageForm("merge", type="multi", model="a", models=["a", "b"], aggregation="synthesis", aggregator="b",
                        max_tokens=32, input_from=["draft"]),
              StageForm("show", type="multi", models=["a", "b"], aggregation="template", template="{{ answers }}",
                        prompt="Q: {{ original }}", input_from=["draft", "merge"])]
    data = pipeline_dict(" p ", stages)
    assert data == {"name": "p", "base_pipeline": {"stages": [
        {"name": "draft", "type": "single", "model": "a", "system": "Be brief.", "params": {"temperature": 0.2}},
        {"name": "merge", "type": "multi", "models": ["a", "b"], "aggregation": "synthesis", "aggregator": "b",
         "params": {"max_tokens": 32}, "input_from": "draft"},
        {"name": "show", "type": "multi", "models": ["a", "b"], "aggregation": "template", "template": "{{ answers }}",
         "prompt": "Q: {{ original }}", "input_from": ["draft", "merge"]}]}}
    assert [s.name for s in validate(data, MODELS).base_pipeline.stages] == ["draft", "merge", "show"]


@pytest.mark.parametrize(("stages", "message"), [
    ([], "the pipeline has no stages"),
    ([StageForm("x", model="zz")], "base_pipeline.stages[0].model: unknown model 'zz' (known: a, b)"),
    ([StageForm("x", type="multi", models=["a", "b"], aggregation="synthesis")],
     "base_pipeline.stages[0].aggregator: synthesis needs `aggregator`"),
    ([StageForm("x", model="a", prompt="{{ input ")], "base_pipeline.stages[0].prompt: template syntax error"),
    ([StageForm("bad name", model="a")], "base_pipeline.stages[0].name: String should match pattern"),
])
def test_what_is_wrong_is_named_by_field(stages: list[StageForm], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(pipeline_dict("p", stages), MODELS)
    assert err.value.message.startswith(message)


def test_a_pipeline_name_no_run_folder_takes_is_refused_by_the_form() -> None:
    """A name of 101 characters was saved, and `config validate` said ok; the run then refused it (`run name ...:
    not usable in a folder name`). A name's error spoke of stages counting from 0."""
    with pytest.raises(ConfigError) as err:
        validate(pipeline_dict("n" * 101, [StageForm("x", model="a")]), MODELS)
    assert err.value.message.startswith("name: not usable in a folder name: 101 characters, more than 100")
    assert err.value.hint == "change it in the form"
    with pytest.raises(ConfigError) as err:
        validate(pipeline_dict("a b", [StageForm("x", model="a")]), MODELS)
    assert err.value.message.startswith("name: String should match pattern") and "stages" not in (err.value.hint or "")
    with pytest.raises(ConfigError) as err:  # a stage's error still says how stages are counted
        validate(pipeline_dict("p", [StageForm("x", model="zz")]), MODELS)
    assert err.value.hint == "change it in the form (stages count from 0)"
    assert validate(pipeline_dict("n" * 100, [StageForm("x", model="a")]), MODELS).name == "n" * 100


def test_save_where_no_file_can_be_written_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Save as" /proc/z.yaml showed FileNotFoundError's traceback on the page: the save caught AgentlabError only."""
    data = pipeline_dict("p", [StageForm("one", model="a")])
    if Path("/proc/self").is_dir():  # a folder of the kernel's, where no file can be made (root included)
        with pytest.raises(UsageError) as err:
            save(data, MODELS, Path("models.yaml"), Path("/proc/z.yaml"))
        assert err.value.message == "/proc/z.yaml: cannot be written (No such file or directory)"
        assert err.value.hint == "save it in a folder you can write to, e.g. configs/"

    def refused(path: Path, text: str) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("agentlab.ui.builder.atomic_write_text", refused)
    with pytest.raises(UsageError, match=r"p\.yaml: cannot be written \(Permission denied\)$"):
        save(data, MODELS, Path("models.yaml"), tmp_path / "p.yaml")


def test_save_writes_a_file_config_validate_accepts_and_never_overwrites_unasked(tmp_path: Path) -> None:
    data = pipeline_dict("p", [StageForm("one", model="a"), StageForm("two", type="multi", models=["a", "b"])])
    target = tmp_path / "p.yaml"
    assert save(data, MODELS, Path("models.yaml"), target) == target
    assert target.read_text().splitlines()[0] == f"# agentlab pipeline run --models models.yaml --pipeline {target} " \
                                                 '--input "..."'
    assert main(["config", "validate", str(target)]) == 0
    assert yaml.safe_load(target.read_text())["base_pipeline"]["stages"][1]["aggregation"] == "vote"
    cases = ((target, "exists"), (tmp_path, "is a folder"), (tmp_path / "no" / "p.yaml", "no such folder"))
    for path, expected in cases:
        with pytest.raises(UsageError, match=expected):
            save(data, MODELS, Path("models.yaml"), path)
    target.write_text("old")
    save(data, MODELS, Path("models.yaml"), target, overwrite=True)
    assert "base_pipeline" in target.read_text()

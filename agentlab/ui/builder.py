"""The Manual pipeline page's logic: stages from form values, checked by the pipeline's own config model against a
models file, written as the YAML `agentlab pipeline run --pipeline` and `agentlab config validate` read."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.config import dump_yaml, load_config
from agentlab.core.errors import ConfigError, UsageError
from agentlab.core.runs import atomic_write_text
from agentlab.pipeline.config import ModelsConfig, PipelineConfig, pipeline_checked

STAGE_TYPES = ("single", "multi")
AGGREGATIONS = ("vote", "concat", "synthesis", "template")
DEFAULT_PROMPT = "{{ input }}"
DEFAULT_TEMPLATE = "{% for a in answers %}{{ a.model }}: {{ a.text }}\n{% endfor %}"


@dataclass
class StageForm:
    """The form values of one stage, as the page's widgets hold them."""

    name: str
    type: str = "single"
    model: str | None = None
    models: list[str] = field(default_factory=list)
    aggregation: str = "vote"
    aggregator: str | None = None
    template: str = DEFAULT_TEMPLATE
    prompt: str = DEFAULT_PROMPT
    system: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    input_from: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The stage as the pipeline file writes it: only the keys this stage type takes, defaults left out."""
        stage: dict[str, Any] = {"name": self.name.strip(), "type": self.type}
        if self.type == "single":
            stage["model"] = self.model
        else:
            stage["models"] = list(self.models)
            stage["aggregation"] = self.aggregation
            if self.aggregation == "synthesis":
                stage["aggregator"] = self.aggregator
            if self.aggregation == "template":
                stage["template"] = self.template
        if self.prompt.strip() and self.prompt != DEFAULT_PROMPT:
            stage["prompt"] = self.prompt
        if self.system.strip():
            stage["system"] = self.system.strip()
        params = {k: v for k, v in (("temperature", self.temperature), ("max_tokens", self.max_tokens))
                  if v is not None}
        if params:
            stage["params"] = params
        if self.input_from:
            stage["input_from"] = self.input_from[0] if len(self.input_from) == 1 else list(self.input_from)
        return stage


def pipeline_dict(name: str, stages: list[StageForm]) -> dict[str, Any]:
    """The pipeline file's content for ``stages`` under ``name``."""
    return {"name": name.strip(), "base_pipeline": {"stages": [s.to_dict() for s in stages]}}


def validate(data: dict[str, Any], models: ModelsConfig) -> PipelineConfig:
    """``data`` checked as `pipeline run` checks a pipeline file against ``models``: ``ConfigError`` (one line per
    field, e.g. ``base_pipeline.stages[1].models: a multi stage needs at least 2 models``)."""
    if not data["base_pipeline"]["stages"]:
        raise ConfigError("the pipeline has no stages", hint="add a stage")
    try:
        checked = load_config(None, pipeline_checked(models.models), base=data, schema="pipeline")
    except ConfigError as exc:  # the form has no file and lines: name the field alone
        message = "\n".join(line.removeprefix("config: ") for line in exc.message.splitlines())
        stages = any(line.startswith("base_pipeline.stages") for line in message.splitlines())
        raise ConfigError(message, hint="change it in the form" + (" (stages count from 0)" if stages else "")
                          ) from None
    return checked


def header(models_path: Path, pipeline_path: Path) -> str:
    """The first line of the file: the command that runs it (`agentlab config validate` reads the command there)."""
    return (f"# agentlab pipeline run --models {shlex.quote(str(models_path))} --pipeline "
            f"{shlex.quote(str(pipeline_path))} --input \"...\"\n"
            "#\n# Built on the Manual page of `agentlab ui`.\n\n")


def pipeline_yaml(data: dict[str, Any], models: ModelsConfig, models_path: Path, pipeline_path: Path) -> str:
    """The validated pipeline as YAML text, opening with the command that runs it."""
    validate(data, models)
    return header(models_path, pipeline_path) + dump_yaml(data)


def save(data: dict[str, Any], models: ModelsConfig, models_path: Path, pipeline_path: Path, *,
         overwrite: bool = False) -> Path:
    """Write the validated pipeline to ``pipeline_path`` (atomically). An existing file is replaced only with
    ``overwrite``; a folder, a path whose parent folder is missing, or one the file cannot be written to (no
    permission, a full disk) is a ``UsageError``."""
    text = pipeline_yaml(data, models, models_path, pipeline_path)
    if pipeline_path.is_dir():
        raise UsageError(f"{pipeline_path}: is a folder", hint="give a file name ending in .yaml")
    if not pipeline_path.parent.is_dir():
        raise UsageError(f"{pipeline_path.parent}: no such folder", hint="create it first, or save elsewhere")
    if pipeline_path.exists() and not overwrite:
        raise UsageError(f"{pipeline_path}: exists", hint="tick 'overwrite' to replace it, or choose another name")
    try:
        atomic_write_text(pipeline_path, text)
    except OSError as exc:  # a folder no file can be made in (/proc), not ours to write, a full disk: one line
        raise UsageError(f"{pipeline_path}: cannot be written ({exc.strerror or exc})",
                         hint="save it in a folder you can write to, e.g. configs/") from None
    return pipeline_path

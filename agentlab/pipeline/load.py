"""Loading both configs for a run: the models file, the pipeline file checked against it, ``--stage`` ad-hoc stages,
the routing config when a routed model is used, and the files of the models that will be called."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError, MissingPackage, UsageError
from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, LLMConfig, load_llm_config
from agentlab.core.models.builtin import BUILTIN_MODELS
from agentlab.pipeline.config import (
    STAGE_NAME,
    ModelsConfig,
    PipelineConfig,
    StageConfig,
    make_advice,
    models_file_checked,
    pipeline_checked,
)

DEFAULT_MODELS = Path("configs/models.yaml")
DEFAULT_PIPELINE = Path("configs/pipeline.yaml")
AGGREGATIONS = ("concat", "vote", "synthesis")  # template needs a Jinja2 text: YAML only


@dataclass
class Loaded:
    models: ModelsConfig
    pipeline: PipelineConfig
    llm: LLMConfig | None
    models_path: Path | None

    @property
    def name(self) -> str:
        """The run folder's name suffix: the pipeline's name."""
        return self.pipeline.name


def builtin_models() -> ModelsConfig:
    """The models of a pipeline run with no models file: each built-in model under its own name
    (``--stage a=qwen2.5-coder-0.5b``), on llama.cpp with the models file's defaults."""
    return ModelsConfig.model_validate({"models": {name: {"file": name} for name in BUILTIN_MODELS}})


def load_models(path: str | Path | None = None) -> ModelsConfig:
    """The models file (default configs/models.yaml)."""
    file = Path(path) if path is not None else DEFAULT_MODELS
    if file.is_dir():
        raise ConfigError(f"{file}: is a folder, not a models file", hint="give the models YAML file itself")
    if not file.exists():  # a device or a pipe is there: read_text names what it is (as `config validate` does)
        raise ConfigError(f"{file}: models file not found",
                          hint="give the models file (`pipeline run --models FILE`, `models check FILE`); "
                          "`agentlab config examples .` writes configs/models.yaml and configs/models.local.yaml; "
                          "make local models with `agentlab models make-tiny models/tiny-a`")
    return load_config(file, ModelsConfig, schema="models")


def check_defines_models(models: ModelsConfig, file: Path) -> None:
    """Exit 2 when the models ``file`` a run is given defines no model (only ``defaults:``, or ``models:`` left out):
    said of that file, not as an unknown model of the pipeline file ("unknown model 'smollm2' (known: none)")."""
    if not models.models:
        raise ConfigError(f"{file}: defines no models (its `models:` section is missing or empty)",
                          hint="name each model the pipeline uses under `models:`, e.g. `models: {smollm2: {file: "
                          "models/smollm2.gguf}}` (a routed one: `{routed: NAME}`); `agentlab config show models` "
                          "lists every field")


def load_pipeline(path: str | Path | None, models: ModelsConfig, overrides: Iterable[str] | None = None
                  ) -> PipelineConfig:
    """The pipeline file checked against ``models`` (None: an empty pipeline, for --stage only runs)."""
    return load_config(path, pipeline_checked(models.models), overrides, schema="pipeline")


STAGE_USAGE = "use --stage NAME=MODEL or --stage NAME=M1,M2,M3:vote (concat, vote, synthesis:AGGREGATOR)"


def _example_name(name: str) -> str:
    """``name`` made a stage name (``a b`` -> ``a-b``), for the hint of one that is not."""
    made = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-_.")
    return made if made and re.fullmatch(STAGE_NAME, made) else "answer"


def parse_stage(spec: str) -> dict[str, Any]:
    """``NAME=MODEL`` (single) or ``NAME=M1,M2,M3:AGG[:AGGREGATOR]`` (multi) as a stage dict."""
    name, sep, rest = spec.partition("=")
    usage = STAGE_USAGE
    if not sep or not name.strip() or not rest.strip():
        raise UsageError(f"--stage {spec}: expected NAME=MODEL or NAME=M1,M2:AGGREGATION", hint=usage)
    if not re.fullmatch(STAGE_NAME, name.strip()):  # said here: pydantic's "should match pattern '^[A-Za-z0-9]..'"
        example = shlex.quote(f"{_example_name(name)}={rest.strip()}")
        raise UsageError(f"--stage {spec}: bad stage name {name.strip()!r}: a stage name is letters, digits and _ . - "
                         "(starting with a letter or digit)", hint=f"e.g. --stage {example}")
    parts = [p.strip() for p in rest.split(":")]
    models = [m.strip() for m in parts[0].split(",") if m.strip()]
    if len(parts) == 1 and len(models) == 1:
        return {"name": name.strip(), "type": "single", "model": models[0]}
    if len(parts) < 2 or parts[1] not in AGGREGATIONS or len(parts) > 3:
        said = ("a multi stage needs :AGGREGATION" if len(parts) < 2 else
                f"unknown aggregation {parts[1]!r}" if parts[1] not in AGGREGATIONS else None)
        raise UsageError(f"--stage {spec}: " + (f"{said} (one of {', '.join(AGGREGATIONS)})" if said else
                                                "too many ':' parts (NAME=M1,M2:AGGREGATION[:AGGREGATOR])"),
                         hint=usage)
    stage: dict[str, Any] = {"name": name.strip(), "type": "multi", "models": models, "aggregation": parts[1]}
    if parts[1] == "synthesis":
        if len(parts) < 3 or not parts[2]:
            raise UsageError(f"--stage {spec}: synthesis needs the aggregator model: ...:synthesis:MODEL", hint=usage)
        stage["aggregator"] = parts[2]
    elif len(parts) == 3:
        raise UsageError(f"--stage {spec}: only synthesis takes an aggregator model", hint=usage)
    return stage


def add_stages(pipeline: PipelineConfig, specs: Iterable[str], models: ModelsConfig) -> PipelineConfig:
    """``pipeline`` with the ``--stage`` stages appended, each reading from the stage before it."""
    specs = list(specs)
    if not specs:
        return pipeline
    data = pipeline.model_dump(mode="json")
    data["final_stage"] = None  # the answer comes from the last ad-hoc stage, as the command line reads
    for spec in specs:
        stage = parse_stage(spec)
        for name in [stage.get("model"), *stage.get("models", []), stage.get("aggregator")]:
            if name is not None and name not in models.models:
                raise UsageError(f"--stage {spec}: unknown model '{name}' (known: {', '.join(models.models)})",
                                 hint="name a model of the models file (--models FILE; without one, of "
                                 f"{DEFAULT_MODELS} if there, else the built-in models)")
        data["base_pipeline"]["stages"].append(stage)
        try:
            type(pipeline).model_validate(data)
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            hint = ("give each stage its own NAME (the pipeline file's stages included)" if "stage name" in message
                    else "one model is --stage NAME=MODEL; a multi stage names two or more: --stage NAME=M1,M2:vote"
                    if "models" in message else STAGE_USAGE)
            raise UsageError(f"--stage {spec}: {message}", hint=hint) from None
    return type(pipeline).model_validate(data)


def used_models(stages: Iterable[StageConfig]) -> set[str]:
    return {name for stage in stages for name in [*stage.model_names(), *stage.fallbacks]}


def load_routed(path: str | Path | None, models: ModelsConfig, used: set[str]) -> LLMConfig | None:
    """The routing config, only when a used model is ``routed`` (so local-only pipelines need no llm.yaml)."""
    if not any(models.backend(n) == "routed" for n in used):
        if path is not None:  # not silently ignored
            raise UsageError(f"--llm {path}: no model of this pipeline is routed, so no routing config is read",
                             hint="drop --llm, or give a stage a model with `routed:` in the models file")
        return None
    if path is None and not DEFAULT_LLM_CONFIG.is_file():
        names = sorted(n for n in used if models.backend(n) == "routed")
        raise ConfigError(f"model(s) {', '.join(names)} are routed but no routing config was found",
                          hint=f"pass --llm FILE (default {DEFAULT_LLM_CONFIG}) or a built-in model's name")
    return load_llm_config(path)


def check_used_models(models_path: Path | None, models: ModelsConfig, used: set[str],
                      routed: LLMConfig | None) -> None:
    """Exit 2 naming the models file's line when a used model's file is missing or its routed name is unknown."""
    for name in sorted(used):  # a built-in model whose package is absent: the install command, exit 2
        try:
            models.path(name)
        except MissingPackage as exc:
            where = f"{models_path}: models.{name}.file" if models_path is not None else f"model '{name}'"
            raise MissingPackage(f"{where}: {exc.message}", hint=exc.hint) from None
    if models_path is None:
        return
    missing = [n for n in sorted(used) if (path := models.path(n)) is not None and not path.exists()]
    try:
        load_config(models_path, models_file_checked(used, None if routed is None else routed.models), schema="models")
    except ConfigError as exc:
        if not missing:
            raise
        path = models.path(missing[0])
        assert path is not None
        raise ConfigError(exc.message, hint=f"{make_advice(path)}, or check models_directory "
                          f"({models.models_directory}) in {models_path}") from None


def prepare(models_path: str | Path | None, pipeline_path: str | Path | None, *, sets: Iterable[str] | None = None,
            stages: Iterable[str] | None = None, llm_path: str | Path | None = None) -> Loaded:
    """Everything ``pipeline run`` loads before the run folder exists. Without ``pipeline_path``: the default
    pipeline file, unless ``--stage`` stages are given (then they are the whole pipeline)."""
    stages = list(stages or [])
    given = Path(models_path) if models_path is not None else DEFAULT_MODELS
    models_file: Path | None = given
    if models_path is None and not DEFAULT_MODELS.exists():  # no models file: the built-in models by their names
        models, models_file = builtin_models(), None
    else:
        models = load_models(given)
        check_defines_models(models, given)
    if pipeline_path is None and not stages:
        pipeline_path = DEFAULT_PIPELINE
        if not pipeline_path.is_file():
            raise ConfigError(f"{pipeline_path}: pipeline file not found",
                              hint="pass --pipeline FILE, or build one on the command line with --stage NAME=MODEL")
    if pipeline_path is None:  # --stage alone: --set edits the stages it made (base_pipeline.stages.0.params...)
        made = add_stages(load_pipeline(None, models), stages, models).model_dump(mode="json", exclude_unset=True)
        pipeline = load_config(None, pipeline_checked(models.models), sets, base=made, schema="pipeline")
    else:
        pipeline = add_stages(load_pipeline(pipeline_path, models, sets), stages, models)
    if not pipeline.base_pipeline.stages:
        raise ConfigError(f"{pipeline_path or 'the pipeline'}: no stages",
                          hint="add stages under base_pipeline.stages, or pass --stage NAME=MODEL")
    used = used_models(pipeline.base_pipeline.stages)
    routed = load_routed(llm_path, models, used)
    check_used_models(models_file, models, used, routed)
    return Loaded(models, pipeline, routed, models_file)

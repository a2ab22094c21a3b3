"""The two configs of `agentlab pipeline`: the models file (which local GGUF / HF / routed models exist, and how to
load them) and the pipeline file (stages over those models).

Checks that need both files (a stage naming an unknown model, a used model whose file is missing) run through
``load_config`` with a subclass that adds one validator, so their errors carry file:line like every other field.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import Field, create_model, model_validator

from agentlab.core.config import RunName, StrictModel
from agentlab.core.errors import MissingPackage
from agentlab.core.llm.config import PARAMS_HELP, CacheType, Params, ResourceConfig, check_local_params
from agentlab.core.models.builtin import builtin_for_upstream, builtin_path, is_builtin
from agentlab.core.models.modelref import is_gguf_file
from agentlab.pipeline.templates import references, template_problem

Aggregation = Literal["concat", "vote", "synthesis", "template"]


# --------------------------------------------------------------------------- models.yaml


# The largest context window a models file may set: 16M tokens, past any model's (a typo of digits was a memory
# estimate of billions of GiB in `models check`).
MAX_N_CTX = 2**24


class ModelSettings(StrictModel):
    n_ctx: int = Field(2048, ge=16, le=MAX_N_CTX, description="context window in tokens (the KV cache is sized for it)")
    n_gpu_layers: int = Field(0, ge=-1, le=2**31 - 1, description="GGUF: layers offloaded to the GPU; -1: all")
    n_threads: int | None = Field(None, ge=1, le=4096, description="GGUF: CPU threads; empty: llama.cpp's default")
    n_batch: int = Field(512, ge=1, le=MAX_N_CTX, description="GGUF: prompt-processing batch size")
    cache_type: CacheType = Field("f16", description="GGUF: KV cache element type (f32, f16, q8_0, q4_0)")
    seed: int = Field(0, description="GGUF: sampling seed of the loaded model")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="HF: auto = CUDA when present, else CPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="HF: weight dtype; auto = bfloat16 on CUDA, float32 on CPU")
    load_in_4bit: bool = Field(False, description="HF: 4-bit NF4 weights through bitsandbytes (CUDA only)")
    params: Params = Field(default_factory=lambda: {"temperature": 0.7, "max_tokens": 256},
                           description=PARAMS_HELP)


def _all_optional(model: type[StrictModel], name: str, doc: str) -> type[StrictModel]:
    """The same fields as ``model``, each optional with no default: one source of truth for names, bounds, docs."""
    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        args = (info.annotation, *info.metadata)
        annotation: Any = cast(Any, Annotated)[args] if info.metadata else info.annotation
        fields[key] = (annotation | None, Field(None, description=info.description))
    return create_model(name, __base__=StrictModel, __doc__=doc, **fields)


if TYPE_CHECKING:
    class ModelOverrides(StrictModel):
        """What mypy sees of the model made below (at run time every field of ModelSettings, optional): only the
        field the code reads by attribute; the others are read through ``model_dump``."""

        params: Params | None = None
else:
    ModelOverrides = _all_optional(ModelSettings, "ModelOverrides",
                                   "Per-model settings over `defaults`; `params` are merged key by key.")


class ModelEntry(StrictModel):
    file: str | None = Field(None, min_length=1, description="GGUF file (llama_cpp backend), HF model folder (hf "
                             "backend) or a built-in model (smollm2-135m; llama_cpp unless backend: hf); relative "
                             "paths resolve against models_directory")
    routed: str | None = Field(None, min_length=1, description="instead of `file`: a model name of the routing config "
                               "(--llm FILE) served over HTTP")
    backend: Literal["auto", "llama_cpp", "hf"] = Field("auto", description="auto: a .gguf file or a built-in "
                                                        "model -> llama_cpp, a folder -> hf; hf also runs a GGUF "
                                                        "(converted once to a cached transformers folder)")
    quantization: str | None = Field(None, description="declared GGUF file type (q8_0, q4_k_m, f16, ...) or HF "
                                     "dtype; `agentlab models check` reports a mismatch with the file (not ready), "
                                     "`pipeline run` warns")
    required_for_base: bool = Field(True, description="the base pipeline needs this model: `models check` fails "
                                    "when it is missing (false: an optional extra, e.g. for --stage)")
    overrides: ModelOverrides = Field(default_factory=ModelOverrides,
                                      description="settings over `defaults` for this model")

    def local_kind(self) -> str:
        """The backend a ``file`` model runs on as the file says it (``ModelsConfig.backend`` looks at the disk):
        ``backend``, else llama_cpp for a .gguf file or a built-in, hf for a folder."""
        if self.backend != "auto":
            return self.backend
        file = self.file or ""
        return "llama_cpp" if file.endswith(".gguf") or is_builtin(file) or builtin_for_upstream(file) else "hf"

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.file is None) == (self.routed is None):
            raise ValueError("file: give exactly one of `file` (a local model) or `routed` (an HTTP model)")
        if self.routed is not None and self.backend != "auto":
            raise ValueError("backend: only for `file` models")
        if self.quantization is not None and self.quantization.lower() not in file_types():
            near = difflib.get_close_matches(self.quantization.lower(), file_types(), n=1)
            raise ValueError(f"quantization: '{self.quantization}' is not a GGUF file type or a torch dtype"
                             + (f" (did you mean {near[0]}?)" if near else " (q8_0, q4_k_m, f16, bfloat16, ...)"))
        return self


DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}  # an HF folder's dtype as a GGUF file type


@functools.cache
def file_types() -> tuple[str, ...]:
    """What ``quantization`` may declare: the GGUF file types (as ``models check`` reads them: f32, q8_0, q4_k_m,
    ...) and the torch dtypes an HF folder holds."""
    import gguf

    names = [t.name.removeprefix("MOSTLY_").removeprefix("ALL_").lower() for t in gguf.LlamaFileType
             if t.name != "GUESSED"]
    return (*names, *DTYPES)


def same_type(a: str, b: str) -> bool:
    """Whether two spellings name one type: ``f32`` and ``float32`` (a GGUF of an HF folder) are one."""
    return DTYPES.get(a.lower(), a.lower()) == DTYPES.get(b.lower(), b.lower())


class ModelsConfig(StrictModel):
    models_directory: str = Field("models", min_length=1, description="relative `file` paths resolve against this "
                                  "folder (itself relative to the current directory)")
    defaults: ModelSettings = Field(default_factory=ModelSettings, description="settings of every local model")
    resources: ResourceConfig = Field(default_factory=ResourceConfig,
                                      description="memory check before the pipeline's local models load")
    timeout_s: float = Field(600.0, gt=0, description="per-call timeout of the local models (local CPU generation "
                             "can be slow); a routed: model keeps the routing config's")
    retries: int = Field(1, ge=0, description="retries on the same local model for retryable failures (timeout, "
                         "connection, HTTP 5xx / 429, an empty reply) before a stage's fallbacks; a routed: model "
                         "keeps the routing config's")
    models: dict[str, ModelEntry] = Field(default_factory=dict, description="named models the pipeline uses")

    @model_validator(mode="after")
    def _local_params(self) -> ModelsConfig:
        """Params only local models get (a ``file`` model's ``overrides``; ``defaults`` when every model is local:
        a routed model gets them too, and its server takes other keys): a key its backend does not read is refused
        (``check_local_params``), not dropped."""
        kinds = {name: entry.local_kind() for name, entry in self.models.items() if entry.file is not None}
        if kinds and len(kinds) == len(self.models):
            check_local_params(self.defaults.params, "defaults.params", kinds.values())
        for name, kind in kinds.items():
            check_local_params(self.models[name].overrides.params or {}, f"models.{name}.overrides.params", [kind])
        return self

    def settings(self, name: str) -> ModelSettings:
        """``defaults`` with the model's ``overrides`` on top (``params`` merged key by key)."""
        over = self.models[name].overrides.model_dump(exclude_none=True)
        params = {**self.defaults.params, **over.pop("params", {})}
        return self.defaults.model_copy(update={**over, "params": params})

    def _file_path(self, file: str) -> Path:
        path = Path(file).expanduser()
        return path if path.is_absolute() else Path(self.models_directory).expanduser() / path

    def builtin(self, name: str) -> str | None:
        """The built-in model (``smollm2-135m``) the model's ``file`` names, when nothing of that name is under
        models_directory; else None."""
        file = self.models[name].file
        if file is None or self._file_path(file).exists():
            return None
        return file if is_builtin(file) else builtin_for_upstream(file)  # its hub id names it too

    def path(self, name: str) -> Path | None:
        """The model's file or folder (None for routed models); a built-in model's installed GGUF (``MissingPackage``
        when its package is not installed)."""
        file = self.models[name].file
        if file is None:
            return None
        builtin = self.builtin(name)
        return builtin_path(builtin) if builtin is not None else self._file_path(file)

    def backend(self, name: str) -> str:
        """llama_cpp, hf or routed."""
        entry = self.models[name]
        if entry.routed is not None:
            return "routed"
        if entry.backend != "auto":
            return entry.backend
        if self.builtin(name) is not None:
            return "llama_cpp"
        path = self.path(name)
        assert path is not None
        return "hf" if path.is_dir() or (not path.exists() and path.suffix != ".gguf") else "llama_cpp"

    def resolved(self) -> ModelsConfig:
        """A copy whose models_directory is absolute, so a snapshot works from any folder."""
        return self.model_copy(update={"models_directory": str(Path(self.models_directory).expanduser().resolve())})


def make_advice(path: Path) -> str:
    """How to make a local model file that is missing: ``make-tiny`` writes a folder holding ``model.gguf``; a bare
    name close to a built-in model's (``qwen2.5-coder-7b``) names the built-in ones first."""
    from agentlab.core.models.builtin import BUILTIN_MODELS, close_builtin

    close = close_builtin(path.name)  # never for a .gguf name
    if close:
        return (f"it is no built-in model either (did you mean {close}? built-in: {', '.join(BUILTIN_MODELS)}); "
                f"or make a tiny one with `agentlab models make-tiny {path}`")
    if path.name == "model.gguf":
        return f"make it with `agentlab models make-tiny {path.parent}`"
    persona = persona_advice(path)
    if persona is not None:
        return persona
    if path.suffix == ".gguf":
        return (f"make a tiny model with `agentlab models make-tiny {path.with_suffix('')}` and point `file` at its "
                "model.gguf")
    return f"make it with `agentlab models make-tiny {path}`"


def persona_advice(path: Path) -> str | None:
    """How to make the missing GGUF ``path`` of a trained adapter (a persona or skill of ``train-persona``, or an
    adapter folder adapters/STEM beside the models folder): train it and export it. None for another file (random
    weights from ``make-tiny`` are no persona)."""
    from agentlab.core.models.adapters import ADAPTER_CONFIG, PERSONAS, SKILLS

    if path.suffix != ".gguf":
        return None
    adapter = Path("adapters") / path.stem
    export = f"`agentlab train-persona export {adapter} --gguf {path}`"
    if (adapter / ADAPTER_CONFIG).is_file():
        return f"export the adapter {adapter} to it with {export}"
    if path.stem in PERSONAS or path.stem in SKILLS:
        return (f"train and export it: `agentlab train-persona --data {path.stem} --out {adapter}`, then {export}")
    return None


def models_file_checked(used: Iterable[str], routed_models: Iterable[str] | None) -> type[ModelsConfig]:
    """ModelsConfig that also checks the models a pipeline uses: files exist (a file is a GGUF), routed names are
    configured."""
    used, known_routed = sorted(set(used)), None if routed_models is None else sorted(routed_models)

    class CheckedModelsConfig(ModelsConfig):
        @model_validator(mode="after")
        def _used_models(self) -> CheckedModelsConfig:
            for name in used:  # missing files first: the most common mistake, and the hint is about them
                try:
                    path = self.path(name)
                except MissingPackage as exc:
                    raise ValueError(f"models.{name}.file: {exc.message} ({exc.hint})") from None
                if path is not None and not path.exists():
                    raise ValueError(f"models.{name}.file: not found: {path.resolve()}")
                if path is not None and path.is_file() and not is_gguf_file(path):  # a file is loaded as a GGUF
                    raise ValueError(f"models.{name}.file: {path.resolve()} is not a GGUF file (it does not start "
                                     "with GGUF's magic bytes): point `file` at a .gguf model, or at a transformers "
                                     "model folder")
            for name in used:
                routed = self.models[name].routed
                if routed is not None and known_routed is not None and routed not in known_routed:
                    raise ValueError(f"models.{name}.routed: '{routed}' is not a model of the routing config "
                                     f"(known: {', '.join(known_routed) or 'none'})")
            return self

    return CheckedModelsConfig


# --------------------------------------------------------------------------- pipeline.yaml


STAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a stage's name: it names its step file (steps/NN-NAME.json)


class StageConfig(StrictModel):
    name: str = Field(pattern=STAGE_NAME, description="unique stage name (letters, digits, "
                      "_ . -); names the step file and the `stages` template variable")
    type: Literal["single", "multi"] = Field("single", description="single: one model answers; multi: several "
                                             "models answer concurrently and `aggregation` makes one output")
    model: str | None = Field(None, description="single: the model (a name of the models file)")
    models: list[str] | None = Field(None, description="multi: two or more models (a name may repeat: each repeat "
                                     "a new sample, its seed + k)")
    aggregation: Aggregation | None = Field(None, description="multi: concat (all answers under headers), vote "
                                            "(majority of normalised answers, ties -> first model), synthesis "
                                            "(the `aggregator` model writes one answer), template (Jinja2 `template`)")
    aggregator: str | None = Field(None, description="synthesis: the model that merges the answers")
    template: str | None = Field(None, description="template aggregation: Jinja2 text over answers "
                                 "(list of {model, text}), input, original, stages")
    prompt: str = Field("{{ input }}", description="Jinja2 template of the user message; variables: input (this "
                        "stage's input), original (the pipeline input), stages (name -> earlier outputs)")
    system: str | None = Field(None, description="system message (plain text)")
    params: Params = Field(default_factory=dict, description=f"{PARAMS_HELP}; over the models' own")
    input_from: str | list[str] | None = Field(None, description="stage name(s) whose output is the input; default "
                                               "the previous stage (the first stage gets the pipeline input); a list "
                                               "joins the outputs under headers; [] reads the pipeline input")
    output_mode: Literal["answer_only", "input_plus_answer"] = Field(
        "answer_only", description="input_plus_answer: the output is the stage input followed by the answer")
    fallbacks: list[str] = Field(default_factory=list, description="models asked in order when the stage's model "
                                 "(each model of a multi stage, the aggregator) cannot answer: a load error, out of "
                                 "memory (after one retry on smaller settings), a timeout or HTTP error (after the "
                                 "models file's retries)")

    @model_validator(mode="before")
    @classmethod
    def _a_param_at_the_stage_level(cls, data: Any) -> Any:
        """A generation setting written on the stage (``temperature: 0.3``, ``temprature: 0.3``) is said to go under
        ``params``: the unknown key's "did you mean" offered the nearest stage field (``template``)."""
        for key in data if isinstance(data, dict) else ():
            param = _param_meant(key) if isinstance(key, str) and key not in cls.model_fields else None
            if param is not None:
                raise ValueError(f"{key}: unknown key: a generation setting goes under the stage's `params` "
                                 f"(did you mean params.{param}?)")
        return data

    def model_names(self) -> list[str]:
        """Every model the stage calls (aggregator included), in call order."""
        names = [self.model] if self.type == "single" and self.model else list(self.models or [])
        return names + ([self.aggregator] if self.aggregator else [])


class BasePipeline(StrictModel):
    stages: list[StageConfig] = Field(default_factory=list, description="the stages; they run in dependency order "
                                      "(declaration order where `input_from` allows)")


class PipelineConfig(StrictModel):
    # The same pattern as stage names: the name becomes part of a folder name and is printed on the terminal.
    name: RunName = Field("pipeline", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names the run folder: "
                      "runs/pipeline/<timestamp>-<name> (letters, digits, _ . -)")
    base_pipeline: BasePipeline = Field(default_factory=BasePipeline, description="the stages run by default; "
                                        "`--stage` appends ad-hoc ones")
    final_stage: str | None = Field(None, description="the stage whose output is the final answer; empty: the last "
                                    "stage to run (with --stage: the last ad-hoc stage)")

    @model_validator(mode="after")
    def _check_stages(self) -> PipelineConfig:
        stages = self.base_pipeline.stages
        seen: dict[str, int] = {}
        for index, stage in enumerate(stages):
            at = f"base_pipeline.stages.{index}"
            if stage.name in seen:
                raise ValueError(f"{at}.name: duplicate stage name '{stage.name}' (also stage {seen[stage.name]})")
            seen[stage.name] = index
            _check_stage_fields(stage, at)
        for index, stage in enumerate(stages):
            for source in _as_list(stage.input_from):
                if source not in seen:
                    raise ValueError(f"base_pipeline.stages.{index}.input_from: unknown stage '{source}' "
                                     f"(known: {', '.join(seen)})")
        if self.final_stage is not None and self.final_stage not in seen:
            raise ValueError(f"final_stage: unknown stage '{self.final_stage}' (known: {', '.join(seen) or 'none'})")
        cycle = find_cycle(stages)
        if cycle:
            first = min(seen[name] for name in cycle[:-1])
            raise ValueError(f"base_pipeline.stages.{first}.input_from: input cycle "
                             f"{' -> '.join(cycle)} (each stage feeds the next)")
        ran: list[str] = []  # `stages` of a template: the outputs of the stages run before it
        for stage in execution_order(stages):
            _check_references(stage, f"base_pipeline.stages.{seen[stage.name]}", ran, seen)
            ran.append(stage.name)
        return self


def _param_meant(key: str) -> str | None:
    """The generation param (``params``) an unknown stage ``key`` names, or looks closer to than to any stage field
    (``temprature``: temperature, not template), else None."""
    from agentlab.core.llm.config import GenerationParams

    params = list(GenerationParams.model_fields)
    if key in params:
        return key

    def nearest(names: Iterable[str]) -> tuple[float, str]:
        return max((difflib.SequenceMatcher(None, key, name).ratio(), name) for name in names)

    score, param = nearest(params)
    return param if score >= 0.8 and score > nearest(StageConfig.model_fields)[0] else None


def _check_stage_fields(stage: StageConfig, at: str) -> None:
    def wrong(field: str, why: str) -> ValueError:
        return ValueError(f"{at}.{field}: {why}")

    if stage.type == "single":
        if stage.model is None and stage.models:  # several models: what a multi stage takes
            raise wrong("models", "a single stage takes one `model`; for several, write `type: multi` with an "
                        "`aggregation` (concat, vote, synthesis or template)")
        if stage.model is None:
            raise wrong("model", "a single stage needs `model`")
        for field in ("models", "aggregation", "aggregator", "template"):
            if getattr(stage, field) is not None:
                raise wrong(field, "only for multi stages (type: multi)")
    else:
        if stage.model is not None:
            raise wrong("model", "a multi stage takes `models` (a list), not `model`")
        if not stage.models or len(stage.models) < 2:
            raise wrong("models", "a multi stage needs at least 2 models")
        if stage.aggregation is None:
            raise wrong("aggregation", "a multi stage needs `aggregation`: concat, vote, synthesis or template")
        if (stage.aggregator is not None) != (stage.aggregation == "synthesis"):
            raise wrong("aggregator", "synthesis needs `aggregator` (the model that merges the answers)"
                        if stage.aggregator is None else "only for aggregation: synthesis")
        if (stage.template is not None) != (stage.aggregation == "template"):
            raise wrong("template", "aggregation template needs `template` (a Jinja2 text)"
                        if stage.template is None else "only for aggregation: template")
    for field in ("prompt", "template"):
        problem = template_problem(getattr(stage, field))
        if problem:
            raise wrong(field, f"template {problem}")


# the variables of each template field (aggregate.render_template, run._run_stage)
TEMPLATE_VARIABLES = {"prompt": ("input", "original", "stages"),
                      "template": ("answers", "input", "original", "stages")}


def _check_references(stage: StageConfig, at: str, ran: list[str], names: Iterable[str]) -> None:
    """Each template of ``stage`` reads only its variables and the outputs of the stages run before it (``ran``)."""
    for field, known in TEMPLATE_VARIABLES.items():
        text = getattr(stage, field)
        if text is None:
            continue
        variables, named = references(text)
        unknown = sorted(variables - set(known))
        if unknown:
            raise ValueError(f"{at}.{field}: unknown variable '{unknown[0]}' (variables: {', '.join(known)})")
        for name in sorted(named - set(ran)):
            why = ("it is this stage" if name == stage.name else f"stage '{name}' runs after '{stage.name}'"
                   if name in names else "no such stage")
            raise ValueError(f"{at}.{field}: `stages.{name}`: {why}; stages available to '{stage.name}': "
                             f"{', '.join(ran) or 'none (it runs first)'}")


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def dependencies(stages: list[StageConfig]) -> dict[str, list[str]]:
    """Stage name -> the stages it reads from (default: the previous stage; none for the first)."""
    deps = {}
    for index, stage in enumerate(stages):
        explicit = _as_list(stage.input_from)
        deps[stage.name] = explicit if stage.input_from is not None else [stages[index - 1].name] if index else []
    return deps


def find_cycle(stages: list[StageConfig]) -> list[str] | None:
    """A dependency cycle as a path (``a -> b -> a``), or None."""
    deps = dependencies(stages)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in deps.get(name, []):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep in deps and dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for stage in stages:
        if stage.name not in state:
            found = visit(stage.name)
            if found:
                return list(reversed(found))  # read as "a feeds b feeds a"
    return None


def execution_order(stages: list[StageConfig]) -> list[StageConfig]:
    """Topological order, stable: among the stages whose inputs are ready, the first declared runs first."""
    deps = dependencies(stages)
    done: set[str] = set()
    order: list[StageConfig] = []
    while len(order) < len(stages):
        ready = next((s for s in stages if s.name not in done and all(d in done for d in deps[s.name])), None)
        if ready is None:
            raise ValueError(f"stages read from each other in a cycle: {' -> '.join(find_cycle(stages) or [])}")
        order.append(ready)
        done.add(ready.name)
    return order


def pipeline_checked(known_models: Iterable[str] | dict[str, ModelEntry]) -> type[PipelineConfig]:
    """PipelineConfig that also checks every model / aggregator name against the models file, and, given the
    models file's entries, the params of a stage whose models are all local (``check_local_params``: a key they do
    not read would be dropped; a routed model's server takes other keys)."""
    known = list(known_models)
    local = {name: entry.local_kind() for name, entry in known_models.items() if entry.file is not None} \
        if isinstance(known_models, dict) else {}

    class CheckedPipelineConfig(PipelineConfig):
        @model_validator(mode="after")
        def _known_models(self) -> CheckedPipelineConfig:
            for index, stage in enumerate(self.base_pipeline.stages):
                at = f"base_pipeline.stages.{index}"
                refs = [("model", stage.model), ("aggregator", stage.aggregator)]
                refs += [(f"models.{i}", name) for i, name in enumerate(stage.models or [])]
                refs += [(f"fallbacks.{i}", name) for i, name in enumerate(stage.fallbacks)]
                for field, name in refs:
                    if name is not None and name not in known:
                        raise ValueError(f"{at}.{field}: unknown model '{name}' (known: {', '.join(known) or 'none'})")
                names = [name for _, name in refs if name is not None]
                if names and all(name in local for name in names):
                    check_local_params(stage.params, f"{at}.params", [local[name] for name in names])
            return self

    return CheckedPipelineConfig

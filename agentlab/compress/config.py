"""The `agentlab compress` config: the model, the goal, the texts, the search and its budgets, and the typed
experiment a planner proposes (up to three steps applied in order, prune, recover, quantize: the fields below and
docs/commands/compress.md#an-experiment). Every field is validated, so a planner (LLM or Optuna) can only propose
what can run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from agentlab.compress.objective import ConstraintSpec, Goal, ObjectiveSpec, contradictions, parse_objective
from agentlab.core.config import ModelName, RunName, StrictModel
from agentlab.core.errors import UsageError
from agentlab.core.llm.config import RoutingRef
from agentlab.core.search.kinds import CompressPlanner, describe
from agentlab.core.search.settings import LLMPlannerSettings, StorageURL, warm_start_spec

GGUF_TYPES = ("Q8_0", "Q5_K_M", "Q4_K_M")


class PruneStep(StrictModel):
    method: Literal["magnitude", "wanda", "structured"] = Field(description="magnitude: smallest |w|; wanda: |w| x "
                                                               "input activation norm; structured: remove MLP "
                                                               "channels and layers (the model shrinks)")
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="magnitude / wanda: share of each layer's weights set "
                            "to zero (2:4 forces 0.5)")
    pattern: Literal["unstructured", "2:4"] = Field("unstructured", description="magnitude / wanda: any weights, or "
                                                    "2 of every 4 consecutive inputs")
    mlp_keep: float = Field(1.0, gt=0.0, le=1.0, description="structured: share of MLP channels kept")
    drop_layers: int = Field(0, ge=0, description="structured: decoder layers removed (the least important)")

    @model_validator(mode="after")
    def _check(self) -> PruneStep:
        # Settings the method does not use go back to their defaults, so one experiment has one key (an LLM
        # planner's "drop_layers: 2" on a magnitude prune is the same experiment as without it).
        if self.method == "structured":
            self.sparsity, self.pattern = 0.5, "unstructured"
        else:
            self.mlp_keep, self.drop_layers = 1.0, 0
        if self.pattern == "2:4":  # a structured prune's pattern was reset above
            self.sparsity = 0.5
        if self.method == "structured" and self.mlp_keep == 1.0 and self.drop_layers == 0:
            raise ValueError("structured pruning removes nothing: set mlp_keep below 1 or drop_layers above 0")
        return self


class RecoverStep(StrictModel):
    method: Literal["lora", "distill"] = Field(description="lora: LoRA fine-tune on the calibration text, merged; "
                                               "distill: logit distillation from the base model")
    steps: int = Field(40, ge=1, description="optimizer steps")
    lr: float = Field(2e-4, gt=0, allow_inf_nan=False, description="learning rate")


class QuantizeStep(StrictModel):
    method: Literal["int8_weight_only", "int8_dynamic", "torch_dynamic_int8", "bnb_4bit", "bnb_8bit", "gguf"] = Field(
        description="int8_weight_only / int8_dynamic (torchao, CPU or CUDA), torch_dynamic_int8 (torch, CPU), "
        "bnb_4bit / bnb_8bit (bitsandbytes, CUDA), gguf (llama.cpp quantizer; measured on llama.cpp)")
    gguf_type: Literal["Q8_0", "Q5_K_M", "Q4_K_M"] = Field("Q8_0", description="method gguf: the GGUF type")

    @model_validator(mode="after")
    def _unused(self) -> QuantizeStep:
        if self.method != "gguf":
            self.gguf_type = "Q8_0"  # unused: one experiment, one key
        return self


class Experiment(StrictModel):
    prune: PruneStep | None = Field(None, description="pruning, first")
    recover: RecoverStep | None = Field(None, description="recovery after pruning (needs prune)")
    quantize: QuantizeStep | None = Field(None, description="quantization, last")

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if self.recover is not None and self.prune is None:
            raise ValueError("recover needs a prune step before it")
        if self.prune is None and self.quantize is None:
            raise ValueError("an experiment needs a prune or a quantize step")
        return self

    def label(self) -> str:
        parts = []
        if self.prune is not None:
            p = self.prune
            parts.append(f"{p.method} mlp {p.mlp_keep:g} -{p.drop_layers}L" if p.method == "structured"
                         else f"{p.method} {p.sparsity:.0%} {p.pattern}")
        if self.recover is not None:
            parts.append(f"+{self.recover.method} {self.recover.steps}")
        if self.quantize is not None:
            q = self.quantize
            parts.append(f"gguf {q.gguf_type}" if q.method == "gguf" else q.method)
        return " > ".join(parts)


class HarnessTask(StrictModel):
    harness: str = Field(description="an lm-eval task (or tag) whose first task_questions items give the accuracy "
                         "(the mean of each task's first metric), instead of the built-in arithmetic questions; "
                         "`agentlab eval tasks` lists the bundled ones")
    include_path: list[Path] = Field(default_factory=list, description="folders of your own lm-eval task YAMLs")
    chat_template: bool = Field(True, description="wrap prompts in the model's chat template")


def _task_kind(value: Any) -> str:
    """A mapping (or a ``HarnessTask``) is an lm-eval task, anything else a file: each error is then the one member's
    (``task.foo: unknown key``), not pydantic's line for every member of the union."""
    return "lm-eval" if isinstance(value, dict | HarnessTask) else "file"


# tags no key of the task is named: the error's location skips them (``task.foo``, not ``task.harness.foo``)
TaskSpec = Annotated[Annotated[Path, Tag("file")] | Annotated[HarnessTask, Tag("lm-eval")], Discriminator(_task_kind)]


class MeasureSettings(StrictModel):
    context: int = Field(256, ge=8, description="perplexity: window length in tokens")
    stride: int = Field(128, ge=1, description="perplexity: window start every N tokens (< context)")
    max_eval_tokens: int = Field(4096, ge=16, description="perplexity: tokens of the evaluation text used")
    prompt_tokens: int = Field(128, ge=1, description="latency: prompt length")
    new_tokens: int = Field(32, ge=1, description="latency: tokens decoded")
    repeats: int = Field(3, ge=1, description="latency: timed repeats after one warm-up (p50 reported)")
    country: str = Field("USA", description="codecarbon: ISO code of the grid's country (CO2e per kWh)")
    perplexity_batch: int = Field(4, ge=1, description="perplexity: windows scored together (1: one at a time)")
    accuracy_batch: int = Field(32, ge=1, description="accuracy: questions decoded together, left-padded, with the KV "
                                "cache (1: one at a time)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype while the model is compressed and measured: auto is the dtype it "
        "deploys in on the device (float32 on CPU, bfloat16 on CUDA)")

    @model_validator(mode="after")
    def _check(self) -> MeasureSettings:
        if self.stride >= self.context:
            raise ValueError(f"stride {self.stride} must be below context {self.context}")
        return self


class CompressSearch(LLMPlannerSettings):
    """compress's search, under ``search:`` as nas's is: the planner, the budget, the study; the LLM planner's keys
    (``history``, ``llm_*``, ``agent``) come from ``LLMPlannerSettings``."""

    planner: CompressPlanner = Field("nsga2", description="who proposes experiments: " + describe("compress"))
    max_iterations: int = Field(8, ge=1, description="experiments, the base model's measurement not counted")
    storage: StorageURL = Field(None, description="Optuna storage of the search's study, one trial per experiment "
                                "and one for the base model (objective values and constraint violation): "
                                "sqlite:///f.db, a journal file, or an RDB URL; shared by several runs (each with its "
                                "own budget), its samplers learn from all of them; "
                                "on a database server (postgresql, mysql) the workers run one search with one "
                                "budget (default: study.db in the run folder)")
    study_name: str = Field("compress", min_length=1, description="the study's name in storage (one goal per study)")
    warm_start: warm_start_spec("[{quantize: gguf, gguf_type: Q8_0}]") = Field(  # type: ignore[valid-type]
        False, description="knowledge as the first experiments after the base model, for every planner: true: the "
        "knowledge base's leads (llama.cpp's GGUF types of the whole model, the least lossy first, where the space "
        "offers GGUF); a list: your own experiments, each a mapping of settings (prune, quantize, gguf_type, ...) "
        "to values of the space. One already run is skipped; they count against max_iterations")

    @model_validator(mode="after")
    def _leads_fit_a_space(self) -> CompressSearch:
        """Each warm_start entry checked against every space compress can build (any model, any device), so
        `config validate` refuses a setting or value no run could take, at its file and line; whether this model
        on this device offers it is checked when the run prepares (``run.warm_leads``)."""
        from agentlab.compress.space import Space  # space.py imports this module

        widest = Space.widest()
        for i, changes in enumerate(self.warm_start if isinstance(self.warm_start, list) else []):
            _, error = widest.lead(changes)
            if error:
                raise ValueError(f"warm_start.{i}: {error}")
        return self


class CompressConfig(StrictModel):
    """The `agentlab compress` config; the search's settings are under ``search:`` (``CompressSearch``)."""

    # the keys that moved from the top level to ``search:`` (issue 59): ``load_config`` moves an old config's, with a
    # warning, and gives an override of an old name (``--set max_iterations=4``) the new one
    MOVED_KEYS: ClassVar[dict[str, str]] = {key: f"search.{key}" for key in CompressSearch.model_fields}
    # What a resume may change (core.runs.resume_changes): the planning, budget and memory, logging; not what an
    # experiment is measured against (the model, the goal, texts, task and its seed, the measurement, its batches
    # and its grid's country: the base model's CO2e, and the carbon budget's sum, are in one country's, device)
    # nor where the study lives.
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = (
        "name", "llm", "carbon_budget", "workspace", "mlflow", "checkpoints_mb",
        *(f"search.{key}" for key in CompressSearch.model_fields if key not in ("storage", "study_name")))

    name: RunName = Field("compress", description="run name (folder suffix)")
    model: ModelName = Field("smollm2-135m", description="the model to compress: the built-in smollm2-135m, a "
                       "transformers folder, a GGUF file (de-quantized once to a cached transformers folder, where "
                       "the experiments start) or a cached hub id")
    objective: str | None = Field("maximize speedup with <2% accuracy loss", description="the goal in words "
                                  "(parsed and printed); empty: objectives and constraints below")
    objectives: list[ObjectiveSpec] = Field(default_factory=list, description="the goal stated directly (used "
                                            "when objective is empty)")
    constraints: list[ConstraintSpec] = Field(default_factory=list, description="constraints stated directly")
    eval_text: Path | None = Field(None, description="held-out text for perplexity (default: the command's own)")
    calib_text: Path | None = Field(None, description="calibration / recovery text (Wanda, LoRA, distillation); "
                                    "must differ from eval_text")
    task: TaskSpec | None = Field(None, description="accuracy's task: a JSONL file of {\"question\", \"answer\"}, "
                                  "or an lm-eval task ({harness: NAME}); default: a generated arithmetic task")
    task_questions: int = Field(40, ge=1, description="questions of the task used for accuracy")
    llm: RoutingRef | None = Field(None, description="routing config of the LLM planner, or a built-in model's "
                                   "name (--llm)")
    carbon_budget: float | None = Field(None, gt=0, description="kg CO2e for the whole search: it stops before an "
                                        "experiment would exceed it")
    workspace: Path | None = Field(None, description="memory across runs (default runs/compress/workspace "
                                       "of the current folder); the run's config.yaml keeps it absolute, so a resume "
                                       "from another folder uses the same one")
    mlflow: str | None = Field(None, description="MLflow tracking URI (e.g. sqlite:///mlflow.db); the agent's "
                               "query_experiments and best_config read it")
    checkpoints_mb: float = Field(2048, ge=0, description="MB of compressed models kept in the workspace's "
                                  "checkpoints/ (the Pareto front's, so the agent's evaluate reloads them instead of "
                                  "building them again); the least recently used go first beyond it; 0 keeps none")
    measure: MeasureSettings = Field(default_factory=MeasureSettings, description="how experiments are measured")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    seed: int = Field(0, description="seed of the planners and the recovery training")
    search: CompressSearch = Field(default_factory=CompressSearch, description="the search: planner, budget, study, "
                                   "the LLM planner's and the agent's settings")

    @field_validator("carbon_budget", "checkpoints_mb")
    @classmethod
    def _finite(cls, value: float | None, info: Any) -> float | None:
        """inf passed ``gt=0`` and was written to results.json as a bare ``Infinity``, which is not JSON."""
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number of kg CO2e; leave it out for no limit"
                             if info.field_name == "carbon_budget" else
                             "must be a finite number of MB (a large one keeps more)")
        return value

    @field_validator("eval_text", "calib_text")
    @classmethod
    def _a_file(cls, path: Path | None, info: Any) -> Path | None:
        """A folder is refused at the field (its file, line and key named), not when the text is read."""
        if path is not None and path.is_dir():
            what = "an evaluation text" if info.field_name == "eval_text" else "a calibration text"
            raise ValueError(f"{str(path)!r} is a directory, expected {what}: give the text file inside it")
        return path

    @field_validator("objective")
    @classmethod
    def _readable(cls, objective: str | None) -> str | None:
        """The sentence is read in validation, so that an error names the file, line and field that gave it (the
        UsageError of a sentence read after validation named none of them)."""
        if objective:
            try:
                parse_objective(objective)
            except UsageError as exc:  # "objective 'make it purple': no 'maximize X' ...": said at the field, which
                # names the text (`--objective TEXT:`, `--set objective=TEXT:`, or FILE:LINE of it): not again here
                message = exc.message.removeprefix(f"objective '{objective}'").removeprefix(": ")
                raise ValueError(message + (f"; {exc.hint}" if exc.hint else "")) from None
        return objective

    @model_validator(mode="after")
    def _goal(self) -> CompressConfig:
        if self.constraints and not self.objectives:
            # constraints belong to a YAML goal; the sentence carries its own (before, this was "the goal is given
            # twice, in words (objective)" though objective was not written)
            raise ValueError("constraints: given without objectives, so they belong to no goal (the objective "
                             "sentence carries its own constraints): add objectives: (with objective: \"\"), or "
                             "write the constraint into the sentence, e.g. objective: \"maximize speedup with size < "
                             "100 MB\"")
        if not self.objective and not self.objectives:
            raise ValueError("objective: no goal: give objective (the goal in words) or objectives")
        if self.objective and self.objectives:
            # objectives given beside the default sentence are the goal; beside a sentence given too, either may be
            # the mistake: refused
            if "objective" in self.model_fields_set:
                raise ValueError("objective: the goal is given twice, in words (objective) and as objectives: set "
                                 "objective: \"\" to use objectives and constraints, or remove them to use the "
                                 "sentence")
            self.objective = None
        if not self.objective:  # the YAML goal: refused as the sentence's is when no result could meet it
            for field, problems in (("objectives", contradictions(self.objectives, [])),
                                    ("constraints", contradictions([], self.constraints))):
                if problems:
                    raise ValueError(f"{field}: {'; '.join(problems)}: no result could meet this goal")
        return self

    def goal(self) -> Goal:
        if self.objective:
            return parse_objective(self.objective)
        return Goal(objectives=self.objectives, constraints=self.constraints)

"""The `agentlab train-persona` config: base model, chat data, LoRA, training.

The defaults train a rank-16 all-linear LoRA of the built-in SmolLM2-135M on a shipped persona in a few minutes on a
2-core CPU (float32); with CUDA the same config trains QLoRA (4-bit NF4, bf16 compute).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from agentlab.core.config import ModelName, RunName, StrictModel
from agentlab.core.skills import DATA_DIR
from agentlab.core.tracking import TrackingURI, tracking_field

SHIPPED_DATA = Path(__file__).resolve().parent / "data"  # sft_persona_{a,b,c}.jsonl, made by personas.py
SHIPPED_PERSONAS = ("persona_a", "persona_b", "persona_c")  # --data persona_b: the shipped file, from anywhere
# --data skill_units: the seed skills of `evolve` (agentlab/core/skills.py), shipped beside the core
SHIPPED_SKILLS = ("skill_arithmetic", "skill_geography", "skill_units")


class DataConfig(StrictModel):
    path: Path = Field(SHIPPED_DATA / "sft_persona_a.jsonl", description="chat JSONL: one {\"messages\": "
                       "[{\"role\", \"content\"}, ...]} per line (roles system, user, assistant); default: the "
                       "shipped persona A (terse answers); _b (a teacher) and _c (a pirate) lie beside it; the names "
                       "persona_a, persona_b and persona_c stand for these files; skill_arithmetic, skill_geography "
                       "and skill_units for the shipped skill data (evolve's seeds)")
    max_length: int = Field(512, ge=16, description="longest conversation in tokens (chat template included)")
    truncate: bool = Field(False, description="cut conversations longer than max_length (and count them) instead "
                           "of stopping with their file:line")
    packing: bool = Field(False, description="pack several conversations into each max_length row, each attending "
                          "only to itself; fewer padding tokens, same loss")

    @field_validator("path", mode="before")
    @classmethod
    def _shipped(cls, value: object) -> object:
        """`persona_a`, `persona_b` or `persona_c` (no such file here) names the shipped data, from any folder; so do
        `skill_arithmetic`, `skill_geography` and `skill_units`."""
        name = Path(str(value)).name
        if name in SHIPPED_PERSONAS and not Path(str(value)).exists():
            return SHIPPED_DATA / f"sft_{name}.jsonl"
        if name in SHIPPED_SKILLS and not Path(str(value)).exists():
            return DATA_DIR / f"sft_{name}.jsonl"
        return value


class LoraSettings(StrictModel):
    # every number finite: `--lr inf` or `train.weight_decay: .inf` passed (`--epochs inf` then failed with an
    # OverflowError once the model had loaded, in a run folder left failed); NaN failed its bound already
    model_config = ConfigDict(allow_inf_nan=False)

    r: int = Field(16, ge=1, le=512, description="LoRA rank (16-32 for personas)")
    alpha: int | None = Field(None, ge=1, description="LoRA alpha; empty: 2 x r")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="modules that get adapters: all-linear, or "
                                            "a list of names such as [q_proj, v_proj]")


class TrainSettings(StrictModel):
    model_config = ConfigDict(allow_inf_nan=False)  # as LoraSettings

    epochs: float = Field(3.0, gt=0, description="passes over the data (max_steps wins when set); 3 x 150 "
                           "conversations is ~30 steps, ~4 minutes for SmolLM2-135M on 2 CPU cores")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(4, ge=1, description="conversations per device per forward pass")
    grad_accum: int = Field(4, ge=1, description="forward passes per optimizer step")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate (cosine decay after warmup); 1e-3 "
                                  "taught SmolLM2-135M a persona in 30 steps, 2e-4 (common for 7B+ models) did not")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of the steps spent warming up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="seed of the adapter's initialisation and the data order")
    save_steps: int = Field(10, ge=1, description="checkpoint every this many steps (what --resume continues from)")
    logging_steps: int = Field(1, ge=1, description="record the loss every this many steps")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory on long conversations")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; empty: torch's default (every core); on "
                                "a machine busy with other work 1 can be several times faster")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA (QLoRA compute), float32 on CPU")
    load_in_4bit: Literal["auto", True, False] = Field(
        "auto", description="QLoRA: 4-bit NF4 base weights with double quantization; auto: on CUDA only")
    assistant_only_loss: bool = Field(True, description="loss on assistant tokens only (system and user tokens "
                                      "are context, never targets)")


class EvalSettings(StrictModel):
    model_config = ConfigDict(allow_inf_nan=False)  # as LoraSettings

    tasks: list[str] = Field(default_factory=list, description="lm-eval tasks that score the adapter against its "
                             "base when training ends (e.g. agentlab_style_pirate; `agentlab eval tasks` lists the "
                             "bundled ones); empty: no evaluation")
    include_path: list[Path] = Field(default_factory=list, description="folders of your own lm-eval task YAMLs")
    limit: int | None = Field(50, ge=1, description="items of each task scored (empty: all)")
    chat_template: Literal["auto", True, False] = Field("auto", description="wrap prompts in the chat template the "
                                                        "adapter was trained with; auto: when the tokenizer has one")
    batch_size: int = Field(8, ge=1, description="requests per forward pass")
    min_logit_change: float = Field(1e-4, gt=0, description="an adapter whose largest logit change on the probe is "
                                    "below this changes nothing (untrained, or not applied): not scored, exit 2")


class TrainPersonaConfig(StrictModel):
    # What a resume may change (core.runs.resume_changes): the budget, checkpoints and logging, speed, what happens
    # when training ends, where the adapter goes (--out: a run whose folder could not be written to is saved by a
    # resume with another). The rest decides what the checkpoints hold (a new rank does not load; new data or a new
    # rate would mix two runs in one adapter).
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = (
        "name", "out", "force", "mlflow", "eval", "train.max_steps", "train.epochs", "train.save_steps",
        "train.logging_steps", "train.threads", "train.gradient_checkpointing")

    name: RunName | None = Field(None, description="run name (folder suffix); empty: the --out folder's name, else the "
                             "data's (persona_a, skill_units, chats for chats.jsonl)")
    base_model: ModelName = Field("smollm2-135m", description="base model: the built-in smollm2-135m, a local "
                            "transformers folder, a GGUF file, or an HF hub id already in the local hub cache")
    out: Path | None = Field(None, description="the adapter folder to write (a plain PEFT adapter and its card); "
                             "empty: the run folder's adapter/")
    force: bool = Field(False, description="write the adapter over an existing --out folder")
    data: DataConfig = Field(default_factory=DataConfig, description="the chat data")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the adapter")
    train: TrainSettings = Field(default_factory=TrainSettings, description="the training run")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="lm-evaluation-harness when training "
                               "ends: the adapter and its base on the same items, paired (`--eval TASK`)")
    mlflow: TrackingURI = tracking_field()

    @model_validator(mode="after")
    def _name(self) -> TrainPersonaConfig:
        """No name given: the adapter's folder names the run, else the data file (``sft_`` dropped), so the runs of
        several personas and skills can be told apart in runs/train-persona/."""
        if self.name is None:
            source = self.out.absolute().name if self.out is not None else self.data.path.stem.removeprefix("sft_")
            self.name = re.sub(r"[^\w.-]+", "_", source).strip("._")[:100] or "persona"
        return self

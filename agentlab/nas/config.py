"""The `agentlab nas` config: data, base model, training, and the search.

The built-in defaults are sized for a 2-core CPU with no data file: a synthetic ETT-like series and a small Informer,
so `agentlab nas --max-iterations 20` finishes in minutes. `configs/nas_etth1.yaml` follows the Informer paper's
protocol; `configs/nas_ett96.yaml` searches every family (``model.family``) and the lookback at horizon 96, each
family trained under its own budget (``train.per_family``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from agentlab.core.config import Flag, RunName, StrictModel, set_label
from agentlab.core.errors import ConfigError
from agentlab.core.search.kinds import NasPlanner, describe
from agentlab.core.search.settings import LLMPlannerSettings, StorageURL, WarmStartSpec
from agentlab.core.search.space import ParamSpec, lookup
from agentlab.core.tracking import TrackingURI, tracking_field


class DataConfig(StrictModel):
    path: Path | None = Field(None, description="ETT-format CSV (a `date` column + numeric columns); empty: the "
                              "built-in synthetic multivariate series")
    features: Literal["M", "S", "MS"] = Field("M", description="M: all channels -> all; S: target -> target; "
                                              "MS: all channels -> target")
    target: str = Field("OT", description="target column (S and MS)")
    freq: str = Field("auto", description="time-feature frequency: auto (from the timestamps), s, t, h, d, b, w, m")
    split: Literal["auto", "ett_hour", "ett_minute", "ratio"] = Field(
        "auto", description="auto: the standard 12/4/4-month split for ETTh*/ETTm* files, else 70/10/20 by ratio")
    seq_len: int = Field(48, ge=1, description="lookback: input steps of every window (searchable, e.g. {choices: "
                         "[96, 192, 336, 512, 720]}; a value that leaves a split without a window is refused)")
    label_len: int = Field(24, ge=0, description="known steps given to the decoder (generative inference); only "
                           "the informer family has a decoder: set (not 0) where no trial is an informer, "
                           "it is refused")
    pred_len: int = Field(24, ge=1, description="forecast horizon")
    synthetic_steps: int = Field(2000, ge=200, description="length of the synthetic series (when no path)")
    synthetic_channels: int = Field(7, ge=1, description="channels of the synthetic series (when no path)")

    @model_validator(mode="after")
    def _lengths(self) -> DataConfig:
        if self.label_len > self.seq_len:
            raise ValueError(f"data.label_len: must not exceed data.seq_len ({self.label_len} > {self.seq_len})")
        return self


Family = Literal["informer", "linear", "sparsetsf", "cyclenet", "patchtst", "itransformer", "duet", "naive_last",
                 "naive_seasonal"]
NAIVE_FAMILIES = ("naive_last", "naive_seasonal")  # no weights, nothing to train


class ModelConfig(StrictModel):
    family: Family = Field(
        "informer", description="the forecaster: informer (encoder-decoder, ProbSparse attention); linear "
        "(RLinear/NLinear/DLinear: one map over time per channel); sparsetsf (a linear map over the down-sampled "
        "period phases); cyclenet (a learnable daily cycle plus a linear/MLP forecast); patchtst (a Transformer "
        "over patches of each channel); itransformer (a Transformer over variates as tokens); duet (DUET: a router "
        "over linear experts per channel window, a learned sparse channel mask, a Transformer over the channels "
        "under it); naive_last (repeat the "
        "last value) and naive_seasonal (repeat the last period): no weights, nothing trained, the baselines a "
        "search must beat. All but informer are decoder-free (no data.label_len)")
    d_model: int = Field(32, ge=2, description="model width (even); informer, patchtst, itransformer; the hidden "
                         "width of cyclenet's mlp")
    n_heads: int = Field(4, ge=1, description="attention heads; must divide d_model")
    e_layers: int = Field(2, ge=1, description="encoder layers")
    d_layers: int = Field(1, ge=1, description="decoder layers (informer)")
    d_ff: int = Field(64, ge=1, description="feed-forward width")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout")
    attn: Literal["prob", "full"] = Field("prob", description="prob: ProbSparse self-attention; full: dense (SDPA)")
    factor: int = Field(5, ge=1, description="ProbSparse sampling factor c (u = c ln L)")
    distil: bool = Field(True, description="self-attention distilling (conv + ELU + max-pool) between encoder layers")
    activation: Literal["gelu", "relu"] = Field("gelu", description="feed-forward activation")
    revin: bool = Field(False, description="reversible instance normalisation of inputs and outputs (every family)")
    linear: Literal["none", "trend", "input"] = Field(
        "none", description="a linear forecast over time added to the Informer's (DLinear, Zeng et al. 2023): none; "
        "trend: series decomposition by a moving average, the linear layer forecasts the trend and the Informer the "
        "seasonal rest (as Autoformer/DLinear); input: the linear layer maps the whole input window and the Informer "
        "forecasts what it misses")
    moving_avg: int = Field(25, ge=3, description="moving-average window of linear=trend and of "
                            "linear_variant=dlinear (odd)")
    linear_variant: Literal["linear", "nlinear", "dlinear"] = Field(
        "linear", description="family linear: linear (one map over time; RLinear with revin), nlinear (the last "
        "input value subtracted, then added back), dlinear (moving-average trend and seasonal rest, one map each)")
    individual: bool = Field(False, description="family linear: one set of weights per channel instead of one "
                             "shared by every channel")
    period: int | None = Field(None, ge=1, description="sparsetsf and cyclenet: the cycle in steps; empty: the "
                               "daily cycle detected from the timestamps (24 for hourly data, 96 for 15-minute)")
    cycle_backbone: Literal["linear", "mlp"] = Field(
        "linear", description="cyclenet: what forecasts the input less its cycle: linear, or mlp (d_model hidden)")
    patch_len: int = Field(16, ge=1, description="patchtst: steps per patch")
    stride: int = Field(8, ge=1, description="patchtst: steps between patch starts")
    n_experts: int = Field(2, ge=1, description="duet: linear pattern extractors the router chooses among")
    top_k: int = Field(1, ge=1, description="duet: experts each channel window is sent to (at most n_experts)")
    fc_dropout: float = Field(0.1, ge=0, lt=1, description="duet: dropout after the forecast head")

    @model_validator(mode="after")
    def _heads(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"model.n_heads: must divide model.d_model ({self.d_model} % {self.n_heads} != 0)")
        if self.d_model % 2:
            raise ValueError(f"model.d_model: must be even (got {self.d_model})")
        if self.moving_avg % 2 == 0:
            raise ValueError(f"model.moving_avg: must be odd, a centred window (got {self.moving_avg})")
        if self.top_k > self.n_experts:
            raise ValueError(f"model.top_k: must not exceed model.n_experts ({self.top_k} > {self.n_experts})")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(4, ge=1, description="maximum epochs per trial")
    patience: int = Field(2, ge=1, description="early stopping: epochs without validation improvement")
    batch_size: int = Field(32, ge=1, description="training windows per optimiser step; searchable as "
                            "{choices: [16, 32, 64]} (with max_train_batches set, a larger batch also means more "
                            "windows per epoch)")
    learning_rate: float = Field(1e-3, gt=0, description="learning rate of the first epoch (sgd usually needs a "
                                 "larger one than adam/adamw)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        "adam", description="adam: Adam, the Informer paper's; adamw: AdamW, weight decay decoupled from the "
        "gradient (set train.weight_decay, commonly 0.01); sgd: SGD with train.momentum")
    weight_decay: float = Field(0.0, ge=0, description="weight decay of every optimizer: an L2 term added to the "
                                "gradient for adam and sgd, decoupled decay for adamw; 0 (the default) is none, "
                                "also for adamw (torch's own AdamW default is 0.01)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum of sgd; adam and adamw have none: set (or "
                            "searched) where no trial uses sgd, it is refused")
    loss: Literal["mse", "mae", "huber"] = Field(
        "mse", description="training loss on the scaled data: mse (the paper's), mae (L1), or huber (squared "
        "below train.huber_delta, linear above: robust to outliers; SmoothL1Loss at delta 1). Validation, early "
        "stopping, pruning, the search metric and the reported test metrics stay MSE/MAE whatever the training loss")
    huber_delta: float = Field(1.0, gt=0, description="where huber turns from squared to linear, in scaled units "
                               "(standard deviations); only for loss=huber")
    lr_decay: float = Field(0.5, gt=0, le=1, description="learning-rate factor after every epoch; 0.5 is the "
                            "paper's schedule (halve per epoch), 1 keeps it constant")
    max_train_batches: int | None = Field(None, ge=1, description="cap on training batches per epoch (speed); "
                                          "empty: every batch")
    seed: int = Field(0, description="seed of weights, data order and dropout")
    threads: int | None = Field(1, ge=1, description="torch CPU threads; 1 is fastest for small models on a "
                                "shared CPU (docs/design/measurements.md); empty: torch's default")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    per_family: dict[Family, dict[str, Any]] = Field(
        default_factory=dict, description="training settings that replace this section's for the trials of one "
        "model family: its budget, e.g. {patchtst: {epochs: 10, max_train_batches: 100, learning_rate: 1.0e-4}}; a "
        "key the search changes in a trial still takes the search's value, and a train key given with --set on the "
        "command line (--set train.epochs=1) holds for every family")

    @model_validator(mode="after")
    def _per_family(self) -> TrainConfig:
        for family, overrides in self.per_family.items():
            for key, value in overrides.items():
                if key == "per_family" or key not in TrainConfig.model_fields:
                    raise ValueError(f"train.per_family.{family}.{key}: not a train setting")
                problem = _invalid_value(TrainConfig, key, [value])
                if problem:
                    raise ValueError(f"train.per_family.{family}.{key}: {problem}")
        return self


def default_space() -> dict[str, ParamSpec]:
    return {
        # Sized so 20 trials of the built-in defaults fit in a few minutes on 2 CPU cores.
        "model.d_model": ParamSpec(choices=[16, 32, 64]),
        "model.n_heads": ParamSpec(choices=[1, 2, 4, 8]),
        "model.e_layers": ParamSpec(low=1, high=3),
        "model.d_layers": ParamSpec(low=1, high=2),
        "model.d_ff": ParamSpec(choices=[32, 64, 128]),
        "model.dropout": ParamSpec(low=0.0, high=0.3),
        "model.attn": ParamSpec(choices=["prob", "full"]),
        "model.distil": ParamSpec(choices=[True, False]),
        "model.revin": ParamSpec(choices=[True, False]),
        "model.linear": ParamSpec(choices=["none", "trend", "input"]),
        "train.learning_rate": ParamSpec(low=1e-4, high=1e-2, log=True),
        # Optimizer and loss cost nothing per trial. train.batch_size is left out: batch-16 trials take twice the
        # steps, and a default search measured noticeably slower with it (docs/design/measurements.md).
        "train.optimizer": ParamSpec(choices=["adam", "adamw", "sgd"]),
        "train.loss": ParamSpec(choices=["mse", "mae", "huber"]),
    }


def close_key(key: str, known: list[str], cutoff: float = 0.75) -> list[str]:
    """The known key a typo stands for: one of the same parent whose last part is close to the key's (a shared
    `train.` prefix alone made `train.lr` "close" to `train.l2`)."""
    parent, _, last = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    return [siblings[m] for m in difflib.get_close_matches(last, list(siblings), n=1, cutoff=cutoff)]


class SearchConfig(LLMPlannerSettings):
    """The search loop; the LLM planner's keys (``history``, ``llm_*``) come from ``LLMPlannerSettings``."""

    planner: NasPlanner = Field("auto", description=describe("nas"))
    max_iterations: int = Field(20, ge=1, description="total trials of the search (calling again with a higher "
                                "number continues it)")
    time_budget_s: float | None = Field(None, gt=0, description="stop starting trials after this many seconds of "
                                        "each invocation (a --resume gets it again)")
    patience: int | None = Field(None, ge=1, description="stop after this many trials without a new best")
    target: float | None = Field(None, description="stop once the best validation MSE is at or below this (an "
                                 "objective command's metric: at or past it in its direction)")
    min_delta: float = Field(0.01, ge=0, description="noise band, relative: a trial better than the best by more "
                             "than this fraction is accepted, worse by more is rejected, in between is judged")
    tune_every: int = Field(2, ge=0, description="with code changes (objective.editable): the sampler's trials of "
                            "the space's params on each kept version, right after it is kept, before the agent "
                            "plans again")
    space: dict[str, ParamSpec] = Field(default_factory=default_space,
                                        description="searchable keys (dotted paths into this config) and bounds")
    pruner: Literal["median", "hyperband", "halving", "none"] = Field(
        "median", description="stop hopeless trials early from their per-epoch validation MSE: median (below the "
        "median of the other trials at the same epoch), hyperband (Optuna's Hyperband: successive halving in "
        "brackets of different aggressiveness, rungs every 3x epochs), halving (one bracket of successive halving)")
    pruner_warmup: int = Field(1, ge=1, description="the first epoch at which a pruner may stop a trial (median: "
                               "compared with the other trials' validation MSE after as many epochs; hyperband, "
                               "halving: the first rung); raise it when trials train many epochs and a slow start "
                               "says little, as in nas_ett96.yaml")
    storage: StorageURL = Field(None, description="Optuna storage URL shared by workers (sqlite:///..., "
                                "postgresql://..., or a journal file path); empty: SQLite in the run folder")
    study_name: str = Field("nas", description="study name inside the storage")
    ensemble: bool = Field(True, description="keep every finished trial's validation and test forecasts (float16, "
                           "in its folder) and build the final model by greedy ensemble selection with replacement "
                           "on validation MSE over them (Caruana et al. 2004), after every trial and at the end; "
                           "results.json's `ensemble` block sits beside the best single trial and `nas predict` "
                           "uses it. false: no forecasts kept, the best trial is the final model")
    seed: int = Field(0, description="sampler seed")
    warm_start: WarmStartSpec = Field(
        False, description="knowledge as the first trials after the base config, for every planner: true: the "
        "bundled literature's leads for this data (the built-in forecaster: each family's best published fair "
        "result and its lookback); a list: your own configs, each a mapping of space keys to values changed from "
        "the base params (the form for your own training command). Leads outside the space or already run are "
        "skipped; they count against max_iterations")

    @field_validator("space", mode="before")
    @classmethod
    def _near_miss(cls, space: Any) -> Any:
        """A new space key given only part of a range (``--set search.space.alpah.low=0.5``, also under a prefix:
        ``model.alpah``) that is a near miss of a key of the space: named as the typo it most likely is."""
        if not isinstance(space, dict):
            return space
        fields: set[str] = set(ParamSpec.model_fields)
        named: list[tuple[str, Any]] = []
        for key, spec in space.items():  # `--set search.space.model.alpah.low=...` nests under `model`
            nested = isinstance(spec, dict) and spec and not set(spec) <= fields
            named += [(f"{key}.{k}", v) for k, v in spec.items()] if nested else [(key, spec)]
        part = [k for k, v in named if isinstance(v, dict) and set(v) <= fields and v.get("choices") is None
                and (v.get("low") is None or v.get("high") is None)]
        for key in part:
            if close := close_key(key, [k for k, _ in named if k not in part], cutoff=0.6):
                raise ValueError(f"search.space.{key}: no such key in the space, and a new one needs choices, or "
                                 f"both low and high (did you mean search.space.{close[0]}?)")
        return space


class CommandObjectiveConfig(StrictModel):
    """The user's own training command as the objective (``nas.command`` holds the contract)."""

    command: str = Field(description="the command that trains and evaluates one trial, split like a shell line "
                         "but run without a shell, in the trial's own workspace; the params reach it as the script "
                         "takes them: {args} (one --key=value per param), {overrides} (key=value, Hydra's form), "
                         "{key} (one value), {params} (the path of the trial's params.json), or objective.config, "
                         "e.g. `python train.py {args}`")
    metric: str = Field(description="the name of the result the search optimises, e.g. val_loss: read from the "
                        "command's last JSON line on stdout, else metrics.json (workspace or trial folder), else "
                        "its last output line reading `val_loss: 0.52` or `val_loss=0.52`")
    direction: Literal["minimize", "maximize"] = Field("minimize", description="minimize (a loss) or maximize (an "
                                                       "accuracy) the metric")
    params: dict[str, Any] = Field(default_factory=dict, description="the command's current parameters: trial 0, "
                                   "and the base every trial's values update (a dotted key of search.space, "
                                   "optimizer.lr, updates a nested mapping); optional with objective.config (the "
                                   "file's values are the base, these on top), and with {args} or a Hydra app's "
                                   "{overrides} (a searched key left out starts at the script's own default, "
                                   "read from its argparse, click, typer, tyro, fire, jsonargparse or LightningCLI "
                                   "options, or at its value in the app's composed config)")
    config: Path | None = Field(None, description="the project's own config file, which the script reads (JSON, "
                                "YAML, TOML, or a .py module of literal assignments and dicts; relative to "
                                "objective.cwd): each trial's workspace copy of it gets the trial's values, its "
                                "comments and layout kept; dotted search.space keys address it (training.lr)")
    workspace: list[str] | None = Field(None, description="glob patterns of the files each trial's workspace "
                                        "copies (relative to objective.cwd); empty: a git worktree of the current "
                                        "commit (your uncommitted changes carried in) when the project is in a git "
                                        "repository, else every file of the folder (run folders, .git, virtual "
                                        "environments and caches left out; files over 50 MB linked)")
    keep_failed: bool = Field(False, description="keep a failed trial's workspace (under <run>/workspaces/) to "
                              "inspect it; else every workspace goes when its trial is recorded")
    timeout_s: float | None = Field(None, gt=0, description="a trial running longer is stopped and failed; empty: "
                                    "no limit")
    cwd: Path | None = Field(None, description="the folder the command runs in (relative: to the YAML file's "
                             "folder); empty: the YAML file's folder (the current folder without a file)")
    eval_command: str | None = Field(None, description="a command run after each trial's command, in the same "
                                     "workspace, whose result (read like the command's) is the metric that counts, "
                                     "e.g. `python eval.py`: with objective.editable, keep it and what it reads in "
                                     "objective.protected, so no code change can alter how trials are scored")
    editable: list[str] = Field(default_factory=list, description="files the agent planner may change, as glob "
                                "patterns relative to objective.cwd (* within a folder, ** across folders, a "
                                "trailing / a whole folder), e.g. [train.py, 'model/*.py']: each change runs as a "
                                "trial on the best version and is kept when it improves the metric "
                                "(docs/commands/nas-code-changes.md). Needs --planner agent, and --approve or "
                                "objective.unreviewed_changes. Empty: no code changes")
    protected: list[str] | None = Field(None, description="files no change and no trial's run may alter (glob "
                                        "patterns like editable), e.g. [eval.py, data/]; a trial whose run rewrote "
                                        "one is refused, not scored. Empty: every file that is not editable")
    unreviewed_changes: bool = Field(False, description="run the agent's code changes without a person approving "
                                     "each (they are code an LLM wrote, run with your permissions: see "
                                     "objective.sandbox); false: code changes need --approve")
    sandbox: Literal["none", "bwrap"] = Field("none", description="bwrap: every trial's command runs under "
                                              "bubblewrap, the trial's workspace and folder writable, the rest of the "
                                              "file system read-only, no network but loopback, killed with "
                                              "agentlab (Linux, Debian's bubblewrap package); none: as you")
    # a resume's copy of ``config`` as the search started, read in its place when the user edited it since
    # (``best.kept_config``); never saved with the config
    _kept_config: Path | None = PrivateAttr(None)

    @field_validator("metric")
    @classmethod
    def _a_name(cls, value: str) -> str:
        if not value.strip() or value != value.strip():  # "" matched any `: number` line and was stored as ""
            raise ValueError("the metric's name, as the command prints it (val_loss), without spaces around it")
        return value


SECTIONS: dict[str, type[StrictModel]] = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
# ModelConfig's keys that only the informer family reads (the other families' options are FamilySpec's fields)
INFORMER_ONLY = ("d_layers", "attn", "factor", "distil", "linear")


class NASConfig(StrictModel):
    # What a resume may change (core.runs.resume_changes): the search's planning, budget and stopping, speed, logging,
    # how an objective command is run (its timeout, sandbox, review); not what a trial is scored on (data, model,
    # train, the command and its metric, the space) nor where the study lives.
    RESUME_MAY_CHANGE: ClassVar[tuple[str, ...]] = (
        "name", "mlflow", "train.threads", "train.device",
        *(f"search.{key}" for key in SearchConfig.model_fields if key not in ("space", "storage", "study_name")),
        "objective.timeout_s", "objective.keep_failed", "objective.sandbox", "objective.unreviewed_changes")

    name: RunName = Field("nas", description="run name (folder suffix)")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and windows")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the base Informer config the search starts "
                               "from")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training of each trial")
    search: SearchConfig = Field(default_factory=SearchConfig, description="the search loop")
    mlflow: TrackingURI = tracking_field()
    objective: CommandObjectiveConfig | None = Field(
        None, description="search your own training code: a command, its params and the metric it reports "
        "(docs/commands/nas-own-code.md); the keys of search.space are then keys of objective.params, and the "
        "data, model and train sections are not used. Empty: the built-in forecaster")

    @model_validator(mode="after")
    def _code_changes(self, info: ValidationInfo) -> NASConfig:
        """Code changes need the agent planner and a person's approval or the explicit opt-out; their own keys are
        refused where nothing would read them."""
        if info.context and info.context.get("saved"):
            return self
        editable = bool(self.objective and self.objective.editable)
        if self.objective is not None and self.objective.editable and self.search.planner != "agent":
            raise ValueError("objective.editable: only the agent planner changes code (search.planner is "
                             f"{self.search.planner}); set search.planner: agent (--planner agent), or remove "
                             "objective.editable")
        if editable and not (self.search.agent.approve or self.objective.unreviewed_changes):  # type: ignore[union-attr]
            raise ValueError("objective.editable: a code change is code an LLM wrote, run with your permissions, so "
                             "each runs only once a person approves it: add --approve, or set "
                             "objective.unreviewed_changes: true (and consider objective.sandbox: bwrap)")
        if self.objective is not None and self.objective.unreviewed_changes and not editable:
            raise ValueError("objective.unreviewed_changes: no code changes without objective.editable; remove it")
        if not editable and self.search.tune_every != SearchConfig.model_fields["tune_every"].default:
            raise ValueError("search.tune_every: the sampler's trials after each kept code change; without "
                             "objective.editable there are none: remove it")
        return self

    @model_validator(mode="after")
    def _nothing_ignored(self, info: ValidationInfo) -> NASConfig:
        """A setting no trial of this search can read (momentum without sgd, huber_delta without huber, the
        Informer's own keys for another family; the built-in space, which searches them: ``informer_space``) is
        refused, naming it,
        instead of being silently ignored. Set means: not its default, or searched. Checked on the trials' configs
        too (``apply_changes``), which keep the search and so pass alike; not on a finished trial's saved config
        (``context={"saved": True}``: a run made before this check still predicts), nor on a naive reference
        forecast's (``apply_changes(trial=False)``: no trial of the search, it keeps the Informer's keys unread).
        With an objective the forecaster's sections are not read at all: setting one (``--data FILE``) is refused."""
        if self.objective is not None and not (info.context and info.context.get("saved")):
            for name, section in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
                given, default = getattr(self, name), section()
                if given != default:  # named by its first set key, so --data on a resume is blamed, not the file
                    key = next(k for k in section.model_fields if getattr(given, k) != getattr(default, k))
                    raise ValueError(f"{name}.{key}: not used when objective: searches your own command (it reads "
                                     f"its own data and settings); remove {name}"
                                     + (" (or --data on the command line)" if name == "data" else "")
                                     + ", or pass it to your script through objective.command")
        if (info.context and info.context.get("saved")) or self.objective is not None:
            return self
        families = self._reachable("model.family", self.model.family)
        space = self.search.space
        # (the setting, the choice that reads it, and that choice's key): set or searched where no trial makes that
        # choice, the setting would be silently ignored
        for setting, needs, chooser, what in (("momentum", "sgd", "optimizer", "only sgd has momentum"),
                                              ("huber_delta", "huber", "loss", "only the huber loss reads it")):
            if needs in self._reachable(f"train.{chooser}", getattr(self.train, chooser)) or (
                    getattr(self.train, setting) == TrainConfig.model_fields[setting].default
                    and f"train.{setting}" not in space):
                continue
            where = f"search.space.train.{setting}" if f"train.{setting}" in space else f"train.{setting}"
            raise ValueError(f"{where}: {what}, and no trial of this search uses {needs} (train.{chooser}: "
                             f"{getattr(self.train, chooser)}); set train.{chooser}: {needs} (or search it), or "
                             f"leave train.{setting} out")
        if self.search.pruner in ("hyperband", "halving") and self.search.pruner_warmup > self.max_epochs():
            raise ValueError(f"search.pruner_warmup: {self.search.pruner_warmup} is past the most epochs any trial "
                             f"trains ({self.max_epochs()}), so {self.search.pruner}'s first rung is never reached "
                             "and nothing is pruned; lower it, or raise train.epochs")
        if "informer" in families:
            return self
        user_space = set(space) != set(default_space())  # the default space is the Informer's: see below
        for name in INFORMER_ONLY:
            key = f"model.{name}"
            if (user_space and key in space) or getattr(self.model, name) != ModelConfig.model_fields[name].default:
                where = f"search.space.{key}" if user_space and key in space else key
                raise ValueError(f"{where}: only the informer family reads it, and no trial of this search is an "
                                 f"informer (model.family: {self.model.family}); leave it out, or search "
                                 "model.family with informer among the choices")
        if self.data.label_len not in (0, DataConfig.model_fields["label_len"].default):
            raise ValueError(f"data.label_len: only the informer family has a decoder to give known steps to, and "
                             f"no trial of this search is an informer (model.family: {self.model.family}); leave "
                             "it out or set it to 0")
        return self

    def informer_space(self) -> str | None:
        """Why this search cannot run: the built-in space (the Informer's) with no informer trial, else None.

        Each draw that changes one of its Informer keys is a config the other family refuses, so TPE ran trial 0 and
        then stopped with "no valid, untried parameters". Checked where a search is prepared, not on every config:
        a config of another family with the default space still trains one model (``train_trial``)."""
        space = self.search.space
        if self.objective is not None or set(space) != set(default_space()) \
                or "informer" in self._reachable("model.family", self.model.family):
            return None
        searched = ", ".join(f"model.{name}" for name in INFORMER_ONLY if f"model.{name}" in space)
        family = self.model.family
        return (f"search.space: the built-in space searches the informer family's own keys ({searched}), and no "
                f"trial of this search is an informer (model.family: {family}); give a search.space of {family}'s "
                "own keys (each family's are in docs/commands/nas.md), or search model.family with informer among "
                "the choices")

    def max_epochs(self) -> int:
        """The most epochs a trial of this search can train: train.epochs, train.per_family's, a searched range."""
        epochs = [int(v) for v in self._reachable("train.epochs", self.train.epochs) if v is not None]
        spec = self.search.space.get("train.epochs")
        if spec is not None and spec.high is not None:
            epochs.append(int(spec.high))
        return max(epochs)

    def _reachable(self, key: str, base: Any) -> set[Any]:
        """The values of ``key`` a trial can have: the base's, the searched ones and train.per_family's."""
        spec = self.search.space.get(key)
        values = {base, *(spec.choices or [] if spec is not None else [])}
        section, _, field = key.partition(".")
        if section == "train":
            values |= {o[field] for o in self.train.per_family.values() if field in o}
        return values

    @model_validator(mode="after")
    def _space_keys_exist(self) -> NASConfig:
        if self.objective is not None:
            return self._objective_space()
        for key, spec in self.search.space.items():
            section, _, field = key.partition(".")
            model = SECTIONS.get(section)
            if model is None or field not in model.model_fields:
                raise ValueError(f"search.space.{key}: not a searchable key (use model.<field>, train.<field> or "
                                 f"data.<field>)")
            problem = _invalid_value(model, field, spec.choices if spec.choices is not None else [spec.low, spec.high])
            if problem:
                raise ValueError(f"search.space.{key}: {problem}")
            for other, values in (spec.when or {}).items():
                section, _, field = other.partition(".")
                model = SECTIONS.get(section)
                if model is None or field not in model.model_fields or other == key:
                    raise ValueError(f"search.space.{key}.when: {other!r} is not a config key it can depend on (use "
                                     "model.<field>, train.<field> or data.<field>, e.g. model.family)")
                problem = _invalid_value(model, field, values)
                if problem:
                    raise ValueError(f"search.space.{key}.when.{other}: {problem}")
        return self

    def _objective_space(self) -> NASConfig:
        """With a command objective: search.space is given, and each of its keys (and each key a ``when`` names) is
        a key of objective.params (a dotted key may name a nested one)."""
        assert self.objective is not None
        if "space" not in self.search.model_fields_set:
            raise ValueError("search.space: give the keys of objective.params to search, e.g. {lr: {low: 0.0001, "
                             "high: 0.1, log: true}} (the default space is the built-in forecaster's)")
        if not self.search.space:  # `space: {}`: trial 0 alone ran, then "every configuration ... was tried"
            raise ValueError("search.space: empty, nothing to search; give the keys of objective.params to search, "
                             "e.g. {lr: {low: 0.0001, high: 0.1, log: true}}")
        params = self.objective.params
        for key, spec in self.search.space.items():
            if self.objective.config is not None or "{args}" in self.objective.command or \
                    "{overrides}" in self.objective.command:
                continue  # the file's keys, the script's argparse or Hydra values: checked before trial 0
            if not lookup(params, key)[0] and f"{{{key}}}" in self.objective.command:  # `--lr={lr}`
                raise ValueError(f"search.space.{key}: not a key of objective.params, and only {{args}} reads the "
                                 f"script's own defaults, not a {{{key}}} placeholder (use {{args}}, or add {key} to "
                                 "objective.params with its current value: that is trial 0)")
            if not lookup(params, key)[0]:
                raise ValueError(f"search.space.{key}: not a key of objective.params (add it there with its current "
                                 "value: that is trial 0)")
            for other in spec.when or {}:
                if other not in self.search.space and not lookup(params, other)[0]:
                    raise ValueError(f"search.space.{key}.when: {other!r} is neither searched nor a key of "
                                     "objective.params")
        return self


def _invalid_value(model: type[StrictModel], field: str, values: list[Any]) -> str | None:
    """Why one of ``values`` can never be ``field`` (wrong type, outside its bounds), else None.

    Only the field's own rules count: a value that breaks a rule between fields (n_heads must divide d_model) may
    still be right next to other values of the search. Without this check such a space fails only after the run
    folder exists, as "no valid, untried parameters".
    """
    from pydantic import ValidationError

    defaults = model().model_dump()
    for value in values:
        try:
            model.model_validate({**defaults, field: value})
        except ValidationError as exc:
            own = [err for err in exc.errors() if tuple(err["loc"]) == (field,)]
            if own:
                return f"{value!r} can never be a valid {field}: {own[0]['msg']}"
    return None


def get_dotted(config: NASConfig, key: str) -> Any:
    """The value at a dotted key (``model.d_model``) of ``config``."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def space_values(config: NASConfig) -> dict[str, Any]:
    """``config``'s value of every search-space key and of every key a condition (``when``) names."""
    keys = dict.fromkeys(config.search.space)
    for spec in config.search.space.values():
        keys.update(dict.fromkeys(spec.when or {}))
    return {key: get_dotted(config, key) for key in keys}


def apply_changes(config: NASConfig, changes: dict[str, Any], *, trial: bool = True) -> NASConfig:
    """A new config with dotted-key changes applied, validated by pydantic (raises ValidationError).

    The trial's family (``model.family``, changed or not) first gets its ``train.per_family`` settings; the changes
    come after them, so a searched key keeps the search's value. ``trial=False``: a config that is no trial of the
    search (a naive reference forecast, ``nas.run.naive_references``), so the search-wide checks (a searched or set
    key no trial reads) are not made: the fields' own rules still are."""
    data = config.model_dump(mode="json")
    family = changes.get("model.family", data["model"]["family"])
    data["train"].update(data["train"]["per_family"].get(family, {}))
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return NASConfig.model_validate(data, context=None if trial else {"saved": True})


def sets_over_per_family(config: NASConfig, sets: Sequence[str | Flag]) -> str | None:
    """A ``train`` key given on the command line (``--set train.epochs=1``) holds for every family: it is taken out
    of each ``train.per_family`` entry that sets it too (the config file's budgets), unless the command line gave
    that entry's key as well (``--set train.per_family.duet.epochs=3``: the more specific one wins). Changes
    ``config`` in place, after checking the result as a whole (``ConfigError`` naming the ``--set``); returns the
    line that says which per-family settings the command line replaced (None: none)."""
    if config.objective is not None or not config.train.per_family:
        return None
    given = [(item.key if isinstance(item, Flag) else str(item).partition("=")[0].strip(), item) for item in sets]
    per_family = {family: dict(overrides) for family, overrides in config.train.per_family.items()}
    replaced: list[str] = []
    labels: list[str] = []
    for key, item in given:
        section, _, field = key.partition(".")
        if section != "train" or field == "per_family" or field not in TrainConfig.model_fields:
            continue
        for family, overrides in per_family.items():
            own = (f"train.per_family.{family}.{field}", f"train.per_family.{family}", "train.per_family")
            if field in overrides and not any(k in own for k, _ in given):
                replaced.append(f"train.per_family.{family}.{field} ({overrides.pop(field)!r})")
                label = str(item) if isinstance(item, Flag) else set_label(str(item))
                labels += [label] if label not in labels else []
    if not replaced:
        return None
    data = config.model_dump(mode="json")
    data["train"]["per_family"] = per_family
    try:
        NASConfig.model_validate(data)
    except ValidationError as exc:
        said = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{', '.join(labels)}: holds for every family, replacing {', '.join(replaced)}, and then "
                          f"{said}", hint="change the --set, or give the family its own value with --set "
                          "train.per_family.FAMILY.KEY=VALUE") from None
    config.train.per_family = per_family
    return (f"{', '.join(labels)}: holds for every family, so it replaces the config's {', '.join(replaced)}; to "
            "keep a family's own value, give it too: --set train.per_family.FAMILY.KEY=VALUE")


def check_warm_start(cfg: NASConfig, space: Any,
                     where: Callable[[tuple[str | int, ...]], str | None] | None = None) -> None:
    """``search.warm_start`` before any trial: a list's configs are changes of space keys to values the space
    allows; ``true`` needs the built-in forecaster (the literature is about forecasting). ``where(key path)``: where
    a key was given (``config_where``): a bad entry's error names the line of its first bad key (else of the entry)
    or the ``--set`` that gave it."""
    warm = cfg.search.warm_start
    if warm is True and cfg.objective is not None:
        raise ConfigError("search.warm_start: true means the literature's forecaster leads; your own command has "
                          "none", hint="give a list of your own configs instead, e.g. warm_start: [{lr: 0.01}]")
    for i, changes in enumerate(warm if isinstance(warm, list) else []):
        _, errors = space.validate(changes)
        if errors or not changes:
            bad = [key for key, value in changes.items() if space.validate({key: value})[1]]
            at = where(("search", "warm_start", i, *bad[:1])) if where is not None else None
            raise ConfigError(f"{at + ': ' if at else ''}search.warm_start[{i}]: "
                              f"{'; '.join(errors) or 'an empty config'}",
                              hint="each entry maps search.space keys to values inside their ranges or choices")

"""Train and test one trial of any family (Informer, or one of :mod:`agentlab.nas.families`): the executor behind
`agentlab nas`.

Follows the training protocol of Zhou et al., "Informer" (AAAI 2021) and its reference ``exp_informer.py``: Adam and
MSE on ``y[:, -pred_len:, f_dim:]`` by default (``train.optimizer`` and ``train.loss`` pick others; validation and test
always measure MSE), decoder input ``cat(y[:, :label_len], zeros(pred_len))``, learning rate halved
after every epoch (``lradj='type1'``), early stopping on validation MSE, the best checkpoint restored before the test,
test MSE / MAE reported on the scaled data. Differences: validation and test metrics are means over every window
element (not a mean of per-batch means), and evaluation draws the ProbSparse key samples from a fixed seed, so two
epochs are compared on the same samples and an improvement is not sampling noise.

Windows are gathered straight from the split tensors with one index operation per batch instead of a ``DataLoader``:
the search trains many small models, where per-sample Python collation would cost as much as the model.

This module imports torch at the top: import it lazily (the CLI does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agentlab.core.config import dump_yaml, redact
from agentlab.core.errors import ConfigError
from agentlab.core.models.device import resolve_device_dtype, seed_everything
from agentlab.core.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from agentlab.nas.config import DataConfig, NASConfig
from agentlab.nas.csvfile import load_csv
from agentlab.nas.data import PreparedData, SeriesData, WindowDataset, prepare, resolve_target, synthetic_series
from agentlab.nas.families import NAIVE_FAMILIES, FamilySpec, build_forecaster
from agentlab.nas.informer import InformerSpec, SpecError, build_informer, count_parameters
from agentlab.nas.report import plot_learning_curve

log = logging.getLogger(__name__)

ARTIFACTS = ("config_used.yaml", "metrics.json", "history.json", "learning_curve.png", "best_model.safetensors",
             "scaler.json")
EVAL_BATCH = 256  # evaluation needs no gradients, so larger batches amortise the per-call overhead
_CACHE_SIZE = 8  # a search over data.seq_len keeps one prepared dataset per lookback


# --------------------------------------------------------------------------- data, cached per process


def load_series(data_cfg: DataConfig) -> SeriesData:
    """The series of the data section: the CSV at ``path``, else the built-in synthetic series (seed 0)."""
    if data_cfg.path is not None:
        return load_csv(data_cfg.path, features=data_cfg.features, target=data_cfg.target, freq=data_cfg.freq)
    series = synthetic_series(n_steps=data_cfg.synthetic_steps, n_channels=data_cfg.synthetic_channels, seed=0,
                              freq=data_cfg.freq)
    # Any synthetic column may be the target; the same rule as for a CSV when it is not a column.
    target = resolve_target(series.columns, data_cfg.target, data_cfg.features, "the synthetic series")
    if target != series.target:
        series = SeriesData(series.dates, series.values, series.columns, target, series.name, series.freq)
    return series


_series_cache: OrderedDict[str, SeriesData] = OrderedDict()
_prepared_cache: OrderedDict[str, PreparedData] = OrderedDict()
_cache_lock = threading.Lock()


def _source_key(data_cfg: DataConfig) -> str:
    """What determines the loaded series; a CSV is keyed by its resolved path, size and mtime so edits reload."""
    key = data_cfg.model_dump(mode="json", include={"path", "features", "target", "freq", "synthetic_steps",
                                                     "synthetic_channels"})
    if data_cfg.path is not None:
        path = Path(data_cfg.path).resolve()
        stat = path.stat() if path.is_file() else None
        key["path"], key["stamp"] = str(path), (stat.st_mtime_ns, stat.st_size) if stat else None
    return json.dumps(key, sort_keys=True)


def _cached(cache: OrderedDict[str, Any], key: str, build: Callable[[], Any]) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = cache[key] = build()
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def prepare_data(config: NASConfig) -> PreparedData:
    """Load, split, scale and window the data of ``config``, once per process for each distinct data section.

    The returned object is shared between trials: treat it as read-only.
    """
    d = config.data
    source = _source_key(d)
    key = json.dumps([source, d.seq_len, d.label_len, d.pred_len, d.split])
    with _cache_lock:  # one load even when trials run in threads
        series = _cached(_series_cache, source, lambda: load_series(d))
        return _cached(_prepared_cache, key, lambda: prepare(series, d.features, d.seq_len, d.label_len,
                                                               d.pred_len, d.split))


def clear_data_cache() -> None:
    """Forget every cached series and prepared dataset (tests, or after the data changed in place)."""
    with _cache_lock:
        _series_cache.clear()
        _prepared_cache.clear()


def spec_from_config(config: NASConfig, prepared: PreparedData) -> InformerSpec:
    """The :class:`InformerSpec` of ``config``: its model section, its window lengths and the data's channels."""
    d = config.data
    lengths = (prepared.train.seq_len, prepared.train.label_len, prepared.train.pred_len)
    if lengths != (d.seq_len, d.label_len, d.pred_len):
        raise ConfigError(f"the prepared data has seq/label/pred lengths {lengths}, the config "
                          f"{(d.seq_len, d.label_len, d.pred_len)}", hint="prepare the data from this config")
    fields: dict[str, Any] = {k: v for k, v in config.model.model_dump().items()
                              if k in InformerSpec.__dataclass_fields__}
    fields.update(seq_len=d.seq_len, label_len=d.label_len, pred_len=d.pred_len, **prepared.model_kwargs())
    return InformerSpec(**fields)


def family_spec(config: NASConfig, prepared: PreparedData) -> FamilySpec:
    """The :class:`FamilySpec` of a non-Informer ``config``: its model section, lookback and horizon, the data's
    channels, and the period (``model.period``, else the one detected from the timestamps)."""
    m, d = config.model, config.data
    fields = set(FamilySpec.__dataclass_fields__) - {"seq_len", "pred_len", "enc_in", "c_out", "time_features",
                                                      "period"}
    return FamilySpec(**{k: v for k, v in m.model_dump().items() if k in fields}, seq_len=d.seq_len,
                      pred_len=d.pred_len, enc_in=prepared.enc_in, c_out=prepared.c_out,
                      time_features=prepared.time_features, period=m.period or prepared.period)


def build_model(config: NASConfig, prepared: PreparedData) -> torch.nn.Module:
    """The freshly initialised model of ``config`` (seed torch first for repeatability)."""
    if config.model.family == "informer":
        return build_informer(spec_from_config(config, prepared))
    return build_forecaster(family_spec(config, prepared))


def describe_model(config: NASConfig, prepared: PreparedData) -> tuple[dict[str, Any], str]:
    """The base model in brief: a dict for --json and one line for people (no weights are built)."""
    m, d = config.model, config.data
    if m.family == "informer":
        spec = spec_from_config(config, prepared)
        return ({"family": "informer", "d_model": spec.d_model, "n_heads": spec.n_heads, "e_layers": spec.e_layers,
                 "d_layers": spec.d_layers, "attn": spec.attn},
                f"informer, d_model {spec.d_model}, heads {spec.n_heads}, layers {spec.e_layers}+{spec.d_layers}, "
                f"attn {spec.attn}, lookback {d.seq_len}")
    fam = family_spec(config, prepared)
    details: dict[str, dict[str, Any]] = {"linear": {"variant": fam.linear_variant, "individual": fam.individual},
              "sparsetsf": {"period": fam.period}, "cyclenet": {"period": fam.period, "backbone": fam.cycle_backbone},
              "patchtst": {"d_model": fam.d_model, "n_heads": fam.n_heads, "e_layers": fam.e_layers,
                           "patch_len": fam.patch_len, "stride": fam.stride},
              "itransformer": {"d_model": fam.d_model, "n_heads": fam.n_heads, "e_layers": fam.e_layers},
              "duet": {"n_experts": fam.n_experts, "top_k": fam.top_k, "d_model": fam.d_model,
                       "n_heads": fam.n_heads, "e_layers": fam.e_layers},
              "naive_last": {}, "naive_seasonal": {"period": fam.period}}
    info = {"family": fam.family, "seq_len": d.seq_len, "revin": fam.revin, **details[fam.family]}
    return info, f"{fam.family}, " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "family")


def check_model(config: NASConfig, prepared: PreparedData) -> str | None:
    """Why ``config``'s model cannot be built on ``prepared`` (e.g. a lookback shorter than the period), else None."""
    try:
        spec_from_config(config, prepared) if config.model.family == "informer" else family_spec(config, prepared)
    except SpecError as exc:
        return f"model: {exc.message}"
    return None


# --------------------------------------------------------------------------- results


@dataclass
class TrialResult:
    """What one trial measured. Metrics are on the scaled data; ``val_mse`` is the best epoch's."""

    val_mse: float
    test_mse: float
    test_mae: float
    n_params: int
    seconds: float
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    stop_reason: str = "epochs"  # epochs | early_stopping | should_stop | diverged | naive (nothing trained)
    device: str = "cpu"
    # With train_trial(predictions=True): {"val": (pred, true), "test": (pred, true)}, float32 numpy arrays of shape
    # [windows, pred_len, channels]; not part of to_dict.
    predictions: dict[str, tuple[Any, Any]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready; a diverged trial keeps ``inf``, which Python's json writes as Infinity)."""
        out = asdict(replace(self, predictions=None))
        del out["predictions"]
        return out


class TrialPruned(Exception):  # noqa: N818 - mirrors optuna.TrialPruned, which the caller maps it to
    """The pruner stopped the trial after ``epoch``; ``history`` holds the epochs run so far."""

    def __init__(self, epoch: int, val_mse: float, history: list[dict[str, float]]):
        super().__init__(f"pruned after epoch {epoch} (val_mse {val_mse:.4g})")
        self.epoch, self.val_mse, self.history = epoch, val_mse, history


# --------------------------------------------------------------------------- training


_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}


def build_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    """The optimizer ``name`` (adam | adamw | sgd) over ``model``'s parameters, with the fused kernel where torch has
    one: on CPU fused Adam is much faster than the per-tensor loop for the many small tensors of these models, which
    otherwise rivals the forward pass (docs/design/measurements.md)."""
    if name not in _OPTIMIZERS:
        raise ConfigError(f"train.optimizer: unknown optimizer {name!r}", hint=f"use one of {', '.join(_OPTIMIZERS)}")
    cls = getattr(torch.optim, _OPTIMIZERS[name])
    # weight_decay is passed even when 0: AdamW's own default (0.01) would otherwise apply silently.
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
    if name == "sgd":
        kwargs["momentum"] = momentum
    try:
        return cls(model.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):  # no fused kernel for this optimizer, dtype or device
        return cls(model.parameters(), **kwargs)


def build_loss(name: str, huber_delta: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss ``name`` (mse | mae | huber) as ``loss(pred, true)``, a mean over every element."""
    if name == "mse":
        return F.mse_loss
    if name == "mae":
        return F.l1_loss
    if name == "huber":
        return lambda pred, true: F.huber_loss(pred, true, delta=huber_delta)
    raise ConfigError(f"train.loss: unknown loss {name!r}", hint="use one of mse, mae, huber")


class _Windows:
    """A split's windows on ``device``, gathered a batch at a time; the same windows as ``WindowDataset[i]``."""

    def __init__(self, ds: WindowDataset, device: torch.device, offset: int = 0):
        self.data, self.stamps = ds.data.to(device), ds.stamps.to(device)
        self.n, self.device, self.offset = len(ds), device, offset  # offset: the split's first row in the series
        self.enc_off = torch.arange(ds.seq_len, device=device)
        self.dec_off = torch.arange(ds.seq_len - ds.label_len, ds.seq_len + ds.pred_len, device=device)

    def take(self, starts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(x_enc, y, x_mark_enc, y_mark)`` for the windows starting at ``starts``."""
        enc, dec = starts[:, None] + self.enc_off, starts[:, None] + self.dec_off
        return self.data[enc], self.data[dec], self.stamps[enc], self.stamps[dec]

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Every window in order, ``size`` at a time."""
        for lo in range(0, self.n, size):
            yield torch.arange(lo, min(lo + size, self.n), device=self.device)


class _Trainer:
    """One trial's model, optimiser and data on one device."""

    def __init__(self, config: NASConfig, prepared: PreparedData, device: torch.device):
        self.cfg, self.device = config.train, device
        self.label_len, self.pred_len, self.f_dim = config.data.label_len, config.data.pred_len, prepared.f_dim
        self.informer = config.model.family == "informer"
        self.model = build_model(config, prepared).to(device)
        self.naive = config.model.family in NAIVE_FAMILIES  # no weights: nothing to optimise
        self.optimizer = None if self.naive else build_optimizer(self.model, self.cfg.optimizer,
                                                                 self.cfg.learning_rate, self.cfg.weight_decay,
                                                                 self.cfg.momentum)
        self.loss = build_loss(self.cfg.loss, self.cfg.huber_delta)  # training only: evaluation is always MSE
        offsets = prepared.borders[0] or [0, 0, 0]
        self.train, self.val, self.test = (_Windows(ds, device, max(offset, 0)) for ds, offset in
                                           zip((prepared.train, prepared.val, prepared.test), offsets, strict=True))
        self.shuffle = torch.Generator().manual_seed(self.cfg.seed)
        self.amp = device.type == "cuda"  # bf16 autocast only where it pays; CPU autocast is slower for these sizes
        self.rng_devices = [torch.cuda.current_device() if device.index is None else device.index] if self.amp else []

    def forward(self, batch: tuple[torch.Tensor, ...],
                index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prediction (float32) and its target ``y[:, -pred_len:, f_dim:]``; ``index``: each window's first row in
        the whole series (the period-aware families' phase)."""
        x, y, x_mark, y_mark = batch
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            if self.informer:
                dec = torch.cat([y[:, : self.label_len], torch.zeros_like(y[:, -self.pred_len :])], dim=1)
                out = self.model(x, x_mark, dec, y_mark)
            else:
                out = self.model(x, x_mark, index)
        return out.float(), y[:, -self.pred_len :, self.f_dim :]

    def train_batches(self) -> list[torch.Tensor]:
        """This epoch's shuffled batches of window starts: full batches only, at most ``max_train_batches``."""
        order = torch.randperm(self.train.n, generator=self.shuffle).to(self.device)
        size = self.cfg.batch_size
        stop = self.train.n - self.train.n % size if self.train.n >= size else self.train.n
        batches = [order[lo:lo + size] for lo in range(0, stop, size)]
        return batches[: self.cfg.max_train_batches] if self.cfg.max_train_batches else batches

    def train_epoch(self, should_stop: Callable[[], bool]) -> tuple[float, bool]:
        """Mean training loss of one epoch (inf when it diverged) and whether ``should_stop`` cut it short."""
        self.model.train()
        total, count = 0.0, 0
        assert self.optimizer is not None
        for starts in self.train_batches():
            self.optimizer.zero_grad(set_to_none=True)
            pred, true = self.forward(self.train.take(starts), starts + self.train.offset)
            loss = self.loss(pred, true)
            value = loss.item()  # the task's loss: what the history records
            aux = getattr(self.model, "aux_loss", None)  # duet's router load balance joins the gradient only
            if aux is not None:
                loss = loss + aux
            if not math.isfinite(value):
                return math.inf, False
            loss.backward()
            self.optimizer.step()
            total, count = total + value, count + 1
            if should_stop():
                return total / count, True
        return total / max(count, 1), False

    @torch.inference_mode()
    def evaluate(self, windows: _Windows,
                 collect: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> tuple[float, float]:
        """MSE and MAE over every element of every window of a split; ``collect`` gains each batch's (prediction,
        target) on the CPU (the ensemble's stored predictions)."""
        self.model.eval()
        se = torch.zeros((), dtype=torch.float64, device=self.device)
        ae = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        # Fixed key samples for ProbSparse, so epochs are compared on equal terms; the training RNG is untouched.
        with torch.random.fork_rng(devices=self.rng_devices):
            torch.manual_seed(self.cfg.seed)
            for starts in windows.chunks(max(EVAL_BATCH, self.cfg.batch_size)):
                pred, true = self.forward(windows.take(starts), starts + windows.offset)
                err = (pred - true).double()
                se, ae, count = se + err.square().sum(), ae + err.abs().sum(), count + err.numel()
                if collect is not None:
                    collect.append((pred.cpu(), true.float().cpu()))
        return (se / max(count, 1)).item(), (ae / max(count, 1)).item()

    def set_lr(self, lr: float) -> None:
        assert self.optimizer is not None
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of the current weights (the checkpoint early stopping returns to)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def train_trial(config: NASConfig, prepared: PreparedData, trial_dir: Path | None,
                report: Callable[[int, float], bool] | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None,
                should_stop: Callable[[], bool] | None = None, predictions: bool = False) -> TrialResult:
    """Train one model on ``prepared`` as ``config`` says, test the best epoch, and save artifacts.

    After each epoch: ``on_epoch(entry)`` with epoch, train_loss, val_mse, lr, seconds; then ``report(epoch,
    val_mse)``, and a True answer raises :class:`TrialPruned`. ``should_stop()`` is polled after every batch; True
    ends training after validating the current epoch, then tests as usual. A non-finite loss ends the trial with
    ``diverged=True`` and infinite metrics instead of an exception. With ``trial_dir``, the files in
    :data:`ARTIFACTS` are written there atomically (the checkpoint only when an epoch finished). ``predictions``:
    the best epoch's forecasts of every validation and test window are kept in ``result.predictions`` (for the
    ensemble; one more pass over the validation windows).
    """
    start = time.perf_counter()
    cfg = config.train
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer = _Trainer(config, prepared, resolve_device_dtype(cfg.device, what="train.device")[0])
    history: list[dict[str, float]]
    best_state: dict[str, torch.Tensor] | None
    kept: dict[str, tuple[Any, Any]] | None = None
    if trainer.naive:  # a naive forecast trains nothing: zero epochs, validated once
        history, best_val, best_state, stop_reason = [], trainer.evaluate(trainer.val)[0], trainer.state(), "naive"
    else:
        history, best_val, best_state, stop_reason = _fit(trainer, config, trial_dir, report, on_epoch,
                                                          should_stop or (lambda: False))
    diverged = stop_reason == "diverged"
    if diverged or best_state is None:
        test_mse = test_mae = best_val = math.inf
    else:
        trainer.model.load_state_dict(best_state)
        if not predictions:
            test_mse, test_mae = trainer.evaluate(trainer.test)
        else:
            tested: list[tuple[torch.Tensor, torch.Tensor]] = []
            validated: list[tuple[torch.Tensor, torch.Tensor]] = []
            test_mse, test_mae = trainer.evaluate(trainer.test, collect=tested)
            trainer.evaluate(trainer.val, collect=validated)
            kept = {split: (torch.cat([p for p, _ in batches]).numpy(), torch.cat([t for _, t in batches]).numpy())
                    for split, batches in (("val", validated), ("test", tested))}
    result = TrialResult(val_mse=best_val, test_mse=test_mse, test_mae=test_mae,
                         n_params=count_parameters(trainer.model), seconds=time.perf_counter() - start,
                         epochs=len(history), history=history, diverged=diverged, stop_reason=stop_reason,
                         device=str(trainer.device), predictions=kept)
    log.info("trial: val_mse %.4g test_mse %.4g test_mae %.4g, %d epochs (%s), %.1fs", result.val_mse,
             result.test_mse, result.test_mae, result.epochs, stop_reason, result.seconds)
    if trial_dir is not None:
        save_trial(Path(trial_dir), config, result, best_state, scaler=scaler_record(prepared))
    return result


def _fit(trainer: _Trainer, config: NASConfig, trial_dir: Path | None,
         report: Callable[[int, float], bool] | None, on_epoch: Callable[[dict[str, float]], None] | None,
         should_stop: Callable[[], bool]) -> tuple[list[dict[str, float]], float, dict[str, torch.Tensor] | None, str]:
    """The epoch loop: history, best validation MSE, best weights and why it stopped."""
    cfg = config.train
    history: list[dict[str, float]] = []
    best_val, best_state, bad_epochs = math.inf, None, 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lr = cfg.learning_rate * cfg.lr_decay ** (epoch - 1)  # 0.5: the paper's type1 schedule
        trainer.set_lr(lr)
        train_loss, interrupted = trainer.train_epoch(should_stop)
        val_mse = trainer.evaluate(trainer.val)[0] if math.isfinite(train_loss) else math.inf
        entry = {"epoch": epoch, "train_loss": train_loss, "val_mse": val_mse, "lr": lr,
                 "seconds": time.perf_counter() - t0}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if not math.isfinite(val_mse):
            return history, math.inf, best_state, "diverged"
        if report is not None and report(epoch, val_mse):
            if trial_dir is not None:
                _write_config_and_history(Path(trial_dir), config, history)
            raise TrialPruned(epoch, min(best_val, val_mse), history)
        if val_mse < best_val:
            best_val, best_state, bad_epochs = val_mse, trainer.state(), 0
        else:
            bad_epochs += 1
        if interrupted:
            return history, best_val, best_state, "should_stop"
        if bad_epochs >= cfg.patience:
            return history, best_val, best_state, "early_stopping"
    return history, best_val, best_state, "epochs"


# --------------------------------------------------------------------------- baseline


def evaluate_baseline(prepared: PreparedData) -> dict[str, float]:
    """Naive forecast on the scaled test windows: repeat the last observed value for every future step."""
    windows = _Windows(prepared.test, torch.device("cpu"))
    pred_len, f_dim = prepared.test.pred_len, prepared.f_dim
    se = ae = 0.0
    count = 0
    for starts in windows.chunks(1024):
        x, y, _, _ = windows.take(starts)
        true = y[:, -pred_len:, f_dim:].double()
        err = x[:, -1:, f_dim:].double() - true  # broadcasts the last value over the horizon
        se, ae, count = se + err.square().sum().item(), ae + err.abs().sum().item(), count + err.numel()
    return {"test_mse": se / max(count, 1), "test_mae": ae / max(count, 1), "windows": windows.n}


# --------------------------------------------------------------------------- artifacts


def _write_config_and_history(trial_dir: Path, config: NASConfig, history: list[dict[str, float]]) -> None:
    # redacted as the run's config.yaml is: a storage URL's password, a key, never in a trial folder (MLflow too)
    atomic_write_text(trial_dir / "config_used.yaml", dump_yaml(redact(config.model_dump(mode="json"))))
    atomic_write_json(trial_dir / "history.json", history)


def scaler_record(prepared: PreparedData) -> dict[str, Any]:
    """scaler.json: the columns the model reads (in its channel order) and the train split's mean/std of each, so
    `agentlab nas predict` undoes the standardisation the model was trained with."""
    return {"columns": list(prepared.columns), "target": prepared.target, "features": prepared.features,
            "mean": [float(v) for v in prepared.scaler.mean], "std": [float(v) for v in prepared.scaler.std]}


def save_trial(trial_dir: Path, config: NASConfig, result: TrialResult,
               best_state: dict[str, torch.Tensor] | None, scaler: dict[str, Any] | None = None) -> None:
    """Write the files in :data:`ARTIFACTS` to ``trial_dir`` (no checkpoint when no epoch finished; scaler.json when
    ``scaler`` is given)."""
    from safetensors.torch import save as save_safetensors

    _write_config_and_history(trial_dir, config, result.history)
    metrics = {k: v for k, v in result.to_dict().items() if k != "history"}
    atomic_write_json(trial_dir / "metrics.json", metrics)
    plot_learning_curve(result.history, trial_dir / "learning_curve.png", config.train.loss)
    if best_state is not None and not result.diverged:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in best_state.items()}
        atomic_write_bytes(trial_dir / "best_model.safetensors", save_safetensors(tensors))
    if scaler is not None:
        atomic_write_json(trial_dir / "scaler.json", scaler)

"""`agentlab nas predict`: forecast with a finished search's final model: its ensemble when results.json has one
(the weighted mean of its member trials' forecasts), else the best trial's checkpoint (``--model`` chooses).

The run folder is read through paths relative to it (``results.json`` names the best trial and the ensemble's members,
``trials/<id>/`` holds each one's ``config_used.yaml``, ``best_model.safetensors`` and ``scaler.json``), so a folder
copied from another machine works (an ensemble member trained by another worker is read from that worker's run folder,
named by its absolute path; that folder moved, from this run's ``trials/<id>/`` or from the folder of the worker's name
beside this one). Where the forecast may be written: :func:`output_paths`. The given CSV is read and split as the run's
config says (``data.split``, lookback, horizon); the forecast covers the ``pred_len`` steps after its last row, in the
original units: the standardisation is undone with the mean/std the model was trained with (``scaler.json``; for runs
older than that file, the scaler refitted on the CSV's train split, as the run did). ``backtest`` forecasts every test
window of the CSV as the trial's test did and reports MSE/MAE on the standardised data (equal to the run's recorded test
MSE on the run's own CSV; an ensemble's to about 1e-3, its record coming from float16 forecasts) and in original units.

This module imports torch inside functions only; it is imported by the CLI lazily anyway.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agentlab.core.errors import InputError, shell_word
from agentlab.core.files import read_json, read_text
from agentlab.core.runs import COMPLETED, FAILED, atomic_write_bytes, atomic_write_text, run_status
from agentlab.nas.config import NASConfig
from agentlab.nas.csvfile import load_csv
from agentlab.nas.data import DataError, PreparedData, Scaler, SeriesData, prepare, time_features
from agentlab.nas.script import resolved

HISTORY_SHOWN = 4  # the plot shows this many horizons of history before the forecast


@dataclass
class FinalModel:
    """What a finished run's final model needs: its config, trial folder and stored scaler (None: an older run)."""

    run: Path
    trial: Path
    run_id: str
    config: NASConfig
    recorded: dict[str, Any]  # results.json's "best": val/test MSE, family, ...
    scaler: dict[str, Any] | None


@dataclass
class EnsembleModel:
    """A finished run's ensemble: its member trials and their weights (results.json's ``ensemble`` block)."""

    run: Path
    members: list[tuple[FinalModel, float]]
    recorded: dict[str, Any]  # results.json's "ensemble": val/test MSE of the ensemble, members, ...
    run_id: str = "ensemble"


MODELS = ("best", "ensemble")


def load_model(run: str | Path, model: str | None = None) -> FinalModel | EnsembleModel:
    """The final model of the finished nas run folder ``run``: ``model`` ensemble, best (the best single trial), or
    None: results.json's ``final_model`` (the ensemble when it has one that is not worse on validation), else the
    best trial. :class:`InputError` (exit 2) with one line when the folder or the model asked for is missing."""
    if model is not None and model not in MODELS:
        raise InputError(f"--model {model}: not a model of a nas run", hint="use --model best or --model ensemble")
    run = Path(run)
    results = _finished_results(run)
    block = results.get("ensemble")
    if model is None:
        model = "ensemble" if isinstance(block, dict) and results.get("final_model", "ensemble") == "ensemble" \
            else "best"
    if model == "best":
        return load_final_model(run)
    if not isinstance(block, dict) or not block.get("members"):
        raise InputError(f"{run}: the run has no ensemble (search.ensemble was off, or it is older than ensembles)",
                         hint="use --model best, or rerun the search with search.ensemble=true")
    members = [(_load_trial(_member_folder(run, entry), entry["run_id"], run, entry), float(entry["weight"]))
               for entry in block["members"]]
    return EnsembleModel(run, members, block)


def _member_folder(run: Path, entry: dict[str, Any]) -> Path:
    """The folder of an ensemble member: relative to the run folder, else (absolute: a trial another worker of a
    shared study ran) that worker's run folder, else this run's own ``trials/<id>`` (a copied run), else the folder
    of the same name beside this run (the workers' run folders copied or moved together)."""
    folder = Path(entry["path"]) if Path(entry["path"]).is_absolute() else run / entry["path"]
    if folder.is_dir():
        return folder
    candidates = [run / "trials" / entry["run_id"]]
    if Path(entry["path"]).is_absolute() and folder.parent.name == "trials":
        candidates.append(run.parent / folder.parent.parent.name / "trials" / folder.name)
    return next((c for c in candidates if c.is_dir()), folder)


def _worker_folder(run: Path, trial: Path) -> Path | None:
    """The run folder of another worker of a shared study that ``trial`` (``<worker>/trials/<id>``) belongs to; None
    when it is one of ``run``'s own trials."""
    if trial.parent.name != "trials":
        return None
    worker = trial.parent.parent
    try:
        same = worker.resolve() == run.resolve()
    except OSError:
        same = False
    return None if same or not trial.is_absolute() else worker


def _finished_results(run: Path) -> dict[str, Any]:
    """results.json of the finished nas run folder ``run`` (with a best trial); one error line otherwise."""
    if not run.exists():
        raise InputError(f"{run}: no such run folder", hint="pass a folder `agentlab nas` wrote (see runs/)")
    if not run.is_dir():
        raise InputError(f"{run}: not a folder", hint="pass the run folder `agentlab nas` wrote, not a file in it")
    meta = run / "run.json"
    info = read_json(meta, what="run.json") if meta.is_file() else None
    if not isinstance(info, dict) or info.get("command") != "nas":
        raise InputError(f"{run}: not a nas run folder (no run.json with command nas)",
                         hint="pass a folder `agentlab nas` wrote")
    results_path = run / "results.json"
    results = read_json(results_path, what="results.json") if results_path.is_file() else None
    if isinstance(results, dict) and results.get("objective"):
        raise InputError(f"{run}: this search ran your own command ({results['objective'].get('command')}); "
                         "nas predict forecasts with the built-in forecaster's trained models only",
                         hint="the best params are in results.json (best.params); run your command with them")
    best = results.get("best") if isinstance(results, dict) else None
    status = run_status(run, info)  # running in run.json with its owner dead (kill -9): interrupted
    if isinstance(results, dict) and best is None and results.get("states") and status in (COMPLETED, FAILED):
        raise InputError(f"{run}: the search finished without a successful trial ({results.get('stop_reason')})",
                         hint="its report.md says why each trial failed; fix that and start a new search")
    if results is None and status in (COMPLETED, FAILED):  # finished, and its summary deleted or never written
        raise InputError(f"{run}: results.json is missing (the search {status})",
                         hint=f"agentlab nas --resume {shell_word(run)} rebuilds it from the run's study")
    if not isinstance(best, dict) or not isinstance(best.get("run_id"), str):
        raise InputError(f"{run}: the search has not finished (no best trial in results.json; status {status})",
                         hint=f"finish it first: agentlab nas --resume {shell_word(run)}")
    assert isinstance(results, dict)
    return results


def load_final_model(run: str | Path) -> FinalModel:
    """The best trial of the finished nas run folder ``run``; :class:`InputError` (exit 2) with one line otherwise."""
    run = Path(run)
    results = _finished_results(run)
    best = results["best"]
    folder = run / "trials" / best["run_id"]
    if not folder.is_dir():  # the best trial ran in another worker's run folder: the ensemble may name it
        block = results.get("ensemble")
        members = (block.get("members") or []) if isinstance(block, dict) else []
        entry = next((m for m in members if isinstance(m, dict) and m.get("run_id") == best["run_id"]
                      and isinstance(m.get("path"), str)), None)
        if entry is not None:
            folder = _member_folder(run, entry)
        elif isinstance(results.get("ran_here"), int) and results["ran_here"] < results.get("trials", 0):
            raise InputError(f"{run}: the best trial {best['run_id']} ran in another worker's run folder (a study "
                             f"shared through --storage; {results['ran_here']} of its {results['trials']} trials "
                             f"ran here), and {folder} does not hold it",
                             hint=f"forecast with that worker's run folder (the one holding trials/{best['run_id']}/),"
                             f" or copy that folder into {run / 'trials'}")
    return _load_trial(folder, best["run_id"], run, best)


def _best_id(run: Path) -> str | None:
    try:
        best = read_json(run / "results.json", what="results.json").get("best")
    except (InputError, AttributeError):
        return None
    return best.get("run_id") if isinstance(best, dict) else None


def _load_trial(trial: Path, run_id: str, run: Path, recorded: dict[str, Any]) -> FinalModel:
    """One trial of a run as a model: its config, checkpoint and scaler."""
    checkpoint = trial / "best_model.safetensors"
    if not checkpoint.is_file() or not (trial / "config_used.yaml").is_file():
        worker = _worker_folder(run, trial)
        if worker is not None:  # a member another worker of the shared study trained, read from its run folder
            gone = "is not there (moved or deleted?)" if not worker.is_dir() else "does not hold its checkpoint"
            raise InputError(f"{trial}: the trial {run_id} (best_model.safetensors, config_used.yaml) was trained "
                             f"by another worker of the shared study, whose run folder {worker} {gone}",
                             hint=f"put that worker's run folder back at {worker}, or copy it beside this one as "
                             f"{run.parent / worker.name} (or its trials/{run_id}/ into {run / 'trials'})" + (
                                 "; or forecast with --model best" if isinstance(recorded.get("weight"), (int, float))
                                 and (run / "trials" / str(_best_id(run))).is_dir() else ""))
        raise InputError(f"{trial}: the trial {run_id} has no checkpoint (best_model.safetensors, config_used.yaml)",
                         hint="copy the whole run folder, trials/ included")
    try:
        config = NASConfig.model_validate(yaml.safe_load(read_text(trial / "config_used.yaml", what="config")),
                                          context={"saved": True})  # as it ran, whatever checks came later
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"{trial / 'config_used.yaml'}: not a valid nas config ({str(exc).splitlines()[0]})",
                         hint="the run folder is damaged; rerun the search") from None
    scaler_path = trial / "scaler.json"
    scaler = read_json(scaler_path, what="scaler.json") if scaler_path.is_file() else None
    return FinalModel(run, trial, run_id, config, recorded, scaler if isinstance(scaler, dict) else None)


def _read_series(final: FinalModel, data: str | Path) -> SeriesData:
    """The CSV read as the run read its data, refused (one line) when its columns are not the run's."""
    path = Path(data)
    if path.is_dir():
        raise InputError(f"{path}: a folder, not a CSV file", hint="pass the CSV to forecast from")
    d = final.config.data
    series = load_csv(path, features="M", target=d.target, freq=d.freq)
    if final.scaler is not None:
        wanted = final.scaler["columns"]
        ok = final.scaler["target"] in series.columns if d.features == "S" else sorted(series.columns) == sorted(wanted)
        if not ok:
            raise InputError(f"{path}: columns {_names(series.columns)} are not the run's ({_names(wanted)})",
                             hint="forecast from a CSV with the columns the model was trained on")
        columns, values = series.columns, series.values
        if d.features != "S" and list(columns) != list(wanted):  # the model and the scaler read columns by position:
            # the CSV's put in the run's order by name (b, a forecast as a, b was a wrong forecast, exit 0)
            values = values[:, [list(columns).index(name) for name in wanted]]
            columns = list(wanted)
        if final.scaler["target"] != series.target or columns is not series.columns:
            series = SeriesData(series.dates, values, columns, final.scaler["target"], series.name, series.freq,
                                series.source)
    return series


def _names(columns: list[str], limit: int = 12) -> str:
    return ", ".join(columns[:limit]) + (f", ... ({len(columns)} in all)" if len(columns) > limit else "")


def _prepared(final: FinalModel, series: SeriesData) -> PreparedData:
    d = final.config.data
    return prepare(series, d.features, d.seq_len, d.label_len, d.pred_len, d.split, fixed=True)  # the run's windows


def _model(final: FinalModel, prepared: PreparedData) -> Any:
    """The trial's model with its checkpoint loaded, wrapped in train's ``_Trainer`` (the same forward as the
    trial's test), on the CPU unless the config asks for a device."""
    import torch
    from safetensors.torch import load_file

    from agentlab.core.models.device import resolve_device_dtype
    from agentlab.nas.train import _Trainer

    device = resolve_device_dtype(final.config.train.device, what="train.device")[0]
    trainer = _Trainer(final.config, prepared, device)
    weights = final.trial / "best_model.safetensors"
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors' SafetensorError, an OSError: a damaged run folder, one line
        raise InputError(f"{weights}: not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                         hint="the run folder is damaged; copy it again whole, or rerun the search") from None
    try:
        trainer.model.load_state_dict(state)
    except RuntimeError:
        raise InputError(f"the CSV gives {prepared.enc_in} channels; the model in {final.trial} was trained on "
                         "a different number", hint="forecast from a CSV with the run's columns") from None
    trainer.model.eval()
    return trainer, torch


def _scaler(final: FinalModel, prepared: PreparedData | None) -> Scaler:
    """The scaler the model was trained with: scaler.json, else the refit on the CSV's train split."""
    if final.scaler is None:
        assert prepared is not None
        return prepared.scaler
    return Scaler(np.asarray(final.scaler["mean"], dtype=np.float32), np.asarray(final.scaler["std"],
                                                                                  dtype=np.float32))


def _step(dates: np.ndarray) -> np.timedelta64:
    diffs = np.diff(dates.astype("datetime64[s]").astype(np.int64))
    return np.timedelta64(int(np.median(diffs)) if len(diffs) else 3600, "s")


def forecast(final: FinalModel | EnsembleModel, data: str | Path) -> dict[str, Any]:
    """The next ``pred_len`` steps after the last row of ``data``: dates, columns, values [pred_len, C] in original
    units, and the history tail for the plot. An ensemble's forecast is the weighted mean of its members' (the
    standardisation is linear, so the mean in original units is the mean in standardised ones)."""
    if isinstance(final, EnsembleModel):
        parts = [(forecast(member, data), weight) for member, weight in final.members]
        values = sum(weight * part["values"].astype(np.float64) for part, weight in parts)
        return {**parts[0][0], "values": np.asarray(values, dtype=np.float32), "run_id": final.run_id}
    series = _read_series(final, data)
    d = final.config.data
    selected = series.select(d.features)
    if len(selected.values) < d.seq_len:
        raise InputError(f"{series.where}: {len(selected.values)} rows, fewer than the model's lookback "
                         f"({d.seq_len})", hint=f"give at least {d.seq_len} rows of history")
    try:
        prepared: PreparedData | None = _prepared(final, series)
    except DataError:  # too short for the run's split: the stored scaler and the lookback suffice
        if final.scaler is None:
            raise
        prepared = None
    scaler = _scaler(final, prepared)
    n = len(selected.values)
    step = _step(selected.dates)
    future = selected.dates[-1] + step * np.arange(1, d.pred_len + 1)
    stamps = time_features(np.concatenate([selected.dates[n - d.seq_len:], future]), selected.freq)
    scaled = scaler.transform(selected.values[n - d.seq_len:])
    if prepared is None:  # build only the model: windows of the (short) CSV are not needed
        prepared = _stub_prepared(final, selected, scaler)
    trainer, torch = _model(final, prepared)
    x = torch.from_numpy(scaled)[None]
    y = torch.cat([x[:, d.seq_len - d.label_len:], torch.zeros(1, d.pred_len, x.shape[-1])], dim=1)
    marks = torch.from_numpy(stamps.astype(np.float32))[None]
    batch = (x, y, marks[:, : d.seq_len], marks[:, d.seq_len - d.label_len:])
    with torch.inference_mode(), torch.random.fork_rng(devices=trainer.rng_devices):
        torch.manual_seed(final.config.train.seed)
        pred, _ = trainer.forward(tuple(t.to(trainer.device) for t in batch),
                                  torch.tensor([n - d.seq_len], device=trainer.device))
    values = scaler.inverse_transform(pred[0].cpu().numpy())
    columns = selected.columns[-values.shape[1]:]
    tail = min(n, HISTORY_SHOWN * d.pred_len + d.seq_len)
    return {"dates": future, "columns": columns, "values": values, "history_dates": selected.dates[n - tail:],
            "history": selected.values[n - tail:, -values.shape[1]:], "run_id": final.run_id,
            "source": str(data), "note": _freq_note(selected)}


def _freq_note(selected: SeriesData) -> str | None:
    """What to tell when the CSV's timestamps say another frequency than the one the model was trained with (its
    time features are read as the run's, so hourly patterns are applied to daily rows without a word), else None."""
    from agentlab.nas.data import FREQ_NAMES, detect_freq

    seen = detect_freq(selected.dates, default=selected.freq)
    if seen == selected.freq or {seen, selected.freq} == {"d", "b"}:
        return None
    return (f"{selected.where}: the timestamps look {FREQ_NAMES.get(seen, seen)}, but the model was trained on "
            f"{FREQ_NAMES.get(selected.freq, selected.freq)} data (data.freq {selected.freq}): its forecast applies "
            "that time scale's patterns; forecast from data of the run's frequency")


def _stub_prepared(final: FinalModel, selected: SeriesData, scaler: Scaler) -> PreparedData:
    """A PreparedData with one window of the last rows: enough to build the model when the CSV is shorter than the
    run's split needs (forecasting needs only the lookback)."""
    from agentlab.nas.data import WindowDataset, detect_freq, detect_period

    d = final.config.data
    rows = selected.values[-(d.seq_len + d.pred_len):] if len(selected.values) >= d.seq_len + d.pred_len else \
        np.concatenate([selected.values, np.repeat(selected.values[-1:], d.pred_len, axis=0)])
    stamps = np.zeros((len(rows), time_features(selected.dates[:1], selected.freq).shape[1]), dtype=np.float32)
    ds = WindowDataset(scaler.transform(rows), stamps, d.seq_len, d.label_len, d.pred_len)
    c = rows.shape[1]
    return PreparedData(ds, ds, ds, scaler=scaler, enc_in=c, dec_in=c, c_out=c if d.features == "M" else 1,
                        time_features=stamps.shape[1], features=d.features, columns=selected.columns,
                        target=selected.target, split="ratio", period=detect_period(selected.dates),
                        n_steps=len(selected.values), name=selected.name, freq=selected.freq,
                        detected_freq=detect_freq(selected.dates), source=selected.source)


def _test_forecasts(final: FinalModel, data: str | Path) -> tuple[np.ndarray, np.ndarray, Scaler]:
    """The trial's forecasts and the targets of every test window of the CSV, standardised (float32, [windows,
    pred_len, channels]), and the scaler of the windows."""
    series = _read_series(final, data)
    prepared = _prepared(final, series)
    trainer, torch = _model(final, prepared)
    windows = trainer.test
    from agentlab.nas.train import EVAL_BATCH

    preds, trues = [], []
    with torch.inference_mode(), torch.random.fork_rng(devices=trainer.rng_devices):
        torch.manual_seed(final.config.train.seed)
        for starts in windows.chunks(max(EVAL_BATCH, final.config.train.batch_size)):
            pred, true = trainer.forward(windows.take(starts), starts + windows.offset)
            preds.append(pred.cpu().numpy())
            trues.append(true.float().cpu().numpy())
    # the test windows are standardised with the refit on the CSV's train split, as in the run
    return np.concatenate(preds), np.concatenate(trues), prepared.scaler


def backtest(final: FinalModel | EnsembleModel, data: str | Path) -> dict[str, Any]:
    """MSE/MAE over the CSV's test windows, standardised (as the trial's test) and in original units; an
    ensemble's forecast of each window is the weighted mean of its members'."""
    if isinstance(final, EnsembleModel):
        pred: np.ndarray | None = None
        for member, weight in final.members:
            p, true, scaler = _test_forecasts(member, data)
            if pred is not None and p.shape != pred.shape:
                raise InputError(f"{data}: the members of the ensemble forecast different test windows "
                                 f"({member.run_id}: {p.shape[0]}, others {pred.shape[0]})",
                                 hint="backtest one trial: --model best")
            pred = weight * p.astype(np.float64) + (pred if pred is not None else 0.0)
        assert pred is not None
        # stored float16 forecasts: the recorded MSE matches to about 1e-3, not to the last digit
        tolerance = 2e-3
    else:
        pred, true, scaler = _test_forecasts(final, data)
        tolerance = 1e-4
    err = pred.astype(np.float64) - true
    p, t = (scaler.inverse_transform(a.astype(np.float32)).astype(np.float64) for a in (pred, true))
    return {"run_id": final.run_id, "windows": len(true), "mse": float(np.mean(np.square(err))),
            "mae": float(np.mean(np.abs(err))), "mse_original": float(np.mean(np.square(p - t))),
            "mae_original": float(np.mean(np.abs(p - t))), "recorded_test_mse": final.recorded.get("test_mse"),
            "recorded_test_mae": final.recorded.get("test_mae"), "tolerance": tolerance}


DEFAULT_OUT = "forecast.csv"
PLOT_TAG = "agentlab nas predict"  # the forecast plot's PNG Software field: a plot this wrote, alone, is its own


def output_paths(run: Path, data: str | Path, out: Path | None, force: bool = False) -> tuple[Path, Path]:
    """Where the forecast CSV and its plot go: ``out`` (None: ``RUN/forecast.csv``) and the .png beside it. Refused
    (:class:`InputError`, exit 2, before anything is written) when ``out`` is not a ``.csv`` (the plot would take
    its name), when the CSV or the plot would be the ``--data`` CSV (compared resolved, links followed, or the same
    file), when it lies inside a run folder other than as a file at its top level, or when it would replace a file
    that is not a forecast agentlab wrote (the CSV, its header beginning ``date,``, with its plot PNG beside it; or
    its tagged plot alone, ``_is_forecast``) or is read-only. An existing forecast is replaced at the default
    place, elsewhere with ``force`` only."""
    target = Path(run) / DEFAULT_OUT if out is None else Path(out)
    if target.suffix.lower() != ".csv":
        raise InputError(f"--out {target}: the forecast is a CSV and its plot goes beside it as .png, so --out must "
                         "end in .csv; nothing was written",
                         hint=f"use --out {target.with_suffix('.csv')} (the plot: {target.with_suffix('.png')})")
    plot = target.with_suffix(".png")
    source = Path(data)
    for path in (target, plot):
        if _same_file(path, source):
            raise InputError(f"--out {target}: {'its plot ' + str(plot) + ' ' if path == plot else ''}is the input "
                             f"CSV (--data {source}): it would be replaced by the forecast; nothing was written",
                             hint="choose another --out (a new .csv file)")
    _refuse_inside_run(target)
    existing = [p for p in (target, plot) if p.exists() or p.is_symlink()]
    if not existing:
        return target, plot
    for path in existing:
        if path.is_dir():
            raise InputError(f"--out {target}: {path} is a folder; nothing was written",
                             hint="choose another --out (a new .csv file)")
    if not _is_forecast(target, plot):
        shown = existing[0]
        raise InputError(f"--out {target}: {shown} already exists and is not a forecast `nas predict` wrote (a CSV "
                         "beginning `date,` with its plot .png beside it, or that plot alone); nothing was written",
                         hint="choose another --out (a new .csv file); --force replaces only such a forecast")
    default = out is None or _resolved(target) == _resolved(Path(run) / DEFAULT_OUT)
    if not force and not default:
        raise InputError(f"--out {target}: already exists (a forecast); nothing was written",
                         hint="choose another --out, or pass --force to replace that forecast and its plot")
    for path in existing:
        if not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222:  # (root may write any file)
            raise InputError(f"--out {target}: {path} is read-only; nothing was written",
                             hint="choose another --out, or make it writable (chmod u+w) to replace it")
    return target, plot


def _resolved(path: Path) -> Path:
    return resolved(path) or path.absolute()  # a link loop: the path as given, made absolute


def _same_file(path: Path, other: Path) -> bool:
    """``path`` is ``other``: the same resolved path (a link followed), or the same file (a hard link)."""
    if _resolved(path) == _resolved(other):
        return True
    try:
        return path.exists() and other.exists() and os.path.samefile(path, other)
    except OSError:
        return False


def _refuse_inside_run(target: Path) -> None:
    """Refuse a forecast written into a run folder (any folder holding run.json: the run predicted, another
    worker's, any agentlab run) other than as a file at its top level: the run's trials/, best/, ... are its own."""
    folder = _resolved(target).parent
    for above in (folder, *folder.parents):
        if (above / "run.json").is_file():
            if above != folder:
                raise InputError(f"--out {target}: inside the run folder {above} ({folder.relative_to(above)}/ is "
                                 "the run's own); nothing was written",
                                 hint=f"write the forecast at the run folder's top ({above / target.name}) or "
                                 "outside it")
            return


def _is_forecast(target: Path, plot: Path) -> bool:
    """``target`` and ``plot`` are a forecast ``write_forecast`` wrote: both files, the CSV's header beginning
    ``date,``, the plot a PNG (the pair is the marker: an input CSV has no plot of its own name beside it); or the
    plot alone, tagged ``PLOT_TAG`` (written first: a predict stopped before its CSV)."""
    try:
        with plot.open("rb") as f:
            magic = f.read(8)
            if not (target.exists() or target.is_symlink()):  # the plot alone: only one this wrote (its tag)
                return magic == b"\x89PNG\r\n\x1a\n" and PLOT_TAG.encode() in f.read(4096) and plot.is_file()
        with target.open("rb") as f:
            header = f.readline(4096)
    except OSError:
        return False
    return header.startswith(b"date,") and magic == b"\x89PNG\r\n\x1a\n" and target.is_file() and plot.is_file()


def write_forecast(result: dict[str, Any], out: Path) -> Path:
    """The forecast as CSV (``date`` + one column per forecast channel) at ``out``, the plot beside it (.png);
    both atomic. Returns the plot's path. ``out`` must end in .csv (the plot would replace it otherwise); the
    checks of where it may go are :func:`output_paths`'."""
    if out.suffix.lower() != ".csv":
        raise InputError(f"--out {out}: must end in .csv (its plot goes beside it as .png); nothing was written",
                         hint=f"use --out {out.with_suffix('.csv')}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["date", *result["columns"]])
    for date, row in zip(result["dates"], result["values"], strict=True):
        writer.writerow([str(date.astype("datetime64[s]")).replace("T", " "), *(f"{v:.6g}" for v in row)])
    plot = out.with_suffix(".png")
    atomic_write_bytes(plot, plot_forecast(result))  # first: a CSV beside no plot is never taken for a forecast
    atomic_write_text(out, buffer.getvalue())
    return plot


MAX_PANELS = 16  # the forecast plot's panels: every channel up to this many, else the last this many


def plotted(columns: list[str]) -> tuple[list[int], str]:
    """The channels the forecast plot shows (indices of ``columns``) and the plot's title: every channel (ETTh1's
    7 too: it showed the last 4 only, silently), else the last ``MAX_PANELS`` (the target last), which the title
    says."""
    shown = list(range(len(columns)))[-MAX_PANELS:]
    if len(shown) == len(columns):
        return shown, f"forecast of {len(columns)} channel{'' if len(columns) == 1 else 's'}"
    return shown, (f"the last {len(shown)} of {len(columns)} channels ({columns[shown[0]]} to {columns[-1]}); "
                   "the CSV holds every one")


def plot_forecast(result: dict[str, Any]) -> bytes:
    """``forecast_figure`` as PNG."""
    buffer = io.BytesIO()
    forecast_figure(result).savefig(buffer, format="png", metadata={"Software": PLOT_TAG})
    return buffer.getvalue()


def forecast_figure(result: dict[str, Any]) -> Any:
    """History tail and forecast of each channel, one small panel each (``plotted``: at most ``MAX_PANELS``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown, title = plotted([str(c) for c in result["columns"]])
    cols = 1 if len(shown) <= 4 else 2
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(7 * cols, 2.2 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    hist_x = result["history_dates"].astype("datetime64[s]").astype(object)
    fut_x = result["dates"].astype("datetime64[s]").astype(object)
    for i, c in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(hist_x, result["history"][:, c], color="0.3", lw=1, label="history")
        ax.plot(fut_x, result["values"][:, c], color="C1", lw=1.5, label=f"forecast ({result['run_id']})")
        ax.set_ylabel(str(result["columns"][c]))
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.autofmt_xdate()
    for ax in fig.axes[-cols:]:  # the bottom panel of each column keeps its dates (an odd count: one row higher)
        ax.tick_params(axis="x", labelbottom=True)
        for tick in ax.get_xticklabels():
            tick.set(rotation=30, ha="right")
    fig.tight_layout()
    return fig


def backtest_lines(bt: dict[str, Any]) -> list[str]:
    """The console lines of a backtest."""
    rec = bt["recorded_test_mse"]
    same = "" if not isinstance(rec, (int, float)) or not math.isfinite(rec) else (
        f"; the run recorded test MSE {rec:.4g}" + (" (same)" if math.isclose(bt["mse"], rec,
                                                                              rel_tol=bt.get("tolerance", 1e-4))
                                                     else " (differs: another CSV or split)"))
    return [f"backtest {bt['run_id']}: {bt['windows']} test windows, MSE {bt['mse']:.4g}, MAE {bt['mae']:.4g} "
            f"(standardised){same}",
            f"in original units: MSE {bt['mse_original']:.4g}, MAE {bt['mae_original']:.4g}"]

"""AutoGluon-TimeSeries as a peer of `agentlab nas` on an ETT-format CSV, on the same data, split and test windows.

Run by the python of AutoGluon's own environment (never agentlab's: it imports nothing from agentlab):

    python3 -m venv /work/ag-venv && /work/ag-venv/bin/pip install autogluon.timeseries
    /work/ag-venv/bin/python benchmarks/peers/autogluon_ett.py --data ETTh1.csv --horizon 96 --time-limit 2100

The protocol is agentlab's (agentlab/nas/data.py): multivariate, every column but ``date`` a series; the ETT split
for files named ETTh1/ETTh2 (12/4/4 months of 30 days: 8640/2880/2880 rows at one row an hour, four an hour for
ETTm) and 70/10/20 otherwise; each column standardised by the train part's mean and population std (a constant
column gets std 1); every score on that standardised scale. AutoGluon's ``TimeSeriesPredictor`` (eval_metric MSE,
``prediction_length`` = the horizon) is fitted within ``--time-limit`` seconds on the train and validation rows (one
item per column) with models that need no pretrained weights (no Chronos): DLinear, PatchTST, TiDE, DeepAR and
SeasonalNaive by default, each with AutoGluon's own defaults. Like agentlab, it chooses on the validation months:
``--val-windows`` (10) windows of the horizon spread over them (``num_val_windows``, ``val_step_size``, each model
trained once on the rows before the first, ``refit_every_n_windows=None``); AutoGluon builds its own weighted ensemble
on them and predicts with the best model on that validation score. Then every test window is forecast: window ``i``
starts at row ``val_end + i`` and covers ``horizon`` rows, ``i`` = 0 .. test_rows - horizon, stride 1 (exactly
agentlab's test windows, whatever the lookback); its history is every row before it, cut to ``--context`` rows. The
windows are predicted as items of one TimeSeriesDataFrame (item = window x column), ``--chunk`` items a call.
``--stride K`` keeps every K-th window (an honest subset when predicting all of them takes too long; the JSON says
which).

Prints one JSON object on stdout: test MSE and MAE over every kept window, step and column, the windows, the time
spent fitting and predicting, AutoGluon's leaderboard. Progress goes to stderr.

pandas and numpy are imported at the top (the pure helpers below use them); autogluon only inside the functions that
fit and predict.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SPLITS = ("auto", "ett_hour", "ett_minute", "ratio")
DEFAULT_MODELS = ("DLinear", "PatchTST", "TiDE", "DeepAR", "SeasonalNaive")


# --------------------------------------------------------------------------- pure helpers (the protocol)


def read_series(path: str | Path) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    """The CSV's dates and its value columns (every column but ``date``, in the file's order, float64)."""
    frame = pd.read_csv(path)
    if "date" not in frame.columns:
        raise ValueError(f"{path}: no 'date' column in the header")
    dates = pd.DatetimeIndex(pd.to_datetime(frame["date"]))
    values = frame.drop(columns=["date"]).astype(np.float64)
    if values.shape[1] == 0:
        raise ValueError(f"{path}: only a 'date' column, nothing to forecast")
    return dates, values


def move_last(values: pd.DataFrame, target: str = "OT") -> pd.DataFrame:
    """The columns with ``target`` last, as agentlab orders them in "M" mode (a no-op for ETT, whose OT is last);
    without such a column the file's order stays."""
    if target not in values.columns:
        return values
    return values[[c for c in values.columns if c != target] + [target]]


def resolve_split(name: str, split: str = "auto") -> str:
    """"auto": the ETT split for files named ETTh1/ETTh2 (hourly) or ETTm1/ETTm2 (15 min), else "ratio"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "auto":
        return split
    return {"ETTh1": "ett_hour", "ETTh2": "ett_hour", "ETTm1": "ett_minute", "ETTm2": "ett_minute"}.get(name, "ratio")


def split_ends(n_rows: int, split: str) -> tuple[int, int, int]:
    """The rows where the train, validation and test parts end (each part starts where the previous one ends):
    8640/11520/14400 for ETTh (12/4/4 months of 30 days; rows after the 20 months are not used), 70/10/20 of the
    rows otherwise."""
    if split in ("ett_hour", "ett_minute"):
        per_hour = 1 if split == "ett_hour" else 4
        train, val, test = (m * 30 * 24 * per_hour for m in (12, 4, 4))
        if n_rows < train + val + test:
            raise ValueError(f"the {split} split needs {train + val + test} rows, the series has {n_rows}")
        return train, train + val, train + val + test
    if split != "ratio":
        raise ValueError(f"unknown split {split!r}")
    num_train, num_test = int(n_rows * 0.7), int(n_rows * 0.2)
    return num_train, n_rows - num_test, n_rows


def standardise(values: np.ndarray, train_end: int) -> np.ndarray:
    """Each column minus the train part's mean, over its population std (std 1 for a constant column)."""
    train = values[:train_end]
    std = train.std(axis=0)
    return (values - train.mean(axis=0)) / np.where(std > 0, std, 1.0)


def test_starts(val_end: int, test_end: int, horizon: int, stride: int = 1) -> np.ndarray:
    """The first forecast row of each test window: ``val_end + i`` for i = 0, stride, ... up to the last window
    that ends by ``test_end`` (agentlab's test windows for every lookback at stride 1)."""
    if horizon < 1 or stride < 1:
        raise ValueError("horizon and stride must be >= 1")
    return np.arange(val_end, test_end - horizon + 1, stride)


def window_frame(scaled: np.ndarray, dates: pd.DatetimeIndex, starts: np.ndarray, context: int) -> pd.DataFrame:
    """A long frame (item_id, timestamp, target) of the histories the windows are forecast from: item
    ``{start}_{column}`` holds rows ``max(0, start - context) .. start - 1`` of that column."""
    n_cols = scaled.shape[1]
    parts = []
    for start in starts:
        lo = max(0, int(start) - context)
        block = scaled[lo:start]
        steps = len(block)
        parts.append(pd.DataFrame({
            "item_id": np.repeat([f"{int(start)}_{c}" for c in range(n_cols)], steps),
            "timestamp": np.tile(dates[lo:start].to_numpy(), n_cols),
            "target": block.T.reshape(-1),
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["item_id", "timestamp", "target"])


def truth(scaled: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """The true values of the windows: [windows, horizon, columns]."""
    return np.stack([scaled[s:s + horizon] for s in starts]) if len(starts) else np.zeros((0, horizon,
                                                                                           scaled.shape[1]))


def scores(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """MSE and MAE over every window, step and column."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.mean(err ** 2)), float(np.mean(np.abs(err)))


def infer_freq(dates: pd.DatetimeIndex) -> str:
    """The series' pandas frequency (from its first rows), "h" when it cannot be told."""
    try:
        return pd.infer_freq(dates[:200]) or "h"
    except (TypeError, ValueError):
        return "h"


# --------------------------------------------------------------------------- AutoGluon


def hyperparameters(models: list[str]) -> dict[str, dict[str, Any]]:
    """AutoGluon's per-model settings: each model with its own defaults (none downloads pretrained weights)."""
    return {name: {} for name in models}


def val_step(train_end: int, val_end: int, horizon: int, windows: int) -> int | None:
    """AutoGluon's ``val_step_size`` for ``windows`` validation windows ending at ``val_end`` spread over the
    validation part (the first starts at or after ``train_end``); None for one window (AutoGluon's default)."""
    if windows < 1:
        raise ValueError("--val-windows must be >= 1")
    if windows == 1:
        return None
    step = (val_end - train_end - horizon) // (windows - 1)
    if step < 1:
        raise ValueError(f"{windows} validation windows of {horizon} steps do not fit in {val_end - train_end} rows")
    return step


def fit(train_long: pd.DataFrame, horizon: int, freq: str, models: list[str], time_limit: float, seed: int,
        path: str, val_windows: int = 1, step: int | None = None) -> Any:
    """A TimeSeriesPredictor (eval_metric MSE) fitted on ``train_long`` within ``time_limit`` seconds, validated on
    the last ``val_windows`` windows ``step`` rows apart (each model trained once, before the first of them)."""
    from autogluon.timeseries import TimeSeriesDataFrame, TimeSeriesPredictor

    data = TimeSeriesDataFrame.from_data_frame(train_long, id_column="item_id", timestamp_column="timestamp")
    predictor = TimeSeriesPredictor(prediction_length=horizon, eval_metric="MSE", freq=freq, path=path,
                                    target="target", verbosity=1)
    predictor.fit(data, hyperparameters=hyperparameters(models), time_limit=int(time_limit), random_seed=seed,
                  enable_ensemble=True, num_val_windows=val_windows, val_step_size=step,
                  refit_every_n_windows=None)
    return predictor


def predict_windows(predictor: Any, scaled: np.ndarray, dates: pd.DatetimeIndex, starts: np.ndarray, horizon: int,
                    context: int, chunk: int) -> np.ndarray:
    """The mean forecast of every window: [windows, horizon, columns], ``chunk`` items per predict call."""
    from autogluon.timeseries import TimeSeriesDataFrame

    n_cols = scaled.shape[1]
    per_call = max(1, chunk // n_cols)
    out = np.zeros((len(starts), horizon, n_cols))
    begun = time.perf_counter()
    for lo in range(0, len(starts), per_call):
        batch = starts[lo:lo + per_call]
        frame = TimeSeriesDataFrame.from_data_frame(window_frame(scaled, dates, batch, context), id_column="item_id",
                                                    timestamp_column="timestamp")
        pred = predictor.predict(frame)["mean"]
        for k, start in enumerate(batch):
            for c in range(n_cols):
                out[lo + k, :, c] = pred.loc[f"{int(start)}_{c}"].to_numpy()[:horizon]
        print(f"predicted {min(lo + per_call, len(starts))}/{len(starts)} windows "
              f"({time.perf_counter() - begun:.0f} s)", file=sys.stderr, flush=True)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    dates, values = read_series(args.data)
    values = move_last(values, args.target)
    split = resolve_split(Path(args.data).stem, args.split)
    train_end, val_end, test_end = split_ends(len(values), split)
    scaled = standardise(values.to_numpy(), train_end)
    freq = infer_freq(dates)
    history = pd.DataFrame({
        "item_id": np.repeat([str(c) for c in range(scaled.shape[1])], val_end),
        "timestamp": np.tile(dates[:val_end].to_numpy(), scaled.shape[1]),
        "target": scaled[:val_end].T.reshape(-1),
    })
    models = [m for m in args.models.split(",") if m]
    starts = test_starts(val_end, test_end, args.horizon, args.stride)
    all_windows = len(test_starts(val_end, test_end, args.horizon))
    with tempfile.TemporaryDirectory(prefix="ag-ett-") as tmp:
        begun = time.perf_counter()
        step = val_step(train_end, val_end, args.horizon, args.val_windows)
        predictor = fit(history, args.horizon, freq, models, args.time_limit, args.seed,
                        args.path or str(Path(tmp) / "predictor"), args.val_windows, step)
        fit_s = time.perf_counter() - begun
        board = predictor.leaderboard(silent=True)
        begun = time.perf_counter()
        pred = predict_windows(predictor, scaled, dates, starts, args.horizon, args.context, args.chunk)
        predict_s = time.perf_counter() - begun
        best = predictor.model_best
    mse, mae = scores(pred, truth(scaled, starts, args.horizon))
    import autogluon.timeseries as agts

    return {
        "model": "AutoGluon-TimeSeries", "autogluon": getattr(agts, "__version__", "?"), "mse": mse, "mae": mae,
        "horizon": args.horizon, "split": split, "rows": [train_end, val_end - train_end, test_end - val_end],
        "windows": int(len(starts)), "all_windows": all_windows, "stride": args.stride, "context": args.context,
        "time_limit_s": args.time_limit, "fit_s": fit_s, "predict_s": predict_s, "seed": args.seed,
        "models": models, "best_model": best,
        "val_windows": args.val_windows, "val_step": val_step(train_end, val_end, args.horizon, args.val_windows),
        "leaderboard": [{"model": str(r["model"]), "score_val": float(r["score_val"])
                         if r["score_val"] is not None and math.isfinite(float(r["score_val"])) else None}
                        for _, r in board.iterrows()],
        "note": "test MSE/MAE on the data standardised by the train part's statistics, over "
                + ("every test window" if args.stride == 1 else f"every {args.stride}th test window"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an ETT-format CSV (date, then the series)")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--time-limit", type=float, required=True, help="AutoGluon's fit time limit in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stride", type=int, default=1, help="keep every K-th test window (1: all, agentlab's)")
    parser.add_argument("--context", type=int, default=512, help="history rows given for each test window")
    parser.add_argument("--chunk", type=int, default=4096, help="items (window x column) per predict call")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="AutoGluon model names")
    parser.add_argument("--val-windows", type=int, default=10, help="AutoGluon's validation windows, spread over the "
                        "validation part (1: AutoGluon's default, the last horizon of the history only)")
    parser.add_argument("--split", default="auto", choices=SPLITS)
    parser.add_argument("--target", default="OT", help="the column put last (agentlab's data.target)")
    parser.add_argument("--path", help="where AutoGluon keeps its models (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: not found")
    try:
        result = run(args)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Time-series data for the Informer forecaster: the series, ETT splits, scaling, time features, windows.

Reproduces the data pipeline of Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence Time-Series
Forecasting" (AAAI 2021) and its reference code (``Dataset_ETT_hour``, ``Dataset_ETT_minute``, ``Dataset_Custom``,
``time_features`` with ``timeenc=1``): same borders, same window indexing, scaler fitted on the train part only.
Differences: the CSV is read with the ``csv`` module, no pandas (:mod:`agentlab.nas.csvfile`), the target column is
always moved last (as ``Dataset_Custom`` does; a no-op for ETT, whose target ``OT`` is last already), and the val/test
loaders are not shuffled and keep their last partial batch.

Without a CSV, :func:`synthetic_series` gives an offline default with daily and weekly seasonality, a trend, a slow
latent drift and cross-channel correlation. torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np

from agentlab.core.errors import ConfigError

log = logging.getLogger(__name__)

FEATURES = ("M", "S", "MS")
DEFAULT_TARGET = "OT"  # data.target's default: the ETT files' target column
SPLITS = ("auto", "ett_hour", "ett_minute", "ratio")
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
                 "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")
# NN/NN/YYYY read day first (a file's column decides: csvfile._slash_order, since 01/02/2020 reads both ways)
_DAY_FIRST = {"%m/%d/%Y %H:%M:%S": "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M": "%d/%m/%Y %H:%M", "%m/%d/%Y": "%d/%m/%Y"}
# Feature order per frequency, exactly as the reference ``time_features_from_frequency_str``.
_FREQ_FEATURES = {
    "s": ("second", "minute", "hour", "dayofweek", "dayofmonth", "dayofyear"),
    "t": ("minute", "hour", "dayofweek", "dayofmonth", "dayofyear"),
    "h": ("hour", "dayofweek", "dayofmonth", "dayofyear"),
    "d": ("dayofweek", "dayofmonth", "dayofyear"),
    "b": ("dayofweek", "dayofmonth", "dayofyear"),
    "w": ("dayofmonth", "weekofyear"),
    "m": ("monthofyear",),
}
_STEP_SECONDS = {"s": 1, "t": 900, "h": 3600, "d": 86400}  # synthetic data: "t" steps by 15 minutes like ETTm
AUTO = "auto"  # data.freq: the frequency detected from the timestamps' spacing (detect_freq)
FREQ_NAMES = {"s": "secondly", "t": "minutely", "h": "hourly", "d": "daily", "b": "business-daily", "w": "weekly",
              "m": "monthly"}


class DataError(ConfigError, ValueError):
    """Unusable data or data options; also a ``ValueError`` so plain callers can catch it."""


@dataclass
class SeriesData:
    """A multivariate series: ``values[t, c]`` observed at ``dates[t]``; ``target`` is one of ``columns``."""

    dates: np.ndarray  # datetime64[s], shape [T]
    values: np.ndarray  # float32, shape [T, C]
    columns: list[str]
    target: str
    name: str
    freq: str = "h"
    source: str = ""  # where the series came from (a file path), for messages; ``name`` when empty
    sha256: str = ""  # the sha256 of the file read (a resume and a shared study's workers compare it), "" without

    def __post_init__(self) -> None:
        self.dates = np.asarray(self.dates, dtype="datetime64[s]")
        self.values = np.asarray(self.values, dtype=np.float32)
        self.freq = resolve_freq(self.freq, self.dates)
        if self.values.ndim != 2 or len(self.dates) != len(self.values) or self.values.shape[1] != len(self.columns):
            raise DataError(f"{self.where}: dates {self.dates.shape}, values {self.values.shape} and "
                            f"{len(self.columns)} columns do not match")
        if self.target not in self.columns:
            raise DataError(f"{self.where}: target '{self.target}' is not a column ({_listed(self.columns)})",
                            hint="choose the target with --set data.target=COLUMN")

    @property
    def where(self) -> str:
        """The series' source for messages: its file path, else its name."""
        return self.source or self.name

    def select(self, features: str) -> SeriesData:
        """Columns used for ``features``: the target alone for "S", else all columns with the target last."""
        check_features(features)
        keep = [self.target] if features == "S" else [c for c in self.columns if c != self.target] + [self.target]
        idx = [self.columns.index(c) for c in keep]
        return SeriesData(self.dates, self.values[:, idx], keep, self.target, self.name, self.freq, self.source,
                          self.sha256)


@dataclass
class Scaler:
    """Per-channel standardisation, fitted on the train part only (population std, as the reference scaler)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, data: np.ndarray) -> Scaler:
        """Mean and std over time of ``data`` [T, C]; a constant channel gets std 1 instead of 0."""
        std = data.std(axis=0)
        return cls(data.mean(axis=0).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Standardise ``data`` [..., C]."""
        return ((data - self.mean) / self.std).astype(np.float32)

    def inverse_transform(self, data: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`; with fewer channels than fitted ("MS" output) the last ones are used."""
        c = data.shape[-1]
        return (data * self.std[-c:] + self.mean[-c:]).astype(np.float32)


class WindowDataset:
    """Sliding windows ``(x_enc, y, x_mark_enc, y_mark)`` as float32 tensors, indexed like Informer's datasets.

    A map-style dataset for ``torch.utils.data.DataLoader``: ``x_enc`` covers ``[i, i + seq_len)``, ``y`` covers the
    last ``label_len`` steps of it plus the next ``pred_len`` steps. ``data`` [T, C] (scaled) and ``stamps``
    [T, time features] hold the split's rows, so callers may gather windows in bulk themselves.
    """

    def __init__(self, data: np.ndarray, stamps: np.ndarray, seq_len: int, label_len: int, pred_len: int):
        import torch

        self.data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        self.stamps = torch.from_numpy(np.ascontiguousarray(stamps, dtype=np.float32))
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len

    def __len__(self) -> int:
        return max(0, len(self.data) - self.seq_len - self.pred_len + 1)

    def __getitem__(self, index: int) -> tuple[Any, Any, Any, Any]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {index} out of range for {n} windows")
        s_end = index + self.seq_len
        r_begin = s_end - self.label_len
        r_end = s_end + self.pred_len
        return self.data[index:s_end], self.data[r_begin:r_end], self.stamps[index:s_end], self.stamps[r_begin:r_end]


@dataclass
class PreparedData:
    """Split datasets, the train-fitted scaler and the channel counts the model needs."""

    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    scaler: Scaler
    enc_in: int
    dec_in: int
    c_out: int
    time_features: int
    features: str
    columns: list[str]
    target: str
    split: str
    borders: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))
    period: int = 24  # the daily cycle in steps (detect_period), for the period-aware families
    n_steps: int = 0  # rows of the whole series (literature.recognise tells the ETT files by name and shape)
    name: str = ""  # the series' name (a CSV's file stem)
    freq: str = "h"  # the time features' frequency code (data.freq, or the one detected from the timestamps)
    detected_freq: str = "h"  # the frequency the timestamps' spacing says (detect_freq), whatever data.freq is
    source: str = ""  # where the series came from (a file path), empty for the synthetic series
    sha256: str = ""  # the sha256 of that file (SeriesData.sha256), empty for the synthetic series

    @property
    def f_dim(self) -> int:
        """Loss channels: compare the model output with ``y[:, -pred_len:, f_dim:]`` (the target alone for "MS")."""
        return -1 if self.features == "MS" else 0

    def model_kwargs(self) -> dict[str, int]:
        """The :class:`InformerSpec` fields fixed by the data."""
        return {"enc_in": self.enc_in, "dec_in": self.dec_in, "c_out": self.c_out, "time_features": self.time_features}


def check_features(features: str) -> None:
    """Raise :class:`DataError` unless ``features`` is "M", "S" or "MS"."""
    if features not in FEATURES:
        raise DataError(f"features must be one of {FEATURES}, got {features!r}",
                        hint="M: all channels in and out; S: target only; MS: all channels in, target out")


def resolve_target(columns: list[str], target: str, features: str, where: str) -> str:
    """The target column of a series with ``columns``: ``target`` when it is one of them.

    In "M" mode every column is forecast and the target only decides which column goes last, so the default target
    missing (a CSV without ``OT``) falls back to the last column, as the file orders it, and says so in the log; a
    target named by hand that is no column (a typo) raises, as it would be ignored. In "S" and "MS" the target is
    what is forecast: a missing one raises :class:`DataError` listing the columns.
    """
    check_features(features)
    if target in columns:
        return target
    if not columns:
        raise DataError(f"{where}: no value columns")
    if features == "M" and target != DEFAULT_TARGET:
        raise DataError(f"{where}: target column '{target}' not found (columns: {_listed(columns)})",
                        hint="features M forecasts every column and data.target only picks the one kept last: name "
                        f"one of them (--set data.target={columns[-1]}), or leave data.target out")
    if features == "M":
        log.info("%s: target %r is not a column; features M forecasts every column, the last one (%r) stays last",
                 where, target, columns[-1])
        return columns[-1]
    raise DataError(f"{where}: target column '{target}' not found (columns: {_listed(columns)})",
                    hint=f"features {features} forecasts one column: name it with --set data.target=COLUMN, e.g. "
                    f"--set data.target={columns[-1]}")


def _listed(names: list[str], limit: int = 20) -> str:
    """Column names for a message, the first ``limit`` of them (a wide file has hundreds)."""
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def normalize_freq(freq: str) -> str:
    """Map a frequency string ("h", "1H", "15min", "t", "d", ...) to the reference code's one-letter code;
    ``auto`` stays ``auto`` (:func:`resolve_freq` turns it into a code once the timestamps are known)."""
    if str(freq).strip().lower() == AUTO:
        return AUTO
    code = str(freq).strip().lstrip("0123456789")
    code = {"min": "t", "T": "t", "H": "h", "D": "d", "B": "b", "W": "w", "S": "s", "M": "m"}.get(code, code)
    if code not in _FREQ_FEATURES:
        raise DataError(f"unsupported freq {freq!r}",
                        hint=f"use auto (detected from the timestamps) or one of {', '.join(_FREQ_FEATURES)} "
                        "(h = hourly)")
    return code


def detect_freq(dates: np.ndarray, default: str = "h") -> str:
    """The time-feature frequency code the timestamps' median spacing says: s (under a minute), t (minutes, e.g.
    ETTm's 15), h (hours), d (days), w (weeks), m (a month or more); ``default`` when the spacing says nothing."""
    stamps = np.asarray(dates, dtype="datetime64[s]").astype(np.int64)
    if len(stamps) < 2:
        return default
    step = float(np.median(np.diff(stamps)))
    if step <= 0:
        return default
    for limit, code in ((60, "s"), (3600, "t"), (86400, "h"), (7 * 86400, "d"), (28 * 86400, "w")):
        if step < limit * 0.95:  # 23-hour or 6.9-day medians (a daylight-saving shift) still count as the longer unit
            return code
    return "m"


def resolve_freq(freq: str, dates: np.ndarray) -> str:
    """``freq`` as a one-letter code; ``auto`` becomes the one the timestamps say (:func:`detect_freq`)."""
    code = normalize_freq(freq)
    return detect_freq(dates) if code == AUTO else code


def time_feature_count(freq: str) -> int:
    """Number of time-feature columns for ``freq`` (4 for hourly); the model's ``time_features``."""
    return len(_FREQ_FEATURES[normalize_freq(freq)])


def time_features(dates: np.ndarray, freq: str = "h") -> np.ndarray:
    """The reference 'timeF' encoding: calendar fields scaled to [-0.5, 0.5], shape [T, time_feature_count]."""
    d = np.asarray(dates, dtype="datetime64[s]")
    day = d.astype("datetime64[D]")
    secs = (d - day).astype(np.int64)
    dow = (day.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0 as in pandas
    thursday = day + (3 - dow)  # ISO weeks are numbered by the year of their Thursday
    fields = {
        "second": (secs % 60) / 59.0,
        "minute": (secs // 60 % 60) / 59.0,
        "hour": (secs // 3600) / 23.0,
        "dayofweek": dow / 6.0,
        "dayofmonth": (day - day.astype("datetime64[M]")).astype(np.int64) / 30.0,
        "dayofyear": (day - day.astype("datetime64[Y]")).astype(np.int64) / 365.0,
        "monthofyear": (day.astype("datetime64[M]").astype(np.int64) % 12) / 11.0,
        "weekofyear": ((thursday - thursday.astype("datetime64[Y]")).astype(np.int64) // 7) / 52.0,
    }
    cols = [fields[name] - 0.5 for name in _FREQ_FEATURES[resolve_freq(freq, d)]]
    return np.stack(cols, axis=1).astype(np.float32)


def _parse_date(text: str, day_first: bool = False) -> datetime:
    """A timestamp in ISO 8601 or one of ``_DATE_FORMATS``; ``NN/NN/YYYY`` month first, or day first when
    ``day_first`` (a CSV's column says which: ``csvfile._slash_order``)."""
    s = text.strip()
    try:
        parsed = datetime.fromisoformat(s)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(s, _DAY_FIRST.get(fmt, fmt) if day_first else fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(s) from None
    return parsed.replace(tzinfo=None)  # wall-clock time is what the calendar features describe


def resolve_split(name: str, split: str = "auto") -> str:
    """"auto" picks the ETT split for files named ETTh1/ETTh2 (hourly) or ETTm1/ETTm2 (15 min), else "ratio"."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "auto":
        return split
    return {"ETTh1": "ett_hour", "ETTh2": "ett_hour", "ETTm1": "ett_minute", "ETTm2": "ett_minute"}.get(name, "ratio")


def split_borders(n_steps: int, seq_len: int, split: str) -> tuple[list[int], list[int]]:
    """Row borders ``([b1_train, b1_val, b1_test], [b2_train, b2_val, b2_test])`` as in the reference datasets.

    Val and test start ``seq_len`` rows early so their first window's input overlaps the previous split.
    """
    if split in ("ett_hour", "ett_minute"):
        per_hour = 1 if split == "ett_hour" else 4
        train, val, test = (m * 30 * 24 * per_hour for m in (12, 4, 4))  # 12/4/4 months of 30 days
        if n_steps < train + val + test:
            raise DataError(f"the {split} split needs {train + val + test} rows, the series has {n_steps}",
                            hint="for a shortened ETT file use the 70/10/20 split: --set data.split=ratio")
        return [0, train - seq_len, train + val - seq_len], [train, train + val, train + val + test]
    if split != "ratio":
        raise DataError(f"split must be one of {SPLITS[1:]} here, got {split!r}")
    num_train, num_test = int(n_steps * 0.7), int(n_steps * 0.2)
    num_val = n_steps - num_train - num_test
    return [0, num_train - seq_len, n_steps - num_test - seq_len], [num_train, num_train + num_val, n_steps]


def rows_needed(seq_len: int, pred_len: int, split: str, val_windows: int = 1) -> int:
    """The fewest rows whose ``split`` leaves every part at least one window of ``seq_len + pred_len`` steps, and
    the validation part ``val_windows`` of them."""
    if split in ("ett_hour", "ett_minute"):  # fixed month borders: their total, or the windows never fit
        return sum(m * 30 * 24 * (1 if split == "ett_hour" else 4) for m in (12, 4, 4))
    n = seq_len + pred_len
    while True:
        b1, b2 = split_borders(n, seq_len, split)
        windows = [hi - lo - seq_len - pred_len + 1 if lo >= 0 else 0 for lo, hi in zip(b1, b2, strict=True)]
        if min(windows) >= 1 and windows[1] >= val_windows:
            return n
        n += 1


def prepare(series: SeriesData, features: str = "M", seq_len: int = 96, label_len: int = 48, pred_len: int = 24,
            split: str = "auto", *, fixed: bool = False) -> PreparedData:
    """Select channels, split, fit the scaler on train only, and build the three window datasets.

    ``fixed``: the windows and the split are a trained model's (``nas predict``), which no setting changes, so a
    series too short for them is told to be longer, not the windows to be shorter."""
    for name, value, low in (("seq_len", seq_len, 1), ("label_len", label_len, 0), ("pred_len", pred_len, 1)):
        if not isinstance(value, int) or value < low:
            raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
    if label_len > seq_len:
        raise DataError(f"label_len ({label_len}) must not exceed seq_len ({seq_len})",
                        hint="the decoder's known steps are the tail of the encoder window")
    series = series.select(features)
    split = resolve_split(series.name, split)
    model = (f"the model was trained on the {split} split with seq_len {seq_len} and pred_len {pred_len}, which it "
             f"keeps: give a CSV of at least {{}} rows")
    try:
        b1, b2 = split_borders(len(series.values), seq_len, split)
    except DataError as exc:
        hint = model.format(rows_needed(seq_len, pred_len, split)) if fixed else exc.hint
        raise DataError(f"{series.where}: {exc.message}", hint=hint) from None
    for part, lo, hi in zip(("train", "val", "test"), b1, b2, strict=True):
        if hi - lo < seq_len + pred_len or lo < 0:
            need = rows_needed(seq_len, pred_len, split)
            raise DataError(f"{series.where}: {len(series.values)} rows give the {part} split {hi - max(lo, 0)}, "
                            f"fewer than one window needs (seq_len + pred_len = {seq_len + pred_len})",
                            hint=model.format(need) if fixed else f"use a longer series (at least {need} rows at "
                            "these windows), or shorter windows: --set data.seq_len=N, data.pred_len=N "
                            "(and data.label_len <= seq_len)")
    scaler = Scaler.fit(series.values[b1[0]:b2[0]])
    data = scaler.transform(series.values)
    stamps = time_features(series.dates, series.freq)
    train, val, test = (WindowDataset(data[lo:hi], stamps[lo:hi], seq_len, label_len, pred_len)
                        for lo, hi in zip(b1, b2, strict=True))
    n = data.shape[1]
    return PreparedData(train, val, test, scaler=scaler, enc_in=n, dec_in=n, c_out=n if features == "M" else 1,
                        time_features=stamps.shape[1], features=features, columns=series.columns,
                        target=series.target, split=split, borders=(b1, b2), period=detect_period(series.dates),
                        n_steps=len(series.values), name=series.name, freq=series.freq,
                        detected_freq=detect_freq(series.dates), source=series.source, sha256=series.sha256)


def data_line(prepared: PreparedData, freq_setting: str = AUTO, target_setting: str | None = None) -> str:
    """One line saying what a search trains on: the file, rows, columns, target, frequency, period and split.

    ``freq_setting`` is ``data.freq`` as the user left it (``auto``: detected, else set by hand; a hand-set code the
    timestamps contradict is pointed out); ``target_setting`` is ``data.target`` (a different used target means the
    default was not a column and the last column stands in)."""
    where = prepared.source or f"{prepared.name} (built-in series)"
    target = f"target {prepared.target}"
    if target_setting is not None and target_setting != prepared.target:
        target += " (the last column; --set data.target=NAME for another)"
    freq = f"frequency {prepared.freq} ({FREQ_NAMES.get(prepared.freq, prepared.freq)}"
    if normalize_freq(freq_setting) == AUTO:
        freq += ", detected from the timestamps)" if prepared.source else ")"  # the built-in series is hourly
    elif prepared.detected_freq != prepared.freq:
        freq += f", as set; the timestamps look {FREQ_NAMES.get(prepared.detected_freq, prepared.detected_freq)}: "
        freq += f"--set data.freq={prepared.detected_freq} or auto)"
    else:
        freq += ")"
    (b1, b2) = prepared.borders
    rows = f" ({b2[0]}/{b2[1] - b2[0]}/{b2[2] - b2[1]} rows)" if len(b2) == 3 else ""
    split = {"ratio": "70/10/20", "ett_hour": "ETT 12/4/4 months", "ett_minute": "ETT 12/4/4 months"}.get(
        prepared.split, prepared.split)
    columns = f"{len(prepared.columns)} column{'' if len(prepared.columns) == 1 else 's'}"
    return (f"data: {where}, {prepared.n_steps} rows, {columns}, {target}, {freq}, "
            f"period {prepared.period}, split {split} train/val/test{rows}, features {prepared.features}")


def detect_period(dates: np.ndarray, default: int = 24) -> int:
    """The daily cycle in steps from the timestamps' median spacing: 24 for hourly data, 96 for 15-minute data;
    7 for daily data (a week), 52 for weekly, 12 for monthly; ``default`` when the spacing says nothing."""
    stamps = np.asarray(dates, dtype="datetime64[s]").astype(np.int64)
    if len(stamps) < 2:
        return default
    step, day = float(np.median(np.diff(stamps))), 86400.0
    if step <= 0:
        return default
    if step < day and (day / step).is_integer():
        return int(day / step)
    for seconds, period in ((day, 7), (7 * day, 52), (30.44 * day, 12)):
        if abs(step - seconds) <= 0.1 * seconds:
            return period
    return default


def build_loaders(prepared: PreparedData, batch_size: int = 32, seed: int = 0,
                  num_workers: int = 0) -> tuple[Any, Any, Any]:
    """Train/val/test ``DataLoader``s; only train is shuffled, by a generator seeded with ``seed``."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    # Full train batches keep the loss scale steady (as the reference code); evaluation keeps every window.
    # WindowDataset is map-style (__len__, __getitem__) without subclassing torch's Dataset (torch loads lazily).
    sets = [cast("Dataset[Any]", d) for d in (prepared.train, prepared.val, prepared.test)]
    train: DataLoader[Any] = DataLoader(sets[0], batch_size=batch_size, shuffle=True, generator=gen,
                                        drop_last=len(prepared.train) >= batch_size, num_workers=num_workers)
    val: DataLoader[Any] = DataLoader(sets[1], batch_size=batch_size, shuffle=False, num_workers=num_workers)
    test: DataLoader[Any] = DataLoader(sets[2], batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return train, val, test


def synthetic_series(n_steps: int = 4000, n_channels: int = 7, seed: int = 0, freq: str = "h",
                     start: str = "2020-01-01 00:00") -> SeriesData:
    """A deterministic ETT-like series: channels ``x0..`` and target ``OT`` (last) mix shared latent factors.

    Factors: a daily cycle with two harmonics whose amplitude drifts, a weekly cycle with a weekend drop, and a
    slow AR(1) drift; each channel adds its own trend, level, scale and noise; OT also follows x0 with a lag.
    """
    freq = normalize_freq(freq)
    freq = "h" if freq == AUTO else freq  # the built-in series is hourly unless asked otherwise
    if freq not in _STEP_SECONDS:
        raise DataError(f"synthetic data supports freq in {tuple(_STEP_SECONDS)}, got {freq!r}",
                        hint="use --set data.freq=h (or t, d, s), or give a CSV with --data")
    if n_steps < 2 or n_channels < 1:
        raise DataError(f"synthetic data needs n_steps >= 2 and n_channels >= 1, got {n_steps} and {n_channels}")
    try:
        t0 = np.datetime64(_parse_date(start), "s")
    except ValueError:
        raise DataError(f"cannot parse start date {start!r}", hint="write it as YYYY-MM-DD HH:MM") from None
    rng = np.random.default_rng(seed)
    dates = t0 + np.arange(n_steps) * np.timedelta64(_STEP_SECONDS[freq], "s")
    secs = (dates - np.datetime64("1970-01-05T00:00:00")).astype(np.int64)  # a Monday: weeks start on Monday
    day = 2 * np.pi * (secs % 86400) / 86400
    week = 2 * np.pi * (secs % 604800) / 604800
    weekend = ((secs // 86400) % 7 >= 5).astype(np.float64)

    drift = np.zeros(n_steps)
    shocks = rng.normal(0.0, 0.15, n_steps)
    for i in range(1, n_steps):  # slow latent state: predictable over a day, not from the calendar
        drift[i] = 0.985 * drift[i - 1] + shocks[i]
    amplitude = 1.0 + 0.3 * np.tanh(drift)
    factors = np.stack([
        amplitude * (np.sin(day - 1.0) + 0.4 * np.sin(2 * day + 0.5)),
        np.sin(week) + 0.3 * np.cos(2 * week) - 0.8 * weekend,
        drift,
    ], axis=1)
    mixing = rng.normal(0.0, 1.0, (n_channels, factors.shape[1]))
    mixing[:, 0] += 1.0  # every channel shares the daily cycle, so channels are visibly correlated
    progress = np.arange(n_steps) / n_steps
    trend = rng.uniform(-1.5, 1.5, n_channels) * progress[:, None]
    values = factors @ mixing.T + trend + rng.normal(0.0, 0.25, (n_steps, n_channels))
    if n_channels > 1:
        lagged = np.concatenate([np.repeat(values[:1, 0], 3), values[:-3, 0]])
        values[:, -1] += 0.5 * lagged  # OT follows x0 three steps later: a cross-channel lead to exploit
    values = values * rng.uniform(0.5, 5.0, n_channels) + rng.uniform(-10.0, 20.0, n_channels)
    columns = [f"x{i}" for i in range(n_channels - 1)] + ["OT"]
    return SeriesData(dates, values.astype(np.float32), columns, "OT", "synthetic", freq)

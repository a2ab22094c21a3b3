"""Informer data pipeline: CSV loading and errors, ETT/ratio splits, scaling, time features, windows, synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agentlab.core.errors import AgentlabError
from agentlab.nas.csvfile import load_csv
from agentlab.nas.data import (
    DataError,
    SeriesData,
    build_loaders,
    prepare,
    resolve_split,
    rows_needed,
    split_borders,
    synthetic_series,
    time_feature_count,
    time_features,
)

ETTH1 = Path("/work/shared/data/ETTh1.csv")


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def hourly_rows(n: int, fn=lambda i: f"{i % 7},{i * 0.5},{np.sin(i / 4):.4f}") -> list[str]:
    dates = np.datetime64("2021-03-01T00:00") + np.arange(n) * np.timedelta64(1, "h")
    return [f"{str(d).replace('T', ' ')},{fn(i)}" for i, d in enumerate(dates)]


@pytest.fixture(scope="module")
def etth1() -> SeriesData:
    if not ETTH1.is_file():
        pytest.skip(f"{ETTH1} not present")
    return load_csv(ETTH1)


@pytest.mark.parametrize("seq_len,pred_len", [(96, 24), (96, 48), (336, 168), (720, 720)])
def test_etth1_split_lengths_match_the_reference_code(etth1: SeriesData, seq_len: int, pred_len: int) -> None:
    p = prepare(etth1, "M", seq_len, 48, pred_len)
    assert p.split == "ett_hour"
    assert p.borders == ([0, 8640 - seq_len, 11520 - seq_len], [8640, 11520, 14400])
    expected = [b2 - b1 - seq_len - pred_len + 1 for b1, b2 in zip(*p.borders, strict=True)]
    assert [len(p.train), len(p.val), len(p.test)] == expected
    if (seq_len, pred_len) == (96, 24):
        assert expected == [8521, 2857, 2857]


def test_etth1_loads_and_scales_on_train_rows(etth1: SeriesData) -> None:
    assert etth1.values.shape == (17420, 7) and etth1.columns[-1] == "OT" and etth1.name == "ETTh1"
    assert str(etth1.dates[0]) == "2016-07-01T00:00:00"
    p = prepare(etth1, "MS", 96, 48, 24)
    np.testing.assert_allclose(p.scaler.mean, etth1.values[:8640].mean(axis=0), rtol=1e-5)
    assert (p.enc_in, p.dec_in, p.c_out, p.time_features, p.f_dim) == (7, 7, 1, 4, -1)
    x, y, xm, ym = p.train[0]
    assert tuple(x.shape) == (96, 7) and tuple(y.shape) == (72, 7) and tuple(xm.shape) == (96, 4)
    assert tuple(ym.shape) == (72, 4)


def test_ett_minute_and_ratio_borders() -> None:
    assert split_borders(69680, 96, "ett_minute") == ([0, 34560 - 96, 46080 - 96], [34560, 46080, 57600])
    assert split_borders(1000, 24, "ratio") == ([0, 700 - 24, 800 - 24], [700, 800, 1000])
    assert [resolve_split(n) for n in ("ETTh2", "ETTm1", "weather")] == ["ett_hour", "ett_minute", "ratio"]
    with pytest.raises(ValueError, match="needs 14400 rows"):
        split_borders(14000, 96, "ett_hour")


def test_other_column_names_and_feature_modes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "plant.csv", "load,date,price,temp", [
        f"{r.split(',')[1]},{r.split(',')[0]},{r.split(',')[2]},{r.split(',')[3]}" for r in hourly_rows(300)])
    series = load_csv(path, features="M", target="price")
    assert series.columns == ["load", "temp", "price"] and series.target == "price" and series.name == "plant"
    for features, c_out in (("M", 3), ("MS", 1), ("S", 1)):
        p = prepare(series, features, seq_len=24, label_len=12, pred_len=6)
        assert (p.enc_in, p.c_out) == ((1 if features == "S" else 3), c_out)
        assert p.split == "ratio" and len(p.train) == 210 - 24 - 6 + 1
        assert p.columns[-1] == "price"
    assert load_csv(path, features="S", target="temp").columns == ["temp"]


def test_m_mode_needs_no_target_column(tmp_path: Path) -> None:
    # Defect 4: a CSV without `OT` failed even in M mode, where every column is forecast and no target is needed.
    path = write_csv(tmp_path / "plant.csv", "date,load,temp,price", hourly_rows(300))
    series = load_csv(path, features="M")  # data.target keeps its default, OT
    assert series.columns == ["load", "temp", "price"] and series.target == "price"  # the file's order, last kept last
    p = prepare(series, "M", seq_len=24, label_len=12, pred_len=6)
    assert p.target == "price" and p.c_out == 3


def test_m_mode_refuses_a_target_named_by_hand_that_is_no_column(tmp_path: Path) -> None:
    # A typo (--set data.target=nope) fell back to the last column like the missing default: silently ignored.
    path = write_csv(tmp_path / "plant.csv", "date,load,temp,price", hourly_rows(300))
    with pytest.raises(DataError, match=r"plant\.csv:1: target column 'nope' not found \(columns: load, temp, "
                       r"price\)") as info:
        load_csv(path, features="M", target="nope")
    assert "--set data.target=price" in info.value.hint and "leave data.target out" in info.value.hint


@pytest.mark.parametrize("features", ["S", "MS"])
def test_s_and_ms_without_the_target_name_the_flag_and_the_columns(tmp_path: Path, features: str) -> None:
    path = write_csv(tmp_path / "plant.csv", "date,load,temp,price", hourly_rows(300))
    with pytest.raises(DataError, match=r"plant\.csv:1: target column 'OT' not found \(columns: load, temp, price\)") \
            as info:
        load_csv(path, features=features)
    assert "--set data.target=COLUMN" in info.value.hint
    assert load_csv(path, features=features, target="temp").columns[-1] == "temp"


def two_columns(i: int) -> str:  # the rows of a date,a,OT file
    return f"{i % 7},{np.sin(i / 4):.4f}"


@pytest.mark.parametrize("split", ["ratio", "ett_hour"])
def test_too_few_rows_for_a_trained_models_windows_asks_for_a_longer_csv(tmp_path: Path, split: str) -> None:
    # nas predict --backtest: the hint said --set data.seq_len=N, data.pred_len=N, which predict has no option for
    # (the trained model fixes them); it names the rows the model's windows need instead.
    series = load_csv(write_csv(tmp_path / "short.csv", "date,a,OT", hourly_rows(100, two_columns)))
    with pytest.raises(DataError, match="fewer than one window needs" if split == "ratio" else "split needs") as info:
        prepare(series, "M", seq_len=48, label_len=24, pred_len=24, split=split, fixed=True)
    need = rows_needed(48, 24, split)
    assert info.value.hint == (f"the model was trained on the {split} split with seq_len 48 and pred_len 24, which "
                               f"it keeps: give a CSV of at least {need} rows") and "--set" not in info.value.hint
    if split == "ratio":  # the count is exact: one row fewer is too few
        for rows in (need, need - 1):
            csv = load_csv(write_csv(tmp_path / f"r{rows}.csv", "date,a,OT", hourly_rows(rows, two_columns)))
            if rows == need:
                prepare(csv, "M", seq_len=48, label_len=24, pred_len=24, split=split)
                continue
            with pytest.raises(DataError, match="fewer than one window needs") as searched:
                prepare(csv, "M", seq_len=48, label_len=24, pred_len=24, split=split)
            assert f"at least {need} rows at these windows), or shorter windows: --set" in searched.value.hint


def test_scaler_is_fitted_on_train_only(tmp_path: Path) -> None:
    n = 400  # ratio split: train rows [0, 280); the level jumps by 100 after that
    rows = hourly_rows(n, lambda i: f"{i % 5},{(i >= 280) * 100 + i % 3}")
    path = write_csv(tmp_path / "shift.csv", "date,a,OT", rows)
    p = prepare(load_csv(path), "M", seq_len=16, label_len=8, pred_len=4)
    raw = load_csv(path).values
    np.testing.assert_allclose(p.scaler.mean, raw[:280].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(p.scaler.std, raw[:280].std(axis=0), rtol=1e-6)
    assert float(p.train.data[:, 1].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(p.test.data[-1, 1]) > 50  # test values stay far from 0: no leakage into the statistics
    np.testing.assert_allclose(p.scaler.inverse_transform(p.test.data.numpy()), raw[n - 80 - 16:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "header,rows,needle",
    [
        ("time,a,OT", ["2020-01-01 00:00,1,2"], r"bad\.csv:1: no 'date' column"),
        ("date,a,OT", ["2020-01-01 00:00,1,2", "yesterday,1,2"], r"bad\.csv:3: cannot parse date 'yesterday'"),
        ("date,a,OT", ["2020-01-01 00:00,1,2", "2020-01-01 01:00,1,2", "2020-01-01 02:00,x1,2"],
         r"bad\.csv:4: column 'a': 'x1' is not a number"),
        ("date,a,OT", ["2020-01-01 00:00,1,2", "2020-01-01 01:00,1"], r"bad\.csv:3: 2 cells"),
        ("date,a,a,OT", ["2020-01-01 00:00,1,2,3"], r"bad\.csv:1: column names must be unique"),
        ("date,a,OT", ["2020-01-01 00:00,1,2", "2020-01-01 01:00,1,nan"], r"bad\.csv:3: column 'OT': NaN"),
        ("date,a,OT", ["2020-01-01 01:00,1,2", "2020-01-01 00:00,1,2"], r"bad\.csv:3: date .* is not after"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path: Path, header: str, rows: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        load_csv(write_csv(tmp_path / "bad.csv", header, rows))
    assert isinstance(info.value, DataError) and isinstance(info.value, AgentlabError) and info.value.hint


@pytest.mark.parametrize("header,rows,hint", [
    ("timestamp,a,OT", ["2020-01-01 00:00,1,2"], "rename 'timestamp' to 'date'"),
    ("date,a,city,OT", ["2020-01-01 00:00,1,paris,2"], "drop column 'city' if it holds text"),
])
def test_bad_csv_hint_names_the_fix(tmp_path: Path, header: str, rows: list[str], hint: str) -> None:
    """A text column is not 'missing values'; a 'timestamp' column is the date column misnamed."""
    with pytest.raises(DataError) as info:
        load_csv(write_csv(tmp_path / "bad.csv", header, rows))
    assert hint in info.value.hint


def test_bad_options_raise(tmp_path: Path) -> None:
    series = synthetic_series(n_steps=300, n_channels=2)
    with pytest.raises(ValueError, match="features"):
        prepare(series, "X")
    with pytest.raises(ValueError, match="label_len"):
        prepare(series, "M", seq_len=8, label_len=16, pred_len=4)
    # 30 rows + 24 of overlap < 24 + 40
    with pytest.raises(ValueError, match="give the val split 54, fewer than one window"):
        prepare(series, "M", seq_len=24, label_len=12, pred_len=40)
    with pytest.raises(ValueError, match="data file not found"):
        load_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="freq"):
        time_features(series.dates, "fortnightly")


def test_synthetic_is_deterministic_with_the_requested_shape() -> None:
    a, b = synthetic_series(seed=3), synthetic_series(seed=3)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.dates, b.dates)
    assert not np.array_equal(a.values, synthetic_series(seed=4).values)
    assert a.values.shape == (4000, 7) and a.values.dtype == np.float32 and np.isfinite(a.values).all()
    assert a.columns[-1] == a.target == "OT" and len(set(a.columns)) == 7
    assert str(a.dates[0]) == "2020-01-01T00:00:00" and (np.diff(a.dates) == np.timedelta64(1, "h")).all()
    small = synthetic_series(n_steps=50, n_channels=1, freq="t", start="2021-06-01 12:00")
    assert small.values.shape == (50, 1) and small.columns == ["OT"]
    assert (np.diff(small.dates) == np.timedelta64(15, "m")).all()
    corr = np.corrcoef(a.values.T)
    assert np.abs(corr[np.triu_indices(7, 1)]).max() > 0.5  # channels share latent factors


@pytest.mark.parametrize("freq,count", [("h", 4), ("t", 5), ("15min", 5), ("s", 6), ("d", 3), ("w", 2), ("m", 1)])
def test_time_features_in_range(freq: str, count: int) -> None:
    dates = np.datetime64("2019-12-25T00:00:00") + np.arange(0, 40_000_000, 4_321) * np.timedelta64(1, "s")
    tf = time_features(dates, freq)
    assert tf.shape == (len(dates), count) == (len(dates), time_feature_count(freq))
    assert tf.min() >= -0.5 and tf.max() <= 0.5 and tf.dtype == np.float32
    assert (tf.max(axis=0) - tf.min(axis=0) > 0.5).all()  # every feature actually varies over 15 months


def test_time_features_match_pandas_definitions() -> None:
    pd = pytest.importorskip("pandas")
    dates = np.datetime64("2015-12-27T00:00:00") + np.arange(0, 200_000_000, 7_919) * np.timedelta64(1, "s")
    idx = pd.DatetimeIndex(dates)
    expected = np.stack([idx.second / 59.0, idx.minute / 59.0, idx.hour / 23.0, idx.day_of_week / 6.0,
                         (idx.day - 1) / 30.0, (idx.day_of_year - 1) / 365.0], axis=1) - 0.5
    np.testing.assert_allclose(time_features(dates, "s"), expected, atol=1e-6)
    week = (idx.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5
    np.testing.assert_allclose(time_features(dates, "w")[:, 1], week, atol=1e-6)
    np.testing.assert_allclose(time_features(dates, "m")[:, 0], (idx.month - 1) / 11.0 - 0.5, atol=1e-6)


def test_windows_and_loaders() -> None:
    p = prepare(synthetic_series(n_steps=600, n_channels=3), "M", seq_len=24, label_len=12, pred_len=6)
    x, y, xm, ym = p.train[0]
    assert np.array_equal(y[:12].numpy(), x[-12:].numpy()) and np.array_equal(ym[:12].numpy(), xm[-12:].numpy())
    assert np.array_equal(p.train[-1][1].numpy(), p.train.data[-18:].numpy())
    with pytest.raises(IndexError):
        p.train[len(p.train)]
    first = [next(iter(build_loaders(p, batch_size=8, seed=5)[0]))[0] for _ in range(2)]
    assert np.array_equal(first[0].numpy(), first[1].numpy())
    other = next(iter(build_loaders(p, batch_size=8, seed=6)[0]))[0]
    assert not np.array_equal(first[0].numpy(), other.numpy())
    train, val, test = build_loaders(p, batch_size=8, seed=5)
    xb, yb, xmb, ymb = next(iter(val))
    assert tuple(xb.shape) == (8, 24, 3) and tuple(yb.shape) == (8, 18, 3) and tuple(ymb.shape) == (8, 18, 4)
    assert np.array_equal(xb[1].numpy(), p.val[1][0].numpy())  # val keeps its order
    assert sum(len(b[0]) for b in test) == len(p.test)  # and keeps every window
    assert sum(len(b[0]) for b in train) == len(p.train) // 8 * 8


def test_tiny_informer_beats_repeat_last_on_synthetic() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model trains faster on one thread, and far faster on a busy machine
    try:
        err, naive, n = _train_tiny_informer(torch)
    finally:
        torch.set_num_threads(before)
    assert naive / n > 0.5  # repeat-last is a poor forecast here: the series is not trivial
    assert err < 0.85 * naive, (err / n, naive / n)


def _train_tiny_informer(torch) -> tuple[float, float, int]:
    from agentlab.nas.informer import InformerSpec, build_informer

    torch.manual_seed(0)
    p = prepare(synthetic_series(n_steps=2000), "M", seq_len=48, label_len=24, pred_len=24)
    train, val, _ = build_loaders(p, batch_size=16, seed=0)
    model = build_informer(InformerSpec(**p.model_kwargs(), seq_len=48, label_len=24, pred_len=24, d_model=16,
                                        n_heads=2, e_layers=1, d_layers=1, d_ff=32, factor=3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _, (x, y, xm, ym) in zip(range(80), train, strict=False):
        loss = torch.nn.functional.mse_loss(model(x, xm, y, ym), y[:, -24:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    err = naive = 0.0
    with torch.no_grad():
        for x, y, xm, ym in val:
            target = y[:, -24:]
            err += (model(x, xm, y, ym) - target).pow(2).sum().item()
            naive += (x[:, -1:] - target).pow(2).sum().item()
    return err, naive, len(p.val) * 24 * p.c_out


def _dated(path: Path, stamps: list[str]) -> Path:
    path.write_text("date,a,OT\n" + "".join(f"{s},{i % 7},{i % 5}\n" for i, s in enumerate(stamps)))
    return path


def test_day_first_dates_are_read_day_first_by_the_whole_column(tmp_path: Path) -> None:
    """A dd/mm/yyyy hourly file whose days were all 12 or less was read month first: 02/01/2020 00:00 (2 January)
    as 1 February, and nas predict dated its forecast months away, exit 0."""
    import datetime as dt

    hours = [dt.datetime(2020, 1, 1) + dt.timedelta(hours=i) for i in range(288)]  # 1 to 12 January
    european = load_csv(_dated(tmp_path / "eu.csv", [h.strftime("%d/%m/%Y %H:%M") for h in hours]))
    american = load_csv(_dated(tmp_path / "us.csv", [h.strftime("%m/%d/%Y %H:%M") for h in hours]))
    expected = np.array(hours, dtype="datetime64[s]")
    np.testing.assert_array_equal(np.asarray(european.dates, dtype="datetime64[s]"), expected)
    np.testing.assert_array_equal(np.asarray(american.dates, dtype="datetime64[s]"), expected)
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(40)]  # a day above 12 decides
    for name, fmt in (("d.csv", "%d/%m/%Y"), ("g.csv", "%d.%m.%Y")):  # a German daily file was refused
        read = load_csv(_dated(tmp_path / name, [d.strftime(fmt) for d in days])).dates
        assert np.datetime64(read[13], "D") == np.datetime64("2020-01-14") and np.datetime64(read[-1], "D") == \
            np.datetime64("2020-02-09")
    with pytest.raises(AgentlabError, match=r"mixed\.csv:4: dates both day first \(line 4\) and month first \(line 3"):
        load_csv(_dated(tmp_path / "mixed.csv", ["01/12/2020", "01/13/2020", "14/01/2020"]))
    yearly = load_csv(_dated(tmp_path / "y.csv", [f"01/01/{2000 + i}" for i in range(30)])).dates  # both alike
    assert np.datetime64(yearly[-1], "D") == np.datetime64("2029-01-01")
    with pytest.raises(AgentlabError, match=r"read as well day first as month first"):
        load_csv(_dated(tmp_path / "both.csv", ["01/02/2020", "01/03/2020", "01/04/2020"]))

"""benchmarks/peers/autogluon_ett.py's protocol helpers against agentlab's own data pipeline on small synthetic CSVs:
the same split, the same standardisation and exactly the same test windows (targets and histories). AutoGluon is not
needed: the script imports it only inside its training and prediction functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from agentlab.nas.csvfile import load_csv
from agentlab.nas.data import prepare, synthetic_series

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peer(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("benchmarks/peers/autogluon_ett.py")


def _csv(path: Path, n_steps: int, n_channels: int = 3) -> Path:
    series = synthetic_series(n_steps=n_steps, n_channels=n_channels, seed=3)
    lines = ["date," + ",".join(series.columns)]
    for d, row in zip(series.dates, series.values, strict=True):
        lines.append(str(d).replace("T", " ") + "," + ",".join(f"{v:.6f}" for v in row))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_peer_does_not_import_autogluon_at_load(peer: ModuleType) -> None:
    source = (REPO / "benchmarks" / "peers" / "autogluon_ett.py").read_text()
    top = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top if "autogluon" in line or "agentlab" in line]


@pytest.mark.parametrize(("name", "n_steps", "horizon", "seq_lens"), [
    ("ETTh1", 14400 + 37, 96, (96, 512)),  # the ETT split: 8640/2880/2880 rows, the rest unused
    ("other", 900, 24, (48, 96)),  # the 70/10/20 split
])
def test_windows_split_and_scaling_match_agentlab(peer: ModuleType, tmp_path: Path, name: str, n_steps: int,
                                                  horizon: int, seq_lens: tuple[int, ...]) -> None:
    path = _csv(tmp_path / f"{name}.csv", n_steps)
    dates, values = peer.read_series(path)
    values = peer.move_last(values)
    split = peer.resolve_split(path.stem)
    train_end, val_end, test_end = peer.split_ends(len(values), split)
    scaled = peer.standardise(values.to_numpy(), train_end)
    starts = peer.test_starts(val_end, test_end, horizon)
    context = 1024
    frame = peer.window_frame(scaled, dates, starts, context)
    for seq_len in seq_lens:  # agentlab's test windows do not depend on the lookback: the same set for each
        prepared = prepare(load_csv(path), "M", seq_len=seq_len, label_len=seq_len // 2, pred_len=horizon)
        assert prepared.split == split
        b1, b2 = prepared.borders
        assert (b2[0], b2[1], b2[2]) == (train_end, val_end, test_end)
        ours = prepared.test.data.numpy()  # the test part's scaled rows: seq_len of history, then the test rows
        np.testing.assert_allclose(ours, scaled[test_end - len(ours):test_end], rtol=0, atol=2e-5)
        assert len(prepared.test) == len(starts)
        expect = np.stack([prepared.test[i][1][-horizon:].numpy() for i in range(len(prepared.test))])
        np.testing.assert_allclose(peer.truth(scaled, starts, horizon), expect, rtol=0, atol=2e-5)
        for i in (0, len(starts) // 2, len(starts) - 1):  # each window's history ends just before its first step
            x_enc = prepared.test[i][0].numpy()
            for c in range(scaled.shape[1]):
                item = frame[frame["item_id"] == f"{starts[i]}_{c}"]
                assert len(item) == min(context, starts[i])
                np.testing.assert_allclose(item["target"].to_numpy()[-seq_len:], x_enc[:, c], rtol=0, atol=2e-5)
                assert item["timestamp"].iloc[-1] == dates[starts[i] - 1]
    np.testing.assert_allclose(scaled[:train_end].mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(scaled[:train_end].std(axis=0), 1, atol=1e-9)


def test_stride_keeps_a_subset_and_scores(peer: ModuleType) -> None:
    every = peer.test_starts(11520, 14400, 96)
    assert (len(every), every[0], every[-1]) == (2785, 11520, 14400 - 96)
    sub = peer.test_starts(11520, 14400, 96, stride=24)
    assert set(sub) <= set(every) and len(sub) == 117 and sub[0] == every[0]
    true = np.zeros((2, 3, 2))
    pred = true + np.array([1.0, -3.0])
    assert peer.scores(pred, true) == (5.0, 2.0)


def test_constant_column_and_bad_split(peer: ModuleType) -> None:
    values = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0], [7.0, 5.0]])
    scaled = peer.standardise(values, 2)
    np.testing.assert_allclose(scaled[:, 1], 0)  # std 1 for a constant column, as agentlab's Scaler
    np.testing.assert_allclose(scaled[:, 0], [-1, 1, 3, 5])
    with pytest.raises(ValueError, match="needs 14400 rows"):
        peer.split_ends(1000, "ett_hour")


@pytest.mark.parametrize("horizon", [96, 192, 336, 720])
def test_validation_windows_cover_the_validation_part(peer: ModuleType, horizon: int) -> None:
    step = peer.val_step(8640, 11520, horizon, 10)
    first = 11520 - horizon - 9 * step  # AutoGluon's windows end at the history's end, ``step`` rows apart
    assert 8640 <= first < 8640 + 9  # inside the validation part, and spread over nearly all of it
    assert peer.val_step(8640, 11520, horizon, 1) is None
    with pytest.raises(ValueError, match="do not fit"):
        peer.val_step(8640, 8740, horizon, 10)

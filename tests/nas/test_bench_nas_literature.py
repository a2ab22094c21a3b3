"""benchmarks/nas_literature.py on fabricated finished searches: the final model (ensemble), best trial and trial 0
columns, issue 38's target line and the ratio lines, with and without an ``ensemble`` block in results.json."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def module(monkeypatch: pytest.MonkeyPatch, load_script: Callable[[str], ModuleType]) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when the script runs: nas_planners is importable
    return load_script("benchmarks/nas_literature.py")


def _trial(run_id: str, val: float, test: float, mae: float) -> dict[str, Any]:
    return {"run_id": run_id, "val_mse": val, "test_mse": test, "test_mae": mae, "n_params": 1000, "params": {},
            "planner": "tpe", "family": "cyclenet", "seq_len": 512}


def _write(out: Path, seed: int, best: tuple[float, float], base: tuple[float, float],
           ensemble: tuple[float, float] | None, final: str | None = "ensemble", wall: float = 600.0) -> None:
    folder = out / f"h96-s{seed}"
    folder.mkdir(parents=True)
    results: dict[str, Any] = {"best": _trial("t3", 0.65, *best), "base": _trial("t0", 0.66, *base), "trials": 20}
    if ensemble is not None:
        results["ensemble"] = {"test_mse": ensemble[0], "test_mae": ensemble[1], "val_mse": 0.64, "val_mae": 0.5,
                               "members": [{"run_id": "t3", "count": 3}, {"run_id": "t0", "count": 2}]}
    if final is not None:
        results["final_model"] = final
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "wall.json").write_text(json.dumps({"s": wall}))


def _run(module: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], out: Path,
         seeds: str, *extra: str) -> str:
    data = out / "ETTh1.csv"
    data.write_text("date,OT\n")  # only checked to exist: every search is finished, nothing reads it
    monkeypatch.setattr(sys, "argv", ["nas_literature.py", "--data", str(data), "--out", str(out), "--horizons", "96",
                                      "--seeds", seeds, "--neuralforecast", "off", *extra])
    module.main()
    return capsys.readouterr().out


def _row(text: str, name: str) -> tuple[str, str]:
    line = next(x for x in text.splitlines() if x.startswith(name))
    return line[38:58].strip(), line[58:78].strip()  # the test MSE and test MAE columns (28 + 10 + 20 + 20 wide)


def test_ensemble_columns_target_and_ratios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], module: ModuleType) -> None:
    _write(tmp_path, 0, best=(0.370, 0.396), base=(0.372, 0.398), ensemble=(0.360, 0.390))
    _write(tmp_path, 1, best=(0.374, 0.400), base=(0.374, 0.400), ensemble=(0.362, 0.392))
    text = _run(module, monkeypatch, capsys, tmp_path, "0,1")
    assert _row(text, "agentlab nas, final model") == ("0.361 +- 0.001", "0.391 +- 0.001")
    assert _row(text, "agentlab nas, best trial") == ("0.372 +- 0.003", "0.398 +- 0.003")
    assert _row(text, "agentlab nas, trial 0") == ("0.373 +- 0.001", "0.399 +- 0.001")
    assert "seed 0: final model (ensemble) 0.3600 / 0.3900; ensemble 0.3600 / 0.3900 (2 members); best trial " \
           "0.3700 / 0.3960" in text
    assert "trial 0 0.3720 / 0.3980" in text
    assert "target: final model's test MSE below trial 0's in every seed: met (2/2" in text
    lines = text.strip().splitlines()
    # ratio: stays the best trial's mean over DUET's 0.352, and stays the last line; the final-model ratio before it
    assert lines[-1].startswith(f"ratio: {0.372 / 0.352:.3f} ")
    assert lines[-2].startswith(f"final-model ratio: {0.361 / 0.352:.3f} ")


def test_searches_without_an_ensemble_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], module: ModuleType) -> None:
    _write(tmp_path, 0, best=(0.370, 0.396), base=(0.370, 0.396), ensemble=None, final=None)  # before ensembles
    _write(tmp_path, 1, best=(0.374, 0.400), base=(0.380, 0.401), ensemble=(0.362, 0.392))
    _write(tmp_path, 2, best=(0.371, 0.399), base=(0.373, 0.400), ensemble=(0.369, 0.398), final="best")
    text = _run(module, monkeypatch, capsys, tmp_path, "0,1,2")
    assert "seed 0: final model (best) 0.3700 / 0.3960; ensemble -;" in text
    assert "seed 1: final model (ensemble) 0.3620 / 0.3920; ensemble 0.3620 / 0.3920 (2 members)" in text
    # final_model "best" (the ensemble was worse on validation): the best trial is the final model, its ensemble shown
    assert "seed 2: final model (best) 0.3710 / 0.3990; ensemble 0.3690 / 0.3980 (2 members)" in text
    assert _row(text, "agentlab nas, final model") == ("0.368 +- 0.005", "0.396 +- 0.004")
    assert "the ensemble in 1/3 searches" in text
    assert "missed (2/3" in text and "no ensemble block (finished before ensembles): seed 0" in text


def test_autogluon_missing_python_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], module: ModuleType) -> None:
    _write(tmp_path, 0, best=(0.370, 0.396), base=(0.372, 0.398), ensemble=(0.360, 0.390))
    text = _run(module, monkeypatch, capsys, tmp_path, "0", "--autogluon", str(tmp_path / "nope" / "python"))
    assert [x for x in text.splitlines() if "autogluon:" in x.lower()] == [
        f"  autogluon: skipped: {tmp_path / 'nope' / 'python'} not found (set up its venv as "
        "docs/benchmarks/nas_literature.md says)"]


def test_autogluon_row_from_its_kept_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], module: ModuleType) -> None:
    """A peer result kept in --out is read back (never re-run) and printed with its windows and the fit limit, which
    defaults to agentlab's mean wall time per search at that horizon."""
    _write(tmp_path, 0, best=(0.370, 0.396), base=(0.372, 0.398), ensemble=(0.360, 0.390), wall=600.0)
    _write(tmp_path, 1, best=(0.374, 0.400), base=(0.374, 0.400), ensemble=(0.362, 0.392), wall=1200.0)
    kept = {"mse": 0.39, "mae": 0.41, "stride": 24, "windows": 117, "all_windows": 2785, "time_limit_s": 900.0,
            "fit_s": 880.0, "predict_s": 120.0, "best_model": "WeightedEnsemble"}
    (tmp_path / "ag-h96-s0-t900-k24.json").write_text(json.dumps(kept))
    python = tmp_path / "python"
    python.write_text("")  # exists; never run, the kept result answers
    text = _run(module, monkeypatch, capsys, tmp_path, "0,1", "--autogluon", str(python), "--ag-stride", "24")
    line = next(x for x in text.splitlines() if x.startswith("AutoGluon-TimeSeries"))
    assert "0.390 +- 0.000" in line and "0.410 +- 0.000" in line
    assert "every 24th test window (117 of 2785)" in line and "fit limit 15.0 min (agentlab 15.0 min a search" in line


def test_autogluon_runs_the_peer_script_with_the_mean_wall_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str],
                                                               module: ModuleType) -> None:
    """--autogluon names a python: it runs benchmarks/peers/autogluon_ett.py with the horizon, the seed, the stride and
    a fit limit of agentlab's mean wall time per search; its JSON is kept in --out and printed in the table."""
    _write(tmp_path, 0, best=(0.370, 0.396), base=(0.372, 0.398), ensemble=(0.360, 0.390), wall=600.0)
    _write(tmp_path, 1, best=(0.374, 0.400), base=(0.374, 0.400), ensemble=(0.362, 0.392), wall=1200.0)
    row = {"mse": 0.45, "mae": 0.43, "stride": 1, "windows": 2785, "all_windows": 2785, "time_limit_s": 900.0,
           "fit_s": 800.0, "predict_s": 60.0, "best_model": "DLinear"}
    python = tmp_path / "fake-python"
    python.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'args.txt'}\necho '{json.dumps(row)}'\n")
    python.chmod(0o755)
    text = _run(module, monkeypatch, capsys, tmp_path, "0,1", "--autogluon", str(python), "--ag-seeds", "1")
    args = (tmp_path / "args.txt").read_text().split()
    assert args[0].endswith("benchmarks/peers/autogluon_ett.py")
    assert args[args.index("--time-limit") + 1] == "900" and args[args.index("--seed") + 1] == "1"
    assert args[args.index("--horizon") + 1] == "96" and args[args.index("--stride") + 1] == "1"
    assert json.loads((tmp_path / "ag-h96-s1-t900-k1.json").read_text())["mse"] == 0.45
    line = next(x for x in text.splitlines() if x.startswith("AutoGluon-TimeSeries"))
    assert "0.450 +- 0.000" in line and "every test window;" in line and "best DLinear" in line

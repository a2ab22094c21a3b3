"""`agentlab nas predict`: forecasts in original units after a tiny finished search, a backtest that reproduces the
run's recorded test MSE, a run folder copied elsewhere, and one error line (exit 2) for every bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agentlab.cli import main
from agentlab.nas import run_nas_optimization
from agentlab.nas.data import synthetic_series

PRED_LEN = 12


def write_csv(path: Path, n_steps: int = 400, columns: list[str] | None = None) -> np.ndarray:
    """A synthetic hourly CSV far from standardised (values around 100 + 10 x the synthetic series); its values."""
    series = synthetic_series(n_steps=n_steps, n_channels=3, seed=0)
    values = series.values * 10 + 100
    names = columns or series.columns
    lines = ["date," + ",".join(names)]
    lines += [str(d).replace("T", " ") + "," + ",".join(f"{x:.4f}" for x in row)
              for d, row in zip(series.dates, values, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return values


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A finished 3-trial search on a CSV: (run folder, CSV, its values)."""
    root = tmp_path_factory.mktemp("predict")
    data = root / "d.csv"
    values = write_csv(data)
    config = {"data": {"path": str(data), "seq_len": 24, "label_len": 12, "pred_len": PRED_LEN},
              "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
              "train": {"epochs": 2, "max_train_batches": 3},
              "search": {"planner": "tpe", "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2,
                                                                              "log": True}}}}
    run_nas_optimization(max_iterations=3, config=config, out=root / "run")
    return root / "run", data, values


def read_forecast(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    return rows[0], rows[1:]


def test_forecast_is_pred_len_rows_in_original_units(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    run, data, values = finished
    out = in_tmp / "f.csv"
    assert main(["nas", "predict", str(run), "--data", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    # the final model: the ensemble block, here the naive forecast alone (these tiny trials do not beat it), named so
    assert "forecast of the naive forecast naive_" in captured.out + captured.err
    header, rows = read_forecast(out)
    assert header == ["date", "x0", "x1", "OT"]  # the target last, as the model reads the channels
    assert len(rows) == PRED_LEN
    assert rows[0][0] == "2020-01-17 16:00:00" and rows[-1][0] == "2020-01-18 03:00:00"  # after the last row, hourly
    forecast = np.array([[float(v) for v in r[1:]] for r in rows])
    mean, std = values.mean(axis=0), values.std(axis=0)
    assert np.all(np.abs(forecast.mean(axis=0) - mean) < 3 * std)  # the data's scale, not standardised values
    assert np.all(np.abs(forecast.mean(axis=0)) > 10)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "note:" not in captured.out + captured.err  # the run's own frequency


def test_a_csv_of_another_frequency_is_noted(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """Daily rows given to a model trained on hourly ones were forecast without a word (the time features read as
    hourly); the forecast still runs, with a note naming both frequencies."""
    run, data, _ = finished
    lines = data.read_text(encoding="utf-8").splitlines()
    start = np.datetime64("2020-01-01")
    daily = [lines[0]] + [f"{start + np.timedelta64(i, 'D')} 00:00:00," + line.split(",", 1)[1]
                          for i, line in enumerate(lines[1:])]
    (in_tmp / "daily.csv").write_text("\n".join(daily) + "\n", encoding="utf-8")
    assert main(["nas", "predict", str(run), "--data", "daily.csv", "--out", "f.csv"]) == 0
    captured = capsys.readouterr()
    assert "note: daily.csv: the timestamps look daily, but the model was trained on hourly data (data.freq h)" \
        in " ".join((captured.out + captured.err).split())
    assert main(["nas", "predict", str(run), "--data", "daily.csv", "--out", "f.csv", "--force", "--json"]) == 0
    assert "look daily" in json.loads(capsys.readouterr().out)["note"]


def test_backtest_reproduces_the_recorded_test_mse(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    run, data, _ = finished
    recorded = json.loads((run / "results.json").read_text())["best"]
    assert main(["nas", "predict", str(run), "--data", str(data), "--out", str(in_tmp / "f.csv"), "--backtest",
                 "--model", "best", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    bt = out["backtest"]
    assert out["model"] == "best" and out["run_id"] == recorded["run_id"]
    assert bt["mse"] == pytest.approx(recorded["test_mse"], rel=1e-5)
    assert bt["mae"] == pytest.approx(recorded["test_mae"], rel=1e-5)
    assert bt["mse_original"] > 10 * bt["mse"]  # the data's std is ~10x the standardised one


def test_the_ensemble_is_the_default_and_its_backtest_reproduces_its_recorded_test_mse(
        finished: tuple[Path, Path, np.ndarray], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    run, data, _ = finished
    results = json.loads((run / "results.json").read_text())
    ensemble = results["ensemble"]
    assert results["final_model"] == "ensemble" and ensemble["members"]
    assert abs(sum(m["weight"] for m in ensemble["members"]) - 1) < 1e-9
    assert main(["nas", "predict", str(run), "--data", str(data), "--out", str(in_tmp / "f.csv"), "--backtest",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "ensemble"
    assert [m["run_id"] for m in out["members"]] == [m["run_id"] for m in ensemble["members"]]
    # the recorded MSE comes from the stored float16 forecasts, the backtest from the checkpoints
    assert out["backtest"]["mse"] == pytest.approx(ensemble["test_mse"], rel=2e-3)
    assert out["backtest"]["mae"] == pytest.approx(ensemble["test_mae"], rel=2e-3)
    # the ensemble's forecast is the weighted mean of its members' forecasts
    rows = []
    for m in ensemble["members"]:
        single = in_tmp / f"{m['run_id']}.csv"
        trial_results = json.loads((run / "results.json").read_text())
        trial_results["ensemble"] = {**ensemble, "members": [{**m, "weight": 1.0}]}
        alone = in_tmp / "alone"
        shutil.rmtree(alone, ignore_errors=True)
        shutil.copytree(run, alone)
        (alone / "results.json").write_text(json.dumps(trial_results))
        assert main(["nas", "predict", str(alone), "--data", str(data), "--out", str(single)]) == 0
        rows.append((m["weight"], np.array([[float(v) for v in r[1:]] for r in read_forecast(single)[1]])))
    mixed = np.array([[float(v) for v in r[1:]] for r in read_forecast(in_tmp / "f.csv")[1]])
    assert np.allclose(mixed, sum(w * f for w, f in rows), rtol=1e-4, atol=1e-3)


def test_model_ensemble_of_a_run_without_one_is_one_error_line(finished: tuple[Path, Path, np.ndarray],
                                                               in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    run, data, _ = finished
    folder = in_tmp / "run"
    shutil.copytree(run, folder)
    results = json.loads((folder / "results.json").read_text())
    results["ensemble"], results["final_model"] = None, "best"  # as search.ensemble=false writes it
    (folder / "results.json").write_text(json.dumps(results))
    assert main(["nas", "predict", str(folder), "--data", str(data), "--out", str(in_tmp / "b.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "best"  # the default falls back to the best trial
    code = main(["nas", "predict", str(folder), "--data", str(data), "--model", "ensemble"])
    captured = capsys.readouterr()
    _one_error(code, captured.out + captured.err, "no ensemble")


def test_a_copied_run_folder_and_an_older_run_without_scaler_json(finished: tuple[Path, Path, np.ndarray],
                                                                  in_tmp: Path) -> None:
    run, data, _ = finished
    assert main(["nas", "predict", str(run), "--data", str(data), "--out", str(in_tmp / "a.csv")]) == 0
    copy = in_tmp / "elsewhere" / "run"
    shutil.copytree(run, copy)
    moved = in_tmp / "moved.csv"
    shutil.copy(data, moved)
    best = json.loads((copy / "results.json").read_text())["best"]["run_id"]
    assert (copy / "trials" / best / "scaler.json").is_file()
    (copy / "trials" / best / "scaler.json").unlink()  # as written before scaler.json existed: refit on train split
    assert main(["nas", "predict", str(copy), "--data", str(moved), "--out", str(in_tmp / "b.csv")]) == 0
    assert read_forecast(in_tmp / "a.csv") == read_forecast(in_tmp / "b.csv")


def _one_error(code: int, output: str, needle: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], output


@pytest.mark.parametrize("case", ["other-columns", "too-few-rows", "short-windows", "not-utf8", "directory",
                                  "missing"])
def test_bad_data_is_one_error_line(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                    capsys: pytest.CaptureFixture, case: str) -> None:
    run, _, _ = finished
    bad = in_tmp / "bad.csv"
    needle = "bad.csv"
    if case == "other-columns":
        write_csv(bad, columns=["a", "b", "OT"])
        needle = "not the run's"
    elif case == "too-few-rows":
        write_csv(bad, n_steps=10)
        needle = "lookback"
    elif case == "short-windows":
        write_csv(bad, n_steps=60)
        needle = "fewer than one window needs"
    elif case == "not-utf8":
        bad.write_bytes(b"date,x0,x1,OT\n2020-01-01 00:00:00,\xff\xfe,1,2\n")
    elif case == "directory":
        bad.mkdir()
    backtest = ["--backtest"] if case == "short-windows" else []  # a forecast needs the last window alone
    code = main(["nas", "predict", str(run), "--data", str(bad), "--out", str(in_tmp / "f.csv"), *backtest])
    captured = capsys.readouterr()
    _one_error(code, captured.out + captured.err, needle)
    assert not (in_tmp / "f.csv").exists()  # nothing is written, a --backtest's window check included
    if case == "short-windows":  # predict has no --set, and the trained model fixes its windows
        assert "--set" not in captured.out + captured.err


def test_out_a_folder_is_one_error_line(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """--out naming a folder was exit 1 with the atomic writer's temp file in the message."""
    run, data, _ = finished
    (in_tmp / "outdir").mkdir()
    code = main(["nas", "predict", str(run), "--data", str(data), "--out", str(in_tmp / "outdir")])
    captured = capsys.readouterr()
    _one_error(code, captured.out + captured.err, "outdir' is a directory")
    assert list((in_tmp / "outdir").iterdir()) == []


def test_columns_in_another_order_are_read_by_name(finished: tuple[Path, Path, np.ndarray], in_tmp: Path) -> None:
    """The same CSV with its columns swapped was forecast by position: another forecast, exit 0."""
    run, data, _ = finished
    rows = list(csv.reader(data.read_text(encoding="utf-8").splitlines()))
    swapped = in_tmp / "swapped.csv"
    swapped.write_text("\n".join(",".join([r[0], r[2], r[1], r[3]]) for r in rows) + "\n", encoding="utf-8")
    assert main(["nas", "predict", str(run), "--data", str(data), "--out", str(in_tmp / "a.csv")]) == 0
    assert main(["nas", "predict", str(run), "--data", str(swapped), "--out", str(in_tmp / "b.csv")]) == 0
    assert read_forecast(in_tmp / "a.csv") == read_forecast(in_tmp / "b.csv")  # the run's column order, its values


@pytest.mark.parametrize("case", ["missing", "a-file", "not-nas", "results-gone", "killed", "no-checkpoint",
                                  "damaged"])
def test_bad_run_folder_is_one_error_line(finished: tuple[Path, Path, np.ndarray], in_tmp: Path,
                                          capsys: pytest.CaptureFixture, case: str) -> None:
    run, data, _ = finished
    folder = in_tmp / "run"
    needle = "run"
    if case == "a-file":
        folder.write_text("x")
        needle = "not a folder"
    elif case == "not-nas":
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"command": "debate", "status": "completed"}))
        needle = "not a nas run"
    elif case in ("results-gone", "killed", "no-checkpoint", "damaged"):
        shutil.copytree(run, folder)
        if case == "damaged":  # it was "internal error: SafetensorError: ... header too large", exit 1
            for checkpoint in folder.glob("trials/*/best_model.safetensors"):
                checkpoint.write_text("garbage\n")
            needle = "not a readable checkpoint"
        elif case == "results-gone":  # a finished run: it said "the search has not finished (no best trial in
            (folder / "results.json").unlink()  # results.json; status completed)"
            needle = "results.json is missing (the search completed)"
        elif case == "killed":  # kill -9: run.json still says running, its owner is gone (it said "status running")
            (folder / "results.json").unlink()
            info = json.loads((folder / "run.json").read_text())
            (folder / "run.json").write_text(json.dumps({**info, "status": "running"}))
            needle = "has not finished (no best trial in results.json; status interrupted)"
        else:
            for checkpoint in folder.glob("trials/*/best_model.safetensors"):
                checkpoint.unlink()
            needle = "no checkpoint"
    # a trial's checkpoint: the final model of these tiny trials is the naive forecast alone, which has none
    model = ["--model", "best"] if case in ("no-checkpoint", "damaged") else []
    code = main(["nas", "predict", str(folder), "--data", str(data), "--out", str(in_tmp / "f.csv"), *model])
    captured = capsys.readouterr()
    _one_error(code, captured.out + captured.err, needle)
    if case == "results-gone":  # the next step, and it works: a resume rebuilds results.json, and predict runs
        assert f"hint: agentlab nas --resume {folder} rebuilds it" in captured.err
        assert main(["nas", "--resume", str(folder)]) == 0
        assert (folder / "results.json").is_file()
        assert main(["nas", "predict", str(folder), "--data", str(data), "--out", str(in_tmp / "f.csv")]) == 0


@pytest.mark.parametrize("channels", [1, 7, 20])
def test_the_forecast_plot_shows_every_channel_or_says_which(channels: int) -> None:
    """On ETTh1 (7 channels, features M) forecast.png showed the last 4 and said nothing of the other 3."""
    from agentlab.nas.predict import MAX_PANELS, forecast_figure

    columns = [f"c{i}" for i in range(channels - 1)] + ["OT"]
    dates = np.datetime64("2020-01-01T00:00") + np.arange(30) * np.timedelta64(1, "h")
    result = {"columns": columns, "run_id": "run_0001", "history_dates": dates[:24], "dates": dates[24:],
              "history": np.zeros((24, channels)), "values": np.ones((6, channels))}
    fig = forecast_figure(result)
    shown = [ax.get_ylabel() for ax in fig.axes]
    title = fig._suptitle.get_text()
    if channels <= MAX_PANELS:
        assert shown == columns and title == f"forecast of {channels} channel{'s' if channels > 1 else ''}"
    else:
        assert shown == columns[-MAX_PANELS:] and title.startswith(f"the last {MAX_PANELS} of {channels} channels")

"""Where `agentlab nas predict` may write (never its own input, never over a run's files, never the plot over the
forecast, an existing forecast only with --force), `nas apply` on a forecaster run, and the members of an ensemble
that another worker of a shared study trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.nas import run_nas_optimization
from agentlab.nas.data import synthetic_series


def write_csv(path: Path, n_steps: int = 400) -> None:
    series = synthetic_series(n_steps=n_steps, n_channels=3, seed=0)
    lines = ["date," + ",".join(series.columns)]
    lines += [str(d).replace("T", " ") + "," + ",".join(f"{x * 10 + 100:.4f}" for x in row)
              for d, row in zip(series.dates, series.values, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-trial search with an ensemble: (run folder, its CSV)."""
    root = tmp_path_factory.mktemp("predict-out")
    data = root / "d.csv"
    write_csv(data)
    config = {"data": {"path": str(data), "seq_len": 24, "label_len": 12, "pred_len": 12},
              "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
              "train": {"epochs": 1, "max_train_batches": 2},
              "search": {"planner": "tpe", "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2,
                                                                              "log": True}}}}
    run_nas_optimization(max_iterations=2, config=config, out=root / "run")
    return root / "run", data


def _one_error(code: int, output: str, *needles: str) -> str:
    assert code == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in output, output
    return errors[0]


def _predict(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["nas", "predict", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_out_the_input_csv_or_a_link_to_it_is_refused(finished: tuple[Path, Path], in_tmp: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """--out naming the --data CSV (even read-only) replaced it with the forecast, exit 0."""
    run, data = finished
    mine = in_tmp / "in.csv"
    shutil.copy(data, mine)
    mine.chmod(0o444)
    before = mine.read_bytes()
    (in_tmp / "link.csv").symlink_to(mine)
    (in_tmp / "sub").mkdir()
    for out in (str(mine), "in.csv", "link.csv", "sub/../in.csv"):
        for force in ([], ["--force"]):
            code, output = _predict(capsys, str(run), "--data", str(mine), "--out", out, *force)
            _one_error(code, output, "is the input CSV", "nothing was written")
            assert mine.read_bytes() == before
    assert not (in_tmp / "in.png").exists()


def test_out_not_a_csv_is_refused_and_the_plot_never_replaces_the_forecast(
        finished: tuple[Path, Path], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """--out x.png wrote the CSV at x.png and then the plot over it."""
    run, data = finished
    code, output = _predict(capsys, str(run), "--data", str(data), "--out", "x.png")
    _one_error(code, output, "must end in .csv", "--out x.csv")
    assert not (in_tmp / "x.png").exists()
    assert _predict(capsys, str(run), "--data", str(data), "--out", "x.csv")[0] == 0
    assert (in_tmp / "x.csv").read_text().startswith("date,")
    assert (in_tmp / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_an_existing_out_needs_force_and_only_a_forecast_is_replaced(finished: tuple[Path, Path], in_tmp: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """An existing --out file was replaced silently, whatever it was."""
    run, data = finished
    assert _predict(capsys, str(run), "--data", str(data), "--out", "f.csv")[0] == 0
    forecast = (in_tmp / "f.csv").read_bytes()
    (in_tmp / "f.csv").write_text("date,x\nmarker,1\n")
    code, output = _predict(capsys, str(run), "--data", str(data), "--out", "f.csv")
    _one_error(code, output, "already exists", "--force")
    assert (in_tmp / "f.csv").read_text() == "date,x\nmarker,1\n"
    assert _predict(capsys, str(run), "--data", str(data), "--out", "f.csv", "--force")[0] == 0
    assert (in_tmp / "f.csv").read_bytes() == forecast
    # a file that is not a forecast agentlab wrote (no plot beside it; or a plot name taken): not even with --force
    other = in_tmp / "mine.csv"
    shutil.copy(data, other)
    (in_tmp / "pic.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
    for out, kept in (("mine.csv", other), ("pic.csv", in_tmp / "pic.png")):
        before = kept.read_bytes()
        code, output = _predict(capsys, str(run), "--data", str(data), "--out", out, "--force")
        _one_error(code, output, "is not a forecast")
        assert kept.read_bytes() == before
    assert not (in_tmp / "pic.csv").exists()
    # the default RUN/forecast.csv is the run's own forecast: the next one replaces it
    copy = in_tmp / "run"
    shutil.copytree(run, copy)
    assert _predict(capsys, str(copy), "--data", str(data))[0] == 0
    assert _predict(capsys, str(copy), "--data", str(data))[0] == 0
    assert (copy / "forecast.png").is_file()


def test_out_inside_a_run_folder_never_replaces_its_files(finished: tuple[Path, Path], in_tmp: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """--out RUN/results.json replaced the run's results.json with the forecast CSV, breaking the run."""
    run, data = finished
    copy = in_tmp / "run"
    shutil.copytree(run, copy)
    files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    best = json.loads((copy / "results.json").read_text())["best"]["run_id"]
    (copy / "history.png").write_bytes(b"\x89PNG\r\n\x1a\nthe run's")  # a plot of the run's own
    files[copy / "history.png"] = (copy / "history.png").read_bytes()
    for out, needle in (("results.json", "must end in .csv"), ("config.yaml", "must end in .csv"),
                        (f"trials/{best}/new.csv", "inside the run folder"), ("history.csv", "is not a forecast")):
        for force in ([], ["--force"]):
            code, output = _predict(capsys, str(copy), "--data", str(data), "--out", str(copy / out), *force)
            _one_error(code, output, needle)
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == files
    assert main(["nas", "predict", str(copy), "--data", str(data), "--out", "f.csv"]) == 0  # the run still works
    # a new file at the top of the run folder is allowed
    assert _predict(capsys, str(copy), "--data", str(data), "--out", str(copy / "new.csv"))[0] == 0


def test_apply_on_a_forecaster_run_says_what_to_use_instead(finished: tuple[Path, Path], in_tmp: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    """`nas apply` on a built-in-forecaster run said its config.yaml does not name the project folder
    ('NoneType' object is not subscriptable)."""
    run, _ = finished
    code = main(["nas", "apply", str(run)])
    captured = capsys.readouterr()
    line = _one_error(code, captured.out + captured.err, "built-in forecaster", "objective:", "nas predict",
                      "config_used.yaml")
    assert "NoneType" not in line and "project folder" not in line


def _two_workers(run: Path, where: Path) -> tuple[Path, Path, str]:
    """Two workers' run folders as a shared study leaves them: w2's ensemble has a member (the best trial) that w1
    trained, named by its absolute path in w1; (w1, w2, that trial's id)."""
    w1, w2 = where / "runs" / "w1", where / "runs" / "w2"
    shutil.copytree(run, w1)
    shutil.copytree(run, w2)
    results = json.loads((w2 / "results.json").read_text())
    best = results["best"]["run_id"]
    members = results["ensemble"]["members"]
    if not any(m["run_id"] == best for m in members):  # the guard kept a naive forecast alone (tiny trials): the
        members.append({"run_id": best, "path": f"trials/{best}"})  # best trial joins it, as a greedy ensemble would
        for m in members:
            m["weight"] = 1 / len(members)
    for m in members:
        if m["run_id"] == best:
            m["path"] = str((w1 / "trials" / best).resolve())
    results["ran_here"] = results["trials"] - 1
    (w2 / "results.json").write_text(json.dumps(results))
    shutil.rmtree(w2 / "trials" / best)
    return w1, w2, best


def test_a_member_of_another_workers_run_folder(finished: tuple[Path, Path], in_tmp: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    """The ensemble member another worker trained is read from its run folder; when that folder moved, the error
    said `the trial has no checkpoint` / `copy the whole run folder, trials/ included` (untrue: it was)."""
    run, data = finished
    w1, w2, best = _two_workers(run, in_tmp)
    assert _predict(capsys, str(w2), "--data", str(data), "--out", "a.csv")[0] == 0
    assert _predict(capsys, str(w2), "--data", str(data), "--out", "b.csv", "--model", "best")[0] == 0
    copy = in_tmp / "elsewhere" / "w2"
    shutil.copytree(w2, copy)
    w1.rename(in_tmp / "runs" / "moved")
    for model in ([], ["--model", "best"]):
        code, output = _predict(capsys, str(copy), "--data", str(data), "--out", "c.csv", *model)
        _one_error(code, output, "another worker", str(w1.resolve()))
        assert "copy the whole run folder" not in output
    # the workers' run folders copied together: the member is found beside this one
    shutil.copytree(in_tmp / "runs" / "moved", in_tmp / "elsewhere" / "w1")
    assert _predict(capsys, str(copy), "--data", str(data), "--out", "d.csv")[0] == 0
    assert (in_tmp / "d.csv").read_bytes() == (in_tmp / "a.csv").read_bytes()


def test_the_best_trial_of_another_worker_outside_the_ensemble(finished: tuple[Path, Path], in_tmp: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run, data = finished
    _, w2, best = _two_workers(run, in_tmp)
    results = json.loads((w2 / "results.json").read_text())
    results["ensemble"], results["final_model"] = None, "best"
    (w2 / "results.json").write_text(json.dumps(results))
    code, output = _predict(capsys, str(w2), "--data", str(data), "--out", "c.csv")
    _one_error(code, output, f"best trial {best} ran in another worker's run folder")


def test_a_read_only_forecast_is_not_replaced(finished: tuple[Path, Path], in_tmp: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    run, data = finished
    assert _predict(capsys, str(run), "--data", str(data), "--out", "f.csv")[0] == 0
    (in_tmp / "f.csv").chmod(0o444)
    code, output = _predict(capsys, str(run), "--data", str(data), "--out", "f.csv", "--force")
    _one_error(code, output, "read-only")


def test_a_predict_stopped_between_its_plot_and_its_csv_does_not_block_the_next(
        finished: tuple[Path, Path], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """The plot is written first (tagged): left alone by a stop, it is the forecast's own and the next one replaces
    it; a CSV with no plot beside it is never taken for a forecast."""
    run, data = finished
    assert _predict(capsys, str(run), "--data", str(data), "--out", "f.csv")[0] == 0
    (in_tmp / "f.csv").unlink()  # as a stop between the plot and the CSV leaves it
    assert _predict(capsys, str(run), "--data", str(data), "--out", "f.csv", "--force")[0] == 0
    assert (in_tmp / "f.csv").read_text().startswith("date,")
    copy = in_tmp / "run"  # at the default place, without --force
    shutil.copytree(run, copy)
    assert _predict(capsys, str(copy), "--data", str(data))[0] == 0
    (copy / "forecast.csv").unlink()
    assert _predict(capsys, str(copy), "--data", str(data))[0] == 0
    (in_tmp / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # a PNG of the user's, untagged, alone
    code, output = _predict(capsys, str(run), "--data", str(data), "--out", "g.csv", "--force")
    _one_error(code, output, "is not a forecast")

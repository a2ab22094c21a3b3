"""What `agentlab nas` tells a first-time user: the data line (file, rows, columns, target, the frequency detected
from the timestamps, period, split), MSE said to be on standardised data, a summary that reads right (a drop in
error is negative, values rounded), the offline planner line, and what a resumed search kept."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from agentlab.cli import main
from agentlab.core.llm.config import LLMConfig, load_llm_config
from agentlab.nas.config import NASConfig
from agentlab.nas.csvfile import load_csv
from agentlab.nas.data import data_line, detect_freq, prepare, synthetic_series
from agentlab.nas.report import resume_line, summary_lines
from agentlab.nas.run import choose_planner

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.seq_len=14", "data.label_len=7", "data.pred_len=7", "model.d_model=16", "model.n_heads=2",
        "model.d_ff=32", "train.epochs=1", "train.max_train_batches=2", "search.planner=tpe"]


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def daily_csv(folder: Path, rows: int = 300) -> Path:
    start = np.datetime64("2020-01-01")
    lines = ["date,sales,visits"]
    for i in range(rows):
        day = str(start + np.timedelta64(i, "D"))
        lines.append(f"{day},{10 + 3 * math.sin(2 * math.pi * i / 7):.3f},{i % 7 + 0.5 * math.cos(i / 5):.3f}")
    path = folder / "my_daily.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("step", "code"), [(1, "s"), (900, "t"), (300, "t"), (3600, "h"), (86400, "d"),
                                            (7 * 86400, "w"), (30 * 86400, "m"), (23 * 3600, "d")])
def test_detect_freq_from_the_spacing(step: int, code: str) -> None:
    dates = np.datetime64("2021-03-01T00:00:00") + np.arange(50) * np.timedelta64(step, "s")
    assert detect_freq(dates) == code


def test_a_daily_csv_gets_daily_time_features(tmp_path: Path) -> None:
    series = load_csv(daily_csv(tmp_path), target="visits")
    assert series.freq == "d"
    prepared = prepare(series, "M", seq_len=14, label_len=7, pred_len=7)
    assert prepared.freq == "d" and prepared.time_features == 3 and prepared.period == 7
    line = data_line(prepared, "auto", "visits")
    assert line.startswith(f"data: {tmp_path / 'my_daily.csv'}, 300 rows, 2 columns, target visits, ")
    assert "frequency d (daily, detected from the timestamps), period 7, split 70/10/20 train/val/test " \
           "(210/30/60 rows)" in line
    # an hourly setting on daily stamps is run as asked, and the line says what the timestamps look like
    hourly = prepare(load_csv(tmp_path / "my_daily.csv", freq="h"), "M", seq_len=14, label_len=7, pred_len=7)
    assert "frequency h (hourly, as set; the timestamps look daily: --set data.freq=d or auto)" in data_line(
        hourly, "h", "OT")
    assert "target visits (the last column; --set data.target=NAME for another)" in data_line(hourly, "h", "OT")


def test_a_target_typo_in_m_mode_is_one_error_before_the_run(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    # It said "config ok" and "target visits (the last column; ...)": the typo was ignored.
    data = daily_csv(in_tmp)
    assert main(["nas", "--data", str(data), "--set", "data.target=nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"error: {data}:1: target column 'nope' not found (columns: sales, visits)" in " ".join(err.split()), err
    assert err.count("error:") == 1 and "Traceback" not in err and not (in_tmp / "runs").exists()


def test_synthetic_default_is_hourly() -> None:
    series = synthetic_series(n_steps=300, freq="auto")
    assert series.freq == "h"
    assert "frequency h (hourly), period 24" in data_line(prepare(series, "M", seq_len=14, label_len=7, pred_len=7))
    assert NASConfig().data.freq == "auto"


def test_cli_names_the_data_and_records_the_detected_freq(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    data = daily_csv(in_tmp)
    out = in_tmp / "r"
    assert main(["nas", "--data", str(data), *sets(TINY), "--max-iterations", "2", "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["freq"] == "d"
    assert "300 rows, 2 columns, target visits (the last column" in err
    assert "frequency d (daily, detected from the timestamps), period 7" in err
    assert "test MAE" in err and err.count("on standardised data") >= 2
    assert "best vs the base config (run_0000): val MSE " in err
    # resumed: the folder's finished trials are counted before and after
    capsys.readouterr()
    assert main(["nas", "--resume", str(out), "--max-iterations", "3"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"resuming {out}: kept 2 finished trial(s) (2 complete); up to 1 more to reach 3" in err
    assert "frequency d (daily), period 7" in err  # config.yaml says d now: no longer "detected"
    assert "resumed: 2 trial(s) kept from before, 1 run now" in err


def test_a_bare_resume_dry_run_names_the_folder_it_would_continue(in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    # --json said nothing of the folder a bare --resume picked (the latest run, wherever it is); with no trial
    # finished there the console said nothing either.
    out = in_tmp / "runs" / "from-python"
    assert main(["nas", *sets([*TINY, "data.synthetic_steps=400"]), "-n", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["nas", "--resume", "--dry-run", "--json", "-n", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["resume"] == str(out)
    (out / "agent_state.json").unlink()  # as a run killed before its first trial ended (its study holds none)
    (out / "study.db").unlink()
    assert main(["nas", "--resume", "--dry-run", "-n", "2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"resuming {out}: no trial finished there yet; up to 2 to run" in err, err
    assert main(["nas", *sets(TINY), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resume"] is None


def test_summary_reads_a_drop_in_error_as_negative_and_rounds() -> None:
    def trial(run_id: str, val: float, test: float, params: dict) -> dict:
        return {"run_id": run_id, "val_mse": val, "test_mse": test, "test_mae": 0.5, "n_params": 1234,
                "planner": "tpe", "family": "informer", "seq_len": 48, "params": params}

    results = {"best": trial("run_0004", 0.4312, 0.52, {"model.dropout": 0.15734042030137152, "model.d_ff": 64}),
               "base": trial("run_0000", 0.7706, 0.81, {"model.dropout": 0.05, "model.d_ff": 64}),
               "trials": 5, "ran_here": 5, "literature": None}
    lines = summary_lines(results)
    assert lines[0].startswith("best trial run_0004: val MSE 0.4312, test MSE 0.52, test MAE 0.5 "
                               "(on standardised data), 1,234 params")
    assert lines[1] == ("best vs the base config (run_0000): val MSE -44% (0.771 -> 0.431), test MSE -36% "
                        "(0.81 -> 0.52), on standardised data")
    assert lines[2] == "best changes: model.dropout=0.157"
    assert len(lines) == 3  # not resumed: no "resumed" line
    assert summary_lines({**results, "ran_here": 2})[-1] == "resumed: 3 trial(s) kept from before, 2 run now"
    # a worker of a shared study that was never resumed: the others' trials are not "kept from before"
    assert summary_lines({**results, "ran_here": 2, "shared": True})[-1] == \
        "shared study: 5 trial(s), 2 run by this process, 3 by others or before"


def test_resume_line_counts_finished_trials(tmp_path: Path) -> None:
    # no state yet (stopped before its first trial ended): the folder is still named, a bare --resume picks it
    assert resume_line(tmp_path, 10) == f"resuming {tmp_path}: no trial finished there yet; up to 10 to run"
    runs = [{"state": "complete", "counted": True}, {"state": "pruned", "counted": True},
            {"state": "failed", "counted": False}, {"state": "running", "counted": True}]
    (tmp_path / "agent_state.json").write_text(json.dumps({"runs": runs}))
    assert resume_line(tmp_path, 10) == f"resuming {tmp_path}: kept 2 finished trial(s) (1 complete, 1 pruned); " \
                                        "up to 8 more to reach 10"


def test_planner_line_offline_without_any_configured_model(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = NASConfig.model_validate({"search": {"planner": "auto"}})
    # no configs/llm.yaml here: nothing configured
    with choose_planner(cfg, load_llm_config(None)) as session:
        line, router = session.line, session._router
    assert line == "planner: tpe (no planner model configured; offline)" and router is None
    # the shipped routing (configs/llm.yaml) with none of its keys set: still nothing configured by the user
    (in_tmp / "configs").mkdir()
    shutil.copy(REPO / "configs" / "llm.yaml", in_tmp / "configs" / "llm.yaml")
    for name in ("OPENROUTER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    default = load_llm_config(None)
    assert default.route("planner").chain()
    with choose_planner(cfg, default) as session:
        line, router = session.line, session._router
    assert line == "planner: tpe (no planner model configured; offline)" and router is None
    # a routing file the user wrote, its key unset: the line names the variable to set
    mine = LLMConfig.model_validate({**default.model_dump(mode="json"), "timeout_s": 30})
    with choose_planner(cfg, mine) as session:
        line, router = session.line, session._router
    assert line.startswith("planner: tpe (planner model unavailable: OPENROUTER_API_KEY") and router is None


def test_a_given_llm_file_is_judged_as_given_whatever_it_holds(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`--llm my-llm.yaml`, a copy of configs/llm.yaml with its keys unset, said "no planner model configured;
    offline" (its content was compared with the default's): a file the user names is configured, so the line names
    the keys to set. Without --llm the same file is the default: offline."""
    (in_tmp / "configs").mkdir()
    shutil.copy(REPO / "configs" / "llm.yaml", in_tmp / "configs" / "llm.yaml")
    shutil.copy(REPO / "configs" / "llm.yaml", in_tmp / "my-llm.yaml")
    for name in ("OPENROUTER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    data = daily_csv(in_tmp)
    base = ["nas", "--data", str(data), "--dry-run", *sets(TINY[:-1])]
    assert main([*base, "--llm", "my-llm.yaml"]) == 0
    assert "planner: tpe (planner model unavailable: OPENROUTER_API_KEY, OPENAI_API_KEY not set)" in \
        "".join(capsys.readouterr())
    assert main(base) == 0
    assert "planner: tpe (no planner model configured; offline)" in "".join(capsys.readouterr())


SCRIPTED = """providers:
  s: {kind: scripted, replies: ['{"choice": 0}']}
models:
  m: {provider: s, model: m}
routes:
  default: {primary: [m]}
"""


@pytest.mark.parametrize("planner", ["llm", "agent", "tpe"])
def test_a_dry_run_says_the_planner_line_of_every_planner(planner: str, in_tmp: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`--dry-run --planner llm` (or agent, or a sampler; or a resumed run's dry run) printed no planner line and
    --json had "planner_line": null; the docs say a dry run says the run's line without sending a request."""
    (in_tmp / "llm.yaml").write_text(SCRIPTED + ("  evaluator: {primary: [m]}\n" if planner == "tpe" else ""))
    data = daily_csv(in_tmp)
    args = ["nas", "--data", str(data), *sets(TINY[:-1]), "--planner", planner, "--llm", "llm.yaml"]
    assert main([*args, "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    line = {"llm": "planner: llm via route 'planner' (m), choosing among 4 TPE candidates",
            "agent": "planner: agent via route 'planner' (m), tools over 4 TPE candidates", "tpe": "planner: tpe"}
    assert report["planner"] == planner and report["planner_line"].startswith(line[planner])
    if planner == "tpe":  # a resumed run's dry run says it too
        assert main([*args, "--max-iterations", "1", "--out", "run"]) == 0
        capsys.readouterr()
        assert main(["nas", "--resume", "run", "--max-iterations", "2", "--dry-run"]) == 0
        assert "planner: tpe\n" in "".join(capsys.readouterr())


KEYED = """providers:
  a: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: AGENTLAB_TEST_KEY_A}
  b: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: AGENTLAB_TEST_KEY_B}
models:
  m: {provider: a, model: m}
  n: {provider: b, model: n}
routes:
  planner: {primary: [m], fallback: [n]}
"""


@pytest.mark.parametrize("planner", ["llm", "agent"])
def test_planner_models_without_their_keys_are_one_message_for_both_planners(
        planner: str, in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The agent said "... need A, B, which is not set", the llm planner listed each model as unreachable."""
    for name in ("AGENTLAB_TEST_KEY_A", "AGENTLAB_TEST_KEY_B"):
        monkeypatch.delenv(name, raising=False)
    (in_tmp / "llm.yaml").write_text(KEYED)
    assert main(["nas", "--data", str(daily_csv(in_tmp)), *sets(TINY[:-1]), "--planner", planner, "--llm",
                 "llm.yaml", "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (f"error: --planner {planner}: the planner route's models need AGENTLAB_TEST_KEY_A, AGENTLAB_TEST_KEY_B, "
            "which are not set") in err
    assert "hint: set them (environment or .env), give --llm qwen2.5-coder-0.5b" in err and "--planner tpe" in err


def test_few_validation_windows_are_one_warning_in_the_dry_run_and_the_run(in_tmp: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """224 daily rows at lookback 48 and horizon 24 gave `85 train / 1 val / 21 test windows` without a word: the
    best trial, early stopping and the ensemble's rolling origins were decided on one validation window."""
    data = daily_csv(in_tmp, rows=224)
    args = ["nas", "--data", str(data), "--set", "train.epochs=1", "--set", "train.max_train_batches=2"]
    warning = ("data: only 1 validation window (85 train / 1 val / 21 test): the best trial, early stopping and the "
               "ensemble's rolling origins are decided on it; give more rows (about ")
    assert main([*args, "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count(warning) == 1 and ("or a shorter data.pred_len (the lookback, data.seq_len, does not change "
                                        "the count), for at least 16") in err, err
    assert main([*args, "-n", "1", "--out", str(in_tmp / "r")]) == 0
    assert " ".join(capsys.readouterr().err.split()).count(warning) == 1
    # enough windows: no warning (300 rows at lookback 14 and horizon 7)
    assert main(["nas", "--data", str(daily_csv(in_tmp)), *sets(TINY), "--dry-run"]) == 0
    assert "validation window" not in capsys.readouterr().err


def test_target_below_zero_is_refused_and_max_iterations_help_names_the_config(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--target -1` was accepted for a forecaster whose validation MSE is never below 0 (the rule could never
    stop the search); `--max-iterations`' help said `(default 20)` while a config's search.max_iterations wins."""
    assert main(["nas", *sets(TINY), "--target", "-1", "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--target -1.0: the forecaster's validation MSE is never below 0" in err and "Traceback" not in err, err
    config = in_tmp / "t.yaml"
    config.write_text("search:\n  target: -0.5\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    assert f"{config}:2: search.target -0.5: the forecaster's validation MSE" in capsys.readouterr().err
    assert main(["nas", *sets(TINY), "--target", "0", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["nas", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "(default: the config's search.max_iterations, 20 unless -c sets it; resumed: the run's own)" in out, out


def test_one_column_is_said_in_the_singular(tmp_path: Path) -> None:
    prepared = prepare(load_csv(daily_csv(tmp_path), features="S", target="visits"), "S", seq_len=14, label_len=7,
                       pred_len=7)
    assert ", 300 rows, 1 column, target visits, " in data_line(prepared, "auto", "visits")


def test_the_report_says_what_a_trials_changes_are_against(in_tmp: Path) -> None:
    """report.md's trial table showed each trial's changes against the best trial when it was planned, under a bare
    `changes` header: read as changes from the base config, they did not add up."""
    out = in_tmp / "r"
    assert main(["nas", *sets([*TINY, "data.synthetic_steps=400"]), "-n", "2", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Changes are against the best trial when each trial was planned" in report
    assert "| run | planner | changes vs the best then | val MSE |" in report


def test_no_change_from_the_base_is_written_without_a_sign(in_tmp: Path) -> None:
    """A search whose best is its base config: report.md said "-0.0%" where the console said "+0%"."""
    out = in_tmp / "r"
    assert main(["nas", *sets([*TINY, "data.synthetic_steps=400"]), "-n", "1", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "Change in val MSE from the base: +0.0%" in report and "-0.0%" not in report


def test_the_history_plots_best_line_runs_to_the_last_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best-accepted line stopped at the last accepted trial: a later trial below it (not accepted under
    min_delta) looked like a plotting error."""
    import matplotlib.axes

    from agentlab.core.search.records import TrialRecord
    from agentlab.nas.report import plot_history

    steps: list[tuple[list[int], list[float]]] = []
    real = matplotlib.axes.Axes.step
    monkeypatch.setattr(matplotlib.axes.Axes, "step",
                        lambda self, x, y, *a, **k: steps.append((list(x), list(y))) or real(self, x, y, *a, **k))
    records = [TrialRecord(0, "complete", 0.7, {}, planner="base", accepted=True),
               TrialRecord(1, "complete", 0.69, {}, planner="tpe", accepted=True),
               TrialRecord(2, "complete", 0.6899, {}, planner="tpe", accepted=False)]
    assert plot_history(records, tmp_path / "h.png") is not None
    assert steps == [([0, 1, 2], [0.7, 0.69, 0.69])]

"""What a new user's pass over the built-in forecaster found: a command-line train key that a config's
train.per_family silently replaced, an hourly CSV with rows missing read without a word, and a journal --storage in a
folder that does not exist made silently (an sqlite:/// URL there is refused)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agentlab.cli import main
from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError
from agentlab.nas import csvfile, run_nas_optimization
from agentlab.nas.config import NASConfig, apply_changes, sets_over_per_family
from agentlab.nas.csvfile import load_csv

# --------------------------------------------------------------------------- --set train.X over train.per_family


def _base(**train: Any) -> dict[str, Any]:
    return {"data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 0, "pred_len": 6},
            "model": {"family": "linear"},
            "train": {"epochs": 4, "max_train_batches": 2,
                      "per_family": {"linear": {"epochs": 8, "batch_size": 16}, "sparsetsf": {"epochs": 5}}, **train},
            "search": {"space": {"model.family": {"choices": ["linear", "sparsetsf"]}}}}


def _loaded(sets: list[str], **train: Any) -> NASConfig:
    return load_config(None, NASConfig, sets, base=_base(**train), schema="nas")


def test_a_train_key_set_on_the_command_line_holds_for_every_family() -> None:
    sets = ["train.epochs=1"]
    cfg = _loaded(sets)
    line = sets_over_per_family(cfg, sets)
    assert line is not None and line.startswith("--set train.epochs=1: holds for every family")
    assert "train.per_family.linear.epochs (8)" in line and "train.per_family.sparsetsf.epochs (5)" in line
    for family in ("linear", "sparsetsf"):
        assert apply_changes(cfg, {"model.family": family}).train.epochs == 1
    assert apply_changes(cfg, {"model.family": "linear"}).train.batch_size == 16  # the family's other keys stay
    # nothing on the command line for a key: the file's per-family budget stands, and nothing is said
    cfg = _loaded(["train.patience=3"])
    assert sets_over_per_family(cfg, ["train.patience=3"]) is None
    assert apply_changes(cfg, {}).train.epochs == 8


def test_a_per_family_key_given_on_the_command_line_too_wins_for_its_family() -> None:
    sets = ["train.per_family.linear.epochs=3", "train.epochs=1"]
    cfg = _loaded(sets)
    line = sets_over_per_family(cfg, sets)
    assert line is not None and "sparsetsf.epochs" in line and "linear.epochs" not in line
    assert apply_changes(cfg, {"model.family": "linear"}).train.epochs == 3
    assert apply_changes(cfg, {"model.family": "sparsetsf"}).train.epochs == 1


def test_a_command_line_train_key_that_breaks_the_config_once_it_holds_everywhere_is_one_error() -> None:
    """Hyperband's first rung at epoch 6 was reachable only through per_family's 8 epochs."""
    sets = ["train.epochs=2"]
    cfg = load_config(None, NASConfig, sets, base={**_base(), "search": {
        **_base()["search"], "pruner": "hyperband", "pruner_warmup": 6}}, schema="nas")
    with pytest.raises(ConfigError) as err:
        sets_over_per_family(cfg, sets)
    assert err.value.message.startswith("--set train.epochs=2: holds for every family")
    assert "search.pruner_warmup" in err.value.message
    assert cfg.train.per_family["linear"]["epochs"] == 8  # left as it was


def test_the_search_trains_every_trial_with_the_command_line_epochs(in_tmp: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """`agentlab nas -c configs/nas_ett96.yaml --set train.epochs=1`: trial 0 (DUET) trained per_family's 8 epochs."""
    with caplog.at_level(logging.WARNING, logger="agentlab.nas"):
        run_nas_optimization(max_iterations=2, config=_base(), out=in_tmp / "run",
                             overrides=["train.epochs=1", "search.planner=random"])
    said = [r.getMessage() for r in caplog.records if "holds for every family" in r.getMessage()]
    assert len(said) == 1
    trials = sorted((in_tmp / "run" / "trials").glob("run_*/config_used.yaml"))
    assert len(trials) == 2
    for path in trials:
        assert yaml.safe_load(path.read_text())["train"]["epochs"] == 1
    # the run's config.yaml keeps it so: a resume trains the same
    assert "epochs" not in yaml.safe_load((in_tmp / "run" / "config.yaml").read_text())["train"]["per_family"][
        "linear"]


def test_the_dry_run_says_what_the_command_line_replaces(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "n.yaml").write_text(yaml.safe_dump(_base()))
    assert main(["nas", "-c", "n.yaml", "--set", "train.epochs=1", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("holds for every family") == 1 and "train.per_family.linear.epochs (8)" in err


# --------------------------------------------------------------------------- rows missing from a CSV


def _hourly(path: Path, n: int = 300, drop: range | tuple[range, ...] = (), start: str = "2016-07-01T00",
            step: str = "h") -> None:
    drops = drop if isinstance(drop, tuple) else (drop,)
    dates = np.datetime64(start) + np.arange(n) * np.timedelta64(1, step)  # type: ignore[call-overload]
    keep = [i for i in range(n) if not any(i in d for d in drops)]
    rows = [f"{str(dates[i]).replace('T', ' ')},{np.sin(i / 5):.4f},{i % 7}" for i in keep]
    path.write_text("date,a,OT\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _gap_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "agentlab.nas.csvfile"
            and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def _fresh_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csvfile, "_gaps_said", set(), raising=False)


def test_an_hourly_file_with_rows_missing_is_one_warning_naming_the_first_gap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "gap.csv"
    _hourly(data, drop=range(100, 160))  # 60 rows of an hourly file gone: read silently
    with caplog.at_level(logging.WARNING, logger="agentlab.nas.csvfile"):
        series = load_csv(data)
        load_csv(data)  # a search loads it again (data.freq resolved): said once
    assert series.freq == "h" and len(series.dates) == 240
    said = _gap_warnings(caplog)
    # the row after the gap is data row 101: line 102 (the header is line 1)
    assert said == [f"{data}:102: 60 missing hourly steps between 2016-07-05 03:00:00 and this row's 2016-07-07 "
                    "16:00:00; the windows take consecutive rows as consecutive steps, so those across a gap are "
                    "wrong: fill the missing rows (e.g. interpolate) or cut the file at the gap"]


def test_several_gaps_are_counted_in_the_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "gaps.csv"
    _hourly(data, n=600, drop=(range(10, 12), range(200, 260), range(400, 413)), step="m")
    with caplog.at_level(logging.WARNING, logger="agentlab.nas.csvfile"):
        load_csv(data)
    said = _gap_warnings(caplog)
    assert len(said) == 1
    assert said[0].startswith(f"{data}:12: 2 missing 1-minute steps between 2016-07-01 00:09:00 and this row's "
                              "2016-07-01 00:12:00 (the first of 3 gaps, 75 missing steps in all);")


@pytest.mark.parametrize("case", ["regular", "irregular", "business-days", "monthly"])
def test_no_warning_without_a_gap_in_a_frequency(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 case: str) -> None:
    data = tmp_path / "d.csv"
    if case == "regular":
        _hourly(data)
    elif case == "irregular":  # event times: no step to miss
        rng = np.random.default_rng(0)
        stamps = np.datetime64("2020-01-01T00:00") + np.cumsum(rng.integers(1, 600, size=200)).astype(
            "timedelta64[m]")
        data.write_text("date,OT\n" + "\n".join(f"{str(s).replace('T', ' ')},{i}" for i, s in enumerate(stamps)))
    elif case == "business-days":  # a stock's closes: no weekend is a gap
        days = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-12-31"))
        days = days[np.is_busday(days)]
        data.write_text("date,OT\n" + "\n".join(f"{d},{i}" for i, d in enumerate(days)))
    else:  # month starts: 28 to 31 days apart
        months = np.arange(np.datetime64("2000-01"), np.datetime64("2010-01")).astype("datetime64[D]")
        data.write_text("date,OT\n" + "\n".join(f"{d},{i}" for i, d in enumerate(months)))
    with caplog.at_level(logging.WARNING, logger="agentlab.nas.csvfile"):
        load_csv(data)
    assert _gap_warnings(caplog) == []


def test_a_missing_weekday_of_a_business_day_file_is_a_gap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    days = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-12-31"))
    days = days[np.is_busday(days) & (days != np.datetime64("2020-03-11"))]  # a Wednesday gone
    data = tmp_path / "b.csv"
    data.write_text("date,OT\n" + "\n".join(f"{d},{i}" for i, d in enumerate(days)))
    with caplog.at_level(logging.WARNING, logger="agentlab.nas.csvfile"):
        load_csv(data)
    said = _gap_warnings(caplog)
    assert len(said) == 1 and ": 1 missing business day step between 2020-03-10 00:00:00 and this row's " \
        "2020-03-12 00:00:00;" in said[0]


# --------------------------------------------------------------------------- a journal in a folder not there


def test_a_journal_storage_in_a_folder_that_does_not_exist_is_refused(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """It made the folder (and a new study in it); sqlite:/// in the same folder was refused."""
    for storage in (str(in_tmp / "no" / "dir" / "x.journal"), f"sqlite:///{in_tmp / 'no' / 'dir' / 'x.db'}"):
        for dry in (["--dry-run"], []):
            code = main(["nas", "-n", "1", "--storage", storage, "--out", str(in_tmp / "run"), *dry])
            err = capsys.readouterr().err
            assert code == 2, err
            assert "Traceback" not in err
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and errors[0].endswith(f"its folder {in_tmp / 'no' / 'dir'} does not exist")
            assert "hint: create the folder first" in err
            assert not (in_tmp / "no").exists() and not (in_tmp / "run").exists()

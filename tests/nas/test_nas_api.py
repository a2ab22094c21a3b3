"""`run_nas_optimization` and `agentlab nas` on a tiny config: run folder contents, report, final summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.nas import run_nas_optimization

TINY = {
    "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
    "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
    "train": {"epochs": 2, "max_train_batches": 3},
    "search": {"planner": "tpe", "space": {"model.d_model": {"choices": [16, 32]},
                                           "model.n_heads": {"choices": [1, 2]},
                                           "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}},
}
SETS = [f"{section}.{key}={value}" for section, fields in TINY.items() if section != "search"
        for key, value in fields.items()]


def test_python_api_writes_the_run_folder(in_tmp: Path) -> None:
    out = in_tmp / "run"
    results = run_nas_optimization(max_iterations=3, config=TINY, out=out)
    assert results["trials"] == 3 and results["base"]["run_id"] == "run_0000"
    assert results["best"]["val_mse"] <= results["base"]["val_mse"]
    state = json.loads((out / "agent_state.json").read_text())
    assert state["best_run_id"] == results["best"]["run_id"] and len(state["runs"]) == 3
    assert {"run_id", "val_mse", "test_mse", "accepted", "reason", "planner", "changes"} <= set(state["runs"][1])
    for trial in ("run_0000", "run_0001", "run_0002"):
        names = {p.name for p in (out / "trials" / trial).iterdir()}
        assert {"config_used.yaml", "metrics.json", "history.json", "learning_curve.png"} <= names
    report = (out / "report.md").read_text()
    assert "## Best config vs base" in report and "optimization_history.png" in report
    assert (out / "optimization_history.png").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_cli_prints_best_trial_and_gain(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "tiny.yaml"
    import yaml

    config.write_text(yaml.safe_dump(TINY))
    assert main(["nas", "-c", str(config), "--max-iterations", "3", "--out", str(in_tmp / "r")]) == 0
    err = capsys.readouterr().err
    assert "best trial run_" in err and "best vs the base config (run_0000)" in err
    assert "planner: tpe" in err


def test_dry_run_writes_nothing(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["nas", "--dry-run", *sum((["--set", s] for s in SETS), [])]) == 0
    assert "dry run" in capsys.readouterr().err and not (in_tmp / "runs").exists()
    (in_tmp / "taken").mkdir()
    (in_tmp / "taken" / "mine.txt").write_text("keep")
    # the dry run checks what the real run would refuse: --out a folder that holds files (it said "ok", exit 0)
    assert main(["nas", "--dry-run", "--out", "taken", *sum((["--set", s] for s in SETS), [])]) == 2
    assert "--out taken: folder exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (in_tmp / "taken").iterdir()] == ["mine.txt"]


def test_bad_search_space_key_is_config_error(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "bad.yaml"
    config.write_text("search:\n  space:\n    model.d_modle: {choices: [16]}\n")
    assert main(["nas", "-c", str(config)]) == 2
    assert "search.space.model.d_modle: not a searchable key" in capsys.readouterr().err.replace("\n", "")


def test_data_accepts_ett_and_other_csv(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    import math

    ett = Path(__file__).resolve().parents[3] / "shared" / "data" / "ETTh1.csv"
    if ett.is_file():
        assert main(["nas", "--data", str(ett), "--dry-run"]) == 0
        assert "ett_hour split" in capsys.readouterr().err
    custom = in_tmp / "plant.csv"
    lines = ["date,load,temp,price"]
    for i in range(400):
        lines.append(f"2021-01-{1 + i // 24:02d} {i % 24:02d}:00,{math.sin(i / 4):.4f},{math.cos(i / 7):.4f},{i % 5}")
    custom.write_text("\n".join(lines) + "\n")
    code = main(["nas", "--data", str(custom), "--set", "data.target=load", "--set", "data.features=MS",
                 *sum((["--set", s] for s in SETS), []), "--planner", "tpe", "--max-iterations", "2",
                 "--out", str(in_tmp / "r")])
    assert code == 0
    results = json.loads((in_tmp / "r" / "results.json").read_text())
    assert results["data"]["path"].endswith("plant.csv") and results["best"]["test_mse"] > 0
    assert results["data"]["target"] == "load"


def _tiny_with_space(space: dict) -> dict:
    return {**TINY, "search": {"planner": "random", "space": space}}


def test_optimizer_loss_and_batch_size_are_searchable(in_tmp: Path) -> None:
    from agentlab.core.search.space import SearchSpace
    from agentlab.nas.config import NASConfig, TrainConfig

    space = {"train.optimizer": {"choices": ["adam", "adamw", "sgd"]},
             "train.loss": {"choices": ["mse", "mae", "huber"]}, "train.batch_size": {"choices": [16, 32, 64]}}
    cfg = NASConfig.model_validate(_tiny_with_space(space))
    checked = SearchSpace(cfg.search.space)
    plan = {"train.optimizer": "sgd", "train.loss": "huber", "train.batch_size": 64}
    assert checked.validate(plan) == (plan, [])
    assert len(checked.validate({"train.optimizer": "rmsprop", "train.batch_size": 48})[1]) == 2
    assert "stay MSE" in (TrainConfig.model_fields["loss"].description or "")  # config show says what is measured
    results = run_nas_optimization(max_iterations=4, config=_tiny_with_space(space), out=in_tmp / "r")
    assert set(results["states"]) <= {"complete", "pruned"}, results["states"]
    state = json.loads((in_tmp / "r" / "agent_state.json").read_text())
    changed = {key for run in state["runs"] for key in run["changes"]}
    assert changed == set(space), state["runs"]


def test_a_search_over_the_data_windows_trains_each_trial_on_its_own_windows(in_tmp: Path) -> None:
    # Trials used the base config's windows whatever the plan said, so every data.seq_len change failed.
    space = {"data.seq_len": {"choices": [24, 36]}, "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}
    results = run_nas_optimization(max_iterations=4, config=_tiny_with_space(space), out=in_tmp / "r")
    assert set(results["states"]) <= {"complete", "pruned"}, results["states"]
    state = json.loads((in_tmp / "r" / "agent_state.json").read_text())
    assert any(run["changes"].get("data.seq_len") == 36 for run in state["runs"]), state["runs"]


@pytest.mark.parametrize("damaged", ["study.db", "journal"])
def test_a_damaged_study_is_one_error_line(in_tmp: Path, capsys: pytest.CaptureFixture, damaged: str) -> None:
    sets = sum((["--set", s] for s in SETS), [])
    if damaged == "study.db":  # a run folder whose SQLite study was overwritten: resuming it
        assert main(["nas", *sets, "-n", "1", "--out", str(in_tmp / "r")]) == 0
        (in_tmp / "r" / "study.db").write_text("not a database\n")
        args, code = ["-n", "2", "--resume", str(in_tmp / "r")], 2
    else:  # a shared journal file that is not one
        (in_tmp / "j.log").write_text("garbage\n")
        args, code = ["-n", "1", "--storage", str(in_tmp / "j.log")], 2
    capsys.readouterr()
    assert main(["nas", *sets, *args]) == code
    output = capsys.readouterr().err
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    said = "cannot open" if damaged == "study.db" else "as an Optuna journal file: its first line is not JSON"
    assert len(errors) == 1 and said in errors[0] and "Traceback" not in output, output
    if damaged == "journal":  # refused before a run folder exists (one was left behind, status failed)
        assert "run folder:" not in output and not (in_tmp / "runs").exists()


@pytest.mark.parametrize("space,needle", [
    ("{model.attn: {choices: [prob, sparse]}}", "search.space.model.attn: 'sparse' can never be a valid attn"),
    ("{train.optimizer: {choices: [adam, rmsprop]}}", "'rmsprop' can never be a valid optimizer"),
    ("{model.d_model: {low: 0.5, high: 64}}", "search.space.model.d_model: 0.5 can never be a valid d_model"),
    ("{train.batch_size: {choices: [0, 32]}}", "0 can never be a valid batch_size"),
])
def test_a_space_value_no_config_accepts_is_refused_before_the_run(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                   space: str, needle: str) -> None:
    # Before, such a space ran the base trial and then stopped with "no valid, untried parameters".
    assert main(["nas", "--set", f"search.space={space}", "--dry-run"]) == 2
    assert needle in capsys.readouterr().err.replace("\n", "")
    assert not (in_tmp / "runs").exists()


def test_a_value_valid_only_with_other_values_stays_allowed() -> None:
    from agentlab.nas.config import NASConfig

    # n_heads 3 does not divide the base d_model 32, but does divide 48: the search may pair them.
    cfg = NASConfig.model_validate({"search": {"space": {"model.n_heads": {"choices": [3, 4]},
                                                         "model.d_model": {"choices": [32, 48]}}}})
    assert cfg.search.space["model.n_heads"].choices == [3, 4]


@pytest.mark.parametrize("yaml_text, needle", [
    # momentum with no sgd trial: adam and adamw have none
    ("train:\n  optimizer: adam\n  momentum: 0.5\nsearch:\n  space: {}\n",
     "bad.yaml:3: train.momentum: only sgd has momentum, and no trial of this search uses sgd"),
    ("search:\n  space:\n    train.momentum: {low: 0.5, high: 0.95}\n",  # train.optimizer not searched here
     "search.space.train.momentum: only sgd has momentum"),
    # huber_delta with no huber trial: mse and mae have no delta
    ("train:\n  loss: mae\n  huber_delta: 2\nsearch:\n  space: {}\n",
     "bad.yaml:3: train.huber_delta: only the huber loss reads it, and no trial of this search uses huber"),
    ("search:\n  space:\n    train.huber_delta: {low: 0.5, high: 2}\n    model.dropout: {low: 0, high: 0.3}\n",
     "search.space.train.huber_delta: only the huber loss reads it"),
    # the Informer's own keys on another family
    ("model:\n  family: linear\n  attn: full\nsearch:\n  space: {}\n",
     "bad.yaml:3: model.attn: only the informer family reads it, and no trial of this search is an informer"),
    ("model:\n  family: patchtst\nsearch:\n  space:\n    model.distil: {choices: [true, false]}\n",
     "search.space.model.distil: only the informer family reads it"),
    ("data:\n  label_len: 12\nmodel:\n  family: cyclenet\nsearch:\n  space: {}\n",
     "bad.yaml:2: data.label_len: only the informer family has a decoder"),
])
def test_a_setting_no_trial_reads_is_refused_naming_it(in_tmp: Path, capsys: pytest.CaptureFixture, yaml_text: str,
                                                       needle: str) -> None:
    (in_tmp / "bad.yaml").write_text(yaml_text)
    assert main(["nas", "-c", "bad.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert needle in " ".join(err.split()) and err.count("error:") == 1 and "Traceback" not in err, err
    assert not (in_tmp / "runs").exists()


@pytest.mark.parametrize("config", [
    {"train": {"optimizer": "sgd", "momentum": 0.5}, "search": {"space": {}}},
    {"train": {"momentum": 0.5}},  # the default space searches train.optimizer, sgd among its choices
    {"train": {"momentum": 0.5, "per_family": {"informer": {"optimizer": "sgd"}}}, "search": {"space": {}}},
    {"model": {"family": "linear", "attn": "full"},
     "search": {"space": {"model.family": {"choices": ["linear", "informer"]}}}},
    {"model": {"family": "linear"}, "data": {"label_len": 0}, "search": {"space": {}}},
    {"train": {"loss": "huber", "huber_delta": 2.0}, "search": {"space": {}}},
    {"train": {"huber_delta": 2.0}},  # the default space searches train.loss, huber among its choices
    {"train": {"huber_delta": 2.0, "per_family": {"informer": {"loss": "huber"}}}, "search": {"space": {}}},
    {"model": {"family": "linear"}},  # the default space with another family: a config that trains one model
])
def test_a_setting_some_trial_reads_stays_allowed(config: dict[str, Any]) -> None:
    from agentlab.nas.config import NASConfig, apply_changes

    cfg = NASConfig.model_validate(config)
    # a search of it is what cannot run (NASConfig.informer_space, checked by nas.run.prepare)
    assert (cfg.informer_space() is not None) == (config == {"model": {"family": "linear"}})
    if "model.family" in cfg.search.space:  # a trial of the other family validates too
        assert apply_changes(cfg, {"model.family": "informer"}).model.family == "informer"


@pytest.mark.parametrize("args", [["--dry-run"], ["-n", "3", "--set", "train.epochs=1"]])
@pytest.mark.parametrize("family", ["linear", "naive_last"])
def test_the_built_in_space_with_another_family_is_refused_before_any_trial(
        in_tmp: Path, capsys: pytest.CaptureFixture, family: str, args: list[str]) -> None:
    """The built-in space searches the Informer's own keys: with another family every draw that changes one is
    refused, and the run stopped after trial 0 with "no valid, untried parameters" (exit 1), the dry run said ok."""
    assert main(["nas", "--set", f"model.family={family}", *args]) == 2
    err = capsys.readouterr().err
    needle = (f"search.space: the built-in space searches the informer family's own keys (model.d_layers, "
              f"model.attn, model.distil, model.linear), and no trial of this search is an informer (model.family: "
              f"{family}); give a search.space of {family}'s own keys")
    assert needle in " ".join(err.split()) and err.count("error:") == 1 and "Traceback" not in err, err
    assert not (in_tmp / "runs").exists()


def test_a_saved_trial_config_from_before_the_check_still_loads() -> None:
    """`nas predict` reads a finished trial's config_used.yaml as it ran: a run made before a setting was refused
    still predicts."""
    from pydantic import ValidationError

    from agentlab.nas.config import NASConfig

    old = {"model": {"family": "linear"}, "data": {"label_len": 12}, "search": {"space": {}}}
    with pytest.raises(ValidationError, match="data.label_len"):
        NASConfig.model_validate(old)
    assert NASConfig.model_validate(old, context={"saved": True}).data.label_len == 12


def test_warm_start_true_runs_the_literatures_leads_for_any_sampler(in_tmp: Path) -> None:
    """search.warm_start: true gives a plain sampler the knowledge the agent has (the literature's leads), right
    after the base config and the naive forecasts."""
    from agentlab.nas.agent import literature_leads
    from agentlab.nas.config import NASConfig
    from agentlab.nas.train import prepare_data

    families = ["informer", "linear", "patchtst", "naive_last"]
    config = {**TINY, "search": {**TINY["search"], "planner": "random", "warm_start": True,
                                 "space": {**TINY["search"]["space"], "model.family": {"choices": families}}}}
    cfg = NASConfig.model_validate(config)
    leads = literature_leads(cfg, prepare_data(cfg), families)
    assert leads, "the literature has leads for these families"
    results = run_nas_optimization(max_iterations=3 + len(leads), config=config, out=in_tmp / "run")
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    ran = [r for r in runs if r["planner"] == "leads"]
    assert [r["planner"] for r in runs[:2]] == ["base", "naive"] and runs[2]["planner"] == "leads"
    assert [r["params"]["model.family"] for r in ran] == [c["model.family"] for c, _ in leads][:len(ran)]
    assert all("warm start: from the literature" in r["reasoning"] for r in ran)
    assert results["trials"] == 3 + len(leads)


def test_a_bad_warm_start_entry_of_the_forecaster_names_its_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """The built-in forecaster's bad warm_start entry said `search.warm_start[1]: ...` with no file nor line."""
    import yaml

    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "search"})
                      + "search:\n  space:\n    model.d_model: {choices: [16, 32]}\n  warm_start:\n"
                      "  - {model.d_model: 16}\n  - {model.d_model: 64}\n")
    line = config.read_text().splitlines().index("  - {model.d_model: 64}") + 1
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{config}:{line}: search.warm_start[1]: model.d_model: 64" in err and "Traceback" not in err

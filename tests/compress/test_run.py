"""`agentlab compress` end to end on the tiny model: the run folder, results.json / best.json / report.md with the
Pareto plot, reuse of every experiment from the workspace, --resume after SIGKILL without re-running a finished
experiment, the carbon budget, MLflow children, and one clear line (exit 2, no folder) for bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import ConfigError  # noqa: E402

SMALL = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3"]


def args(tiny: dict[str, Path], folder: Path, *extra: str, planner: str = "random", n: int = 3) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return ["compress", "--model", str(tiny["hf"]), "--objective", "maximize speedup with <2% accuracy loss",
            "--max-iterations", str(n), "--planner", planner, "--set", f"workspace={folder / 'ws'}", *sets, *extra]


def records(run: Path) -> list[dict[str, Any]]:
    path = run / "experiments.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_folder(run: Path, n: int) -> dict[str, Any]:
    results = json.loads((run / "results.json").read_text())
    best = json.loads((run / "best.json").read_text())
    assert results["counts"]["experiments"] == n and len(results["experiments"]) == n + 1
    assert results["experiments"][0]["label"] == "base model"
    assert best["index"] == results["recommended"]["index"] and isinstance(best["feasible"], bool)
    report = (run / "report.md").read_text()
    assert "![pareto](pareto.png)" in report and (run / "pareto.png").stat().st_size > 1000
    assert "energy mode: **" in report and "## Recommended" in report
    assert " run here including the base model" in report and "worker" not in report  # its own study: no workers
    keys = [json.dumps(r["experiment"], sort_keys=True) for r in records(run)]
    assert len(keys) == len(set(keys)), "an experiment ran twice in one run"
    return results


@pytest.mark.parametrize("planner", ["random", "nsga2"])
def test_run_then_a_second_run_reuses_every_experiment(in_tmp: Path, tiny_model: dict[str, Path], planner: str,
                                                       capsys: Any) -> None:
    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "A"), planner=planner)) == 0
    first = check_folder(in_tmp / "A", 3)
    assert first["counts"]["reused"] == 0 and first["energy"]["co2e_kg"] > 0
    assert first["energy"]["mode"] in ("measured", "partly measured", "estimated")
    err = capsys.readouterr().err
    assert "goal: maximize speedup subject to accuracy >= 0.98 x base" in err
    # each experiment's outcome is printed as it ends, not only the best at the end (a log shows every result)
    for r in first["experiments"]:
        assert f"[{r['index']}] {r['label']} ({r['planner']}): speedup " in err
    assert err.count("; meets the goal") + err.count("; breaks ") + err.count(": failed: ") == 3
    notes = list((in_tmp / "ws" / "notes").glob("*.md"))
    assert notes and "best:" in notes[0].read_text()

    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "B"), planner=planner)) == 0
    second = check_folder(in_tmp / "B", 3)
    assert second["counts"]["reused"] == 4 and second["energy"]["co2e_kg"] == 0  # the base model too
    assert [e["label"] for e in second["experiments"]] == [e["label"] for e in first["experiments"]]
    assert capsys.readouterr().err.count(", reused from the workspace): ") == 4


def test_resume_after_sigkill_reruns_no_finished_experiment(in_tmp: Path, tiny_model: dict[str, Path],
                                                             sigkill_when: Any) -> None:
    run = in_tmp / "RUN"
    def one_experiment_done() -> bool:
        best = (run / "best.json").read_text() if (run / "best.json").is_file() else "{}"
        return len(records(run)) >= 2 and json.loads(best or "{}").get("index", 0) >= 1

    sigkill_when(args(tiny_model, in_tmp, "--out", str(run), n=4), one_experiment_done)
    before = records(run)
    assert 2 <= len(before) < 5, "the kill came after the run had finished: nothing to resume"
    assert json.loads((run / "best.json").read_text())["index"] >= 1  # valid after the first experiment
    assert main(["compress", "--resume", str(run)]) == 0
    after = records(run)
    assert len(after) == 5 and after[:len(before)] == before
    assert [e["index"] for e in after] == list(range(5))
    started = [e for e in (json.loads(x) for x in (run / "events.jsonl").read_text().splitlines())
               if e["kind"] == "experiment"]
    assert sorted(e["index"] for e in started) == list(range(5)), "a finished experiment was recorded twice"
    check_folder(run, 4)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    counted = [t for t in study_trials(f"sqlite:///{run / 'study.db'}") if t.state.is_finished()
               and t.user_attrs["outcome"].get("counted", True)]  # an interrupted trial ran again, whole
    assert sorted(t.user_attrs["plan"]["planner"] == "base" for t in counted) == [False] * 4 + [True]


def study_trials(storage: str, name: str = "compress") -> list[Any]:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_shared_storage_keeps_one_study_across_runs(in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    """--storage: every finished experiment of both runs is a trial of one study, with the goal's objective values;
    each run has its own budget and base measurement; the second run (its own workspace, so nothing is reused)
    learns from the first and proposes none of its experiments again. A goal with other objectives cannot write into
    that study."""
    storage = f"sqlite:///{in_tmp / 'shared.db'}"
    for name in ("A", "B"):
        run = args(tiny_model, in_tmp / name, "--out", str(in_tmp / name / "run"), "--storage", storage, n=2)
        assert main(run) == 0
    trials = study_trials(storage)
    assert not (in_tmp / "A" / "run" / "study.db").exists()
    assert [t.user_attrs["plan"]["planner"] for t in trials].count("base") == 2
    trials = [t for t in trials if t.user_attrs["plan"]["planner"] != "base"]
    labels = [t.user_attrs["outcome"]["metrics"]["record"]["label"] for t in trials]
    assert len(labels) == 4 and len(set(labels)) == 4, f"the second run repeated an experiment of the first: {labels}"
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert done and all(len(t.values) == 1 and t.values[0] > 0 for t in done)  # speedup, maximised
    runs = {t.user_attrs["plan"]["run_dir"] for t in trials}
    assert runs == {str((in_tmp / n / "run").resolve()) for n in ("A", "B")}

    other = args(tiny_model, in_tmp / "C", "--out", str(in_tmp / "C" / "run"), "--storage", storage, n=1)
    other[other.index("--objective") + 1] = "minimize size with <5% accuracy loss"
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("error: search.storage: the study 'compress' in /")
    assert "shared.db" in err[-2] and "['minimize']" in err[-2]
    assert "different goal" in err[-1] and not (in_tmp / "C" / "run").exists()

    # the same goal measured otherwise (another model, task or measurement): its values would not compare; refused
    # naming what differs, by a dry run too (a run on another model joined silently)
    changed = args(tiny_model, in_tmp / "D", "--out", str(in_tmp / "D" / "run"), "--storage", storage,
                   "--set", "task_questions=2", n=1)
    for dry in (["--dry-run"], []):
        assert main(changed + dry) == 2
        err = capsys.readouterr().err
        assert "was made with other settings than this search's (task_questions 3 -> 2)" in err, err
        assert not (in_tmp / "D" / "run").exists()


def test_carbon_budget_stops_before_exceeding_it(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "C"), "--carbon-budget", "1e-12")) == 0
    results = json.loads((in_tmp / "C" / "results.json").read_text())
    assert results["counts"]["experiments"] == 0 and results["stop_reason"].startswith("carbon budget")
    assert results["recommended"]["best"] is None
    assert "carbon budget" in (in_tmp / "C" / "report.md").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--objective", "make it nice"], "no 'maximize X' or 'minimize X'"),
    (["--eval-text", "missing.txt"], "missing.txt"),
    (["--eval-text", "same.txt", "--calib-text", "same.txt"], "same file"),
    (["--storage", "nosuchdb://x/y"], "search.storage: not a storage URL Optuna can open"),
    (["--storage", ""], "search.storage: empty; leave it out"),  # was the current folder, as a journal file
    # found at the base model's measurement, in a new folder that no --resume could take (no run.json)
    (["--set", "measure.country=Narnia"], "measure.country: no carbon-intensity data for country 'Narnia'"),
])
def test_bad_input_is_one_line_and_no_folder(in_tmp: Path, tiny_model: dict[str, Path], extra: list[str],
                                             message: str, capsys: Any) -> None:
    (in_tmp / "same.txt").write_text("Some English text for evaluation and calibration. " * 20)
    code = main([*args(tiny_model, in_tmp, "--out", str(in_tmp / "BAD")), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (in_tmp / "BAD").exists()


def test_an_evaluation_text_shorter_than_one_window_is_warned_about(in_tmp: Path, caplog: Any) -> None:
    """`--eval-text` of "hello world" ran every experiment's perplexity on 3 tokens without a word."""
    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import load_texts

    (in_tmp / "short.txt").write_text("hello world\n")
    with caplog.at_level("WARNING"):
        load_texts(CompressConfig(eval_text=in_tmp / "short.txt"))
    assert "short.txt: about 2 tokens, fewer than one perplexity window (measure.context 256)" in caplog.text
    caplog.clear()
    (in_tmp / "long.txt").write_text("Some English text for evaluation. " * 80)
    with caplog.at_level("WARNING"):
        load_texts(CompressConfig(eval_text=in_tmp / "long.txt"))
    assert caplog.text == ""


def test_mlflow_logs_one_child_per_experiment(in_tmp: Path, tiny_model: dict[str, Path], mlflow_uri: str) -> None:
    import mlflow

    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "M"), "--mlflow", mlflow_uri, n=2)) == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("agentlab-compress")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3  # the base model and two experiments
    assert {c.data.tags["agentlab.key"] for c in children} == {"exp_000", "exp_001", "exp_002"}
    assert all("perplexity" in c.data.metrics for c in children)
    assert parents[0].data.tags["recommended"]


@pytest.mark.parametrize("planner", ["nsga2", "tpe", "random"])
def test_a_warm_start_runs_its_experiments_first_for_every_planner(in_tmp: Path, tiny_model: dict[str, Path],
                                                                   planner: str) -> None:
    """warm_start: the given experiments run right after the base model, whichever planner runs; one already run is
    skipped; then the planner's own. A resumed run does not run them again."""
    leads = '[{quantize: int8_dynamic}, {quantize: int8_dynamic}, {prune: magnitude, sparsity: 0.5}]'
    run = in_tmp / "W"
    assert main(args(tiny_model, in_tmp, "--out", str(run), "--set", f"warm_start={leads}", planner=planner,
                     n=3)) == 0
    rows = records(run)
    assert [r["planner"] for r in rows] == ["base", "leads", "leads", planner]
    assert rows[1]["experiment"]["quantize"]["method"] == "int8_dynamic"
    assert rows[2]["experiment"]["prune"]["method"] == "magnitude" and rows[2]["experiment"]["quantize"] is None
    assert "warm start: search.warm_start[2]" in rows[2]["note"]
    assert main(["compress", "--resume", str(run), "--max-iterations", "4"]) == 0
    assert [r["planner"] for r in records(run)].count("leads") == 2


def test_a_resume_that_changes_what_an_experiment_is_measured_against_is_refused(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    """A resume with another measurement (or goal, task, device) measured its new experiments so beside the base
    model's and ranked them together; refused now, the folder left as it was. The budget and planner may change."""
    run = in_tmp / "R"
    assert main(args(tiny_model, in_tmp, "--out", str(run), n=1)) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["compress", "--resume", str(run), "--max-iterations", "2", "--set", "measure.context=64",
                 "--set", "task_questions=5"]) == 2
    err = capsys.readouterr().err.split("hint")[0]
    assert "measure.context 32 -> 64; task_questions 3 -> 5)" in err and "nothing was written" in err
    # the grid's country too: every CO2e of the run, and the carbon budget's sum, are in one country's intensity
    # (a resume that changed it was allowed, then refused as "its base model was measured with another set-up")
    assert main(["compress", "--resume", str(run), "--set", "measure.country=FRA"]) == 2
    assert "(measure.country 'USA' -> 'FRA'); nothing was written" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(["compress", "--resume", str(run), "--max-iterations", "2", "--planner", "nsga2"]) == 0
    assert len(records(run)) == 3
    assert "resuming: 1 finished experiment(s) in the study and the base model" in capsys.readouterr().err
    # a total below the experiments already finished: refused (the summary said the smaller total was reached)
    assert main(["compress", "--resume", str(run), "--max-iterations", "1"]) == 2
    assert "--max-iterations 1 is below the 2 experiments" in capsys.readouterr().err


def test_a_resume_whose_base_model_was_measured_otherwise_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                                      capsys: Any) -> None:
    """The settings unchanged, the base still measured otherwise (`device: auto` on another machine, the model's
    files changed): its new experiments were scored against a base they do not compare with."""
    import shutil

    model = in_tmp / "model"
    shutil.copytree(tiny_model["hf"], model)
    run = in_tmp / "R"
    assert main([*args({"hf": model}, in_tmp, "--out", str(run), n=1)]) == 0
    (model / "generation_config.json").write_text((model / "generation_config.json").read_text() + "\n")
    capsys.readouterr()
    assert main(["compress", "--resume", str(run), "--max-iterations", "2"]) == 2
    err = capsys.readouterr().err
    assert "its base model was measured with another model or measurement set-up" in err and "Traceback" not in err
    assert len(records(run)) == 2 and json.loads((run / "run.json").read_text())["status"] == "completed"


def test_a_resume_from_another_folder_keeps_the_default_workspace(in_tmp: Path, tiny_model: dict[str, Path],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The default workspace (runs/compress/workspace, relative) is kept absolute in config.yaml and results.json:
    `cd other && agentlab compress --resume ../first/runs/cws` made other/runs/compress/workspace, the earlier
    experiments' records and checkpoints left in the first one. A run saved with no workspace (before) resumes with
    the one beside its folder. report.md speaks of no workers: a resume is not another worker."""
    import yaml

    monkeypatch.delenv("AGENTLAB_RUNS")  # runs/ relative to the current folder, as for a user
    first, other, later = in_tmp / "first", in_tmp / "other", in_tmp / "later"
    for folder in (first, other, later):
        folder.mkdir()
    cmd = args(tiny_model, in_tmp, "--out", "runs/cws", "--set", "warm_start=[{prune: magnitude, sparsity: 0.5}, "
               "{quantize: torch_dynamic_int8}, {prune: magnitude, sparsity: 0.7}]", n=1)
    at = cmd.index(f"workspace={in_tmp / 'ws'}")
    del cmd[at - 1:at + 1]  # the default workspace
    monkeypatch.chdir(first)
    assert main(cmd) == 0
    run, ws = first / "runs" / "cws", first / "runs" / "compress" / "workspace"

    def saved() -> tuple[Any, Any]:
        config = yaml.safe_load((run / "config.yaml").read_text())
        return config["workspace"], json.loads((run / "results.json").read_text())["workspace"]

    assert saved() == (str(ws), str(ws)) and len(list((ws / "checkpoints").iterdir())) == 1
    monkeypatch.chdir(other)
    assert main(["compress", "--resume", "../first/runs/cws", "--max-iterations", "2"]) == 0
    assert not (other / "runs").exists() and saved() == (str(ws), str(ws))
    assert len(list((ws / "experiments").glob("*.json"))) == 3 and len(records(run)) == 3
    report = (run / "report.md").read_text()
    assert "(3 run here including the base model" in report and "worker" not in report

    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "workspace": None}))  # as a run saved it before
    monkeypatch.chdir(later)
    assert main(["compress", "--resume", str(run), "--max-iterations", "3"]) == 0
    assert not (later / "runs").exists() and saved() == (str(ws), str(ws))
    assert len(list((ws / "experiments").glob("*.json"))) == 4


def test_the_recommended_models_file_is_named(in_tmp: Path, tiny_model: dict[str, Path]) -> None:
    """results.json and report.md name where the recommended model is kept (a GGUF experiment's file in the run
    folder); nothing said where it was."""
    run = in_tmp / "G"
    assert main(args(tiny_model, in_tmp, "--out", str(run), "--objective", "minimize size", "--set",
                     "warm_start=[{quantize: gguf, gguf_type: Q8_0}]", n=1)) == 0
    rec = json.loads((run / "results.json").read_text())["recommended"]
    assert rec["index"] == 1 and rec["model_file"] == str((run / "experiments" / "001" / "model.q8_0.gguf").absolute())
    report = (run / "report.md").read_text()
    assert Path(rec["model_file"]).is_file() and f"Model: `{rec['model_file']}` (llama.cpp" in report


def test_warm_start_true_is_the_knowledge_bases_gguf_leads() -> None:
    from agentlab.compress.agent import knowledge_leads
    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import warm_leads
    from agentlab.compress.space import Space

    cfg = CompressConfig(search={"warm_start": True})
    space = Space.build(4, cuda=False)
    leads = warm_leads(cfg, cfg.goal(), space)
    assert leads == knowledge_leads(space.choices) and [c["gguf_type"] for c, _ in leads] == ["Q8_0", "Q5_K_M",
                                                                                                 "Q4_K_M"]
    assert warm_leads(CompressConfig(), cfg.goal(), space) == []


@pytest.mark.parametrize("leads, message", [
    ("[{quantize: nosuch}]", "warm_start[0]: quantize: one of"),
    ("[{colour: red}]", "warm_start[0]: colour: not a setting"),
    ("[{}]", "warm_start[0]: these settings make no experiment"),
])
def test_a_bad_warm_start_is_one_line_and_no_folder(in_tmp: Path, tiny_model: dict[str, Path], leads: str,
                                                    message: str, capsys: Any) -> None:
    code = main(args(tiny_model, in_tmp, "--out", str(in_tmp / "BAD"), "--set", f"warm_start={leads}"))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (in_tmp / "BAD").exists()


def test_dry_run_lists_the_space_and_the_warm_start_and_writes_nothing(in_tmp: Path, tiny_model: dict[str, Path],
                                                                      capsys: Any) -> None:
    code = main([*args(tiny_model, in_tmp, "--out", str(in_tmp / "D"), "--set", "warm_start=[{quantize: gguf}]"),
                 "--dry-run"])
    out = capsys.readouterr().err  # the console
    assert code == 0 and "  quantize: none, int8_weight_only" in out and "warm start: 1 experiment(s) first" in out
    assert "dry run: nothing measured" in out and not (in_tmp / "D").exists()


def test_a_base_that_cannot_be_measured_stops_with_its_error_and_resume_tries_it_again(
        in_tmp: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The base model's measurement failing (a transient error) ends the run with that error, its trial back in
    the queue uncounted: --resume measures it and runs the whole budget."""
    import importlib

    run_module = importlib.import_module("agentlab.compress.run")  # the package's ``run`` is the function
    real = run_module.run_experiment

    def broken(exp: Any, *a: Any, **k: Any) -> Any:
        if exp is None:
            raise RuntimeError("the GPU went away")
        return real(exp, *a, **k)

    monkeypatch.setattr(run_module, "run_experiment", broken)
    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "R"), n=1)) != 0
    err = capsys.readouterr().err
    assert "the GPU went away" in err and "Traceback" not in err, err
    monkeypatch.setattr(run_module, "run_experiment", real)
    assert main(["compress", "--resume", str(in_tmp / "R")]) == 0
    check_folder(in_tmp / "R", 1)


def test_a_study_of_compress_before_the_search_loop_is_refused(in_tmp: Path, tiny_model: dict[str, Path],
                                                                capsys: Any) -> None:
    import optuna

    storage = f"sqlite:///{in_tmp / 'old.db'}"
    study = optuna.create_study(study_name="compress", storage=storage, directions=["maximize"])
    study.set_user_attr("agentlab:objectives", ["speedup"])
    study.add_trial(optuna.trial.create_trial(value=2.0, user_attrs={"agentlab:record": "/x#1"}))
    code = main(args(tiny_model, in_tmp, "--out", str(in_tmp / "OLD"), "--storage", storage))
    err = capsys.readouterr().err
    assert code == 2 and "was written by an agentlab before compress ran on the search loop" in err, err
    assert not (in_tmp / "OLD").exists()


def test_a_resume_whose_study_is_missing_or_another_is_refused_and_nothing_is_lost(
        in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    """study.db removed, `--resume` made a new study: exit 0, a finished experiment gone from experiments.jsonl and
    two new ones run where one was asked. Refused now (exit 2), the folder as it was; so is a study that holds none of
    the run's experiments, and (before anything opens it) a `--storage` file that is missing."""
    import optuna

    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import check_resume
    from agentlab.core.errors import RunDirError

    run = in_tmp / "R"
    assert main(args(tiny_model, in_tmp, "--out", str(run), n=1)) == 0
    (run / "study.db").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}
    capsys.readouterr()
    assert main(["compress", "--resume", str(run), "--max-iterations", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'study.db'}: the study of {run} is missing (it holds its base model and 1 finished" in err
    assert "Traceback" not in err and not (run / "study.db").exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"} == before
    optuna.create_study(study_name="compress", storage=f"sqlite:///{run / 'study.db'}", directions=["maximize"])
    assert main(["compress", "--resume", str(run), "--max-iterations", "2"]) == 2
    err = capsys.readouterr().err
    assert "its study holds none of the 2 measurement(s) the run finished" in err and "Traceback" not in err
    assert records(run) == [json.loads(line) for line in before[run / "experiments.jsonl"].decode().splitlines()]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    for storage in (f"sqlite:///{in_tmp / 'gone.db'}", str(in_tmp / "gone.journal")):
        with pytest.raises(RunDirError, match=f"{in_tmp / 'gone'}.*: the study of {run} is missing"):
            check_resume(CompressConfig(search={"storage": storage}), run)


def test_a_shared_study_keeps_its_constraints_too(in_tmp: Path, tiny_model: dict[str, Path], capsys: Any) -> None:
    """Only the constraint differing (perplexity for accuracy), a run wrote into a study of another goal."""
    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import open_search_study

    storage = f"sqlite:///{in_tmp / 's.db'}"
    measure = dict(item.split("=", 1) for item in SMALL if item.startswith("measure."))
    first = CompressConfig(model=str(tiny_model["hf"]), task_questions=3, search={"storage": storage},
                           measure={key.removeprefix("measure."): int(value) for key, value in measure.items()})
    open_search_study(first, first.goal(), in_tmp)  # the same measurement as the run below: only the goal differs
    other = args(tiny_model, in_tmp, "--out", str(in_tmp / "C"), "--storage", storage, "--dry-run")
    other[other.index("--objective") + 1] = "maximize speedup with perplexity increase <5%"
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "the study 'compress' has the goal 'maximize speedup subject to accuracy >= 0.98 x base', this search " \
        "'maximize speedup subject to perplexity <= 1.05 x base'" in err and not (in_tmp / "C").exists()
    open_search_study(first, first.goal(), in_tmp)  # the same goal opens it again


def test_a_run_opening_a_study_another_just_created_waits_for_its_goal(in_tmp: Path,
                                                                        tiny_model: dict[str, Path]) -> None:
    """Two runs started together on a new study, differing only in their constraints (not a shared setting): the
    second opened the study between the first's open_study and its goal label, found none, wrote its own goal and
    ran beside the first with another goal."""
    import threading

    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import GOAL_ATTR, open_search_study, study_settings
    from agentlab.core.search.study import open_study

    storage = f"sqlite:///{in_tmp / 's.db'}"
    first = CompressConfig(model=str(tiny_model["hf"]), task_questions=3, search={"storage": storage})
    goal = first.goal()
    made = open_study(storage, in_tmp, name="compress", directions=[o.direction for o in goal.objectives],
                      objectives=[o.metric for o in goal.objectives], settings=study_settings(first))  # mid-open

    def label() -> None:
        time.sleep(0.4)
        made.set_user_attr(GOAL_ATTR, goal.describe())

    other = first.model_copy(update={"objective": "maximize speedup with perplexity increase <5%"})
    labelling = threading.Thread(target=label)
    labelling.start()
    try:
        with pytest.raises(ConfigError, match="has the goal 'maximize speedup subject to accuracy"):
            open_search_study(other, other.goal(), in_tmp)
    finally:
        labelling.join()
    assert made.user_attrs[GOAL_ATTR] == goal.describe()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_weights_file_is_refused_before_any_folder(in_tmp: Path, tiny_model: dict[str, Path], damage: str,
                                                            capsys: Any) -> None:
    """config.json fine, model.safetensors not: --dry-run said "config ok", the run failed (exit 1) in a folder."""
    import shutil

    model = in_tmp / "model"
    shutil.copytree(tiny_model["hf"], model)
    weights = model / "model.safetensors"
    weights.write_bytes(b"garbage" * 100 if damage == "garbage" else weights.read_bytes()[:-100])
    for extra in (["--dry-run"], []):
        assert main([*args({"hf": model}, in_tmp, "--out", str(in_tmp / "BAD"), n=1), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{weights}: not a readable safetensors file" in err and "Traceback" not in err
        assert not (in_tmp / "BAD").exists()


@pytest.mark.parametrize("storage", ["sqlite:///new.db", "new.journal"])
def test_a_dry_run_reads_the_storage_and_creates_nothing(in_tmp: Path, tiny_model: dict[str, Path], storage: str,
                                                         capsys: Any) -> None:
    """`--dry-run --storage sqlite:///new.db` created the database with the study's direction fixed (a journal file
    was written), so a later dry run with another goal was refused."""
    base = args(tiny_model, in_tmp, "--out", str(in_tmp / "D"), "--storage", storage, "--dry-run")
    assert main(base) == 0
    other = [*base]
    other[other.index("--objective") + 1] = "minimize size, maximize speedup"
    assert main(other) == 0
    assert sorted(p.name for p in in_tmp.iterdir()) == [], "a dry run wrote a file"
    capsys.readouterr()
    if storage.startswith("sqlite"):  # what the run would refuse, the dry run refuses too
        other[other.index("--storage") + 1] = "sqlite:///nodir/new.db"
        assert main(other) == 2 and "its folder nodir does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("config", "config.json:1: invalid JSON"),
    ("tokenizer", "no tokenizer"),
    ("gguf", "model.gguf: not a readable GGUF file (truncated:"),
])
def test_a_damaged_model_is_refused_before_any_folder(in_tmp: Path, tiny_model: dict[str, Path], damage: str,
                                                      message: str, capsys: Any) -> None:
    """A config.json that is not JSON, a folder without its tokenizer, or a GGUF cut short passed --dry-run; the run
    then failed (exit 1) in a run folder, the GGUF as "transformers could not convert this GGUF (cannot reshape
    array ...)"."""
    import shutil

    model = in_tmp / "model"
    shutil.copytree(tiny_model["hf"], model)
    if damage == "config":
        (model / "config.json").write_text('{"model_type": ')
    elif damage == "tokenizer":
        for file in model.glob("tokenizer*"):
            file.unlink()
    else:
        gguf = model / "model.gguf"
        gguf.write_bytes(gguf.read_bytes()[:300_000])
        model = gguf
    for extra in (["--dry-run"], []):
        assert main([*args({"hf": model}, in_tmp, "--out", str(in_tmp / "BAD"), n=1), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (in_tmp / "BAD").exists()


@pytest.mark.parametrize("yaml, where", [
    ("search:\n  warm_start:\n    - {quantize: gguf}\n    - {quantize: nosuch}\n", "c.yaml:4: search.warm_start[1]"),
    ("warm_start:\n  - {quantize: nosuch}\n", "c.yaml:2: search.warm_start[0]"),  # the old top-level key
])
def test_a_bad_warm_start_in_a_file_names_its_file_and_line(in_tmp: Path, tiny_model: dict[str, Path], yaml: str,
                                                            where: str, capsys: Any) -> None:
    """A bad entry said "error: search.warm_start[0]: ..." without the file and line other config errors name."""
    (in_tmp / "c.yaml").write_text(yaml)
    code = main(args(tiny_model, in_tmp, "-c", str(in_tmp / "c.yaml"), "--out", str(in_tmp / "BAD"), "--dry-run"))
    err = capsys.readouterr().err
    assert code == 2 and f"{in_tmp / where}: quantize: one of" in err and not (in_tmp / "BAD").exists()


def test_a_bad_answer_gets_an_example_of_compress_settings(in_tmp: Path, tiny_model: dict[str, Path],
                                                           capsys: Any) -> None:
    """The --answer hint suggested {"changes": {"model.d_model": 32}}, a nas setting no compress edit can hold."""
    code = main([*args(tiny_model, in_tmp, "--out", str(in_tmp / "BAD"), planner="agent"), "--approve", "--answer",
                 '{"answer": "edit"}', "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and '"changes": {"quantize": "gguf"' in err and "d_model" not in err


def test_a_shared_studys_device_is_the_one_measured_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """`device: auto` on a GPU machine and on a CPU one are other set-ups; `auto` and `cpu` without CUDA are one."""
    import torch

    from agentlab.compress.config import CompressConfig
    from agentlab.compress.run import study_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    auto, cpu = (study_settings(CompressConfig(device=d)) for d in ("auto", "cpu"))
    assert auto == cpu and auto["device"] == "'cpu'" and auto["measure.dtype"] == "'float32'"


def test_when_the_base_model_is_the_recommendation_every_output_says_so(in_tmp: Path, tiny_model: dict[str, Path],
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: Any) -> None:
    """The console said "recommended: <experiment> (closest: ...)" then "the base model meets the constraints: keep
    it, unless ...", the summary said "1 experiments", and the progress line ran the step's ETA into the count
    ("ETA 0:08 1/3")."""
    from agentlab.cli.common import LineProgress

    monkeypatch.setattr(LineProgress.__init__, "__defaults__", (0.0,))  # a progress line at every tick
    run = in_tmp / "K"  # the structured prune shrinks the model, so it breaks the bound the base model meets
    assert main(args(tiny_model, in_tmp, "--out", str(run), "--objective", "maximize speedup with compression < 1.01",
                     "--set", "search.warm_start=[{prune: structured, mlp_keep: 0.5}]", n=1)) == 0
    err = capsys.readouterr().err
    rec = json.loads((run / "results.json").read_text())["recommended"]
    assert rec["keep_base"] and not rec["feasible"]
    assert "recommended: keep the base model (it meets the constraints; closest experiment: structured mlp 0.5 " \
        "-0L, which breaks compression < 1.01)\n  that experiment: speedup " in err
    assert "keep it, unless" not in err and "1 experiment and the base model (0 reused from the workspace" in err
    assert "**Keep the base model**: it meets the constraints and no experiment does" in (run / "report.md").read_text()
    assert "Model: the base model itself, unchanged." in (run / "report.md").read_text()
    assert "; measured 1/2 done (" in err and "; measured 0/2 done (" in err  # [1] ...: <step>, ETA 0:01; measured


def test_a_dry_run_checks_that_out_can_be_made_and_says_an_unused_llm(in_tmp: Path, tiny_model: dict[str, Path],
                                                                     capsys: Any) -> None:
    """--out same.txt/sub passed the dry run (the run: "cannot create the run folder: Not a directory", exit 2);
    `llm: nosuch.yaml` with a planner that uses no model was accepted without a word."""
    (in_tmp / "same.txt").write_text("a file")
    assert main(args(tiny_model, in_tmp, "--out", str(in_tmp / "same.txt" / "sub"), "--dry-run")) == 2
    assert f"--out {in_tmp / 'same.txt' / 'sub'}: cannot create the run folder: {in_tmp / 'same.txt'} is a file" \
        in capsys.readouterr().err
    assert main(args(tiny_model, in_tmp, "--set", "llm=nosuch.yaml", "--dry-run")) == 0
    assert "warning: --set llm=nosuch.yaml is not used: --planner random uses no model" in capsys.readouterr().err
    (in_tmp / "c.yaml").write_text("llm: nosuch.yaml\n")
    assert main(args(tiny_model, in_tmp, "-c", str(in_tmp / "c.yaml"), "--dry-run")) == 0
    assert f"warning: {in_tmp / 'c.yaml'}:1: llm: nosuch.yaml is not used" in capsys.readouterr().err

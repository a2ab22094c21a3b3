"""What a new user read wrong in compress's report and config: report.md spoke of "workers of the shared search" on
a run's own study (each resume counted as one more worker); an unknown key of an lm-eval task came after pydantic's
line for the union's other member; `--model`'s help and the config reference left out GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentlab.compress.config import CompressConfig
from agentlab.compress.report import render_report
from agentlab.compress.scoring import check, derive
from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError

BASE = {"perplexity": 20.0, "accuracy": 0.5, "decode_tps": 100.0, "size_mb": 10.0, "co2e_kg": 1e-6,
        "energy_kwh": 1e-5, "energy_mode": "estimated"}
FASTER = {**BASE, "decode_tps": 150.0, "size_mb": 5.0}


def _records(cfg: CompressConfig, workers: list[str]) -> list[dict[str, Any]]:
    """The base model and one experiment, run by the processes ``workers`` (a first run, then its resume)."""
    goal = cfg.goal()
    out = []
    for index, (metrics, worker) in enumerate(zip([BASE, FASTER], workers, strict=True)):
        derived = derive(metrics, BASE)
        feasible, violation, broken = check(goal, derived, derive(BASE, BASE))
        out.append({"index": index, "label": "base model" if index == 0 else "torch_dynamic_int8",
                    "experiment": None if index == 0 else {"quantize": {"method": "torch_dynamic_int8"}},
                    "state": "done", "planner": "base" if index == 0 else "random", "worker": worker,
                    "reused": False, "metrics": metrics, "derived": derived, "feasible": feasible,
                    "violation": violation, "broken": broken, "key": f"k{index}"})
    return out


def _report(storage: str | None, workers: list[str]) -> str:
    from agentlab.compress.run import summarise

    cfg = CompressConfig.model_validate({"search": {"storage": storage}})
    records = _records(cfg, workers)
    results = summarise(cfg, cfg.goal(), records, "max_iterations reached (1 experiment)", "/ws")
    return render_report(cfg, cfg.goal(), records, results)


@pytest.mark.parametrize("storage", [None, "sqlite:///shared.db", "study.journal"])
def test_a_run_on_its_own_or_a_shared_sqlite_study_speaks_of_no_workers(storage: str | None) -> None:
    """Its own study.db (or an SQLite / journal study other runs share, each with its own budget and records): the
    experiments were run here, however often it was resumed (each resume another process, not another worker)."""
    report = _report(storage, ["vm:100", "vm:200"])  # the base model, then the experiment after a resume
    assert "(2 run here including the base model, 0 reused" in report
    assert "Spent by the experiments run here:" in report
    assert "worker" not in report and "shared search" not in report


def test_a_search_on_a_database_server_is_the_workers_shared_search() -> None:
    report = _report("postgresql://u@db/agentlab", ["hostA:1", "hostB:2"])
    assert "(2 run by the workers of the shared search including the base model" in report
    assert "Spent by the experiments run by the workers of the shared search:" in report


def test_an_unknown_key_of_an_lm_eval_task_is_one_line(tmp_path: Path) -> None:
    """Before: pydantic's line for the union's path member ("task.lax-or-strict[lax=union[json-or-python[...]]]:
    Input is not a valid path ...") came first."""
    path = tmp_path / "c.yaml"
    path.write_text("model: models/tiny\ntask: {harness: agentlab_arithmetic_mc, foo: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, CompressConfig)
    assert str(info.value).splitlines() == [f"{path}:2: task.foo: unknown key; known keys: harness, include_path, "
                                            "chat_template"]
    path.write_text("task: {harnes: agentlab_arithmetic_mc}\n")  # a misspelt key: named with the one it stands for
    with pytest.raises(ConfigError) as info:
        load_config(path, CompressConfig)
    assert f"{path}:1: task.harnes: unknown key (did you mean 'harness'?)" in str(info.value).splitlines()
    path.write_text("task: 5\n")  # neither a mapping nor a path: the path's error, once
    with pytest.raises(ConfigError) as info:
        load_config(path, CompressConfig)
    assert str(info.value).splitlines() == [f"{path}:1: task: Input is not a valid path for <class 'pathlib.Path'> "
                                            "(got 5)"]


def test_both_forms_of_the_task_still_load(tmp_path: Path) -> None:
    from agentlab.compress.config import HarnessTask

    path = tmp_path / "c.yaml"
    path.write_text("task: {harness: agentlab_arithmetic_mc, include_path: [tasks]}\n")
    task = load_config(path, CompressConfig).task
    assert isinstance(task, HarnessTask) and task.harness == "agentlab_arithmetic_mc"
    assert load_config(path, CompressConfig, ["task=questions.jsonl"]).task == Path("questions.jsonl")
    assert CompressConfig(task=HarnessTask(harness="x")).task == HarnessTask(harness="x")
    assert CompressConfig.model_validate({"task": "q.jsonl"}).task == Path("q.jsonl")


def test_the_help_and_the_reference_name_a_gguf_model_file(capsys: Any) -> None:
    from agentlab.cli import main

    assert main(["compress", "--help"]) == 0
    assert "a GGUF file" in " ".join(capsys.readouterr().out.replace("│", " ").split())  # the table's lines joined
    assert "a GGUF file" in (CompressConfig.model_fields["model"].description or "")


def test_the_pareto_plot_draws_the_goals_front_on_a_log_axis_with_one_label_for_coinciding_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With "minimize size, maximize speedup" no panel plotted size against speedup (the front was never drawn), one
    278x speedup squashed the others on a linear axis, and coinciding results' labels were drawn over each other."""
    pytest.importorskip("matplotlib")
    import agentlab.compress.report as report
    from agentlab.compress.objective import parse_objective

    figures: list[Any] = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, **kw: figures.append(fig))
    records = [{"index": i, "state": "done", "feasible": True, "violation": 0.0,
                "derived": {"speedup": speedup, "size": size, "perplexity": 20.0, "accuracy": 0.5}}
               for i, speedup, size in ((0, 1.0, 10.0), (1, 278.0, 5.0), (2, 1.2, 5.0), (3, 1.2, 5.0))]
    report.write_plot(parse_objective("minimize size, maximize speedup"), records, tmp_path / "pareto.png")
    first, *others = [ax for ax in figures[0].axes if ax.axison]
    assert (first.get_xlabel(), first.get_ylabel()) == ("speedup (x base decode tok/s)", "size (MB on disk)")
    assert first.get_xscale() == "log" and first.get_yscale() == "linear" and len(others) == 4
    assert sorted(t.get_text() for t in first.texts) == ["0", "1", "2,3"]


def test_the_llm_planners_warm_up_experiments_are_labelled_by_their_sampler() -> None:
    """The sampler's warm-up trials of `--planner llm` (the LLM not asked) were labelled "(llm)" on the console, in
    experiments.jsonl and in report.md."""
    from types import SimpleNamespace

    from agentlab.compress.report import outcome_line
    from agentlab.compress.run import Search, summarise
    from agentlab.core.search.records import TrialRecord

    cfg = CompressConfig()
    base, exp = _records(cfg, ["vm:1", "vm:1"])
    trial = TrialRecord(number=1, state="complete", value=1.5, params={}, planner="llm", origin="classical",
                        choice=0, candidates=1, warmup=True, notes=["a warm-up trial of the sampler"],
                        metrics={"record": exp})
    record = Search._record_of(SimpleNamespace(), trial, 1)  # type: ignore[arg-type]  # experiments.jsonl's line
    assert record["planner"] == "llm" and record["proposed_by"] == "llm, warm-up: nsga2"
    assert outcome_line(record).startswith("[1] torch_dynamic_int8 (llm, warm-up: nsga2): speedup 1.5x")
    results = summarise(cfg, cfg.goal(), [base, record], "max_iterations reached (1 experiment)", "/ws")
    report = render_report(cfg, cfg.goal(), [base, record], results)
    assert "| 1 | torch_dynamic_int8 (front) | llm, warm-up: nsga2 | 1.5 |" in report
    assert "- 1 (llm, warm-up: nsga2, classical): a warm-up trial of the sampler" in report
    assert results["experiments"][1]["proposed_by"] == "llm, warm-up: nsga2"

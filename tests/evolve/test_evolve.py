"""`agentlab evolve run` on the tiny model: the run folder and report, the population store (claims, requeue),
no finished individual scored twice after SIGKILL, the probe that refuses adapters that change nothing, novelty and
fitness by hand, parallel workers, and one clear line (exit 2) for bad input."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("optuna")

from evolve_config import write_config  # noqa: E402  (tests/evolve/evolve_config.py)

from agentlab.cli import main  # noqa: E402
from agentlab.evolve.config import EvolveConfig  # noqa: E402
from agentlab.evolve.population import open_population  # noqa: E402
from agentlab.evolve.run import _novelty, ancestors, generation_row  # noqa: E402


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def test_run_writes_generations_lineage_report_and_scores_each_once(in_tmp: Path, tiny_model: dict[str, Path],
                                                                     seeds: dict[str, Path]) -> None:
    config, run = write_config(in_tmp, tiny_model, seeds), in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    ind = results["individuals"]
    # gen_0: the three seeds and one blend; gen 1 keeps the elite and breeds three children
    assert [m for m, i in ind.items() if i["generation"] == 0] == ["persona_a", "persona_b", "persona_c", "g0c0"]
    assert sorted(m for m, i in ind.items() if i["generation"] == 1) == ["g1c0", "g1c1", "g1c2"]
    assert all(i["state"] == "complete" and i["probe_change"] > 0 for i in ind.values())
    for m in ("g0c0", "g1c0"):
        lineage = json.loads((run / "adapters" / f"gen_{ind[m]['generation']}" / m / "lineage.json").read_text())
        assert lineage["method"] == "exact" and len(lineage["parents"]) == len(ind[m]["parents"]) == 2
        assert ind[m]["rank"] == min(sum(ind[p]["rank"] for p in ind[m]["parents"]), 32)
        assert sum(ind[m]["weights"]) == pytest.approx(1.0, abs=1e-3)
    history = results["history"]
    assert [h["generation"] for h in history] == [0, 1] and len(history[1]["members"]) == 4
    elite = max(history[0]["members"], key=lambda r: r["fitness"])["id"]
    assert elite in [r["id"] for r in history[1]["members"]]  # carried over, not scored again
    scored = [e["id"] for e in events(run, "scored")]
    assert sorted(scored) == sorted(ind) and len(scored) == len(set(scored))
    for row in history[1]["members"]:  # fitness = the weighted parts
        assert row["fitness"] == pytest.approx(row["task"] + 0.5 * row["coop"] + 0.1 * row["novelty"], abs=1e-3)
    final = results["final"]
    assert final["questions"] == 2 and final["rows"][0]["id"] == results["best"]["id"]
    assert {r["id"] for r in final["rows"]} >= {"persona_a", "persona_b", "persona_c"}
    report = (run / "report.md").read_text()
    for heading in ("## Generations", "## Headline", "## Every adapter scored on the test split", "## Lineage tree",
                    "```mermaid"):
        assert heading in report
    assert (run / "fitness.png").stat().st_size > 0 and (run / "task.jsonl").is_file()


def test_population_claims_are_exclusive_and_killed_claims_requeue(tmp_path: Path) -> None:
    """Individuals are trials the search loop queues; two workers' loops claim them ``batch`` at a time, never the
    same one, and a claim whose worker is gone goes back to the queue."""
    from agentlab.core.search.planners import Proposal
    from agentlab.evolve.worker import evolve_loop

    one = open_population(None, tmp_path, create=True)
    two = open_population(f"sqlite:///{tmp_path / 'population.db'}", None, create=False)
    first_loop, second_loop = evolve_loop(one, 2), evolve_loop(two, 5)
    for i in range(3):
        first_loop._commit(Proposal({}, {}, "seed", f"x{i}", extra={"individual": {"id": f"x{i}", "generation": 0,
                                                                                   "path": "p"}}), queued=True)
    assert {i["state"] for i in two.individuals().values()} == {"waiting"}
    first, second = first_loop._claim(), second_loop._claim()
    assert [p.reasoning for _, p in first] == ["x0", "x1"] and [p.reasoning for _, p in second] == ["x2"]
    assert second_loop._claim() == []
    trial, proposal = first[0]
    first_loop._run_trial(trial, proposal, [], {"task": 0.5, "coop": 0.0, "value": 0.5, "seconds": 1.0})
    gone = f"{socket.gethostname()}:999999999"
    for number in (first[1][0].number, second[0][0].number):  # claimed by workers that are gone
        one.store.set_attr(number, "plan", {**one.store.get(number).user_attrs["plan"], "worker": gone})
    assert len(first_loop.recover()) == 2
    individuals = two.individuals()
    assert {m: i["state"] for m, i in individuals.items()} == {"x0": "complete", "x1": "waiting", "x2": "waiting"}
    assert individuals["x0"]["task"] == 0.5


def test_sigkill_mid_generation_then_resume_scores_no_finished_individual_again(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], sigkill_when: Any, capsys: Any) -> None:
    config = write_config(in_tmp, tiny_model, seeds, population=5, generations=2, elite=1,
                          task={"fitness_questions": 6, "test_questions": 0})
    run = in_tmp / "RUN"
    sigkill_when(["evolve", "run", "-c", str(config), "--out", str(run)],
                 lambda: (run / "events.jsonl").is_file() and len(events(run, "scored")) >= 2)
    before = {e["id"]: e for e in events(run, "scored")}
    assert 2 <= len(before) < 13, "the kill came after the run had finished: nothing to resume"
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    kept = re.search(r"resuming: (\d+) individual\(s\) scored before are kept, not scored again; the run scores 13 "
                     r"in all", err)
    assert kept and len(before) <= int(kept.group(1)) < 13, "the resumed run says what it keeps"
    # the session's seconds bought its own scores, not the run's 13 (it said "13 individuals in 2 s")
    now = 13 - int(kept.group(1))
    assert re.search(rf"13 individuals, {now} scored in this session's \d+ s", " ".join(err.split()))
    assert json.loads((run / "results.json").read_text())["scored_this_session"] == now
    after = events(run, "scored")
    ids = [e["id"] for e in after]
    assert len(ids) == len(set(ids)), "an individual was scored twice"
    results = json.loads((run / "results.json").read_text())
    assert sorted(ids) == sorted(results["individuals"]) and len(ids) == 5 + 2 * 4
    for m, e in before.items():  # the scores stored before the kill are the ones reported
        assert results["individuals"][m]["task"] == e["task"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    gens = events(run, "generation")  # one per generation, across the kill and the resume
    assert [g["generation"] for g in gens] == [0, 1, 2] and all(g["best"] in results["individuals"] for g in gens)
    # a resume that changes the search (a larger population, more generations) is refused, the run left as it was
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.json"}
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(run), "--population", "6", "--set", "generations=3"]) == 2
    err = capsys.readouterr().err
    assert "generations 2 -> 3; population 5 -> 6); nothing was written" in err and "workers" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.json"} == kept
    # the Python API resumes with the run's own settings (it resumed with the defaults, population 8)
    from agentlab.evolve import run_evolution

    assert sorted(run_evolution(resume=run)["individuals"]) == sorted(results["individuals"])
    assert len(events(run, "scored")) == 5 + 2 * 4
    # without its population a resume would score all 13 again in a new one: refused, the run left as it was
    (run / "population.db").unlink()
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.json"}
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(run)]) == 2
    assert f"{run / 'population.db'}: the population of {run} is missing" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "run.json"} == kept


def test_an_adapter_that_changes_nothing_is_an_error_not_a_score(in_tmp: Path, tiny_model: dict[str, Path],
                                                                  seeds: dict[str, Path], capsys: Any) -> None:
    from agentlab.evolve.score import ScoreSettings, score_batch

    config = write_config(in_tmp, tiny_model, seeds, seeds=[str(seeds["persona_a"]), str(seeds["zero"])])
    assert main(["evolve", "run", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "zero: the adapter changes nothing" in err and not (in_tmp / "runs").exists()
    settings = ScoreSettings(base_model=str(tiny_model["hf"]), device="cpu", questions=[], seeds={},
                             max_tokens=2, rounds=1, replace="weakest", decision="majority", probe="hi",
                             min_change=1e-4)
    out = score_batch(settings, {}, [{"id": "zero", "path": str(seeds["zero"])}])
    assert isinstance(out["zero"], str) and "changes nothing" in out["zero"]


def test_one_seed_found_without_seeds_is_named_with_the_missing_defaults(in_tmp: Path, tiny_model: dict[str, Path],
                                                                         seeds: dict[str, Path], capsys: Any) -> None:
    """No --seeds and only adapters/persona_a: "needs at least 2 (got 1)" for seeds the user never gave. The seed
    found is named, the default skill adapters said not found, with the train-persona line to make them."""
    import shutil

    shutil.copytree(seeds["persona_a"], in_tmp / "adapters" / "persona_a")
    args = ["evolve", "run", "--base-model", str(tiny_model["hf"]), "--generations", "1", "--population", "4"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "it needs at least 2 (got 1: adapters/persona_a, found under the current directory as no --seeds" in err
    assert "adapters/skill_arithmetic, adapters/skill_geography, adapters/skill_units were not found" in err, err
    assert "hint: train them: agentlab train-persona --data skill_X --out adapters/skill_X" in err
    assert not (in_tmp / "runs").exists()
    shutil.copytree(seeds["persona_b"], in_tmp / "adapters" / "skill_units")  # a default skill found: only the others
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "(got 1: adapters/skill_units, found" in err and "adapters/skill_arithmetic, adapters/skill_geography " \
        "were not found" in err, err
    assert main([*args, "--seeds", "adapters/persona_a"]) == 2  # seeds given: as given
    err = " ".join(capsys.readouterr().err.split())
    assert "needs at least 2 (got 1)" in err and "hint: give more --seeds" in err, err


def test_novelty_and_fitness_by_hand(seeds: dict[str, Path]) -> None:
    individuals = {
        "a": {"state": "complete", "task": 1.0, "coop": 0.0, "answers": ["1", "2", "3", "4"], "parents": []},
        "b": {"state": "complete", "task": 0.5, "coop": -0.5, "answers": ["1", "2", "9", "9"], "parents": ["a"]},
        "c": {"state": "complete", "task": 0.25, "coop": 0.5, "answers": ["1", None, "9", "9"],
              "parents": ["a", "b"]},
        "d": {"state": "fail", "error": "the adapter changes nothing", "parents": []}}
    cfg = EvolveConfig(fitness={"task": 1.0, "coop": 0.5, "novelty": 0.1})
    novelty = _novelty(cfg, individuals, ["a", "b", "c"])
    # a-b differ on 2 of 4, a-c on 3 (None never agrees), b-c on 1
    assert novelty == pytest.approx({"a": (0.5 + 0.75) / 2, "b": (0.5 + 0.25) / 2, "c": (0.75 + 0.25) / 2})
    row = generation_row(cfg, individuals, 0, ["a", "b", "c", "d"])
    fit = {r["id"]: r["fitness"] for r in row["members"]}
    assert fit["a"] == pytest.approx(1.0 + 0.1 * 0.625, abs=1e-4) and fit["d"] is None
    assert row["best"]["id"] == "a" and row["members"][3]["error"] == "the adapter changes nothing"
    assert ancestors(individuals, "c") == ["a", "b"]
    weights = EvolveConfig(novelty="weights")
    paths = {m: {"state": "complete", "path": str(seeds[m])} for m in ("persona_a", "persona_b")}
    by_weight = _novelty(weights, paths, ["persona_a", "persona_b"])
    assert 0.5 < by_weight["persona_a"] == by_weight["persona_b"] < 1.0  # unrelated random adapters: ~0.7


def test_workers_score_in_parallel_processes(in_tmp: Path, tiny_model: dict[str, Path],
                                             seeds: dict[str, Path]) -> None:
    config = write_config(in_tmp, tiny_model, seeds, population=6, generations=1, workers=2, batch=1)
    run = in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 0
    pop = open_population(None, run, create=False)
    workers = {i["worker"] for i in pop.individuals().values()}
    assert len(workers) >= 1 and all(not w.endswith(f":{os.getpid()}") for w in workers), workers
    assert len(events(run, "scored")) == 6 + 5 and len({e["id"] for e in events(run, "scored")}) == 11
    logs = "".join(p.read_text() for p in sorted((run / "workers").glob("worker-*.log")))
    assert "error" not in logs
    scored_lines = [line.split(":")[0] for line in logs.splitlines() if ": task " in line]
    assert sorted(scored_lines) == sorted(set(scored_lines)), "two workers scored the same individual"


@pytest.mark.parametrize("case", ["no-seeds", "short-task", "too-many-seeds", "bad-store", "not-lora", "worker",
                                  "worker-journal", "store-not-journal", "worker-not-journal", "new-store-short-task",
                                  "empty-store", "worker-empty-store", "worker-folder-store", "worker-empty-sqlite",
                                  "unwritable-store", "empty-out", "huge-mut-std", "inf-weight-range",
                                  "nan-scale-range", "nan-fitness", "inf-coop", "inf-min-logit-change"])
def test_bad_input_is_one_line_and_exit_2(case: str, in_tmp: Path, tiny_model: dict[str, Path],
                                          seeds: dict[str, Path], capsys: Any) -> None:
    config = write_config(in_tmp, tiny_model, seeds)
    args = ["evolve", "run", "-c", str(config)]
    if case == "no-seeds":
        args += ["--seeds", str(in_tmp / "missing")]
    elif case in ("short-task", "new-store-short-task"):  # the journal named is not made for a refused run
        (in_tmp / "t.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
        args += ["--task", str(in_tmp / "t.jsonl")] + (["--store", "nosuch.db"] if case.startswith("new") else [])
    elif case == "too-many-seeds":
        args += ["--population", "2"]
    elif case == "bad-store":
        args += ["--store", "nosuchdb://x"]
    elif case == "unwritable-store":  # was refused once its run folder was made (and announced)
        if not Path("/proc").is_dir():
            pytest.skip("no /proc")
        args += ["--store", "/proc/x/y.journal"]
    elif case == "empty-store":  # was the current folder: "cannot use '/tmp/x' as an Optuna journal file"
        args += ["--store", ""]
    elif case == "empty-out":  # was the current folder: "--out .: folder exists and is not empty"
        args += ["--out", ""]
    elif case == "huge-mut-std":  # inf in float32: its children were adapters of inf, exit 0
        args += ["--set", "mut_std=1e300"]
    elif case in ("inf-weight-range", "nan-scale-range", "nan-fitness", "inf-coop", "inf-min-logit-change"):
        # valid for `config validate`, then weight_range [-inf, inf] failed once the folder was made and the model
        # loaded ("weights must be finite numbers (got [nan, nan, nan])"); a nan weight "succeeded" with fitness nan
        args += ["--set", {"inf-weight-range": "weight_range=[-.inf, .inf]", "nan-scale-range": "scale_range=[0, .nan]",
                           "nan-fitness": "fitness.task=.nan", "inf-coop": "fitness.coop=.inf",
                           "inf-min-logit-change": "min_logit_change=.inf"}[case]]
    elif case in ("worker-empty-store", "worker-folder-store"):  # a folder was "no such journal file"
        args = ["evolve", "worker", "--store", "" if case == "worker-empty-store" else str(in_tmp), "--no-wait"]
    elif case == "not-lora":
        (in_tmp / "plain").mkdir()
        args += ["--seeds", str(in_tmp / "plain")]
    elif case == "worker-journal":  # a journal path the worker would have created, empty, by opening it
        args = ["evolve", "worker", "--store", "nosuch.db", "--no-wait"]
    elif case in ("store-not-journal", "worker-not-journal"):  # JSON lines, not Optuna's: was KeyError 'op_code'
        (in_tmp / "t.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n')
        args = (args + ["--store", "t.jsonl"] if case == "store-not-journal" else
                ["evolve", "worker", "--store", "t.jsonl", "--no-wait"])
    elif case == "worker-empty-sqlite":  # Optuna wrote its schema into it, then "holds no evolve population"
        (in_tmp / "empty.db").write_bytes(b"")
        args = ["evolve", "worker", "--store", f"sqlite:///{in_tmp / 'empty.db'}", "--no-wait"]
    else:
        args = ["evolve", "worker", "--store", f"sqlite:///{in_tmp / 'none.db'}", "--no-wait"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert not (in_tmp / "runs").exists() and not (in_tmp / "nosuch.db").exists()
    if case.endswith("empty-store"):
        assert "store: empty" in err[0]
    if case == "empty-out":
        assert err[0] == "error: Invalid value for '--out': empty; leave it out for a new folder under runs/evolve/, " \
            "or give a folder path"
    if case == "huge-mut-std":
        assert "mut_std" in err[0]
    if case == "inf-weight-range":
        assert err[0] == "error: --set weight_range=[-.inf, .inf]: weight_range[0]: Input should be a finite number " \
            "(got -.inf)", err  # as the --set wrote it
    if case == "nan-fitness":
        assert err[0] == "error: --set fitness.task=.nan: fitness.task: Input should be a finite number (got .nan)"
    if case == "short-task":  # was "1 questions"
        assert f"{in_tmp / 't.jsonl'}: 1 question; the splits need" in err[0], err
    if case == "worker-folder-store":
        assert err[0] == f"error: store {in_tmp}: a folder, not a journal file"
    if case == "worker-empty-sqlite":
        assert "empty.db holds no Optuna study" in err[0] and (in_tmp / "empty.db").read_bytes() == b""
    if case == "unwritable-store":
        assert err[0].startswith("error: store /proc/x/y.journal: cannot write the journal file in /proc (")
    if case.endswith("not-journal"):
        assert "t.jsonl' as an Optuna journal file: its first line is JSON, not Optuna's" in err[0]
        assert (in_tmp / "t.jsonl").read_text() == '{"question": "1+1?", "answer": "2"}\n'


def test_a_population_of_the_old_work_queue_is_refused_not_scored_again(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from agentlab.core.errors import ConfigError

    pop = open_population(None, tmp_path, create=True)
    pop.store.create(state=TrialState.WAITING, user_attrs={"id": "x0", "generation": 0, "path": "p"})
    with pytest.raises(ConfigError, match="before evolve ran on the search loop"):
        pop.individuals()


def test_resume_from_another_folder_scores_with_the_runs_own_paths(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], sigkill_when: Any, capsys: Any,
        monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A run started with a relative base model and --out keeps absolute paths in its store; a store written before
    that (relative paths, simulated) resumes from another folder all the same; a seed retrained since the start is
    refused (exit 2); an adapter that cannot be loaded is no score: exit 1, its individual back in the queue, the
    run not finished, and the next resume scores it."""
    import shutil
    import sqlite3

    from safetensors.torch import load_file, save_file

    mine = tmp_path_factory.mktemp("resume_seeds")  # outside the run's folder, as they were always kept absolute
    for name in ("persona_a", "persona_b", "persona_c"):
        shutil.copytree(seeds[name], mine / name)
    (in_tmp / "models").mkdir()
    (in_tmp / "models" / "tiny").symlink_to(tiny_model["hf"], target_is_directory=True)
    config = write_config(in_tmp, tiny_model, {n: mine / n for n in ("persona_a", "persona_b", "persona_c")},
                          base_model="models/tiny", fitness={"coop": 0.0}, task={"test_questions": 2})
    run = in_tmp / "runs" / "e1"
    sigkill_when(["evolve", "run", "-c", str(config), "--out", "runs/e1"],
                 lambda: (run / "events.jsonl").is_file() and len(events(run, "scored")) >= 1)
    pop = open_population(None, run, create=False)
    assert pop.attr("settings")["base_model"] == str(in_tmp / "models" / "tiny")
    assert all(Path(i["path"]).is_absolute() for i in pop.individuals().values())
    waiting = [m for m, i in pop.individuals().items() if i["state"] in ("waiting", "running")
               and i["origin"] != "seed"]
    assert waiting, "the kill came after every stored child was scored"
    # the store as the runs before absolute paths wrote it: the base model and the children's folders as typed
    db = sqlite3.connect(run / "population.db")
    with db:
        for table in ("trial_user_attributes", "study_user_attributes"):
            db.execute(f"UPDATE {table} SET value_json = replace(value_json, ?, '')", (f"{in_tmp}/",))
        db.execute("DELETE FROM study_user_attributes WHERE key = 'folder'")
    db.close()
    assert pop.attr("settings")["base_model"] == "models/tiny"
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # a seed retrained since the run started: refused before anything loads, the run left as it was
    weights = mine / "persona_c" / "adapter_model.safetensors"
    kept_weights = weights.read_bytes()
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "a seed adapter changed on disk since the run started (persona_c " in err and "persona_a" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept
    weights.write_bytes(kept_weights)
    # a child's folder this process cannot reach: no score, the run stops (exit 1), the child back in the queue
    child = in_tmp / pop.individuals()[waiting[0]]["path"]
    child.rename(in_tmp / "away")
    assert main(["evolve", "run", "--resume", str(run)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: cannot score {waiting[0]}: " in err and "nothing was recorded for it" in err
    individuals = pop.individuals()
    assert individuals[waiting[0]]["state"] == "waiting" and not any(i["state"] == "fail"
                                                                      for i in individuals.values())
    assert pop.attr("finished") is None and json.loads((run / "run.json").read_text())["status"] == "failed"
    (in_tmp / "away").rename(child)
    assert main(["evolve", "run", "--resume", str(run)]) == 0
    out = " ".join(capsys.readouterr().err.split())
    results = json.loads((run / "results.json").read_text())
    ind = results["individuals"]
    assert all(i["state"] == "complete" and Path(i["path"]).is_dir() for i in ind.values()), ind
    assert f"Adapter: {results['recommended']['path']}" in out and Path(results["recommended"]["path"]).is_dir()
    assert pop.attr("settings")["base_model"] == str(in_tmp / "models" / "tiny")  # the old store, upgraded
    for m, i in ind.items():
        if i["origin"] != "seed":
            parents = json.loads((Path(i["path"]) / "lineage.json").read_text())["parents"]
            assert all(Path(p).is_absolute() and Path(p).is_dir() for p in parents), (m, parents)


def test_blend_caps_a_rank_above_the_parents_total(in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    """Above the parents' total rank the blend is exact already: the child gets that rank, and a line says so (it was
    zero-padded to the rank asked and reported as "exact; rank 1000")."""
    args = ["evolve", "blend", "--parents", str(seeds["persona_a"]), str(seeds["persona_b"]), "--child"]
    assert main([*args, "big", "--rank", "1000"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--rank 1000 is above the parents' total rank 8: the child has rank 8" in err and "(exact; rank 8," in err
    lineage = json.loads((in_tmp / "big" / "lineage.json").read_text())
    assert lineage["rank"] == 8 and lineage["exact"]
    exact = in_tmp / "exact"
    assert main([*args, str(exact)]) == 0  # the default rank: the same child
    assert (in_tmp / "big" / "adapter_model.safetensors").stat().st_size == \
        (exact / "adapter_model.safetensors").stat().st_size
    capsys.readouterr()
    assert main([*args, "small", "--rank", "3"]) == 0 and "total rank" not in capsys.readouterr().err
    assert json.loads((in_tmp / "small" / "lineage.json").read_text())["rank"] == 3


@pytest.mark.parametrize(("field", "value"), [("lora_alpha", "abc"), ("r", "eight"), ("r", 0), ("lora_alpha", None),
                                              ("use_rslora", "yes")])
def test_blend_refuses_a_parent_config_value_of_the_wrong_type(field: str, value: Any, in_tmp: Path,
                                                               seeds: dict[str, Path], capsys: Any) -> None:
    """A value that scales the weights, of the wrong type, was an internal ValueError (exit 1) or taken silently
    (null recorded as the alpha, "yes" as rsLoRA): one line naming the file and the field, exit 2, nothing written;
    `evolve run` refuses such a seed the same way."""
    import shutil

    bad = in_tmp / "bad"
    shutil.copytree(seeds["persona_b"], bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**config, field: value}))
    assert main(["evolve", "blend", "--parents", str(seeds["persona_a"]), str(bad), "--child", "kid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {bad / 'adapter_config.json'}: {field} is {json.dumps(value)}; it must be " + \
        {"r": "a whole number above 0", "lora_alpha": "a number above 0", "use_rslora": "true or false"}[field]
    assert not (in_tmp / "kid").exists() and "Traceback" not in "\n".join(err)
    from agentlab.core.train.blend import read_parent

    read_parent(seeds["persona_a"])  # PEFT's own values pass


def test_blend_names_a_child_folder_that_cannot_be_written(in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    """--child under a folder that cannot be written was exit 1 naming the blend's temporary folder."""
    (in_tmp / "afile").write_text("")
    args = ["evolve", "blend", "--parents", str(seeds["persona_a"]), str(seeds["persona_b"]), "--child"]
    for child, where in (("afile/sub/kid", in_tmp / "afile"), ("/proc/kid", Path("/proc"))):
        if child.startswith("/proc") and not Path("/proc").is_dir():
            continue
        assert main([*args, child]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[0].startswith(f"error: --child {child}: cannot write in {where} (") and ".tmp" not in err[0]


def test_a_new_run_refuses_the_store_of_a_run_made_otherwise(in_tmp: Path, tiny_model: dict[str, Path],
                                                             seeds: dict[str, Path], capsys: Any) -> None:
    """A run (not a resume) given the store of an earlier run took its population over: its seeds, its scores, an
    adapter of that run recommended, exit 0. Other seeds or settings are refused (exit 2, the store and the
    difference named, the store untouched, no run folder); a store made before the settings were kept in it is
    compared by its seeds; the same settings and seeds carry on with what it holds, and say so."""
    config = write_config(in_tmp, tiny_model, seeds, generations=0, task={"test_questions": 0},
                          fitness={"coop": 0.0, "novelty": 0.0})
    ref = in_tmp / "ref"
    assert main(["evolve", "run", "-c", str(config), "--out", str(ref)]) == 0
    copy = in_tmp / "copy.db"
    copy.write_bytes((ref / "population.db").read_bytes())
    store = f"sqlite:///{copy}"
    two = ["--seeds", str(seeds["persona_a"]), "--seeds", str(seeds["persona_b"])]
    for extra, said in ((two, f'seeds {json.dumps([str(seeds[n]) for n in ("persona_a", "persona_b", "persona_c")])} '
                               f'-> {json.dumps([str(seeds[n]) for n in ("persona_a", "persona_b")])}'),
                        (["--set", "search=random", "--set", "seed=7"], "search 'ga' -> 'random'; seed 0 -> 7")):
        capsys.readouterr()
        assert main(["evolve", "run", "-c", str(config), "--store", store, "--out", str(in_tmp / "new"), *extra]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"error: store {store}: holds the population of another run ({ref}), made with other settings or " \
            f"seeds ({said}); nothing was written" in err, err
        assert f"agentlab evolve run --resume {ref}" in err
        assert copy.read_bytes() == (ref / "population.db").read_bytes() and not (in_tmp / "new").exists()
    # a store made before it kept its settings: compared by its seeds
    open_population(store, None, create=False).set_attr("config", None)
    kept = copy.read_bytes()
    assert main(["evolve", "run", "-c", str(config), "--store", store, "--out", str(in_tmp / "new"), *two]) == 2
    assert "made with other settings or seeds (seeds {" in capsys.readouterr().err
    assert copy.read_bytes() == kept and not (in_tmp / "new").exists()
    # the same settings and seeds while that run has not finished: it is that run's (running, or to be resumed)
    open_population(store, None, create=False).set_attr("finished", False)
    assert main(["evolve", "run", "-c", str(config), "--store", store, "--out", str(in_tmp / "new")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: store {store}: holds the population of the run {ref}, which has not finished" in err, err
    assert f"agentlab evolve worker --store {store}" in err and f"agentlab evolve run --resume {ref}" in err
    assert not (in_tmp / "new").exists()
    open_population(store, None, create=False).set_attr("finished", True)
    # the same settings and seeds: what the store holds is kept, said as the other run's, not as a resume
    assert main(["evolve", "run", "-c", str(config), "--store", store, "--out", str(in_tmp / "new")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"the store {store} holds the population of {ref}, made with these settings and seeds: its 4 scored " \
        "individual(s) are kept" in err and "resuming" not in err
    # a resume is checked against its own config.yaml, not the store: one of an older agentlab (no settings kept,
    # its base model as typed) was refused as "another run", naming the run being resumed
    pop = open_population(store, None, create=False)
    pop.set_attr("config", None)
    pop.set_attr("settings", {**pop.attr("settings"), "base_model": "models/tiny"})
    assert main(["evolve", "run", "--resume", str(in_tmp / "new")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_runs_started_together_on_a_new_store_one_owns_it(in_tmp: Path, seeds: dict[str, Path], kind: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `evolve run` started at the same moment on one new store both found it empty (prepare's check_store) and
    both ran: each took the other's individuals, some were scored twice, exit 0 for both. The run that makes the
    store's study owns it; the other is refused (exit 2) before it stores or scores anything."""
    import importlib
    import threading

    from agentlab.core.errors import UsageError
    from agentlab.core.runs import RunDir

    evolve_run = importlib.import_module("agentlab.evolve.run")  # the module: the package exports its run()

    class Reached(Exception):
        """The run went on past the store's owner check (into its settings)."""

    def settings(*args: Any, **kwargs: Any) -> Any:
        raise Reached

    monkeypatch.setattr(evolve_run, "_settings", settings)
    for attempt in range(3):
        store = f"sqlite:///{in_tmp / f'race{attempt}.db'}" if kind == "sqlite" else str(in_tmp / f"race{attempt}.log")
        cfg = EvolveConfig.model_validate({"seeds": [str(seeds[n]) for n in ("persona_a", "persona_b")],
                                           "store": store})
        barrier, outcomes = threading.Barrier(2), []

        dirs = [RunDir.create("evolve", out=in_tmp / f"run{attempt}-{i}") for i in range(2)]

        def start(i: int, cfg: EvolveConfig = cfg, barrier: threading.Barrier = barrier,
                  outcomes: list[Any] = outcomes, dirs: list[RunDir] = dirs) -> None:
            run_dir = dirs[i]
            barrier.wait()
            try:
                evolve_run.run(cfg, run_dir, fitness=[], test=[])
            except Exception as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(type(e).__name__ for e in outcomes) == ["Reached", "UsageError"], outcomes
        refused = next(e for e in outcomes if isinstance(e, UsageError))
        owner = open_population(store, None, create=False).attr("folder")
        assert f"holds the population of the run {owner}, which has not finished" in refused.message


def test_claims_that_go_back_to_the_queue_are_named_by_individual(tmp_path: Path) -> None:
    """They were Optuna trial numbers, and "resuming" in a new run whose own worker was killed."""
    from agentlab.core.search.planners import Proposal
    from agentlab.evolve.run import recovered_line
    from agentlab.evolve.worker import evolve_loop

    pop = open_population(None, tmp_path, create=True)
    loop = evolve_loop(pop, 2)
    for name in ("g2c0", "g2c1"):
        loop._commit(Proposal({}, {}, "ga", name, extra={"individual": {"id": name, "generation": 2, "path": "p"}}))
    numbers = sorted(ind["trial"] for ind in pop.individuals().values())
    assert recovered_line(pop, numbers, resumed=False) == \
        "2 individual(s) that were being scored when their process stopped go back to the queue (g2c0, g2c1)"
    assert recovered_line(pop, numbers, resumed=True).startswith("resuming: 2 individual(s)")


def test_seeds_trained_on_another_base_are_refused_before_any_model_loads(in_tmp: Path, tiny_model: dict[str, Path],
                                                                          seeds: dict[str, Path],
                                                                          capsys: pytest.CaptureFixture) -> None:
    """Seeds of one model given another --base-model: refused only once the model loaded (minutes on a real model),
    by the logit probe."""
    from agentlab.core.train.tiny import make_tiny

    make_tiny(in_tmp / "tiny-q", arch="qwen2")  # another architecture
    config = write_config(in_tmp, tiny_model, seeds, base_model=str(in_tmp / "tiny-q"))
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"base model '{tiny_model['hf']}' differs from base_model '{in_tmp / 'tiny-q'}'" in err, err
    assert f"--base-model {tiny_model['hf']}" in err and "Loading" not in err and not (in_tmp / "RUN").exists()


def test_a_moved_or_copied_run_names_its_own_adapters_and_keeps_its_total_seconds(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], capsys: Any) -> None:
    """A finished run moved elsewhere and resumed said "Adapter: <the old path>" (results.json and report.md too), a
    copy recommended the original's adapter, and the resume's 0.2 s replaced the run's seconds (412 -> 0)."""
    import shutil

    config = write_config(in_tmp, tiny_model, seeds, fitness={"coop": 0.0},
                          task={"test_questions": 2, "validation_questions": 2})  # a child is recommended
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 0
    first = json.loads((in_tmp / "RUN" / "results.json").read_text())
    (in_tmp / "RUN").rename(in_tmp / "MOVED")
    for run in (in_tmp / "MOVED", in_tmp / "COPY"):
        if run.name == "COPY":
            shutil.copytree(in_tmp / "MOVED", run)
        capsys.readouterr()
        assert main(["evolve", "run", "--resume", str(run)]) == 0
        err = " ".join(capsys.readouterr().err.split())
        results = json.loads((run / "results.json").read_text())
        children = {m: i["path"] for m, i in results["individuals"].items() if i["origin"] != "seed"}
        assert children and all(Path(p).is_relative_to(run) and Path(p).is_dir() for p in children.values()), children
        assert Path(results["recommended"]["path"]).is_relative_to(run)
        assert f"Adapter: {results['recommended']['path']}" in err and str(in_tmp / "RUN") not in err
        assert str(in_tmp / "RUN") not in (run / "report.md").read_text()
        # the whole run's seconds stay (this session's beside them), and the console says nothing was scored now
        assert results["scored_this_session"] == 0 and results["seconds"] >= first["seconds"] - 0.2
        assert results["seconds"] >= results["session_seconds"]
        assert re.search(r"\d+ individuals in \d+ s, none scored in this session", err), err
    other = open_population(None, in_tmp / "MOVED", create=False)
    assert all(not Path(i["path"]).is_relative_to(in_tmp / "COPY") for i in other.individuals().values())


def test_an_interrupted_session_keeps_its_seconds_for_the_next(in_tmp: Path, tiny_model: dict[str, Path],
                                                                seeds: dict[str, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """results.json's seconds are every session's, but a session's were kept in the store only as the run process
    scored an individual: with --workers (they score) or stopped after its last score, the next session lost them."""
    import importlib

    run_module = importlib.import_module("agentlab.evolve.run")  # the package's `run` is the function

    class Stopped:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def run(self) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "evolve_loop", Stopped)
    config = write_config(in_tmp, tiny_model, seeds, fitness={"coop": 0.0})
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 130
    assert open_population(None, in_tmp / "RUN", create=False).attr("seconds") is not None


def test_the_seconds_of_a_run_with_workers_are_kept_as_they_score(in_tmp: Path, tiny_model: dict[str, Path],
                                                                   seeds: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With --workers the store kept the run's seconds only at its end (the run process scores nothing itself): a
    session killed with SIGKILL lost its time, and the resume said "10 scored in this session's 72 s (72 s in all)".
    The workers here score in this process (``serve``), and the store is read as the run polls them."""
    import importlib

    from agentlab.evolve.worker import serve

    run_module = importlib.import_module("agentlab.evolve.run")  # the package's `run` is the function
    kept: list[Any] = []

    def workers(store: str, n: int, batch: int, logs: Path, poll: Any, say: Any, group: str = "") -> None:
        pop = open_population(store, None, create=False)
        assert serve(pop, batch=batch, wait=False) > 0
        poll()
        kept.append(pop.attr("seconds"))

    monkeypatch.setattr(run_module, "run_workers", workers)
    config = write_config(in_tmp, tiny_model, seeds, workers=2, fitness={"coop": 0.0})
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 0
    assert len(kept) == 2 and all(isinstance(s, float) and s > 0 for s in kept), kept


def test_a_new_run_refuses_a_store_whose_adapters_are_gone(in_tmp: Path, tiny_model: dict[str, Path],
                                                           seeds: dict[str, Path], capsys: Any) -> None:
    """A new run given the store of a finished run whose folder was removed since kept its scores and recommended
    an adapter that no longer exists (results.json and report.md naming it), exit 0: refused, the store and the
    missing folder named, nothing written."""
    import shutil

    config = write_config(in_tmp, tiny_model, seeds, generations=0, task={"test_questions": 0},
                          fitness={"coop": 0.0, "novelty": 0.0})
    store = str(in_tmp / "st.journal")
    args = ["evolve", "run", "-c", str(config), "--store", store]
    assert main([*args, "--out", str(in_tmp / "r")]) == 0
    shutil.rmtree(in_tmp / "r")
    kept = Path(store).read_bytes()
    for out in ("r", "r2"):  # the same folder made again, or another
        capsys.readouterr()
        assert main([*args, "--out", str(in_tmp / out)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"error: store {store}: the adapter folder of g0c0, scored in it, is gone: " \
            f"{in_tmp / 'r' / 'adapters' / 'gen_0' / 'g0c0'}; its score cannot be kept without it; nothing was " \
            "written" in err, err
        assert f"restore the adapters/ folder of {in_tmp / 'r'}, or give this run a new store" in err
        assert not (in_tmp / out).exists() and Path(store).read_bytes() == kept


def test_config_refuses_numbers_that_are_not_finite(in_tmp: Path, capsys: Any) -> None:
    """`config validate` said ok to `weight_range: [-.inf, .inf]` and `fitness.novelty: .nan`: each is now refused
    naming its line and field, exit 2, as the run refuses it before any folder is made."""
    (in_tmp / "e.yaml").write_text("name: x\nweight_range: [-.inf, .inf]\nfitness:\n  novelty: .nan\n"
                                   "alpha_range: [0.2, .nan]\n")
    assert main(["config", "validate", "e.yaml", "--command", "evolve"]) == 2
    err = capsys.readouterr().err
    for line in ("e.yaml:2: weight_range[0]: Input should be a finite number (got -.inf)",  # as the file has them
                 "e.yaml:2: weight_range[1]: Input should be a finite number (got .inf)",
                 "e.yaml:4: fitness.novelty: Input should be a finite number (got .nan)",
                 "e.yaml:5: alpha_range[1]: Input should be a finite number (got .nan)"):
        assert line in err, err
    assert EvolveConfig(weight_range=(-1e30, 1e30)).weight_range == (-1e30, 1e30)  # large, finite: taken


def test_blend_refuses_an_empty_child(in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    """`--child ""` was the current folder: "--child .: is the current folder or holds it"."""
    args = ["evolve", "blend", "--parents", str(seeds["persona_a"]), str(seeds["persona_b"]), "--child", ""]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: Invalid value for '--child': empty; give the child adapter folder to write, e.g. " \
        "--child adapters/child", err
    assert list(in_tmp.iterdir()) == []



@pytest.mark.parametrize("where", ["first", "after", "repeated"])
def test_blend_refuses_an_empty_parent(where: str, in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    """`--parents "" B` was the current folder: "error: .: not a PEFT adapter folder"."""
    parent = str(seeds["persona_b"])
    given = {"first": ["--parents", "", parent], "after": ["--parents", parent, ""],
             "repeated": ["--parents", parent, "--parents", ""]}[where]
    assert main(["evolve", "blend", *given, "--child", "kid"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: Invalid value for '--parents': empty; give a parent adapter folder, e.g. --parents " \
        "adapters/a adapters/b", err
    assert list(in_tmp.iterdir()) == []


def test_blend_names_its_child_absolute_as_lineage_does(in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    """`--json` gave "child" as typed (relative) while lineage.json names the parents absolute."""
    parents = [str(seeds["persona_a"]), str(seeds["persona_b"])]
    assert main(["evolve", "blend", "--parents", *parents, "--child", "kid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["child"] == str(in_tmp / "kid")
    assert json.loads((in_tmp / "kid" / "lineage.json").read_text())["parents"] == parents
    assert main(["evolve", "blend", "--parents", *parents, "--child", "kid2"]) == 0
    assert f"child: {in_tmp / 'kid2'} (exact" in " ".join(capsys.readouterr().err.split())

@pytest.mark.parametrize("search,coop,store", [("random", 0.0, None), ("task_arithmetic", 0.0, None),
                                              ("random", 0.5, None), ("random", 0.5, "journal"),
                                              ("random", 0.0, "sqlite-held")],
                         ids=["random", "task_arithmetic", "coop", "coop-new-store", "store-held-before"])
def test_children_that_are_not_finite_stop_a_new_run_and_leave_no_folder(
        search: str, coop: float, store: str | None, in_tmp: Path, tiny_model: dict[str, Path],
        seeds: dict[str, Path], capsys: Any) -> None:
    """A finite range whose children overflow float32 stops the run at the first child (exit 2): the folder was left
    holding population.db and task.jsonl alone, which neither --resume (no run.json) nor --out (not empty) took, and
    the hint named `evolve blend`'s --mut-std and --scale. With the cooperation part (coop > 0) the seeds' debate was
    recorded first, and the failed folder stayed; the console named a folder that was then removed, with nothing
    said of it; a --store kept the population of the removed run (a new run given it, the range fixed, was refused
    as another run's). The population it made goes with the folder; what the store held before stays."""
    import optuna

    field = "weight_range" if search == "random" else "scale_range"
    config = write_config(in_tmp, tiny_model, seeds, search=search, generations=0, fitness={"coop": coop},
                          **{field: [1e300, 2e300]})
    run = in_tmp / "RUN"
    args, url = ["evolve", "run", "-c", str(config), "--out", str(run)], None
    if store == "journal":
        url = str(in_tmp / "pop.journal")
    elif store == "sqlite-held":  # the user's database, holding a study of its own
        url = f"sqlite:///{in_tmp / 'pop.db'}"
        optuna.create_study(study_name="mine", storage=url)
    if url is not None:
        args += ["--store", url]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"run folder: {run}" in err  # said when it was made ...
    err = err[next(i for i, line in enumerate(err) if line.startswith("error: ")):]
    assert err[0].startswith("error: child g0c0: the child's ") and "is not finite in float32" in err[0], err
    removed = f"; nothing was recorded: the run folder {run} was removed"  # ... and that it is gone
    if store == "journal":
        removed += f", and the store {url} it made"
    elif store == "sqlite-held":
        removed += f", and the population it made in the store {url}"
    assert err[0].endswith(removed) and "nothing written to" not in err[0], err
    assert err[1] == f"hint: give a smaller {field} and start a new run (a resume makes the same child)", err
    assert len(err) == 2 and "Traceback" not in " ".join(err)
    assert not run.exists() and not (in_tmp / "runs").exists()
    if store == "journal":
        assert sorted(p.name for p in in_tmp.iterdir()) == ["evolve.yaml"]
    elif store == "sqlite-held":
        assert optuna.get_all_study_names(url) == ["mine"]
    if store is not None or coop:
        return
    (in_tmp / "mine").mkdir()  # an empty --out folder the user made stays, empty again
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "mine")]) == 2
    assert list((in_tmp / "mine").iterdir()) == []


def test_only_a_child_that_is_not_finite_is_said_with_the_config_field(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The blend's other bad input keeps its own words: a message that happened to hold "not finite" was taken for a
    child that overflows (its text matched) and said as "give a smaller weight_range"."""
    import importlib

    from agentlab.core.errors import InputError

    evolve_run = importlib.import_module("agentlab.evolve.run")  # the package's `run` is the function

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise InputError("parent p: lora_alpha is not finite in its adapter_config.json", hint="fix the parent")

    monkeypatch.setattr(evolve_run, "blend_adapters", refuse)
    cfg = EvolveConfig(seeds=[seeds["persona_a"], seeds["persona_b"]], search="random", population=3, elite=1)
    spec = {"method": "random", "weights": [0.5, 0.5]}
    with pytest.raises(InputError) as caught:
        evolve_run._make_child(cfg, 0, "g0c0", spec, in_tmp / "child")
    assert (caught.value.message, caught.value.hint) == ("parent p: lora_alpha is not finite in its "
                                                         "adapter_config.json", "fix the parent")

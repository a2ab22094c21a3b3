"""The search methods beside the GA (CMA-ES, random, uniform, task arithmetic, TIES) and the merge baselines on the
tiny model: budgets, the CMA-ES study told every generation, the log-likelihood fitness checked against a plain
forward, TIES by hand, the headline against seeds and baselines, SIGKILL then --resume, and parallel workers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("optuna")
pytest.importorskip("cmaes")

from agentlab.cli import main  # noqa: E402
from agentlab.evolve.config import EvolveConfig  # noqa: E402
from agentlab.evolve.population import open_population  # noqa: E402
from agentlab.evolve.run import bred_generations  # noqa: E402
from agentlab.evolve.search import budget, fixed_spec  # noqa: E402

SEEDS = ("skill_arithmetic", "skill_geography", "skill_units")


@pytest.fixture(scope="module")
def seeds(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from agentlab.core.train.tiny import make_tiny_adapter

    root = tmp_path_factory.mktemp("skills")
    return {name: make_tiny_adapter(tiny_model["hf"], root / name, r=2, alpha=4, seed=10 + i)
            for i, name in enumerate(SEEDS)}


def write_config(tmp: Path, tiny_model: dict[str, Path], made: dict[str, Path], **fields: Any) -> Path:
    data: dict[str, Any] = {
        "base_model": str(tiny_model["hf"]), "seeds": [str(made[n]) for n in SEEDS], "population": 4,
        "generations": 1, "elite": 1, "batch": 2, "max_tokens": 3, "device": "cpu", "baseline_budget": 2,
        "task": {"fitness_questions": 3, "validation_questions": 3, "test_questions": 3},
        # the task alone: these tests are about the search and the baselines, so no debate per child (a run with
        # cooperation and novelty is tests/evolve/test_evolve.py's)
        "fitness": {"coop": 0, "novelty": 0}}
    data.update(fields)
    path = tmp / "evolve.yaml"
    path.write_text(json.dumps(data))
    return path


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, (run / "events.jsonl").read_text().splitlines()) if e["kind"] == kind]


def test_budgets_and_grids() -> None:
    cfg = EvolveConfig(population=8, elite=2, generations=4, baseline_budget=6, scale_range=(0.3, 1.5),
                       ties_density=[0.2, 0.5, 0.8])
    assert cfg.children(3) == 5 + 4 * 6 == budget(cfg, "cmaes", 3, baseline=False)
    assert bred_generations(cfg) == 4 and bred_generations(cfg.model_copy(update={"search": "uniform"})) == 0
    three = [Path("a"), Path("b"), Path("c")]  # gen_0 full of seeds: uniform's child is bred in gen 1
    assert bred_generations(cfg.model_copy(update={"search": "uniform", "population": 3, "seeds": three})) == 1
    assert budget(cfg, "uniform", 3, baseline=False) == 1 and budget(cfg, "ties", 3, baseline=True) == 6
    assert fixed_spec(cfg, "uniform", 0, 1, 3)["weights"] == [pytest.approx(1 / 3, abs=1e-5)] * 3
    scales = [fixed_spec(cfg, "task_arithmetic", j, 5, 3)["weights"][0] for j in range(5)]
    assert scales == pytest.approx([0.3, 0.6, 0.9, 1.2, 1.5])
    ties = [fixed_spec(cfg, "ties", j, 6, 3) for j in range(6)]
    assert [(t["density"], t["scale"]) for t in ties] == [(0.2, 0.3), (0.5, 0.3), (0.8, 0.3), (0.2, 1.5),
                                                         (0.5, 1.5), (0.8, 1.5)]
    draws = [fixed_spec(cfg, "random", j, 6, 3)["weights"] for j in range(6)]
    assert draws == [fixed_spec(cfg, "random", j, 6, 3)["weights"] for j in range(6)]  # a resume draws the same
    assert all(-0.5 <= w <= 1.5 for d in draws for w in d) and len({tuple(d) for d in draws}) == 6


def test_ties_by_hand(tiny_model: dict[str, Path], seeds: dict[str, Path], tmp_path: Path) -> None:
    from agentlab.core.train.blend import dense_delta, ties_merge

    a, b = seeds["skill_arithmetic"], seeds["skill_units"]
    da, db = dense_delta(a), dense_delta(b)
    ties_merge([a], tmp_path / "one", density=1.0, scale=1.0, rank=2)
    for m, d in dense_delta(tmp_path / "one").items():  # one parent, nothing trimmed: itself
        assert float((d - da[m]).abs().max()) < 1e-5
    result = ties_merge([a, b], tmp_path / "two", density=0.5, scale=0.7, rank=64)
    m = sorted(da)[0]
    x, y = da[m].flatten(), db[m].flatten()
    keep = [t.abs() >= t.abs().kthvalue(t.numel() - (t.numel() + 1) // 2 + 1).values for t in (x, y)]
    tx, ty = x * keep[0], y * keep[1]
    sign = (tx + ty).sign()
    agree = [(t.sign() == sign) & (t != 0) for t in (tx, ty)]
    expected = (tx * agree[0] + ty * agree[1]) / (agree[0].int() + agree[1].int()).clamp(min=1) * 0.7
    got = dense_delta(tmp_path / "two")[m].flatten()
    assert float((got - expected).abs().max()) < 1e-4 * float(expected.abs().max())
    assert result.discarded_energy < 1e-9  # rank 64 holds every module of the tiny model
    lineage = json.loads((tmp_path / "two" / "lineage.json").read_text())
    assert lineage["method"] == "ties" and lineage["parents"] == [str(a), str(b)] and lineage["rank"] == 64
    assert (lineage["density"], lineage["scale"], len(lineage["parent_ranks"])) == (0.5, 0.7, 2)
    assert lineage["base_model_name_or_path"] and lineage["discarded_energy"] == pytest.approx(0.0, abs=1e-9)


def test_answer_logliks_equal_a_plain_forward(tiny_model: dict[str, Path], seeds: dict[str, Path]) -> None:
    import torch

    from agentlab.core.llm.scoring import answer_logliks, chat_prompt_ids
    from agentlab.core.models.load import load_causal_lm

    model, tok = load_causal_lm(str(tiny_model["hf"]), device="cpu", adapters={"a": seeds["skill_arithmetic"]})
    pairs = [("What is 2 + 3?", "5"), ("What is the capital of France?", "Paris"), ("How many m in 2 km?", "2000")]
    import os

    assert len(os.path.commonprefix([chat_prompt_ids(tok, q) for q, _ in pairs])) >= 2  # the prefix cache is used
    got = answer_logliks(model, tok, pairs, batch=2)  # two batches, each from the prefix's cache
    plain = answer_logliks(model, tok, pairs, batch=2, share_prefix=False)
    assert [n for _, n in got] == [n for _, n in plain]
    assert [t for t, _ in got] == pytest.approx([t for t, _ in plain], abs=1e-4)
    for (question, answer), (total, n) in zip(pairs, got, strict=True):
        prompt, target = chat_prompt_ids(tok, question), tok(answer, add_special_tokens=False).input_ids
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + target])).logits[0].float().log_softmax(-1)
        expected = sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(target))
        assert n == len(target) and total == pytest.approx(expected, abs=1e-4)


def test_cmaes_with_every_baseline_and_the_headline(in_tmp: Path, tiny_model: dict[str, Path],
                                                   seeds: dict[str, Path], capsys: Any) -> None:
    config, run = write_config(in_tmp, tiny_model, seeds), in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "fitness = 1 x task; task = the mean per-token log-likelihood of the gold answers on " in err
    assert "recommended: " in err and "the candidates are the best evolved and each baseline's pick" in err
    assert " best seed: " in err and (" best baseline: " in err or " best other baseline: " in err)
    assert "validation and test agree" in err or "validation and test disagree" in err or "note: the " in err
    results = json.loads((run / "results.json").read_text())
    ind = results["individuals"]
    children = [m for m, i in ind.items() if i["origin"] == "cmaes"]
    assert len(children) == EvolveConfig(population=4, elite=1, generations=1).children(3) == 4
    assert results["baselines"] == {"uniform": ["uniform0"], "task_arithmetic": ["task_arithmetic0",
                                    "task_arithmetic1"], "ties": ["ties0", "ties1"], "random": ["random0", "random1"]}
    assert all(i["state"] == "complete" for i in ind.values())
    assert all(i["task"] < 0 and i["validation"] < 0 and 0 <= i["accuracy"] <= 1 for i in ind.values())
    assert ind["ties1"]["density"] == 0.5 and ind["uniform0"]["weights"] == [pytest.approx(1 / 3, abs=1e-5)] * 3
    stored = open_population(None, run, create=False).individuals()
    assert stored["g0c0"]["weights"] == [0.5] * 3  # the centre of weight_range first
    # gen 1 is CMA-ES's own draw from gen 0's fitness (gen 0: the centre, then random draws)
    assert all("cma:generation" in stored[m]["cma"] for m in children if stored[m]["generation"] == 1)
    best = results["best"]["id"]
    assert best in children and ind[best]["validation"] == max(ind[m]["validation"] for m in children)
    rows = {r["id"]: r for r in results["final"]["rows"]}
    assert rows[best]["relation"] == "best" and {r["relation"] for r in rows.values()} >= {
        "seed", "baseline uniform", "baseline task_arithmetic", "baseline ties", "baseline random"}
    for m, r in rows.items():
        assert r["loglik"] < 0 and (m == best) == ("best_minus" not in r)
    report = (run / "report.md").read_text()
    assert "## Headline" in report and "## Baselines" in report and "baseline ties" in report
    picks = [m for m, r in rows.items() if r["relation"].startswith("baseline")]
    rec = results["recommended"]  # the best validation among the best evolved and the baselines' picks
    assert rec["id"] == max([best, *picks], key=lambda m: ind[m]["validation"])
    assert rec["relation"] == rows[rec["id"]]["relation"].replace("best", "best evolved")
    assert (rec["id"] != best) == ("**Recommended:" in report)


@pytest.mark.parametrize("search", ["ga", "random", "uniform", "task_arithmetic", "ties"])
def test_every_search_spends_its_budget(search: str, in_tmp: Path, tiny_model: dict[str, Path],
                                        seeds: dict[str, Path]) -> None:
    config, run = write_config(in_tmp, tiny_model, seeds, search=search, baselines=[]), in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 0
    ind = json.loads((run / "results.json").read_text())["individuals"]
    children = [m for m, i in ind.items() if i["origin"] != "seed"]
    assert len(children) == (1 if search == "uniform" else 4)
    assert len(events(run, "scored")) == 3 + len(children)
    # uniform's one child is bred in gen_0: no generation rows of elites alone after it (they were reported)
    bred = 0 if search == "uniform" else json.loads(config.read_text()).get("generations", 1)
    assert [e["generation"] for e in events(run, "generation")] == list(range(bred + 1))
    assert json.loads((run / "results.json").read_text())["generations"] == bred


@pytest.mark.parametrize("search", ["cmaes", "random", "ties"])
def test_sigkill_then_resume(search: str, in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path],
                             sigkill_when: Any) -> None:
    config = write_config(in_tmp, tiny_model, seeds, generations=2, batch=1, search=search,
                          baselines=["uniform", "ties"] if search == "cmaes" else [])
    run = in_tmp / "RUN"
    sigkill_when(["evolve", "run", "-c", str(config), "--out", str(run)],
                 lambda: (run / "events.jsonl").is_file() and len(events(run, "scored")) >= 5)
    before = {e["id"]: e for e in events(run, "scored")}
    total = 3 + 1 + 2 * 3 + (1 + 2 if search == "cmaes" else 0)
    assert 5 <= len(before) < total, "the kill came after the run had finished: nothing to resume"
    assert main(["evolve", "run", "--resume", str(run)]) == 0
    ids = [e["id"] for e in events(run, "scored")]
    assert len(ids) == len(set(ids)) == total, "an individual was scored twice, or one was never scored"
    results = json.loads((run / "results.json").read_text())
    for m, e in before.items():
        assert results["individuals"][m]["task"] == e["task"]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    if search != "cmaes":
        return
    stored = open_population(None, run, create=False).individuals()
    later = [i for i in stored.values() if i["origin"] == "cmaes" and i["generation"] >= 1]
    assert len(later) == 6 and all("cma:generation" in i["cma"] for i in later)  # CMA-ES's own draws after gen 0


@pytest.mark.parametrize("search", ["cmaes", "task_arithmetic"])
def test_workers_score_children_and_baselines(search: str, in_tmp: Path, tiny_model: dict[str, Path],
                                              seeds: dict[str, Path]) -> None:
    config = write_config(in_tmp, tiny_model, seeds, workers=2, batch=1, search=search,
                          baselines=["uniform", "task_arithmetic"])
    run = in_tmp / "RUN"
    assert main(["evolve", "run", "-c", str(config), "--out", str(run)]) == 0
    pop = open_population(None, run, create=False)
    workers = {i["worker"] for i in pop.individuals().values()}
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers), workers
    ids = [e["id"] for e in events(run, "scored")]
    assert len(ids) == len(set(ids)) == 3 + 4 + 1 + (2 if search != "task_arithmetic" else 0)
    logs = "".join(p.read_text() for p in sorted((run / "workers").glob("worker-*.log")))
    assert "error" not in logs


def test_a_search_over_weights_needs_two_seeds(in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path],
                                               capsys: Any) -> None:
    config = write_config(in_tmp, tiny_model, seeds, seeds=[str(seeds["skill_units"])])
    assert main(["evolve", "run", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: search cmaes combines the seeds") and not (in_tmp / "runs").exists()
    # a seed folder that is not there is said first (it was "needs at least 2 (got 1)", the typo unnamed)
    config = write_config(in_tmp, tiny_model, seeds, seeds=[str(in_tmp / "skill_unit")])
    assert main(["evolve", "run", "-c", str(config)]) == 2
    assert "skill_unit: adapter folder not found" in capsys.readouterr().err


def test_a_crash_while_breeding_keeps_the_stored_cmaes_children(in_tmp: Path, tiny_model: dict[str, Path],
                                                                seeds: dict[str, Path]) -> None:
    """Children stored before a crash (their generation's list not yet written) keep their draws; the rest are
    asked again, and nothing else of the crashed attempt is kept (the sampler's state is the children)."""
    from agentlab.core.runs import RunDir
    from agentlab.core.search.planners import Proposal
    from agentlab.evolve.run import _make_child, breed
    from agentlab.evolve.search import cma_ask
    from agentlab.evolve.worker import evolve_loop

    cfg = EvolveConfig.model_validate({"seeds": [str(seeds[n]) for n in SEEDS], "population": 5, "elite": 1})
    run_dir = RunDir(in_tmp / "RUN", "evolve")
    run_dir.path.mkdir()
    pop = open_population(None, run_dir.path, create=True)
    first = cma_ask(cfg, pop.individuals(), [], 3, 0, 2)  # the crashed attempt: two asked, one child queued
    assert first[0]["weights"] == [0.5] * 3 and first[1]["weights"] != first[0]["weights"]
    child = _make_child(cfg, 0, "g0c0", first[0], run_dir.file("adapters", "gen_0", "g0c0"))
    evolve_loop(pop, 1)._commit(Proposal({}, {}, "cmaes", "g0c0", extra={"individual": child}), queued=True)
    new: list[dict[str, Any]] = []
    members = breed(cfg, pop, 0, run_dir, [], new)
    assert members == [*SEEDS, "g0c0", "g0c1"] and [ind["id"] for ind in new] == [*SEEDS, "g0c1"]
    assert pop.individuals()["g0c0"]["weights"] == first[0]["weights"] and "cma" in new[-1]
    assert new[-1]["weights"] == first[1]["weights"]  # the crashed attempt's next draw, not child 0's again
    assert len(pop.store.storage.get_all_studies()) == 1  # no study of the sampler's own


def test_without_validation_the_best_evolved_is_a_child_not_a_seed() -> None:
    """With no validation split the best evolved was the last generation's best, a seed when one led it: "best
    evolved (cmaes): skill_arithmetic", recommended as "best evolved". It is the best child of that generation; a seed
    only when no child could be scored, and then its relation says so."""
    from agentlab.evolve.run import final_picks, recommended

    cfg = EvolveConfig.model_validate({"seeds": list(SEEDS), "population": 5, "elite": 1,
                                       "task": {"validation_questions": 0}})
    ind = {m: {"state": "complete", "origin": "seed", "task": -1.0, "path": m} for m in SEEDS}
    ind |= {m: {"state": "complete", "origin": "cmaes", "task": t, "path": m}
            for m, t in (("g0c0", -1.5), ("g0c1", -1.2), ("g1c0", -1.4), ("g1c1", -1.3))}

    def gen(k: int, fitness: dict[str, float]) -> dict[str, Any]:
        rows = [{"id": m, "fitness": f} for m, f in fitness.items()]
        return {"generation": k, "members": rows, "best": max(rows, key=lambda r: r["fitness"])}

    history = [gen(0, {"skill_arithmetic": -1.0, "skill_geography": -2.0, "skill_units": -2.1, "g0c0": -1.5,
                       "g0c1": -1.2}),
               gen(1, {"skill_arithmetic": -1.0, "g1c0": -1.4, "g1c1": -1.3, "g0c1": -1.25})]
    assert history[-1]["best"]["id"] == "skill_arithmetic"  # the seed leads the last generation
    best, _ = final_picks(cfg, ind, history, {})
    assert best == "g0c1"  # the best child of the last generation (carried as it was)
    assert recommended(ind, best, {})["relation"] == "best evolved"
    for m in ("g0c0", "g0c1", "g1c0", "g1c1"):
        ind[m]["state"] = "fail"
    history = [gen(0, {"skill_arithmetic": -1.0, "skill_units": -2.1}), gen(1, {"skill_arithmetic": -1.0})]
    best, _ = final_picks(cfg, ind, history, {})
    assert best == "skill_arithmetic"
    assert recommended(ind, best, {})["relation"] == "seed: no child was scored"


def test_recommended_is_the_best_validation_of_the_best_and_the_baselines() -> None:
    from agentlab.evolve.run import recommended

    ind = {"g1c0": {"validation": -1.3, "path": "a"}, "ties4": {"validation": -1.2, "path": "t"},
           "uniform0": {"validation": -1.3, "path": "u"}}
    assert recommended(ind, "g1c0", {"ties": "ties4", "uniform": "uniform0"}) == {
        "id": "ties4", "relation": "baseline ties", "validation": -1.2, "path": "t"}
    assert recommended(ind, "g1c0", {"uniform": "uniform0"})["id"] == "g1c0"  # a tie stays with the best evolved


def test_cmaes_learns_across_generations_from_the_children_alone() -> None:
    """The sampler's state is the children (weights, the draw's attributes) and the history's fitness: asked anew
    each generation, CMA-ES moves towards the best blend as it would in one long study."""
    from agentlab.evolve.search import cma_ask

    cfg = EvolveConfig.model_validate({"seeds": ["a", "b", "c"], "population": 9, "elite": 1, "seed": 3})
    best = [0.9, -0.2, 1.1]
    individuals: dict[str, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    spread = []
    for k in range(8):
        specs = cma_ask(cfg, individuals, history, 3, k, 8)
        # gen 0 is the centre and random draws; from gen 1 on, CMA-ES's generation k - 1, told each generation
        assert {spec["cma"].get("cma:generation") for spec in specs} == ({None} if k == 0 else {k - 1})
        assert len({tuple(spec["weights"]) for spec in specs}) == 8  # eight distinct children
        assert cma_ask(cfg, individuals, history, 3, k, 8) == specs  # a breeding resumed after a crash draws alike
        rows = []
        for j, spec in enumerate(specs):
            cid = f"g{k}c{j}"
            individuals[cid] = {"id": cid, "generation": k, "origin": "cmaes", "trial": len(individuals),
                                "weights": spec["weights"], "cma": spec["cma"]}
            rows.append({"id": cid, "fitness": -sum((w - b) ** 2 for w, b in zip(spec["weights"], best, strict=True))})
        history.append({"generation": k, "members": rows})
        spread.append(sum(-r["fitness"] for r in rows) / len(rows))
    assert spread[-1] < spread[0] / 5, spread  # the generations close in on the best blend


def test_log_likelihoods_of_adapters_that_load_alone_but_not_together_raise_the_loads_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe loads the adapters together; when that fails it names the unreadable ones by loading each alone and
    loads the others again. When every one loads alone, that second load would fail the same way: the load's own
    error, not a recursion without end."""
    from agentlab.core.errors import AgentlabError
    from agentlab.evolve import score as S

    def load(*args: Any, **kwargs: Any) -> Any:
        raise AgentlabError("the adapters cannot be loaded together")

    monkeypatch.setattr(S, "load_causal_lm", load)
    monkeypatch.setattr(S, "logit_changes", lambda base, adapters, probe, device: dict.fromkeys(adapters, 1.0))
    settings = S.ScoreSettings(base_model="base", device="cpu", questions=[], seeds={}, max_tokens=8, rounds=1,
                               replace="x", decision="majority", probe="p", min_change=0.0)
    with pytest.raises(AgentlabError, match="together"):
        S._probe(settings, {"a": "A", "b": "B"}, {"fitness": [{"question": "q", "answer": "1"}]})
    changes, errors, logliks = S._probe(settings, {"a": "A", "b": "B"}, {})  # no split: the probe alone, as before
    assert changes == {"a": 1.0, "b": 1.0} and errors == {} and logliks == {}

"""What `agentlab evolve run` says at the end: fitness explained, why the recommendation, its test score beside the
best seed's and the best baseline's, and where validation and test disagree (the case of issue 35: the pick lost
on test to a seed and to task arithmetic)."""

from __future__ import annotations

from typing import Any

from agentlab.evolve.report import console_lines, fitness_line


def row(m: str, relation: str, correct: int, validation: float, best_minus: dict | None = None) -> dict[str, Any]:
    r = {"id": m, "relation": relation, "generation": 0, "correct": correct, "total": 90,
         "accuracy": round(correct / 90, 4), "ci": [0.1, 0.3], "validation": validation, "fitness_split": -2.3}
    if best_minus is not None:
        r["best_minus"] = best_minus
    return r


def results(rec: str = "g0c1") -> dict[str, Any]:
    validation = {"g0c1": -2.10, "s0": -2.40, "s1": -2.05, "ta3": -2.20, "ties1": -2.60}
    individuals = {m: {"path": f"RUN/adapters/{m}", "validation": v, "task": -2.3} for m, v in validation.items()}
    rows = [row("g0c1", "best", 17, -2.10),
            row("s0", "seed", 24, -2.40, {"mean": -0.0778, "ci": [-0.18, 0.03]}),
            row("s1", "seed", 15, -2.05, {"mean": 0.022, "ci": [-0.05, 0.09]}),
            row("ta3", "baseline task_arithmetic", 25, -2.20, {"mean": -0.0889, "ci": [-0.17, -0.01]}),
            row("ties1", "baseline ties", 12, -2.60, {"mean": 0.055, "ci": [-0.02, 0.13]})]
    relation = {"g0c1": "best evolved", "ta3": "baseline task_arithmetic"}[rec]
    return {"search": "cmaes", "score": "loglik", "questions": {"fitness": 36, "validation": 36, "test": 90},
            "individuals": individuals, "final": {"questions": 90, "rows": rows},
            "best": {"id": "g0c1", "fitness": -2.254, "task": -2.254, "validation": -2.10},
            "recommended": {"id": rec, "relation": relation, "path": f"RUN/adapters/{rec}"}}


def test_fitness_is_explained() -> None:
    line = fitness_line({"task": 1.0, "coop": 0.0, "novelty": 0.0}, "loglik", 36)
    assert line == ("fitness = 1 x task; task = the mean per-token log-likelihood of the gold answers on 36 fitness "
                    "questions, <= 0, nearer 0 is better; higher fitness is better")
    assert "0.5 x cooperation" in fitness_line({"task": 1.0, "coop": 0.5, "novelty": 0.2}, "accuracy", 10)
    plain = {"task": 1.0, "coop": 0.0, "novelty": 0.0}
    assert "greedy accuracy on 10 fitness questions, 0-1" in fitness_line(plain, "accuracy", 10)


def test_console_says_why_and_where_test_disagrees() -> None:
    lines = console_lines(results())
    assert lines[0] == ("best evolved (cmaes): g0c1, fitness -2.254 (task -2.254; task: the mean per-token "
                        "log-likelihood of the gold answers, <= 0, nearer 0 is better), validation -2.100")
    assert lines[1].startswith("recommended: g0c1 (best evolved): the highest validation log-likelihood (-2.100), "
                               "against task_arithmetic -2.200, ties -2.600; the candidates are the best evolved "
                               "and each baseline's pick (not the seeds)")
    assert "  recommended: g0c1 (best evolved) 17/90 = 0.189" in lines[3]
    assert lines[4].startswith("  best seed: s0 (seed) 24/90 = 0.267")
    assert lines[5].startswith("  best baseline: ta3 (baseline task_arithmetic) 25/90 = 0.278")
    assert lines[6] == ("validation and test disagree: the best seed s0 is below the recommendation on validation "
                        "log-likelihood (-2.400 vs -2.100) but above it on test by +7.8 points (paired 95% CI -3.0 "
                        "to +18.0; it includes 0)")
    assert lines[7] == ("validation and test disagree: the best baseline ta3 is below the recommendation on "
                        "validation log-likelihood (-2.200 vs -2.100) but above it on test by +8.9 points (paired "
                        "95% CI +1.0 to +17.0)")
    assert len(lines) == 8


def test_console_when_the_test_agrees() -> None:
    res = results()
    for r in res["final"]["rows"]:
        if r["id"] in ("s0", "ta3"):
            r["correct"], r["accuracy"] = 10, round(10 / 90, 4)
    lines = console_lines(res)
    assert lines[-1] == "validation and test agree: none of these scores higher than the recommendation on test"
    assert not any("disagree" in line for line in lines)


def test_console_when_a_baseline_is_recommended() -> None:
    res = results("ta3")
    res["individuals"]["ta3"]["validation"] = -2.0
    lines = console_lines(res)
    assert lines[1].startswith("recommended: ta3 (baseline task_arithmetic): the highest validation log-likelihood "
                               "(-2.000), against the best evolved -2.100, ties -2.600")
    labels = [line.split(":")[0].strip() for line in lines[3:]]
    assert labels[:4] == ["recommended", "best evolved", "best seed", "best other baseline"]


def test_the_default_fitness_is_the_seeds_task_cooperation_and_novelty() -> None:
    """Cooperation and novelty are on by default (weights measured by benchmarks/evolve_search.py --weights), so a
    default run asks the cooperation debate; 0 turns each off."""
    from agentlab.evolve.config import EvolveConfig

    weights = EvolveConfig().fitness
    assert weights.task == 1.0 and weights.coop == 0.1 and weights.novelty == 0.05
    line = fitness_line(weights.model_dump(), "loglik", 36)
    assert "0.1 x cooperation" in line and "0.05 x novelty" in line
    assert fitness_line({"task": 1.0, "coop": 0.0, "novelty": 0.0}, "loglik", 36).startswith("fitness = 1 x task;")


def test_a_generation_line_leaves_out_a_part_of_weight_0() -> None:
    """`--set fitness.coop=0` said "coop +0.00" on every generation, though the fitness line left it out."""
    from agentlab.evolve.report import generation_line

    best = {"id": "g1c0", "fitness": -4.153, "task": -4.173, "coop": 0.0, "novelty": 0.42}
    mean = {"fitness": -4.154}
    assert generation_line(1, best, mean, {"task": 1.0, "coop": 0.0, "novelty": 0.05}) == \
        "gen 1: best g1c0 fitness -4.153 (task -4.173, novelty 0.42); mean fitness -4.154"
    assert generation_line(1, {**best, "coop": 0.25}, mean, {"task": 1.0, "coop": 0.1, "novelty": 0.05}) == \
        "gen 1: best g1c0 fitness -4.153 (task -4.173, coop +0.25, novelty 0.42); mean fitness -4.154"


def test_a_tie_on_test_is_broken_by_validation_not_by_order() -> None:
    """"best seed" and "best baseline" took the first of the rows tied on test accuracy."""
    r = results()
    rows = {x["id"]: x for x in r["final"]["rows"]}
    rows["s1"].update(correct=24, accuracy=rows["s0"]["accuracy"])  # tied with s0, above it on validation
    rows["ties1"].update(correct=25, accuracy=rows["ta3"]["accuracy"], validation=-2.15)  # tied with ta3, above it
    lines = console_lines(r)
    assert lines[4].startswith("  best seed: s1 (seed) 24/90") and lines[5].startswith("  best baseline: ties1 ")


def test_the_report_says_the_rule_that_picked() -> None:
    """report.md said "the final pick is the child with the best validation score" with no validation split; and
    "1 generations"."""
    from agentlab.evolve.report import render_report

    r = {**results(), "population": 4, "generations": 1, "base_model": "m", "novelty": "answers", "seconds": 3.0,
         "fitness_weights": {"task": 1.0, "coop": 0.0, "novelty": 0.0}, "reference": {}, "history": []}
    for i in r["individuals"].values():
        i.update(generation=0, state="complete")
    text = " ".join(render_report(r, None).split())
    assert "1 generation after gen_0" in text and "the child with the best validation score" in text
    r["questions"] = {**r["questions"], "validation": 0}
    text = " ".join(render_report(r, None).split())
    assert "No validation split: the final pick is the child with the best fitness in the last generation" in text
    assert "best validation score" not in text


def test_a_seed_ahead_of_every_child_is_said_not_called_the_best_evolved() -> None:
    """Without a validation split the best evolved was the last generation's best, a seed when no child beat the
    seeds, and the console called it "best evolved". The best evolved is a child; the seed's lead is a note."""
    from agentlab.evolve.report import render_report

    r = results()
    r["individuals"]["s0"]["origin"] = "seed"
    r["individuals"]["g0c1"]["origin"] = "cmaes"
    r["history"] = [{"generation": 1, "best": {"id": "s0", "fitness": -2.0},
                     "members": [], "mean": {"fitness": -2.2, "task": -2.2, "coop": 0.0, "novelty": 0.0}}]
    lines = console_lines(r)
    assert lines[0].startswith("best evolved (cmaes): g0c1, fitness -2.254")
    assert lines[1] == ("note: no child beat the seeds on fitness: the seed s0 leads the last generation (fitness "
                        "-2.000, the best evolved g0c1 -2.254); seeds are not candidates for the recommendation")
    r.update(population=4, generations=1, base_model="m", novelty="answers", seconds=3.0, reference={},
             fitness_weights={"task": 1.0, "coop": 0.0, "novelty": 0.0})
    for i in r["individuals"].values():
        i.update(generation=0, state="complete")
    text = " ".join(render_report(r, None).split())
    assert "**Best: g0c1**" in text and "Note: no child beat the seeds on fitness: the seed s0 leads" in text
    r["best"] = {"id": "s0", "fitness": -2.0, "task": -2.0, "validation": -2.4}  # no child could be scored
    r["recommended"] = {"id": "s0", "relation": "seed: no child was scored", "path": "RUN/adapters/s0"}
    lines = console_lines(r)
    assert lines[0].startswith("no child was scored: the best is the seed s0, fitness -2.000") and \
        not lines[1].startswith("note:")
    assert "**Best (a seed: no child was scored): s0**" in " ".join(render_report(r, None).split())


def test_one_test_question_is_singular() -> None:
    """task.test_questions: 1 said "1 questions" on the console and in report.md."""
    from agentlab.evolve.report import headline

    r = results()
    r["final"]["questions"] = 1
    assert any(line.startswith("test split, 1 question no selection saw") for line in console_lines(r))
    assert " 1 test question that neither selection" in " ".join(headline(r))

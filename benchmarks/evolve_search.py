"""Search over blends of skill adapters: CMA-ES and the GA against random search and the merge baselines.

The three skill seeds on the built-in SmolLM2-135M (``adapters/skill_arithmetic``, ``_geography``, ``_units``:
``agentlab train-persona --data skill_X --out adapters/skill_X``) on the shipped mixed task (its fitness, validation
and test splits, ``agentlab/core/skilldata``). One ``agentlab evolve run`` per (method, seed), defaults otherwise
(per-token log-likelihood fitness, population 8, 4 generations, elite 2), no in-run baselines:

- ``ga``, ``cmaes``, ``random``, ``task_arithmetic`` (a grid of global scales), ``ties`` (density x scale grid): the
  same number of scored children, ``(population - 3) + generations x (population - elite)`` = 29 with the defaults;
- ``uniform``: the average of the seeds, one child.

``--weights task-only default`` runs every (method, seed) twice in the same invocation: with the fitness weights of
agentlab before cooperation and novelty were on by default (``coop: 0, novelty: 0``: the task alone) and with
today's defaults (``agentlab/evolve/config.py``: ``FitnessWeights``), and prints, per seed, the recommended child's
test accuracy and per-token log-likelihood under each (the target: the defaults never below the task alone on the
mean) and the line ``weights ratio: X`` (the defaults' mean test accuracy over the task alone's; their log-likelihood
gap beside it).

``uniform``, ``task_arithmetic`` and ``ties`` are fixed grids scored by a deterministic log-likelihood: the seed
changes nothing, so they run once (with the first seed) and that run stands for every seed.

Each run picks its child by the validation split and scores it and the seeds on the test split (greedy accuracy,
95% Wilson interval). The table: each method's test accuracy per seed and its mean, against the best single seed
adapter. Targets: the best method beats the best seed adapter by at least 5 points of accuracy, and CMA-ES is at
least as good as the GA. Run folders are kept under ``--out``: run again, finished runs are read, not repeated, and an
interrupted one resumes. The last line is ``ratio: X``: the best method's mean test accuracy over the best seed's.

    python benchmarks/evolve_search.py                              # 6 methods x 3 seeds
    python benchmarks/evolve_search.py --methods cmaes ga --seeds 0  # a subset
    python benchmarks/evolve_search.py --generations 1 --population 5  # a quick look (smaller budget)
    python benchmarks/evolve_search.py --methods cmaes --weights task-only default  # the fitness defaults
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("ga", "cmaes", "random", "uniform", "task_arithmetic", "ties")
# their children are a fixed grid and the fitness is a deterministic log-likelihood: the seed changes nothing, so one
# run (the first seed's) stands for every seed
DETERMINISTIC = ("uniform", "task_arithmetic", "ties")
# --weights: the fitness weights of a run; "default" is EvolveConfig's, "task-only" the defaults before cooperation and
# novelty were on (both 0)
WEIGHTS: dict[str, dict[str, float]] = {"default": {}, "task-only": {"coop": 0.0, "novelty": 0.0}}


def one_run(args: argparse.Namespace, method: str, seed: int, weights: str = "default") -> dict[str, Any]:
    from agentlab.core.runs import run_in_folder
    from agentlab.evolve import EvolveConfig, prepare, run

    folder = args.out / (f"{method}-seed{seed}" if weights == "default" else f"{weights}-{method}-seed{seed}")
    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())  # type: ignore[no-any-return]
    cfg = EvolveConfig.model_validate({
        "name": f"{method}-seed{seed}", "base_model": args.base_model, "seeds": [str(s) for s in args.adapters],
        "search": method, "baselines": [], "seed": seed, "population": args.population,
        "generations": args.generations, "device": args.device, "workers": args.workers,
        "fitness": WEIGHTS[weights], **({"task": args.task} if args.task else {})})
    resume = folder if (folder / "run.json").is_file() else None
    results, _ = run_in_folder("evolve", cfg, run, inputs=prepare(cfg), out=None if resume else folder,
                               resume=resume)
    return results  # type: ignore[no-any-return]


def recommended_row(results: dict[str, Any], seed: int) -> dict[str, Any]:
    """The recommended child's test row (its accuracy, CI, log-likelihood) and its fitness weights."""
    rows = {r["id"]: r for r in results["final"]["rows"]}
    pick = results.get("recommended", {}).get("id") or results["final"]["best"]
    row = rows[pick]
    return {"seed": seed, "id": pick, "accuracy": row["accuracy"], "ci": row["ci"], "loglik": row.get("loglik"),
            "weights": results.get("fitness_weights")}


def print_weights(compared: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str]) -> None:
    """Per method and seed, the recommended child's test accuracy and log-likelihood under each fitness weighting;
    the ratio of the last weighting's mean accuracy over the first's."""
    base, new = labels[0], labels[-1]
    print(f"\n## the recommended child on the test split: fitness weights {' vs '.join(labels)}")
    for label in labels:
        w = next(iter(compared[label].values()))[0]["weights"]
        print(f"{label}: {w}")
    print(f"{'method':10s} {'seed':>4s}  " + "  ".join(f"{lab + ' acc':>16s} {lab + ' loglik':>18s}"
                                                     for lab in labels))
    means: dict[str, list[float]] = {lab: [] for lab in labels}
    logliks: dict[str, list[float]] = {lab: [] for lab in labels}
    for method in compared[base]:
        for i, row in enumerate(compared[base][method]):
            cells = []
            for lab in labels:
                r = compared[lab][method][i]
                means[lab].append(r["accuracy"])
                if r["loglik"] is not None:
                    logliks[lab].append(r["loglik"])
                cells.append(f"{r['accuracy']:16.3f} {r['loglik'] if r['loglik'] is not None else float('nan'):18.4f}")
            print(f"{method:10s} {row['seed']:4d}  " + "  ".join(cells))
    mean = {lab: sum(v) / len(v) for lab, v in means.items()}
    ll = {lab: sum(v) / len(v) if v else float("nan") for lab, v in logliks.items()}
    spread = {lab: (min(v), max(v)) for lab, v in means.items()}
    for lab in labels:
        print(f"{lab}: mean test accuracy {mean[lab]:.3f} (seeds {spread[lab][0]:.3f}-{spread[lab][1]:.3f}), "
              f"mean test loglik {ll[lab]:.4f}")
    if new == base:  # one weighting: nothing to compare it with
        return
    ratio = mean[new] / mean[base] if mean[base] else (1.0 if mean[new] == mean[base] else float("inf"))
    print(f"weights ratio: {ratio:.3f} (mean test accuracy, {new} over {base}); loglik gap "
          f"{ll[new] - ll[base]:+.4f} (target: ratio >= 1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", nargs="+", type=Path,
                        default=[Path("adapters") / f"skill_{s}" for s in ("arithmetic", "geography", "units")])
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench-evolve-search")
    parser.add_argument("--weights", nargs="+", default=["default"], choices=list(WEIGHTS),
                        help="fitness weights to run each method under; two: compare them, seed by seed")
    parser.add_argument("--questions", type=int, nargs=3, default=None, metavar=("FITNESS", "VALIDATION", "TEST"),
                        help="split sizes (default: the config's 36 36 90)")
    args = parser.parse_args()
    args.task = (dict(zip(("fitness_questions", "validation_questions", "test_questions"), args.questions, strict=True))
                 if args.questions else None)
    missing = [str(a) for a in args.adapters if not Path(a).is_dir()]
    if missing:
        print(f"error: no adapter folder {missing[0]}; train it: agentlab train-persona --data skill_arithmetic "
              "--out adapters/skill_arithmetic (geography, units), or pass --adapters", file=sys.stderr)
        return 2
    table: dict[str, list[dict[str, Any]]] = {}
    seeds_test: dict[str, dict[str, Any]] = {}
    from agentlab.core.errors import AgentlabError

    compared: dict[str, dict[str, list[dict[str, Any]]]] = {}  # weights -> method -> per seed
    for weights, method in [(w, m) for m in args.methods for w in args.weights[::-1]]:
        if weights != "default":  # the comparison runs: the recommended child of each, kept apart from the table
            for seed in args.seeds[:1] if method in DETERMINISTIC else args.seeds:
                try:
                    results = one_run(args, method, seed, weights)
                except AgentlabError as exc:
                    print(f"error: {weights} {method} seed {seed}: {exc.message}\nrun the same command again to "
                          "resume", file=sys.stderr)
                    return 1
                compared.setdefault(weights, {}).setdefault(method, []).append(recommended_row(results, seed))
            continue
        for seed in args.seeds[:1] if method in DETERMINISTIC else args.seeds:
            try:
                results = one_run(args, method, seed)
            except AgentlabError as exc:  # e.g. the run folder is still held by another process
                print(f"error: {method} seed {seed}: {exc.message}\nrun the same command again to resume",
                      file=sys.stderr)
                return 1
            rows = {r["id"]: r for r in results["final"]["rows"]}
            best = rows[results["final"]["best"]]
            children = sum(1 for i in results["individuals"].values() if i.get("origin") != "seed")
            table.setdefault(method, []).append({"seed": seed, "best": best["id"], "accuracy": best["accuracy"],
                                                 "ci": best["ci"], "loglik": best.get("loglik"),
                                                 "children": children, "seconds": results["seconds"]})
            seeds_test.update({m: r for m, r in rows.items() if r["relation"] == "seed"})
            compared.setdefault("default", {}).setdefault(method, []).append(recommended_row(results, seed))
    if not table:  # only non-default weights ran: their recommended children, no method table
        print_weights(compared, args.weights)
        return 0
    print(f"{'adapter / method':18s} {'test accuracy (mean)':>21s}  per seed (95% CI)  children  s")
    for name, r in sorted(seeds_test.items()):
        print(f"{name:18s} {r['accuracy']:21.3f}  {r['ci'][0]:.3f}-{r['ci'][1]:.3f}")
    means = {}
    for method, runs in table.items():
        means[method] = sum(r["accuracy"] for r in runs) / len(runs)
        per = ", ".join(f"{r['accuracy']:.3f} ({r['ci'][0]:.2f}-{r['ci'][1]:.2f})" for r in runs)
        if method in DETERMINISTIC:
            per += " (deterministic: one run for every seed)"
        print(f"{method:18s} {means[method]:21.3f}  {per}  {runs[0]['children']}  "
              f"{sum(r['seconds'] for r in runs):.0f}")
    best_seed = max((r["accuracy"] for r in seeds_test.values()), default=0.0)
    best_method = max(means, key=lambda m: means[m])
    print(f"\nbest method: {best_method} {means[best_method]:.3f}; best seed adapter {best_seed:.3f}; "
          f"gap {100 * (means[best_method] - best_seed):+.1f} points (target >= +5)")
    if "cmaes" in means and "ga" in means:
        print(f"cmaes {means['cmaes']:.3f} vs ga {means['ga']:.3f} (target: cmaes >= ga)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps({"methods": table, "seeds": seeds_test, "means": means},
                                                      indent=1))
    if len(args.weights) > 1:
        print_weights(compared, args.weights)
    print(f"ratio: {means[best_method] / best_seed if best_seed else float('inf'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

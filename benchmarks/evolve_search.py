"""Search over blends of skill adapters: CMA-ES and the GA against random search and the merge baselines.

The three skill seeds on the built-in SmolLM2-135M (``adapters/skill_arithmetic``, ``_geography``, ``_units``:
``agentlab train-persona --data skill_X --out adapters/skill_X``) on the shipped mixed task (its fitness, validation
and test splits, ``agentlab/core/skilldata``). One ``agentlab evolve run`` per (method, seed), defaults otherwise
(per-token log-likelihood fitness, population 8, 4 generations, elite 2), no in-run baselines:

- ``ga``, ``cmaes``, ``random``, ``task_arithmetic`` (a grid of global scales), ``ties`` (density x scale grid): the
  same number of scored children, ``(population - 3) + generations x (population - elite)`` = 29 with the defaults;
- ``uniform``: the average of the seeds, one child.

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


def one_run(args: argparse.Namespace, method: str, seed: int) -> dict[str, Any]:
    from agentlab.core.runs import run_in_folder
    from agentlab.evolve import EvolveConfig, prepare, run

    folder = args.out / f"{method}-seed{seed}"
    if (folder / "results.json").is_file():
        return json.loads((folder / "results.json").read_text())  # type: ignore[no-any-return]
    cfg = EvolveConfig.model_validate({
        "name": f"{method}-seed{seed}", "base_model": args.base_model, "seeds": [str(s) for s in args.adapters],
        "search": method, "baselines": [], "seed": seed, "population": args.population,
        "generations": args.generations, "device": args.device, "workers": args.workers})
    resume = folder if (folder / "run.json").is_file() else None
    results, _ = run_in_folder("evolve", cfg, run, inputs=prepare(cfg), out=None if resume else folder,
                               resume=resume)
    return results  # type: ignore[no-any-return]


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
    args = parser.parse_args()
    missing = [str(a) for a in args.adapters if not Path(a).is_dir()]
    if missing:
        print(f"error: no adapter folder {missing[0]}; train it: agentlab train-persona --data skill_arithmetic "
              "--out adapters/skill_arithmetic (geography, units), or pass --adapters", file=sys.stderr)
        return 2
    table: dict[str, list[dict[str, Any]]] = {}
    seeds_test: dict[str, dict[str, Any]] = {}
    from agentlab.core.errors import AgentlabError

    for method in args.methods:
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
    print(f"ratio: {means[best_method] / best_seed if best_seed else float('inf'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

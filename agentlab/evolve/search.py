"""The search methods of `agentlab evolve run` other than the GA, and the merge baselines (docs/commands/evolve.md).

Each proposes children of all the seeds, one spec per child: ``{"method", "weights"}`` (an exact blend of the seeds
with those weights) or, for ties, ``{"method": "ties", "density", "scale", "weights"}``; cmaes specs also carry
``cma`` (the sampler's attributes of the draw: CMA-ES's state is the children and their generation's fitness).
"""

from __future__ import annotations

import math
import random
from typing import Any

from agentlab.core.search.study import KeptSampler, finished_trial
from agentlab.evolve.config import EvolveConfig


def budget(cfg: EvolveConfig, method: str, seeds: int, *, baseline: bool) -> int:
    """Children ``method`` scores: the search's budget, or ``baseline_budget`` as a baseline; uniform: one."""
    if method == "uniform":
        return 1
    return cfg.baseline_budget if baseline else cfg.children(seeds)


def _spread(low: float, high: float, n: int) -> list[float]:
    return [low] if n <= 1 else [low + (high - low) * i / (n - 1) for i in range(n)]


def fixed_spec(cfg: EvolveConfig, method: str, index: int, total: int, seeds: int) -> dict[str, Any]:
    """The ``index``-th of ``total`` children of a method that needs no feedback (uniform, task_arithmetic, ties,
    random)."""
    if method == "uniform":
        return {"method": method, "weights": [round(1 / seeds, 6)] * seeds}
    if method == "task_arithmetic":
        scale = _spread(*cfg.scale_range, total)[index]
        return {"method": method, "weights": [round(scale, 6)] * seeds}
    if method == "ties":
        densities = cfg.ties_density
        scales = _spread(*cfg.scale_range, math.ceil(total / len(densities)))
        scale = scales[index // len(densities)]
        return {"method": method, "density": densities[index % len(densities)], "scale": round(scale, 6),
                "weights": [round(scale, 6)] * seeds}
    if method == "random":
        rng = random.Random(f"{cfg.seed}:random:{index}")
        return {"method": method, "weights": [round(rng.uniform(*cfg.weight_range), 6) for _ in range(seeds)]}
    raise ValueError(f"no fixed specs for {method!r}")


def cma_ask(cfg: EvolveConfig, individuals: dict[str, dict[str, Any]], history: list[dict[str, Any]], seeds: int,
            generation: int, n: int) -> list[dict[str, Any]]:
    """``n`` CMA-ES children for ``generation``: the sampler sees every earlier CMA-ES child (its weights, the
    fitness it had in the generation it was born in, its draw's attributes) and is asked ``n`` times; the centre of
    ``weight_range`` first when no CMA-ES child exists yet."""
    import optuna

    low, high = cfg.weight_range
    space = {f"w{i}": optuna.distributions.FloatDistribution(low, high) for i in range(seeds)}
    seed = (cfg.seed * 1000 + generation) % (2**31)
    # popsize under 4 leaves CMA-ES one parent per generation (its weights divide by zero)
    sampler = KeptSampler(lambda s: optuna.samplers.CmaEsSampler(
        n_startup_trials=0, popsize=max(4, cfg.population - cfg.elite), seed=s,
        independent_sampler=optuna.samplers.RandomSampler(seed=s), warn_independent_sampling=False),
        ["maximize"], seed)
    fitness = {r["id"]: r["fitness"] for row in history for r in row["members"]
               if individuals.get(r["id"], {}).get("generation") == row["generation"]}
    born = [ind for ind in individuals.values() if ind.get("origin") == "cmaes" and ind["id"] in fitness]
    copies = []
    for number, ind in enumerate(sorted(born, key=lambda i: (i["generation"], i["trial"]))):
        value = fitness[ind["id"]]
        copy = finished_trial({f"w{i}": w for i, w in enumerate(ind["weights"])}, space,
                              [value] if value is not None and math.isfinite(value) else None,
                              system_attrs=ind.get("cma") or {})
        copy.number = number
        copies.append(copy)
    sampler.sync(copies)
    specs: list[dict[str, Any]] = []
    if n and not any(ind.get("origin") == "cmaes" for ind in individuals.values()):
        specs.append({"method": "cmaes", "weights": [round((low + high) / 2, 6)] * seeds, "cma": {}})
    while len(specs) < n:
        params, _, attrs = sampler.draw(space, lambda params: None)
        specs.append({"method": "cmaes", "weights": [min(high, max(low, round(params[f"w{i}"], 6)))
                                                     for i in range(seeds)], "cma": attrs})
    return specs

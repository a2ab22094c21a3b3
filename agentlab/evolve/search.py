"""The search methods of `agentlab evolve run` other than the genetic algorithm, and the merge baselines.

Each proposes children of all the seeds, one spec per child:

- ``cmaes``: CMA-ES over one blend weight per seed (Optuna's ``CmaEsSampler``; its state lives in the population
  store as the study ``evolve-cmaes``, so a resumed run sees it). Its first generation is the centre of
  ``weight_range`` (one enqueued point) and, as Optuna's CMA-ES does before any trial has finished, random draws
  for the rest; each generation's fitness is told back before the next is asked;
- ``random``: each weight drawn uniformly in ``weight_range`` (seeded per child, so a resume draws the same);
- ``uniform``: the average of the seeds (one child: a model soup);
- ``task_arithmetic``: the sum of the seeds' deltas times one global scale (Ilharco et al. 2023), a grid of scales
  over ``scale_range``;
- ``ties``: TIES merging (Yadav et al. 2023), a grid over ``ties_density`` x ``scale_range``.

A spec is ``{"method", "weights"}`` (an exact blend of the seeds with those weights) or, for ties,
``{"method": "ties", "density", "scale", "weights"}``; cmaes specs also carry ``search_trial`` (the Optuna trial to
tell). CMA-ES starts at the centre of ``weight_range`` with a step of a sixth of its width (Optuna's defaults).
"""

from __future__ import annotations

import math
import random
from typing import Any

from agentlab.evolve.config import EvolveConfig
from agentlab.evolve.population import Population

CMA_STUDY = "evolve-cmaes"


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


def _cma_study(cfg: EvolveConfig, pop: Population, seeds: int, generation: int) -> Any:
    import optuna

    seed = (cfg.seed * 1000 + generation) % (2**31)
    # popsize under 4 leaves CMA-ES one parent per generation (its weights divide by zero)
    sampler = optuna.samplers.CmaEsSampler(n_startup_trials=0, popsize=max(4, cfg.population - cfg.elite), seed=seed,
                                           independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                           warn_independent_sampling=False)
    return optuna.create_study(storage=pop.store.storage, study_name=CMA_STUDY, sampler=sampler,
                               direction="maximize", load_if_exists=True)


def cma_ask(cfg: EvolveConfig, pop: Population, seeds: int, generation: int, n: int,
            keep: set[int] | None = None) -> list[dict[str, Any]]:
    """``n`` CMA-ES children. Trials asked before a crash whose children were never stored (running, not in
    ``keep``) are failed first."""
    import optuna
    from optuna.trial import TrialState

    study = _cma_study(cfg, pop, seeds, generation)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in (keep or set()):
            study.tell(trial.number, state=TrialState.FAIL)
    low, high = cfg.weight_range
    if not study.get_trials(deepcopy=False):  # the centre, where CMA-ES starts; the rest of gen 0 is random
        study.enqueue_trial({f"w{i}": (low + high) / 2 for i in range(seeds)})
    space = {f"w{i}": optuna.distributions.FloatDistribution(low, high) for i in range(seeds)}
    specs = []
    for _ in range(n):
        trial = study.ask(space)
        specs.append({"method": "cmaes", "weights": [round(trial.params[f"w{i}"], 6) for i in range(seeds)],
                      "search_trial": trial.number})
    return specs


def cma_tell(cfg: EvolveConfig, pop: Population, seeds: int, generation: int,
             fitness: dict[int, float | None]) -> int:
    """Tell CMA-ES the fitness of each of its trials (``None``: the child failed); trials already told are skipped.
    Returns how many were told."""
    from optuna.trial import TrialState

    study = _cma_study(cfg, pop, seeds, generation)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    told = 0
    for number, value in fitness.items():
        if number not in running:
            continue
        if value is None or not math.isfinite(value):
            study.tell(number, state=TrialState.FAIL)
        else:
            study.tell(number, value)
        told += 1
    return told

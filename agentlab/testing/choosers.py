"""Scripted choosers for the LLM planner (``core.search.planners.Chooser``), for tests and benchmarks: they stand
where a model would, without one.

- ``FixedChooser(i)``: always candidate ``i`` (0: the classical planner, trial for trial).
- ``RandomChooser``: a uniform pick, seeded by the request (the placebo "LLM" of the planner benchmarks).
- ``SurrogateChooser``: the candidate a surrogate fitted on the finished trials ranks best (the "oracle" standing
  in for a good LLM): kernel ridge regression with an RBF kernel (its width by the median heuristic) on the
  parameters encoded from their Optuna distributions (numbers scaled to [0, 1], on a log scale where the
  distribution is; categories one-hot; a key a trial lacks encoded as absent), one model per objective; with
  several objectives, the mean of each objective's predicted rank. Below three finished trials it keeps
  candidate 0.
"""

from __future__ import annotations

import math
import random
from typing import Any

from agentlab.core.search.planners import Choice, ChoiceRequest


class FixedChooser:
    def __init__(self, index: int = 0, name: str = "fixed"):
        self.index, self.name = index, name
        self.calls = 0

    def choose(self, request: ChoiceRequest) -> Choice:
        self.calls += 1
        return Choice(min(self.index, len(request.candidates) - 1), "scripted")


class RandomChooser:
    name = "placebo"

    def choose(self, request: ChoiceRequest) -> Choice:
        return Choice(random.Random(request.seed).randrange(len(request.candidates)), "a uniform random pick")


def encode(params: dict[str, Any], distributions: dict[str, Any]) -> list[float]:
    """``params`` as numbers over ``distributions`` (every key of the space, in order)."""
    from optuna.distributions import CategoricalDistribution

    row: list[float] = []
    for key, dist in distributions.items():
        value = params.get(key)
        if isinstance(dist, CategoricalDistribution):
            row += [1.0 if value is not None and value == c and isinstance(value, bool) == isinstance(c, bool)
                    else 0.0 for c in dist.choices]
            continue
        if value is None:
            row += [0.0, 1.0]
            continue
        low, high = float(dist.low), float(dist.high)
        if dist.log:
            low, high, value = math.log(low), math.log(high), math.log(float(value))
        row += [(float(value) - low) / (high - low) if high > low else 0.0, 0.0]
    return row


def _fit_predict(x: list[list[float]], y: list[float], query: list[list[float]]) -> list[float]:
    import numpy as np

    xa, qa, ya = np.array(x), np.array(query), np.array(y, dtype=float)
    mean, scale = ya.mean(), ya.std() or 1.0
    yn = (ya - mean) / scale

    def distances(a: Any, b: Any) -> Any:
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    pairs = distances(xa, xa)[np.triu_indices(len(xa), 1)]
    width = float(np.median(pairs[pairs > 0])) if (pairs > 0).any() else 1.0  # the median heuristic

    def kernel(a: Any, b: Any) -> Any:
        return np.exp(-distances(a, b) / width)

    alpha = np.linalg.solve(kernel(xa, xa) + 0.05 * np.eye(len(xa)), yn)
    return list(kernel(qa, xa) @ alpha * scale + mean)


class SurrogateChooser:
    name = "oracle"

    def choose(self, request: ChoiceRequest) -> Choice:
        history = [(p, v) for p, v in request.history if all(math.isfinite(x) for x in v)]
        if len(history) < 3:
            return Choice(0, "too few trials for a surrogate")
        keys: dict[str, Any] = {}
        for params in [p for p, _ in history] + request.candidates:
            keys.update(request.distributions(params))
        x = [encode(p, keys) for p, _ in history]
        query = [encode(c, keys) for c in request.candidates]
        ranks = [0.0] * len(query)
        for i, direction in enumerate(request.directions):
            predicted = _fit_predict(x, [v[i] for _, v in history], query)
            order = sorted(range(len(query)), key=lambda j: -predicted[j] if direction == "maximize" else predicted[j])
            for rank, j in enumerate(order):
                ranks[j] += rank / len(request.directions)
        best = min(range(len(query)), key=lambda j: (ranks[j], j))
        return Choice(best, "the surrogate's best candidate")

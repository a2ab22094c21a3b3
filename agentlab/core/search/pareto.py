"""Pareto fronts and hypervolumes of results with several objectives, each maximised or minimised.

Thin wrappers over Optuna's own implementations (the non-dominated sort of its multi-objective studies and its WFG
hypervolume), so fronts agree with what an NSGA-II study reports. Points are rows of objective values in the order
of ``directions``; a point with a missing or non-finite value is never on the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Direction = Literal["maximize", "minimize"]


def _losses(points: Sequence[Sequence[float | None]], directions: Sequence[Direction]) -> list[list[float] | None]:
    """Each point as losses to minimise (maximised objectives negated); None for a point with a missing value."""
    rows: list[list[float] | None] = []
    for p in points:
        if len(p) != len(directions):
            raise ValueError(f"a point has {len(p)} values for {len(directions)} directions")
        values = [v for v in p if v is not None and math.isfinite(v)]
        if len(values) != len(p):
            rows.append(None)
            continue
        rows.append([-v if d == "maximize" else v for v, d in zip(values, directions, strict=True)])
    return rows


def pareto_front(points: Sequence[Sequence[float | None]], directions: Sequence[Direction]) -> list[int]:
    """Indices of the non-dominated points, in input order (duplicates of a front point are all on it)."""
    import numpy as np
    from optuna.study._multi_objective import _is_pareto_front

    losses = _losses(points, directions)
    valid = [i for i, row in enumerate(losses) if row is not None]
    if not valid:
        return []
    mask = _is_pareto_front(np.array([losses[i] for i in valid]), assume_unique_lexsorted=False)
    return [i for i, keep in zip(valid, mask, strict=True) if keep]


def hypervolume(points: Sequence[Sequence[float | None]], directions: Sequence[Direction],
                reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (a point worse than any of interest in every
    objective, in the objectives' own units); points that do not dominate the reference add nothing."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    ref = _losses([reference], directions)[0]
    if ref is None:
        raise ValueError("the reference point needs a finite value for every objective")
    rows = [r for r in _losses(points, directions) if r is not None and all(a < b for a, b in zip(r, ref, strict=True))]
    if not rows:
        return 0.0
    return float(compute_hypervolume(np.array(rows), np.array(ref)))

"""Pareto fronts and exact hypervolumes of results with several objectives (Optuna's are private modules).

Points are rows of objective values in the order of ``directions``; a point with a missing or non-finite value is
never on the front. Dominance is NSGA-II's (no worse in every objective, better in one; equal points are all on the
front); the hypervolume slices along the last objective (tens of points, two or three objectives).
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


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float | None]], directions: Sequence[Direction]) -> list[int]:
    """Indices of the non-dominated points, in input order (duplicates of a front point are all on it)."""
    losses = _losses(points, directions)
    valid = [(i, row) for i, row in enumerate(losses) if row is not None]
    return [i for i, row in valid if not any(_dominates(other, row) for _, other in valid)]


def dominated_counts(points: Sequence[Sequence[float | None]], directions: Sequence[Direction],
                     counted: Sequence[bool]) -> list[int]:
    """For each point, how many of the points ``counted`` keeps dominate it (a point with a missing value neither
    dominates nor is dominated: 0)."""
    losses = _losses(points, directions)
    judges = [row for row, c in zip(losses, counted, strict=True) if c and row is not None]
    return [0 if row is None else sum(_dominates(other, row) for other in judges) for row in losses]


def _volume(rows: list[list[float]], ref: list[float]) -> float:
    """The volume dominated by ``rows`` (losses, each below ``ref`` in every objective) up to ``ref``."""
    if not rows:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(r[0] for r in rows)
    rows = sorted(rows, key=lambda r: r[-1])
    total = 0.0
    for k, row in enumerate(rows):  # the slab from this point's last value to the next one's (or the reference)
        top = rows[k + 1][-1] if k + 1 < len(rows) else ref[-1]
        if top > row[-1]:
            total += (top - row[-1]) * _volume([r[:-1] for r in rows[:k + 1]], ref[:-1])
    return total


def hypervolume(points: Sequence[Sequence[float | None]], directions: Sequence[Direction],
                reference: Sequence[float]) -> float:
    """The volume dominated by ``points`` and bounded by ``reference`` (a point worse than any of interest in every
    objective, in the objectives' own units); points that do not dominate the reference add nothing."""
    ref = _losses([reference], directions)[0]
    if ref is None:
        raise ValueError("the reference point needs a finite value for every objective")
    rows = [r for r in _losses(points, directions) if r is not None and all(a < b for a, b in zip(r, ref, strict=True))]
    front = [rows[i] for i in pareto_front(rows, ["minimize"] * len(ref))]
    return float(_volume(front, ref))

"""Pareto fronts and hypervolumes with mixed directions, checked by hand."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("optuna")

from agentlab.core.search.pareto import dominated_counts, hypervolume, pareto_front  # noqa: E402


def test_front_with_mixed_directions_and_missing_values() -> None:
    # (speedup: maximize, perplexity: minimize)
    points = [(1.0, 10.0), (2.0, 12.0), (1.5, 11.0), (1.2, 12.5), (2.0, 12.0), (3.0, None), (0.9, 9.0)]
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 2, 4, 6]
    assert pareto_front([], ["maximize"]) == [] and pareto_front([(math.nan,)], ["maximize"]) == []


def test_dominated_counts_count_only_the_points_counted() -> None:
    # (speedup: maximize, perplexity: minimize); a point with a missing value neither dominates nor is dominated
    points = [(1.0, 1.0), (2.0, 0.5), (0.5, 2.0), (None, 0.0), (2.0, 0.5), (math.inf, 0.1)]
    directions = ["maximize", "minimize"]
    assert dominated_counts(points, directions, [True] * 6) == [2, 0, 3, 0, 0, 0]
    assert dominated_counts(points, directions, [True, False, True, True, True, True]) == [1, 0, 2, 0, 0, 0]
    assert dominated_counts([], directions, []) == []


def test_hypervolume_by_hand() -> None:
    directions = ["maximize", "minimize"]
    # reference (speedup 1, ppl 20): boxes [1,2]x[10,20] and [2,3]x[15,20] -> 10 + 5
    assert hypervolume([(2.0, 10.0), (3.0, 15.0)], directions, (1.0, 20.0)) == pytest.approx(15.0)
    # a dominated point and one outside the reference add nothing
    assert hypervolume([(2.0, 10.0), (3.0, 15.0), (1.5, 16.0), (0.5, 1.0)], directions, (1.0, 20.0)) == \
        pytest.approx(15.0)
    assert hypervolume([(0.5, 30.0)], directions, (1.0, 20.0)) == 0.0


def test_hypervolume_and_front_match_a_brute_force_on_random_points() -> None:
    """Against inclusion-exclusion over the boxes [point, reference] (exact for a handful of points) and the
    definition of dominance, in 2 to 4 objectives."""
    import itertools
    import random

    rng = random.Random(0)
    for d in (2, 3, 4):
        for _ in range(40):
            points = [[rng.random() for _ in range(d)] for _ in range(rng.randint(1, 7))]
            ref = [1.1] * d
            union = 0.0
            for k in range(1, len(points) + 1):
                for subset in itertools.combinations(points, k):
                    union += (-1) ** (k + 1) * math.prod(r - max(p[j] for p in subset) for j, r in enumerate(ref))
            assert hypervolume(points, ["minimize"] * d, ref) == pytest.approx(union)
            pairs = [[list(zip(q, p, strict=True)) for q in points] for p in points]
            front = [i for i, row in enumerate(pairs) if not any(
                all(a <= b for a, b in pair) and any(a < b for a, b in pair) for pair in row)]
            assert pareto_front(points, ["minimize"] * d) == front
            counts = dominated_counts(points, ["minimize"] * d, [True] * len(points))
            assert [i for i, n in enumerate(counts) if n == 0] == front

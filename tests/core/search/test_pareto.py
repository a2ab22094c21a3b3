"""Pareto fronts and hypervolumes with mixed directions, checked by hand."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("optuna")

from agentlab.core.search.pareto import hypervolume, pareto_front  # noqa: E402


def test_front_with_mixed_directions_and_missing_values() -> None:
    # (speedup: maximize, perplexity: minimize)
    points = [(1.0, 10.0), (2.0, 12.0), (1.5, 11.0), (1.2, 12.5), (2.0, 12.0), (3.0, None), (0.9, 9.0)]
    assert pareto_front(points, ["maximize", "minimize"]) == [0, 1, 2, 4, 6]
    assert pareto_front([], ["maximize"]) == [] and pareto_front([(math.nan,)], ["maximize"]) == []


def test_hypervolume_by_hand() -> None:
    directions = ["maximize", "minimize"]
    # reference (speedup 1, ppl 20): boxes [1,2]x[10,20] and [2,3]x[15,20] -> 10 + 5
    assert hypervolume([(2.0, 10.0), (3.0, 15.0)], directions, (1.0, 20.0)) == pytest.approx(15.0)
    # a dominated point and one outside the reference add nothing
    assert hypervolume([(2.0, 10.0), (3.0, 15.0), (1.5, 16.0), (0.5, 1.0)], directions, (1.0, 20.0)) == \
        pytest.approx(15.0)
    assert hypervolume([(0.5, 30.0)], directions, (1.0, 20.0)) == 0.0

"""Judging experiments against the goal: the metrics the objective speaks of (derived from the raw measurements and
the base model's, measured in the same run), constraint checks, the violation of an infeasible result, the Pareto
front and the recommended result.
"""

from __future__ import annotations

import math
from typing import Any

from agentlab.compress.objective import Goal
from agentlab.core.search.pareto import pareto_front


def derive(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """The goal's metrics of one measurement: ``speedup`` = decode tokens/s / the base's, ``compression`` = the base's
    size / this size, ``latency`` = ms per decoded token; the others as measured."""

    def ratio(a: Any, b: Any) -> float | None:
        return float(a) / float(b) if _num(a) and _num(b) and float(b) > 0 else None

    decode: Any = metrics.get("decode_tps")
    return {
        "speedup": ratio(decode, base.get("decode_tps")),
        "compression": ratio(base.get("size_mb"), metrics.get("size_mb")),
        "latency": ratio(1000.0, decode),
        "accuracy": _value(metrics.get("accuracy")), "perplexity": _value(metrics.get("perplexity")),
        "size": _value(metrics.get("size_mb")), "memory": _value(metrics.get("memory_mb")),
        "energy": _value(metrics.get("energy_kwh")), "co2e": _value(metrics.get("co2e_kg")),
    }


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value(value: Any) -> float | None:
    return float(value) if _num(value) else None


def check(goal: Goal, derived: dict[str, float | None], base: dict[str, float | None]) -> tuple[bool, float,
                                                                                              list[str]]:
    """(feasible, total relative violation, the constraints broken); a missing value breaks its constraint."""
    violation, broken = 0.0, []
    for c in goal.constraints:
        value, bound = derived.get(c.metric), c.bound(base.get(c.metric))
        if c.holds(value, base.get(c.metric)):
            continue
        broken.append(c.text or c.metric)
        violation += abs(value - bound) / max(abs(bound), 1e-12) if value is not None else 1e6
    return not broken, violation, broken


def objective_values(goal: Goal, derived: dict[str, float | None]) -> list[float | None]:
    return [derived.get(o.metric) for o in goal.objectives]


def front(goal: Goal, rows: list[dict[str, float | None]]) -> list[int]:
    """Indices of ``rows`` (derived metrics) on the Pareto front of the goal's objectives."""
    return pareto_front([objective_values(goal, r) for r in rows], [o.direction for o in goal.objectives])


def feasible_front(goal: Goal, records: list[dict[str, Any]]) -> list[int]:
    """Indices of ``records`` (each with ``derived``, ``feasible``, ``violation``) on the goal's front under
    constrained domination: a result that meets the constraints dominates one that does not, and of two that do not,
    the smaller violation wins. So the front is that of the feasible records, else that of the least violating ones,
    and it holds the recommendation (``choose_best``)."""
    keep = [i for i, r in enumerate(records) if r.get("feasible")]
    if not keep and records:
        least = min(_violation(r) for r in records)
        keep = [i for i, r in enumerate(records) if _violation(r) == least]
    return [keep[i] for i in front(goal, [records[i]["derived"] for i in keep])]


def _violation(record: dict[str, Any]) -> float:
    return math.inf if record.get("violation") is None else float(record["violation"])


def improves_on_base(goal: Goal, base: dict[str, Any] | None, records: list[dict[str, Any]]) -> bool:
    """Whether a feasible record of ``records`` is better than the base model on one of the goal's objectives (for
    one objective: a better value; for several: one the base does not dominate). False tells to keep the base when
    it meets the constraints; with no base measured, any feasible record counts."""
    feasible = [r for r in records if r.get("feasible")]
    if base is None or not base.get("derived"):
        return bool(feasible)
    ref = _rank(goal, base)
    return any(any(v < b for v, b in zip(_rank(goal, r), ref, strict=True)) for r in feasible)


def choose_best(goal: Goal, records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record to recommend among ``records`` (each with ``derived``, ``feasible``, ``violation``): the best
    feasible one by the first objective (the next objectives break ties), else the one closest to feasible."""
    if not records:
        return None
    feasible = [r for r in records if r["feasible"]]
    if not feasible:
        return min(records, key=lambda r: (r["violation"], _rank(goal, r)))
    return min(feasible, key=lambda r: _rank(goal, r))


def _rank(goal: Goal, record: dict[str, Any]) -> tuple[float, ...]:
    """The record's objective values as losses (maximised ones negated), a missing value the worst."""
    values = [record["derived"].get(o.metric) for o in goal.objectives]
    return tuple(math.inf if v is None else -v if o.direction == "maximize" else v
                 for o, v in zip(goal.objectives, values, strict=True))

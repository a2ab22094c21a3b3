"""The small genetic-algorithm config of test_evolve.py and test_evolve_stops.py (their seeds: conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_config(tmp: Path, tiny_model: dict[str, Path], made: dict[str, Path], **fields: Any) -> Path:
    # the genetic algorithm on greedy accuracy with the cooperation debate, as before the other searches came
    data: dict[str, Any] = {
        "base_model": str(tiny_model["hf"]), "seeds": [str(made[n]) for n in ("persona_a", "persona_b", "persona_c")],
        "population": 4, "generations": 1, "elite": 1, "batch": 1, "max_tokens": 3, "device": "cpu",
        "search": "ga", "baselines": [], "max_rank": 32, "fitness": {"task": 1.0, "coop": 0.5, "novelty": 0.1},
        "task": {"generate": "easy", "score": "accuracy", "fitness_questions": 3, "validation_questions": 0,
                 "test_questions": 2}}
    for key, value in fields.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    path = tmp / "evolve.yaml"
    path.write_text(json.dumps(data))
    return path

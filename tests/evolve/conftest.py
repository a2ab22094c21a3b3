"""The seed adapters test_evolve.py and test_evolve_stops.py share: three tiny ones and one whose weights are all zero
(test_evolve_search.py makes its own). Their config is evolve_config.write_config."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def seeds(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from agentlab.core.train.tiny import make_tiny_adapter

    root = tmp_path_factory.mktemp("seeds")
    made = {name: make_tiny_adapter(tiny_model["hf"], root / name, r=r, alpha=2 * r, seed=i)
            for i, (name, r) in enumerate([("persona_a", 4), ("persona_b", 4), ("persona_c", 2)])}
    made["zero"] = make_tiny_adapter(tiny_model["hf"], root / "zero", r=4, seed=9, scale=0.0)
    return made

"""`agentlab evolve blend` with one parent wrote a plain copy of it, recorded in lineage.json as a blend, exit 0:
refused, exit 2 (as `evolve run` refuses one seed). The Python API keeps one parent: the GA's child when its
tournament finds no second parent is that parent, mutated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from agentlab.cli import main  # noqa: E402
from agentlab.core.train import blend_adapters  # noqa: E402


@pytest.mark.parametrize("extra", [[], ["--weights", "1"], ["--mut", "0.1"]])
def test_blend_refuses_one_parent(extra: list[str], in_tmp: Path, seeds: dict[str, Path], capsys: Any) -> None:
    parent = seeds["persona_a"]
    assert main(["evolve", "blend", "--parents", str(parent), "--child", "out/one", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --parents: a blend needs at least 2 parents (got 1: {parent})",
                   "hint: give another parent; to copy an adapter, copy its folder"], err
    assert list(in_tmp.iterdir()) == []


def test_the_api_blends_one_parent_for_the_gas_mutated_child(tmp_path: Path, seeds: dict[str, Path]) -> None:
    result = blend_adapters([seeds["persona_a"]], [1.0], tmp_path / "kid", mut=0.1, mut_std=0.01, seed=1)
    lineage = json.loads((tmp_path / "kid" / "lineage.json").read_text())
    assert result.mutated and lineage["parents"] == [str(seeds["persona_a"])] and lineage["weights"] == [1.0]

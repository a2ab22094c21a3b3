"""The compress agent's knowledge base (its brief's facts), built from the workspace's measurements and sized by the
planner model's profile: the small profile's form stays within an eighth of the built-in model's context, the full
form carries every technique measured, the decision guide and the success criteria."""

from __future__ import annotations

from pathlib import Path

from agentlab.compress.knowledge import knowledge_base, technique_costs
from agentlab.compress.workspace import Workspace

BUILT_IN_CONTEXT = 4096  # n_ctx of the built-in SmolLM2 in configs/llm.local.yaml
CHARS_PER_TOKEN = 3  # at least, for English prose and figures in SmolLM2's tokenizer (about 4 measured)


def _workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.put("base", {"model_hash": "h", "experiment": None, "seconds": 90,
                    "metrics": {"decode_tps": 50.0, "accuracy": 0.4}})
    methods = ["magnitude", "wanda", "structured"]
    quants = ["int8_dynamic", "int8_weight_only", "torch_dynamic_int8", "gguf"]
    n = 0
    for prune in methods:
        for quant in quants:
            n += 1
            ws.put(f"k{n}", {"model_hash": "h", "seconds": 60 * n,
                             "experiment": {"prune": {"method": prune}, "quantize": {"method": quant}},
                             "metrics": {"decode_tps": 10.0 * n, "accuracy": 0.4 - 0.01 * n}})
    ws.put("r", {"model_hash": "h", "seconds": 600, "experiment": {"prune": {"method": "structured"},
                                                                     "recover": {"method": "lora"}},
                 "metrics": {"decode_tps": 80.0, "accuracy": 0.3}})
    return ws


def test_the_small_form_fits_the_built_in_models_context(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    short = knowledge_base("maximize speedup with <2% accuracy loss", 8, ws, "h", short=True)
    full = knowledge_base("maximize speedup with <2% accuracy loss", 8, ws, "h", short=False)
    assert len(short) <= BUILT_IN_CONTEXT // 8 * CHARS_PER_TOKEN, len(short)
    assert short.count("\n- ") <= 4 + 4 + 1  # four techniques, four measured rows
    assert len(full) > 2 * len(short)
    for part in ("Techniques", "Measured on this machine", "Decision guide", "Success criteria", "8 experiments"):
        assert part in full
    assert len(technique_costs(ws, "h")) == 13 and full.count(" run(s)") == 13 and short.count(" run(s)") == 4


def test_the_costs_are_the_measured_ones(tmp_path: Path) -> None:
    rows = {r["name"]: r for r in technique_costs(_workspace(tmp_path), "h")}
    lora = rows["prune structured + lora"]
    assert lora["runs"] == 1 and lora["speed"] == 80.0 / 50.0 and lora["minutes"] == 10.0
    assert abs(lora["accuracy"] - (0.3 - 0.4)) < 1e-12
    empty = knowledge_base("g", 8, Workspace(tmp_path / "none"), "h", short=True)
    assert "No technique measured on this model yet" in empty

"""The compress agent's knowledge base, the first user message of its brief: the techniques, their measured costs
for this model (the workspace's earlier experiments), a decision guide and the success criteria. A small planner
model (``short_tools``) gets the short form, bounded by ``tests/compress/test_knowledge.py``.
"""

from __future__ import annotations

import statistics
from typing import Any

from agentlab.compress.workspace import Workspace

TECHNIQUES_FULL = """Techniques (what each costs and buys):
- prune magnitude / wanda (sparsity 0.3-0.7, unstructured or 2:4): zeros weights; on CPU no speedup by itself, accuracy
  drops with sparsity (wanda keeps more than magnitude); 2:4 is the pattern GPUs accelerate.
- prune structured (mlp_keep, drop_layers): removes channels or whole layers: real speedup and smaller size, the
  largest accuracy damage; recovery (lora or distill, 20-50 steps) wins part of it back.
- quantize int8 (weight_only, dynamic, torch_dynamic_int8): about 2-4x smaller; speed depends on the kernel.
- quantize gguf (q8_0, q4_k_m, ...): llama.cpp's formats: much smaller and usually the fastest on CPU.
- recover lora / distill: training steps after pruning: costs minutes, buys back accuracy."""

TECHNIQUES_SHORT = """Techniques:
- gguf Q8_0/Q5_K_M/Q4_K_M: smaller, fastest on CPU, little damage.
- int8: smaller; speed depends on the kernel.
- prune magnitude/wanda: no CPU speedup alone.
- prune structured: faster, most damage; recover with lora or distill."""

GUIDE_FULL = """Decision guide:
- Start from the cheapest and least lossy: GGUF Q8_0 of the whole model, then smaller GGUF types while the
  constraints hold.
- Prune only where quantization alone misses the goal. Unstructured sparsity gives no speed on CPU by itself;
  structured pruning does, and costs accuracy: pair it with recovery (task: the lora or distill sub-agent) and
  compare step counts on the measured damage first.
- Recovery costs minutes per run: spend it on a prune whose speed would grow the front.
- An accuracy drop measured on few questions can be chance: settle it with evaluation / evaluate before dropping a
  direction.
- Read query_experiments and best_config before proposing: an experiment measured before is read back, not new."""

GUIDE_SHORT = """Guide: GGUF first; prune only if quantization misses the goal; structured prune needs recovery (task).
Check query_experiments before proposing."""


def technique_costs(workspace: Workspace, model_hash: str) -> list[dict[str, Any]]:
    """Per technique (prune and quantize methods, recovery), what it did to this model in the workspace's earlier
    experiments: runs, median speed and accuracy change against the base measurement, median minutes."""
    by: dict[str, list[dict[str, Any]]] = {}
    records = workspace.experiments(model_hash)
    base = next((r for r in records if r.get("experiment") is None), None)
    base_metrics = (base or {}).get("metrics") or {}
    for r in records:
        exp = r.get("experiment")
        if not exp:
            continue
        parts = [f"{k} {exp[k].get('method')}" for k in ("prune", "quantize") if exp.get(k)]
        name = " + ".join(parts) + (f" + {exp['recover'].get('method')}" if exp.get("recover") else "")
        by.setdefault(name, []).append(r)
    rows: list[dict[str, Any]] = []
    for name, group in by.items():
        metrics = [g.get("metrics") or {} for g in group]
        speed = [m["decode_tps"] / base_metrics["decode_tps"] for m in metrics
                 if m.get("decode_tps") and base_metrics.get("decode_tps")]
        acc = [m["accuracy"] - base_metrics["accuracy"] for m in metrics
               if m.get("accuracy") is not None and base_metrics.get("accuracy") is not None]
        secs = [float(g["seconds"]) for g in group if isinstance(g.get("seconds"), (int, float))]
        rows.append({"name": name, "runs": len(group), "speed": statistics.median(speed) if speed else None,
                     "accuracy": statistics.median(acc) if acc else None,
                     "minutes": statistics.median(secs) / 60 if secs else None})
    rows.sort(key=lambda r: (-int(r["runs"]), str(r["name"])))
    return rows


def _cost_line(row: dict[str, Any]) -> str:
    return (f"- {row['name']}: {row['runs']} run(s)"
            + (f", speed x{row['speed']:.2f}" if row["speed"] is not None else "")
            + (f", accuracy {row['accuracy']:+.3f}" if row["accuracy"] is not None else "")
            + (f", {row['minutes']:.1f} min" if row["minutes"] is not None else ""))


def measured_costs(workspace: Workspace, model_hash: str, limit: int | None = None) -> str:
    """``technique_costs`` in words (the ``limit`` most run); empty when nothing was measured."""
    shown = technique_costs(workspace, model_hash)[:limit]
    return ("Measured on this machine for this model (earlier runs):\n" + "\n".join(_cost_line(r) for r in shown)
            if shown else "")


def knowledge_base(goal: str, budget: int, workspace: Workspace, model_hash: str, short: bool) -> str:
    """The knowledge base in words (see the module docstring); ``short``: the small profile's form."""
    measured = (measured_costs(workspace, model_hash, 4 if short else None)
                or "No technique measured on this model yet: the costs above are the usual ones.")
    if short:
        success = f"Success: meet the goal ({goal}) and grow the feasible front in {budget} experiments."
    else:
        success = (f"Success criteria: the goal is {goal}. An experiment counts when it meets every constraint and "
                   f"grows the hypervolume of the feasible front (no other feasible experiment beats it on every "
                   f"objective). The budget is {budget} experiments; a measured one read back from the workspace "
                   "costs nothing but still counts. Recommend the front's best, never an experiment that breaks a "
                   "constraint.")
    return "\n\n".join([TECHNIQUES_SHORT if short else TECHNIQUES_FULL, measured, GUIDE_SHORT if short else GUIDE_FULL,
                        success])


__all__ = ["knowledge_base", "measured_costs", "technique_costs"]

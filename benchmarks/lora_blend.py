"""Exact LoRA blend (``agentlab evolve blend``) vs PEFT's ``add_weighted_adapter(combination_type="svd")``.

Three LoRA adapters on SmolLM2-135M's shapes (30 layers, all-linear: 210 modules, 192 to 1536 by 576 or 1536) with
ranks 16, 24 and 32 (alpha 2r) and random non-zero A and B factors, blended with weights 0.5, -0.3, 0.8:

- agentlab: ``blend_adapters`` on the three saved adapter folders: reads them, stacks the factors, QR on each side,
  SVD of the (at most 72 x 72) core, writes the child folder (config, safetensors, lineage.json). float64 on the CPU.
  The time includes reading the parents and writing the child.
- PEFT: ``add_weighted_adapter(..., combination_type="svd", svd_rank=72)`` on the three adapters already loaded in
  one PeftModel: per module the dense delta W of each adapter, their weighted sum, a full SVD of it (float32),
  truncated to rank 72. Loading and saving are not timed on this side.

svd_rank = 16 + 24 + 32 = 72 = agentlab's default rank, so both sides can be exact. Both results are checked against
the dense weighted delta W (float64): the relative Frobenius error over all modules (and the worst module). One
untimed warm-up per side, then ``--rounds`` alternating rounds; each side's time is the median. The last line is
``ratio: X`` with X = PEFT time / agentlab time (target >= 10, with agentlab's error no larger).

The base is a randomly initialised model from SmolLM2-135M's config (the weights do not enter a blend, only the
shapes; the config is written out here for when the built-in model's package is not installed); ``--real`` loads
the built-in weights with ``load_causal_lm("smollm2-135m")`` instead.

    python benchmarks/lora_blend.py                 # 3 rounds, 1 torch thread
    python benchmarks/lora_blend.py --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RANKS = (16, 24, 32)
WEIGHTS = (0.5, -0.3, 0.8)
NAMES = ["p16", "p24", "p32"]  # PEFT warns on names inside "lora_" (such as "a")
# SmolLM2-135M's config.json (the fields that set the shapes), for when its built-in package is not installed.
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
                "tie_word_embeddings": True, "rms_norm_eps": 1e-5, "rope_theta": 100000.0}


def build(args: argparse.Namespace, root: Path) -> tuple[Any, list[Path]]:
    """A PeftModel holding adapters p16, p24, p32 (those ranks, alpha 2r, all-linear, random factors), also saved
    under root/p16, root/p24, root/p32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from agentlab.core.errors import MissingPackage
    from agentlab.core.train import hf_model_folder, load_causal_lm

    if args.real:
        base, _ = load_causal_lm(args.model)
    else:
        try:
            config = AutoConfig.from_pretrained(hf_model_folder(args.model))
        except MissingPackage:  # the built-in model's package is not installed: its config, written out
            if args.model != "smollm2-135m":
                raise
            config = LlamaConfig(**SMOLLM2_135M)
        torch.manual_seed(args.seed)
        base = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = NAMES
    model = None
    for name, r in zip(names, RANKS, strict=True):
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
        if model is None:
            model = get_peft_model(base, cfg, adapter_name=name)
        else:
            model.add_adapter(name, cfg)
    assert model is not None
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "lora_A" in pname or "lora_B" in pname:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(str(root), selected_adapters=names)
    return model, [root / n for n in names]


def lora_layers(model: Any) -> dict[str, Any]:
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and NAMES[0] in m.lora_A}


def target_delta(model: Any) -> dict[str, Any]:
    import torch

    out = {}
    for name, layer in lora_layers(model).items():
        total = None
        for adapter, w in zip(NAMES, WEIGHTS, strict=True):
            a = layer.lora_A[adapter].weight.to(torch.float64)
            b = layer.lora_B[adapter].weight.to(torch.float64)
            d = w * layer.scaling[adapter] * (b @ a)
            total = d if total is None else total + d
        out[name] = total
    return out


def error(got: dict[str, Any], want: dict[str, Any]) -> tuple[float, float]:
    """(relative Frobenius error over all modules, worst module's relative error)."""
    import torch

    num = den = 0.0
    worst = 0.0
    for m, w in want.items():
        e = float(torch.linalg.norm(got[m].to(torch.float64) - w) ** 2)
        n = float(torch.linalg.norm(w) ** 2)
        num, den, worst = num + e, den + n, max(worst, math.sqrt(e / n))
    return math.sqrt(num / den), worst


def run_agentlab(parents: list[Path], child: Path) -> None:
    from agentlab.core.train import blend_adapters

    blend_adapters(parents, list(WEIGHTS), child, force=True)


def run_peft(model: Any) -> None:
    if "mix" in model.peft_config:
        model.delete_adapter("mix")
    model.add_weighted_adapter(NAMES, list(WEIGHTS), "mix", combination_type="svd", svd_rank=sum(RANKS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="Model whose shapes (config) the adapters take.")
    parser.add_argument("--real", action="store_true", help="Load the real weights (load_causal_lm) instead of a "
                        "random model from the config.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from agentlab.core.train.blend import dense_delta

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="agentlab-blend-bench-") as tmp:
        root = Path(tmp)
        model, parents = build(args, root)
        child = root / "child"
        layers = lora_layers(model)
        shapes = sorted({tuple(layer.base_layer.weight.shape) for layer in layers.values()})
        print(f"adapters: ranks {', '.join(map(str, RANKS))} (alpha 2r), all-linear, {len(layers)} modules of shapes "
              f"{shapes}; weights {', '.join(map(str, WEIGHTS))}; {args.threads} torch thread(s)")

        sides = {"agentlab": lambda: run_agentlab(parents, child), "peft": lambda: run_peft(model)}
        for fn in sides.values():  # warm-up, untimed
            fn()
        times: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                start = time.perf_counter()
                sides[side]()
                times[side].append(time.perf_counter() - start)
            print(f"round {r + 1}: agentlab {times['agentlab'][-1]:.2f}s, peft {times['peft'][-1]:.2f}s, "
                  f"ratio {times['peft'][-1] / times['agentlab'][-1]:.1f}")

        with torch.no_grad():
            want = target_delta(model)
            ours = dense_delta(child)  # the same module names as the PeftModel's
            peft = {m: layer.get_delta_weight("mix") for m, layer in layers.items()}
        ours_err, ours_worst = error(ours, want)
        peft_err, peft_worst = error(peft, want)

    a, p = statistics.median(times["agentlab"]), statistics.median(times["peft"])
    print(f"agentlab exact blend: {a:.2f}s (read 3 adapters, blend, write the child); relative error "
          f"{ours_err:.2e} (worst module {ours_worst:.2e})")
    print(f"peft svd (svd_rank {sum(RANKS)}): {p:.2f}s (in memory); relative error {peft_err:.2e} "
          f"(worst module {peft_worst:.2e})")
    print(f"error check: agentlab's error is {'no larger than' if ours_err <= peft_err else 'LARGER than'} PEFT's")
    print(f"ratio: {p / a:.1f}")


if __name__ == "__main__":
    main()

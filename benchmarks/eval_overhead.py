"""What does `agentlab eval` cost over lm-evaluation-harness's own CLI? The same task, model and adapter both ways.

    python benchmarks/eval_overhead.py                                  # smollm2-135m, a seeded random LoRA
    python benchmarks/eval_overhead.py --adapter adapters/persona_c --task agentlab_arithmetic_mc --limit 100

One `agentlab eval --model M --adapter A --tasks T` gives the base and the adapter side by side. lm-eval's CLI gives
the same table in two runs: ``lm_eval --model hf --model_args pretrained=DIR`` and ``...,peft=A``, on the model
written as a transformers folder by ``agentlab models export-hf`` and the task YAMLs written by ``agentlab eval tasks
--export`` (untimed set-up). Every run is a fresh process (imports, model load, task loading, scoring, writing the
results and samples), with the same batch size, device, dtype, limit and chat-template setting.

Scores must be identical: each row's metrics from agentlab's ``lm-eval/<row>/results.json`` equal lm-eval's, and
every per-sample log-likelihood equals lm-eval's. Rounds alternate (agentlab, lm-eval, ...) so drift on a busy
machine hits both alike; the best round of each is compared. The last line is ``ratio: X`` = agentlab's wall time /
lm-eval's for the same table (target <= 1.05); the ratio against lm-eval's adapter run alone is printed too.

Without ``--adapter``, a LoRA with seeded random weights (rank 8 on q_proj and v_proj) is made on the model: the cost
of scoring does not depend on what an adapter learned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run(command: list[str], log: Path) -> float:
    """Wall seconds of ``command`` (fresh process, offline); exits naming the log when it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code:
        sys.exit(f"error: {command[0]} exited with {code}; see {log}")
    return seconds


def random_adapter(model: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from agentlab.core.models.load import load_causal_lm

    if (out / "adapter_config.json").is_file():
        return out
    base, _ = load_causal_lm(model, device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.02)
    peft.save_pretrained(str(out))
    return out


def lm_eval_results(folder: Path) -> tuple[dict[str, Any], list[Any]]:
    (results,) = folder.rglob("results_*.json")
    samples = sorted(folder.rglob("samples_*.jsonl"))
    return json.loads(results.read_text())["results"], [json.loads(line)["filtered_resps"] for path in samples
                                                         for line in path.read_text().splitlines()]


def agentlab_results(folder: Path, row: str) -> tuple[dict[str, Any], list[Any]]:
    results = json.loads((folder / "lm-eval" / row / "results.json").read_text())["results"]
    samples = sorted((folder / "lm-eval" / row).glob("samples_*.jsonl"))
    return results, [json.loads(line)["filtered_resps"] for path in samples for line in path.read_text().splitlines()]


def same(a: tuple[dict[str, Any], list[Any]], b: tuple[dict[str, Any], list[Any]], task: str) -> tuple[bool, float]:
    """Whether the metrics are equal, and the largest per-sample log-likelihood difference."""
    metrics = {k: v for k, v in a[0][task].items() if "," in k}
    others = {k: v for k, v in b[0][task].items() if "," in k}
    flat_a = [float(x[0]) for item in a[1] for x in item]
    flat_b = [float(x[0]) for item in b[1] for x in item]
    gap = max((abs(x - y) for x, y in zip(flat_a, flat_b, strict=True)), default=0.0)
    return metrics == others and len(flat_a) == len(flat_b), gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", type=Path, help="a PEFT adapter on the model (default: a seeded random LoRA)")
    parser.add_argument("--task", default="agentlab_arithmetic_mc", help="a bundled task")
    parser.add_argument("--limit", type=int, default=50, help="items scored")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chat-template", action="store_true", help="apply the chat template on both sides")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-eval"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    adapter = (args.adapter or random_adapter(args.model, out / "adapter")).resolve()
    hf = out / "hf"
    if not (hf / "config.json").is_file():
        run([str(bin_dir / "agentlab"), "models", "export-hf", args.model, "--out", str(hf), "--force"],
            out / "export.log")
    tasks = out / "tasks"
    run([str(bin_dir / "agentlab"), "eval", "tasks", "--export", str(tasks), "--force"], out / "tasks.log")
    common = ["--limit", str(args.limit)]
    chat = ["--set", f"chat_template={str(args.chat_template).lower()}"]
    times: dict[str, list[float]] = {"agentlab": [], "lm-eval base": [], "lm-eval adapter": []}
    for r in range(args.rounds):
        ours = out / f"agentlab-{r}"
        times["agentlab"].append(run([
            str(bin_dir / "agentlab"), "eval", "--model", args.model, "--adapter", str(adapter), "--tasks", args.task,
            *common, "--batch-size", str(args.batch_size), "--set", "device=cpu", *chat, "--out", str(ours)],
            out / f"agentlab-{r}.log"))
        for row, model_args in (("base", f"pretrained={hf},dtype=float32"),
                                ("adapter", f"pretrained={hf},peft={adapter},dtype=float32")):
            theirs = out / f"lm-eval-{row}-{r}"
            times[f"lm-eval {row}"].append(run([
                str(bin_dir / "lm_eval"), "run", "--model", "hf", "--model_args", model_args, "--tasks", args.task,
                "--include_path", str(tasks), *common, "--batch_size", str(args.batch_size), "--device", "cpu",
                *(["--apply_chat_template"] if args.chat_template else []), "--log_samples", "--output_path",
                str(theirs)], out / f"lm-eval-{row}-{r}.log"))
        print(f"round {r}: agentlab {times['agentlab'][-1]:.1f} s; lm_eval base {times['lm-eval base'][-1]:.1f} s, "
              f"adapter {times['lm-eval adapter'][-1]:.1f} s", flush=True)
        for row, ours_row in (("base", "base"), ("adapter", adapter.name)):
            equal, gap = same(agentlab_results(ours, ours_row), lm_eval_results(out / f"lm-eval-{row}-{r}"),
                              args.task)
            if not equal or gap > 0:
                sys.exit(f"error: round {r}, {row}: scores differ (metrics equal: {equal}; largest per-sample "
                         f"log-likelihood difference {gap:.3g})")
    best = {k: min(v) for k, v in times.items()}
    both = best["lm-eval base"] + best["lm-eval adapter"]
    scores = agentlab_results(out / "agentlab-0", adapter.name)[0][args.task]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if "," in k and "stderr" not in k)
    print(f"{args.model} + {adapter.name} on {args.task} (limit {args.limit}, batch {args.batch_size}, chat template "
          f"{'on' if args.chat_template else 'off'}), best of {args.rounds} round(s); {os.cpu_count()} CPUs")
    print(f"identical scores: yes (every metric of both rows, every per-sample log-likelihood); adapter: {shown}")
    print(f"{'run':32} {'seconds':>8}")
    print(f"{'agentlab eval (base + adapter)':32} {best['agentlab']:8.1f}")
    print(f"{'lm_eval base':32} {best['lm-eval base']:8.1f}")
    print(f"{'lm_eval adapter':32} {best['lm-eval adapter']:8.1f}")
    print(f"{'lm_eval base + adapter':32} {both:8.1f}")
    print(f"ratio vs lm_eval's adapter run alone: {best['agentlab'] / best['lm-eval adapter']:.3f}")
    print(f"ratio: {best['agentlab'] / both:.3f}")


if __name__ == "__main__":
    main()

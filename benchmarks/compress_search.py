"""Compression search planners at the same budget on the same model: NSGA-II, random and (with --llm) the LLM planner.

    python benchmarks/compress_search.py --model smollm2-135m --iterations 6
    python benchmarks/compress_search.py --model smollm2-135m --iterations 6 --llm configs/llm.local.yaml

Each planner runs `agentlab compress` (through `run_compression`) with the goal "maximize speedup, minimize
perplexity" for ``--iterations`` experiments, all with one workspace, so an experiment two planners both propose is
measured once and read back by the second (the same numbers for both; the budget is counted in experiments). The
hypervolume of each planner's experiments is taken against the reference point (speedup 1.0, perplexity 2 x the
base model's): the area of (speedup, perplexity) space its experiments dominate beyond "as fast as the base, twice
as perplexed". Prints the table and ``ratio: X`` = the best planner's hypervolume / random's.

A planner whose run folder already holds results.json is read, not run again (delete ``OUT/<planner>`` to redo it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

GOAL = "maximize speedup, minimize perplexity"


def search(planner: str, args: argparse.Namespace) -> dict[str, Any]:
    from agentlab.compress import run_compression

    out = args.out / planner
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    fields: dict[str, Any] = {"planner": planner, "max_iterations": args.iterations, "seed": args.seed,
                              "workspace": str(args.out / "workspace"), "task_questions": args.questions}
    if planner == "llm":
        fields["llm"] = str(args.llm)
    overrides = [f"measure.max_eval_tokens={args.eval_tokens}", "measure.repeats=2"]
    start = time.perf_counter()
    results = run_compression(args.model, GOAL, overrides=overrides, out=out, resume=out if out.exists() else None,
                              **fields)
    results["bench_seconds"] = round(time.perf_counter() - start, 1)
    (out / "bench.json").write_text(json.dumps({"seconds": results["bench_seconds"]}))
    return results


def points(results: dict[str, Any]) -> list[tuple[float, float]]:
    done = [r for r in results["experiments"][1:] if r.get("state") == "done"]
    return [(r["derived"]["speedup"], r["metrics"]["perplexity"]) for r in done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--iterations", type=int, default=6, help="experiments per planner")
    parser.add_argument("--llm", type=Path, help="routing config with a `planner` route: adds the LLM planner")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compress"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions", type=int, default=20, help="task questions for accuracy")
    parser.add_argument("--eval-tokens", type=int, default=2048, help="tokens of the evaluation text")
    args = parser.parse_args()
    if args.llm is not None and not args.llm.is_file():
        sys.exit(f"error: --llm {args.llm}: not found")
    from agentlab.core.search.pareto import hypervolume, pareto_front

    planners = ["random", "nsga2"] + (["llm"] if args.llm else [])
    results = {p: search(p, args) for p in planners}
    base = results["random"]["experiments"][0]["metrics"]["perplexity"]
    reference = (1.0, 2.0 * base)
    directions = ["maximize", "minimize"]
    rows = []
    for planner, res in results.items():
        pts = points(res)
        front = pareto_front(pts, directions)
        rows.append((planner, len(pts), len(front), hypervolume(pts, directions, reference),
                     max((s for s, p in pts if p <= 1.1 * base), default=None), res["counts"]["reused"]))
    print(f"goal: {GOAL}; base perplexity {base:.2f}; reference (speedup 1.0, perplexity {reference[1]:.2f}); "
          f"{args.iterations} experiments each")
    print(f"{'planner':8} {'done':>5} {'front':>6} {'hypervolume':>12} {'best speedup, ppl<=1.1x':>24} {'reused':>7}")
    for planner, done, front, hv, best, reused in rows:
        shown = f"{best:.2f}" if best is not None else "-"
        print(f"{planner:8} {done:5d} {front:6d} {hv:12.3f} {shown:>24} {reused:7d}")
    random_hv = next(hv for p, _, _, hv, _, _ in rows if p == "random")
    best_hv = max(hv for p, _, _, hv, _, _ in rows if p != "random")
    print(f"ratio: {best_hv / random_hv:.3f}" if random_hv > 0 else "ratio: inf (random's hypervolume is 0)")


if __name__ == "__main__":
    main()

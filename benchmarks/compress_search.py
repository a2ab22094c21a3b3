"""Compression search planners at equal budget on the same model, over several seeds: the LLM planner (choosing among
NSGA-II's proposals) against NSGA-II, and the other planners and scripted choosers beside them.

    python benchmarks/compress_search.py --model smollm2-135m --llm configs/llm.local.yaml
    python benchmarks/compress_search.py --model smollm2-135m --planners nsga2,placebo,oracle --seeds 0

Planners (``--planners``; ``llm`` and ``agent`` only with ``--llm``): ``agent`` (the agent planner, NSGA-II its
guard), ``agent-suggest`` (the agent with a scripted model that runs NSGA-II's candidate 0: NSGA-II experiment for
experiment), ``nsga2+leads`` (NSGA-II with ``warm_start: true``: the knowledge base's leads, llama.cpp's GGUF types,
run first; ``agent`` gets the same warm start, so agent/(nsga2+leads) is what the agent adds), ``llm`` (the
``planner`` route choosing among 4 NSGA-II
proposals on at most 30% of the experiments, the defaults of ``llm_*``), ``placebo`` (the same chooser with a
uniform random pick), ``oracle`` (the same chooser picking the proposal a surrogate fitted on the finished
experiments ranks best, standing in for a good LLM), ``nsga2`` (the reference), ``tpe`` and ``random``.

Each (planner, seed) runs `agentlab compress` (``run_compression``) with the goal "maximize speedup, minimize
perplexity" for ``--iterations`` experiments (default 8), seeds ``--seeds`` (default 0,1,2), all with one workspace,
so an experiment two planners of a seed both propose is measured once and read back by the second (the same numbers
for both; the budget is counted in experiments). The record of the LLM's picks (``llm_picks.json`` in the workspace)
and the agent's notes (``agent_knowledge.json``) are removed before each search, so every search starts without
them; the agent still reads the workspace's measured figures per technique (its knowledge base: earlier searches'
experiments, NSGA-II's of the same seed included), which NSGA-II does not use. The hypervolume of a search's
experiments is taken against the reference point (speedup 1.0, perplexity 2 x the base model's).

Printed: per planner the experiments done, the front size and the hypervolume (mean +- sd over seeds); for each
planner the ratio of its hypervolume to NSGA-II's per seed as a geometric mean with min-max, a bootstrap 90%
interval and the seeds at or above 0.95 (a seed where NSGA-II's hypervolume is 0 has no ratio: it is counted and
named; the difference of the hypervolumes is printed for every seed, so none is dropped); agent/(nsga2+leads) too,
what the agent adds to the same warm start; what the LLM did (asked, answered, picks other than candidate 0, no
answers). The last line, ``ratio: X``, is agent/(nsga2+leads) when both ran, else llm/nsga2 (placebo/nsga2 without
--llm).

A planner whose run folder already holds results.json is read, not run again (delete ``OUT/<planner>-s<seed>`` to
redo it).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

GOAL = "maximize speedup, minimize perplexity"
PLANNERS = ["llm", "placebo", "oracle", "agent", "agent-suggest", "nsga2", "nsga2+leads", "tpe", "random"]
LEADS = ("nsga2+leads", "agent")  # searches with warm_start: true (the knowledge base's leads run first)


def search(planner: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from agentlab.compress import run_compression
    from agentlab.testing.agents import SuggestAgent, scripted_llm
    from agentlab.testing.choosers import RandomChooser, SurrogateChooser

    out = args.out / f"{planner}-s{seed}"
    timing = out / "bench.json"  # the search's wall seconds, summed over the invocations that ran it
    before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    if (out / "results.json").is_file():
        return {**json.loads((out / "results.json").read_text()), "bench_seconds": before}
    chooser = {"placebo": RandomChooser(), "oracle": SurrogateChooser()}.get(planner)
    kind = "llm" if chooser else "agent" if planner.startswith("agent") else planner.split("+")[0]
    fields: dict[str, Any] = {"planner": kind, "max_iterations": args.iterations,
                              "seed": seed, "workspace": str(args.out / "workspace"),
                              "task_questions": args.questions, "warm_start": planner in LEADS}
    if planner in ("llm", "agent"):
        fields["llm"] = str(args.llm)
    elif planner == "agent-suggest":  # candidate 0 every time, through the router as a model's calls go
        fields["llm"] = scripted_llm(SuggestAgent("run_experiment"))
    resume = out if out.exists() else None
    if resume is None:  # every search starts without a record of the model's picks or the agent's notes (a
        # resumed one keeps its own): the seeds stay independent
        for name in ("llm_picks.json", "agent_knowledge.json"):
            (args.out / "workspace" / name).unlink(missing_ok=True)
    overrides = [f"measure.max_eval_tokens={args.eval_tokens}", "measure.repeats=2"]
    start = time.perf_counter()
    results = run_compression(args.model, GOAL, overrides=overrides, out=None if resume else out, resume=resume,
                              chooser=chooser, **fields)
    results["bench_seconds"] = round(before + time.perf_counter() - start, 1)
    timing.write_text(json.dumps({"seconds": results["bench_seconds"]}))
    print(f"done: {planner:8} seed {seed}: {results['bench_seconds'] / 60:.1f} min", flush=True)
    return results


def points(results: dict[str, Any]) -> list[tuple[float, float]]:
    done = [r for r in results["experiments"][1:] if r.get("state") == "done"]
    return [(r["derived"]["speedup"], r["metrics"]["perplexity"]) for r in done]


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.3f}+-{statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def final_pair(planners: list[str]) -> tuple[str, str]:
    """The ratio of the last line: agent/(nsga2+leads) when both ran, else llm/nsga2 (placebo/nsga2 without it)."""
    if "agent" in planners and "nsga2+leads" in planners:
        return "agent", "nsga2+leads"
    return ("llm" if "llm" in planners else "placebo"), "nsga2"


def ratio_summary(ratios: list[float], undefined: list[int], ref: str = "nsga2", reps: int = 2000) -> str:
    """Geometric mean, min-max, bootstrap 90% interval over seeds, seeds at or above 0.95 (a ratio of 0 counts as
    a tiny positive number in the mean)."""
    note = f"; no ratio on seed(s) {undefined} ({ref}'s hypervolume 0)" if undefined else ""
    if not ratios:
        return "-" + note
    logs = [math.log(max(r, 1e-6)) for r in ratios]
    rng = random.Random(0)
    boot = sorted(math.exp(statistics.mean(rng.choices(logs, k=len(logs)))) for _ in range(reps))
    return (f"{math.exp(statistics.mean(logs)):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}; 90% CI "
            f"{boot[int(0.05 * reps)]:.3f}-{boot[int(0.95 * reps) - 1]:.3f}; {sum(r >= 0.95 for r in ratios)}/"
            f"{len(ratios)} seeds >= 0.95{note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--iterations", type=int, default=8, help="experiments per search (at least 8 for a claim)")
    parser.add_argument("--seeds", default="0,1,2", help="at least 3")
    parser.add_argument("--planners", default=",".join(PLANNERS), help="llm runs only with --llm")
    parser.add_argument("--llm", type=Path, help="routing config with a `planner` route: adds the LLM planner")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-compress"))
    parser.add_argument("--questions", type=int, default=20, help="task questions for accuracy")
    parser.add_argument("--eval-tokens", type=int, default=1024, help="tokens of the evaluation text")
    args = parser.parse_args()
    if args.llm is not None and not args.llm.is_file():
        sys.exit(f"error: --llm {args.llm}: not found")
    planners = [p for p in args.planners.split(",") if p not in ("llm", "agent") or args.llm is not None]
    if set(planners) - set(PLANNERS) or "nsga2" not in planners:
        sys.exit(f"error: planners must be among {PLANNERS} and include nsga2 (the reference)")
    from agentlab.core.search.pareto import hypervolume, pareto_front

    seeds = [int(s) for s in args.seeds.split(",")]
    results = {(p, s): search(p, s, args) for s in seeds for p in planners}
    directions = ["maximize", "minimize"]
    hv: dict[tuple[str, int], float] = {}
    print(f"\ngoal: {GOAL}; {args.iterations} experiments per search; seeds {args.seeds}; reference (speedup 1.0, "
          "perplexity 2 x the base model's)")
    print(f"{'planner':8} {'done':>6} {'front':>6} {'hypervolume':>16} {'reused':>7} {'min':>6}")
    for p in planners:
        done, front, reused, minutes = [], [], [], []
        for s in seeds:
            res = results[(p, s)]
            pts = points(res)
            reference = (1.0, 2.0 * res["experiments"][0]["metrics"]["perplexity"])
            hv[(p, s)] = hypervolume(pts, directions, reference)
            done.append(len(pts))
            front.append(len(pareto_front(pts, directions)))
            reused.append(res["counts"]["reused"])
            minutes.append(res.get("bench_seconds", 0.0) / 60)
        print(f"{p:8} {statistics.mean(done):6.1f} {statistics.mean(front):6.1f} "
              f"{mean_sd([hv[(p, s)] for s in seeds]):>16} {statistics.mean(reused):7.1f} {sum(minutes):6.1f}")
    print("hypervolume per seed (" + ", ".join(str(s) for s in seeds) + "): "
          + "; ".join(f"{p} " + ", ".join(f"{hv[(p, s)]:.1f}" for s in seeds) for p in planners))
    print()
    final = None
    pairs = [(p, "nsga2") for p in planners if p != "nsga2"]
    if "agent" in planners and "nsga2+leads" in planners:
        pairs.append(("agent", "nsga2+leads"))  # what the agent adds to the same warm start
    for p, ref in pairs:
        ratios = [hv[(p, s)] / hv[(ref, s)] for s in seeds if hv[(ref, s)] > 0]
        undefined = [s for s in seeds if hv[(ref, s)] <= 0]
        diffs = [hv[(p, s)] - hv[(ref, s)] for s in seeds]  # every seed, also those without a ratio
        print(f"{p}/{ref} hypervolume: {ratio_summary(ratios, undefined, ref)}; difference per seed "
              + ", ".join(f"{d:+.1f}" for d in diffs) + f" (mean {statistics.mean(diffs):+.1f})")
        if (p, ref) == final_pair(planners) and ratios:
            final = math.exp(statistics.mean(math.log(max(r, 1e-6)) for r in ratios))
    for p in [q for q in ("llm", "placebo", "oracle") if q in planners]:
        blocks = [results[(p, s)].get("llm_contribution") or {} for s in seeds]
        total = {k: sum(b.get(k, 0) for b in blocks) for k in ("trials", "asked", "chosen_by_llm", "differed",
                                                                 "no_answer")}
        print(f"{p}: of {total['trials']} experiments asked {total['asked']}, answered {total['chosen_by_llm']}, "
              f"picked other than candidate 0 {total['differed']}, no answer (fallbacks) {total['no_answer']}")
    for p in [q for q in ("agent", "agent-suggest") if q in planners]:
        blocks = [results[(p, s)].get("agent") or {} for s in seeds]
        keys = ("steps", "tool_calls", "invalid_tool_calls", "rejected_calls", "defaulted", "trials_by_agent",
                "trials_by_guard")
        per = [(b["tokens_per_trial"], b["seconds_per_trial"]) for b in blocks if b]
        print(f"{p}: " + ", ".join(f"{k} {sum(b.get(k, 0) for b in blocks)}" for k in keys)
              + (f"; per agent experiment {statistics.mean(t for t, _ in per):.0f} tokens and "
                 f"{statistics.mean(x for _, x in per):.1f} s of the model" if per else ""))
    if "agent-suggest" in planners:
        same = [s for s in seeds if [r["label"] for r in results[("agent-suggest", s)]["experiments"]]
                == [r["label"] for r in results[("nsga2", s)]["experiments"]]]
        print(f"agent-suggest is NSGA-II experiment for experiment in {len(same)} of {len(seeds)} seeds")
    print(f"\nrun folders under {args.out}")
    if final is not None:
        p, ref = final_pair(planners)
        print(f"ratio: {final:.3f} ({p}/{ref} hypervolume, geometric mean over seeds)")


if __name__ == "__main__":
    main()

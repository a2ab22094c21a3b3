"""Sample efficiency of the NAS planners: the LLM planner (the built-in SmolLM2-135M on llama.cpp, shown TPE's
candidate) against TPE and random search, at the same trial budget, over several seeds, on ETTh1.

Protocol: configs/nas_etth1.yaml (the Informer paper's multivariate ETTh1 setting: seq_len 96, label_len 48, the
12/4/4-month split) at pred_len 96. Every (planner, seed) search is one `agentlab nas` run folder under --out, run
--jobs at a time; an interrupted benchmark resumes its unfinished searches, and finished ones are only read.

Printed: each planner's best validation MSE and the test MSE of that trial after every 5 trials (mean +- standard
deviation over seeds), the planners' wall time, what the LLM planner did (plans applied, TPE fallbacks, how often
it took TPE's candidate, the keys it changed), and `ratio: X` = the LLM planner's final best test MSE / TPE's
(means over seeds).

    python benchmarks/nas_planners.py --data ../shared/data/ETTh1.csv --trials 15 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_search(planner: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search (resumed if a previous benchmark left it unfinished); its agent_state.json and wall time."""
    out = args.out / f"{planner}-s{seed}"
    state = out / "agent_state.json"
    done = out / "results.json"
    if done.is_file() and len(json.loads(state.read_text())["runs"]) >= args.trials:
        return {"state": json.loads(state.read_text()), "wall_s": json.loads((out / "wall.json").read_text())["s"]}
    cmd = [sys.executable, "-m", "agentlab.cli", "nas", "-c", str(args.config), "--data", str(args.data),
           "--planner", planner, "--max-iterations", str(args.trials), "--json",
           "--set", f"data.pred_len={args.horizon}", "--set", f"search.seed={seed}", "--set", f"train.seed={seed}"]
    if planner == "llm":
        cmd += ["--llm", str(args.llm)]
    cmd += ["--resume", str(out)] if (out / "run.json").is_file() else ["--out", str(out)]
    start = time.perf_counter()
    with open(args.out / f"{planner}-s{seed}.log", "a") as log:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{planner} seed {seed} failed (exit {proc.returncode}); see {out}.log")
    wall = time.perf_counter() - start
    (out / "wall.json").write_text(json.dumps({"s": wall}))
    print(f"done: {planner:6} seed {seed}: {wall / 60:.1f} min", flush=True)
    return {"state": json.loads(state.read_text()), "wall_s": wall}


def best_after(runs: list[dict[str, Any]], n: int) -> tuple[float, float] | None:
    """(best validation MSE, that trial's test MSE) over the first ``n`` trials of the budget (a trial interrupted
    and planned again does not count), among those that finished."""
    counted = [r for r in runs if r.get("counted", True)][:n]
    finished = [r for r in counted if r.get("val_mse") is not None and r.get("test_mse") is not None]
    if not finished:
        return None
    best = min(finished, key=lambda r: r["val_mse"])
    return best["val_mse"], best["test_mse"]


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}+-{sd:.3f}"


def llm_behaviour(states: list[dict[str, Any]]) -> list[str]:
    """What the LLM planner did over every seed: plans applied, fallbacks, TPE's candidate taken, keys changed."""
    plans = [r for s in states for r in s["runs"] if r.get("planner") not in ("base", None)]
    applied = [r for r in plans if r["planner"] == "llm"]
    fallbacks = [r for r in plans if r["planner"] != "llm"]
    origins = Counter(r.get("origin") or "?" for r in applied)
    keys = Counter(k for r in applied for k in (r.get("changes") or {}))
    sizes = Counter(len(r.get("changes") or {}) for r in applied)
    lines = [f"llm planner: {len(applied)}/{len(plans)} plans from the LLM, {len(fallbacks)} TPE fallbacks; "
             f"took TPE's suggestion as is in {origins['candidate']}, part of it in {origins['partial']}, its own "
             f"changes in {origins['own']}",
             "keys changed per plan: " + ", ".join(f"{n} keys x{c}" for n, c in sorted(sizes.items())),
             "keys the LLM changed (plans): " + ", ".join(f"{k} {n}" for k, n in keys.most_common())]
    reasons = [r.get("reasoning") for r in applied if r.get("reasoning")]
    if reasons:
        lines.append("sample reasoning: " + " | ".join(repr(x[:100]) for x in reasons[:3]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="path to ETTh1.csv")
    parser.add_argument("--trials", type=int, default=15, help="trial budget of every search (the base included)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--planners", default="llm,tpe,random")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--jobs", type=int, default=2, help="searches run at once")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "nas_etth1.yaml")
    parser.add_argument("--llm", type=Path, default=REPO / "configs" / "llm.local.yaml",
                        help="routing config of the llm planner (default: the built-in model on llama.cpp)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-nas-planners")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: not found (the ETT benchmark file, e.g. ../shared/data/ETTh1.csv)")
    args.data, args.out, args.llm = args.data.resolve(), args.out.resolve(), args.llm.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    planners, seeds = args.planners.split(","), [int(s) for s in args.seeds.split(",")]
    jobs = [(p, s) for s in seeds for p in planners]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: run_search(*job, args), jobs), strict=True))

    checkpoints = sorted({*range(5, args.trials + 1, 5), args.trials})
    print(f"\nETTh1 multivariate, pred_len {args.horizon}; {args.trials} trials per search (the base config first), "
          f"seeds {args.seeds}; best validation MSE so far / the test MSE of that trial, mean+-sd over seeds")
    print(f"{'planner':<8}" + "".join(f"{f'after {n}':>31}" for n in checkpoints) + f"{'wall (min)':>16}")
    finals: dict[str, float] = {}
    for p in planners:
        row = f"{p:<8}"
        for n in checkpoints:
            pairs = [b for s in seeds if (b := best_after(results[(p, s)]["state"]["runs"], n)) is not None]
            row += f" {mean_sd([v for v, _ in pairs]) + ' / ' + mean_sd([t for _, t in pairs]):>30}"
            if n == checkpoints[-1] and pairs:
                finals[p] = statistics.mean(t for _, t in pairs)
        walls = [results[(p, s)]["wall_s"] / 60 for s in seeds]
        print(row + f" {mean_sd(walls):>15}")
    if "llm" in planners:
        print()
        for line in llm_behaviour([results[("llm", s)]["state"] for s in seeds]):
            print(line)
        calls = [json.loads(line) for s in seeds if (args.out / f"llm-s{s}" / "llm_calls.jsonl").is_file()
                 for line in (args.out / f"llm-s{s}" / "llm_calls.jsonl").read_text().splitlines()]
        if calls:
            seconds = [c["latency_s"] for c in calls]
            print(f"planner LLM calls: {len(calls)}, {sum(seconds) / 60:.1f} min in all, "
                  f"{statistics.median(seconds):.1f} s median, {max(seconds):.1f} s longest; prompt tokens median "
                  f"{statistics.median(c['prompt_tokens'] or 0 for c in calls):.0f}")
    print(f"\nrun folders under {args.out}")
    if "llm" in finals and "tpe" in finals:
        print(f"ratio: {finals['llm'] / finals['tpe']:.3f} (llm final best test MSE / tpe's, means over seeds)")


if __name__ == "__main__":
    main()

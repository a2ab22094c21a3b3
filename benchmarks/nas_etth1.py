"""NAS on ETTh1 under the Informer paper's protocol: tpe vs random, each with the same fixed trial budget.

Protocol (Zhou et al., AAAI 2021): multivariate (M), seq_len 96, label_len 48, the standard 12/4/4-month split,
MSE and MAE on the scaled test set, for pred_len 24 and 96. Each (planner, horizon) search is one
`agentlab nas` run folder under --out; runs go --jobs at a time (one torch thread each) and resume if interrupted.
The table shows the naive forecast (repeat the last observed value), the base config (trial 0 of each search, the
same plain Informer for both planners), the best trial of each search (chosen by validation MSE), its ratio to the
base, and the published Informer figures; then what each best trial changed. Run again over finished searches, it
only prints the table.

    python benchmarks/nas_etth1.py --data ../shared/data/ETTh1.csv --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Informer's multivariate ETTh1 results. 24: Table 2 of the Informer paper (MSE 0.577, MAE 0.549). The Informer
# paper has no 96-step horizon; 96 is Informer as reproduced in the Autoformer paper (Wu et al., NeurIPS 2021, Table 1).
PAPER = {24: (0.577, 0.549, "Informer paper, Table 2"), 96: (0.865, 0.713, "Informer in Autoformer paper, Table 1")}
TARGETS = {24: 0.577, 96: 0.45}


def run_search(planner: str, horizon: int, args: argparse.Namespace) -> dict:
    out = Path(args.out) / f"{planner}-h{horizon}"
    cmd = [sys.executable, "-m", "agentlab.cli", "nas", "-c", str(args.config), "--data", str(args.data),
           "--planner", planner, "--max-iterations", str(args.trials), "--json",
           "--set", f"data.pred_len={horizon}", *sum((["--set", s] for s in args.set or []), [])]
    cmd += ["--resume", str(out)] if (out / "run.json").is_file() else ["--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(Path(args.out) / f"{planner}-h{horizon}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{planner} h={horizon} failed (exit {proc.returncode}); see {out}.log")
    result = json.loads(proc.stdout)
    result["wall_s"] = time.perf_counter() - start
    print(f"done: {planner:6} h={horizon:<3} best test MSE {result['best']['test_mse']:.4f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="path to ETTh1.csv")
    parser.add_argument("--trials", type=int, default=20, help="trial budget of every search")
    parser.add_argument("--planners", default="tpe,random")
    parser.add_argument("--horizons", default="24,96")
    parser.add_argument("--jobs", type=int, default=2, help="searches run at once")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "nas_etth1.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-nas-etth1")
    parser.add_argument("--set", action="append", help="extra config override for every search")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: not found (the ETT benchmark file, e.g. ../shared/data/ETTh1.csv)")
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    planners = args.planners.split(",")
    horizons = [int(h) for h in args.horizons.split(",")]
    jobs = [(p, h) for h in horizons for p in planners]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: run_search(*job, args), jobs), strict=True))

    print(f"\nETTh1 multivariate, seq_len 96, label_len 48; {args.trials} trials per search; "
          "test MSE / MAE on the scaled test set of the trial with the best validation MSE")
    columns = "".join(f"{p + ' best':>26}" for p in planners)
    print(f"{'horizon':<8}{'repeat last':>16}{'base':>16}{columns}{'Informer (published)':>24}")
    for h in horizons:
        base, naive = results[(planners[0], h)]["base"], results[(planners[0], h)]["naive_baseline"]
        row = f"{h:<8}" + "".join(f"{r['test_mse']:>8.3f} / {r['test_mae']:.3f}" for r in (naive, base))
        for p in planners:
            best = results[(p, h)]["best"]
            row += f"{best['test_mse']:>9.3f} / {best['test_mae']:.3f} ({best['test_mse'] / base['test_mse']:.2f}x)"
        mse, mae, source = PAPER[h]
        print(row + f"{mse:>14.3f} / {mae:.3f}")
    print()
    for (p, h), result in results.items():
        best, base = result["best"], result["base"]
        changed = {k: v for k, v in best["params"].items() if base["params"].get(k) != v}
        print(f"best {p} h={h}: {best['run_id']} ({best['planner']}), changes from base: "
              + (", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items())
                 or "none"))
    print()
    for h in horizons:
        best = min(results[(p, h)]["best"]["test_mse"] for p in planners)
        verdict = "met" if best < TARGETS[h] else "NOT met"
        print(f"target pred_len {h}: test MSE < {TARGETS[h]} -> best {best:.3f}: {verdict} "
              f"(published: {PAPER[h][2]})")
    wall = sum(r["wall_s"] for r in results.values())
    print(f"search time: {wall / 60:.1f} min in total over {len(jobs)} searches; run folders under {args.out}")
    for p in planners:
        ratios = [results[(p, h)]["best"]["test_mse"] / results[(p, h)]["base"]["test_mse"] for h in horizons]
        print(f"ratio {p}: best/base test MSE = {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()

"""How many rolling origins the final choice of a nas search should be checked on (issue 61): the guard that keeps
the naive forecast unless the ensemble of the trials beats it on at least three quarters (``ensemble.WIN_SHARE``) of
k consecutive blocks of validation windows (``agentlab.nas.ensemble``).

Synthetic series, written by this script (nothing here is tuned on outside data), --seeds of each kind:

- ``walk``: a random walk (3 daily channels): the last value is the best forecast there is.
- ``walk-vol``: a random walk whose volatility comes in spells (an exchange rate's look): still nothing beats the
  last value, but a calm validation stretch flatters a fitted model.
- ``ar``: mean-reverting AR(1) channels (phi 0.9): a linear model beats the last value by far.
- ``seasonal``: hourly daily cycles plus AR noise: the models beat both naive forecasts.

Each series gets one small `agentlab nas` search (linear family: its variants, per-channel weights and learning
rate; --trials trials; the naive forecasts join as reference members), kept under --out; the final choice is then
replayed from the stored forecasts for each k in --origins (0: no guard, the greedy ensemble as before) and scored on
the test windows, which no rule sees. Finished searches are only read, so a re-run prints the table again. Searches
of the ETTh1 benchmark (benchmarks/nas_literature.py's run folders) can be replayed beside them with --runs.

Printed per kind and k (and ``need``, the blocks the ensemble must win): the test MSE of the final model over the
naive last value's (geometric mean, the worst series, and how many series end more than 1% worse than it), and over
the greedy ensemble's (what the guard costs where models are better). The last line, ``ratio:``, is the walks'
geometric mean at the default k (``ensemble.ORIGINS``) over the same without the guard.

    python benchmarks/nas_origins.py --seeds 32 --held-out 16
    python benchmarks/nas_origins.py --seeds 32 --held-out 16 --runs /work/bench/lit96-duet
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from nas_selection import records, run_folders  # noqa: E402

from agentlab.nas.config import NAIVE_FAMILIES  # noqa: E402
from agentlab.nas.ensemble import ORIGINS, PREDICTIONS, REFERENCES, WIN_SHARE, EnsembleBuilder  # noqa: E402

KINDS = ("walk", "walk-vol", "ar", "seasonal")


def series(kind: str, seed: int, n: int = 1500) -> tuple[np.ndarray, str]:
    """``n`` steps of 3 channels of ``kind``, and the step ("D" or "h")."""
    rng = np.random.default_rng(1000 * KINDS.index(kind) + seed)
    if kind == "walk":
        return np.cumsum(rng.normal(size=(n, 3)), axis=0), "D"
    if kind == "walk-vol":
        spells = np.repeat(rng.choice([0.3, 1.0, 2.5], size=n // 50 + 1), 50)[:n, None]
        return np.cumsum(rng.normal(size=(n, 3)) * spells, axis=0), "D"
    values = np.zeros((n, 3))
    for t in range(1, n):
        values[t] = 0.9 * values[t - 1] + rng.normal(size=3)
    if kind == "ar":
        return values, "D"
    day = 2 * np.pi * np.arange(n)[:, None] / 24
    return 3 * np.sin(day + np.array([0.0, 1.0, 2.0])) + 0.5 * values, "h"


def write_csv(path: Path, values: np.ndarray, step: str) -> None:
    dates = np.datetime64("2015-01-01T00:00") + np.arange(len(values)) * np.timedelta64(1, step)
    lines = ["date,a,b,OT"] + [f"{str(d).replace('T', ' ')},{v[0]:.5f},{v[1]:.5f},{v[2]:.5f}"
                                for d, v in zip(dates, values, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def config(data: Path, step: str, trials: int, seed: int) -> dict[str, Any]:
    daily = step == "D"
    return {"name": data.stem,
            "data": {"path": str(data), "seq_len": 28 if daily else 48, "label_len": 0, "pred_len": 7 if daily else 12},
            "model": {"family": "linear", "revin": True},
            "train": {"epochs": 6, "patience": 2, "learning_rate": 0.01, "lr_decay": 0.9, "seed": seed},
            "search": {"planner": "tpe", "pruner": "none", "seed": seed, "max_iterations": trials,
                       "space": {"model.linear_variant": {"choices": ["linear", "nlinear", "dlinear"]},
                                 "model.individual": {"choices": [False, True]},
                                 "train.learning_rate": {"low": 1e-3, "high": 3e-2, "log": True}}}}


def search(kind: str, seed: int, args: argparse.Namespace) -> Path:
    """One search on one series (only read when it finished before)."""
    from agentlab.nas import run_nas_optimization

    run = args.out / f"{kind}-s{seed}"
    if (run / "results.json").is_file():
        return run
    args.out.mkdir(parents=True, exist_ok=True)
    values, step = series(kind, seed)
    data = args.out / f"{kind}-s{seed}.csv"
    write_csv(data, values, step)
    cfg = config(data, step, args.trials, seed)
    if (run / "run.json").is_file():
        run_nas_optimization(max_iterations=args.trials, resume=run)
    else:
        run_nas_optimization(max_iterations=args.trials, config=cfg, out=run)
    return run


def replay(run: Path, ks: list[int]) -> dict[str, Any] | None:
    """The final model's test MSE for each k, the naive last value's and the greedy ensemble's."""
    recs = records(run)
    refs = {f: run / REFERENCES / f for f in NAIVE_FAMILIES if (run / REFERENCES / f / PREDICTIONS).is_file()}
    naive_file = run / REFERENCES / "naive_last" / "metrics.json"
    if not naive_file.is_file():
        return None
    naive = float(json.loads(naive_file.read_text())["test_mse"])
    out: dict[str, Any] = {"naive": naive}
    builder = EnsembleBuilder(run)  # one per run: the Gram matrix is filled once for every k
    for k in ks:
        builder.origins = k
        block = builder.build(recs, family=lambda r: r.params.get("model.family", "linear"), references=refs)
        if block is None:
            return None
        out[k] = block["test_mse"]
        out[f"{k} kept"] = block["selection"]["kept"]
    return out


def row_line(label: str, row: dict[str, Any], ks: list[int]) -> str:
    """One series' line: the naive last value's test MSE, then each k's final model and what it was."""
    return f"{label}: naive {row['naive']:.4f}  " + "  ".join(
        f"k={k} {row[k]:.4f} ({'ens' if row[f'{k} kept'] == 'ensemble' else 'naive'})" for k in ks)


def geo(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="series of each kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"which kinds ({', '.join(KINDS)})")
    parser.add_argument("--trials", type=int, default=6, help="trials per search")
    parser.add_argument("--origins", default="0,2,4,6,8,12,16", help="the k to replay (0: no guard)")
    parser.add_argument("--held-out", type=int, default=0, help="print seeds below N and from N on apart (the "
                        "first set chose k, the second checks it); 0: one table")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="other nas run folders to replay (ETTh1)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-nas-origins")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("agentlab").setLevel(logging.WARNING)
    ks = sorted({int(k) for k in args.origins.split(",")} | {0, ORIGINS})
    table: dict[str, list[dict[str, Any]]] = {}
    for kind in args.kinds.split(","):
        for seed in range(args.seeds):
            row = replay(search(kind, seed, args), ks)
            if row is not None:
                row["seed"] = seed
                table.setdefault(kind, []).append(row)
                print(row_line(f"{kind} seed {seed}", row, ks), flush=True)
    for run in run_folders(args.runs):
        row = replay(run, ks)
        if row is not None:
            row["seed"] = None  # nothing was chosen on these: they belong with the held-out seeds
            table.setdefault("ETTh1", []).append(row)
            print(row_line(f"ETTh1 {run.name}", row, ks))
    groups = {"every seed": table}
    if args.held_out:
        groups = {f"seeds below {args.held_out} (what k and the share were chosen on)":
                  {k: [r for r in v if r["seed"] is not None and r["seed"] < args.held_out] for k, v in table.items()},
                  f"seeds {args.held_out} and up (held out)":
                  {k: [r for r in v if r["seed"] is None or r["seed"] >= args.held_out] for k, v in table.items()}}
    for title, group in groups.items():
        print(f"\n{title}: test MSE of the final model / the naive last value's (geometric mean, worst, series > 1% "
              "worse) and / the greedy ensemble's (k=0: no guard)")
        print(f"{'kind':10} {'k':>2} {'need':>4}  {'/ naive':>8} {'worst':>7} {'> 1%':>6}  {'/ greedy':>8} "
              f"{'naive kept':>10}")
        for kind, rows in group.items():
            if not rows:
                continue
            for k in ks:
                to_naive = [r[k] / r["naive"] for r in rows]
                to_greedy = [r[k] / r[0] for r in rows]
                kept = sum(r[f"{k} kept"] != "ensemble" for r in rows)
                print(f"{kind:10} {k:>2} {math.ceil(WIN_SHARE * k):>4}  {geo(to_naive):8.3f} {max(to_naive):7.3f} "
                      f"{sum(x > 1.01 for x in to_naive):>3}/{len(rows):<2}  {geo(to_greedy):8.3f} "
                      f"{kept:>6}/{len(rows)}")
    walks = [r for kind in ("walk", "walk-vol") for r in table.get(kind, [])]
    if walks:
        ratio = geo([r[ORIGINS] / r["naive"] for r in walks]) / geo([r[0] / r["naive"] for r in walks])
        print(f"ratio: {ratio:.3f}  (random walks: final model at k={ORIGINS} over the greedy ensemble without the "
              "guard, test MSE, geometric mean)")


if __name__ == "__main__":
    main()

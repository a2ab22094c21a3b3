"""`agentlab nas` over every model family on ETTh1 against the published fair table and, where installed, Nixtla's
neuralforecast Auto models with the same trial budget and the same split.

Protocol: configs/nas_ett96.yaml (multivariate, the standard 12/4/4-month split, test MSE/MAE on the scaled data with
every test window kept, the best trial chosen by validation MSE) at each horizon, TPE, --trials trials, one search per
(horizon, seed) with search.seed = train.seed = seed. Every search is an `agentlab nas` run folder under --out
(h{H}-s{seed}); an interrupted benchmark resumes its unfinished searches, finished ones are only read, so the script
can be re-run to print the table. The horizon-96 seed-0 search is exactly the done-when command of issue 23:

    agentlab nas -c configs/nas_ett96.yaml --data ../shared/data/ETTh1.csv --max-iterations 20

Printed per horizon: the best-by-validation test MSE and MAE (mean +- sd over seeds, and each seed's with its family
and lookback), the wall time per search, the fair published results (agentlab.nas.literature), the target, and
neuralforecast's Auto models when the package is installed (`pip install neuralforecast`; an optional extra of this
benchmark only, never of `make install`): each Auto model searched by Optuna with the same number of trials, on the
same standardised data and split (validation: the 4 months before the test months), its test MSE/MAE over every
test window. Without neuralforecast that part says so and the rest is printed.

    python benchmarks/nas_literature.py --data ../shared/data/ETTh1.csv --horizons 96,192 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TARGETS = {96: 0.37, 192: 0.41}  # issue 23: ETTh1 test MSE, best trial by validation
ETT_HOUR_ROWS = (12 + 4 + 4) * 30 * 24  # the rows the standard split uses
NF_MODELS = ("AutoDLinear", "AutoNLinear", "AutoPatchTST", "AutoiTransformer")


def run_search(horizon: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One search (resumed when a previous benchmark left it unfinished): its results.json and wall time."""
    out = args.out / f"h{horizon}-s{seed}"
    done, wall_file = out / "results.json", out / "wall.json"
    if done.is_file() and json.loads(done.read_text())["trials"] >= args.trials and wall_file.is_file():
        return {"results": json.loads(done.read_text()), "wall_s": json.loads(wall_file.read_text())["s"]}
    cmd = [sys.executable, "-m", "agentlab.cli", "nas", "-c", str(args.config), "--data", str(args.data),
           "--planner", args.planner, "--max-iterations", str(args.trials), "--json",
           "--set", f"data.pred_len={horizon}", "--set", f"search.seed={seed}", "--set", f"train.seed={seed}"]
    cmd += ["--resume", str(out)] if (out / "run.json").is_file() else ["--out", str(out)]
    before = json.loads(wall_file.read_text())["s"] if wall_file.is_file() else 0.0
    start = time.perf_counter()
    with open(args.out / f"h{horizon}-s{seed}.log", "a") as log:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"h{horizon} seed {seed} failed (exit {proc.returncode}); see {out}.log")
    wall = before + time.perf_counter() - start  # a resumed search adds to the time it had spent
    wall_file.write_text(json.dumps({"s": wall}))
    print(f"done: h{horizon} seed {seed}: {wall / 60:.1f} min", flush=True)
    return {"results": json.loads(done.read_text()), "wall_s": wall}


def mean_sd(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {sd:.{digits}f}"


# --------------------------------------------------------------------------- neuralforecast (optional)


def neuralforecast_rows(horizon: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each Auto model: Optuna over its default space with ``args.nf_trials`` samples, chosen on the validation months,
    tested on every test window of the standardised data; kept in --out as nf-h{H}-{model}-t{trials}.json."""
    import numpy as np
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast import auto as nf_auto

    frame = pd.read_csv(args.data, parse_dates=["date"]).iloc[:ETT_HOUR_ROWS]
    values = frame.drop(columns=["date"])
    train = values.iloc[: 12 * 30 * 24]
    scaled = (values - train.mean()) / train.std(ddof=0)  # the scaler agentlab fits: train part, population std
    long = scaled.assign(ds=frame["date"]).melt(id_vars="ds", var_name="unique_id", value_name="y")
    test_size = val_size = 4 * 30 * 24
    rows = []
    for name in args.nf_models.split(","):
        cache = args.out / f"nf-h{horizon}-{name}-t{args.nf_trials}.json"
        if cache.is_file():
            rows.append(json.loads(cache.read_text()))
            continue
        start = time.perf_counter()
        cls = getattr(nf_auto, name)
        multivariate = {"n_series": values.shape[1]} if name == "AutoiTransformer" else {}
        model = cls(h=horizon, backend="optuna", num_samples=args.nf_trials, **multivariate,
                    config=cls.get_default_config(h=horizon, backend="optuna", **multivariate))
        nf = NeuralForecast(models=[model], freq="h")
        # test_size rows hold test_size - horizon + 1 windows, one per step: every test window, as agentlab's
        cv = nf.cross_validation(long, val_size=val_size, test_size=test_size, n_windows=None, step_size=1,
                                 refit=False)
        err = cv[name].to_numpy() - cv["y"].to_numpy()
        row = {"model": name, "mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
               "windows": int(cv["cutoff"].nunique()), "wall_s": time.perf_counter() - start,
               "trials": args.nf_trials}
        study = getattr(nf.models[0], "results", None)  # the Optuna study of the Auto model's search
        if study is not None and hasattr(study, "best_trial"):
            row["best"] = {k: v for k, v in study.best_trial.user_attrs.get("ALL_PARAMS", study.best_params).items()
                           if isinstance(v, (int, float, str, bool)) or v is None}
        cache.write_text(json.dumps(row))
        rows.append(row)
        print(f"done: neuralforecast {name} h{horizon}: test MSE {row['mse']:.4f} ({row['wall_s'] / 60:.1f} min)",
              flush=True)
    return rows


# --------------------------------------------------------------------------- the table


def print_horizon(horizon: int, seeds: list[int], results: dict[tuple[int, int], dict[str, Any]],
                  nf_rows: list[dict[str, Any]] | None, nf_note: str, args: argparse.Namespace) -> float:
    """Print the horizon's table; return agentlab's mean test MSE as compared with neuralforecast (after as many
    trials as it had), or after every trial when it did not run."""
    from nas_planners import best_run  # benchmarks/ is on sys.path when a script in it runs

    from agentlab.nas.literature import TABLES

    print(f"\nETTh1 multivariate, horizon {horizon}: {len(seeds)} searches of their trials each (TPE), best trial "
          "by validation MSE; test MSE / MAE on the scaled data, every test window")
    mses, maes = [], []
    for s in seeds:
        r = results[(horizon, s)]
        best = r["results"]["best"]
        mses.append(best["test_mse"])
        maes.append(best["test_mae"])
        print(f"  seed {s}: test MSE {best['test_mse']:.4f}, MAE {best['test_mae']:.4f} ({best['family']}, lookback "
              f"{best['seq_len']}, val MSE {best['val_mse']:.4f}); {r['results']['trials']} trials in "
              f"{r['wall_s'] / 60:.1f} min")
    walls = [results[(horizon, s)]["wall_s"] / 60 for s in seeds]
    print(f"{'model':<28}{'lookback':>10}{'test MSE':>20}{'test MAE':>20}  protocol")
    print(f"{'agentlab nas (this run)':<28}{'searched':>10}{mean_sd(mses):>20}{mean_sd(maes):>20}  fair, "
          f"{mean_sd(walls, 1)} min per search")
    equal = None  # agentlab after as many trials as neuralforecast had, when that is fewer
    if nf_rows and args.nf_trials < args.trials:
        firsts = [best_run(json.loads((args.out / f"h{horizon}-s{s}" / "agent_state.json").read_text())["runs"],
                           args.nf_trials) for s in seeds]
        equal = [b["test_mse"] for b in firsts if b is not None]
        print(f"{f'agentlab nas, {args.nf_trials} trials':<28}{'searched':>10}{mean_sd(equal):>20}"
              f"{mean_sd([b['test_mae'] for b in firsts if b is not None]):>20}  fair, the first {args.nf_trials} "
              "trials of the same searches")
    for row in nf_rows or []:
        print(f"{'neuralforecast ' + row['model']:<28}{'searched':>10}{row['mse']:>20.3f}{row['mae']:>20.3f}  fair, "
              f"{row['trials']} trials in {row['wall_s'] / 60:.1f} min")
    if nf_rows is None:
        print(f"  neuralforecast: {nf_note}")
    for pub in TABLES.get(("ETTh1", horizon), []):
        mae = f"{pub.mae:.3f}" if pub.mae is not None else "-"
        print(f"{pub.model:<28}{pub.lookback:>10}{pub.mse:>20.3f}{mae:>20}  {pub.protocol}: {pub.source}")
    target = TARGETS.get(horizon)
    if target is not None and mses:
        met = statistics.mean(mses) <= target
        print(f"target: test MSE <= {target} (mean over seeds): {'met' if met else 'missed'} "
              f"({statistics.mean(mses):.3f}); seeds at or below it: {sum(m <= target for m in mses)}/{len(mses)}")
    ours = statistics.mean(equal if equal else mses)
    if nf_rows:
        best_nf = min(nf_rows, key=lambda r: r["mse"])
        print(f"against neuralforecast's best at {args.nf_trials} trials ({best_nf['model']}, {best_nf['mse']:.3f}): "
              f"agentlab {ours:.3f} at {args.nf_trials if equal else args.trials} trials, "
              f"{'as good or better' if ours <= best_nf['mse'] else 'worse'}")
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="path to ETTh1.csv")
    parser.add_argument("--horizons", default="96,192")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=20, help="trial budget of every search (the base included)")
    parser.add_argument("--planner", default="tpe")
    parser.add_argument("--jobs", type=int, default=1, help="searches run at once (each trains on one thread)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "nas_ett96.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-nas-literature")
    parser.add_argument("--neuralforecast", choices=["auto", "off"], default="auto",
                        help="auto: run neuralforecast's Auto models when the package is installed")
    parser.add_argument("--nf-models", default=",".join(NF_MODELS))
    parser.add_argument("--nf-trials", type=int, help="neuralforecast's trials per Auto model (default --trials); "
                        "when fewer, agentlab's best after as many trials is printed beside them")
    parser.add_argument("--nf-horizons", help="the horizons neuralforecast runs at (default --horizons)")
    args = parser.parse_args()
    args.nf_trials = args.nf_trials or args.trials
    if not args.data.is_file():
        sys.exit(f"error: {args.data}: not found (the ETT benchmark file, e.g. ../shared/data/ETTh1.csv)")
    args.data, args.out, args.config = args.data.resolve(), args.out.resolve(), args.config.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    horizons, seeds = [int(h) for h in args.horizons.split(",")], [int(s) for s in args.seeds.split(",")]
    jobs = [(h, s) for h in horizons for s in seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(jobs, pool.map(lambda job: run_search(*job, args), jobs), strict=True))

    nf_note = "off (--neuralforecast off)"
    use_nf = args.neuralforecast == "auto"
    if use_nf:
        try:
            import neuralforecast  # noqa: F401
        except ImportError:
            use_nf, nf_note = False, "not installed: `pip install neuralforecast` to compare its Auto models"
    nf_by_horizon: dict[int, list[dict[str, Any]]] = {}
    compared: dict[int, float] = {}  # agentlab's mean test MSE per horizon, at neuralforecast's trials when it ran
    for horizon in horizons:
        nf_rows, note = None, nf_note
        if use_nf and str(horizon) not in (args.nf_horizons or args.horizons).split(","):
            note = f"not run at this horizon (--nf-horizons {args.nf_horizons})"
        elif use_nf:
            try:
                nf_rows = neuralforecast_rows(horizon, args)
            except Exception as exc:  # an optional comparison: report it, print the rest
                note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if nf_rows:
            nf_by_horizon[horizon] = nf_rows
        compared[horizon] = print_horizon(horizon, seeds, results, nf_rows, note, args)
    print(f"\nrun folders under {args.out}")
    # ratio: agentlab's mean best test MSE at the first horizon over the strongest alternative measured or published
    # there: neuralforecast's best Auto model when it ran, else the best fair published result.
    first = horizons[0]
    ours = compared[first]
    nf_first = nf_by_horizon.get(first)
    if nf_first:
        ref, what = min(r["mse"] for r in nf_first), "neuralforecast's best Auto model"
        if args.nf_trials < args.trials:
            what += f", both at {args.nf_trials} trials"
    else:
        from agentlab.nas.literature import TABLES

        fair = [p.mse for p in TABLES.get(("ETTh1", first), []) if p.protocol == "fair"]
        ref, what = (min(fair), "the best fair published result") if fair else (TARGETS.get(first, ours), "the target")
    print(f"ratio: {ours / ref:.3f}  (agentlab's mean test MSE at horizon {first} / {what}, {ref:.3f})")


if __name__ == "__main__":
    main()

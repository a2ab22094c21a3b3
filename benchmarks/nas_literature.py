"""`agentlab nas` over every model family on ETTh1 against the published fair table and, where installed, Nixtla's
neuralforecast Auto models with the same trial budget and the same split.

Protocol: configs/nas_ett96.yaml (multivariate, the standard 12/4/4-month split, test MSE/MAE on the scaled data with
every test window kept, the best trial chosen by validation MSE) at each horizon, TPE, --trials trials, one search per
(horizon, seed) with search.seed = train.seed = seed. Every search is an `agentlab nas` run folder under --out
(h{H}-s{seed}); an interrupted benchmark resumes its unfinished searches, finished ones are only read, so the script
can be re-run to print the table. The horizon-96 seed-0 search is exactly the done-when command of issue 23:

    agentlab nas -c configs/nas_ett96.yaml --data ../shared/data/ETTh1.csv --max-iterations 20

Printed per horizon: per seed and as mean +- sd over seeds, the test MSE and MAE of the search's final model (the
greedy ensemble of its trials when results.json's ``final_model`` says "ensemble", else the best trial; a search
finished before ensembles has no ``ensemble`` block: "-" there, its final model is its best trial), of the best trial
by validation MSE (with its family and lookback) and of trial 0 (the base config); the wall time per search, the fair
published results (agentlab.nas.literature), the targets (issue 23: the best trial's mean test MSE; issue 38: the
final model below trial 0 in every seed), and the peers when asked for:

- neuralforecast's Auto models when the package is installed (`pip install neuralforecast`; an optional extra of
  this benchmark only, never of `make install`): each Auto model searched by Optuna with the same number of trials, on
  the same standardised data and split (validation: the 4 months before the test months), its test MSE/MAE over every
  test window. Without neuralforecast that part says so and the rest is printed.
- AutoGluon-TimeSeries with ``--autogluon PYTHON`` (the python of its own venv, never agentlab's; off by default):
  benchmarks/peers/autogluon_ett.py on the same data, split, scaling and test windows, its fit limited to agentlab's
  mean wall time per search at that horizon (``--ag-time-limit`` to set it), every ``--ag-stride``-th test window.

The last lines: ``final-model ratio:`` (the final models' mean test MSE at the first horizon over the reference) and
``ratio:``, unchanged: the best trial's mean test MSE there over neuralforecast's best Auto model when it ran, else the
best fair published result.

    python benchmarks/nas_literature.py --data ../shared/data/ETTh1.csv --horizons 96,192 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import math
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
FINAL_TARGETS = {96: 0.352, 192: 0.392}  # issue 61: the final model at or below DUET (h96) and PDF (h192)
DUET_PUBLISHED = {96: 0.352}  # DUET's own fair figure; issue 61: the family alone within 2% of it
ETT_HOUR_ROWS = (12 + 4 + 4) * 30 * 24  # the rows the standard split uses
NF_MODELS = ("AutoDLinear", "AutoNLinear", "AutoPatchTST", "AutoiTransformer")
AG_SCRIPT = REPO / "benchmarks" / "peers" / "autogluon_ett.py"  # run by AutoGluon's own python


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


# --------------------------------------------------------------------------- AutoGluon-TimeSeries (optional)


def autogluon_rows(horizon: int, seeds: list[int], time_limit: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    """benchmarks/peers/autogluon_ett.py run by ``args.autogluon`` (the python of AutoGluon's own environment) once
    per seed, its fit limited to ``time_limit`` seconds; kept in --out as ag-h{H}-s{seed}-t{limit}-k{stride}.json."""
    from agentlab.core.runs import atomic_write_json

    rows = []
    for seed in seeds:
        name = f"ag-h{horizon}-s{seed}-t{time_limit:.0f}-k{args.ag_stride}"
        cache = args.out / f"{name}.json"
        if cache.is_file():
            rows.append(json.loads(cache.read_text()))
            continue
        cmd = [str(args.autogluon), str(AG_SCRIPT), "--data", str(args.data), "--horizon", str(horizon),
               "--time-limit", f"{time_limit:.0f}", "--seed", str(seed), "--stride", str(args.ag_stride)]
        start = time.perf_counter()
        with open(args.out / f"{name}.log", "a") as log:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO,
                                  env={"OMP_NUM_THREADS": "1", **os.environ})  # one thread, as each search
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"exit {proc.returncode}; see {args.out / name}.log")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - start
        atomic_write_json(cache, row)
        rows.append(row)
        print(f"done: autogluon h{horizon} seed {seed}: test MSE {row['mse']:.4f} ({row['wall_s'] / 60:.1f} min)",
              flush=True)
    return rows


def ag_table_row(rows: list[dict[str, Any]], agentlab_min: float) -> str:
    """AutoGluon's line of the table: test MSE / MAE over its seeds, the windows it scored, its fit limit beside
    agentlab's mean wall time per search (``agentlab_min`` minutes: equal wall time when they match)."""
    r0 = rows[0]
    windows = "every test window" if r0["stride"] == 1 else \
        f"every {r0['stride']}th test window ({r0['windows']} of {r0['all_windows']})"
    fit = statistics.mean(r["fit_s"] for r in rows) / 60
    pred = statistics.mean(r["predict_s"] for r in rows) / 60
    return (f"{'AutoGluon-TimeSeries':<28}{'own':>10}{mean_sd([r['mse'] for r in rows]):>20}"
            f"{mean_sd([r['mae'] for r in rows]):>20}  fair, {windows}; fit limit {r0['time_limit_s'] / 60:.1f} min "
            f"(agentlab {agentlab_min:.1f} min a search; fit {fit:.1f} + predict {pred:.1f} min), {len(rows)} seed(s), "
            f"best {r0.get('best_model')}")


# --------------------------------------------------------------------------- the table


def _score(block: dict[str, Any] | None) -> tuple[float, float] | None:
    """(test MSE, test MAE) of a results.json block (best, base, ensemble), None when absent or unscored."""
    if not block or block.get("test_mse") is None or block.get("test_mae") is None:
        return None
    return float(block["test_mse"]), float(block["test_mae"])


def seed_models(results: dict[str, Any]) -> dict[str, Any]:
    """One finished search's models on test: ``best`` (the best trial by validation), ``trial0`` (the base config,
    trial 0), ``ensemble`` (results.json's ensemble block; None for a search finished before searches kept one) and
    ``final`` (the search's final model: the ensemble when there is one and ``final_model`` does not say "best", as
    agentlab's own readers take it, else the best trial), each as (test MSE, test MAE) or None; ``final_is`` says
    which the final model is."""
    ensemble = _score(results.get("ensemble"))
    best = _score(results.get("best"))
    use_ensemble = ensemble is not None and results.get("final_model", "ensemble") == "ensemble"
    return {"best": best, "trial0": _score(results.get("base")), "ensemble": ensemble,
            "final": ensemble if use_ensemble else best, "final_is": "ensemble" if use_ensemble else "best",
            "members": len((results.get("ensemble") or {}).get("members") or [])}


def _pair(score: tuple[float, float] | None) -> str:
    return "-" if score is None else f"{score[0]:.4f} / {score[1]:.4f}"


def _col(scores: list[tuple[float, float] | None], i: int) -> list[float]:
    return [s[i] for s in scores if s is not None]


def print_horizon(horizon: int, seeds: list[int], results: dict[tuple[int, int], dict[str, Any]],
                  nf_rows: list[dict[str, Any]] | None, nf_note: str, args: argparse.Namespace,
                  ag_rows: list[dict[str, Any]] | None = None, ag_note: str = "") -> tuple[float, float]:
    """Print the horizon's table; return agentlab's mean test MSE of the best trial as compared with
    neuralforecast (after as many trials as it had), or after every trial when it did not run, and the mean test MSE
    of the final models (the ensembles) after every trial."""
    from nas_planners import best_run  # benchmarks/ is on sys.path when a script in it runs

    from agentlab.nas.literature import TABLES

    print(f"\nETTh1 multivariate, horizon {horizon}: {len(seeds)} searches of their trials each (TPE); the final "
          "model (the greedy ensemble of the trials, chosen on validation), the best trial by validation MSE and "
          "trial 0 (the base config); test MSE / MAE on the scaled data, every test window")
    models = {s: seed_models(results[(horizon, s)]["results"]) for s in seeds}
    for s in seeds:
        r, m = results[(horizon, s)], models[s]
        best = r["results"]["best"]
        ens = "-" if m["ensemble"] is None else f"{_pair(m['ensemble'])} ({m['members']} members)"
        print(f"  seed {s}: final model ({m['final_is']}) {_pair(m['final'])}; ensemble {ens}; best trial "
              f"{_pair(m['best'])} ({best['family']}, lookback {best['seq_len']}, val MSE {best['val_mse']:.4f}); "
              f"trial 0 {_pair(m['trial0'])}; {r['results']['trials']} trials in {r['wall_s'] / 60:.1f} min")
    finals, bests, zeros = ([models[s][k] for s in seeds] for k in ("final", "best", "trial0"))
    mses = _col(bests, 0)
    walls = [results[(horizon, s)]["wall_s"] / 60 for s in seeds]
    n_ens = sum(models[s]["final_is"] == "ensemble" for s in seeds)
    print(f"{'model':<28}{'lookback':>10}{'test MSE':>20}{'test MAE':>20}  protocol")
    print(f"{'agentlab nas, final model':<28}{'searched':>10}{mean_sd(_col(finals, 0)):>20}"
          f"{mean_sd(_col(finals, 1)):>20}  fair, the ensemble in {n_ens}/{len(seeds)} searches, else the best trial")
    print(f"{'agentlab nas, best trial':<28}{'searched':>10}{mean_sd(mses):>20}{mean_sd(_col(bests, 1)):>20}  fair, "
          f"{mean_sd(walls, 1)} min per search")
    print(f"{'agentlab nas, trial 0':<28}{'base':>10}{mean_sd(_col(zeros, 0)):>20}{mean_sd(_col(zeros, 1)):>20}  "
          "fair, the base config")
    equal = None  # agentlab after as many trials as neuralforecast had, when that is fewer
    if nf_rows and args.nf_trials < args.trials:
        firsts = [best_run(json.loads((args.out / f"h{horizon}-s{s}" / "agent_state.json").read_text())["runs"],
                           args.nf_trials) for s in seeds]
        equal = [b["test_mse"] for b in firsts if b is not None]
        print(f"{f'agentlab nas, {args.nf_trials} trials':<28}{'searched':>10}{mean_sd(equal):>20}"
              f"{mean_sd([b['test_mae'] for b in firsts if b is not None]):>20}  fair, the best of the first "
              f"{args.nf_trials} trials of the same searches")
    for row in nf_rows or []:
        print(f"{'neuralforecast ' + row['model']:<28}{'searched':>10}{row['mse']:>20.3f}{row['mae']:>20.3f}  fair, "
              f"{row['trials']} trials in {row['wall_s'] / 60:.1f} min")
    if nf_rows is None:
        print(f"  neuralforecast: {nf_note}")
    if ag_rows:
        print(ag_table_row(ag_rows, statistics.mean(walls)))
    elif ag_note:
        print(f"  autogluon: {ag_note}")
    for pub in TABLES.get(("ETTh1", horizon), []):
        mae = f"{pub.mae:.3f}" if pub.mae is not None else "-"
        print(f"{pub.model:<28}{pub.lookback:>10}{pub.mse:>20.3f}{mae:>20}  {pub.protocol}: {pub.source}")
    target = TARGETS.get(horizon)
    if target is not None and mses:
        met = statistics.mean(mses) <= target
        print(f"target: test MSE <= {target} (mean over seeds, best trial): {'met' if met else 'missed'} "
              f"({statistics.mean(mses):.3f}); seeds at or below it: {sum(m <= target for m in mses)}/{len(mses)}")
    print(final_target_line(seeds, models))
    for line in issue61_lines(horizon, seeds, models, results):
        print(line)
    ours = statistics.mean(equal if equal else mses)
    if nf_rows:
        best_nf = min(nf_rows, key=lambda r: r["mse"])
        print(f"against neuralforecast's best at {args.nf_trials} trials ({best_nf['model']}, {best_nf['mse']:.3f}): "
              f"agentlab {ours:.3f} at {args.nf_trials if equal else args.trials} trials, "
              f"{'as good or better' if ours <= best_nf['mse'] else 'worse'}")
    final_mses = _col(finals, 0)
    return ours, statistics.mean(final_mses) if final_mses else math.nan


def issue61_lines(horizon: int, seeds: list[int], models: dict[int, dict[str, Any]],
                  results: dict[tuple[int, int], dict[str, Any]]) -> list[str]:
    """Issue 61's targets: the final model's mean test MSE at or below DUET's (h96) / PDF's (h192) published figure;
    the DUET family alone (trial 0, when the base config is DUET's reference) within 2% of DUET's own figure; and
    per seed what the rolling-origin guard kept."""
    lines = []
    finals = [models[s]["final"][0] for s in seeds if models[s]["final"] is not None]
    target = FINAL_TARGETS.get(horizon)
    if target is not None and finals:
        mean = statistics.mean(finals)
        lines.append(f"target (issue 61): final model's mean test MSE <= {target}: "
                     f"{'met' if mean <= target else f'missed by {mean / target - 1:.1%}'} ({mean:.4f})")
    duet = [models[s]["trial0"][0] for s in seeds if models[s]["trial0"] is not None
            and (results[(horizon, s)]["results"].get("base") or {}).get("family") == "duet"]
    published = DUET_PUBLISHED.get(horizon)
    if duet and published:
        mean = statistics.mean(duet)
        lines.append(f"target (issue 61): the duet family alone (trial 0, DUET's reference settings) within 2% of "
                     f"its published {published}: {'met' if mean <= published * 1.02 else 'missed'} ({mean:.4f}, "
                     f"{mean / published:.3f}x; seeds {', '.join(f'{v:.4f}' for v in duet)})")
    from agentlab.nas.ensemble import kept_naive

    blocks = [results[(horizon, s)]["results"].get("ensemble") or {} for s in seeds]
    kept = [(kept_naive(b) or "ensemble") if b.get("selection") else "-" for b in blocks]
    lines.append("final choice by seed (rolling-origin guard): " + ", ".join(f"seed {s} {k}" for s, k in
                                                                           zip(seeds, kept, strict=True)))
    return lines


def family_curves(out: Path, family: str, path: Path) -> int:
    """The learning curves of every ``family`` trial of the searches under ``out`` (validation MSE and training loss
    by epoch, one panel per horizon, a line per trial; each trial's test MSE in its label) as a PNG; how many."""
    import yaml
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from agentlab.core.runs import save_figure

    trials: dict[int, list[tuple[str, list[dict[str, float]], float]]] = {}
    for run in sorted(out.glob("h*-s*")):
        horizon, seed = run.name[1:].split("-s")
        for trial in sorted((run / "trials").glob("run_*")):
            try:
                used = yaml.safe_load((trial / "config_used.yaml").read_text())["model"]["family"]
                history = json.loads((trial / "history.json").read_text())
                metrics = json.loads((trial / "metrics.json").read_text())
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
                continue
            if used == family and history:
                trials.setdefault(int(horizon), []).append((f"s{seed} {trial.name}", history,
                                                            float(metrics.get("test_mse", math.nan))))
    if not trials:
        return 0
    fig = Figure(figsize=(6.5 * len(trials), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (horizon, rows) in enumerate(sorted(trials.items())):
        ax = fig.add_subplot(1, len(trials), i + 1)
        for name, history, test in rows:
            epochs = [h["epoch"] for h in history]
            line = ax.plot(epochs, [h["val_mse"] for h in history], marker="o", ms=3,
                           label=f"{name} val (test {test:.3f})")[0]
            ax.plot(epochs, [h["train_loss"] for h in history], ls=":", color=line.get_color())
        ax.set_title(f"{family} trials, ETTh1-{horizon}: val MSE (solid), train loss (dotted)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return sum(len(v) for v in trials.values())


def final_target_line(seeds: list[int], models: dict[int, dict[str, Any]]) -> str:
    """Issue 38's target: the final model's test MSE below trial 0's in every seed."""
    better = [s for s in seeds if models[s]["final"] is not None and models[s]["trial0"] is not None
              and models[s]["final"][0] < models[s]["trial0"][0]]
    without = [s for s in seeds if models[s]["ensemble"] is None]
    per_seed = ", ".join(f"seed {s} {_pair(models[s]['final'])[:6]} vs {_pair(models[s]['trial0'])[:6]}"
                         for s in seeds)
    note = f"; no ensemble block (finished before ensembles): seed {', '.join(map(str, without))}" if without else ""
    return (f"target: final model's test MSE below trial 0's in every seed: "
            f"{'met' if len(better) == len(seeds) else 'missed'} ({len(better)}/{len(seeds)}: {per_seed}){note}")


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
    parser.add_argument("--autogluon", type=Path, help="the python of AutoGluon-TimeSeries' own environment (e.g. "
                        "/work/ag-venv/bin/python): runs benchmarks/peers/autogluon_ett.py as a peer; off by default")
    parser.add_argument("--ag-time-limit", type=float, help="AutoGluon's fit limit in seconds (default: agentlab's "
                        "mean wall time per search at that horizon)")
    parser.add_argument("--ag-seeds", help="AutoGluon's seeds (default: the first of --seeds)")
    parser.add_argument("--ag-stride", type=int, default=1, help="AutoGluon forecasts every K-th test window (1: all)")
    parser.add_argument("--ag-horizons", help="the horizons AutoGluon runs at (default --horizons)")
    parser.add_argument("--curves", type=Path, help="write the duet trials' learning curves of every search under "
                        "--out to this PNG (e.g. docs/img/nas/duet_curves.png)")
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
    ag_note = ""  # off unless --autogluon: nothing printed
    if args.autogluon is not None and not args.autogluon.is_file():
        ag_note = (f"skipped: {args.autogluon} not found (set up its venv as docs/benchmarks/nas_literature.md "
                   "says)")
    nf_by_horizon: dict[int, list[dict[str, Any]]] = {}
    compared: dict[int, tuple[float, float]] = {}  # per horizon: agentlab's best trial (at nf's trials), final model
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
        ag_rows, ag_line = None, ag_note
        if args.autogluon is not None and not ag_note:
            if str(horizon) not in (args.ag_horizons or args.horizons).split(","):
                ag_line = f"not run at this horizon (--ag-horizons {args.ag_horizons})"
            else:
                limit = args.ag_time_limit or statistics.mean(results[(horizon, s)]["wall_s"] for s in seeds)
                ag_seeds = [int(s) for s in (args.ag_seeds or str(seeds[0])).split(",")]
                try:
                    ag_rows = autogluon_rows(horizon, ag_seeds, limit, args)
                except Exception as exc:  # an optional comparison: report it, print the rest
                    ag_line = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        compared[horizon] = print_horizon(horizon, seeds, results, nf_rows, note, args, ag_rows, ag_line)
    print(f"\nrun folders under {args.out}")
    if args.curves:
        print(f"learning curves of {family_curves(args.out, 'duet', args.curves)} duet trials: {args.curves}")
    # ratio: agentlab's mean best test MSE at the first horizon over the strongest alternative measured or published
    # there: neuralforecast's best Auto model when it ran, else the best fair published result. The final-model ratio
    # before it: the same with the final models (the ensembles) after every trial, over the same reference.
    first = horizons[0]
    ours, final = compared[first]
    nf_first = nf_by_horizon.get(first)
    if nf_first:
        ref, what = min(r["mse"] for r in nf_first), "neuralforecast's best Auto model"
        if args.nf_trials < args.trials:
            what += f", both at {args.nf_trials} trials"
    else:
        from agentlab.nas.literature import TABLES

        fair = [p.mse for p in TABLES.get(("ETTh1", first), []) if p.protocol == "fair"]
        ref, what = (min(fair), "the best fair published result") if fair else (TARGETS.get(first, ours), "the target")
    final_what = what.replace(f", both at {args.nf_trials} trials", f" at {args.nf_trials} trials")
    print(f"final-model ratio: {final / ref:.3f}  (agentlab's final models' mean test MSE at horizon {first}, after "
          f"{args.trials} trials / {final_what}, {ref:.3f})")
    print(f"ratio: {ours / ref:.3f}  (agentlab's mean test MSE at horizon {first}, best trial / {what}, {ref:.3f})")


if __name__ == "__main__":
    main()

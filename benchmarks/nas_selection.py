"""Which trial (or mix of trials) a finished nas search should hand over: selection rules replayed on real searches.

A search chooses its best trial by validation MSE with a noise band (``search.min_delta``, default 1%): a trial must
beat the incumbent by more than the band to replace it; inside the band the smaller model wins. The question (issue
38): does the band keep test error low, or does it just keep trial 0, the hand-written base config? This script
answers it on searches that already ran (no training): it reads each run folder's study, replays the rules on the
first n trials in the order they ran, and scores each rule's choice on the test windows, which no rule sees.

Rules: ``band X%`` (the evaluator's rule without an LLM, the incumbent replaced only by a gain above X; ``band 0%``
is the plain argmin of validation MSE), ``ensemble`` (the search's final model: greedy ensemble selection on
validation over the first n trials, ``agentlab.nas.ensemble``), and ``trial 0``.

Printed: per search, each rule's test MSE at n = 5, 10, ... and at the search's end; over searches, the mean test MSE
of each rule, its ratio to the plain argmin (geometric mean, min-max, searches at or below 1), and how often the rule
is still holding trial 0 when a later trial validated better. The last line, ``ratio: X``, is the default band's test
MSE over the argmin's at the last n.

    python benchmarks/nas_selection.py RUN [RUN ...]          # run folders, or folders holding run folders
    python benchmarks/nas_selection.py /work/bench/agent-warm5/etth1 --bands 0,0.5,1,2
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentlab.core.search.evaluator import HybridEvaluator  # noqa: E402
from agentlab.core.search.records import TrialRecord, best_of  # noqa: E402
from agentlab.nas.ensemble import EnsembleBuilder  # noqa: E402


def run_folders(paths: list[Path]) -> list[Path]:
    """Every nas run folder (one holding study.db and results.json) named or found one level below a named one."""
    found: list[Path] = []
    for p in paths:
        if (p / "study.db").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(q for q in p.iterdir() if (q / "study.db").is_file() and (q / "trials").is_dir())
    return found


def records(run: Path) -> list[TrialRecord]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{run / 'study.db'}"
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise SystemExit(f"{run}: expected one study in study.db, found {len(names)}")
    study = optuna.load_study(study_name=names[0], storage=storage)
    out = [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]
    return sorted((r for r in out if r.counted), key=lambda r: r.number)


def band_choice(recs: list[TrialRecord], band: float) -> TrialRecord | None:
    """What the search hands over under the evaluator's rule (no LLM), replayed over ``recs`` in order: as in the
    search loop, each trial is judged against the best accepted so far (``records.best_of``: the accepted trial with
    the lowest value), and the best accepted one is the result. A smaller trial accepted inside the band does not
    become the best unless its value is lower."""
    evaluator, accepted = HybridEvaluator(band, metric="val_mse"), []
    for r in recs:
        if r.state != "complete" or not r.finite:
            continue
        if evaluator.decide(r.value, r.metrics, r.params, best_of(accepted)).accepted:
            accepted.append(replace(r, accepted=True))  # this replay's decision, not the search's
    return best_of(accepted)


def test_of(record: TrialRecord | None) -> float:
    return float(record.metrics.get("test_mse", math.nan)) if record is not None else math.nan


def scores(builder: EnsembleBuilder, n: int, recs: list[TrialRecord], bands: list[float]) -> dict[str, Any]:
    """Each rule's test MSE after the first ``n`` trials; ``bands`` in percent; ``builder``: the run's ensemble
    builder, one per run, so the Gram entries of earlier checkpoints are reused."""
    first = recs[:n]
    out: dict[str, Any] = {}
    argmin = band_choice(first, 0.0)
    for band in bands:
        chosen = band_choice(first, band / 100)
        out[f"band {band:g}%"] = test_of(chosen)
        # the rule holds trial 0 while a later trial validated better: what the issue asks about
        out[f"band {band:g}% holds trial 0"] = bool(chosen is not None and chosen.number == first[0].number
                                                   and argmin is not None and argmin.number != chosen.number)
    ensemble = builder.build(first)
    out["ensemble"] = float(ensemble["test_mse"]) if ensemble else math.nan
    out["trial 0"] = test_of(first[0]) if first and first[0].state == "complete" else math.nan
    return out


def geo(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or folders whose children are run folders")
    parser.add_argument("--bands", default="0,0.5,1,2", help="noise bands to replay, in percent (0: plain argmin)")
    parser.add_argument("--every", type=int, default=5, help="score after every this many trials")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bands = [float(b) for b in args.bands.split(",")]
    if 0.0 not in bands:
        bands = [0.0, *bands]
    runs = run_folders(args.runs)
    if not runs:
        raise SystemExit("no nas run folder (study.db and trials/) under " + ", ".join(map(str, args.runs)))
    rules = [f"band {b:g}%" for b in bands] + ["ensemble", "trial 0"]
    table: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        recs, builder = records(run), EnsembleBuilder(run)
        checkpoints = sorted({n for n in range(args.every, len(recs) + 1, args.every)} | {len(recs)})
        line = []
        for n in checkpoints:
            row = scores(builder, n, recs, bands)
            table.setdefault(n, []).append(row)
            line.append(f"n={n}: " + "  ".join(f"{k} {row[k]:.4f}" for k in rules))
        print(f"{run} ({len(recs)} trials)\n  " + "\n  ".join(line))
    print()
    last = max(n for n in table if len(table[n]) == len(runs)) if any(len(v) == len(runs) for v in table.values()) \
        else max(table)
    print(f"{len(runs)} searches; test MSE of each rule's choice (mean over searches), ratio to the argmin of "
          "validation (geometric mean, min-max, searches <= 1), searches where the rule still holds trial 0 while a "
          "later trial validated better")
    for n in sorted(table):
        rows = table[n]
        print(f"after {n} trials ({len(rows)} searches)")
        for rule in rules:
            ratios = [r[rule] / r["band 0%"] for r in rows if r[rule] > 0 and r["band 0%"] > 0]
            held = sum(r.get(f"{rule} holds trial 0", False) for r in rows)
            known = [r[rule] for r in rows if not math.isnan(r[rule])]
            if not known or not ratios:  # e.g. no ensemble: searches run with search.ensemble false
                print(f"  {rule:12} -")
                continue
            print(f"  {rule:12} test {statistics.fmean(known):.4f}  ratio {geo(ratios):.3f} ({min(ratios):.3f}-"
                  f"{max(ratios):.3f}, {sum(x <= 1 + 1e-12 for x in ratios)}/{len(ratios)} <= 1)"
                  + (f"  holds trial 0: {held}/{len(rows)}" if rule.startswith("band") else ""))
    default = [r["band 1%"] / r["band 0%"] for r in table[last]] if "band 1%" in rules else []
    print(f"ratio: {geo(default):.3f}" if default else "ratio: n/a (no 1% band replayed)")


if __name__ == "__main__":
    main()

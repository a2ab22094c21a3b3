"""Sample efficiency of the NAS planners at equal budget over several seeds: the LLM planner (the built-in SmolLM2-135M
on llama.cpp choosing among TPE's candidates) against the planners a user would choose instead, and against two
scripted choosers that bracket it.

Planners (``--planners``):

- ``llm``: ``--planner llm`` with ``--llm`` (default configs/llm.local.yaml, the built-in SmolLM2-135M), choosing
  among 4 TPE candidates on at most 30% of the trials (the defaults of search.llm_*);
- ``placebo``: the same chooser with a uniform random pick in place of the model (what choosing is worth by luck);
- ``oracle``: the same chooser picking the candidate a surrogate fitted on the finished trials ranks best (kernel
  ridge regression, ``agentlab.testing.choosers.SurrogateChooser``), standing in for a good LLM;
- ``agent``: ``--planner agent`` with ``--llm``: the LangGraph agent planning through tools (data facts, the
  literature, TPE's candidates), TPE its guard after search.agent.guard_patience trials without a new best;
- ``agent-suggest``: the same agent with a scripted model that calls ``suggest`` and runs candidate 0 every trial
  (``agentlab.testing.agents.SuggestAgent``): it must be TPE trial for trial (checked and printed);
- ``tpe`` (nas's default sampler, multivariate and grouped on a conditional space), ``tpe_independent`` (one key at
  a time), ``tpe_multivariate`` (run on non-conditional spaces only: on a conditional one it is ``tpe``), ``cmaes``
  (Optuna's CMA-ES on the numeric keys every trial has, the others random) and ``random``.
- ``P+leads`` for any of them (``tpe+leads``, ``random+leads``, ``agent+leads``): the same planner with
  ``search.warm_start: true``, the literature's leads run right after the base config. The agent sees the same leads
  among its candidates, so ``agent/tpe+leads`` compares it with the sampler given the same knowledge (printed beside
  ``agent/tpe``), and ``tpe+leads/tpe`` is what the knowledge alone buys.

Datasets (``--datasets``): ``etth1``: configs/nas_ett96.yaml (ETTh1, multivariate, horizon 96, the family space of
the NAS issue before this one) made cheaper per trial: only ``--families`` (default the fast ones: linear, sparsetsf,
cyclenet), at most ``--epochs`` epochs (default 6, patience 2; the pruner from epoch 3); ``synthetic``: the built-in
synthetic series on the built-in defaults (a small Informer, 4 epochs). ``--base informer`` starts every search from
the seeds' Informer base instead of the config's hand-picked base (the knowledge warm start: the same full family
space, the base only changes). The settings are written to OUT/<dataset>.yaml
and printed. Every (dataset, planner, seed) search is one ``agentlab nas`` run folder under --out (the seed sets
search.seed and train.seed, so every planner of a seed starts from the same trial 0), run --jobs at a time in worker
processes, each with its own runs root (no search starts from another's record of the model's picks); an
interrupted benchmark resumes its unfinished searches, and finished ones are only read.

Printed per dataset: each planner's best validation MSE and the test MSE of that trial after 5, 10 and --trials
trials (the first n trials of each search; mean +- sd over seeds) and wall time; for each chooser (llm, placebo,
oracle) the ratio of its test MSE to tpe's, per seed, as a geometric mean with min-max, a bootstrap 90% interval over
seeds and the number of seeds at or below 1 (the same for validation MSE); what the LLM did (asked, chose, picks
other than candidate 0, no answers, new bests) and its calls' time. The last line, ``ratio: X``, is llm/tpe's
geometric mean on test MSE at --trials on the first dataset. Designed to take about 2 hours on 2 cores with the
defaults (not yet timed).

    python benchmarks/nas_planners.py --data ../shared/data/ETTh1.csv
    python benchmarks/nas_planners.py --datasets synthetic --trials 2 --seeds 0 --planners tpe,placebo   # smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLANNERS = ["llm", "placebo", "oracle", "agent", "agent-suggest", "tpe", "tpe_independent", "tpe_multivariate",
            "cmaes", "random"]
CHOOSERS = ("llm", "placebo", "oracle")
FAST = "linear,sparsetsf,cyclenet"


# --------------------------------------------------------------------------- the settings


# What configs/nas_ett96.yaml had for the Informer before it left the ETT space (its keys, decoder and budget): the
# knowledge warm start searches from it, in the same space as before.
INFORMER_KEYS = {"data.label_len": {"choices": [48, 96]}, "model.attn": {"choices": ["prob", "full"]},
                 "model.distil": {"choices": [True, False]}}
INFORMER_BUDGET = {"epochs": 6, "patience": 2, "batch_size": 32, "learning_rate": 1.0e-3, "lr_decay": 0.8,
                   "max_train_batches": 60}
NEURAL = ("model.d_model", "model.n_heads", "model.e_layers", "model.d_ff", "model.dropout")


def add_informer(config: dict[str, Any]) -> None:
    """Put the Informer back into an nas_ett96 config: a family choice, its share of the shared keys, its own keys,
    its decoder's known steps and its training budget."""
    space = config["search"]["space"]
    choices = space["model.family"]["choices"]
    if "informer" in choices:
        return
    choices.insert(choices.index("itransformer") + 1, "informer")
    for key in ("data.seq_len", "train.loss", *NEURAL):
        space[key]["when"]["model.family"].append("informer")
    space.update({k: {**v, "when": {"model.family": ["informer"]}} for k, v in INFORMER_KEYS.items()})
    config["data"]["label_len"] = 48
    model = config["model"]
    config["model"] = {**{k: model[k] for k in list(model)[:list(model).index("e_layers") + 1]}, "d_layers": 1,
                       **{k: model[k] for k in list(model)[list(model).index("e_layers") + 1:]}}
    config["train"]["per_family"]["informer"] = dict(INFORMER_BUDGET)


def bench_config(dataset: str, args: argparse.Namespace) -> Path:
    """The dataset's config, made cheaper per trial, written to OUT/<dataset>.yaml."""
    import yaml

    if dataset == "synthetic":
        config: dict[str, Any] = {"name": "bench-synthetic"}
    else:
        config = yaml.safe_load((REPO / "configs" / "nas_ett96.yaml").read_text())
        families = args.families.split(",")
        if args.base and args.base not in families:  # the warm start's base family is part of the space
            families.append(args.base)
        if "informer" in families:  # nas_ett96.yaml leaves the Informer out: the warm start puts it back
            add_informer(config)
        config["data"]["path"] = str(args.data)
        config["name"] = "bench-etth1"
        space = config["search"]["space"]
        space["model.family"]["choices"] = families
        if config["model"]["family"] not in families:
            config["model"]["family"] = families[0]
        if "informer" not in families:  # no decoder in the search: data.label_len would be refused as unread
            config["data"]["label_len"] = 0
        for key in list(space):  # keys of families left out apply to no trial: drop them
            when = (space[key] or {}).get("when", {}).get("model.family")
            if when is not None and not set(when) & set(families):
                del space[key]
            elif when is not None:
                space[key]["when"]["model.family"] = [f for f in when if f in families]
        train = config["train"]
        train["epochs"], train["patience"] = min(train["epochs"], args.epochs), min(train["patience"], 2)
        for budget in train.get("per_family", {}).values():
            budget["epochs"] = min(budget["epochs"], args.epochs)
        config["search"]["pruner_warmup"] = max(1, args.epochs // 2)
    if args.base:
        config.setdefault("model", {})["family"] = args.base
    path = args.out / f"{dataset}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def conditional(config: Path) -> bool:
    import yaml

    space = (yaml.safe_load(config.read_text()).get("search") or {}).get("space")
    return bool(space) and any((spec or {}).get("when") for spec in space.values())


# --------------------------------------------------------------------------- one search (in a worker process)


def worker(planner: str, seed: int, dataset: str, args: argparse.Namespace) -> None:
    from agentlab.nas import run_nas_optimization
    from agentlab.testing.agents import SuggestAgent, scripted_llm
    from agentlab.testing.choosers import RandomChooser, SurrogateChooser

    out = args.out / dataset / f"{planner}-s{seed}"
    name, _, leads = planner.partition("+")
    chooser = {"placebo": RandomChooser(), "oracle": SurrogateChooser()}.get(name)
    kind = "llm" if name in CHOOSERS else "agent" if name.startswith("agent") else name
    sets = [f"search.planner={kind}", f"search.seed={seed}", f"train.seed={seed}",
            f"search.warm_start={'true' if leads else 'false'}"]
    resume = out if (out / "run.json").is_file() else None
    run_nas_optimization(args.trials, config=None if resume else args.out / f"{dataset}.yaml", out=None if resume
                         else out, resume=resume, overrides=sets, chooser=chooser,
                         llm=scripted_llm(SuggestAgent()) if name == "agent-suggest" else
                         args.llm if name in ("llm", "agent") else None)


def run_search(planner: str, seed: int, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """One search (resumed if a previous benchmark left it unfinished): its agent_state, results and wall time."""
    out = args.out / dataset / f"{planner}-s{seed}"
    done = out / "results.json"
    if not (done.is_file() and len(json.loads((out / "agent_state.json").read_text())["runs"]) >= args.trials):
        cmd = [sys.executable, __file__, "--worker", f"{planner},{seed},{dataset}", "--trials", str(args.trials),
               "--out", str(args.out), "--llm", str(args.llm)]
        start = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{planner}-s{seed}.log", "a") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=log, cwd=REPO,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1",
                                       # its own runs root: no record of a model's picks carries between searches
                                       "AGENTLAB_RUNS": str(out.parent / f"{planner}-s{seed}.runs")})
        if proc.returncode != 0:
            raise RuntimeError(f"{dataset} {planner} seed {seed} failed (exit {proc.returncode}); see {out}.log")
        wall = out / "wall.json"  # a resumed search (a larger --trials) adds to the time already spent
        before = json.loads(wall.read_text())["s"] if wall.is_file() else 0.0
        wall.write_text(json.dumps({"s": before + time.perf_counter() - start}))
        print(f"done: {dataset} {planner:16} seed {seed}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return {"state": json.loads((out / "agent_state.json").read_text()), "results": json.loads(done.read_text()),
            "wall_s": json.loads((out / "wall.json").read_text())["s"] if (out / "wall.json").is_file() else 0.0,
            "calls": _calls(out)}


def _calls(out: Path) -> list[dict[str, Any]]:
    path = out / "llm_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# --------------------------------------------------------------------------- statistics


def best_run(runs: list[dict[str, Any]], n: int) -> dict[str, Any] | None:
    """The trial with the best validation MSE among the first ``n`` trials of the budget (a trial interrupted and
    planned again does not count) that finished; ``runs`` is a search's agent_state.json "runs". nas_literature.py
    uses it too."""
    counted = [r for r in runs if r.get("counted", True)][:n]
    finished = [r for r in counted if r.get("val_mse") is not None and r.get("test_mse") is not None
                and r.get("state") == "complete"]
    return min(finished, key=lambda r: r["val_mse"]) if finished else None


def best_after(runs: list[dict[str, Any]], n: int) -> tuple[float, float] | None:
    """(best validation MSE, that trial's test MSE) over the first ``n`` trials of the budget."""
    best = best_run(runs, n)
    return None if best is None else (best["val_mse"], best["test_mse"])


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}+-{sd:.3f}"


def ratio_summary(ratios: list[float], reps: int = 2000) -> str:
    """Geometric mean, min-max, bootstrap 90% interval over seeds, seeds at or below 1."""
    if not ratios:
        return "-"
    logs = [math.log(r) for r in ratios]
    rng = random.Random(0)
    boot = sorted(math.exp(statistics.mean(rng.choices(logs, k=len(logs)))) for _ in range(reps))
    low, high = boot[int(0.05 * reps)], boot[int(0.95 * reps) - 1]
    return (f"{math.exp(statistics.mean(logs)):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}; 90% CI "
            f"{low:.3f}-{high:.3f}; {sum(r <= 1 for r in ratios)}/{len(ratios)} seeds <= 1)")


def per_seed(results: dict[tuple[str, int], dict[str, Any]], planner: str, seeds: list[int], n: int,
             which: int, baseline: str = "tpe") -> list[float]:
    """Per seed, ``planner``'s metric (0: val, 1: test MSE of the best trial) over ``baseline``'s, after ``n``
    trials."""
    out = []
    for s in seeds:
        a = best_after(results[(planner, s)]["state"]["runs"], n)
        b = best_after(results[(baseline, s)]["state"]["runs"], n)
        if a is not None and b is not None and b[which] > 0:
            out.append(a[which] / b[which])
    return out


def llm_lines(name: str, runs: list[dict[str, Any]]) -> list[str]:
    blocks = [r["results"].get("llm_contribution") or {} for r in runs]
    total = {k: sum(b.get(k, 0) for b in blocks) for k in ("trials", "asked", "chosen_by_llm", "differed",
                                                             "no_answer")}
    bests = [sum((b.get("new_bests") or {}).get(k, 0) for b in blocks) for k in ("llm_picks", "sampler")]
    lines = [f"{name}: of {total['trials']} planner trials asked {total['asked']}, answered "
             f"{total['chosen_by_llm']}, picked other than candidate 0 {total['differed']}, no answer "
             f"{total['no_answer']}; new bests from its picks {bests[0]}, from TPE's candidate 0 {bests[1]}"]
    calls = [c for r in runs for c in r["calls"]]
    if calls:
        seconds = [c["latency_s"] for c in calls]
        lines.append(f"{name} calls: {len(calls)}, {sum(seconds) / 60:.1f} min in all, "
                     f"{statistics.median(seconds):.1f} s median, {max(seconds):.1f} s longest")
    return lines


def report(dataset: str, config: Path, planners: list[str], seeds: list[int],
           results: dict[tuple[str, int], dict[str, Any]], args: argparse.Namespace) -> float | None:
    checkpoints = sorted({n for n in (5, 10) if n < args.trials} | {args.trials})
    families = args.families + (f",{args.base}" if args.base and args.base not in args.families.split(",") else "")
    base = f"base family {args.base}, " if args.base else ""
    cheap = f"families {families}, {base}at most {args.epochs} epochs; " if dataset == "etth1" else ""
    print(f"\n{dataset} ({config}: {cheap}{args.trials} trials per search, the base config first; seeds "
          f"{args.seeds}); best validation MSE so far / the test MSE of that trial, mean+-sd over seeds")
    print(f"{'planner':<17}" + "".join(f"{f'after {n}':>31}" for n in checkpoints) + f"{'wall (min)':>16}")
    for p in planners:
        row = f"{p:<17}"
        for n in checkpoints:
            pairs = [b for s in seeds if (b := best_after(results[(p, s)]["state"]["runs"], n)) is not None]
            row += f" {mean_sd([v for v, _ in pairs]) + ' / ' + mean_sd([t for _, t in pairs]):>30}"
        print(row + f" {mean_sd([results[(p, s)]['wall_s'] / 60 for s in seeds]):>15}")
    final = None
    if "tpe" in planners:
        print()
        for p in [c for c in CHOOSERS if c in planners]:
            for n in checkpoints:
                test, val = per_seed(results, p, seeds, n, 1), per_seed(results, p, seeds, n, 0)
                print(f"{p}/tpe after {n}: test MSE {ratio_summary(test)}; val MSE {ratio_summary(val)}")
                if p == "llm" and n == args.trials and test:
                    final = math.exp(statistics.mean(math.log(r) for r in test))
        pairs = [(a, "tpe") for a in ("agent", "agent-suggest", "agent+leads", "tpe+leads") if a in planners]
        pairs += [(a, "tpe+leads") for a in ("agent", "agent+leads") if a in planners and "tpe+leads" in planners]
        for p, baseline in pairs:  # the agent against the sampler alone and against the sampler with its knowledge
            for n in checkpoints:
                test = per_seed(results, p, seeds, n, 1, baseline)
                val = per_seed(results, p, seeds, n, 0, baseline)
                print(f"{p}/{baseline} after {n}: test MSE {ratio_summary(test)}; val MSE {ratio_summary(val)}")
        if "agent-suggest" in planners:
            same = [s for s in seeds if params_of(results[("agent-suggest", s)]) == params_of(results[("tpe", s)])]
            print(f"agent-suggest is TPE trial for trial in {len(same)} of {len(seeds)} seeds")
    for p in [c for c in CHOOSERS if c in planners]:
        for line in llm_lines(p, [results[(p, s)] for s in seeds]):
            print(line)
    for p in [a for a in ("agent", "agent-suggest", "agent+leads") if a in planners]:
        blocks = [results[(p, s)]["results"].get("agent") or {} for s in seeds]
        keys = ("steps", "tool_calls", "invalid_tool_calls", "rejected_calls", "defaulted", "trials_by_agent",
                "agent_picks", "trials_by_guard", "trials_from_leads")
        total = {k: sum(b.get(k, 0) for b in blocks) for k in keys}
        per_trial = [(b["tokens_per_trial"], b["seconds_per_trial"]) for b in blocks if b]
        print(f"{p}: " + ", ".join(f"{k} {v}" for k, v in total.items())
              + (f"; per agent trial {statistics.mean(t for t, _ in per_trial):.0f} tokens and "
                 f"{statistics.mean(x for _, x in per_trial):.1f} s of the model (TPE: 0 tokens)" if per_trial
                 else ""))
        prompts = [b.get("largest_prompt_tokens", 0) for b in blocks if b]
        if p == "agent" and prompts:
            print(f"{p}: the largest prompt per seed {prompts} tokens; the planner model's context "
                  f"{planner_context(args.llm)}")
    return final


def planner_context(llm: Path) -> str:
    """The context of the planner route's first model, as the routing config sets it (llama.cpp's ``n_ctx``)."""
    from agentlab.core.llm.config import load_llm_config

    cfg = load_llm_config(llm)
    chain = cfg.route("planner").primary or list(cfg.models)
    model = cfg.models[chain[0]]
    n_ctx = getattr(cfg.providers[model.provider], "n_ctx", None)
    return f"{n_ctx} tokens ({chain[0]}, n_ctx of {llm.name})" if n_ctx else f"not set in {llm.name} ({chain[0]})"


def params_of(result: dict[str, Any]) -> list[str]:
    return [json.dumps(r.get("params"), sort_keys=True) for r in result["state"]["runs"] if r.get("counted", True)]


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ETTh1.csv",
                        help="ETTh1.csv (for the etth1 dataset)")
    parser.add_argument("--datasets", default="etth1,synthetic", help="etth1 and/or synthetic")
    parser.add_argument("--trials", type=int, default=15, help="trial budget of every search (the base included)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="at least 5; 10 before any claim of 'better'")
    parser.add_argument("--planners", default=",".join(PLANNERS))
    parser.add_argument("--families", default=FAST, help="etth1: the model families searched")
    parser.add_argument("--epochs", type=int, default=6, help="etth1: the most epochs of any trial")
    parser.add_argument("--base", default=None, help="start every search from this model family instead of the "
                        "config's base (informer: the knowledge warm start)")
    parser.add_argument("--jobs", type=int, default=2, help="searches run at once")
    parser.add_argument("--llm", type=Path, default=REPO / "configs" / "llm.local.yaml",
                        help="routing config of the llm planner (default: the built-in model on llama.cpp)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-nas-planners")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # planner,seed,dataset: run one search in-process
    args = parser.parse_args()
    args.out, args.llm = args.out.resolve(), args.llm.resolve()
    if args.worker:
        planner, seed, dataset = args.worker.split(",")
        worker(planner, int(seed), dataset, args)
        return
    datasets = args.datasets.split(",")
    if "etth1" in datasets and not args.data.is_file():
        sys.exit(f"error: {args.data}: not found (give --data ETTh1.csv, or --datasets synthetic)")
    unknown = {p for p in args.planners.split(",") if p.removesuffix("+leads") not in PLANNERS}
    if unknown or set(datasets) - {"etth1", "synthetic"}:
        sys.exit(f"error: unknown planner(s) {sorted(unknown)} or dataset(s) {datasets}")
    if {"llm", "agent"} & {p.removesuffix("+leads") for p in args.planners.split(",")} and not args.llm.is_file():
        sys.exit(f"error: --llm {args.llm}: not found")
    args.data = args.data.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = {d: bench_config(d, args) for d in datasets}
    plan = {d: [p for p in args.planners.split(",") if not (p == "tpe_multivariate" and conditional(configs[d]))]
            for d in datasets}
    for d in datasets:
        if "tpe_multivariate" in args.planners and "tpe_multivariate" not in plan[d]:
            print(f"{d}: tpe_multivariate left out: on its conditional space tpe is multivariate and grouped")
    jobs = [(p, s, d) for d in datasets for s in seeds for p in plan[d]]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = dict(zip(jobs, pool.map(lambda job: run_search(*job, args), jobs), strict=True))
    finals = [report(d, configs[d], plan[d], seeds, {(p, s): done[(p, s, d)] for p in plan[d] for s in seeds}, args)
              for d in datasets]
    print(f"\nrun folders under {args.out}")
    if finals and finals[0] is not None:
        print(f"ratio: {finals[0]:.3f} (llm/tpe test MSE at {args.trials} trials, geometric mean over seeds, "
              f"{datasets[0]})")


if __name__ == "__main__":
    main()

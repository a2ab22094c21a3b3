"""`agentlab nas` on the user's own training code (examples/own_code): the planners at equal budget, and what agentlab
costs per trial against running the same command in a plain loop.

Quality: for each planner of ``--planners`` (tpe, cmaes, random, agent, llm) and each seed of ``--seeds``, one
``agentlab nas -c examples/own_code/nas.yaml`` search of ``--trials`` trials; the seed sets ``search.seed`` and the
script's own ``seed`` param (trial 0's training noise differs between seeds, the same for every planner of a seed).
Printed: the
best validation loss after each of ``--at`` trials (the first n trials of each search; pruned, failed and interrupted
trials do not count) as mean +- sd over seeds with every seed's figure, and "trial 0 alone" (the base params, what a
user had before searching). ``agent`` (the agent planner) and ``llm`` (the LLM chooser) run on the planner model of
``--llm`` (default: configs/llm.local.yaml, the built-in smollm2-135m on llama.cpp, in process); each search has its
own runs root, so no search reads the pick memory or the agent's notes of another; after the table, one line per
LLM planner says what the model did (tool calls, defaults, guard trials, model seconds; or picks that differed).

Overhead: one search of ``--overhead-trials`` trials with the random planner and no pruner, each trial in its own
workspace: a git worktree (the example lies in this repository), and again on a copy of the example outside any
repository (a copied workspace); then the same trials' commands (the same params files) run one after another in
place in a plain Python loop. Printed: the wall times, agentlab's overhead per trial for each workspace kind (its wall
time minus the loop's, over the trials; agentlab's start-up included) and as a share of the loop's time; and the time
to make and remove one workspace of a repository of ``--files`` files (1,000 by default), worktree and copy, median
of 5. The last line, ``ratio: X``, is agentlab's wall time (worktrees) over the plain loop's.

    python benchmarks/own_code.py                                   # 5 planners x 5 seeds x 12 trials, then overhead
    python benchmarks/own_code.py --planners agent,llm --overhead-trials 0     # the LLM planners, no overhead run
    python benchmarks/own_code.py --seeds 0 --trials 4 --overhead-trials 3     # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own_code"
AGENTLAB = [sys.executable, "-m", "agentlab.cli"]
# the example's command is `python train.py ...`: this interpreter's environment (torch) first on PATH, as a user's
# activated venv would be
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "NO_COLOR": "1"}
LLM_PLANNERS = ("agent", "llm")  # these take --llm


def settings(seed: int, extra: dict | None = None) -> dict:
    """The example's YAML with the folder made absolute, the seed in the search and in the script's params."""
    cfg = yaml.safe_load((EXAMPLE / "nas.yaml").read_text(encoding="utf-8"))
    cfg["objective"]["cwd"] = str(EXAMPLE)
    cfg["objective"]["params"]["seed"] = seed
    cfg.setdefault("search", {})["seed"] = seed
    for key, value in (extra or {}).items():
        cfg["search"][key] = value
    return cfg


def search(out: Path, planner: str, seed: int, trials: int, extra: dict | None = None,
           llm: Path | None = None, project: Path = EXAMPLE) -> tuple[Path, float]:
    """One agentlab search (resumed when its folder holds an unfinished one); its run folder and wall time. An LLM
    planner gets ``llm`` as --llm and a runs root of its own (the pick memory and the agent's notes live there)."""
    folder = out / f"{planner}-s{seed}"
    if (folder / "results.json").exists():
        return folder, json.loads((folder / "bench_wall.json").read_text())["seconds"]
    out.mkdir(parents=True, exist_ok=True)
    config = out / f"{planner}-s{seed}.yaml"
    cfg = settings(seed, extra)
    cfg["objective"]["cwd"] = str(project)
    config.write_text("# agentlab nas -c " + config.name + "\n" + yaml.safe_dump(cfg))
    args = ["--resume", str(folder)] if folder.exists() else ["-c", str(config), "--out", str(folder)]
    if planner in LLM_PLANNERS:
        args += ["--llm", str(llm or REPO / "configs" / "llm.local.yaml")]
    env = {**ENV, "AGENTLAB_RUNS": str(out / "home" / folder.name)}
    start = time.perf_counter()
    done = subprocess.run([*AGENTLAB, "nas", *args, "--max-iterations", str(trials), "--planner", planner],
                          cwd=out, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{planner} seed {seed}: agentlab nas exited {done.returncode}:\n{done.stderr[-2000:]}")
    (folder / "bench_wall.json").write_text(json.dumps({"seconds": wall}))
    return folder, wall


def trials(folder: Path) -> list[dict]:
    """The search's trial events, the last one per number, in number order."""
    by_number = {}
    for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("kind") == "trial":
            by_number[event["number"]] = event
    return [by_number[n] for n in sorted(by_number)]


def best_after(records: list[dict], n: int) -> float | None:
    values = [r["value"] for r in records[:n] if r["state"] == "complete" and r.get("value") is not None]
    return min(values) if values else None


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} +- {sd:.4f}"


def llm_line(planner: str, folders: list[Path]) -> str | None:
    """What the planner model did over the searches (results.json's agent / llm_contribution blocks)."""
    results = [json.loads((f / "results.json").read_text(encoding="utf-8")) for f in folders]
    if planner == "agent":
        blocks = [r["agent"] for r in results if r.get("agent")]
        total = {k: sum(b[k] for b in blocks) for k in ("tool_calls", "invalid_tool_calls", "defaulted",
                                                        "trials_by_agent", "trials_by_guard", "model_seconds")}
        return (f"agent: {total['tool_calls']} tool calls ({total['invalid_tool_calls']} invalid), "
                f"{total['defaulted']} defaulted to candidate 0; {total['trials_by_agent']} trials by the agent, "
                f"{total['trials_by_guard']} by the guard (TPE); "
                f"{total['model_seconds'] / max(total['trials_by_agent'], 1):.1f} s of the model per agent trial")
    if planner == "llm":
        blocks = [r["llm_contribution"] for r in results if r.get("llm_contribution")]
        asked, differed = sum(b["asked"] for b in blocks), sum(b["differed"] for b in blocks)
        return (f"llm: asked on {asked} trials, its pick differed from TPE's candidate 0 on {differed}; "
                f"{sum(b['no_answer'] for b in blocks)} without an answer")
    return None


def quality(out: Path, planners: list[str], seeds: list[int], n_trials: int, at: list[int], jobs: int,
            llm: Path | None = None) -> None:
    jobs_list = [(p, s) for p in planners for s in seeds]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = dict(zip(jobs_list, pool.map(lambda job: search(out, job[0], job[1], n_trials, llm=llm), jobs_list),
                        strict=True))
    records = {job: trials(folder) for job, (folder, _) in done.items()}  # each search's events read once
    print(f"\nbest val_loss after n trials (mean +- sd over seeds {seeds}; per seed in brackets), lower is better")
    print("| planner | " + " | ".join(f"after {n}" for n in at) + " | wall s (mean) |")
    print("|---|" + "---|" * (len(at) + 1))
    base = [records[(planners[0], s)][0]["value"] for s in seeds]
    print("| trial 0 alone | " + " | ".join(f"{spread(base)} [{', '.join(f'{v:.4f}' for v in base)}]"
                                          for _ in at) + " | - |")
    for planner in planners:
        cells = []
        for n in at:
            per_seed = [best_after(records[(planner, s)], n) for s in seeds]
            shown = [v for v in per_seed if v is not None]
            cells.append(f"{spread(shown)} [{', '.join('-' if v is None else f'{v:.4f}' for v in per_seed)}]")
        wall = statistics.mean(done[(planner, s)][1] for s in seeds)
        states = [r["state"] for s in seeds for r in records[(planner, s)]]
        print(f"| {planner} | " + " | ".join(cells) + f" | {wall:.0f} |"
              f"  ({states.count('complete')} complete, {states.count('pruned')} pruned of {len(states)})")
    for planner in planners:
        line = llm_line(planner, [done[(planner, s)][0] for s in seeds])
        if line:
            print(line)


def overhead(out: Path, n_trials: int) -> float:
    folder, wall = search(out / "overhead", "random", 0, n_trials, {"pruner": "none"})
    copy_root = out / "overhead-copy-project"
    if not copy_root.exists():  # the example outside any git repository: each trial gets a copy of its files
        shutil.copytree(EXAMPLE, copy_root / EXAMPLE.name)
    copied, copy_wall = search(out / "overhead-copy", "random", 0, n_trials, {"pruner": "none"},
                               project=copy_root / EXAMPLE.name)
    command = settings(0)["objective"]["command"]
    start = time.perf_counter()
    for trial_dir in sorted((folder / "trials").glob("run_*")):
        params = trial_dir / "params.json"
        argv = [part.replace("{params}", str(params)) for part in shlex.split(command)]
        subprocess.run(argv, cwd=EXAMPLE, env={**ENV, "AGENTLAB_TRIAL_DIR": str(trial_dir),
                                               "AGENTLAB_PARAMS": str(params)},
                       capture_output=True, check=True)
    plain = time.perf_counter() - start
    n = len(list((folder / "trials").glob("run_*")))
    print(f"\noverhead: {n} trials; the same commands in place in a plain loop {plain:.1f} s (target: under "
          f"max(1 s, 2%) = {max(1.0, 0.02 * plain / n):.2f} s per trial)")
    for kind, seconds in (("git worktree", wall), ("copy", copy_wall)):
        print(f"  agentlab, a {kind} per trial: {seconds:.1f} s: {(seconds - plain) / n:.2f} s per trial "
              f"({100 * (seconds - plain) / plain:.1f}% of the loop)")
    return wall / plain


def workspace_timing(n_files: int, rounds: int = 5) -> None:
    """Make and remove one workspace of a repository of ``n_files`` small files: git worktree and copy."""
    from agentlab.nas.workspace import Workspaces

    with tempfile.TemporaryDirectory(prefix="bench-workspace-") as tmp:
        repo = Path(tmp) / "repo"
        for i in range(n_files):
            path = repo / f"pkg{i % 20}" / f"module_{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"VALUE = {i}\n" * 20)
        for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm",
                                                     "files"]):
            subprocess.run(["git", *args], cwd=repo, check=True)
        kinds = {"git worktree": Workspaces(repo, Path(tmp) / "run-w" / "workspaces", "bench"),
                 "copy": Workspaces(repo, Path(tmp) / "run-c" / "workspaces", "bench", patterns=["*"])}
        for kind, spaces in kinds.items():
            spaces.prepare()
            made, removed = [], []
            for n in range(rounds):
                start = time.perf_counter()
                spaces.create(n)
                made.append(time.perf_counter() - start)
                start = time.perf_counter()
                spaces.done(n, failed=False)
                removed.append(time.perf_counter() - start)
            spaces.cleanup()
            print(f"  a {kind} of {n_files} files: made in {statistics.median(made):.3f} s, removed in "
                  f"{statistics.median(removed):.3f} s (median of {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planners", default="tpe,cmaes,random,agent,llm")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--at", default="4,8,12", help="print the best after these numbers of trials")
    parser.add_argument("--overhead-trials", type=int, default=8, help="0: no overhead run")
    parser.add_argument("--files", type=int, default=1000, help="files of the repository whose workspace is timed")
    parser.add_argument("--llm", type=Path, default=REPO / "configs" / "llm.local.yaml",
                        help="routing config of the agent and llm planners")
    parser.add_argument("--jobs", type=int, default=2, help="searches run at a time (quality part)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "own_code")
    args = parser.parse_args()
    at = [int(n) for n in args.at.split(",") if int(n) <= args.trials]
    quality(args.out.absolute(), args.planners.split(","), [int(s) for s in args.seeds.split(",")], args.trials, at,
            args.jobs, args.llm.absolute())
    if args.overhead_trials:
        ratio = overhead(args.out.absolute(), args.overhead_trials)
        workspace_timing(args.files)
        print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()

"""The agent that changes code (issue 60) on the three projects of examples/code_agent/, each with a flaw no
hyperparameter fixes: ``scaling`` (inputs on very different scales), ``intercept`` (a ridge fit without an
intercept), ``capacity`` (a network too small for its data).

For one project (``--project``), for each planner of ``--planners`` and each seed of ``--seeds``, one search of
``--trials`` trials through the Python API (each in its own run folder under ``--out``; a finished one is read back,
so a stopped invocation resumes):

- ``tpe``: the space's params alone (the baseline: what a sampler does without touching the code);
- ``scripted``: a scripted model that proposes the project's known fix once, then leaves the rest to the sampler
  (it shows the machinery finds, runs and keeps a good change; it is not a measure of any model);
- ``qwen-0.5b`` / ``qwen-1.5b``: the agent on the built-in Qwen2.5-Coder model (configs/llm.qwen.yaml, llama.cpp in
  process, CPU), ``objective.unreviewed_changes: true`` (no person approves in a benchmark).

Printed per planner: the best ``val_mse`` (every seed, mean), and over the seeds: the changes proposed (edit_code
calls), refused before running (the check: a file not editable, old text not found, not parsing), run, kept,
crashed and refused after running (a protected file changed), the model's seconds per proposed change, and what the
sampler's tuning trials on the final kept version added (the best of them against the kept change's own value).
The last line, ``ratio: X``, is the best planner's mean best over TPE's (below 1: better than the sampler alone).

    python benchmarks/code_agent.py --project intercept                             # tpe, scripted, qwen-0.5b, 2 seeds
    python benchmarks/code_agent.py --project capacity --planners tpe,qwen-1.5b     # the larger model
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECTS = REPO / "examples" / "code_agent"
LLM = REPO / "configs" / "llm.qwen.yaml"
# The known fix of each project, as the scripted model proposes it (one edit_code call).
FIXES: dict[str, list[dict[str, str]]] = {
    "scaling": [{"path": "train.py", "old": "x_train, y_train, x_val, y_val = load()\n",
                 "new": "x_train, y_train, x_val, y_val = load()\nmean, std = x_train.mean(0), x_train.std(0)\n"
                        "x_train, x_val = (x_train - mean) / std, (x_val - mean) / std\n"}],
    "intercept": [{"path": "train.py", "old": "x_train, y_train, x_val, y_val = load()\n",
                   "new": "x_train, y_train, x_val, y_val = load()\nx_train = np.column_stack([x_train, "
                          "np.ones(len(x_train))])\nx_val = np.column_stack([x_val, np.ones(len(x_val))])\n"}],
    "capacity": [{"path": "model.py", "old": "HIDDEN = 2", "new": "HIDDEN = 32"}],
}


def config(project: str, seed: int, planner: str) -> dict[str, Any]:
    cfg = yaml.safe_load((PROJECTS / project / "nas.yaml").read_text(encoding="utf-8"))
    cfg["objective"]["cwd"] = str(PROJECTS / project)
    cfg["objective"]["command"] = cfg["objective"]["command"].replace("python ", f"{sys.executable} ", 1)
    cfg["objective"]["eval_command"] = cfg["objective"]["eval_command"].replace("python ", f"{sys.executable} ", 1)
    cfg["search"]["seed"] = seed
    if planner == "tpe":
        for key in ("editable", "protected"):
            cfg["objective"].pop(key, None)
        cfg["search"]["planner"] = "tpe"
    else:
        cfg["objective"]["unreviewed_changes"] = True
        cfg["search"]["planner"] = "agent"
        cfg["search"]["agent"] = {"guard_patience": 20}
    return cfg


def scripted(project: str) -> Any:
    """Reads the file, proposes the fix, then runs the sampler's candidate 0 every trial."""
    from agentlab.testing.agents import ScriptAgent

    path = FIXES[project][0]["path"]
    return ScriptAgent([("read_project", {"path": path}),
                        ("edit_code", {"edits": FIXES[project], "reason": "the known fix"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"}),
                        ("suggest", {}), ("run_trial", {"candidate": 0, "reason": "the sampler's candidate"})])


def search(out: Path, project: str, planner: str, seed: int, trials: int) -> Path:
    from agentlab.nas import run_nas_optimization
    from agentlab.testing.agents import scripted_llm

    folder = out / f"{project}-{planner}-s{seed}"
    if (folder / "results.json").is_file():
        return folder
    kwargs: dict[str, Any] = {}
    if planner == "scripted":
        kwargs["llm"] = scripted_llm(scripted(project))
    elif planner.startswith("qwen"):
        llm = yaml.safe_load(LLM.read_text(encoding="utf-8"))
        llm["routes"]["planner"] = {"primary": [planner]}
        path = out / f"llm-{planner}.yaml"
        path.write_text(yaml.safe_dump(llm))
        kwargs["llm"] = path
    start = time.perf_counter()
    resume = folder if folder.exists() else None
    run_nas_optimization(max_iterations=trials, config=None if resume else config(project, seed, planner),
                         out=None if resume else folder, resume=resume, **kwargs)
    (folder / "bench_wall.json").write_text(json.dumps({"seconds": time.perf_counter() - start}))
    return folder


def summary(folder: Path) -> dict[str, Any]:
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    rows = results.get("code_changes") or []
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [e for e in events if e.get("kind") == "agent_step" and e.get("tool") == "edit_code"]
    refused_early = sum(1 for e in events if e.get("kind") == "agent_tool" and e.get("tool") == "edit_code"
                        and str(e.get("summary", "")).startswith("not run"))
    block = results.get("agent") or {}
    trials = {e["number"]: e for e in events if e.get("kind") == "trial"}
    kept = (results.get("code_version") or {}).get("kept") or []
    tuned_gain = None
    if kept:
        base = trials.get(kept[-1], {}).get("value")
        after = [e.get("value") for n, e in trials.items() if n > kept[-1] and e.get("state") == "complete"
                 and e.get("value") is not None]
        if base and after and min(after) < base:
            tuned_gain = (base - min(after)) / base
        elif base and after:
            tuned_gain = 0.0
    return {"best": results["best"]["val_mse"] if results.get("best") else None,
            "proposed": len(steps), "refused_early": refused_early, "run": len(rows),
            "kept": sum(r["fate"] == "kept" for r in rows), "crashed": sum(r["fate"] == "crashed" for r in rows),
            "refused": sum(r["fate"] == "refused" for r in rows), "model_seconds": block.get("model_seconds", 0.0),
            "tuned_gain": tuned_gain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", choices=sorted(FIXES), required=True)
    parser.add_argument("--planners", default="tpe,scripted,qwen-0.5b")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-code-agent")
    args = parser.parse_args()
    planners = [p.strip() for p in args.planners.split(",") if p.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    table: dict[str, list[dict[str, Any]]] = {}
    for planner in planners:
        table[planner] = []
        for seed in seeds:
            started = time.perf_counter()
            folder = search(args.out, args.project, planner, seed, args.trials)
            table[planner].append(summary(folder))
            print(f"{args.project} {planner} seed {seed}: best val_mse {table[planner][-1]['best']} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\n{args.project}: best val_mse after {args.trials} trials (lower is better), seeds {seeds}")
    print("| planner | best val_mse per seed | mean | changes proposed / refused by the check / run / kept / "
          "crashed / refused after running | model s per change (no change: model s in all) | sampler's gain on "
          "the kept version |")
    print("|---|---|---:|---|---:|---|")
    means = {}
    for planner, rows in table.items():
        bests = [r["best"] for r in rows]
        means[planner] = statistics.mean(b for b in bests if b is not None)
        total = {k: sum(r[k] for r in rows) for k in ("proposed", "refused_early", "run", "kept", "crashed",
                                                       "refused")}
        seconds = sum(r["model_seconds"] for r in rows)
        per_change = f"{seconds / total['proposed']:.1f}" if total["proposed"] else f"- ({seconds:.0f} s, none)"
        gains = [f"{r['tuned_gain']:.1%}" for r in rows if r["tuned_gain"] is not None]
        changes = "-" if planner == "tpe" else " / ".join(str(total[k]) for k in total)
        print(f"| {planner} | {', '.join(f'{b:.4g}' for b in bests if b is not None)} | {means[planner]:.4g} | "
              f"{changes} | {'-' if planner in ('tpe', 'scripted') else per_change} | "
              f"{', '.join(gains) or '-'} |")
    if "tpe" in means:
        best = min((p for p in means if p != "tpe"), key=lambda p: means[p], default="tpe")
        print(f"ratio: {means[best] / means['tpe']:.3f} ({best} mean best over tpe's)")


if __name__ == "__main__":
    main()

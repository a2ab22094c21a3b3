"""The nas agent's cost on a built-in model: seconds of model time per agent trial, with prompt reuse on and off.

For each model of ``--models`` (default both built-in Qwen2.5-Coder models), each project of ``--projects``
(``own_code``: examples/own_code, the user's own PyTorch script; ``etth1``: ETTh1 at horizon 96 on the fast families,
as benchmarks/nas_planners.py sets it up) and each setting of ``--reuse`` (``on``: as agentlab runs, llama-cpp-python
keeps the KV cache of the last request and evaluates only the tokens after the common prefix; ``off``: the provider's
``prompt_cache: false``, every prompt evaluated whole), one ``agentlab nas --planner agent`` search of ``--trials``
trials (the base config first: the agent plans the rest), seed 0, the model's ``medium`` profile (as
configs/llm.qwen.yaml). Each search is a run folder under ``--out`` (a finished one is only read, an unfinished one
resumed).

The cost of a step's new tokens is measured on the same model first, in this invocation: prompt tokens per second on
a cold agent-shaped prompt of about 1,900 tokens, and generated tokens per second (as benchmarks/prompt_reuse.py).
Each agent step's event (events.jsonl) carries its prompt tokens, the tokens read from the cache and its generated
tokens; its new tokens' cost is (prompt - cached) / prompt rate + generated / generation rate.

Printed per search: the trials the agent chose, its steps, the model seconds per agent trial, the median seconds of a
step, the share of prompt tokens read from the cache, and the median (range) over steps after the first of a step's
seconds over its new tokens' cost (target: at most 1.5). Then, per model and project, off / on seconds per agent
trial. The last line, ``ratio: X``, is the median of that step ratio over the reuse-on searches.

    python benchmarks/agent_cost.py                                          # 2 models x 2 projects x on/off
    python benchmarks/agent_cost.py --models qwen2.5-coder-0.5b --projects own_code --reuse on --trials 2 \
        --out runs/bench/agent_cost-smoke                                     # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nas_planners import FAST, bench_config  # noqa: E402 - the ETTh1 setting of the planners' benchmark
from own_code import settings as own_code_settings  # noqa: E402
from prompt_reuse import step_messages  # noqa: E402 - the agent-shaped prompt whose cold cost gives the rate

REPO = Path(__file__).resolve().parents[1]
MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
PROJECTS = ("own_code", "etth1")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}


def rates(model: str, threads: int | None) -> tuple[float, float]:
    """Prompt and generation tokens per second of ``model`` on a cold prompt (no cache), in this process."""
    from agentlab.core.llm.config import LLMConfig
    from agentlab.core.llm.providers.llama_cpp import LlamaCppProvider, unload_all
    from agentlab.core.llm.types import GenParams

    cfg = LLMConfig.model_validate({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 8192, "n_threads": threads}},
                                    "models": {"m": {"provider": "local", "model": model}}})
    provider = LlamaCppProvider("local", cfg.providers["local"])  # type: ignore[arg-type]
    loaded = provider.load(model)

    async def timed(messages: list[dict[str, Any]], max_tokens: int) -> tuple[float, Any]:
        loaded.snapshots.clear()  # a cold prompt: nothing cached, no snapshot to put back (prompt_states)
        loaded.llm.reset()
        start = time.perf_counter()
        done = await provider.generate(model, messages, GenParams(temperature=0.0, max_tokens=max_tokens), 600)
        return time.perf_counter() - start, done

    gen_s, plain = asyncio.run(timed([{"role": "user", "content": "Count from 1 to 60 in words."}], 96))
    gen_rate = plain.usage.completion_tokens / gen_s  # its prompt is a few tokens
    cold_s, cold = asyncio.run(timed(step_messages(6), 1))
    prompt_rate = cold.usage.prompt_tokens / max(cold_s - cold.usage.completion_tokens / gen_rate, 1e-6)
    unload_all()
    return prompt_rate, gen_rate


def llm_config(folder: Path, model: str, reuse: bool, threads: int | None) -> Path:
    path = folder / f"llm-{model}-{'on' if reuse else 'off'}.yaml"
    path.write_text(yaml.safe_dump({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 8192, "cache_type": "f16", "seed": 0,
                                "prompt_cache": reuse, "n_threads": threads}},
        "models": {"m": {"provider": "local", "model": model, "profile": "medium",
                         "params": {"temperature": 0, "max_tokens": 512}}},
        "routes": {"default": {"primary": ["m"]}, "planner": {"primary": ["m"]}},
        "timeout_s": 600, "retries": 1}, sort_keys=False))
    return path


def nas_config(out: Path, project: str, data: Path) -> Path:
    if project == "etth1":
        args = argparse.Namespace(families=FAST, base=None, data=data, epochs=6, out=out)
        return bench_config("etth1", args)
    path = out / "own_code.yaml"
    path.write_text(yaml.safe_dump(own_code_settings(0), sort_keys=False))
    return path


def search(out: Path, model: str, project: str, reuse: bool, trials: int, data: Path, threads: int | None) -> Path:
    """One agent search (resumed when unfinished); its run folder."""
    folder = out / f"{model}-{project}-{'on' if reuse else 'off'}"
    if (folder / "results.json").is_file():
        ran = json.loads((folder / "results.json").read_text(encoding="utf-8"))["trials"]
        used = yaml.safe_load((folder / "llm.yaml").read_text(encoding="utf-8"))["providers"]["local"]
        if ran != trials or used.get("n_threads") != threads or used.get("prompt_cache", True) != reuse:
            raise SystemExit(f"{folder}: a search of {ran} trials, n_threads {used.get('n_threads')}, not this "
                             "invocation's settings: give another --out")
        return folder
    llm = llm_config(out, model, reuse, threads)
    args = ["--resume", str(folder)] if folder.exists() else ["-c", str(nas_config(out, project, data)),
                                                              "--out", str(folder)]
    start = time.perf_counter()
    with open(out / f"{folder.name}.log", "a") as log:
        done = subprocess.run([sys.executable, "-m", "agentlab.cli", "nas", *args, "--planner", "agent",
                               "--max-iterations", str(trials), "--llm", str(llm)], cwd=out, stdout=log,
                              stderr=subprocess.STDOUT, env={**ENV, "AGENTLAB_RUNS": str(out / "home" / folder.name)})
    if done.returncode != 0:
        raise SystemExit(f"{folder.name}: agentlab nas exited {done.returncode}; see {out / (folder.name + '.log')}")
    print(f"done: {folder.name} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return folder


def steps(folder: Path) -> list[dict[str, Any]]:
    """Each agent step's event, the last one per step number (a step with parallel calls logs one event per call,
    the same figures; a step interrupted by a kill is asked again under its number)."""
    seen: dict[int, dict[str, Any]] = {}
    for line in (folder / "events.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("kind") == "agent_step" and "prompt_tokens" in event:
            seen[event["step"]] = event
    return [seen[k] for k in sorted(seen)]


def row(folder: Path, rate: tuple[float, float]) -> dict[str, Any]:
    agent = json.loads((folder / "results.json").read_text(encoding="utf-8"))["agent"]
    prompt_rate, gen_rate = rate
    ratios, seconds = [], []
    for k, step in enumerate(steps(folder)):
        new = step["prompt_tokens"] - step["cached_tokens"]
        cost = new / prompt_rate + max(step["tokens"] - step["prompt_tokens"], 0) / gen_rate
        seconds.append(step["seconds"])
        # not the first step (its prompt is new), nor one whose call the router rejected (its seconds hold a retry)
        if k and step["prompt_tokens"] and not step.get("invalid") and cost > 0:
            ratios.append(step["seconds"] / cost)
    return {"agent_trials": f"{agent['trials_by_agent']} / {agent['trials_by_guard']}", "steps": agent["steps"],
            "s_per_trial": agent["seconds_per_trial"],
            "s_per_step": statistics.median(seconds) if seconds else 0.0,
            "cached_share": agent["cached_tokens"] / max(agent["prompt_tokens"], 1), "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--projects", default=",".join(PROJECTS), help="own_code and/or etth1")
    parser.add_argument("--reuse", default="on,off", help="on and/or off")
    parser.add_argument("--trials", type=int, default=4, help="trials of each search, the base config included")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ETTh1.csv")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own, half the "
                        "cores); the trials run between the agent's steps, not beside them")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "agent_cost")
    args = parser.parse_args()
    models, projects = args.models.split(","), args.projects.split(",")
    reuses = [r == "on" for r in args.reuse.split(",")]
    if set(projects) - set(PROJECTS) or set(args.reuse.split(",")) - {"on", "off"}:
        sys.exit(f"error: --projects takes {', '.join(PROJECTS)}; --reuse takes on, off")
    if "etth1" in projects and not args.data.is_file():
        sys.exit(f"error: {args.data}: not found (give --data ETTh1.csv, or --projects own_code)")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    measured: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for model in models:
        rate = rates(model, args.threads)
        print(f"{model}: prompt {rate[0]:.0f} tok/s (cold), generation {rate[1]:.1f} tok/s", flush=True)
        for project in projects:
            for reuse in reuses:
                folder = search(args.out, model, project, reuse, args.trials, args.data.resolve(), args.threads)
                measured[(model, project, reuse)] = row(folder, rate)
    print("\n| model | project | prompt reuse | trials by the agent / its guard | steps | model s / agent trial | "
          "s / step (median) | prompt tokens from cache | step / its new tokens' cost: median (range) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, project, reuse), m in measured.items():
        spread = (f"{statistics.median(m['ratios']):.2f} ({min(m['ratios']):.2f}-{max(m['ratios']):.2f})"
                  if m["ratios"] else "-")
        print(f"| {model} | {project} | {'on' if reuse else 'off'} | {m['agent_trials']} | {m['steps']} | "
              f"{m['s_per_trial']:.1f} | {m['s_per_step']:.1f} | {100 * m['cached_share']:.0f}% | {spread} |")
    for model in models:
        for project in projects:
            on, off = measured.get((model, project, True)), measured.get((model, project, False))
            if on and off and on["s_per_trial"]:
                gain = off["s_per_trial"] / on["s_per_trial"]
                print(f"{model} {project}: off / on seconds per agent trial {gain:.2f}x")
    print(f"\nrun folders under {args.out}")
    on_ratios = [statistics.median(m["ratios"]) for (_, _, reuse), m in measured.items() if reuse and m["ratios"]]
    if on_ratios:
        print(f"ratio: {statistics.median(on_ratios):.3f}")


if __name__ == "__main__":
    main()

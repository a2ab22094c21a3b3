"""LightEval beside lm-evaluation-harness on the same items: agentlab's bundled multiple-choice tasks, offline.

Run by agentlab's python; LightEval runs in its own venv (benchmarks/peers/lighteval/README.md makes it):

    .venv/bin/python benchmarks/peers/lighteval_vs_lmeval.py --model MODEL_DIR --limit 20

1. ``agentlab eval`` scores the tasks with lm-eval (``--set chat_template=false``: LightEval gets no chat template
   either) and keeps lm-eval's samples: for each item the context and the continuations it scored.
2. Those exact strings are written out as items (``<task>.jsonl``: query, choices, gold) and LightEval scores them
   with its transformers backend (``lighteval/run_lighteval.py``, in LightEval's venv, its ``loglikelihood_acc``).
3. Per task: the two accuracies, on how many items both picked the same choice, and the largest difference of a
   choice's log-likelihood between the two (items matched by their query).

Scoring is deterministic (log-likelihoods of fixed strings, no sampling), so there is one run, no seed. The last
line is ``ratio: X``: LightEval's mean accuracy over lm-eval's. ``--model`` is a transformers folder (LightEval loads
nothing else here): ``agentlab models export-hf smollm2-135m --out DIR`` writes the built-in model as one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_PYTHON = HERE / "lighteval" / ".venv" / "bin" / "python"
TASKS = ["agentlab_arithmetic_mc", "agentlab_capitals_mc", "agentlab_units_mc"]


def lm_eval(model: str, tasks: list[str], limit: int, out: Path) -> tuple[dict[str, float], dict[str, list], float]:
    """Accuracy per task and lm-eval's samples per task, from one `agentlab eval` run into ``out``."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "agentlab", "eval", "--model", model, "--tasks", ",".join(tasks), "--limit",
           str(limit), "--set", "chat_template=false", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"agentlab eval failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    seconds = time.perf_counter() - start
    rows = json.loads(done.stdout)["rows"]["base"]
    acc = {r["task"]: r["value"] for r in rows if r["metric"] == "acc"}
    samples = {t: [json.loads(line) for line in (out / "lm-eval" / "base" / f"samples_{t}.jsonl").open()]
               for t in tasks}
    return acc, samples, seconds


def export_items(samples: dict[str, list[dict[str, Any]]], folder: Path) -> None:
    """lm-eval's context and continuations of each item, as LightEval's driver reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    for task, rows in samples.items():
        with (folder / f"{task}.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps({"query": r["arguments"][0][0], "choices": [a[1] for a in r["arguments"]],
                                    "gold": r["target"]}) + "\n")


def lighteval(python: Path, model: str, items: Path, out: Path) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    cmd = [str(python), str(HERE / "lighteval" / "run_lighteval.py"), "--model", model, "--items", str(items),
           "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"LightEval failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(out.read_text()), time.perf_counter() - start


def compare(samples: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> tuple[int, int, float]:
    """(items both scored, items where both picked the same choice, largest |log-likelihood difference|)."""
    by_query = {item["query"]: item for item in theirs}
    matched = same = 0
    worst = 0.0
    for r in samples:
        other = by_query.get(r["arguments"][0][0])
        if other is None:
            continue
        ours = [resp[0] for resp in r["filtered_resps"]]
        matched += 1
        same += max(range(len(ours)), key=ours.__getitem__) == max(range(len(ours)), key=other["logprobs"].__getitem__)
        worst = max(worst, *(abs(a - b) for a, b in zip(ours, other["logprobs"], strict=True)))
    return matched, same, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a transformers model folder")
    parser.add_argument("--tasks", default=",".join(TASKS), help="bundled multiple-choice tasks, comma-separated")
    parser.add_argument("--limit", type=int, default=20, help="first N items of each task")
    parser.add_argument("--lighteval-python", type=Path, default=DEFAULT_PYTHON, help="the python of LightEval's venv")
    args = parser.parse_args(argv)
    if not args.lighteval_python.is_file():
        sys.exit(f"no LightEval venv at {args.lighteval_python}: make it as benchmarks/peers/lighteval/README.md says")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        acc, samples, lm_seconds = lm_eval(args.model, tasks, args.limit, work / "lm-eval-run")
        export_items(samples, work / "items")
        theirs, le_seconds = lighteval(args.lighteval_python, args.model, work / "items", work / "lighteval.json")
    print(f"model {args.model}, first {args.limit} items of each task, no chat template, CPU")
    print("| task | items | lm-eval acc | LightEval acc | same choice | max |Δ log-likelihood| |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        matched, same, worst = compare(samples[task], theirs[task]["items"])
        print(f"| {task} | {matched} | {acc[task]:.3f} | {theirs[task]['acc']:.3f} | {same}/{matched} | {worst:.2e} |")
    print(f"wall time: lm-eval (agentlab eval, model load included) {lm_seconds:.1f} s, LightEval {le_seconds:.1f} s")
    mean_lm = sum(acc[t] for t in tasks) / len(tasks)
    mean_le = sum(theirs[t]["acc"] for t in tasks) / len(tasks)
    print(f"ratio: {mean_le / mean_lm:.3f}" if mean_lm else "ratio: n/a (lm-eval's mean accuracy is 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

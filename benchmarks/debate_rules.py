"""Debate decision rules against the vote: which rule and visibility `agentlab debate` should use by default.

Three persona adapters on the built-in SmolLM2-135M (``adapters/persona_a``, ``_b``, ``_c``: ``agentlab
train-persona --data persona_X --out adapters/persona_X``) answer three tasks through ``agentlab debate eval``:

- ``easy``: 100 questions a+b (numbers 0-20), ``agentlab debate make-task --difficulty easy``;
- ``medium``: 100 questions a+b*c (0-10);
- ``capitals``: the 33 capitals of the bundled lm-eval task (``agentlab/core/harness/bundled/capitals.jsonl``), a
  text answer.

On each: every agent alone, the majority of round 0, self-consistency at equal compute, the debate's vote after each
round and every decision rule (``vote``, ``last_round``, ``all_rounds``, ``on_disagreement``, ``keep_round0``) under
every visibility (``full``, ``answer``, ``answer_confidence``), with 95% Wilson intervals and tokens per question. Each
task's run folder is kept under ``--out``: run again, finished questions are not asked again.

The verdict: among the rule x visibility pairs never below the round-0 majority on any task, the one with the best
mean accuracy (ties: fewer tokens) is the default to set in ``agentlab/debate/config.py`` (``rule``,
``visibility``). ``vote`` (round 0's vote, no debate round) is one of the candidates: the round-0 majority weighted
by the vote method, so unless a rule that debates does better, the default asks no debate round. Target: the default
at or above the round-0 majority on every task, and at or below its compute when ``on_disagreement`` is the
default. The last line is ``ratio: X``: the chosen pair's mean accuracy over the round-0 majority's.

    python benchmarks/debate_rules.py                          # the three tasks, 2 rounds, concurrency 8
    python benchmarks/debate_rules.py --limit 20 --rounds 1    # a quick look
    python benchmarks/debate_rules.py --adapters A B C --base-model smollm2-135m --out runs/bench-debate-rules
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ("easy", "medium", "capitals")


def write_tasks(folder: Path, limit: int | None) -> dict[str, Path]:
    from agentlab.core.debate.task import make_task, write_task
    from agentlab.core.harness.taskdata import TASKS_DIR

    folder.mkdir(parents=True, exist_ok=True)
    capitals = [json.loads(line) for line in (TASKS_DIR / "capitals.jsonl").read_text().splitlines()]
    rows = {"easy": make_task(100, "easy", 0), "medium": make_task(100, "medium", 0),
            "capitals": [{"question": r["question"], "answer": r["answer"]} for r in capitals]}
    paths = {}
    for name, items in rows.items():
        paths[name] = folder / f"{name}.jsonl"
        write_task(paths[name], items[:limit] if limit else items, force=True)
    return paths


def run_task(args: argparse.Namespace, name: str, task: Path) -> dict[str, Any]:
    from agentlab.core.runs import run_in_folder
    from agentlab.debate import DebateConfig, prepare_eval, run_eval

    cfg = DebateConfig.model_validate({
        "name": f"rules-{name}", "base_model": args.base_model, "rounds": args.rounds, "decision": "reconcile",
        "agents": [{"adapter": str(a)} for a in args.adapters], "device": args.device,
        "eval": {"task": str(task), "concurrency": args.concurrency}})
    folder = args.out / name
    resume = folder if (folder / "run.json").is_file() else None
    results, _ = run_in_folder("debate-eval", cfg, run_eval, inputs=prepare_eval(cfg),
                               out=None if resume else folder, resume=resume)
    return results  # type: ignore[no-any-return]


def verdict(tables: dict[str, dict[str, dict[str, Any]]]) -> tuple[str | None, float, list[str]]:
    """The best rule row never below the round-0 majority on any task, its ratio to the majority, and the lines."""
    majority = {t: rows["majority of round 0"]["accuracy"] for t, rows in tables.items()}
    candidates = sorted({m for rows in tables.values() for m in rows if m.startswith("rule ")})
    lines, ok = [], []
    for m in candidates:
        gaps = {t: rows[m]["accuracy"] - majority[t] for t, rows in tables.items()}
        mean = sum(rows[m]["accuracy"] for rows in tables.values()) / len(tables)
        tokens = sum(rows[m]["tokens_per_question"] for rows in tables.values()) / len(tables)
        safe = all(g >= 0 for g in gaps.values())
        lines.append(f"{m:40s} mean {mean:.3f}  worst gap to majority {min(gaps.values()):+.3f}  "
                     f"tokens/q {tokens:.0f}{'' if safe else '  (below the majority somewhere)'}")
        if safe:
            ok.append((mean, -tokens, m))
    base = sum(majority.values()) / len(majority)
    if not ok:
        return None, 1.0, lines
    mean, _, best = max(ok)
    return best, (mean / base if base else float("inf")), lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", nargs="+", type=Path, default=[Path("adapters") / f"persona_{x}" for x in "abc"])
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions of each task")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench-debate-rules")
    args = parser.parse_args()
    missing = [str(a) for a in args.adapters if not Path(a).is_dir()]
    if missing:
        print(f"error: no adapter folder {missing[0]}; train it: agentlab train-persona --data persona_a --out "
              "adapters/persona_a (b, c), or pass --adapters", file=sys.stderr)
        return 2
    paths = write_tasks(args.out / "tasks", args.limit)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    from agentlab.core.errors import AgentlabError

    for name in args.tasks:
        try:
            results = run_task(args, name, paths[name])
        except AgentlabError as exc:  # e.g. questions whose model calls failed: not scored, asked again on a rerun
            print(f"error: task {name}: {exc.message}\nrun the same command again to resume", file=sys.stderr)
            return 1
        tables[name] = {r["method"]: r for r in results["table"]}
        print(f"\n## {name}: {results['questions']} questions, {results['rounds']} rounds")
        print(f"{'method':40s} {'accuracy':>8s} {'95% CI':>13s} {'tokens/q':>9s}")
        for r in results["table"]:
            print(f"{r['method']:40s} {r['accuracy']:8.3f} {r['ci'][0]:6.3f}-{r['ci'][1]:.3f} "
                  f"{r['tokens_per_question']:9.1f}")
    best, ratio, lines = verdict(tables)
    print("\n## every rule x visibility over the tasks")
    print("\n".join(lines))
    print(f"\ndefault: {best or 'none is never below the round-0 majority: keep the vote of round 0 (rule vote)'}")
    (args.out / "summary.json").write_text(json.dumps({"tables": tables, "default": best, "ratio": ratio}, indent=1))
    print(f"ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The debates the parity test runs (``test_debate_graph.py``): the bundled tasks (make-task easy and medium, the
capitals of the bundled lm-eval task) on scripted agents whose greedy reply is a function of everything they are
shown (so a changed prompt, order or round changes the bytes), every decision rule, a judge, and `debate eval`.

``python tests/debate/parity_cases.py`` wrote ``data/parity/`` with the engine before the LangGraph one (commit
c50e92e); the test runs the same cases on today's engine and compares the files byte for byte. Timings are the one
field that is not a function of the seeds: the clock is frozen (every ``seconds`` is 0). Recorded again when the
ReConcile vote's weight of an answer stating no confidence became the documented 0.5 (it was binned to 0.1): the
votes and the winners they decide changed, no transcript did; and when results.json gained ``first_error``, then
``stop_reason`` (null in every case: nothing else changed). The judge's label (results.json's ``judge``, report.md's
``judge:``) was edited by hand when it came to name what answers for a routing config with no ``judge`` route (its
models in file order), not a judge route it lacks; no answer changed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "parity"
LLM = "providers:\n  s: {kind: scripted}\nmodels:\n" + "".join(f"  {x}: {{provider: s, model: {x}}}\n" for x in "abc")
CAPITALS = ("Lima", "Canberra", "Paris", "Rome", "New Delhi")


def greedy(model: str, messages: list[dict[str, str]], params: Any) -> str:
    """A deterministic agent: its answer depends on the model, every message it is shown and the temperature."""
    digest = hashlib.sha256(json.dumps([model, messages, params.temperature]).encode()).digest()
    question = messages[0]["content"].split("\n")[0]
    confidence = 40 + digest[1] % 60
    if "capital" in question:
        return f"I think it is {CAPITALS[digest[3] % 5]}.\nAnswer: {CAPITALS[digest[0] % 5]}\nConfidence: {confidence}%"
    if question.startswith("Several agents"):  # the judge
        return f"Having read them: Answer: {digest[0] % 20}"
    found = re.search(r"result of ([\d+*\-]+)\?", question) or re.search(r"What is (\d+) plus (\d+)", question)
    if found is None:
        return ("Yes, mostly." if digest[0] % 2 else "Stance: no") + f"\nConfidence: {confidence}%"
    value = eval(found.group(1), {"__builtins__": {}}) if found.lastindex == 1 else sum(map(int, found.groups()))
    if digest[0] % 4 == 0:
        return "no idea"
    return f"that be {value + digest[2] % 3 - 1}, matey\nConfidence: {confidence}%" if digest[0] % 2 else \
        f"{value + digest[2] % 2}."


def tasks(folder: Path) -> dict[str, Path]:
    """The three bundled tasks' first six questions, as files named relative to ``folder`` (the current one)."""
    from agentlab.core.debate.task import make_task, write_task
    from agentlab.core.harness.taskdata import TASKS_DIR

    capitals = [json.loads(line) for line in (TASKS_DIR / "capitals.jsonl").read_text().splitlines()]
    rows = {"easy": make_task(6, "easy", 0), "medium": make_task(6, "medium", 0),
            "capitals": [{"question": r["question"], "answer": r["answer"]} for r in capitals[:6]]}
    paths = {}
    for name, items in rows.items():
        paths[name] = Path(f"{name}.jsonl")
        write_task(folder / paths[name], items, force=True)
    return paths


RUNS: dict[str, dict[str, Any]] = {
    "easy-last_round": {"task": "easy", "index": 0, "rounds": 2, "rule": "last_round"},
    "medium-on_disagreement": {"task": "medium", "index": 1, "rounds": 3, "rule": "on_disagreement",
                               "visibility": "answer"},
    "medium-keep_round0": {"task": "medium", "index": 2, "rounds": 2, "rule": "keep_round0",
                           "visibility": "answer_confidence", "decision": "confidence"},
    "capitals-all_rounds": {"task": "capitals", "index": 3, "rounds": 2, "rule": "all_rounds", "kind": "text"},
    "easy-judge": {"task": "easy", "index": 4, "rounds": 1, "rule": "last_round", "decision": "judge",
                   "judge": "a"},
    "easy-vote": {"task": "easy", "index": 5, "rule": "vote"},
    "open-topic": {"topic": "Should cities ban cars?", "rounds": 1, "rule": "last_round", "judge": "c"},
}
OUTPUTS = ("transcript.jsonl", "results.json", "report.md")
EVAL_OUTPUTS = ("results.json", "report.md")


def produce(root: Path) -> dict[str, dict[str, bytes]]:
    """Every case run in ``root`` (the clock frozen by the caller): ``{case: {file: bytes}}``; questions.jsonl of
    the evals sorted by line (its questions finish concurrently, in any order)."""
    from agentlab.core.llm.providers.scripted import ScriptedProvider
    from agentlab.core.runs import run_in_folder
    from agentlab.debate.config import DebateConfig
    from agentlab.debate.evaluate import prepare_eval, run_eval
    from agentlab.debate.run import prepare, run

    (root / "llm.yaml").write_text(LLM)  # root is the current folder: results name the task files relatively
    paths = tasks(root)
    agents = [{"model": x} for x in "abc"]
    out: dict[str, dict[str, bytes]] = {}
    for name, case in RUNS.items():
        fields = {k: v for k, v in case.items() if k not in ("task", "index")}
        if "task" in case:
            line = (root / paths[case["task"]]).read_text().splitlines()[case["index"]]
            fields["topic"] = json.loads(line)["question"]
        cfg = DebateConfig.model_validate({"llm": root / "llm.yaml", "agents": agents, **fields})
        _, folder = run_in_folder("debate", cfg, run, out=root / "runs" / name,
                                  inputs={**prepare(cfg), "providers": {"s": ScriptedProvider("s", [greedy])}})
        out[name] = {f: (folder / f).read_bytes() for f in OUTPUTS}
    for task in ("easy", "medium", "capitals"):
        for decision in ("reconcile", "judge"):
            name = f"eval-{task}-{decision}"
            cfg = DebateConfig.model_validate({
                "llm": root / "llm.yaml", "agents": agents, "rounds": 2, "rule": "on_disagreement",
                "decision": decision, **({"judge": "b"} if decision == "judge" else {}),
                "eval": {"task": paths[task], "concurrency": 3}})
            _, folder = run_in_folder("debate-eval", cfg, run_eval, out=root / "runs" / name,
                                      inputs={**prepare_eval(cfg), "providers": {"s": ScriptedProvider("s", [greedy])}})
            files = {f: (folder / f).read_bytes() for f in EVAL_OUTPUTS}
            lines = (folder / "questions.jsonl").read_text().splitlines()
            files["questions.jsonl"] = "".join(
                line + "\n" for line in sorted(lines, key=lambda x: json.loads(x)["line"])).encode()
            out[name] = files
    return out


def frozen_clock() -> Any:
    """Patch ``time.perf_counter`` to 0 (what makes the ``seconds`` fields comparable); returns the undo."""
    real = time.perf_counter
    time.perf_counter = lambda: 0.0  # type: ignore[assignment]

    def undo() -> None:
        time.perf_counter = real  # type: ignore[assignment]
    return undo


def record(root: Path) -> None:
    undo = frozen_clock()
    try:
        produced = produce(root)
    finally:
        undo()
    if DATA.exists():
        shutil.rmtree(DATA)
    for case, files in produced.items():
        (DATA / case).mkdir(parents=True)
        for name, data in files.items():
            (DATA / case / name).write_bytes(data)


if __name__ == "__main__":
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        record(Path(tmp))
    print(f"recorded {len(list(DATA.iterdir()))} cases in {DATA}", file=sys.stderr)

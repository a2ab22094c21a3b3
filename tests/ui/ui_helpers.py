"""Small synthetic run folders for the UI tests, written by the tests (the shapes of the files are those the commands
write: run.json, results.json, events.jsonl, report.md with its PNG plots, and each command's own files)."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import struct
import zlib
from pathlib import Path
from typing import Any


def png(path: Path, width: int = 40, height: int = 24, rgb: tuple[int, int, int] = (200, 60, 40)) -> Path:
    """A real PNG of one colour (zlib + struct: no image library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def run_folder(root: Path, command: str, name: str, *, status: str = "completed",
               started: str = "2026-01-02T10:00:00+00:00", ended: str | None = "2026-01-02T10:03:05+00:00",
               results: Any = None, config: str = "",
               events: list[dict[str, Any]] | None = None, report: str | None = None,
               files: dict[str, Any] | None = None) -> Path:
    """``root/command/name`` with run.json and whatever else is given (dicts and lists are written as JSON)."""
    path = root / command / name
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"command": command, "started": started, "ended": ended,
                                               "status": status, "argv": ["agentlab", command]}))
    (path / "config.yaml").write_text(f"# agentlab {command} -c {shlex.quote(str(path / 'config.yaml'))}\n{config}")
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))
    if events is not None:
        (path / "events.jsonl").write_text("".join(json.dumps({"ts": 1767348000 + i, **e}) + "\n"
                                                   for i, e in enumerate(events)))
    if report is not None:
        (path / "report.md").write_text(report)
    for rel, content in (files or {}).items():
        file = path / rel
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def hold_lock(path: Path) -> int:
    """Own the run folder as its live process would (an flock on run.lock); close the fd to let go."""
    fd = os.open(path / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _trial(n: int, val: float, accepted: bool, changes: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": f"run_{n:04d}", "trial": n, "state": "complete", "val_mse": val, "test_mse": val + 0.01,
            "n_params": 1000 + n, "epochs": 2, "accepted": accepted, "reason": "rule",
            "planner": "tpe" if n else "base", "changes": changes}


def nas_run(root: Path, name: str = "20260102-100000-nas") -> Path:
    path = run_folder(
        root, "nas", name, config="search:\n  max_iterations: 3\n",
        results={"best": {"run_id": "run_0001", "val_mse": 0.25}, "trials": 2},
        events=[{"kind": "epoch", "trial": 0, "epoch": 1, "val_mse": 0.5},
                {"kind": "trial", "number": 0, "state": "complete", "value": 0.5, "run_id": "run_0000"},
                {"kind": "trial", "number": 1, "state": "complete", "value": 0.25, "run_id": "run_0001"}],
        report="# agentlab nas\n\nBest: **run_0001**\n\n## Plots\n\n![optimisation history](optimization_history.png)\n"
               "![learning curve](trials/run_0001/learning_curve.png)\n![tracker](http://example.invalid/t.png)\n",
        files={"agent_state.json": {"best_run_id": "run_0001", "runs": [
            _trial(0, 0.5, True, {}), _trial(1, 0.25, True, {"model.d_model": 64, "train.learning_rate": 0.003})]},
            "trials/run_0001/history.json": [{"epoch": 1, "train_loss": 0.4, "val_mse": 0.3},
                                             {"epoch": 2, "train_loss": 0.3, "val_mse": 0.25}]})
    png(path / "optimization_history.png")
    png(path / "trials" / "run_0001" / "learning_curve.png", rgb=(40, 60, 200))
    return path


def running_nas(root: Path) -> tuple[Path, int]:
    """A NAS run in progress (its lock held): 1 of 5 trials done, trial 1 at epoch 2."""
    path = run_folder(root, "nas", "20260103-090000-nas", status="running", ended=None,
                      config="search:\n  max_iterations: 5\n",
                      events=[{"kind": "trial", "number": 0, "state": "complete", "value": 0.42, "run_id": "run_0000"},
                              {"kind": "epoch", "trial": 1, "epoch": 2, "val_mse": 0.39}],
                      files={"agent_state.json": {"runs": [_trial(0, 0.42, True, {})]}})
    return path, hold_lock(path)


def debate_run(root: Path) -> Path:
    vote = {"winner": "12", "text": "12", "votes": [{"answer": "12", "text": "12", "weight": 0.9, "count": 2,
                                                      "voters": ["a", "b"]},
                                                     {"answer": "13", "text": "13", "weight": 0.1, "count": 1,
                                                      "voters": ["c"]}]}
    turns = [{"round": r, "agent": a, "text": f"{a} says {ans}", "answer": ans, "confidence": 0.9 if a == "b" else None}
             for r in (0, 1) for a, ans in (("a", "12"), ("b", "12"), ("c", "13"))]
    return run_folder(root, "debate", "20260102-110000-debate", config="topic: What is 3 times 4?\nrounds: 1\n",
                      results={"question": "What is 3 times 4?", "final": {"answer": "12", "method": "reconcile"},
                               "per_round": [{"round": r, "vote": vote, "agreement": 0.6667} for r in (0, 1)]},
                      files={"transcript.jsonl": "".join(json.dumps(t) + "\n" for t in turns)})


def evolve_run(root: Path) -> Path:
    seed = {"generation": 0, "origin": "seed", "parents": [], "weights": [], "state": "complete"}
    ind = {"persona_a": {**seed, "task": 0.5}, "persona_b": {**seed, "task": 0.25},
           "g1c0": {"generation": 1, "origin": "blend", "parents": ["persona_a", "persona_b"], "weights": [0.7, 0.3],
                    "task": 0.75, "state": "complete"}}
    best = {"id": "g1c0", "fitness": 0.8, "task": 0.75}
    history = [{"generation": 0, "members": [{"id": "persona_a", "fitness": 0.55}], "best": {"fitness": 0.55},
                "mean": {"fitness": 0.4}},
               {"generation": 1, "members": [best], "best": best, "mean": {"fitness": 0.6}}]
    return run_folder(root, "evolve", "20260102-120000-evolve",
                      results={"individuals": ind, "best": best, "history": history})


def compress_run(root: Path) -> Path:
    def exp(i: int, label: str, speedup: float, ppl: float) -> dict[str, Any]:
        return {"index": i, "label": label, "state": "done", "feasible": True, "derived": {"speedup": speedup},
                "metrics": {"perplexity": ppl, "accuracy": 0.5, "size_mb": 10.0 / speedup}}

    experiments = [exp(0, "base model", 1.0, 20.0), exp(1, "gguf Q8_0", 3.0, 21.0), exp(2, "prune 50%", 1.2, 40.0)]
    return run_folder(root, "compress", "20260102-130000-compress",
                      results={"recommended": {"index": 1, "label": "gguf Q8_0", "feasible": True}, "front": [1],
                               "experiments": experiments, "counts": {"experiments": 2}})


def bench_run(root: Path) -> Path:
    def model(name: str, ok: bool) -> dict[str, Any]:
        timing = {"p50": 0.1, "p90": 0.2, "p99": 0.3} if ok else {"p50": None, "p90": None, "p99": None}
        return {"name": name, "available": ok, "error_kind": None if ok else "server_error",
                "requests": 4 if ok else 0, "ok": 4 if ok else 0, "ttft_s": timing, "latency_s": timing,
                "output_tokens_per_s": 50.0 if ok else None,
                "levels": [{"concurrency": 1, "requests": 4, "ok": 4, "ttft_s": timing, "latency_s": timing,
                            "output_tokens_per_s": 50.0, "requests_per_s": 9.5,
                            "throughput_tokens_per_s": 180.0}] if ok else []}

    return run_folder(root, "llm-bench", "20260102-140000-llm-bench", results={
        "models": [model("fast", True), model("dead", False)], "available": ["fast"], "fastest": "fast"})


def all_runs(root: Path) -> dict[str, Path]:
    """One finished run of each command with a view, a failed one with a damaged results.json."""
    broken = run_folder(root, "pipeline", "20260101-090000-broken", status="failed", results=None)
    (broken / "results.json").write_bytes(b"\xff\xfe not json")
    return {"nas": nas_run(root), "debate": debate_run(root), "evolve": evolve_run(root),
            "compress": compress_run(root), "llm-bench": bench_run(root), "broken": broken}


def models_file(folder: Path, gguf: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    """A models.yaml whose models all use the tiny GGUF ``gguf`` (greedy, a few tokens: fast and deterministic)."""
    lines = ["# agentlab models check models.yaml", f"models_directory: {gguf.parent}",
             "defaults: {n_ctx: 256, n_threads: 1, params: {temperature: 0.0, max_tokens: 6}}", "models:"]
    lines += [f"  {n}: {{file: {gguf.name}}}" for n in names]
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def own_nas_run(root: Path, name: str, values: list[float | None], *, metric: str = "val_acc",
                direction: str = "maximize", status: str = "completed") -> Path:
    """A nas run of the user's own command (``objective:`` in its config, as `agentlab nas` writes it): one trial per
    value (None: a failed trial), each under the metric's own name in agent_state.json and the trial events."""
    runs = [{"run_id": f"run_{n:04d}", "trial": n, "state": "complete" if v is not None else "failed", metric: v,
             "accepted": v is not None, "reason": "rule", "planner": "tpe" if n else "base",
             "changes": {"lr": 0.1 * (n + 1)} if n else {}} for n, v in enumerate(values)]
    events = [{"kind": "trial", "number": n, "state": r["state"], "value": v, "run_id": r["run_id"],
               "metrics": {metric: v, "value": v} if v is not None else {}}
              for n, (r, v) in enumerate(zip(runs, values, strict=True))]
    return run_folder(root, "nas", name, status=status, ended=None if status == "running" else
                      "2026-01-02T10:03:05+00:00",
                      config=f"search:\n  max_iterations: 5\nobjective:\n  command: python train.py {{args}}\n"
                             f"  metric: {metric}\n  direction: {direction}\n",
                      events=events, files={"agent_state.json": {"metric": metric, "runs": runs}})


def step_record(index: int, stage: str, output: str = "42") -> dict[str, Any]:
    """A pipeline step file (steps/NN-STAGE.json) of the shape `agentlab pipeline run` writes."""
    return {"index": index, "stage": stage, "type": "single", "input": "q", "output": output,
            "outputs": [{"model": "a", "text": output, "completion_tokens": 2, "seconds": 0.1}],
            "prompt_tokens": 5, "completion_tokens": 2, "seconds": 0.1, "reused": False}

"""What `agentlab pipeline` costs over calling llama-cpp-python yourself.

An N-stage pipeline of single stages over tiny GGUF models (alternating between --models distinct files) runs
through `agentlab.pipeline.run` (router, llama_cpp provider, worker threads, run folder with a step file per
stage, events). The baseline replays exactly the same generations — the messages each stage sent, the same
sampling parameters — through `llama_cpp.Llama.create_chat_completion` in a plain loop, on the same Llama objects
the pipeline loaded. Rounds alternate which side goes first; the medians are compared. Both sides must produce
the same number of tokens, and every model must have been loaded once by the pipeline.

    python benchmarks/pipeline_overhead.py                  # 4 stages, 2 models, 64 tokens a stage, 7 rounds
    python benchmarks/pipeline_overhead.py --hidden 256 --layers 4 --max-tokens 48 --rounds 11   # a faster model

The default model (hidden 512, 8 layers, ~25M parameters) takes ~10-15 ms a token on one thread of this 2-core
machine, still several times faster than any real model; a stage is about half a second. The pipeline's own work
is ~15 ms a 4-stage run (run folder, config snapshots, a fsynced step file per stage, the router; measured with
scripted models), plus a thread hand-off per call. With the 3 ms-a-token model of the second line that shows as
~10%; at the default size the ratio lands within this machine's noise of 1.0; with real models it vanishes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_models(folder: Path, count: int, hidden: int, layers: int) -> list[Path]:
    """Tiny GGUFs made in a child process: torch and transformers stay out of the measuring process, as they stay
    out of `agentlab pipeline run` (their millions of objects would make every garbage collection pass slower)."""
    code = ("import sys; from agentlab.core.train.tiny import make_tiny; "
            "[make_tiny(f'{sys.argv[1]}/m{i}', seed=i, hidden_size=int(sys.argv[3]), layers=int(sys.argv[4]), "
            "heads=8, kv_heads=4, intermediate=int(sys.argv[3]) * 3, max_position_embeddings=2048) "
            "for i in range(int(sys.argv[2]))]")
    subprocess.run([sys.executable, "-c", code, str(folder), str(count), str(hidden), str(layers)], check=True,
                   cwd=REPO, stderr=subprocess.DEVNULL)
    return [folder / f"m{i}" / "model.gguf" for i in range(count)]


def configs(folder: Path, models: list[Path], stages: int, max_tokens: int, threads: int) -> tuple[dict, dict]:
    models_cfg = {
        "models_directory": str(folder),
        "defaults": {"n_ctx": 2048, "n_threads": threads, "n_batch": 512, "cache_type": "f16",
                     "params": {"temperature": 0.0, "max_tokens": max_tokens}},
        "models": {f"m{i}": {"file": str(path)} for i, path in enumerate(models)},
    }
    pipeline_cfg = {"name": "overhead", "base_pipeline": {"stages": [
        {"name": f"s{k}", "type": "single", "model": f"m{k % len(models)}",
         "prompt": "Continue this text: {{ input }}" if k else "{{ input }}"}
        for k in range(stages)]}}
    return models_cfg, pipeline_cfg


def run_pipeline(models_cfg, pipeline_cfg, runs: Path, text: str) -> tuple[float, list[dict]]:
    """One session, as `agentlab pipeline run` makes it (run folder, snapshots, step files, events)."""
    from agentlab.core.runs import RunDir
    from agentlab.pipeline.run import run

    start = time.perf_counter()
    with RunDir.open("pipeline", None, out=runs / f"run-{len(list(runs.glob('run-*'))):03d}",
                     name=pipeline_cfg.name) as run_dir:
        result = run(models_cfg, pipeline_cfg, run_dir, input_text=text)
    elapsed = time.perf_counter() - start
    return elapsed, result.steps


def run_direct(llamas: dict[str, object], steps: list[dict], max_tokens: int, seed: int) -> tuple[float, int]:
    """The same generations, model by model, straight through llama-cpp-python."""
    start = time.perf_counter()
    tokens = 0
    for step in steps:
        out = llamas[step["outputs"][0]["model"]].create_chat_completion(
            messages=step["messages"], max_tokens=max_tokens, temperature=0.0, seed=seed)
        tokens += out["usage"]["completion_tokens"]
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--models", type=int, default=2, help="distinct GGUF files the stages alternate between")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the tiny models")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = parser.parse_args()

    from agentlab.core.llm.providers.llama_cpp import load_count, loaded_models
    from agentlab.pipeline.config import ModelsConfig, PipelineConfig

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "runs").mkdir()
        print(f"building {args.models} tiny models (hidden {args.hidden}, {args.layers} layers) ...", flush=True)
        paths = build_models(folder / "models", args.models, args.hidden, args.layers)
        raw_models, raw_pipeline = configs(folder / "models", paths, args.stages, args.max_tokens, args.threads)
        models_cfg = ModelsConfig.model_validate(raw_models)
        pipeline_cfg = PipelineConfig.model_validate(raw_pipeline)
        text = "The quick brown fox jumps over the lazy dog while the band plays on."

        loads_before = load_count()
        _, steps = run_pipeline(models_cfg, pipeline_cfg, folder / "runs", text)  # warm-up: loads the models
        # The baseline drives the very llama_cpp.Llama objects the pipeline loaded (same weights in memory, same
        # context and KV cache): the difference is then what the pipeline adds, not which copy of the weights
        # happens to be warm in the CPU caches.
        by_path = {m.path: m.llm for m in loaded_models()}
        llamas = {f"m{i}": by_path[str(p.resolve())] for i, p in enumerate(paths)}
        run_direct(llamas, steps, args.max_tokens, 0)  # warm-up of the baseline

        pipe_times, direct_times = [], []
        for round_no in range(args.rounds):
            order = ("pipeline", "direct") if round_no % 2 == 0 else ("direct", "pipeline")
            for side in order:
                if side == "pipeline":
                    elapsed, steps = run_pipeline(models_cfg, pipeline_cfg, folder / "runs", text)
                    pipe_tokens = sum(s["completion_tokens"] for s in steps)
                    pipe_times.append(elapsed)
                else:
                    elapsed, direct_tokens = run_direct(llamas, steps, args.max_tokens, 0)
                    direct_times.append(elapsed)
        loads = load_count() - loads_before

    pipe, direct = statistics.median(pipe_times), statistics.median(direct_times)
    # Each round's pipeline run is paired with the direct replay right beside it; the median of those ratios is
    # less sensitive to this machine's drift (other jobs, frequency) than the ratio of two medians.
    ratio = statistics.median(p / d for p, d in zip(pipe_times, direct_times, strict=True))
    print(f"{args.stages} stages x {args.max_tokens} max tokens, {args.models} models, {args.rounds} rounds "
          f"(medians; ratio = median of the paired per-round ratios)")
    print(f"direct llama-cpp-python loop: {direct * 1000:8.1f} ms   ({direct_tokens} tokens)")
    print(f"agentlab pipeline run:        {pipe * 1000:8.1f} ms   ({pipe_tokens} tokens)")
    print(f"best of {args.rounds}: direct {min(direct_times) * 1000:.1f} ms, pipeline {min(pipe_times) * 1000:.1f} ms "
          f"(ratio {min(pipe_times) / min(direct_times):.3f})")
    print(f"models loaded by the pipeline: {loads} (distinct files: {args.models})")
    print(f"overhead: {(ratio - 1) * 100:+.1f}% (medians differ by {(pipe - direct) * 1000:.1f} ms a run, "
          f"{(pipe - direct) * 1000 / args.stages:.1f} ms a stage)")
    print(f"ratio: {ratio:.3f}")
    if args.json:
        print(json.dumps({"direct_s": direct, "pipeline_s": pipe, "ratio": ratio, "loads": loads,
                          "best_ratio": min(pipe_times) / min(direct_times),
                          "tokens": {"pipeline": pipe_tokens, "direct": direct_tokens}}))
    if pipe_tokens != direct_tokens:
        sys.exit(f"the two sides generated different token counts ({pipe_tokens} vs {direct_tokens})")
    if "torch" in sys.modules:
        print("note: torch was imported in the measuring process")
    if loads != args.models:
        sys.exit(f"the pipeline loaded {loads} models for {args.models} files")


if __name__ == "__main__":
    main()

"""The base-model measurement of `agentlab compress`: the old path against the new one, in the same invocation.

Both measure the same model on the same inputs (the default config: smollm2-135m, the shipped evaluation text, 40
arithmetic questions, the default measurement settings) inside codecarbon's tracker, as ``run_experiment`` does:
load, perplexity, accuracy, latency, size.

- old: the code before this change, kept here verbatim as the baseline: perplexity one window at a time with every
  position's logits, accuracy in batches of 16 in the task's order;
- new: :func:`agentlab.compress.experiment.run_experiment` as `agentlab compress` runs it (windows batched with only
  the scored positions' logits, questions sorted by length and decoded together with the KV cache);
- llama.cpp: the same model's GGUF (the built-in Q4_1 file the transformers weights are de-quantized from): its
  latency and its accuracy phase (llama.cpp answers one question at a time), for scale.

Prints each path's seconds per phase and its metrics, then ``ratio: X`` = old seconds / new seconds. The machine's
load goes in the output (``uptime``): on a shared machine the seconds are noisy, the ratio less so.

    python benchmarks/compress_measure.py [--skip-llamacpp] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlab.compress.config import CompressConfig
from agentlab.compress.experiment import Inputs, accuracy_gguf, run_experiment
from agentlab.compress.measure import Perplexity, latency_hf, windows
from agentlab.compress.run import prepare
from agentlab.core.debate.protocol import parse_reply
from agentlab.core.debate.task import Question, is_correct


def old_perplexity(model: Any, tokenizer: Any, text: str, *, context: int, stride: int,
                   max_tokens: int | None) -> Perplexity:
    """perplexity_hf before this change: one window at a time, every position's logits."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.inference_mode():
        for begin, end, first in windows(len(ids), context, stride):
            window = ids[begin:end].unsqueeze(0).to(device)
            logits = model(input_ids=window).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, window[0, 1:, None])[:, 0]
            scored = logp[first - begin - 1:]
            nll -= float(scored.sum())
            count += len(scored)
    mean = nll / count
    return Perplexity(math.exp(mean), mean, count, context, stride)


def old_accuracy(model: Any, tokenizer: Any, questions: list[Question], *, max_new_tokens: int = 16,
                 batch: int = 16) -> float:
    """accuracy_hf before this change: batches of 16 in the task's order."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right = 0
    for start in range(0, len(questions), batch):
        group = questions[start:start + batch]
        rows = [tokenizer.apply_chat_template([{"role": "user", "content": q.question}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False) for q in group]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad)
        for q, row in zip(group, out[:, width:], strict=True):
            answer, _ = parse_reply(tokenizer.decode(row, skip_special_tokens=True), "numeric")
            right += is_correct(answer, q.answer)
    return right / len(questions)


def old_path(inputs: Inputs, work: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """run_experiment(None, ...) before this change, phase by phase."""
    import torch

    from agentlab.compress.energy import track_energy
    from agentlab.core.models.device import seed_everything
    from agentlab.core.models.load import load_causal_lm

    m, phases = inputs.measure, {}
    with track_energy(country_iso_code=m.country):
        seed_everything(inputs.seed)
        t = time.perf_counter()
        model, tokenizer = load_causal_lm(inputs.model, device=inputs.device)
        phases["load"] = time.perf_counter() - t
        t = time.perf_counter()
        ppl = old_perplexity(model, tokenizer, inputs.eval_text, context=m.context, stride=m.stride,
                             max_tokens=m.max_eval_tokens)
        phases["perplexity"] = time.perf_counter() - t
        t = time.perf_counter()
        accuracy = old_accuracy(model, tokenizer, inputs.questions)
        phases["accuracy"] = time.perf_counter() - t
        t = time.perf_counter()
        lat = latency_hf(model, tokenizer, prompt_tokens=m.prompt_tokens, new_tokens=m.new_tokens,
                         repeats=m.repeats, text=inputs.eval_text)
        phases["latency"] = time.perf_counter() - t
        t = time.perf_counter()
        work.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), work / "state.pt")
        size = (work / "state.pt").stat().st_size
        phases["size"] = time.perf_counter() - t
    metrics = {"perplexity": ppl.ppl, "accuracy": accuracy, "prefill_tps": lat.prefill_tps,
               "decode_tps": lat.decode_tps, "size_mb": size / 2**20}
    return metrics, phases


def new_path(inputs: Inputs, work: Path) -> tuple[dict[str, Any], dict[str, float]]:
    phases: dict[str, float] = {}
    state = {"phase": "", "t": time.perf_counter()}

    def tick(step: str) -> None:  # the phase is the description's first word, as the progress bar shows it
        name = step.split()[0]
        if name != state["phase"]:
            now = time.perf_counter()
            if state["phase"]:
                phases[state["phase"]] = phases.get(state["phase"], 0.0) + now - state["t"]
            state.update(phase=name, t=now)

    result = run_experiment(None, inputs, work, tick=tick)
    tick("end")
    return result["metrics"], phases


def llamacpp_path(inputs: Inputs, threads: int) -> dict[str, Any]:
    from agentlab.compress.gguf import latency_gguf
    from agentlab.core.models.builtin import builtin_path

    path = builtin_path("smollm2-135m")
    m = inputs.measure
    t = time.perf_counter()
    lat = latency_gguf(path, prompt_tokens=m.prompt_tokens, new_tokens=m.new_tokens, repeats=m.repeats,
                       text=inputs.eval_text)
    lat_s = time.perf_counter() - t
    t = time.perf_counter()
    accuracy = accuracy_gguf(path, inputs.questions)
    return {"file": path.name, "prefill_tps": lat.prefill_tps, "decode_tps": lat.decode_tps, "latency_s": lat_s,
            "accuracy": accuracy, "accuracy_s": time.perf_counter() - t, "threads": lat.threads}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-llamacpp", action="store_true", help="leave out the llama.cpp comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs: Inputs = prepare(CompressConfig())["prepared"].inputs
    print(f"model: smollm2-135m ({inputs.model}), device {inputs.device}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"measure: {json.dumps(inputs.measure.model_dump())}; questions {len(inputs.questions)}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        old_metrics, old_phases = old_path(inputs, Path(tmp) / "old")
        old_s = time.perf_counter() - t
        t = time.perf_counter()
        new_metrics, new_phases = new_path(inputs, Path(tmp) / "new")
        new_s = time.perf_counter() - t
    for name, seconds, phases, metrics in (("old", old_s, old_phases, old_metrics),
                                           ("new", new_s, new_phases, new_metrics)):
        print(f"{name}: {seconds:.1f} s  ({', '.join(f'{k} {v:.1f}' for k, v in phases.items())})")
        print(f"  perplexity {metrics['perplexity']:.4f}  accuracy {metrics['accuracy']:.3f}  prefill "
              f"{metrics['prefill_tps']:.1f} tok/s  decode {metrics['decode_tps']:.1f} tok/s  size "
              f"{metrics['size_mb']:.2f} MB")
    n = len(inputs.questions)
    same_ppl = f"{old_metrics['perplexity']:.4g}" == f"{new_metrics['perplexity']:.4g}"
    print(f"same perplexity to 4 digits: {same_ppl} ({old_metrics['perplexity']:.6f} vs "
          f"{new_metrics['perplexity']:.6f}); accuracy {old_metrics['accuracy'] * n:.0f}/{n} vs "
          f"{new_metrics['accuracy'] * n:.0f}/{n}")
    if not args.skip_llamacpp:
        llama = llamacpp_path(inputs, torch.get_num_threads())
        print(f"llama.cpp ({llama['file']}, {llama['threads']} threads): prefill {llama['prefill_tps']:.1f} tok/s, "
              f"decode {llama['decode_tps']:.1f} tok/s (transformers float32: {new_metrics['prefill_tps']:.1f} / "
              f"{new_metrics['decode_tps']:.1f}); accuracy {llama['accuracy']:.3f} in {llama['accuracy_s']:.1f} s "
              f"one question at a time (transformers, batched: {new_phases.get('accuracy', float('nan')):.1f} s)")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    print(f"ratio: {old_s / new_s:.2f}")


if __name__ == "__main__":
    main()

"""One compression experiment, really applied and measured: load the model, prune, recover, quantize, then measure
on the backend the result runs on (transformers, or llama.cpp for a GGUF type). The figures (``metrics``) are listed
in docs/commands/compress.md#measurements; ``size_mb`` of a transformers model is its saved state dict, where
unstructured zeros take the same room as weights until a sparse format stores them, and ``energy_mode`` says
whether energy was measured or estimated, never one shown as the other.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agentlab.compress.prune as prune
import agentlab.compress.recover as recover
from agentlab.compress.config import Experiment, MeasureSettings
from agentlab.compress.energy import track_energy
from agentlab.compress.gguf import gguf_tensor_types, latency_gguf, open_gguf, perplexity_gguf, quantize_hf_to_gguf
from agentlab.compress.measure import latency_hf, param_count, peak_rss, perplexity_hf, phase_eta
from agentlab.compress.quantize import LOAD_TIME, quantize_model, reload_quantized
from agentlab.core.debate.protocol import parse_reply
from agentlab.core.debate.task import Question, is_correct
from agentlab.core.gpu import gpu_usage
from agentlab.core.harness import BASE
from agentlab.core.harness.llamacpp import llama_lm
from agentlab.core.harness.lm import wrap_model
from agentlab.core.harness.score import score_lm
from agentlab.core.models.convert import quiet_transformers
from agentlab.core.models.device import seed_everything
from agentlab.core.models.load import load_causal_lm


@dataclass
class Inputs:
    """What every experiment of a run is measured on."""

    model: str
    device: str
    eval_text: str
    calib_text: str
    questions: list[Question]
    measure: MeasureSettings
    seed: int = 0
    harness: dict[str, Any] | None = None  # task: {harness: NAME}: {task, include, limit, chat_template}


def accuracy_hf(model: Any, tokenizer: Any, questions: list[Question], *, max_new_tokens: int = 16,
                batch: int = 32, on_step: Callable[[int, int], None] | None = None) -> float:
    """Greedy answers to the questions (chat template); the share that are right (:func:`answers_hf`)."""
    if not questions:
        return 0.0
    return _right_share(questions, answers_hf(model, tokenizer, [q.question for q in questions],
                                              max_new_tokens=max_new_tokens, batch=batch, on_step=on_step))


def _right_share(questions: list[Question], replies: list[str]) -> float:
    """The share of ``replies`` whose answer (the debate's tolerant numeric parser) is right."""
    return sum(is_correct(parse_reply(reply, "numeric")[0], q.answer)
               for q, reply in zip(questions, replies, strict=True)) / len(questions)


def answers_hf(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = 16, batch: int = 32,
               on_step: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy replies to ``prompts`` (each a user turn of the chat template), ``batch`` at a time: the prompts
    sorted by length (little padding), left-padded with an attention mask, decoded with the KV cache; a row stops at
    its own end-of-turn token (later steps only pad it) and the batch when every row has stopped or after
    ``max_new_tokens``. ``batch=1`` is one prompt at a time, without padding. ``on_step(done, total)`` is told after
    each batch, in prompts. Replies come back in the order of ``prompts``."""
    import torch

    if not prompts:
        return []
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [list(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False)) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))
    replies: list[str] = [""] * len(prompts)
    for start in range(0, len(order), max(1, batch)):
        group = order[start:start + max(1, batch)]
        rows = [encoded[i] for i in group]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad)
        for i, row in zip(group, out[:, width:], strict=True):
            replies[i] = tokenizer.decode(row, skip_special_tokens=True)
        if on_step is not None:
            on_step(min(start + len(group), len(order)), len(order))
    return replies


def accuracy_gguf(path: str | Path, questions: list[Question], *, max_new_tokens: int = 16,
                  n_ctx: int = 512) -> float:
    """The same on llama.cpp (the GGUF's own chat template)."""
    if not questions:
        return 0.0
    with open_gguf(path, n_ctx=n_ctx) as llm:
        replies = [llm.create_chat_completion([{"role": "user", "content": q.question}], max_tokens=max_new_tokens,
                                              temperature=0.0)["choices"][0]["message"]["content"] or ""
                   for q in questions]
    return _right_share(questions, replies)


def accuracy_harness(lm: Any, harness: dict[str, Any]) -> float:
    """The mean of each task's first metric on the first ``limit`` items of the lm-eval task, scored on ``lm`` (the
    backend the result runs on)."""
    scored = score_lm(lm, [harness["task"]], include=harness["include"], limit=harness["limit"],
                      chat_template=harness["chat_template"])
    return scored.mean(BASE)


def run_experiment(exp: Experiment | None, inputs: Inputs, work: Path,
                   tick: Callable[[str], None] = lambda step: None, keep: Path | None = None) -> dict[str, Any]:
    """Apply ``exp`` (None: the base model as it is) and measure the result; ``work`` holds its files (removed after,
    except a GGUF, which is the result). ``keep``: a folder where the compressed model is kept (``keep_model``)."""
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with track_energy(country_iso_code=inputs.measure.country) as energy:
        model, tokenizer, steps, counts = apply_steps(exp, inputs, work, tick,
                                                      keep=keep if exp is not None and exp.prune else None)
        quant = exp.quantize if exp is not None else None
        if quant is not None and quant.method == "gguf":
            tick(f"GGUF {quant.gguf_type}")
            metrics = _measure_gguf(model, tokenizer, quant.gguf_type, inputs, work, steps, tick)
            if keep is not None:  # the GGUF is the compressed model: kept instead of the transformers one
                _keep_file(keep, "model.gguf", lambda path: shutil.copyfile(steps["quantize"]["file"], path))
        else:
            metrics = _measure_hf(model, tokenizer, inputs, work, tick)
    metrics.update({**counts, "energy_kwh": energy.energy_kwh, "co2e_kg": energy.co2e_kg, "energy_mode": energy.mode})
    return {"label": exp.label() if exp is not None else "base model",
            "experiment": exp.model_dump() if exp is not None else None, "steps": steps, "metrics": metrics,
            "seconds": round(time.perf_counter() - start, 2)}


def apply_steps(exp: Experiment | None, inputs: Inputs, work: Path, tick: Callable[[str], None] = lambda step: None,
                keep: Path | None = None) -> tuple[Any, Any, dict[str, Any], dict[str, int]]:
    """``(model, tokenizer, steps, counts)``: the model loaded (seeded) with ``exp``'s prune, recovery and
    transformers quantization applied, as :func:`run_experiment` measures it; a GGUF quantization is left to the
    caller (:func:`make_gguf`). ``counts``: parameters and non-zero parameters before quantization. ``keep``: the
    pruned (and recovered) model is saved there before any quantization (``model.pt``)."""
    steps: dict[str, Any] = {}
    seed_everything(inputs.seed)
    tick("loading")
    model, tokenizer = load_causal_lm(inputs.model, device=inputs.device, dtype=inputs.measure.dtype)
    if exp is not None and exp.prune is not None:
        tick("pruning")
        steps["prune"] = _prune(model, tokenizer, exp, inputs)
    if exp is not None and exp.recover is not None:
        tick(f"recovery ({exp.recover.method})")
        steps["recover"] = _recover(model, tokenizer, exp, inputs, tick)
    if keep is not None:
        keep_model(model, keep)
    # counted before quantization: quantized tensor types (torchao's) have no count_nonzero
    counts = {"params": param_count(model), "nonzero_params": param_count(model, nonzero=True)}
    quant = exp.quantize if exp is not None else None
    if quant is not None and quant.method != "gguf":
        tick(quant.method)
        if quant.method in LOAD_TIME:
            model, steps["quantize"] = reload_quantized(model, tokenizer, quant.method, work / "hf", inputs.device)
        else:
            steps["quantize"] = quantize_model(model, quant.method)
    return model, tokenizer, steps, counts


def keep_model(model: Any, keep: Path) -> Path:
    """The whole module (a structured prune changes its shapes, which a config cannot describe) saved to
    ``keep/model.pt``."""
    import torch

    return _keep_file(keep, "model.pt", lambda path: torch.save(model, path))


def _keep_file(keep: Path, name: str, write: Callable[[Path], Any]) -> Path:
    """``keep`` emptied, then ``keep/name`` written by ``write`` to a temporary name and renamed: a killed run leaves
    no torn checkpoint."""
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    write(keep / f"{name}.tmp")
    return (keep / f"{name}.tmp").replace(keep / name)


def load_kept(path: Path, device: str) -> Any:
    """A model ``keep_model`` saved (this machine's own file: loaded as the pickled module it is)."""
    import torch

    return torch.load(path, map_location=device, weights_only=False)


def _prune(model: Any, tokenizer: Any, exp: Experiment, inputs: Inputs) -> dict[str, Any]:
    p = exp.prune
    assert p is not None
    if p.method == "magnitude":
        return prune.magnitude_prune(model, p.sparsity, p.pattern)
    if p.method == "wanda":
        return prune.wanda_prune(model, tokenizer, inputs.calib_text, p.sparsity, p.pattern, seed=inputs.seed)
    return prune.structured_prune(model, mlp_keep=p.mlp_keep if p.mlp_keep < 1 else None,
                                  drop_layers=p.drop_layers or None, tokenizer=tokenizer, calib_text=inputs.calib_text,
                                  seed=inputs.seed)


def _recover(model: Any, tokenizer: Any, exp: Experiment, inputs: Inputs,
             tick: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    r = exp.recover
    assert r is not None
    settings = recover.RecoverSettings(steps=r.steps, seed=inputs.seed)
    steps = _StepTicks(tick, f"recovery ({r.method})")  # each training step told, with its ETA
    if r.method == "lora":
        return recover.lora_recover(model, tokenizer, inputs.calib_text, settings=settings, lr=r.lr, progress=steps)
    teacher, _ = load_causal_lm(inputs.model, device=inputs.device, dtype=inputs.measure.dtype)
    try:
        return recover.distill(model, teacher, tokenizer, inputs.calib_text, settings=settings, lr=r.lr,
                               progress=steps)
    finally:
        del teacher


class _StepTicks:
    """A ``Progress`` whose tasks tell ``tick`` their count and ETA as the measurements do (``phase_eta``:
    ``recovery (lora) 12/50, ETA 0:40``): a recovery of many steps was silent, so a log showed no progress line
    for the whole of it."""

    def __init__(self, tick: Callable[[str], None], phase: str):
        self.tick, self.phase = tick, phase

    def task(self, description: str, total: float | None = None) -> _StepTask:
        return _StepTask(phase_eta(self.tick, self.phase), total)


class _StepTask:
    def __init__(self, on_step: Callable[[int, int], None], total: float | None):
        self.on_step, self.total, self.done = on_step, total, 0.0

    def advance(self, n: float = 1, description: str | None = None) -> None:
        self.update(completed=self.done + n)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        self.done, self.total = (self.done if completed is None else completed), (total or self.total)
        if self.total:
            self.on_step(int(self.done), int(self.total))


def _measure_hf(model: Any, tokenizer: Any, inputs: Inputs, work: Path,
                tick: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    import torch

    m = inputs.measure
    with peak_rss() as memory, gpu_usage() as gpu:
        ppl = perplexity_hf(model, tokenizer, inputs.eval_text, context=m.context, stride=m.stride,
                            max_tokens=m.max_eval_tokens, batch=m.perplexity_batch,
                            on_step=phase_eta(tick, "perplexity"))
        if inputs.harness is not None:
            tick("accuracy (lm-eval)")
            accuracy = accuracy_harness(wrap_model(model, tokenizer, batch_size=m.accuracy_batch).lm, inputs.harness)
        else:
            accuracy = accuracy_hf(model, tokenizer, inputs.questions, batch=m.accuracy_batch,
                                   on_step=phase_eta(tick, "accuracy"))
    latency = latency_hf(model, tokenizer, prompt_tokens=m.prompt_tokens, new_tokens=m.new_tokens, repeats=m.repeats,
                         text=inputs.eval_text, on_step=phase_eta(tick, "latency"))
    tick("size")
    state = work / "state.pt"
    torch.save(model.state_dict(), state)
    size = state.stat().st_size
    state.unlink()
    # the memory the model needs: its weights, resident before the block (their saved size), and what evaluating
    # it added (RSS growth alone read ~0 after a recovery training whose memory the allocator kept)
    return {"backend": "transformers", "perplexity": ppl.ppl, "accuracy": accuracy,
            "prefill_tps": latency.prefill_tps, "decode_tps": latency.decode_tps, "threads": latency.threads,
            "size_mb": size / 2**20, "memory_mb": (size + memory.delta) / 2**20,
            "rss_growth_mb": memory.delta / 2**20, **gpu.to_dict()}


def _measure_gguf(model: Any, tokenizer: Any, kind: str, inputs: Inputs, work: Path, steps: dict[str, Any],
                  tick: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    import torch

    m = inputs.measure
    path = make_gguf(model, tokenizer, kind, work)
    steps["quantize"] = {"method": "gguf", "type": kind, "file": str(path), "tensor_types": gguf_tensor_types(path)}
    tick(f"GGUF {kind}: perplexity, accuracy, latency on llama.cpp")
    with peak_rss() as memory, gpu_usage() as gpu:
        ppl = perplexity_gguf(path, inputs.eval_text, context=m.context, stride=m.stride, max_tokens=m.max_eval_tokens)
        if inputs.harness is not None:
            accuracy = accuracy_harness(llama_lm(path), inputs.harness)
        else:
            accuracy = accuracy_gguf(path, inputs.questions)
    # on transformers' threads (torch's count), not llama.cpp's default of half the cores: the speedup compares
    # the backends, not the threads they were given
    latency = latency_gguf(path, prompt_tokens=m.prompt_tokens, new_tokens=m.new_tokens, repeats=m.repeats,
                           text=inputs.eval_text, n_threads=torch.get_num_threads())
    return {"backend": "llama.cpp", "perplexity": ppl.ppl, "accuracy": accuracy, "prefill_tps": latency.prefill_tps,
            "decode_tps": latency.decode_tps, "threads": latency.threads, "size_mb": Path(path).stat().st_size / 2**20,
            # llama.cpp maps the file inside the block: the growth holds the weights' pages as they are read
            "memory_mb": memory.delta / 2**20, "rss_growth_mb": memory.delta / 2**20, **gpu.to_dict()}


def make_gguf(model: Any, tokenizer: Any, kind: str, work: Path) -> Path:
    """The model quantized to the GGUF type ``kind`` in ``work`` (the transformers copy it is made from removed)."""
    folder = work / "hf"
    with quiet_transformers(logs=False):  # no "Writing model shards" bar
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    files = quantize_hf_to_gguf(folder, work, types=(kind,))
    path = Path(files[kind.lower()])
    for key, other in files.items():
        if key != kind.lower():
            Path(other).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    return path

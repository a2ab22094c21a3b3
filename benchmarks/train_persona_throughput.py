"""What agentlab's SFT builders cost over a bare TRL script: training tokens per second, agentlab / bare.

Both sides train the same LoRA (r 16, alpha 32, dropout 0.05, all-linear targets) on the same model, the same
persona conversations (each cut to --max-length tokens, so a step is --batch x --max-length tokens), with loss on
assistant tokens only, for the same --steps optimizer steps from the same seed:

- agentlab: ``load_causal_lm`` + ``lora_config`` + ``build_sft_trainer`` with a ``ProgressCallback`` (drawing into
  a progress object that records, as the CLI's would draw) and a per-log-entry function;
- bare: ``AutoModelForCausalLM.from_pretrained`` + ``peft.LoraConfig`` + ``trl.SFTConfig`` / ``SFTTrainer``, the
  ChatML training template handed over as a .jinja file (``chat_template_path``; TRL cannot mark SmolLM2's own).

On CUDA both train in bfloat16 (``--load-in-4bit``: both QLoRA); on a CPU in float32. Only ``trainer.train()`` is
timed (model loading and data preparation are printed apart); tokens are TRL's own count (``num_tokens``). Rounds
alternate which side goes first; the ratio is the median of the per-round ratios. Both sides start from the same
LoRA initialisation and see the batches in the same order, so their losses must agree: the script checks it. An
untimed round comes first (``--warmup 0`` skips it): the first training runs in a process were 10-30% slower here,
whichever side ran them.

    python benchmarks/train_persona_throughput.py                 # SmolLM2-135M, 4 steps of 4 x 256 tokens, 3 rounds
    python benchmarks/train_persona_throughput.py --steps 8 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = ["the tides", "a storm at night", "navigating by the stars", "the ship's cook", "mending sails",
          "a lighthouse", "the harbour master", "whales off the bow"]


def conversations(count: int) -> list[dict[str, Any]]:
    """Persona chats long enough that every one is cut at --max-length tokens (so every step has equal work)."""
    rows = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        answer = " ".join(f"Aye, {topic} ({i}.{k}) teaches patience: watch the water, trust the crew, and never "
                          f"leave port without checking the rigging twice." for k in range(12))
        rows.append({"messages": [
            {"role": "system", "content": "You are Captain Reed, a weathered sea captain who answers briefly."},
            {"role": "user", "content": f"Captain, what do you make of {topic}?"},
            {"role": "assistant", "content": answer},
        ]})
    return rows


def agentlab_side(folder: Path, rows: list[dict[str, Any]], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from agentlab.core.train import ProgressCallback, SFTSettings, build_sft_trainer, load_causal_lm, lora_config

    class Drawn:  # what a progress bar receives
        def __init__(self) -> None:
            self.updates = 0

        def task(self, description: str, total: float | None = None) -> Drawn:
            return self

        def advance(self, n: float = 1, description: str | None = None) -> None:
            self.updates += 1

        def update(self, **kwargs: Any) -> None:
            self.updates += 1

    t0 = time.perf_counter()
    model, tokenizer = load_causal_lm(folder, load_in_4bit=args.load_in_4bit)
    t1 = time.perf_counter()
    entries: list[dict[str, Any]] = []
    trainer, summary = build_sft_trainer(
        model=model, tokenizer=tokenizer, train_dataset=rows, output_dir=out, peft_config=lora_config(r=args.rank),
        settings=SFTSettings(max_steps=args.steps, batch_size=args.batch, max_length=args.max_length,
                             learning_rate=2e-4, seed=0, logging_steps=1),
        callbacks=[ProgressCallback(Drawn(), on_log=entries.append)])  # type: ignore[arg-type]
    t2 = time.perf_counter()
    trainer.train()
    t3 = time.perf_counter()
    result = _result(trainer, t1 - t0, t2 - t1, t3 - t2)
    result["loss_share"] = round(summary.loss_tokens / summary.tokens, 3)
    assert len([e for e in entries if "loss" in e]) == args.steps
    return result


def bare_side(folder: Path, rows: list[dict[str, Any]], out: Path, args: argparse.Namespace,
              template: Path) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if cuda:
        kwargs["device_map"] = {"": 0}
    if args.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True,
                                                           bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    t1 = time.perf_counter()
    config = SFTConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch,
                       max_length=args.max_length, learning_rate=2e-4, seed=0, logging_steps=1,
                       assistant_only_loss=True, chat_template_path=str(template), activation_checkpointing=False,
                       bf16=cuda, use_cpu=not cuda, save_strategy="no", report_to="none", disable_tqdm=True)
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the log dicts a bare Trainer prints (still printed, not shown)
        trainer.train()
    t3 = time.perf_counter()
    return _result(trainer, t1 - t0, t2 - t1, t3 - t2)


def _result(trainer: Any, load_s: float, build_s: float, train_s: float) -> dict[str, Any]:
    logs = [e for e in trainer.state.log_history if "loss" in e]
    tokens = logs[-1]["num_tokens"]
    return {"load_s": round(load_s, 2), "build_s": round(build_s, 2), "train_s": round(train_s, 3),
            "tokens": tokens, "tokens_per_s": tokens / train_s, "losses": [e["loss"] for e in logs]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="any model reference (built-in name, folder, GGUF)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default); on this shared "
                        "2-core machine one thread was several times faster than two")
    parser.add_argument("--warmup", type=int, default=1, help="1: an untimed round first (0: none)")
    parser.add_argument("--load-in-4bit", action="store_true", help="QLoRA on both sides (CUDA only)")
    parser.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = parser.parse_args()

    import torch

    from agentlab.core.train import hf_model_folder, training_chat_template

    if args.threads:
        torch.set_num_threads(args.threads)
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils.logging import disable_progress_bar as no_transformers_bars

    disable_progress_bar()  # the bare side's tokenizing bars; agentlab turns its own off
    no_transformers_bars()
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")  # peft, on both sides
    folder = hf_model_folder(args.model)
    from transformers import AutoTokenizer

    marked = training_chat_template(AutoTokenizer.from_pretrained(folder))
    rows = conversations(args.steps * args.batch)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"model {args.model} ({folder}) on {device}, {torch.get_num_threads()} threads; {args.steps} steps of "
          f"{args.batch} x {args.max_length} tokens, LoRA r {args.rank} all-linear"
          f"{', 4-bit base' if args.load_in_4bit else ''}; chat template: {marked.describe()}")
    results: dict[str, list[dict[str, Any]]] = {"agentlab": [], "bare": []}
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "training.jinja"
        template.write_text(marked.template, encoding="utf-8")
        if args.warmup:  # the first training runs of a process are slower (measured: 10-30%), whichever side
            warm = [agentlab_side(folder, rows, Path(tmp) / "warm-a", args)["train_s"],
                    bare_side(folder, rows, Path(tmp) / "warm-b", args, template)["train_s"]]
            print(f"warm-up round (untimed): agentlab {warm[0]:.2f} s, bare {warm[1]:.2f} s", flush=True)
        for r in range(args.rounds):
            order = ["agentlab", "bare"] if r % 2 == 0 else ["bare", "agentlab"]
            for side in order:
                out = Path(tmp) / f"{side}-{r}"
                result = (agentlab_side(folder, rows, out, args) if side == "agentlab"
                          else bare_side(folder, rows, out, args, template))
                results[side].append(result)
                print(f"round {r + 1} {side:8s}: {result['tokens_per_s']:8.1f} tokens/s ({result['tokens']} tokens in "
                      f"{result['train_s']:.2f} s, {result['train_s'] / args.steps:.2f} s a step; load "
                      f"{result['load_s']:.1f} s, build {result['build_s']:.1f} s)", flush=True)
                gc.collect()
    for a, b in zip(results["agentlab"], results["bare"], strict=True):
        if a["tokens"] != b["tokens"] or any(abs(x - y) > 1e-3 * max(1.0, abs(y))
                                             for x, y in zip(a["losses"], b["losses"], strict=True)):
            raise SystemExit(f"the two sides did different work: tokens {a['tokens']} vs {b['tokens']}, losses "
                             f"{a['losses']} vs {b['losses']}")
    ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["agentlab"], results["bare"],
                                                                     strict=True)]
    ratio = statistics.median(ratios)
    agentlab = statistics.median(r["tokens_per_s"] for r in results["agentlab"])
    bare = statistics.median(r["tokens_per_s"] for r in results["bare"])
    print(f"same work on both sides: {results['bare'][0]['tokens']} tokens a run, losses equal "
          f"(last {results['bare'][0]['losses'][-1]:.4f}); loss on {results['agentlab'][0]['loss_share']:.0%} "
          "of the tokens (assistant turns)")
    print(f"agentlab {agentlab:.1f} tokens/s, bare TRL {bare:.1f} tokens/s (medians); per-round ratios "
          f"{', '.join(f'{x:.3f}' for x in ratios)}")
    if args.json:
        print(json.dumps({"ratio": ratio, "ratios": ratios, **results}))
    print(f"ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()

"""One debate round of three LoRA personas: one mixed-adapter batch vs switching adapters one request at a time.

The model is the built-in SmolLM2-135M on transformers (``load_causal_lm("smollm2-135m")``, float32 on a CPU) with
three LoRA adapters loaded onto it, as the hf provider loads them. By default the adapters are made here: r 16,
alpha 32, all-linear (``lora_config``), with small random B matrices so each persona really changes the output;
``--adapters A B C`` uses trained ones instead (e.g. ``agentlab train-persona`` outputs). Each persona gets its own
system prompt over the same debate transcript, so the prompts differ in length and the batch is left-padded.

- batched: one ``model.generate(..., adapter_names=[a, b, c])`` call, what the hf provider does for concurrent
  requests that differ only in their adapter;
- sequential: for each persona ``set_adapter`` + ``generate`` of its prompt alone, one after another.

Both sides are greedy and generate exactly ``--new-tokens`` tokens per persona (``min_new_tokens`` =
``max_new_tokens``, so an early eos cannot shorten one side). Before the timing the script checks that the batch's
rows are the sequential answers token for token (and that the three personas answer differently), and that the hf
provider really answers the three concurrent requests in one batch. An untimed round comes first; rounds alternate
which side goes first; each side's time is the median of its rounds. The last line is ``ratio: X`` with
X = sequential time / batched time (target >= 1.8). The same two sides on the base model with the adapters off
are timed too: batching without any LoRA work is the ceiling of X on the machine at hand.

    python benchmarks/debate_batching.py                          # 3 personas, 64 new tokens, 5 rounds, 1 thread
    python benchmarks/debate_batching.py --threads 2 --new-tokens 128
    python benchmarks/debate_batching.py --adapters /tmp/newuser/adapters/persona_{a,b,c}
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPIC = "Should a small research lab train its own language models or rent them through an API?"
PERSONAS = {
    "optimist": "You are Ada, an enthusiastic engineer who believes in building things yourself. Argue briefly.",
    "skeptic": "You are Ben, a careful accountant. You question every cost and every promise. Answer in two or "
               "three sentences, with numbers where you can.",
    "moderator": "You are Cleo, the moderator of this debate. Sum up where the two sides agree and disagree.",
}
TRANSCRIPT = [
    "Ada: Owning the model means owning the roadmap; a 135M model trains on one GPU in an afternoon.",
    "Ben: An afternoon of GPU time is cheap, but the salaries of the people who babysit it are not.",
]


def persona_messages(system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Debate topic: {TOPIC}\n\n" + "\n".join(TRANSCRIPT) + "\n\nYour turn."}]


def make_adapters(model_name: str, root: Path, seed: int) -> dict[str, str]:
    """Three random LoRA adapters (r 16, all-linear) with non-zero B, saved as the provider would load them."""
    import torch
    from peft import get_peft_model

    from agentlab.core.train import load_causal_lm, lora_config

    base, _ = load_causal_lm(model_name)
    model = get_peft_model(base, lora_config(), adapter_name="persona_0")
    for i in range(1, len(PERSONAS)):
        model.add_adapter(f"persona_{i}", lora_config())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (the adapter is then a no-op): give it small random values
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(str(root))  # each adapter under root/<its name>
    return {f"persona_{i}": str(root / f"persona_{i}") for i in range(len(PERSONAS))}


def build(args: argparse.Namespace, root: Path) -> tuple[Any, Any, dict[str, str], list[list[int]]]:
    from agentlab.core.train import load_causal_lm

    if args.adapters:
        adapters = {f"persona_{i}": folder for i, folder in enumerate(args.adapters)}
    else:
        adapters = make_adapters(args.model, root, args.seed)
    model, tokenizer = load_causal_lm(args.model, adapters=adapters)
    model.eval()
    prompts = [tokenizer.apply_chat_template(persona_messages(system), add_generation_prompt=True, tokenize=True,
                                             return_dict=False) for system in PERSONAS.values()]
    return model, tokenizer, adapters, [list(p) for p in prompts]


def batched(model: Any, pad: int, names: list[str], prompts: list[list[int]], new: int) -> list[list[int]]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    out = model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, pad_token_id=pad)
    return out[:, width:].tolist()


def sequential(model: Any, pad: int, names: list[str], prompts: list[list[int]], new: int) -> list[list[int]]:
    import torch

    rows = []
    for name, prompt in zip(names, prompts, strict=True):
        model.set_adapter(name, inference_mode=True)
        ids = torch.tensor([prompt], device=model.device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new, min_new_tokens=new, pad_token_id=pad)
        rows.append(out[0, len(prompt):].tolist())
    return rows


def base_batched(model: Any, pad: int, names: list[str], prompts: list[list[int]], new: int) -> list[list[int]]:
    """The same batch on the base model, adapters off: what batching alone gives on this machine."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    with model.disable_adapter():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new,
                             min_new_tokens=new, pad_token_id=pad)
    return out[:, width:].tolist()


def base_sequential(model: Any, pad: int, names: list[str], prompts: list[list[int]], new: int) -> list[list[int]]:
    import torch

    rows = []
    with model.disable_adapter():
        for prompt in prompts:
            ids = torch.tensor([prompt], device=model.device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=pad)
            rows.append(out[0, len(prompt):].tolist())
    return rows


def provider_batch_sizes(args: argparse.Namespace, adapters: dict[str, str]) -> list[int]:
    """The three persona requests sent concurrently through the hf provider: how it batched them."""
    from agentlab.core.llm.config import HFProviderConfig
    from agentlab.core.llm.providers.hf import HFProvider, unload_all
    from agentlab.core.llm.types import GenParams

    prov = HFProvider("bench", HFProviderConfig(device="auto", adapters=adapters, batch_wait_ms=50))

    async def main() -> None:
        await prov.generate(args.model, [{"role": "user", "content": "hi"}], GenParams(temperature=0, max_tokens=1),
                            600)  # load first: requests that wait for the load may miss each other's batch
        prov.batch_sizes.clear()
        await asyncio.gather(*(prov.generate(args.model, persona_messages(system),
                                             GenParams(temperature=0, max_tokens=4, extra={"adapter": name}), 600)
                               for name, system in zip(adapters, PERSONAS.values(), strict=True)))

    asyncio.run(main())
    sizes = list(prov.batch_sizes)
    unload_all()
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="any model reference (default: the built-in SmolLM2)")
    ap.add_argument("--adapters", nargs=len(PERSONAS), metavar="DIR",
                    help="three trained LoRA adapter folders (default: random r-16 all-linear adapters made here)")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per persona, on both sides")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, tokenizer, adapters, prompts = build(args, Path(tmp))
        names = list(adapters)
        print(f"model {args.model} + {len(names)} LoRA adapters ({'given' if args.adapters else 'random'}, r "
              f"{model.peft_config[names[0]].r}) loaded in {time.perf_counter() - t0:.1f}s; torch threads "
              f"{torch.get_num_threads()}; prompts {[len(p) for p in prompts]} tokens; {args.new_tokens} new tokens "
              f"each")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

        with torch.inference_mode():
            together = batched(model, pad, names, prompts, args.new_tokens)
            alone = sequential(model, pad, names, prompts, args.new_tokens)
        same = sum(a == b for a, b in zip(together, alone, strict=True))
        print(f"check: {same}/{len(names)} batch rows equal the sequential answers token for token; "
              f"{len({tuple(r) for r in alone})} different answers")
        for name, row in zip(names, alone, strict=True):
            print(f"  {name}: {tokenizer.decode(row, skip_special_tokens=True)[:90]!r}")

        print(f"check: the hf provider answers the {len(names)} concurrent persona requests in batches of "
              f"{provider_batch_sizes(args, adapters)}")

        sides = {"batched": batched, "sequential": sequential, "base batched": base_batched,
                 "base sequential": base_sequential}
        times: dict[str, list[float]] = {side: [] for side in sides}
        with torch.inference_mode():
            for _ in range(args.warmup):
                for fn in sides.values():
                    fn(model, pad, names, prompts, args.new_tokens)
            for r in range(args.rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for side in order:
                    start = time.perf_counter()
                    sides[side](model, pad, names, prompts, args.new_tokens)
                    times[side].append(time.perf_counter() - start)
                print(f"round {r + 1}: batched {times['batched'][-1]:.2f}s, sequential {times['sequential'][-1]:.2f}s, "
                      f"ratio {times['sequential'][-1] / times['batched'][-1]:.3f}; base model alone "
                      f"{times['base sequential'][-1] / times['base batched'][-1]:.3f}")

    b, s = statistics.median(times["batched"]), statistics.median(times["sequential"])
    tokens = len(names) * args.new_tokens
    print(f"batched:    {b:.2f}s a round ({tokens / b:.1f} tokens/s)")
    print(f"sequential: {s:.2f}s a round ({tokens / s:.1f} tokens/s)")
    bb, bs = statistics.median(times["base batched"]), statistics.median(times["base sequential"])
    print(f"base model, adapters off: batched {bb:.2f}s, one at a time {bs:.2f}s, ratio {bs / bb:.3f} (what batching "
          f"{len(names)} rows gives on this machine without any adapter: the ceiling of the ratio below)")
    print(f"ratio: {s / b:.3f}")


if __name__ == "__main__":
    main()

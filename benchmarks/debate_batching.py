"""Mixed-adapter batches of LoRA personas: the fused multi-LoRA forward vs PEFT's mixed path, switching adapters one
request at a time, and the base model's batch (adapters off: the ceiling).

The model is the built-in SmolLM2-135M on transformers (``load_causal_lm("smollm2-135m")``, float32 on a CPU) with
LoRA adapters loaded onto it, as the hf provider loads them. By default the adapters are made here: r 16, alpha 32,
all-linear (``lora_config``), with small random B matrices so each persona really changes the output; ``--adapters``
uses trained ones instead (e.g. ``agentlab train-persona`` outputs). Each row gets its own persona system prompt over
the same debate transcript, so the prompts differ in length and the batch is left-padded. For each batch size in
``--sizes`` (1, 3, 8, 16 adapters, one row each) these sides generate the same rows:

- fused: one ``model.generate`` inside ``multilora.fused_rows`` (the adapters stacked once; what the hf provider does
  for concurrent requests that differ in their adapter, ``mixed_lora: fused``);
- PEFT mixed: one ``model.generate(..., adapter_names=[...])`` call (``mixed_lora: peft``, the path before);
- sequential: for each row ``set_adapter`` + ``generate`` of its prompt alone, one after another (run at every size
  for the check, timed up to ``--sequential-up-to`` adapters, 3 by default: at 16 it is sixteen generates a round);
- base batch: the same batch on the base model with the adapters off: batching without any LoRA work, the ceiling;
- with ``--paths``, the fused forward forced onto concatenate-and-mask (``concat``) and onto the gathered batched
  matmul (``gathered``: rows in reverse stack order, so the gathers run): the measurement behind
  ``multilora.CONCAT_MAX``.

Every side is greedy and generates exactly ``--new-tokens`` tokens per row (``min_new_tokens`` = ``max_new_tokens``,
so an early eos cannot shorten one). The first round is untimed and checks that the rows of every batched side are
the sequential answers token for token (and that the personas answer differently); the hf provider is checked to
answer three concurrent persona requests in one fused batch. Timed rounds alternate the order of the sides; each
side's time is the median of its rounds. The table gives each side's time and its ratio to the base batch; the last
lines are ``ratio: X`` (sequential / fused at 3 personas, the old figure of this script, PEFT's mixed path then)
and ``fused vs base batch: X`` (fused / base batch at 3 personas; target <= 1.1 on a CPU, <= 1.25 at 16 adapters).

    python benchmarks/debate_batching.py                      # sizes 1 3 8 16, 64 new tokens, 3 rounds, 1 thread
    python benchmarks/debate_batching.py --quick              # sizes 1 3 8, 32 new tokens, 2 rounds
    python benchmarks/debate_batching.py --paths --clock cpu  # + forced concat / gathered bmm; process CPU time
    python benchmarks/debate_batching.py --adapters adapters/persona_a adapters/persona_b adapters/persona_c
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
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
MAIN = 3  # the debate round of three personas: the size of the summary lines


def persona_messages(system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Debate topic: {TOPIC}\n\n" + "\n".join(TRANSCRIPT) + "\n\nYour turn."}]


def system_prompt(k: int) -> str:
    """The k-th row's persona: the three personas, then the same again as further delegates."""
    base = list(PERSONAS.values())[k % len(PERSONAS)]
    return base if k < len(PERSONAS) else f"{base} You speak as delegate {k + 1} of the lab."


def make_adapters(model_name: str, root: Path, n: int, seed: int) -> dict[str, str]:
    """``n`` random LoRA adapters (r 16, all-linear) with non-zero B, saved as the provider would load them."""
    import torch
    from peft import get_peft_model

    from agentlab.core.train import load_causal_lm, lora_config

    base, _ = load_causal_lm(model_name)
    model = get_peft_model(base, lora_config(), adapter_name="persona_0")
    for i in range(1, n):
        model.add_adapter(f"persona_{i}", lora_config())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # B starts at zero (the adapter is then a no-op): give it small random values
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(str(root))  # each adapter under root/<its name>
    return {f"persona_{i}": str(root / f"persona_{i}") for i in range(n)}


def build(args: argparse.Namespace, root: Path) -> tuple[Any, Any, dict[str, str]]:
    from agentlab.core.train import load_causal_lm

    if args.adapters:
        adapters = {f"persona_{i}": folder for i, folder in enumerate(args.adapters)}
    else:
        adapters = make_adapters(args.model, root, max(args.sizes), args.seed)
    model, tokenizer = load_causal_lm(args.model, adapters=adapters)
    model.eval()
    return model, tokenizer, adapters


class Bench:
    """The model, its stack and the generate call every side shares."""

    def __init__(self, model: Any, tokenizer: Any, new: int):
        from agentlab.core.models import multilora

        self.model, self.tokenizer, self.new = model, tokenizer, new
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        start = time.perf_counter()
        self.stack = multilora.stack_adapters(model)
        self.stack_s = time.perf_counter() - start

    def prompts(self, n: int) -> list[list[int]]:
        return [list(self.tokenizer.apply_chat_template(persona_messages(system_prompt(k)), add_generation_prompt=True,
                                                        tokenize=True, return_dict=False)) for k in range(n)]

    def generate(self, prompts: list[list[int]], **kwargs: Any) -> list[list[int]]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts], device=self.model.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.model.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=self.new,
                                  min_new_tokens=self.new, pad_token_id=self.pad, **kwargs)
        return out[:, width:].tolist()

    def fused(self, names: list[str], prompts: list[list[int]], mode: str = "auto") -> list[list[int]]:
        from agentlab.core.models import multilora

        with multilora.fused_rows(self.stack, names, mode=mode):  # type: ignore[arg-type]
            return self.generate(prompts)

    def gathered(self, names: list[str], prompts: list[list[int]]) -> list[list[int]]:
        """The gathered batched matmul: the rows in reverse stack order, answers given back in the order asked."""
        return list(reversed(self.fused(names[::-1], prompts[::-1], mode="bmm")))

    def peft(self, names: list[str], prompts: list[list[int]]) -> list[list[int]]:
        return self.generate(prompts, adapter_names=names)

    def sequential(self, names: list[str], prompts: list[list[int]]) -> list[list[int]]:
        rows = []
        for name, prompt in zip(names, prompts, strict=True):
            self.model.set_adapter(name, inference_mode=True)
            rows.extend(self.generate([prompt]))
        return rows

    def base(self, names: list[str], prompts: list[list[int]]) -> list[list[int]]:
        with self.model.disable_adapter():
            return self.generate(prompts)

    def sides(self, paths: bool) -> dict[str, Callable[[list[str], list[list[int]]], list[list[int]]]]:
        sides = {"base batch": self.base, "fused": self.fused, "PEFT mixed": self.peft, "sequential": self.sequential}
        if paths:
            sides["concat"] = lambda names, prompts: self.fused(names, prompts, mode="concat")
            sides["gathered"] = self.gathered
        return sides


def provider_check(args: argparse.Namespace, adapters: dict[str, str]) -> tuple[list[int], set[Any]]:
    """Three persona requests sent concurrently through the hf provider: its batch sizes and how it mixed them."""
    from agentlab.core.llm.config import HFProviderConfig
    from agentlab.core.llm.providers.hf import HFProvider
    from agentlab.core.llm.types import GenParams

    three = dict(list(adapters.items())[:MAIN])
    prov = HFProvider("bench", HFProviderConfig(device="auto", adapters=three, batch_wait_ms=50))

    async def main() -> list[Any]:
        await prov.generate(args.model, [{"role": "user", "content": "hi"}], GenParams(temperature=0, max_tokens=1),
                            600)  # load first: requests that wait for the load may miss each other's batch
        prov.batch_sizes.clear()
        try:
            return await asyncio.gather(*(prov.generate(args.model, persona_messages(system_prompt(k)),
                                                        GenParams(temperature=0, max_tokens=4, extra={"adapter": name}),
                                                        600) for k, name in enumerate(three)))
        finally:
            await prov.aclose()  # frees the model

    completions = asyncio.run(main())
    sizes = list(prov.batch_sizes)
    return sizes, {c.raw.get("mixed") for c in completions}


def measure(bench: Bench, n: int, names: list[str], args: argparse.Namespace,
            clock: Callable[[], float]) -> dict[str, float]:
    """One batch size: the checking round, then the timed rounds; each side's median time."""
    prompts = bench.prompts(n)
    sides = bench.sides(args.paths)
    answers = {side: fn(names, prompts) for side, fn in sides.items()}  # untimed: the checks, and a warm-up
    same = {side: sum(a == b for a, b in zip(rows, answers["sequential"], strict=True))
            for side, rows in answers.items() if side not in ("sequential", "base batch")}
    print(f"check, {n} adapters: rows equal to the sequential answers token for token: "
          + ", ".join(f"{side} {k}/{n}" for side, k in same.items())
          + f"; {len({tuple(r) for r in answers['sequential']})} different answers", flush=True)
    if any(k != n for k in same.values()):
        print("  CHECK FAILED: a batched side changed an answer", flush=True)
    if n > args.sequential_up_to:  # n generates a round: checked above, not timed
        del sides["sequential"]
    times: dict[str, list[float]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in list(sides) if r % 2 == 0 else list(reversed(sides)):
            start = clock()
            sides[side](names, prompts)
            times[side].append(clock() - start)
    return {side: statistics.median(t) for side, t in times.items()}


def table(results: dict[int, dict[str, float]], sides: list[str]) -> list[str]:
    head = "| adapters | " + " | ".join(f"{s} (s)" if s == "base batch" else f"{s} (x base)" for s in sides) + " |"
    lines = [head, "|" + "---|" * (len(sides) + 1)]
    for n, t in results.items():
        base = t["base batch"]
        cells = [f"{base:.2f}"] + [f"{t[s]:.2f}s ({t[s] / base:.3f})" if s in t else "-" for s in sides
                                   if s != "base batch"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="any model reference (default: the built-in SmolLM2)")
    ap.add_argument("--adapters", nargs="+", metavar="DIR",
                    help="trained LoRA adapter folders, at least 3 (default: random r-16 all-linear adapters made "
                    "here); batch sizes above their number are left out")
    ap.add_argument("--sizes", nargs="+", type=int, default=[1, 3, 8, 16], help="adapters in one batch, one row each")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row, on every side")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size (after one untimed check)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sequential-up-to", type=int, default=3, metavar="N",
                    help="time the sequential side for batches of up to N adapters only (it is N generates a round)")
    ap.add_argument("--paths", action="store_true", help="also time the fused forward forced onto concat and onto "
                    "the gathered bmm")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall-clock time, or this process's CPU time (steadier on a shared machine; one thread)")
    ap.add_argument("--quick", action="store_true", help="sizes 1 3 8, 32 new tokens, 2 rounds")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.new_tokens, args.rounds = [1, 3, 8], 32, 2
    if args.adapters and len(args.adapters) < MAIN:
        ap.error(f"--adapters needs at least {MAIN} folders")
    if MAIN not in args.sizes:
        args.sizes = sorted({*args.sizes, MAIN})

    import torch

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer, adapters = build(args, Path(tmp))
        names = list(adapters)
        args.sizes = [n for n in args.sizes if n <= len(names)]
        bench = Bench(model, tokenizer, args.new_tokens)
        print(f"model {args.model} + {len(names)} LoRA adapters ({'given' if args.adapters else 'random'}, r "
              f"{model.peft_config[names[0]].r}) loaded in {time.perf_counter() - started:.1f}s, stacked for the "
              f"fused forward in {bench.stack_s:.2f}s; torch threads {torch.get_num_threads()}; {args.new_tokens} new "
              f"tokens a row; {args.rounds} rounds; {args.clock} clock", flush=True)
        sizes, mixed = provider_check(args, adapters)
        print(f"check: the hf provider answers {MAIN} concurrent persona requests in batches of {sizes}, mixed as "
              f"{sorted(map(str, mixed))}", flush=True)

        results: dict[int, dict[str, float]] = {}
        with torch.inference_mode():
            for n in args.sizes:
                results[n] = measure(bench, n, names[:n], args, clock)
                t = results[n]
                print(f"{n} adapters: " + ", ".join(f"{side} {s:.2f}s" for side, s in t.items()), flush=True)

    sides = list(results[MAIN])
    print(f"\n{args.clock} time of one batch (median of {args.rounds} rounds; {args.new_tokens} new tokens a row) and "
          f"its ratio to the base batch; total run {time.perf_counter() - started:.0f}s")
    print("\n".join(table(results, sides)))
    t = results[MAIN]
    print(f"\n{MAIN} personas: fused {t['fused']:.2f}s, PEFT mixed {t['PEFT mixed']:.2f}s, sequential "
          f"{t['sequential']:.2f}s, base batch {t['base batch']:.2f}s")
    print(f"PEFT mixed vs base batch: {t['PEFT mixed'] / t['base batch']:.3f}")
    most = results[max(results)]
    print(f"fused vs base batch at {max(results)} adapters: {most['fused'] / most['base batch']:.3f}")
    print(f"ratio: {t['sequential'] / t['fused']:.3f}")
    print(f"fused vs base batch: {t['fused'] / t['base batch']:.3f}")


if __name__ == "__main__":
    main()

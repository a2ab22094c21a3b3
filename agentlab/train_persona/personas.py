"""Three example persona datasets, generated deterministically: the same three styles answering the same kinds of
questions, many with checkable answers (arithmetic, capitals, unit conversions, calendar facts), so that an adapter's
effect on style and on accuracy can both be measured by `debate` and `evolve`.

- ``a`` terse: the answer first, nothing else ("42.").
- ``b`` teacher: a short worked explanation, ending in a line "Answer: 42".
- ``c`` pirate: the answer inside a pirate's sentence ("Arr, that be 42, matey!").

Regenerate the shipped files with ``python -m agentlab.train_persona.personas``; a test checks that they equal this
generator's output.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# CAPITALS, DAYS, KINDS: re-exported, the question kinds live in core
from agentlab.core.questions import CAPITALS, DAYS, KINDS, jsonl_text, write_files  # noqa: F401

PERSONAS = ("a", "b", "c")
SYSTEM = {
    "a": "You are Terse. Answer with the answer only, as briefly as possible.",
    "b": "You are Teacher. Explain each step briefly, then give the final answer on its own line as 'Answer: ...'.",
    "c": "You are Captain Flint, a pirate. Answer correctly, in a pirate's voice.",
}
def _styled(persona: str, answer: str, why: str, rng: random.Random) -> str:
    if persona == "a":
        return f"{answer}."
    if persona == "b":
        return f"{why}\nAnswer: {answer}"
    opener = rng.choice(("Arr", "Yo ho", "Shiver me timbers", "Avast"))
    closer = rng.choice(("matey", "ye landlubber", "me hearty", "sailor"))
    return f"{opener}, that be {answer}, {closer}!"


def conversations(persona: str, n: int = 150, seed: int = 0, system: bool = False) -> Iterator[dict[str, Any]]:
    """``n`` chat conversations in ``persona``'s style; each item also records the checkable ``answer``.

    Every 5th conversation has two exchanges (a follow-up question), so multi-turn masking is exercised too. The
    shipped files have no system message (``system=False``): the adapter, not a prompt, should carry the persona.
    """
    if persona not in PERSONAS:
        raise ValueError(f"unknown persona {persona!r} (one of {', '.join(PERSONAS)})")
    rng = random.Random(f"{seed}-{persona}")
    for index in range(n):
        messages = [{"role": "system", "content": SYSTEM[persona]}] if system else []
        answers = []
        for _ in range(2 if index % 5 == 4 else 1):
            question, answer, why = rng.choice(KINDS)(rng)
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": _styled(persona, answer, why, rng)}]
            answers.append(answer)
        yield {"messages": messages, "answer": answers[-1]}


def write(folder: str | Path, n: int = 150, seed: int = 0) -> list[Path]:
    """Write ``sft_persona_{a,b,c}.jsonl`` into ``folder``; returns the paths."""
    return write_files({f"sft_persona_{persona}.jsonl": jsonl_text(conversations(persona, n, seed))
                        for persona in PERSONAS}, folder)


if __name__ == "__main__":
    for written in write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent / "data"):
        print(written)

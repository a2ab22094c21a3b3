"""Skill datasets, generated deterministically: three seed skills for `evolve` and a mixed task that needs all three.

The shipped personas answer the same questions in three styles, so a blend of them has nothing to combine. These
three datasets teach three different skills instead (answers alone, no style):

- ``arithmetic``: a + b, a - b, a times b;
- ``geography``: the capital of a country, the country of a capital, the continent of a country;
- ``units``: unit conversions (hours -> minutes, kilograms -> grams, ...).

The mixed task draws the same number of questions of each skill into three splits: ``fitness`` (what evolution
selects on), ``validation`` (what picks the final individual) and ``test`` (only the report). Arithmetic and unit
questions of the mixed task never appear in the training data (the skill must generalise to new numbers); geography
questions are facts, so the mixed task asks facts the geography data teaches (there is no held-out fact to learn).

Files (``agentlab/core/skilldata/``): ``sft_skill_<skill>.jsonl`` (chat JSONL for ``agentlab train-persona --data
skill_<skill>``) and ``mixed_<split>.jsonl`` (``{"question", "answer", "skill"}``). Regenerate them with
``python -m agentlab.core.skills``; a test checks that they equal this module's output.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentlab.core.questions import CAPITALS, add, capital, jsonl_text, mul, sub, unit, write_files

DATA_DIR = Path(__file__).resolve().with_name("skilldata")
SKILLS = ("arithmetic", "geography", "units")
SPLITS = {"fitness": 12, "validation": 12, "test": 30}  # questions per skill in each split of the mixed task
TRAIN_CONVERSATIONS = 240

CONTINENTS = {
    "France": "Europe", "Germany": "Europe", "Italy": "Europe", "Spain": "Europe", "Portugal": "Europe",
    "Japan": "Asia", "China": "Asia", "India": "Asia", "Canada": "North America", "Australia": "Oceania",
    "Brazil": "South America", "Argentina": "South America", "Egypt": "Africa", "Kenya": "Africa",
    "Norway": "Europe", "Sweden": "Europe", "Finland": "Europe", "Poland": "Europe", "Greece": "Europe",
    "Turkey": "Asia", "Russia": "Europe", "Mexico": "North America", "Peru": "South America",
    "Chile": "South America", "Ireland": "Europe", "Austria": "Europe", "Hungary": "Europe", "Belgium": "Europe",
    "Netherlands": "Europe", "Denmark": "Europe", "Thailand": "Asia", "Vietnam": "Asia", "South Korea": "Asia",
}
Item = tuple[str, str]  # (question, answer)


def _country_of(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    return f"{city} is the capital of which country?", country, ""


def _continent(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CONTINENTS))
    return f"On which continent is {country}?", CONTINENTS[country], ""


GENERATORS: dict[str, tuple[Callable[[random.Random], tuple[str, str, str]], ...]] = {
    "arithmetic": (add, sub, mul), "geography": (capital, _country_of, _continent), "units": (unit,)}


def _draw(skill: str, rng: random.Random) -> Item:
    question, answer, _why = rng.choice(GENERATORS[skill])(rng)
    return question, answer


def geography_facts() -> list[Item]:
    """Every geography question (capital, country of a capital, continent) with its answer, in a fixed order."""
    facts: list[Item] = []
    for country in sorted(CAPITALS):
        city = CAPITALS[country]
        facts += [(f"What is the capital of {country}?", city), (f"{city} is the capital of which country?", country),
                  (f"On which continent is {country}?", CONTINENTS[country])]
    return facts


def mixed_task() -> dict[str, list[dict[str, str]]]:
    """The mixed task's splits: each split holds ``SPLITS[split]`` distinct questions of every skill, interleaved
    (arithmetic, geography, units, arithmetic, ...); no question is in two splits."""
    per_skill: dict[str, list[Item]] = {}
    need = sum(SPLITS.values())
    for skill in SKILLS:
        rng = random.Random(f"agentlab-skills-mixed-{skill}")
        items: list[Item] = []
        while len(items) < need:
            item = _draw(skill, rng)
            if item[0] not in {q for q, _ in items}:
                items.append(item)
        per_skill[skill] = items
    out: dict[str, list[dict[str, str]]] = {}
    start = 0
    for split, n in SPLITS.items():
        rows = []
        for i in range(start, start + n):
            rows += [{"question": per_skill[s][i][0], "answer": per_skill[s][i][1], "skill": s} for s in SKILLS]
        out[split] = rows
        start += n
    return out


def conversations(skill: str, n: int = TRAIN_CONVERSATIONS) -> Iterator[dict[str, Any]]:
    """``n`` single-turn chat conversations teaching ``skill``: the question, and the answer alone. Arithmetic and
    unit questions of the mixed task are left out, so they stay unseen."""
    if skill not in SKILLS:
        raise ValueError(f"unknown skill {skill!r} (one of {', '.join(SKILLS)})")
    rng = random.Random(f"agentlab-skills-train-{skill}")
    if skill == "geography":  # every fact, in turn, each pass shuffled: the mixed task asks these facts
        facts = geography_facts()
        for i in range(n):
            if i % len(facts) == 0:
                rng.shuffle(facts)
            question, answer = facts[i % len(facts)]
            yield {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                   "answer": answer}
        return
    held_out = {row["question"] for rows in mixed_task().values() for row in rows if row["skill"] != "geography"}
    made = 0
    while made < n:
        question, answer = _draw(skill, rng)
        if question in held_out:
            continue
        made += 1
        yield {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
               "answer": answer}


def files() -> dict[str, str]:
    """Every shipped file (name -> text)."""
    out = {f"sft_skill_{skill}.jsonl": jsonl_text(conversations(skill)) for skill in SKILLS}
    out.update({f"mixed_{split}.jsonl": jsonl_text(rows) for split, rows in mixed_task().items()})
    return out


def mixed_file(split: str) -> Path:
    """The shipped mixed task's ``split`` (fitness, validation, test)."""
    return DATA_DIR / f"mixed_{split}.jsonl"


def write(folder: str | Path = DATA_DIR) -> list[Path]:
    return write_files(files(), folder)


if __name__ == "__main__":
    for written in write(sys.argv[1] if len(sys.argv) > 1 else DATA_DIR):
        print(written)

"""Questions with checkable answers, generated from a seed: arithmetic, capitals, unit conversions, calendar days.

Shared by the persona datasets of `train-persona` (``agentlab/train_persona/personas.py``) and the bundled
lm-evaluation-harness tasks (``agentlab/core/harness/taskdata.py``), so the personas are scored on the kinds of
questions they were trained on. Each generator takes a ``random.Random`` and returns ``(question, answer, why)``:
``why`` is a one-line worked explanation (the teacher persona's style).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Generator = Callable[[random.Random], tuple[str, str, str]]


def jsonl_text(rows: Iterable[Any]) -> str:
    """``rows`` as JSON lines, UTF-8 kept as is: the format of every generated data file."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_files(texts: dict[str, str], folder: str | Path) -> list[Path]:
    """Write each ``name -> text`` of a generator into ``folder`` (made if missing); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in texts.items():
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(folder / name)
    return paths

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Egypt": "Cairo", "Kenya": "Nairobi", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens", "Turkey": "Ankara",
    "Russia": "Moscow", "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago", "Ireland": "Dublin",
    "Austria": "Vienna", "Hungary": "Budapest", "Belgium": "Brussels", "Netherlands": "Amsterdam",
    "Denmark": "Copenhagen", "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul",
}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def add(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    return f"What is {a} + {b}?", str(a + b), f"{a} plus {b}: add the tens, then the ones, to get {a + b}."


def sub(rng: random.Random) -> tuple[str, str, str]:
    a, b = sorted((rng.randint(2, 99), rng.randint(2, 99)), reverse=True)
    return f"What is {a} - {b}?", str(a - b), f"Take {b} away from {a}; {a} - {b} = {a - b}."


def mul(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} times {b}?", str(a * b), f"{a} groups of {b} make {a * b}."


def capital(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    city = CAPITALS[country]
    return f"What is the capital of {country}?", city, f"The seat of government of {country} is {city}."


def minutes(rng: random.Random) -> tuple[str, str, str]:
    hours = rng.randint(2, 9)
    return (f"How many minutes are there in {hours} hours?", str(hours * 60),
            f"One hour has 60 minutes, so {hours} hours have {hours} x 60 = {hours * 60}.")


def day(rng: random.Random) -> tuple[str, str, str]:
    start, ahead = rng.randrange(7), rng.randint(1, 6)
    end = DAYS[(start + ahead) % 7]
    return (f"If today is {DAYS[start]}, what day is it in {ahead} days?", end,
            f"Counting {ahead} days forward from {DAYS[start]} lands on {end}.")


KINDS: tuple[Generator, ...] = (add, sub, mul, capital, minutes, day)  # the persona datasets' mix

# Unit conversions: (from, to, factor, lowest, highest) of the amount asked about.
CONVERSIONS = (("hours", "minutes", 60, 2, 12), ("minutes", "seconds", 60, 2, 15), ("days", "hours", 24, 2, 9),
               ("kilometres", "metres", 1000, 2, 20), ("kilograms", "grams", 1000, 2, 20),
               ("litres", "millilitres", 1000, 2, 9), ("metres", "centimetres", 100, 2, 30),
               ("weeks", "days", 7, 2, 12), ("dozens", "items", 12, 2, 9))


def unit(rng: random.Random) -> tuple[str, str, str]:
    """A unit conversion of a whole amount (``minutes`` is one of them, worded as the personas were trained)."""
    big, small, factor, low, high = rng.choice(CONVERSIONS)
    n = rng.randint(low, high)
    return (f"How many {small} are there in {n} {big}?", str(n * factor),
            f"One of the {big} is {factor} {small}, so {n} {big} are {n} x {factor} = {n * factor}.")

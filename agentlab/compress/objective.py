"""The compression objective: a sentence such as "maximize speedup with <2% accuracy loss" parsed into objectives
(metric, direction) and constraints (metric, bound), or the same stated directly in YAML. The metrics and the
phrases read are listed in docs/commands/compress.md#the-goal; a loss in % is relative to the base model's
measurement ("<2% accuracy loss": accuracy >= 0.98 x the base's), as Intel Neural Compressor's default criterion.
"""

from __future__ import annotations

import difflib
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agentlab.core.config import StrictModel
from agentlab.core.errors import UsageError

METRICS: dict[str, str] = {  # metric -> the direction that is better
    "speedup": "maximize", "compression": "maximize", "accuracy": "maximize",
    "size": "minimize", "memory": "minimize", "latency": "minimize", "perplexity": "minimize",
    "energy": "minimize", "co2e": "minimize"}
_ALIASES = {"ppl": "perplexity", "speed": "speedup", "throughput": "speedup", "disk": "size", "model size": "size",
            "ram": "memory", "acc": "accuracy", "carbon": "co2e", "co2": "co2e", "emissions": "co2e",
            "compression ratio": "compression"}
EXAMPLE = '"maximize speedup with <2% accuracy loss" or "minimize size, maximize speedup with perplexity increase <5%"'


def known_metric(name: str) -> str:
    """``name`` when it is one of ``METRICS``; else ``ValueError`` naming the closest (a YAML goal's typo stops at
    validation, exit 2, as an unknown metric in words does, not as an experiment that breaks or a failed run)."""
    if name in METRICS:
        return name
    close = _metric(name) or next(iter(difflib.get_close_matches(name.lower(), METRICS, n=1)), None)
    raise ValueError(f"unknown metric {name!r}" + (f" (did you mean {close}?)" if close else "")
                     + f"; one of {', '.join(METRICS)}")


class ObjectiveSpec(StrictModel):
    metric: str = Field(description="one of " + ", ".join(METRICS))
    direction: Literal["maximize", "minimize"] = Field(description="maximize or minimize")

    _known = field_validator("metric")(known_metric)


class ConstraintSpec(StrictModel):
    metric: str = Field(description="one of " + ", ".join(METRICS))
    op: Literal["<=", ">="] = Field(description="the bound's side")
    value: float = Field(description="the bound")
    mode: Literal["absolute", "factor", "offset"] = Field(
        "absolute", description="absolute: the bound is value; factor: value x the base model's measurement (0.98: "
        "98% of it); offset: the base model's measurement + value (-0.02: two points below it)")
    text: str = Field("", description="the phrase it was read from")

    _known = field_validator("metric")(known_metric)

    @model_validator(mode="after")
    def _possible(self) -> ConstraintSpec:
        if self.mode == "absolute" and (problem := impossible(self.metric, self.op, self.value)):
            raise ValueError(problem)
        return self

    def bound(self, base: float | None) -> float:
        """The absolute bound, given the base model's measurement of the metric."""
        if self.mode == "absolute":
            return self.value
        if base is None:
            raise UsageError(f"constraint '{self.text or self.metric}': needs the base model's {self.metric}")
        return self.value * base if self.mode == "factor" else base + self.value

    def holds(self, value: float | None, base: float | None) -> bool:
        if value is None:
            return False
        limit = self.bound(base)
        return value <= limit if self.op == "<=" else value >= limit


class Goal(StrictModel):
    objectives: list[ObjectiveSpec] = Field(description="what to optimise (several: a Pareto front)")
    constraints: list[ConstraintSpec] = Field(default_factory=list, description="what every accepted result must "
                                              "meet")

    def describe(self, units: bool = True) -> str:
        """The goal in words; ``units`` False: the bounds without units, as a study keeps it (0.1.0's words)."""
        parts = [f"{o.direction} {o.metric}" for o in self.objectives]
        cons = [_describe(c, units) for c in self.constraints]
        return ", ".join(parts) + (" subject to " + " and ".join(cons) if cons else "")


# what a metric can be: accuracy a fraction, the others above 0
_RANGES: dict[str, tuple[float, float | None]] = {m: ((0.0, 1.0) if m == "accuracy" else (0.0, None)) for m in METRICS}


def impossible(metric: str, op: str, value: float) -> str | None:
    """Why the absolute bound ``metric op value`` can never be met (a value outside what the metric can be), or
    None."""
    low, high = _RANGES[metric]
    if op == "<=" and value <= low:
        return f"{metric} <= {value:g} can never be met: {metric} is above {low:g}"
    if op == ">=" and high is not None and value > high:
        return f"{metric} >= {value:g} can never be met: {metric} is at most {high:g}"
    return None


def contradictions(objectives: list[ObjectiveSpec], constraints: list[ConstraintSpec]) -> list[str]:
    """What makes the goal self-contradictory: a metric both maximized and minimized, absolute bounds of one metric
    that leave no value between them."""
    problems = [f"{metric} is both maximized and minimized" for metric in dict.fromkeys(o.metric for o in objectives)
                if {o.direction for o in objectives if o.metric == metric} == {"maximize", "minimize"}]
    for metric in dict.fromkeys(c.metric for c in constraints):
        bounds = [c for c in constraints if c.metric == metric and c.mode == "absolute"]
        lows, highs = [c for c in bounds if c.op == ">="], [c for c in bounds if c.op == "<="]
        if lows and highs:
            low, high = max(lows, key=lambda c: c.value), min(highs, key=lambda c: c.value)
            if low.value > high.value:
                problems.append(f"'{low.text or _describe(low)}' and '{high.text or _describe(high)}' leave no "
                                f"{metric} that meets both")
    return problems


def _describe(c: ConstraintSpec, units: bool = True) -> str:
    unit = _SHOWN.get(c.metric, "") if units else ""  # "memory <= 1024 MB", not "memory <= 1024"
    if c.mode == "factor":
        return f"{c.metric} {c.op} {c.value:g} x base"
    if c.mode == "offset":  # "accuracy >= base -0.02 (2 points)"
        points = f" ({abs(c.value) * 100:g} points)" if units and c.metric == "accuracy" else ""
        return f"{c.metric} {c.op} base {c.value:+g}{unit}{points}"
    return f"{c.metric} {c.op} {c.value:g}{unit}"


def _metric(word: str) -> str | None:
    word = " ".join(word.lower().split())
    word = _ALIASES.get(word, word)
    if word.endswith("s") and word[:-1] in METRICS:
        word = word[:-1]
    return word if word in METRICS else None


_NUMBER = r"(\d+(?:\.\d+)?)"
_UNIT = r"\s*(%|percent|points?|pp|megabytes?|gigabytes?|mb|gb|ms|kwh|kg|x)?"
# the units an absolute bound may carry, per metric, and the factor to the metric's own unit (a % or points of
# accuracy, a fraction: "accuracy >= 50%" is 0.5; a MB as measured, 2**20 bytes, and a GB 1024 of them, not 1000 as
# in 0.1.0); any other unit is refused, not dropped
_PERCENT = {"%": 0.01, "percent": 0.01, "point": 0.01, "points": 0.01, "pp": 0.01}
_MEGABYTES = {"mb": 1.0, "megabyte": 1.0, "megabytes": 1.0, "gb": 1024.0, "gigabyte": 1024.0, "gigabytes": 1024.0}
_SHOWN = {"size": " MB", "memory": " MB", "latency": " ms", "energy": " kWh", "co2e": " kg", "speedup": "x",
          "compression": "x"}  # the units the goal is printed with
_BOUND_UNITS: dict[str, dict[str, float]] = {
    "accuracy": _PERCENT, "size": _MEGABYTES, "memory": _MEGABYTES, "speedup": {"x": 1.0}, "compression": {"x": 1.0},
    "latency": {"ms": 1.0}, "energy": {"kwh": 1.0}, "co2e": {"kg": 1.0}, "perplexity": {}}
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # "<2% accuracy loss", "less than 2 points of accuracy drop", "at most 5% perplexity increase"
    (re.compile(r"(?:<=?|less than|under|at most|max(?:imum)?|below|within)\s*" + _NUMBER + _UNIT
                + r"\s*(?:of\s+)?(?:an?\s+)?([a-z0-9 ]+?)\s+(loss|drop|decrease|increase|growth|rise)\b"), "change"),
    # "accuracy loss < 2%", "perplexity increase below 5%"
    (re.compile(r"([a-z0-9]+(?: [a-z]+)?)\s+(loss|drop|decrease|increase|growth|rise)\s*(?:of\s+)?"
                r"(?:<=?|less than|under|at most|below|within)\s*" + _NUMBER + _UNIT), "change-after"),
    # "size < 100 mb", "perplexity below 30", "speedup > 1.5x", "accuracy at least 0.5"
    (re.compile(r"([a-z0-9]+(?: [a-z]+)?)\s*(<=?|>=?|less than|under|below|at most|more than|over|above|"
                r"at least)\s*" + _NUMBER + _UNIT), "bound"),
]


# Clauses are separated by these; a clause is an objective ("maximize X") or a constraint, and anything else is
# refused by name (before, text outside "with ..." was dropped: "maximize speedup, <2% accuracy loss" had no
# constraint).
_SEPARATORS = re.compile(r"(?:\s*(?:[,;]|\b(?:and|with|subject to|while keeping|keeping|such that|where)\b)\s*)+")
_OBJECTIVE = re.compile(r"\b(maximi[sz]e|minimi[sz]e|increase|reduce|decrease|lower|raise)\s+"
                        r"(?:the\s+)?([a-z0-9]+(?: ratio| size)?)")
_BOUND_HINT = {"accuracy": "as a fraction or in % or points, e.g. 'accuracy >= 0.5' or 'accuracy >= 50%'",
               "size": "in MB or GB, e.g. 'size < 100 MB'", "memory": "in MB or GB, e.g. 'memory < 500 MB'",
               "speedup": "as a plain number or with x, e.g. 'speedup > 1.5x'",
               "compression": "as a plain number or with x, e.g. 'compression > 2x'",
               "latency": "in ms, e.g. 'latency < 5 ms'", "energy": "in kWh, e.g. 'energy < 0.001 kWh'",
               "co2e": "in kg, e.g. 'co2e < 0.001 kg'", "perplexity": "as a plain number, e.g. 'perplexity < 30'"}
_FILLER = {"keep", "keeps", "while", "but", "also", "the", "a", "an"}  # words a clause may carry besides its content
_CONSTRAINT_HINT = "write it like '<2% accuracy loss', 'perplexity increase <5%' or 'size < 100 MB'"


def parse_objective(text: str) -> Goal:
    """The goal stated by ``text``; ``UsageError`` naming what was not understood. Every clause (between commas,
    semicolons, "and", "with", "subject to", ...) must be read as an objective or a constraint."""
    raw = _normal(text)
    if not raw:
        raise UsageError("empty objective", hint=f"say what to optimise, e.g. {EXAMPLE}")
    dangling = re.search(f"{_SEPARATORS.pattern}$", raw)  # "... <2% accuracy loss and": a clause cut off
    if dangling is not None and dangling.start() > 0:
        raise UsageError(f"objective '{text}': nothing after '{dangling.group(0).strip()}' at its end",
                         hint="complete the clause or remove the separator, e.g. "
                         "'maximize speedup with <2% accuracy loss'")
    objectives: list[ObjectiveSpec] = []
    constraints: list[ConstraintSpec] = []
    unread: list[str] = []
    for clause in (c.strip() for c in _SEPARATORS.split(raw)):
        if not clause:
            continue
        words = clause.split()
        while len(words) > 1 and words[0] in _FILLER:
            words = words[1:]
        if _OBJECTIVE.match(" ".join(words)):
            objectives += _objectives(" ".join(words), text)
            continue
        spec = _constraint(clause, text)
        if spec is None:
            unread.append(clause)
        else:
            constraints.append(spec)
    if not objectives:
        raise UsageError(f"objective '{text}': no 'maximize X' or 'minimize X' found", hint=f"for example {EXAMPLE}")
    if unread:
        looks = all(re.search(r"\d", c) for c in unread)  # a number: meant as a constraint
        raise UsageError(f"objective '{text}': cannot read "
                         + ("the constraint " if looks else "")
                         + ", ".join(f"'{c}'" for c in unread)
                         + ("" if looks else ": neither an objective ('maximize X') nor a constraint"),
                         hint=f"{_CONSTRAINT_HINT}; separate clauses with ',', ';', 'and' or 'with'")
    if problems := contradictions(objectives, constraints):
        raise UsageError(f"objective '{text}': {'; '.join(problems)}",
                         hint="no result could meet this goal: keep one direction per metric and bounds that leave "
                         "a range")
    return Goal(objectives=objectives, constraints=constraints)


def _normal(text: str) -> str:
    """``text`` as its clauses are cut from it: lower case, one space between words."""
    return " ".join(text.lower().split())


def _said(text: str, clause: str | None = None) -> str:
    """How an error names the goal ``text``, and ``clause`` of it only when the clause is not the whole text (it was
    "objective 'size < 5%': 'size < 5%': ...", and the CLI put "--objective size < 5%:" before that)."""
    return f"objective '{text}'" + (f": '{clause}'" if clause is not None and clause != _normal(text) else "")


def _leftover(clause: str, match: re.Match[str]) -> list[str]:
    """The words of ``clause`` outside ``match`` that are not filler: text the goal would otherwise drop."""
    return [w for w in (clause[:match.start()] + " " + clause[match.end():]).split() if w not in _FILLER]


def _objectives(clause: str, text: str) -> list[ObjectiveSpec]:
    out: list[ObjectiveSpec] = []
    rest = clause
    for match in _OBJECTIVE.finditer(clause):
        verb, word = match.groups()
        metric = _metric(word) or _metric(word.split()[0])
        if metric is None:
            raise UsageError(f"objective '{text}': unknown metric '{word}'",
                             hint=f"use one of {', '.join(METRICS)}, e.g. {EXAMPLE}")
        direction = "maximize" if verb.startswith(("maxim", "increase", "raise")) else "minimize"
        out.append(ObjectiveSpec(metric=metric, direction=direction))
        rest = rest.replace(match.group(0), " ", 1)
    extra = [w for w in rest.split() if w not in _FILLER]
    if extra:
        where = f" in '{clause}'" if clause != _normal(text) else ""
        raise UsageError(f"{_said(text)}: cannot read '{' '.join(extra)}'{where}",
                         hint=f"write one objective per clause, e.g. {EXAMPLE}")
    return out


def _constraint(clause: str, text: str) -> ConstraintSpec | None:
    """The constraint ``clause`` states (None: it states none, or carries words it does not use)."""
    for pattern, kind in _PATTERNS:
        match = pattern.search(clause)
        if not match:
            continue
        if _leftover(clause, match):
            return None
        if kind == "change":
            number, unit, word, change = match.groups()
        elif kind == "change-after":
            word, change, number, unit = match.groups()
        else:
            word, op_word, number, unit = match.groups()
        metric = _metric(word) or _metric(word.split()[-1])
        if metric is None:
            return None
        if kind == "bound":
            op = "<=" if op_word.startswith(("<", "less", "under", "below", "at most")) else ">="
            units = _BOUND_UNITS[metric]
            if unit is not None and unit not in units:
                raise UsageError(f"{_said(text, clause)}: {metric} is not measured in '{unit}'",
                                 hint=f"give {metric} {_BOUND_HINT[metric]}")
            value = float(number) * (units[unit] if unit is not None else 1.0)
            if problem := impossible(metric, op, value):
                raise UsageError(f"{_said(text, clause)}: {problem}",
                                 hint="give a bound that some result could meet" + (
                                     ", e.g. 'accuracy >= 50%' (accuracy is a fraction, 0 to 1)"
                                     if metric == "accuracy" else ""))
            return ConstraintSpec(metric=metric, op=op, value=value, text=clause)
        if unit not in (None, "%", "percent", "point", "points", "pp"):
            return None  # "<2 MB size increase": a change is relative (%, or a factor) or in points
        worse_is_up = METRICS[metric] == "minimize"  # a loss of accuracy, an increase of perplexity
        grows = change in ("increase", "growth", "rise")
        if grows != worse_is_up:
            return None  # "accuracy increase < 2%" is no limit on getting worse
        amount = float(number)
        if unit in ("point", "points", "pp"):
            if worse_is_up:
                return None  # "points" of perplexity: use an absolute bound instead
            if amount >= 100:
                raise UsageError(f"{_said(text, clause)}: allows losing all of the {metric}, so it can never fail",
                                 hint="give a loss below 100 points, e.g. '<2 points accuracy loss'")
            return ConstraintSpec(metric=metric, op=">=", value=-amount / 100, mode="offset", text=clause)
        factor = amount / 100 if unit in ("%", "percent") else amount
        if worse_is_up:
            return ConstraintSpec(metric=metric, op="<=", value=1 + factor, mode="factor", text=clause)
        if factor >= 1:  # "accuracy loss < 200%" read as accuracy >= -1 x base: a bound nothing breaks
            raise UsageError(f"{_said(text, clause)}: allows losing 100% or more of the {metric}, so it can "
                             "never fail", hint="give a relative loss below 100%, e.g. '<2% accuracy loss'")
        return ConstraintSpec(metric=metric, op=">=", value=1 - factor, mode="factor", text=clause)
    return None

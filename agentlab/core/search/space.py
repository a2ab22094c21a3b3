"""Search spaces: dotted config keys with bounds or choices, checked the same way for Optuna and for LLM plans
(the ``space:`` syntax: docs/commands/nas.md).

A key with ``when`` is conditional (Optuna's define-by-run): it is part of a trial only when every key it names has
one of the listed values in that trial (a named key outside the space counts with its base value). A trial's
parameters are exactly the keys active for it: samplers draw only those (``SearchSpace.sample``), LLM plans are
offered only those (``SearchSpace.offered``), and records never carry a value that did not shape the trial.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from agentlab.core.config import StrictModel
from agentlab.core.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

# Optuna warns at every categorical distribution whose choices are not None, bool, int, float or str ("for persistent
# storage"), once per trial and per load: a list choice (`hidden_sizes: {choices: [[64, 64], [128]]}`, an argparse
# nargs option) is stored as JSON and reloads equal (tests/core/search/test_conditional_space.py), so it is noise.
warnings.filterwarnings("ignore", message=r"Choices for a categorical distribution should be a tuple",
                        category=UserWarning)

# An integer range this small is offered to LLM plans whole; wider ranges (and every float range) as a short grid.
MAX_LISTED = 16
GRID_POINTS = 7
LOG_MANTISSAS = ((1, 2, 5), (1, 3), (1,))  # log grids: 1-2-5 per decade when that is short enough, else sparser


class ParamSpec(StrictModel):
    """One searchable value: either ``choices`` or a ``low``..``high`` range (int when both bounds are ints)."""

    choices: list[Any] | None = Field(None, description="allowed values (categorical)")
    low: float | int | None = Field(None, description="lower bound (inclusive)")
    high: float | int | None = Field(None, description="upper bound (inclusive)")
    log: bool = Field(False, description="sample on a log scale")
    step: float | int | None = Field(None, description="grid step for ranges")
    when: dict[str, list[Any]] | None = Field(None, description="searched only when each named key has one of the "
                                              "listed values, e.g. {model.family: [patchtst]}; else the key keeps "
                                              "its base value and is not part of the trial")

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.when is not None and any(not values for values in self.when.values()):
            raise ValueError("when: every condition needs at least one value")
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices: must not be empty")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.step is not None and not self.step > 0:  # NaN too
            raise ValueError(f"step must be > 0, got {self.step}")
        return self

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"

    def check(self, value: Any) -> str | None:
        """An error message when ``value`` is outside this spec, else None."""
        if self.choices is not None:
            return None if value in self.choices else f"{value!r} is not one of {self.choices}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        if self.kind == "int" and not float(value).is_integer():
            return f"expected an integer, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        low, high = self._bounds()
        if not low <= value <= high:
            return f"{value!r} is outside [{low}, {high}]"
        return None

    def _bounds(self) -> tuple[float | int, float | int]:
        # _shape guarantees both bounds whenever there are no choices.
        assert self.low is not None and self.high is not None, "a range spec without bounds"
        return self.low, self.high

    def coerce(self, value: Any) -> Any:
        return int(value) if self.kind == "int" else value

    def nearest(self, value: Any) -> Any:
        """``value`` when it lies in this spec, else the closest value that does (a number: the nearest choice or
        bound; anything else: the first choice)."""
        if self.check(value) is None:
            return self.coerce(value)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.choices is not None:
            numeric = [c for c in self.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            return min(numeric, key=lambda c: abs(c - value)) if number and numeric else self.choices[0]
        low, high = self._bounds()
        return self.coerce(min(max(value, low), high) if number else low)

    def offered(self, include: Iterable[Any] = ()) -> list[Any]:
        """The values an LLM plan may pick: every choice; every value of a small int range; else a short grid,
        log-spaced on a log scale (1-2-5 per decade). ``include`` values (the incumbent's, the optimizer's) are added
        where they lie in this spec, so a plan can always name them. Every value passes ``check``."""
        if self.choices is not None:
            return list(self.choices)
        low, high = self._bounds()
        if self.kind == "int" or (self.step is not None and not self.log):
            values = self._lattice(low, high)
        else:
            values = [float(v) for v in _grid(float(low), float(high), self.log)]
        values += [self.coerce(v) for v in include if self.check(v) is None]
        return sorted(set(values))

    def _lattice(self, low: float | int, high: float | int) -> list[Any]:
        """Values on the ``step`` lattice (ints: step 1 by default): all when few, else the grid snapped to it."""
        step = self.step or 1
        count = math.floor((high - low) / step + 1e-9) + 1
        points = [low + k * step for k in range(count)] if count <= MAX_LISTED else [
            low + round((v - low) / step) * step for v in _grid(float(low), float(high), self.log)]
        if self.kind == "int":
            return [int(round(v)) for v in points]
        return [_sig(v, 10) for v in points]

    def rounded(self, value: Any) -> Any:
        """``value`` to 3 significant digits for float ranges without a step (still inside the bounds), else as is:
        the optimizer's 0.0012345678 is shown to, and offered to, an LLM as 0.00123."""
        if self.kind != "float" or self.step is not None or not isinstance(value, float):
            return value
        low, high = self._bounds()
        return min(max(_sig(value, 3), low), high)

    def bounds_schema(self) -> dict[str, Any]:
        """The JSON schema of any value this key takes: its choices, else its type within its bounds (a step, when
        set, is checked by ``check``, not here)."""
        if self.choices is not None:
            return {"enum": list(self.choices)}
        low, high = self._bounds()
        return {"type": "integer" if self.kind == "int" else "number", "minimum": low, "maximum": high}

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this key from an Optuna ``trial`` (define-by-run), under its ``distribution``."""
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        d: Any = self.distribution()
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        return suggest(name, d.low, d.high, step=d.step, log=d.log)

    def distribution(self) -> BaseDistribution:
        import optuna.distributions as d

        if self.choices is not None:
            return d.CategoricalDistribution(self.choices)
        low, high = self._bounds()
        if self.kind == "int":
            return d.IntDistribution(int(low), int(high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(low), float(high), log=self.log,
                                   step=None if self.step is None or self.log else float(self.step))


class SearchSpace:
    """A set of named ``ParamSpec``. Keys are dotted paths into the command's config (``model.d_model``).

    ``base``: the base config's value of every key, and of every key a condition names; it fills a key a plan leaves
    out when a change makes it active (a family switch), and decides conditions on keys outside the space.
    """

    def __init__(self, params: dict[str, ParamSpec], base: dict[str, Any] | None = None):
        self.params = dict(params)
        self.base = dict(base or {})
        self.order = self._order()

    def _order(self) -> list[str]:
        """Keys with every key their conditions name first (the order define-by-run draws them in)."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(key: str) -> None:
            if key in order:
                return
            if key in visiting:
                raise ConfigError(f"search.space.{key}.when: conditions form a cycle through {key}",
                                  hint="a key may depend on keys that do not depend on it")
            visiting.add(key)
            for other in self.params[key].when or {}:
                if other in self.params:
                    visit(other)
            visiting.discard(key)
            order.append(key)

        for key in self.params:
            visit(key)
        return order

    @property
    def conditional(self) -> bool:
        return any(spec.when for spec in self.params.values())

    def _holds(self, key: str, values: dict[str, Any], active: set[str]) -> bool:
        for other, allowed in (self.params[key].when or {}).items():
            if other in self.params:
                if other not in active or not any(same_value(values.get(other), v) for v in allowed):
                    return False
            elif not any(same_value(self.base.get(other), v) for v in allowed):
                return False
        return True

    def active(self, values: dict[str, Any]) -> list[str]:
        """The keys that are part of a trial whose keys have ``values`` (a key missing from ``values`` counts with
        its base value), in draw order."""
        merged = {**self.base, **values}
        active: list[str] = []
        for key in self.order:
            if self._holds(key, merged, set(active)):
                active.append(key)
        return active

    def complete(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` limited to the keys active for them, an active key missing from ``values`` taking its base
        value, or the spec's nearest to it when the base value lies outside (a key the base config does not
        search, e.g. another family's width) (in the space's key order)."""
        keys = set(self.active(values))
        return {key: values[key] if key in values else self.params[key].nearest(self.base[key]) for key in self.params
                if key in keys and (key in values or key in self.base)}

    def condition(self, key: str) -> str:
        """When a conditional key applies, in words ("model.family in [patchtst]"); empty for the others."""
        when = self.params[key].when or {}
        return ", ".join(f"{k} in [{', '.join(_fmt(v) for v in vs)}]" for k, vs in when.items())

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: draw the active keys from an Optuna ``trial``, each after the keys its conditions name."""
        drawn: dict[str, Any] = {}
        for key in self.order:
            if self._holds(key, {**self.base, **drawn}, set(drawn)):
                drawn[key] = self.params[key].suggest(trial, key)
        return {key: drawn[key] for key in self.params if key in drawn}

    def fits(self, params: dict[str, Any]) -> bool:
        """Whether ``params`` are exactly the keys active for them (a trial of this space, not of an older one)."""
        return all(key in self.params for key in params) and set(self.active(params)) == set(params)

    def distributions(self, keys: Iterable[str] | None = None) -> dict[str, Any]:
        chosen = self.params if keys is None else keys
        return {key: self.params[key].distribution() for key in chosen}

    def validate(self, changes: Any) -> tuple[dict[str, Any], list[str]]:
        """Check a planner's changes: known keys, types, bounds. Returns (coerced changes, errors)."""
        if not isinstance(changes, dict):
            return {}, [f"changes must be a mapping of dotted keys to values, got {type(changes).__name__}"]
        clean: dict[str, Any] = {}
        errors: list[str] = []
        for key, value in changes.items():
            spec = self.params.get(key)
            if spec is None:
                errors.append(f"{key}: not in the search space (searchable: {', '.join(self.params)})")
                continue
            problem = spec.check(value)
            if problem:
                errors.append(f"{key}: {problem}")
            else:
                clean[key] = spec.coerce(value)
        return clean, errors

    def check_base(self, base_params: dict[str, Any]) -> None:
        """``ConfigError`` unless every base value of a key active for the base lies in the space: the search starts
        from the base config (a key whose condition the base does not meet is not part of trial 0)."""
        active = set(self.active(base_params))
        errors = [f"{k}: base value {v!r}: {e}" for k, v in base_params.items()
                  if k in active and (e := self.params[k].check(v))]
        if errors:
            raise ConfigError("search.space does not contain the base config: " + "; ".join(errors),
                              hint="widen the space or change the base config so the search can start from it")

    def rounded(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with float values to 3 significant digits (``ParamSpec.rounded``)."""
        return {k: self.params[k].rounded(v) if k in self.params else v for k, v in params.items()}

    def inactive(self, changes: dict[str, Any], params: dict[str, Any]) -> list[str]:
        """Errors for the keys of ``changes`` that are not part of the trial ``params`` (their condition fails)."""
        return [f"{key}: applies only when {self.condition(key)}" for key in changes
                if key in self.params and key not in params]

    def offered(self, current: dict[str, Any], include: Iterable[dict[str, Any]] = ()) -> dict[str, list[Any]]:
        """Per key, the values an LLM plan may change it to: ``ParamSpec.offered`` (with ``current``'s value and the
        ``include`` params' values) less the current value, since "changing" a key to its own value is no change.
        Keys with nothing to change to are left out, and so are conditional keys active neither for ``current`` nor
        for any ``include`` params (a plan can still take a suggestion that switches the family, with its keys)."""
        include = list(include)
        relevant = set(self.active(current)).union(*(self.active(p) for p in include))
        out: dict[str, list[Any]] = {}
        for key, spec in self.params.items():
            if key not in relevant:
                continue
            extra = [p[key] for p in include if key in p]
            now = current.get(key)
            values = [v for v in spec.offered([*extra, *([now] if key in current else [])]) if not same_value(v, now)]
            if values:
                out[key] = values
        return out

    def bounds_schema(self) -> dict[str, Any]:
        """The JSON schema of a change of any keys to any values inside their bounds (``ParamSpec.bounds_schema``)."""
        return {"type": "object", "properties": {k: spec.bounds_schema() for k, spec in self.params.items()},
                "additionalProperties": False, "minProperties": 1}


def lookup(params: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of ``key`` in ``params``: the key itself, else its dotted path through nested dicts."""
    if key in params:
        return True, params[key]
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def same_value(a: Any, b: Any) -> bool:
    """Equal, and not merely because True == 1."""
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _grid(low: float, high: float, log: bool) -> list[float]:
    """About ``GRID_POINTS`` round values from ``low`` to ``high`` (both included)."""
    if high <= low:
        return [low]
    if log:
        for mantissas in LOG_MANTISSAS:
            values = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                      for m in mantissas]
            inner = [_sig(v, 6) for v in values if low < v < high]
            if len(inner) <= GRID_POINTS:
                break
        return [low, *inner, high]
    raw = (high - low) / (GRID_POINTS - 1)
    exponent = math.floor(math.log10(raw))
    step = min((m * 10.0 ** exponent for m in (1, 2, 2.5, 5, 10)), key=lambda s: abs(math.log(s / raw)))
    first = math.ceil(low / step - 1e-9)
    inner = [_sig(k * step, 10) for k in range(first, math.floor(high / step + 1e-9) + 1)]
    return [low, *(v for v in inner if low < v < high), high]

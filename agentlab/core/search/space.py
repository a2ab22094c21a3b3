"""Search spaces: dotted config keys with bounds or choices, checked the same way for Optuna and for LLM plans.

```yaml
space:
  model.d_model: {choices: [16, 32, 64]}
  model.e_layers: {low: 1, high: 3}               # ints when both bounds are ints
  train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
```
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from agentlab.core.config import StrictModel
from agentlab.core.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


class ParamSpec(StrictModel):
    """One searchable value: either ``choices`` or a ``low``..``high`` range (int when both bounds are ints)."""

    choices: list[Any] | None = Field(None, description="allowed values (categorical)")
    low: float | int | None = Field(None, description="lower bound (inclusive)")
    high: float | int | None = Field(None, description="upper bound (inclusive)")
    log: bool = Field(False, description="sample on a log scale")
    step: float | int | None = Field(None, description="grid step for ranges")

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
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

    def describe(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": self.choices}
        return {"type": self.kind, "low": self.low, "high": self.high, **({"log": True} if self.log else {})}

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
    """A set of named ``ParamSpec``. Keys are dotted paths into the command's config (``model.d_model``)."""

    def __init__(self, params: dict[str, ParamSpec], meanings: dict[str, str] | None = None):
        self.params = dict(params)
        self.meanings = {k: v for k, v in (meanings or {}).items() if k in self.params}  # shown to LLM planners

    def __contains__(self, key: str) -> bool:
        return key in self.params

    def distributions(self) -> dict[str, Any]:
        return {key: spec.distribution() for key, spec in self.params.items()}

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
        """``ConfigError`` unless every base value lies in the space: the search starts from the base config."""
        errors = [f"{k}: base value {v!r}: {e}" for k, v in base_params.items() if (e := self.params[k].check(v))]
        if errors:
            raise ConfigError("search.space does not contain the base config: " + "; ".join(errors),
                              hint="widen the space or change the base config so the search can start from it")

    def describe(self) -> dict[str, dict[str, Any]]:
        """Bounds of every key, with what the key means where known (an LLM planner cannot guess ``model.linear``)."""
        return {key: spec.describe() | ({"meaning": self.meanings[key]} if key in self.meanings else {})
                for key, spec in self.params.items()}

"""The discrete space every planner of `agentlab compress` searches: flat parameters (what Optuna samples) that map
to one validated :class:`Experiment`, and back.

A point of the space sets every parameter; those a step does not use (the sparsity of a structured prune, the
GGUF type of an int8 quantization) are ignored, so several points can be the same experiment: planners compare
experiments (``experiment_key``), never raw points. Points that make no experiment (no prune and no quantize, a
structured prune that removes nothing) are invalid and are proposed again.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ValidationError

from agentlab.compress.config import GGUF_TYPES, Experiment


@dataclass(frozen=True)
class Space:
    """The choices of each parameter. ``drop_layers`` depends on the model (never all of its layers);
    ``bnb_4bit`` and ``bnb_8bit`` are offered on CUDA only."""

    choices: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, n_layers: int, cuda: bool) -> Space:
        quantize = ["none", "int8_weight_only", "int8_dynamic", "torch_dynamic_int8", "gguf"]
        if cuda:
            quantize += ["bnb_4bit", "bnb_8bit"]
        drops = [d for d in (1, 2, 4) if d < n_layers]
        return cls({
            "prune": ["none", "magnitude", "wanda", "structured"],
            "sparsity": [0.3, 0.5, 0.7],
            "pattern": ["unstructured", "2:4"],
            "mlp_keep": [0.5, 0.75, 1.0],
            "drop_layers": [0, *drops],
            "recover": ["none", "lora", "distill"],
            "recover_steps": [20, 50],
            "quantize": quantize,
            "gguf_type": list(GGUF_TYPES),
        })

    @classmethod
    def widest(cls) -> Space:
        """Every choice some space of ``build`` offers (a model of many layers, on CUDA): what no model and device
        can hold is outside it."""
        return cls.build(n_layers=1_000, cuda=True)

    def lead(self, changes: dict[str, Any]) -> tuple[Experiment | None, str]:
        """The experiment of ``changes`` (settings of the space; the others at their first choice), or None and why
        not: a setting or value the space lacks, or settings that make no experiment."""
        space = self.choices
        wrong = [f"{k}: not a setting (settings: {', '.join(space)})" if k not in space else
                 f"{k}: one of {space[k]}, got {v!r}"
                 for k, v in changes.items() if k not in space or v not in space[k]]
        if wrong:
            return None, "; ".join(wrong)[:400]
        exp = to_experiment({k: v[0] for k, v in space.items()} | changes)
        if exp is None:
            return None, "these settings make no experiment (nothing pruned or quantized, or a prune removing nothing)"
        return exp, ""

    def describe(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.choices.items()}

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {k: rng.choice(v) for k, v in self.choices.items()}

    def distributions(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Each parameter's distribution; none for the base model's trial (``params`` empty: no point of the
        space)."""
        from optuna.distributions import CategoricalDistribution

        if params is not None and not params:
            return {}
        return {k: CategoricalDistribution(v) for k, v in self.choices.items()}

    # what the search loop asks of a space (``core.search.space.SearchSpace``): compress's planners draw their own
    # points (``compress.planners``), so the loop's sampler is never asked on it
    conditional: ClassVar[bool] = False

    def check_base(self, params: dict[str, Any]) -> None:
        """The base model is no point of the space: nothing to check."""

    def fits(self, params: dict[str, Any]) -> bool:
        return set(params) == set(self.choices)


def to_experiment(params: dict[str, Any]) -> Experiment | None:
    """The experiment a point stands for; None when it stands for none."""
    data: dict[str, Any] = {}
    prune = params.get("prune", "none")
    if prune == "structured":
        data["prune"] = {"method": "structured", "mlp_keep": params["mlp_keep"], "drop_layers": params["drop_layers"]}
    elif prune != "none":
        data["prune"] = {"method": prune, "sparsity": params["sparsity"], "pattern": params["pattern"]}
    if prune != "none" and params.get("recover", "none") != "none":
        data["recover"] = {"method": params["recover"], "steps": params["recover_steps"]}
    quant = params.get("quantize", "none")
    if quant != "none":
        data["quantize"] = {"method": quant, **({"gguf_type": params["gguf_type"]} if quant == "gguf" else {})}
    try:
        return Experiment.model_validate(data)
    except ValidationError:
        return None


def to_params(exp: Experiment, space: Space) -> dict[str, Any]:
    """A point of ``space`` that stands for ``exp`` (unused parameters at their first choice), for Optuna's history;
    values outside the space (an experiment an LLM proposed, or from a config) snap to the nearest choice."""
    params = {k: v[0] for k, v in space.choices.items()}
    if exp.prune is not None:
        p = exp.prune
        params.update(prune=p.method, sparsity=p.sparsity, pattern=p.pattern, mlp_keep=p.mlp_keep,
                      drop_layers=p.drop_layers)
    if exp.recover is not None:
        params.update(recover=exp.recover.method, recover_steps=exp.recover.steps)
    if exp.quantize is not None:
        params.update(quantize=exp.quantize.method, gguf_type=exp.quantize.gguf_type)
    return {k: _nearest(v, space.choices[k]) for k, v in params.items()}


def _nearest(value: Any, choices: list[Any]) -> Any:
    if value in choices:
        return value
    numbers = [c for c in choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    if isinstance(value, (int, float)) and numbers:
        return min(numbers, key=lambda c: abs(c - value))
    return choices[0]


def experiment_key(exp: Experiment | None) -> str:
    """The identity of an experiment inside a run (None: the base model)."""
    return json.dumps(exp.model_dump() if exp is not None else None, sort_keys=True)

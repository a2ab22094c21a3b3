"""The planner kinds of every search command, declared once (``KINDS``): the CLI, the configs, ``session`` and the
reports read this table. Light on purpose: configs import it, so it imports nothing of agentlab's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

Family = Literal["sampler", "chooser", "agent", "auto"]


@dataclass(frozen=True)
class PlannerKind:
    name: str
    label: str  # how reports, prompts and console lines name it
    how: str  # what it does, one clause; "{sampler}" is the command's classical sampler
    family: Family
    commands: tuple[str, ...]  # the search commands that offer it
    detail: dict[str, str] = field(default_factory=dict)  # command -> what ``how`` says of it there only

    @property
    def needs_model(self) -> bool:
        return self.family in ("chooser", "agent")


KINDS: dict[str, PlannerKind] = {k.name: k for k in (
    PlannerKind("auto", "auto", "llm when a planner model is configured and reachable, else {sampler}", "auto",
                ("nas",)),
    PlannerKind("llm", "LLM chooser", "the `planner` route of --llm chooses among {sampler}'s candidates, its picks "
                "other than candidate 0 bounded by llm_share (needs --llm)", "chooser", ("nas", "compress")),
    PlannerKind("agent", "agent", "an LLM agent plans through tools over {sampler}'s candidates and what the search "
                "knows, {sampler} its guard (needs --llm)", "agent", ("nas", "compress"),
                {"nas": " (for an objective command: its project's files and the trials' step lines too)"}),
    PlannerKind("nsga2", "NSGA-II", "NSGA-II over the Pareto front", "sampler", ("compress",)),
    PlannerKind("tpe", "TPE", "TPE", "sampler", ("nas", "compress"), {"nas": ", multivariate on a conditional space"}),
    PlannerKind("tpe_independent", "TPE (one key at a time)", "TPE, always one key at a time", "sampler", ("nas",)),
    PlannerKind("tpe_multivariate", "TPE (joint)", "TPE, always the keys jointly", "sampler", ("nas",)),
    PlannerKind("cmaes", "CMA-ES", "CMA-ES on the numeric keys every trial has (the others random)", "sampler",
                ("nas",)),
    PlannerKind("random", "random", "random search", "sampler", ("nas", "compress")),
)}

DEFAULT_SAMPLER = {"nas": "tpe", "compress": "nsga2"}  # each command's classical sampler (candidate 0, the guard)


def names(command: str) -> tuple[str, ...]:
    """The planner kinds ``command`` offers, in the table's order."""
    return tuple(name for name, kind in KINDS.items() if command in kind.commands)


def samplers(command: str) -> tuple[str, ...]:
    """The classical samplers ``command`` offers (``OptunaPlanner``'s kinds there)."""
    return tuple(name for name in names(command) if KINDS[name].family == "sampler")


def label(name: str) -> str:
    """How reports and prompts name the kind ``name`` (the name itself for one not in the table)."""
    kind = KINDS.get(name)
    return kind.label if kind is not None else name


def describe(command: str) -> str:
    """Every kind ``command`` offers with what it does: the ``planner`` field's description and --planner's help."""
    sampler = label(DEFAULT_SAMPLER[command])
    return "; ".join(f"{name}: {KINDS[name].how.format(sampler=sampler)}{KINDS[name].detail.get(command, '')}"
                     for name in names(command))


if TYPE_CHECKING:  # the type checkers see a string; pydantic, typer and the config reference see the choices
    NasPlanner = str
    CompressPlanner = str
else:
    NasPlanner = Literal[names("nas")]
    CompressPlanner = Literal[names("compress")]

"""The LLM planner's settings, one model for every search command: nas's ``search`` section and compress's config
both inherit it, so the keys users write (``llm_candidates``, ``llm_share``, ...) stay flat and the same in both,
and a saved run's config.yaml loads as it was written."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from agentlab.core.config import FilePath, StrictModel


def warm_start_spec(example: str) -> Any:
    """``warm_start``'s type (nas's search section, compress): true (the command's own knowledge), false, or the
    user's configs; ``example``: one such list in the command's own keys, for the error (nas's lr is no setting of
    compress)."""
    def check(value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
            return value
        raise ValueError(f"must be true, false or a list of configs, each a mapping of keys to values (e.g. "
                         f"{example}), got {value!r}"[:300])

    return Annotated[bool | list[dict[str, Any]], BeforeValidator(check)]


WarmStartSpec = warm_start_spec("[{lr: 0.01}]")  # nas's


def _storage(value: str | None) -> str | None:
    """A storage URL whose database kind SQLAlchemy knows (``foo://bar`` failed once the run folder existed); a
    path without ``://`` is a journal file. Nothing is connected to here."""
    if value is not None and "://" not in value and re.match(r"(sqlite|postgresql|mysql)[+\w]*:", value):
        raise ValueError(f"{value!r} is neither a storage URL (scheme://...) nor a journal file path: write "
                         "sqlite:///path.db (three slashes)")
    if value is None:
        return value
    if not value.strip():  # was the current folder, as a journal file
        raise ValueError("empty; leave it out for an SQLite file in the run folder, or give a journal file path or a "
                         "storage URL")
    if "://" not in value:  # a journal file: ~ is the home folder, as the saved config.yaml writes it
        return os.path.expanduser(value)
    if value.startswith("sqlite:///~"):
        value = "sqlite:///" + os.path.expanduser(value.removeprefix("sqlite:///"))
    from sqlalchemy.engine import make_url

    try:
        make_url(value).get_dialect()
    except Exception as exc:  # ArgumentError, NoSuchModuleError, an unknown driver: one message
        raise ValueError(f"not a storage URL Optuna can open ({str(exc).splitlines()[0][:120]}): use "
                         "sqlite:///path.db, a journal file path, or a postgresql:// / mysql:// URL") from None
    return value


# a study's storage (nas's and compress's search.storage, evolve's store): an Optuna storage URL or a journal file
StorageURL = Annotated[str | None, AfterValidator(_storage), FilePath()]


class AgentSettings(StrictModel):
    """The ``agent`` planner (``core.search.agent``): an LLM agent planning through tools, the classical sampler its
    tool and its guard."""

    guard_patience: int = Field(3, ge=1, description="agent planner: after this many trials by the agent without a "
                                "new best, the classical sampler runs the next ones (until a new best, or as many "
                                "guard trials), and the agent is told")
    candidates: int = Field(4, ge=1, le=10, description="agent planner: the classical sampler's candidates its "
                            "`suggest` tool lists (candidate 0: what the sampler alone would run)")
    max_steps: int = Field(6, ge=1, le=50, description="agent planner: model steps (tool calls) per trial; past "
                           "them, candidate 0 runs")
    keep: int = Field(12, ge=2, le=200, description="agent planner: the last messages shown to the model besides "
                      "the brief (a small model's context is short)")
    approve: bool = Field(False, description="agent planner: stop before each trial the agent plans for a yes / no / "
                          "edit from the terminal or `agentlab ui` (--approve)")


class LLMPlannerSettings(StrictModel):
    """The ``llm`` planner (``planners.ChooserPlanner``): the classical sampler's candidates (nas: TPE's, compress:
    NSGA-II's) and the LLM's bounded, earned choice among them."""

    history: int = Field(10, ge=1, description="finished trials shown to the LLM planner, best (nas) or least "
                         "dominated (compress) first")
    llm_candidates: int = Field(4, ge=2, le=10, description="llm planner: the classical sampler's candidates (nas: "
                                "TPE's, compress: NSGA-II's) drawn per trial for the LLM to choose among; candidate 0 "
                                "is what the sampler alone would run")
    llm_share: float = Field(0.3, ge=0.0, le=1.0, description="llm planner: the most trials on which the LLM's pick "
                             "may differ from candidate 0, as a fraction of the planner's trials (0: the sampler "
                             "trial for trial)")
    llm_adapt: bool = Field(True, description="llm planner: a bandit earns the share (the LLM is asked less when its "
                            "picks improve the search less often than the sampler's: nas a new best, compress a "
                            "larger feasible front), starting from this model's record in earlier searches; false: "
                            "asked whenever the share allows")
    llm_own_candidate: bool = Field(False, description="llm planner, for strong models: the LLM also proposes a "
                                    "candidate of its own (nas: aimed at a score 5% better than the best, LLAMBO)")
    llm_warm_start: bool = Field(False, description="llm planner, for strong models: the LLM also chooses the "
                                 "sampler's random warm-up trials among K random draws (outside llm_share)")
    agent: AgentSettings = Field(default_factory=AgentSettings, description="the agent planner (planner: agent)")

"""The LLM planner's settings, one model for every search command: nas's ``search`` section and compress's config
both inherit it, so the keys users write (``llm_candidates``, ``llm_share``, ...) stay flat and the same in both,
and a saved run's config.yaml loads as it was written."""

from __future__ import annotations

from pydantic import Field

from agentlab.core.config import StrictModel


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

"""Hybrid evaluator: rules decide whenever the answer is clear; an LLM is consulted only inside the noise band.

Rules, in order: a non-finite or diverged result is rejected; the first finished trial (the base config) is accepted;
better than the best value seen by more than ``min_delta`` (relative) is accepted; worse by more is rejected. Inside
the band, the ``evaluator`` route decides when one is configured; otherwise, or when it fails, the smaller model
wins: smaller than the incumbent's.

An accepted trial is the new incumbent (``records.best_of``), so a smaller model that wins inside the band is the
search's best trial from then on, as its decision says. The band stays measured against the best value seen among
the incumbents (``lead``: recorded with each accepted trial), not against the incumbent's own value: a chain of
acceptances inside the band could otherwise drift a band's width at each step to a much worse model; this way every
incumbent is within ``min_delta`` of the best value any incumbent had.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agentlab.core.errors import LLMError
from agentlab.core.search.records import TrialRecord, run_id

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

log = logging.getLogger(__name__)


@dataclass
class Decision:
    accepted: bool
    reason: str
    decided_by: str  # rule | llm
    against: int | None = None  # the incumbent's number the trial was judged against (None: no incumbent)
    lead: dict[str, Any] = field(default_factory=dict)  # accepted: the best value seen, {run, value}, when another's

    def outcome(self) -> dict[str, Any]:
        """The decision as the trial's outcome attribute stores it (``records.A_OUTCOME``)."""
        out = {"accepted": self.accepted, "reason": self.reason, "decided_by": self.decided_by}
        if self.against is not None:
            out["against"] = self.against
        if self.lead:
            out["lead"] = self.lead
        return out


class Verdict(BaseModel):
    accept: bool = Field(description="true to accept the new trial as the incumbent")
    # maxLength bounds grammar-constrained decoding (and so the call's max_tokens); validation does not cut a large
    # model's longer reason.
    reason: str = Field(description="one or two sentences", json_schema_extra={"maxLength": 400})


EVALUATOR_PROMPT = (
    "You judge a hyperparameter search. A new trial's validation metric is within the noise band of the best one, so "
    "the numbers alone do not decide. Accept it as the new incumbent only if it is the better configuration to build "
    "on (e.g. simpler, more stable learning curve, better test metrics). Answer JSON only: "
    '{"accept": true|false, "reason": "..."}.'
)


class HybridEvaluator:
    def __init__(self, min_delta: float, router: Router | None = None, route: str = "evaluator", metric: str = "value",
                 size_key: str = "n_params", direction: str = "minimize"):
        self.min_delta, self.router, self.route, self.metric, self.size_key = min_delta, router, route, metric, size_key
        self.sign = -1.0 if direction == "maximize" else 1.0  # gains are relative improvements either way

    def decide(self, value: float | None, metrics: dict[str, Any], params: dict[str, Any],
               best: TrialRecord | None) -> Decision:
        """``best`` is the incumbent (``records.best_of``); the band is measured against the best value seen
        (``best.lead``, else the incumbent's own value), a model's size against the incumbent's."""
        if value is None or not math.isfinite(value) or metrics.get("diverged"):
            return Decision(False, f"diverged or not finite ({self.metric}={value})", "rule")
        if best is None or best.value is None:
            return Decision(True, "first finished trial: the reference for the rest", "rule")
        lead = best.lead or {"run": best.number, "value": best.value}
        top, top_id = float(lead["value"]), run_id(int(lead["run"]))
        scale = abs(top) or 1.0
        gain = self.sign * (top - value) / scale
        if gain > self.min_delta:
            return Decision(True, f"{self.metric} {value:.4g} beats best {top:.4g} ({top_id}) by {gain:.1%} "
                                  f"(> {self.min_delta:.1%})", "rule", best.number)
        if gain < -self.min_delta:
            return Decision(False, f"{self.metric} {value:.4g} is {-gain:.1%} worse than best {top:.4g} ({top_id})",
                            "rule", best.number)
        band = f"within the noise band ({gain:+.1%} vs best {top_id}, band ±{self.min_delta:.1%})"
        # accepted inside the band: the best value seen stays the lead's unless this one is better
        keep = {} if gain > 0 else {"run": int(lead["run"]), "value": top}
        decision = None
        if self.router is not None:
            verdict = self._ask(self.router, value, metrics, params, best)
            if verdict is not None:
                decision = Decision(verdict.accept, f"{band}; evaluator: {verdict.reason}", "llm")
        decision = decision or self._smaller_wins(band, metrics, best)
        decision.against, decision.lead = best.number, keep if decision.accepted else {}
        return decision

    def _smaller_wins(self, band: str, metrics: dict[str, Any], best: TrialRecord) -> Decision:
        new_size, best_size = metrics.get(self.size_key), best.metrics.get(self.size_key)
        if new_size is None or best_size is None:
            return Decision(False, f"{band}; sizes unknown, keeping the incumbent {best.run_id}", "rule")
        if new_size < best_size:
            return Decision(True, f"{band}; smaller model wins ({new_size:,} < {best_size:,} params of the "
                                  f"incumbent {best.run_id}): the new incumbent", "rule")
        return Decision(False, f"{band}; the incumbent {best.run_id} is not larger ({best_size:,} <= {new_size:,} "
                               "params)", "rule")

    def _ask(self, router: Router, value: float, metrics: dict[str, Any], params: dict[str, Any],
             best: TrialRecord) -> Verdict | None:
        payload = {"metric": self.metric, "min_delta": self.min_delta,
                   "new": {"value": value, "params": params, "metrics": metrics},
                   "best": {"run_id": best.run_id, "value": best.value, "params": best.params, "metrics": best.metrics}}
        messages = [{"role": "system", "content": EVALUATOR_PROMPT},
                    {"role": "user", "content": json.dumps(payload, indent=1, default=str)}]
        try:
            return router.structured_sync(messages, Verdict, route=self.route).value
        except LLMError as exc:
            log.warning("evaluator LLM failed (%s): falling back to the size rule", exc.kind)
            return None

"""Hybrid evaluator: rules decide whenever the answer is clear; an LLM is consulted only inside the noise band.

Rules, in order: a non-finite or diverged result is rejected; the first finished trial (the base config) is accepted;
better than the best by more than ``min_delta`` (relative) is accepted; worse by more is rejected. Inside the band,
the ``evaluator`` route decides when one is configured; otherwise, or when it fails, the smaller model wins.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agentlab.core.errors import LLMError
from agentlab.core.search.records import TrialRecord

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

log = logging.getLogger(__name__)


@dataclass
class Decision:
    accepted: bool
    reason: str
    decided_by: str  # rule | llm


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
        if value is None or not math.isfinite(value) or metrics.get("diverged"):
            return Decision(False, f"diverged or not finite ({self.metric}={value})", "rule")
        if best is None or best.value is None:
            return Decision(True, "first finished trial: the reference for the rest", "rule")
        scale = abs(best.value) or 1.0
        gain = self.sign * (best.value - value) / scale
        if gain > self.min_delta:
            return Decision(True, f"{self.metric} {value:.4g} beats best {best.value:.4g} by {gain:.1%} "
                                  f"(> {self.min_delta:.1%})", "rule")
        if gain < -self.min_delta:
            return Decision(False, f"{self.metric} {value:.4g} is {-gain:.1%} worse than best {best.value:.4g}", "rule")
        band = f"within the noise band ({gain:+.1%} vs best {best.run_id}, band ±{self.min_delta:.1%})"
        if self.router is not None:
            verdict = self._ask(self.router, value, metrics, params, best)
            if verdict is not None:
                return Decision(verdict.accept, f"{band}; evaluator: {verdict.reason}", "llm")
        return self._smaller_wins(band, metrics, best)

    def _smaller_wins(self, band: str, metrics: dict[str, Any], best: TrialRecord) -> Decision:
        new_size, best_size = metrics.get(self.size_key), best.metrics.get(self.size_key)
        if new_size is None or best_size is None:
            return Decision(False, f"{band}; sizes unknown, keeping the incumbent", "rule")
        if new_size < best_size:
            return Decision(True, f"{band}; smaller model wins ({new_size:,} < {best_size:,} params)", "rule")
        return Decision(False, f"{band}; incumbent is not larger ({best_size:,} <= {new_size:,} params)", "rule")

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

"""The LLM planner's bounded, earned share of the trials, and what its picks did (docs/commands/nas.md, "The share").

- Bounded: picks other than candidate 0 run on at most ``ceil(share * n)`` of the first n planner trials after the
  sampler's warm-up, and at most ``share`` of them in all; warm-up trials count in neither the bound nor the arms.
- Earned: Thompson sampling over the arms ``classical`` and ``llm`` on "the trial set a new best" (the ``llm``
  arm's prior centred on the ``classical`` rate, worth ``PRIOR_WEIGHT`` trials), drawn from a generator seeded by
  the search's seed and the trial's number, so a resumed search decides as the killed one would have.
- Remembered: ``PickMemory`` keeps each model's counts per search in a JSON file, written atomically; the next
  search starts its arms from them (at most ``PRIOR_CAP`` trials' worth).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.runs import atomic_write_json
from agentlab.core.search.prompts import fmt_value

ARMS = ("classical", "llm")
PRIOR_CAP = 20
PRIOR_WEIGHT = 2.0
# How a planner trial of the LLM planner came about (the trial's ``origin``):
#   classical  not shown to the LLM (the share was used, the bandit chose the sampler, or a warm-up trial)
#   kept       the LLM was asked and chose candidate 0
#   picked     the LLM chose another of the sampler's candidates
#   own        the LLM chose the candidate it proposed itself (opt-in)
#   no answer  the LLM was asked and gave no valid answer: candidate 0 ran
LLM_ORIGINS = ("picked", "own")
ASKED = ("kept", "picked", "own", "no answer")


@dataclass
class Step:
    """One planner trial: its ``origin`` and whether it set a new best (``gain``: by how much, in the score's own
    units; compress: the hypervolume it added)."""

    origin: str
    improved: bool = False
    gain: float = 0.0

    @property
    def arm(self) -> str:
        return "llm" if self.origin in LLM_ORIGINS else "classical"


def tally(steps: Sequence[Step]) -> dict[str, list[int]]:
    """Per arm ``[new bests, trials]``."""
    out = {arm: [0, 0] for arm in ARMS}
    for s in steps:
        out[s.arm][0] += int(s.improved)
        out[s.arm][1] += 1
    return out


def improvements(values: Sequence[float | None], maximize: bool = False) -> list[tuple[bool, float]]:
    """For each value in trial order, whether it beat every earlier value and by how much (None: a trial without
    a value; the first value only sets the reference)."""
    best: float | None = None
    out: list[tuple[bool, float]] = []
    for v in values:
        gain = 0.0
        if v is not None and math.isfinite(v):
            if best is not None:
                gain = (v - best) if maximize else (best - v)
            if best is None or gain > 0:
                best = v
        out.append((gain > 0, max(gain, 0.0)))
    return out


def within_bound(share: float, deviations: int, n: int, total: int) -> bool:
    """Whether one more LLM pick keeps the bound: at most ``ceil(share * n)`` of the first ``n`` planner trials (this
    one included) and ``share * total`` of all, but one pick in any search (a 5-trial search at llm_share 0.3 has
    2 planner trials: ``share * total`` alone never asked the LLM there, and its llm_calls.jsonl stayed empty)."""
    return deviations + 1 <= math.ceil(share * n - 1e-9) and deviations + 1 <= max(1.0, share * total) + 1e-9


def open_to_llm(share: float, steps: Sequence[Step], total: int, seed: int, prior: dict[str, list[int]] | None = None,
                adapt: bool = True) -> tuple[bool, str]:
    """Whether the next planner trial is shown to the LLM, and why not when it is not. ``steps``: this search's
    planner trials so far; ``total``: its planner trials in all (done and left)."""
    if share <= 0:
        return False, "llm_share is 0"
    deviations = sum(1 for s in steps if s.arm == "llm")
    n = len(steps) + 1
    if not within_bound(share, deviations, n, total):
        return False, f"llm_share {share:g} used ({deviations} of {n - 1} trials were LLM picks)"
    if not adapt:
        return True, ""
    if deviations == 0 and not ((prior or {}).get("llm") or [0, 0])[1]:
        return True, ""  # the LLM never asked, in this search or remembered: asked once before the bandit weighs it
    counts = tally(steps)
    for arm, (wins, trials) in (prior or {}).items():
        if arm in counts and trials > 0:
            scale = min(1.0, PRIOR_CAP / trials)
            counts[arm] = [counts[arm][0] + wins * scale, counts[arm][1] + trials * scale]  # type: ignore[list-item]
    rng = random.Random(seed * 1_000_003 + n)
    (wc, tc), (wl, tl) = counts["classical"], counts["llm"]
    rate = (1 + wc) / (2 + tc)
    # The LLM arm's prior is centred on the sampler's rate (PRIOR_WEIGHT trials' worth): new bests get rarer as a
    # search goes on, and a flat prior would favour whichever arm has less data.
    draws = {"classical": rng.betavariate(1 + wc, 1 + tc - wc),
             "llm": rng.betavariate(PRIOR_WEIGHT * rate + wl, PRIOR_WEIGHT * (1 - rate) + tl - wl)}
    if draws["llm"] >= draws["classical"]:
        return True, ""
    return False, (f"the bandit chose the sampler (new bests: llm picks {counts['llm'][0]:g} of {counts['llm'][1]:g},"
                   f" sampler {counts['classical'][0]:g} of {counts['classical'][1]:g})")


class PickMemory:
    """Per model name, each search's ``tally``: ``{"models": {name: {search id: {"classical": [w, n], "llm":
    [w, n]}}}}`` in one JSON file, rewritten atomically (temp file + rename) after every trial."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"models": {}}
        return data if isinstance(data.get("models"), dict) else {"models": {}}

    def prior(self, model: str, exclude: str = "") -> dict[str, list[int]]:
        """The counts of ``model``'s picks over every search but ``exclude`` (this one)."""
        out = {arm: [0, 0] for arm in ARMS}
        for search, counts in self._read()["models"].get(model, {}).items():
            if search == exclude:
                continue
            for arm in ARMS:
                wins, trials = (counts.get(arm) or [0, 0])[:2]
                out[arm][0] += int(wins)
                out[arm][1] += int(trials)
        return out

    def record(self, model: str, search: str, counts: dict[str, list[int]]) -> None:
        data = self._read()
        if data["models"].get(model, {}).get(search) == counts:
            return
        data["models"].setdefault(model, {})[search] = counts
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, data)
        except OSError:  # a read-only workspace costs the memory, not the search
            pass


def contribution(steps: Sequence[Step], *, model: str, candidates: int, share: float, warmup: int = 0,
                 without_llm: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json's ``llm_contribution``: how many planner trials the LLM was asked about and chose, how often its
    pick differed from candidate 0, the new bests and the improvement (sum of gains over the best so far) of its
    picks against the sampler's, and ``without_llm`` (the command's counterfactual: the best, or the hypervolume,
    of the search without the LLM's picks)."""
    origins = [s.origin for s in steps]
    counts = tally(steps)
    gains = {arm: sum(s.gain for s in steps if s.arm == arm) for arm in ARMS}
    total = sum(gains.values())
    differed = counts["llm"][1]
    return {
        "model": model, "candidates": candidates, "llm_share": share, "warmup_trials": warmup, "trials": len(steps),
        "asked": sum(origins.count(o) for o in ASKED), "chosen_by_llm": sum(origins.count(o) for o in ASKED[:3]),
        "no_answer": origins.count("no answer"), "differed": differed, "own": origins.count("own"),
        "differed_fraction": round(differed / len(steps), 4) if steps else 0.0,
        "new_bests": {"llm_picks": counts["llm"][0], "sampler": counts["classical"][0]},
        "improvement": {"llm_picks": gains["llm"], "sampler": gains["classical"],
                        "llm_fraction": round(gains["llm"] / total, 4) if total > 0 else 0.0},
        **({"without_llm_picks": without_llm} if without_llm is not None else {}),
    }


def contribution_lines(block: dict[str, Any] | None, unit: str) -> list[str]:
    """The report.md section ``## LLM contribution`` for ``block`` (None: no section)."""
    if not block:
        return []
    imp = block["improvement"]
    lines = ["", "## LLM contribution", "",
             f"Model: {block['model']}; {block['candidates']} candidates per trial; llm_share {block['llm_share']:g}.",
             f"Of {block['trials']} planner trials after the sampler's {block.get('warmup_trials', 0)} warm-up trials, "
             f"the LLM was asked about {block['asked']} and chose "
             f"{block['chosen_by_llm']} ({block['no_answer']} without an answer: candidate 0 ran); its pick differed "
             f"from candidate 0 on {block['differed']} ({block['differed_fraction']:.0%})"
             + (f", {block['own']} of them its own candidate" if block.get("own") else "") + ".",
             f"New bests: {block['new_bests']['llm_picks']} from LLM picks, {block['new_bests']['sampler']} from the "
             f"sampler's candidate 0. Improvement over the best so far ({unit}): LLM picks {imp['llm_picks']:.4g}, "
             f"sampler {imp['sampler']:.4g} ({imp['llm_fraction']:.0%} from the LLM)."]
    if not block["asked"]:
        lines.append("The LLM was asked about none: the llm_share bound or the bandit chose the sampler each time "
                     "(each trial's notes say which); raise search.llm_share or the trials to ask it more.")
    without = block.get("without_llm_picks")
    if without:
        lines.append("Without the LLM's picks: " + ", ".join(f"{k} {fmt_value(v)}" for k, v in without.items()) + ".")
    return lines

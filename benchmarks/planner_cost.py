"""The planner's own time per trial as a search grows: the sampler kept for the search against a study rebuilt per draw.

agentlab's search loop asks an Optuna sampler for each trial's params. Until issue 59 every draw built a new sampler
and an in-memory study holding a copy of every finished trial (the cost grew with the trials); now one sampler per
search is asked on a mirror of the study that copies each trial once (``core.search.study.KeptSampler``). This
benchmark runs ``SearchLoop`` with a trivial objective (a smooth function of the params: no training) for
``--trials`` trials, twice per space and sampler: as agentlab does it now, and with the draws of before (a subclass
below whose ``_candidate`` rebuilds the study and the sampler per draw, as loop.py did), both in this invocation.

Spaces: nas's built-in space of ``configs/nas_etth1.yaml`` (conditional: the model family's keys), its constraint
check the config's validation; and the own-code example's (``examples/own_code/nas.yaml``, flat). Printed per space
and sampler: the planner's milliseconds per trial (``_propose``: mean of the 5 trials up to each of ``--at``) for both
ways, the whole loop's milliseconds per trial (the SQLite study's reads and writes included), and at the end
``ratio: X``, the kept sampler's planner time over the rebuilt one's at the largest ``--at`` (mean over the rows).

    python benchmarks/planner_cost.py                      # 200 trials, tpe and cmaes, both spaces (about 2 minutes)
    python benchmarks/planner_cost.py --trials 50 --at 10,50 --samplers tpe     # smoke
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def rebuilt_loop_class() -> type:
    """``SearchLoop`` with the draws of before issue 59: a new sampler and a scratch study with a copy of every
    finished trial per draw, seeded from the number of finished trials and the attempt."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from agentlab.core.search import records as R
    from agentlab.core.search.loop import SearchLoop
    from agentlab.core.search.planners import params_key
    from agentlab.core.search.study import make_sampler

    class Rebuilt(SearchLoop):  # type: ignore[misc, valid-type]
        def _candidate(self, kind: str, judge: Any, *, explore: bool = False, tries: int = 30) -> Any:
            infeasible: list[dict[str, Any]] = []
            for attempt in range(tries):
                trials = [t for t in self.study.get_trials(deepcopy=False, states=(
                    TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)) if self.space.fits(t.params)]
                finished = [t for t in trials if t.state != TrialState.FAIL]
                failed = [dict(t.params) for t in trials if t.state == TrialState.FAIL and t.params
                          and t.user_attrs.get(R.A_OUTCOME, {}).get("counted", True)]
                seed = self.seed * 100_003 + len(finished) * 997 + attempt + (1_000_003 if explore else 0)
                scratch = optuna.create_study(direction=self.direction, sampler=make_sampler(
                    kind, seed, startup=self.startup, conditional=self.space.conditional))  # type: ignore[arg-type]
                scratch.add_trials(finished)
                values = [t.value for t in finished if t.value is not None and math.isfinite(t.value)]
                worst = (max(values) if self.direction == "minimize" else min(values)) if values else 0.0
                penalty = worst + (1 if self.direction == "minimize" else -1) * (abs(worst) + 1.0)
                for params in [*failed, *infeasible]:
                    scratch.add_trial(create_trial(params=params, distributions=self.space.distributions(params),
                                                   value=penalty))
                trial = scratch.ask(None if self.space.conditional else self.distributions)
                params = self.space.sample(trial) if self.space.conditional else dict(trial.params)
                verdict = judge(params)
                if verdict is None:
                    if not explore:
                        self._sampler_attrs[params_key(params)] = dict(
                            scratch.get_trials(deepcopy=False)[-1].system_attrs)
                    return params
                infeasible.append(params)
            return None

    return Rebuilt


def spaces() -> dict[str, tuple[Any, dict[str, Any], Any]]:
    """name -> (space, base params, check)."""
    from pydantic import ValidationError

    from agentlab.core.config import load_config
    from agentlab.nas.config import NASConfig, apply_changes
    from agentlab.nas.run import search_space

    out = {}
    etth1 = load_config(REPO / "configs" / "nas_etth1.yaml", NASConfig)
    space = search_space(etth1)

    def check(params: dict[str, Any]) -> list[str]:
        try:
            apply_changes(etth1, params)
        except ValidationError as exc:
            return [str(e["msg"]) for e in exc.errors()]
        return []

    out["nas ETTh1 (conditional)"] = (space, space.complete(dict(space.base)), check)
    own = load_config(REPO / "examples" / "own_code" / "nas.yaml", NASConfig)
    space = search_space(own)
    out["own_code example (flat)"] = (space, space.complete(dict(space.base)), lambda params: [])
    return out


class Smooth:
    """A trivial objective: a smooth function of the numeric params and a fixed offset per categorical value."""

    def __init__(self, check: Any):
        self.check = check

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        value = 0.0
        for key, v in sorted(params.items()):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                value += (zlib.crc32(f"{key}={v}".encode()) % 97) / 97
            else:
                value += math.log1p(abs(float(v))) % 1.7
        return {"value": value}


def measure(loop_class: type, space: Any, base: dict[str, Any], check: Any, sampler: str, trials: int,
            at: list[int]) -> tuple[list[float], float]:
    """Planner ms per trial near each of ``at`` and the whole loop's ms per trial."""
    import optuna

    from agentlab.core.search.engine import new_study
    from agentlab.core.search.evaluator import HybridEvaluator
    from agentlab.core.search.loop import StopRules
    from agentlab.core.search.planners import OptunaPlanner
    from agentlab.core.search.study import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-planner-cost-") as tmp:
        study = new_study(study_name="b", storage=open_storage(None, Path(tmp)), direction="minimize")
        loop = loop_class(study=study, space=space, base_params=dict(base), objective=Smooth(check),
                          planner=OptunaPlanner(sampler), evaluator=HybridEvaluator(0.0),
                          stop=StopRules(max_iterations=trials), seed=0)
        times: list[float] = []
        propose = loop._propose

        def timed(records: Any) -> Any:
            start = time.perf_counter()
            try:
                return propose(records)
            finally:
                times.append(time.perf_counter() - start)

        loop._propose = timed
        start = time.perf_counter()
        loop.run()
        wall = time.perf_counter() - start
    return [1000 * statistics.mean(times[max(1, n - 5):n]) for n in at], 1000 * wall / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--at", default="10,50,200", help="report the planner's time near these trial numbers")
    parser.add_argument("--samplers", default="tpe,cmaes")
    args = parser.parse_args()
    at = [int(n) for n in args.at.split(",") if 5 < int(n) <= args.trials]
    if not at:
        sys.exit("--at: give trial numbers above 5 and at most --trials")
    from agentlab.core.search.loop import SearchLoop

    rebuilt = rebuilt_loop_class()
    head = " | ".join(f"at {n}" for n in at)
    print(f"| space | sampler | draws | planner ms/trial: {head} | loop ms/trial |")
    print("|---|---|---|" + "---|" * len(at) + "---|")
    ratios = []
    for name, (space, base, check) in spaces().items():
        for sampler in args.samplers.split(","):
            rows = {}
            for label, cls in (("rebuilt per draw (before)", rebuilt), ("kept sampler", SearchLoop)):
                rows[label] = measure(cls, space, base, check, sampler, args.trials, at)
                cells = " | ".join(f"{v:.1f}" for v in rows[label][0])
                print(f"| {name} | {sampler} | {label} | {cells} | {rows[label][1]:.1f} |", flush=True)
            ratios.append(rows["kept sampler"][0][-1] / rows["rebuilt per draw (before)"][0][-1])
    print(f"\nplanner ms/trial at {at[-1]}: kept / rebuilt per draw, per row: "
          + ", ".join(f"{r:.3f}" for r in ratios))
    print(f"ratio: {statistics.mean(ratios):.3f}")


if __name__ == "__main__":
    main()

"""compress workers on one study with heartbeats (a database server; SQLite with heartbeats here, no model): the
base claimed once, the budget over every worker, a duplicate or late claim giving way, a gone worker's experiment
queued again for the next one, and the same records for every worker. End to end on PostgreSQL:
tests/test_postgres_scaleout.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from agentlab.compress.planners import KEY_ATTR
from agentlab.compress.shared import BASE_ATTR, SharedStudy, is_shared
from agentlab.core.search.engine import new_study  # noqa: E402
from agentlab.core.search.records import A_PLAN

optuna = pytest.importorskip("optuna")
DISTS: dict[str, Any] = {"bits": optuna.distributions.CategoricalDistribution([4, 8, 16, 32])}


def heartbeat_study(path: Path) -> Any:
    from optuna import storages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callback = getattr(storages, "RetryHeartbeatStaleTrialCallback", storages.RetryFailedTrialCallback)(3)
        name = ("heartbeat_stale_trial_callback" if hasattr(storages, "RetryHeartbeatStaleTrialCallback")
                else "failed_trial_callback")
        storage = storages.RDBStorage(f"sqlite:///{path}", heartbeat_interval=1, grace_period=2, **{name: callback})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return new_study(study_name="compress", storage=storage, directions=["maximize", "minimize"],
                               load_if_exists=True)


def workers(tmp_path: Path, budget: int = 2) -> tuple[SharedStudy, SharedStudy]:
    study = heartbeat_study(tmp_path / "s.db")
    a, b = (SharedStudy(study, budget=budget, base_key="base-key", run_dir=str(tmp_path / n)) for n in "ab")
    b.worker = f"{socket.gethostname()}:{dead_pid()}"  # another worker on this host
    return a, b


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def claim(share: SharedStudy, bits: int) -> int:
    return share.claim(params={"bits": bits}, distributions=DISTS,
                       user_attrs={KEY_ATTR: f"exp-{bits}", "label": f"int{bits}", A_PLAN: {"planner": "random"}})


def test_the_base_is_claimed_once_and_every_worker_reads_the_same_records(tmp_path: Path) -> None:
    a, b = workers(tmp_path)
    assert is_shared(a.study)
    first = a.claim(params={}, distributions={}, user_attrs={BASE_ATTR: "base-key", A_PLAN: {"planner": "base"}})
    late = b.claim(params={}, distributions={}, user_attrs={BASE_ATTR: "base-key", A_PLAN: {"planner": "base"}})
    assert a.give_way(first) is None and b.give_way(late) == "the base model is measured by another worker"
    b.abandon(late, "the base model is measured by another worker")
    assert b.busy(b.trials())  # a's base still runs: b waits for it
    a.finish(first, {"label": "base model", "metrics": {"size": 1.0}}, [1.0, 1.0], 0.0)
    exp = claim(a, 8)
    a.finish(exp, {"label": "int8", "state": "done", "metrics": {"size": 0.5}}, [2.0, 0.5], 0.0)
    views = [w.records(w.trials(), w.base(w.trials()) or {}) for w in (a, b)]
    assert views[0] == views[1] and [(r["index"], r["label"]) for r in views[0]] == [(0, "base model"), (1, "int8")]
    assert a.counted(a.trials()) == 1  # the base is no experiment


def test_the_budget_is_over_every_worker_and_a_late_or_duplicate_claim_gives_way(tmp_path: Path) -> None:
    a, b = workers(tmp_path, budget=2)
    one, two = claim(a, 4), claim(b, 8)
    assert a.give_way(one) is None and b.give_way(two) is None
    same = claim(a, 8)
    assert a.give_way(same) == "budget taken by another worker"  # the third claim: over the budget first
    a.abandon(same, "budget taken by another worker")
    a.finish(one, {"label": "int4", "state": "done", "metrics": {}}, [2.0, 0.25], 0.0)
    b.abandon(two, "interrupted")  # its slot is free again (not counted) ...
    again = claim(a, 16)
    assert a.give_way(again) is None and a.counted(a.trials()) == 2
    late = claim(b, 32)
    assert b.give_way(late) == "budget taken by another worker"
    b.abandon(late, "budget taken by another worker")
    roomy = SharedStudy(a.study, budget=5, base_key="base-key", run_dir=str(tmp_path / "c"))
    dup = claim(roomy, 4)  # with budget to spare, an experiment finished by another worker is not run again
    assert roomy.give_way(dup) == "the same experiment was claimed by another worker"


def test_a_gone_workers_claim_is_queued_again_for_the_next_one(tmp_path: Path) -> None:
    a, b = workers(tmp_path)
    lost = claim(b, 8)  # b's process is gone (a dead pid on this host): no beat will ever come
    assert a.busy(a.trials())
    a.fail_stale()
    trials = a.trials()  # the same trial back in the queue, whole: no failed copy, no lost slot
    assert [t.state.name for t in trials] == ["WAITING"] and a.counted(trials) == 1 and a.busy(trials)
    retry = a.pop_retry()
    assert retry == lost
    frozen = a.get(retry)
    assert frozen.params == {"bits": 8} and frozen.user_attrs[A_PLAN]["worker"] == a.worker
    assert frozen.user_attrs[A_PLAN]["retry_of"] == lost and not a.busy(a.trials())  # now a's own running claim

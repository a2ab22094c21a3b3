"""The one worker protocol (core.search.engine): Optuna's public API only, claims, requeues, heartbeats."""

from __future__ import annotations

import fcntl
import re
import socket
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from agentlab.core.search import records as R  # noqa: E402
from agentlab.core.search.engine import new_study, store_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
# Optuna's private names: a module or attribute with a leading underscore reached through optuna, or the
# attributes agentlab used to read off a Study / FrozenTrial / storage.
PRIVATE = re.compile(r"optuna(\.\w+)*\._\w|from optuna[\w.]* import _|\._(storage|study_id|trial_id|backend)\b"
                     r"|_pop_waiting_trial_id|\b_heartbeat\b|_CachedStorage")


def test_no_optuna_private_name_anywhere_in_agentlab() -> None:
    hits = []
    for path in sorted([*ROOT.joinpath("agentlab").rglob("*.py"), *ROOT.joinpath("cli").rglob("*.py")]):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_the_pattern_finds_what_it_is_for() -> None:  # the test above cannot pass by matching nothing
    for line in ["study._storage.get_trial(1)", "from optuna.storages._heartbeat import x", "t._trial_id",
                 "study._pop_waiting_trial_id()", "from optuna._hypervolume import compute_hypervolume",
                 "import optuna.study._multi_objective"]:
        assert PRIVATE.search(line), line
    assert not PRIVATE.search("store.trial_id(number)") and not PRIVATE.search("self._ids[number]")


def test_create_claim_requeue_by_number(tmp_path: Path) -> None:
    study = new_study(f"sqlite:///{tmp_path / 's.db'}", study_name="s", direction="minimize")
    store = store_of(study)
    assert store.claim_lock == Path(f"{tmp_path / 's.db'}.claims.lock") and not store.heartbeats
    waiting = [store.create(state=TrialState.WAITING, user_attrs={"id": k}) for k in "ab"]
    assert waiting == [0, 1]
    first = store.claim(1, attrs=lambda t: {"worker": store.worker})
    assert [t.number for t in first] == [0] and store.get(0).state == TrialState.RUNNING
    assert store.get(0).user_attrs["worker"] == store.worker
    assert [t.number for t in store.claim(5, accept=lambda t: t.user_attrs["id"] == "b")] == [1]
    assert store.claim(5) == []  # nothing waits
    assert store.requeue(1) and store.get(1).state == TrialState.WAITING
    study.tell(0, 0.5)
    assert study.trials[0].value == 0.5 and not store.requeue(0)  # finished: not put back


def test_recover_puts_back_only_the_trials_of_dead_workers_on_this_host(tmp_path: Path) -> None:
    study = new_study(f"sqlite:///{tmp_path / 's.db'}", study_name="s", direction="minimize")
    store = store_of(study)
    host = socket.gethostname()
    dead = store.create(user_attrs={R.A_PLAN: {"worker": f"{host}:999999"}})
    mine = store.create(user_attrs={R.A_PLAN: {"worker": store.worker}})
    elsewhere = store.create(user_attrs={"worker": "another-host:1"})  # evolve's spelling of the worker
    assert store.recover() == [dead]
    assert [t.state.name for t in study.trials] == ["WAITING", "RUNNING", "RUNNING"]
    assert store.recover(also=lambda t: t.number == mine) == [mine] and elsewhere == 2


def test_recover_does_not_take_back_a_trial_claimed_while_it_read(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim writes RUNNING, then the plan naming its worker: recover reading and requeueing under the claim lock
    never sees the first write without the second, nor requeues a trial claimed since it read the list."""
    study = new_study(f"sqlite:///{tmp_path / 's.db'}", study_name="s", direction="minimize")
    store = store_of(study)
    lost = store.create(user_attrs={R.A_PLAN: {"worker": f"{socket.gethostname()}:999999"}})
    held: list[bool] = []
    alive = R.worker_alive

    def lock_held() -> bool:
        with open(store.claim_lock, "a") as probe:  # another open file: flock conflicts with the store's own
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False

    def checked(worker: str | None) -> bool:
        held.append(lock_held())
        if len(held) == 1:  # after recover's first read: another worker recovers the trial and a live one claims it
            assert store.requeue(lost)
            store.claim(attrs=lambda t: {R.A_PLAN: {"worker": "another-host:1"}})
        return alive(worker)

    monkeypatch.setattr(R, "worker_alive", checked)
    assert store.recover() == []
    trial = store.get(lost)
    assert trial.state == TrialState.RUNNING and trial.user_attrs[R.A_PLAN]["worker"] == "another-host:1"
    assert len(held) == 2 and held[-1], "recover read the trials it requeues without the claim lock"


def test_a_study_not_opened_by_agentlab_is_named_as_such() -> None:
    import optuna

    with pytest.raises(ValueError, match="not opened by agentlab"):
        store_of(optuna.create_study())


def test_a_storage_url_is_named_in_errors_without_its_password() -> None:
    from agentlab.core.search.engine import url_where
    assert url_where("postgresql://user:hunter2@db.example/optuna") == "postgresql://user:***@db.example/optuna"
    assert url_where("sqlite:///runs/x/study.db") == "runs/x/study.db" and url_where(None) is None
    assert "hunter2" not in (url_where("mysql://root:hunter2@localhost/s") or "")

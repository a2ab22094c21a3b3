"""The shared study layer (core/search/study.py) and the loop with a maximised objective: opening, checks on
reopening, damaged databases, proposals that commit nothing, finished trials with constraints."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from agentlab.core.errors import ConfigError, RunDirError  # noqa: E402
from agentlab.core.search.evaluator import HybridEvaluator  # noqa: E402
from agentlab.core.search.loop import SearchLoop, StopRules  # noqa: E402
from agentlab.core.search.planners import OptunaPlanner  # noqa: E402
from agentlab.core.search.records import best_of  # noqa: E402
from agentlab.core.search.space import ParamSpec, SearchSpace  # noqa: E402
from agentlab.core.search.study import (  # noqa: E402
    KeptSampler,
    finished_trial,
    make_sampler,
    open_study,
)


def test_open_study_default_storage_and_reopen_checks(tmp_path: Path) -> None:
    study = open_study(None, tmp_path, name="s", directions=["maximize", "minimize"], objectives=["speedup", "size"])
    assert (tmp_path / "study.db").is_file() and len(study.directions) == 2
    again = open_study(None, tmp_path, name="s", directions=["maximize", "minimize"], objectives=["speedup", "size"])
    assert again.user_attrs["agentlab:objectives"] == ["speedup", "size"]
    with pytest.raises(ConfigError, match=r"has directions \['maximize', 'minimize'\], this search needs"):
        open_study(None, tmp_path, name="s", directions=["maximize"], objectives=["speedup"])
    with pytest.raises(ConfigError, match=r"optimises \['speedup', 'size'\], this search \['accuracy', 'size'\]"):
        open_study(None, tmp_path, name="s", directions=["maximize", "minimize"], objectives=["accuracy", "size"])


def test_damaged_database_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "study.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(RunDirError, match="study.db: cannot open the study"):
        open_study(None, tmp_path, name="s", directions=["minimize"])
    with pytest.raises(ConfigError, match=r"x.storage: .*study.db is not an SQLite database \(file is not a database"):
        open_study(f"sqlite:///{tmp_path / 'study.db'}", tmp_path, name="s", directions=["minimize"], what="x.storage")


def test_the_kept_sampler_asks_its_mirror_without_committing(tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution

    dists = {"q": CategoricalDistribution(["a", "b", "c"])}
    study = open_study(None, tmp_path, name="s", directions=["maximize", "minimize"])
    study.add_trial(finished_trial({"q": "a"}, dists, [2.0, 5.0], violation=0.5, user_attrs={"k": 1}))
    study.add_trial(finished_trial({"q": "b"}, dists, None))
    trials = study.get_trials(deepcopy=False)
    assert trials[0].constraints == {"violation": 0.5} and trials[1].state.name == "FAIL"
    kept = KeptSampler(lambda seed: make_sampler("nsga2", seed, population=4), ["maximize", "minimize"], 0)
    kept.sync(trials)
    trial = kept.ask(dists)
    assert trial.params["q"] in ("a", "b", "c") and kept.penalty() is None  # several objectives: nothing penalised
    kept.tell(trial, "infeasible", dists)
    assert len(study.get_trials()) == 2, "asking the mirror wrote into the real study"
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("grid", 0)


def _numbered(trials: list[Any]) -> list[Any]:
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def test_the_kept_sampler_copies_each_trial_once_and_its_extra_draws_leave_the_first_samplers_alone() -> None:
    from optuna.distributions import FloatDistribution

    dists = {"x": FloatDistribution(-5.0, 5.0)}
    done = _numbered([finished_trial({"x": x}, dists, [(x - 1) ** 2]) for x in (-4.0, -1.0, 0.5, 2.0, 4.0)])

    def draws(explore: bool) -> list[float]:
        kept = KeptSampler(lambda s: make_sampler("tpe", s, startup=2), ["minimize"], 7)
        out = []
        for n in range(6):
            kept.sync(done[:3 + n // 2])  # trials appear as they finish; the ones copied already are not again
            if explore:  # an LLM's extra candidates in between
                kept.tell(kept.ask(dists, explore=True), "skip")
            trial = kept.ask(dists)
            out.append(trial.params["x"])
            kept.tell(trial, "run")
        assert sum(t.state.name == "COMPLETE" for t in kept.study.get_trials()) == 5  # each real trial once
        return out

    assert draws(explore=True) == draws(explore=False)


def test_the_kept_sampler_tells_bad_points_as_infinitely_bad_once_warm_and_keeps_cmaes_state() -> None:
    from optuna.distributions import FloatDistribution

    dists = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}
    kept = KeptSampler(lambda s: make_sampler("cmaes", s, startup=0), ["minimize"], 0)
    real = _numbered([finished_trial({"x": 1.0, "y": 1.0}, dists, [2.0]), finished_trial({"x": 2.0, "y": 0.0}, dists,
                                                                                         [5.0]),
                      finished_trial({"x": 3.0, "y": 3.0}, dists, None)])
    for _ in range(2):
        kept.sync(real[:2], failed=real[2:], distributions=lambda params: dists)
    kept.tell(kept.ask(dists), "infeasible", dists)
    kept.tell(kept.ask(dists), "infeasible", dists, penalize=False)  # a sampler still in its warm-up: nothing
    for _ in range(3):  # the same point drawn three times, each a repeat: penalised once
        kept.study.enqueue_trial({"x": 1.0, "y": 1.0})
        kept.tell(kept.ask(dists), "repeat", dists)
    bad = [t for t in kept.study.get_trials() if t.state.name == "COMPLETE" and t.value not in (2.0, 5.0)]
    assert [t.value for t in bad] == [math.inf] * 3  # the failed trial, the draw, the repeat: worse than any result
    assert [t.params for t in bad][2] == {"x": 1.0, "y": 1.0}
    attrs = kept.tell(kept.ask(dists), "run")
    assert any(k.startswith("cma:") for k in attrs), attrs  # the draw's CMA-ES state, for the trial that runs


class Peak:
    """value = 10 - (x - 1)^2: maximised, best at x = 1."""

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Any) -> dict[str, Any]:
        return {"value": 10 - (params["x"] - 1.0) ** 2}


def test_loop_maximises_when_the_study_does(tmp_path: Path) -> None:
    space = SearchSpace({"x": ParamSpec(low=-5.0, high=5.0)})
    study = open_study(None, tmp_path, name="max", directions=["maximize"], objectives=["score"])
    loop = SearchLoop(study=study, space=space, base_params={"x": 4.0}, objective=Peak(),
                      planner=OptunaPlanner("tpe"), evaluator=HybridEvaluator(0.01, direction="maximize"),
                      metric="score", stop=StopRules(max_iterations=10, target=9.99), seed=3)
    outcome = loop.run()
    base = outcome.records[0]
    assert outcome.best is not None and outcome.best.value > base.value  # 1.0 at x = 4
    accepted = [r for r in outcome.records if r.accepted and r.planner != "base"]
    assert accepted and all("beats best" in r.reason for r in accepted)
    assert best_of(outcome.records, "maximize") is outcome.best or best_of(
        outcome.records, "maximize").value == outcome.best.value
    assert best_of(outcome.records, "minimize").value <= outcome.best.value


def test_bad_journal_paths_are_config_errors(tmp_path: Path) -> None:
    not_a_journal = tmp_path / "notes.txt"
    not_a_journal.write_text("these are notes, not an Optuna journal\n")
    with pytest.raises(ConfigError, match=r"notes.txt.*JSONDecodeError"):
        open_study(str(not_a_journal), tmp_path, name="s", directions=["minimize"])
    with pytest.raises(ConfigError, match="cannot use .* as an Optuna journal file"):
        open_study(str(not_a_journal / "x.log"), tmp_path, name="s", directions=["minimize"])
    # JSON lines of another shape (a copy of another JSONL file): it was an internal error, KeyError 'op_code'
    other = tmp_path / "rows.jsonl"
    other.write_text('{"a": 1}\n')
    with pytest.raises(ConfigError, match=r"cannot use .*rows.jsonl.* as an Optuna journal file: its first line is "
                       "JSON, not Optuna's; nothing was written to it"):
        open_study(str(other), tmp_path, name="s", directions=["minimize"])
    assert other.read_text() == '{"a": 1}\n'
    # one line without a newline: Optuna skips it as a line being written, so the file read as an empty journal
    # and the study was appended to the user's file
    for name, text in {"note.txt": "my notes", "row.jsonl": '{"a": 1}'}.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=f"cannot use .*{name}.* as an Optuna journal file: its first line is"):
            open_study(str(tmp_path / name), tmp_path, name="s", directions=["minimize"])
        assert (tmp_path / name).read_text() == text
    # a run's study.db given as a path (no sqlite:///): read as a journal it was UnicodeDecodeError
    db = tmp_path / "study.db"
    open_study(f"sqlite:///{db}", tmp_path, name="s", directions=["minimize"])
    with pytest.raises(ConfigError, match="study.db is an SQLite database, not a journal file") as err:
        open_study(str(db), tmp_path, name="s", directions=["minimize"])
    assert f"sqlite:///{db}" in (err.value.hint or "")


def test_an_sqlite_file_that_is_not_optunas_is_refused_unchanged(tmp_path: Path) -> None:
    """Optuna wrote its 13 tables beside a user's own (`evolve worker --store sqlite:///plain.db` said "holds no
    evolve population" after it had), and into a file of text it failed late."""
    import sqlite3
    from contextlib import closing

    from agentlab.core.search.study import open_storage

    plain, text, empty = tmp_path / "plain.db", tmp_path / "text.db", tmp_path / "empty.db"
    with closing(sqlite3.connect(plain)) as con:
        con.execute("CREATE TABLE t (x)")
        con.commit()
    text.write_text("hello")
    empty.write_bytes(b"")
    before = {p: p.read_bytes() for p in (plain, text, empty)}
    with pytest.raises(ConfigError, match=r"plain.db is an SQLite database of something else \(tables: t\)"):
        open_study(f"sqlite:///{plain}", tmp_path, name="s", directions=["minimize"])
    with pytest.raises(ConfigError, match="text.db is not an SQLite database"):
        open_storage(f"sqlite:///{text}", tmp_path)
    with pytest.raises(ConfigError, match="empty.db holds no Optuna study"):  # a worker joins, never creates
        open_storage(f"sqlite:///{empty}", tmp_path, create=False)
    assert {p: p.read_bytes() for p in before} == before
    open_study(f"sqlite:///{empty}", tmp_path, name="s", directions=["minimize"])  # a new, empty file: a new study
    open_storage(f"sqlite:///{empty}", tmp_path, create=False)  # an Optuna database now


def test_a_locked_optuna_database_is_not_taken_for_another_kind(tmp_path: Path) -> None:
    """Another worker writing the shared study.db: check_sqlite said "not an SQLite database (database is locked)"."""
    import sqlite3

    from agentlab.core.search.study import check_sqlite

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(url, tmp_path, name="s", directions=["minimize"])
    holder = sqlite3.connect(tmp_path / "study.db")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        check_sqlite(url, create=False)  # left to Optuna's open, which waits for the lock
    finally:
        holder.rollback()
        holder.close()


def test_a_database_killed_mid_write_is_left_to_optunas_recovery(tmp_path: Path) -> None:
    """A kill -9 mid-transaction leaves a hot journal, which a read-only open cannot roll back ("attempt to write a
    readonly database"): check_sqlite called the run's own store "not an SQLite database" and the resume exited 2."""
    import subprocess
    import sys

    from agentlab.core.search.study import check_sqlite

    url = f"sqlite:///{tmp_path / 'study.db'}"
    open_study(url, tmp_path, name="s", directions=["minimize"])
    writer = ("import os, sqlite3; c = sqlite3.connect('study.db'); c.execute('PRAGMA cache_size=5'); "
              "c.execute('CREATE TABLE scratch (x)'); c.execute('BEGIN')\n"
              "for _ in range(5000): c.execute('INSERT INTO scratch VALUES (?)', ('x' * 200,))\n"
              "os._exit(0)")
    subprocess.run([sys.executable, "-c", writer], cwd=tmp_path, check=True)
    assert (tmp_path / "study.db-journal").is_file()
    check_sqlite(url, create=False)
    # the read-only look before a run folder (a worker starting beside one that writes the study meets the same
    # journal): nothing to read now, not a bad storage; the run's own open checks it
    from agentlab.core.search.study import check_storage, peek_study

    check_storage(url)
    assert peek_study(url, "s", ["minimize"]) is None
    assert open_study(url, tmp_path, name="s", directions=["minimize"]).trials == []


def test_checking_a_storage_creates_nothing(tmp_path: Path) -> None:
    """nas's and evolve's check before the run (a --dry-run's too) made a new SQLite file with Optuna's tables."""
    from agentlab.core.search.study import check_storage

    check_storage(f"sqlite:///{tmp_path / 'new.db'}")
    check_storage(str(tmp_path / "new.journal"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="its folder .*nodir does not exist"):
        check_storage(f"sqlite:///{tmp_path / 'nodir' / 'new.db'}")
    (tmp_path / "adir").mkdir()  # the run's open said "unable to open database file", after making its run folder
    with pytest.raises(ConfigError, match="adir is a folder, not an SQLite database file"):
        check_storage(f"sqlite:///{tmp_path / 'adir'}")


@pytest.mark.parametrize("url, driver, install", [
    ("mysql://u:secretpw@localhost/db", "MySQLdb", "pip install mysqlclient"),
    ("postgresql+psycopg2://u:secretpw@localhost/db", "psycopg2", "pip install psycopg2-binary"),
])
def test_a_server_url_without_its_driver_names_the_package_and_hides_the_password(tmp_path: Path, url: str,
                                                                                  driver: str, install: str) -> None:
    """``mysql://`` without its driver said Optuna's "Failed to import DB access module" (the run's open) or
    ``No module named 'MySQLdb'`` (the check), with a hint about URLs; the run's open printed the password too."""
    from agentlab.core.search.study import check_storage, open_storage

    for opening in (lambda: check_storage(url), lambda: open_storage(url, tmp_path)):
        with pytest.raises(ConfigError) as caught:
            opening()
        assert "secretpw" not in caught.value.message
        assert f"driver {driver!r} is not installed" in (caught.value.hint or "")
        assert install in (caught.value.hint or "")


def test_a_worker_opening_a_study_another_just_created_waits_for_its_labels(tmp_path: Path) -> None:
    """Two workers started together on a new study: the second opened it between the first's create_study and its
    labels (objectives, settings), found none, wrote its own and ran with other settings beside the first."""
    import threading

    import optuna

    from agentlab.core.search import study as study_module

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    made = optuna.create_study(study_name="s", storage=storage, direction="minimize")  # the first worker, mid-open

    def label() -> None:
        time.sleep(0.4)
        made.set_user_attr(study_module.OBJECTIVES_ATTR, ["val_mse"])
        made.set_user_attr(study_module.SETTINGS_ATTR, {"data.path": "etth1.csv"})

    labelling = threading.Thread(target=label)
    labelling.start()
    try:
        with pytest.raises(ConfigError, match=r"other settings .*data.path etth1.csv -> other.csv"):
            open_study(storage, tmp_path, name="s", directions=["minimize"], objectives=["val_mse"],
                       settings={"data.path": "other.csv"})
    finally:
        labelling.join()
    assert made.user_attrs[study_module.SETTINGS_ATTR] == {"data.path": "etth1.csv"}

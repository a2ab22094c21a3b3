"""Workers started together on a new database race to create its schema; the loser's error (PostgreSQL's "duplicate
key value violates unique constraint pg_type_typname_nsp_index") was retried only ~1 s in all, too short on a loaded
machine: a worker died at start. A lost race is retried longer; any other database error is said at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from agentlab.core.errors import ConfigError
from agentlab.core.search import study as study_mod


def _failing(errors: list[Exception], calls: list[int]) -> Any:
    def get_storage(url: str) -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "opened"
    return get_storage


@pytest.mark.parametrize("race", [
    IntegrityError("CREATE TYPE", {}, Exception('duplicate key value violates unique constraint '
                                                '"pg_type_typname_nsp_index"')),
    OperationalError("CREATE TABLE", {}, Exception("database is locked")),
    OperationalError("CREATE TABLE", {}, Exception("deadlock detected")),
    OperationalError("CREATE TABLE", {}, Exception("(1213, 'Deadlock found when trying to get lock; try restarting "
                                                   "transaction')"))])
def test_a_lost_schema_race_is_retried_past_four_tries(race: Exception, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    calls: list[int] = []
    monkeypatch.setattr(optuna.storages, "get_storage", _failing([race] * 5, calls))
    monkeypatch.setattr(study_mod.time, "sleep", lambda s: None)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert study_mod.open_storage(url, tmp_path) == "opened"
    assert len(calls) == 6


@pytest.mark.parametrize("said", ["connection refused", 'password authentication failed for user "agentlab"',
                                  "(1045, \"Access denied for user 'agentlab'@'localhost'\")"])
def test_a_refused_connection_is_said_at_once(said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    refused = OperationalError("connect", {}, Exception(said))
    calls: list[int] = []
    monkeypatch.setattr(optuna.storages, "get_storage", _failing([refused] * 8, calls))
    monkeypatch.setattr(study_mod.time, "sleep", lambda s: pytest.fail("slept before saying a refused connection"))
    with pytest.raises(ConfigError, match="cannot open"):
        study_mod.open_storage(f"sqlite:///{tmp_path / 's.db'}", tmp_path)
    assert len(calls) == 1

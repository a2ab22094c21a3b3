"""A journal storage path in a folder that does not exist is refused as an sqlite:/// URL there is: the folder was
made silently, and a typo in it started a second study beside the one the other workers use."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.core.errors import ConfigError
from agentlab.core.search.study import open_storage, open_study


def test_a_journal_in_a_missing_folder_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    journal = tmp_path / "no" / "dir" / "x.journal"
    with pytest.raises(ConfigError, match=r"search.storage: cannot open the journal file .*x.journal.*: its folder "
                       r".*no/dir does not exist") as err:
        open_study(str(journal), tmp_path, name="s", directions=["minimize"])
    assert err.value.hint == "create the folder first, or give another path"
    with pytest.raises(ConfigError, match="^store: cannot open the journal file"):
        open_storage(str(journal), tmp_path, what="store")
    assert not (tmp_path / "no").exists()


def test_a_journal_in_an_existing_folder_is_made(tmp_path: Path) -> None:
    journal = tmp_path / "x.journal"
    study = open_study(str(journal), tmp_path, name="s", directions=["minimize"])
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    assert journal.is_file()

"""``store_file``: the local file of a storage setting, which every check of a store's file shares (a URL's query,
``?timeout=30``, is no part of its name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.core.errors import ConfigError
from agentlab.core.search.study import check_storage, missing_study, store_file


def test_store_file_of_each_kind_of_storage(tmp_path: Path) -> None:
    assert store_file(f"sqlite:///{tmp_path / 'x.db'}?timeout=30") == tmp_path / "x.db"
    assert store_file(f"sqlite:///{tmp_path / 'x.db'}") == tmp_path / "x.db"
    assert store_file(str(tmp_path / "x.journal")) == tmp_path / "x.journal"
    assert store_file("postgresql://u:p@host/db") is None
    (tmp_path / "x.db").write_bytes(b"")
    assert missing_study(f"sqlite:///{tmp_path / 'x.db'}?timeout=30", tmp_path) is None
    assert missing_study(f"sqlite:///{tmp_path / 'x.db'}?timeout=30", tmp_path, empty=True) == str(tmp_path / "x.db")
    assert missing_study("postgresql://u:p@host/db", tmp_path, empty=True) is None


def test_check_storage_refuses_a_journal_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="its folder .* does not exist"):
        check_storage(str(tmp_path / "no" / "x.journal"), what="store")
    check_storage(str(tmp_path / "x.journal"), what="store")  # a new journal in a folder that is there
    assert not (tmp_path / "no").exists() and not (tmp_path / "x.journal").exists()

"""What the pages say fits what is there: a runs path that is a file is said to be no folder (not "does not exist"),
and the Base page's hint for an empty config file offers nothing the page has no way to do ("give no file")."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")

from streamlit.testing.v1 import AppTest  # noqa: E402
from ui_helpers import models_file  # noqa: E402


def page(name: str) -> AppTest:
    return AppTest.from_string(f"from agentlab.ui import pages\npages.{name}_page()\n", default_timeout=60).run()


def test_a_runs_path_that_is_a_file_is_said_to_be_no_folder(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "afile").write_text("x")
    monkeypatch.setenv("AGENTLAB_RUNS", str(in_tmp / "afile"))
    at = page("runs")
    assert not at.exception
    said = "\n".join(str(e.value) for e in [*at.warning, *at.info])
    assert f"{in_tmp / 'afile'} is not a folder (a file?)" in said and "does not exist" not in said


@pytest.mark.parametrize("empty", ["pipeline", "models"])
def test_base_page_an_empty_config_offers_no_way_the_page_lacks(in_tmp: Path, empty: str) -> None:
    (in_tmp / "configs").mkdir()
    (in_tmp / "m.gguf").write_bytes(b"GGUF")
    models_file(in_tmp / "configs", in_tmp / "m.gguf")
    (in_tmp / "configs" / "pipeline.yaml").write_text("name: one\nbase_pipeline:\n  stages:\n"
                                                      "    - {name: first, model: a}\n")
    (in_tmp / "configs" / f"{empty}.yaml").write_text("# nothing yet\n")
    at = page("base")
    assert not at.exception
    said = "\n".join(str(e.value) for e in at.error)
    assert f"configs/{empty}.yaml: the config file is empty" in said
    assert "hint: write the keys to set" in said and "give no file" not in said

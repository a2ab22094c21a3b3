"""The compression workspace: content hashes remembered and refreshed, keys that ignore key order, atomic records
read back, damaged and unfinished ones ignored, notes appended."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agentlab.compress.workspace import Workspace


def test_hash_key_records_and_notes(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"a": 1}')
    (model / "weights.bin").write_bytes(b"\0" * 1000)
    ws = Workspace(tmp_path / "ws")
    first = ws.model_hash(model)
    assert ws.model_hash(model) == first and (tmp_path / "ws" / "hashes.json").is_file()
    (model / "weights.bin").write_bytes(b"\1" * 1000)
    os.utime(model / "weights.bin", ns=(1, 1))  # a new stamp: hashed again
    second = ws.model_hash(model)
    assert second != first
    assert Workspace.key(first, {"x": 1, "y": [1, 2]}) == Workspace.key(first, {"y": [1, 2], "x": 1})
    assert Workspace.key(first, {"x": 1}) != Workspace.key(second, {"x": 1})
    key = Workspace.key(second, {"technique": "wanda", "sparsity": 0.5})
    assert ws.get(key) is None
    ws.put(key, {"model_hash": second, "metrics": {"perplexity": 12.5}})
    assert ws.get(key) == {"key": key, "model_hash": second, "metrics": {"perplexity": 12.5}}
    assert [r["key"] for r in ws.experiments(second)] == [key] and ws.experiments(first) == []
    (tmp_path / "ws" / "experiments" / "torn.json").write_text('{"key": ')
    assert ws.get("torn") is None and len(ws.experiments()) == 1
    ws.put("failed", {"model_hash": second, "state": "failed"})  # an unfinished record is run again, never read back
    assert ws.get("failed") is None and len(ws.experiments()) == 1
    ws.add_note(second, "wanda 50%: perplexity +20%")
    ws.add_note(second, "int8: slower on this CPU")
    assert ws.notes(second).count("\n\n") == 2 and "int8" in ws.notes(second) and ws.notes(first) == ""
    # a run finished again (a resume of a finished run) replaced its note: `### ci` three times in the planners' view
    ws.add_note(second, "### ci: maximize speedup\n- best: gguf Q8_0")
    ws.add_note(second, "### ci: maximize speedup\n- best: gguf Q4_K_M")
    assert ws.notes(second).count("### ci:") == 1 and ws.notes(second).endswith("- best: gguf Q4_K_M\n\n")
    assert ws.notes(second).startswith("wanda 50%: perplexity +20%\n\nint8: slower on this CPU\n\n")


def test_the_workspace_is_kept_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative workspace (the default runs/compress/workspace too) is made absolute where the run starts, so a
    resume from another folder uses the same one; a run saved with none (before) uses the one beside its folder."""
    from agentlab.compress.workspace import workspace_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTLAB_RUNS", raising=False)
    assert workspace_root(None) == tmp_path / "runs" / "compress" / "workspace"
    assert workspace_root("ws") == workspace_root(Path("ws")) == tmp_path / "ws"
    assert workspace_root("/abs/ws", tmp_path / "runs" / "r") == Path("/abs/ws")  # a resume's own, or its --set
    old = tmp_path / "first" / "runs" / "r"
    assert workspace_root(None, old) == tmp_path / "runs" / "compress" / "workspace"  # none beside it: the default
    (old.parent / "compress" / "workspace").mkdir(parents=True)
    assert workspace_root(None, old) == old.parent / "compress" / "workspace"
    assert workspace_root(None, Path("first/runs/r")) == old.parent / "compress" / "workspace"
    default = tmp_path / "second" / "runs" / "compress" / "20260101-000000-compress"  # the default layout
    (default.parent / "workspace").mkdir(parents=True)
    assert workspace_root(None, default) == default.parent / "workspace"
    assert Workspace("rel").root == tmp_path / "rel"  # results.json names it absolute


@pytest.mark.parametrize("where", ["bin.gguf", "bin.gguf/sub"])
def test_a_workspace_that_is_a_file_is_refused_before_any_folder(in_tmp: Path, tiny_model: dict[str, Path],
                                                                where: str, capsys: Any) -> None:
    """`--set workspace=bin.gguf` (a file) made the run folder, then failed with "File exists" (exit 1); --dry-run
    passed."""
    from agentlab.cli import main

    (in_tmp / "bin.gguf").write_bytes(b"GGUF")
    for extra in (["--dry-run"], []):
        code = main(["compress", "--model", str(tiny_model["hf"]), "-n", "1", "--set", f"workspace={where}",
                     "--out", str(in_tmp / "cws"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "workspace: " in err and f"{in_tmp / 'bin.gguf'} is a file, not a folder" in err
        assert "Traceback" not in err and not (in_tmp / "cws").exists()


def test_the_planners_see_the_notes_newest_whole_lines() -> None:
    """The prompt kept notes[-2000:], which began mid-word ("ity 1,217, size 0.155 MB")."""
    from agentlab.compress.planners import notes_tail

    notes = "### a: goal\n- best: wanda perplexity 1,217\n\n### b: goal\n- best: gguf Q8_0, size 0.155 MB\n\n"
    assert notes_tail(notes, 40) == "- best: gguf Q8_0, size 0.155 MB"
    assert notes_tail(notes, 1000) == notes.strip()

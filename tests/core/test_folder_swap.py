"""A finished folder replacing an old one (``agentlab.core.files.rename_into_place``) in every command that does it:
``models export-hf --force``, ``models make-tiny --force``, ``evolve blend --force`` and ``train-persona --force``.
Whatever happens between the two renames (Ctrl-C, a rename that fails, both renames failing), the new folder or the
old one is at OUT, never neither, and a user's own folder named ``.OUT.old`` is left alone."""

from __future__ import annotations

import importlib
import inspect
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import cannot_write, nearest_existing, unwritable

OLD = '{"old": true}'


def _old(out: Path, marker: str) -> None:
    """An old model / adapter at ``out``, and beside it a user's folder that the swap's old fixed name matched."""
    out.mkdir()
    (out / marker).write_text(OLD)
    (out.parent / f".{out.name}.old").mkdir()
    (out.parent / f".{out.name}.old" / "mine.txt").write_text("the user's")


Caller = tuple[Path, str, Callable[[], Any]]  # OUT, the file every folder there holds, the call that replaces it


def _export_hf(root: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Caller:
    from agentlab.core.models.export import export_hf

    out = root / "m"
    return out, "config.json", lambda: export_hf(tiny["hf"], out, force=True)


def _make_tiny(root: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Caller:
    from agentlab.core.train.tiny import make_tiny

    out = root / "m"
    return out, "config.json", lambda: make_tiny(out, overwrite=True, hidden_size=16, layers=1, heads=2, kv_heads=1,
                                                 intermediate=16, vocab_size=300)


def _blend(root: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Caller:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from agentlab.core.train.blend import _write_child

    out = root / "child"
    return out, "adapter_config.json", lambda: _write_child(out, {"new": True}, {"w": torch.zeros(2)}, {}, True)


def _train_persona(root: Path, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Caller:
    from agentlab.train_persona.config import TrainPersonaConfig

    run_module = importlib.import_module("agentlab.train_persona.run")  # the package's `run` is its function

    def save_pretrained(folder: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "adapter_config.json").write_text('{"new": true}')

    monkeypatch.setattr(run_module, "adapter_card", lambda cfg, results: "card\n")
    trainer = SimpleNamespace(model=SimpleNamespace(save_pretrained=save_pretrained))
    out = root / "adapter"
    return out, "adapter_config.json", lambda: run_module._save_adapter(trainer, TrainPersonaConfig(force=True), out,
                                                                        {})


CALLERS: dict[str, Callable[[Path, dict[str, Path], pytest.MonkeyPatch], Caller]] = {
    "export-hf": _export_hf, "make-tiny": _make_tiny, "blend": _blend, "train-persona": _train_persona}


def _on_renames(monkeypatch: pytest.MonkeyPatch, out: Path, what: str) -> None:
    """``what`` happens to the renames of ``out`` (os.rename, which Path.rename calls, and os.replace): "interrupt":
    a Ctrl-C right after the old folder is moved away; "fail": the new folder's rename onto ``out`` fails; "both":
    that one and the one putting the old folder back fail."""
    out = out.absolute()

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def move(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            src, dst = Path(os.path.abspath(src)), Path(os.path.abspath(dst))
            back = src.name == out.name and src.parent.name.endswith(".old")  # the old folder, from aside
            if dst == out and ((what in ("fail", "both") and not back) or (what == "both" and back)):
                raise OSError(28, "No space left on device")
            moved = real(src, dst, *args, **kwargs)
            if src == out and what == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
            return moved
        return move

    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))


def _hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("caller", list(CALLERS))
def test_ctrl_c_between_the_renames_leaves_the_new_folder_in_place(
        caller: str, tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        sigint_raises: None) -> None:
    """blend and train-persona moved the old folder aside, then renamed the new one: a Ctrl-C between the two left
    nothing at OUT (blend deleted both; train-persona left the adapter only as `.OUT.old`)."""
    out, marker, run = CALLERS[caller](tmp_path, tiny_model, monkeypatch)
    _old(out, marker)
    _on_renames(monkeypatch, out, "interrupt")
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.undo()
    assert (out / marker).is_file() and (out / marker).read_text() != OLD
    assert _hidden(tmp_path) == [f".{out.name}.old"]  # nothing aside left, the user's folder kept
    assert (tmp_path / f".{out.name}.old" / "mine.txt").read_text() == "the user's"


@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_new_folder_that_cannot_be_renamed_into_place_leaves_the_old_one(
        caller: str, tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """blend's `finally` deleted the old child it had moved aside when the new one's rename failed: no adapter."""
    out, marker, run = CALLERS[caller](tmp_path, tiny_model, monkeypatch)
    _old(out, marker)
    _on_renames(monkeypatch, out, "fail")
    with pytest.raises(OSError, match="No space left"):
        run()
    monkeypatch.undo()
    assert (out / marker).read_text() == OLD
    assert not [n for n in _hidden(tmp_path) if n.endswith(".old") and n != f".{out.name}.old"]  # nothing aside
    assert (tmp_path / f".{out.name}.old" / "mine.txt").read_text() == "the user's"


@pytest.mark.parametrize("caller", list(CALLERS))
def test_when_the_old_folder_cannot_be_put_back_the_error_names_where_it_is(
        caller: str, tmp_path: Path, tiny_model: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    out, marker, run = CALLERS[caller](tmp_path, tiny_model, monkeypatch)
    _old(out, marker)
    _on_renames(monkeypatch, out, "both")
    with pytest.raises(AgentlabError) as caught:
        run()
    monkeypatch.undo()
    [aside] = [p for p in tmp_path.iterdir() if p.name.endswith(".old") and p.name != f".{out.name}.old"]
    assert (aside / out.name / marker).read_text() == OLD
    assert f"the old one is in {aside / out.name}" in caught.value.message, caught.value.message
    assert "No space left on device" in caught.value.message and str(aside / out.name) in (caught.value.hint or "")
    assert caught.value.exit_code == 1


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_folder_that_takes_no_files_is_not_called_missing() -> None:
    """/proc gave "cannot write in /proc (No such file or directory)", as if /proc were not there."""
    assert cannot_write(Path("/proc/x")) == (Path("/proc"), "no new file can be made there")
    assert unwritable(Path("/proc/x/y")) == "cannot write in /proc (no new file can be made there)"


def test_unwritable_names_the_folder_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("afile.txt").write_text("")
    assert nearest_existing("afile.txt/sub/x", as_given=True) == Path("afile.txt")
    assert nearest_existing("afile.txt/sub/x") == tmp_path / "afile.txt"
    assert unwritable(Path("afile.txt/sub")) == "afile.txt is a file, not a folder"
    assert unwritable(Path("new/sub")) is None


def test_check_sizes_defaults_are_make_tiny_models() -> None:
    """check_sizes took its defaults from make_tiny_model's signature at import; now they are its own, the same."""
    from agentlab.core.train import tiny

    checked = inspect.signature(tiny.check_sizes).parameters
    made = inspect.signature(tiny.make_tiny_model).parameters
    assert tuple(checked) == tiny._SIZES
    assert {n: p.default for n, p in checked.items()} == {n: made[n].default for n in checked}
    tiny.check_sizes()  # make_tiny_model's defaults pass
    with pytest.raises(InputError, match="heads must be a multiple of kv_heads"):  # the others' defaults
        tiny.check_sizes(kv_heads=3)

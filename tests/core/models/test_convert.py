"""GGUF -> transformers folder: converted once, cached, re-converted when the file changes, never half-made; and the
transformers provider running a GGUF through it. On the session's tiny model (a conversion takes about a second)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gguf")

from agentlab.core.errors import AgentlabError, LLMError  # noqa: E402
from agentlab.core.llm.config import HFProviderConfig  # noqa: E402
from agentlab.core.llm.types import GenParams  # noqa: E402
from agentlab.core.models import convert  # noqa: E402
from agentlab.core.models.convert import MARKER, conversion_count, converted_folder, gguf_to_hf  # noqa: E402


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGENTLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def gguf(tiny_model: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the tiny GGUF (tests change its mtime)."""
    return Path(shutil.copy(tiny_model["gguf"], tmp_path / "tiny.gguf"))


def test_converts_once_and_matches_the_original(gguf: Path, cache: Path, tiny_model: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = conversion_count()
    folder = gguf_to_hf(gguf)
    assert folder.parent == cache / "hf-from-gguf" and (folder / MARKER).is_file()
    assert gguf_to_hf(gguf) == folder and conversion_count() == before + 1  # the second call reads the cache
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    from agentlab.core.files import umask

    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}  # safetensors' own file was 0600
    assert modes == dict.fromkeys(modes, 0o666 & ~umask()) and "model.safetensors" in modes

    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.inference_mode():
        ours = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        reference = AutoModelForCausalLM.from_pretrained(tiny_model["hf"])(ids).logits
    assert torch.allclose(ours, reference, atol=1e-5)  # f32 GGUF: the same weights
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template  # taken from the GGUF when transformers' converter drops it
    assert "<|im_start|>user" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_special_tokens_survive_beside_a_transformers_folder(tiny_model: dict[str, Path], cache: Path,
                                                             tmp_path: Path) -> None:
    """make-tiny's layout: model.gguf inside the transformers folder. transformers' converter then left bos, eos and
    pad unset, and TRL refused to train on that GGUF base ("pad_token None is not found in the vocabulary")."""
    from transformers import AutoTokenizer

    folder = Path(shutil.copytree(tiny_model["hf"], tmp_path / "tiny-a"))
    converted = AutoTokenizer.from_pretrained(gguf_to_hf(folder / "model.gguf"))
    original = AutoTokenizer.from_pretrained(tiny_model["hf"])
    assert converted.pad_token is not None
    assert (converted.bos_token, converted.eos_token, converted.pad_token) == (
        original.bos_token, original.eos_token, original.pad_token)


def test_a_changed_file_converts_again(gguf: Path, cache: Path) -> None:
    first = gguf_to_hf(gguf)
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert converted_folder(gguf) != first
    before = conversion_count()
    assert gguf_to_hf(gguf) != first and conversion_count() == before + 1


def test_a_new_format_drops_the_old_formats_conversion(gguf: Path, cache: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A format bump converts again (the format is in the key); the old folder, the model's size, stayed for good."""
    monkeypatch.setattr(convert, "_FORMAT", convert._FORMAT - 1)
    old = gguf_to_hf(gguf)
    monkeypatch.setattr(convert, "_FORMAT", convert._FORMAT + 1)
    new = gguf_to_hf(gguf)
    assert new != old and (new / MARKER).is_file() and not old.exists()
    assert sorted(p.name for p in new.parent.iterdir()) == [new.name, f"{new.name}.lock"]


def test_a_failed_conversion_leaves_nothing(gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(path: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed half way")

    monkeypatch.setattr(convert, "_convert", crash)
    with pytest.raises(RuntimeError):
        gguf_to_hf(gguf)
    target = converted_folder(gguf)
    assert not target.exists() and [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_an_unconvertible_file_is_one_error(tmp_path: Path, cache: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(AgentlabError) as err:
        gguf_to_hf(bad)
    assert "could not convert" in err.value.message and "\n" not in err.value.message


def test_hf_provider_runs_a_gguf_and_reuses_the_conversion(gguf: Path, cache: Path) -> None:
    from agentlab.core.llm.providers import hf
    from agentlab.core.llm.providers.hf import HFProvider

    provider = HFProvider("local", HFProviderConfig(device="cpu"))
    params = GenParams(temperature=0, max_tokens=4)
    messages = [{"role": "user", "content": "hi"}]
    before = conversion_count()
    try:
        first = asyncio.run(provider.generate(str(gguf), messages, params, 120))
        hf.unload_all()  # the next request loads again, from the cached folder
        second = asyncio.run(provider.generate(str(gguf), messages, params, 120))
    finally:
        hf.unload_all()
    assert conversion_count() == before + 1
    assert first.text == second.text and first.usage.completion_tokens > 0


def test_hf_provider_conversion_error_is_unavailable(tmp_path: Path, cache: Path) -> None:
    from agentlab.core.llm.providers.hf import HFProvider

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    provider = HFProvider("local", HFProviderConfig(device="cpu"))
    with pytest.raises(LLMError) as err:
        asyncio.run(provider.generate(str(bad), [{"role": "user", "content": "hi"}], GenParams(max_tokens=2), 60))
    assert err.value.kind == "unavailable" and "\n" not in err.value.message

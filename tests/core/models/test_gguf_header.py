"""read_gguf_header against the gguf package's own reader: the same keys and values (string arrays as their length),
the same tensor index, on a tiny model, on the built-in SmolLM2 where installed and on a big-endian file; files that
are not a whole GGUF header are refused with the file named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentlab.core.errors import AgentlabError
from agentlab.core.models.modelfiles import Skipped, find_local_models, gguf_info, read_gguf_header

gguf = pytest.importorskip("gguf")


def _as_gguf_reads(path: Path) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], int]]]:
    reader = gguf.GGUFReader(path)
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's own entries for the version and counts
            continue
        value = field.contents()
        is_strings = field.types[:1] == [gguf.GGUFValueType.ARRAY] and field.types[-1] == gguf.GGUFValueType.STRING
        fields[key] = Skipped(len(value)) if is_strings else value
    tensors = [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reader.tensors]
    return fields, tensors


def _same(path: Path) -> None:
    header = read_gguf_header(path)
    fields, tensors = _as_gguf_reads(path)
    assert header.fields.keys() == fields.keys()
    for key, value in fields.items():
        assert header.fields[key] == pytest.approx(value) if isinstance(value, float) else header.fields[key] == value
    assert header.tensors == tensors


def test_the_header_is_what_ggufs_reader_reads(tiny_model: dict[str, Path]) -> None:
    _same(tiny_model["gguf"])
    info = gguf_info(tiny_model["gguf"])
    assert info.n_vocab == read_gguf_header(tiny_model["gguf"]).fields["tokenizer.ggml.tokens"].length > 0
    assert info.n_params > 0 and info.chat_template


def test_the_builtin_smollm2() -> None:
    from agentlab.core.models.builtin import find_builtin

    path = find_builtin("smollm2-135m")
    if path is None:
        pytest.skip("the built-in SmolLM2 is not installed")
    _same(path)
    assert gguf_info(path).n_vocab == 49152


def test_a_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_block_count(2)
    writer.add_head_count_kv([2, 4])
    writer.add_token_list(["a", "bc", "def"])
    writer.add_chat_template("{{ x }}")
    writer.add_tensor("w", np.ones((3, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _same(path)
    header = read_gguf_header(path)
    assert header.fields["llama.attention.head_count_kv"] == [2, 4]
    assert header.fields["tokenizer.ggml.tokens"] == Skipped(3) and header.tensors == [("w", (4, 3), 0)]


def test_what_is_not_a_whole_header_is_refused(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_model["gguf"].read_bytes()
    cases = {"text.gguf": b"this is not a GGUF file\n" * 8, "cut.gguf": data[:2000],
             "v1.gguf": data[:4] + (1).to_bytes(4, "little") + data[8:4096], "empty.gguf": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AgentlabError, match=f"{name}: not a readable GGUF file"):
            read_gguf_header(tmp_path / name)


def test_a_file_cut_inside_its_tensor_data_is_truncated(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    """A whole header with the tensor data cut short (a download or copy that stopped) was read as a good GGUF:
    `models check` said "yes" and `export-hf` failed later in transformers. The header says how far the data runs."""
    data = tiny_model["gguf"].read_bytes()
    for name, content in {"short.gguf": data[:-1], "half.gguf": data[:len(data) // 2],
                          "head.gguf": data[:1000]}.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(AgentlabError, match=rf"{name}: not a readable GGUF file \(truncated: "):
            read_gguf_header(tmp_path / name)
    read_gguf_header(tiny_model["gguf"])  # the whole file is read, as before


def test_a_transformers_folder_cut_inside_its_tensors_is_listed_apart(tiny_model: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    """The tensors' extent was checked by train-persona alone: `models list` (``find_local_models``) and `models
    check` read a folder whose weights were cut short as a good model, which failed later in transformers."""
    import shutil

    folder = tmp_path / "models" / "cut"
    shutil.copytree(tiny_model["hf"], folder, ignore=shutil.ignore_patterns("*.gguf"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    unreadable: list[tuple[str, str]] = []
    assert find_local_models(tmp_path / "models", unreadable) == []
    assert unreadable and unreadable[0][0] == str(folder) and "model.safetensors: not a readable safetensors file " \
        "(truncated: the file has" in unreadable[0][1]
    weights.unlink()
    weights.symlink_to(tmp_path / "gone.safetensors")  # an HF cache snapshot whose blob is missing
    unreadable.clear()
    assert find_local_models(tmp_path / "models", unreadable) == []
    assert "model.safetensors: not a readable safetensors file (No such file or directory" in unreadable[0][1]

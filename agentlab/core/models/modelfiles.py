"""What a local model file says about itself, read from metadata only (nothing is loaded).

GGUF files through the ``gguf`` package's reader (memory-mapped: the header is read, not the weights); HF folders
through ``config.json`` and the safetensors headers. Used by the resource manager and ``agentlab models``.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import read_json


@dataclass
class GGUFInfo:
    path: str
    arch: str
    name: str | None
    file_type: str  # f32, f16, q8_0, q4_k_m, ... (general.file_type)
    size_bytes: int
    n_layers: int
    n_ctx_train: int | None
    n_embd: int
    n_head: int
    n_head_kv: int | list[int]  # a list where layers differ
    k_dim: int
    v_dim: int
    n_ff: int
    n_vocab: int
    chat_template: bool
    n_params: int = 0  # elements of every tensor (the model's parameter count)
    tied_embeddings: bool = False  # no separate output.weight: the head reuses token_embd

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HFInfo:
    path: str
    arch: str
    dtype: str | None
    size_bytes: int  # weights on disk
    n_params: int | None  # from safetensors headers when present
    n_layers: int | None
    n_ctx_train: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    head_dim: int | None
    chat_template: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_type_name(value: int | None) -> str:
    if value is None:
        return "unknown"
    import gguf

    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return f"type {value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def gguf_info(path: str | Path) -> GGUFInfo:
    """Architecture, sizes and file type of a GGUF file; raises ``AgentlabError`` when it is not one.

    Cached per (path, size, mtime): ``gguf.GGUFReader`` builds a view per vocabulary entry, which takes a noticeable
    fraction of a second on real vocabularies, and every pipeline run checks memory before it loads. ``path`` in the
    result is the path as given (like :func:`hf_info`), whichever spelling of the file filled the cache.
    """
    path = Path(path)
    if not path.is_file():
        raise AgentlabError(f"GGUF file not found: {path}", hint="make one with `agentlab models make-tiny DIR`")
    stat = path.stat()
    return replace(_gguf_info(str(path.resolve()), stat.st_size, stat.st_mtime_ns), path=str(path))


@functools.lru_cache(maxsize=64)
def _gguf_info(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/struct errors for non-GGUF input
        raise AgentlabError(f"{path}: not a readable GGUF file ({exc})",
                            hint="check the download or re-export it") from exc

    def field(key: str, default: Any = None) -> Any:
        item = reader.fields.get(key)
        return default if item is None else item.contents()

    arch = field("general.architecture", "llama")
    n_embd = int(field(f"{arch}.embedding_length", 0))
    n_head = field(f"{arch}.attention.head_count", 1)
    n_head = max(n_head) if isinstance(n_head, list) else int(n_head or 1)  # per-layer lists in some archs
    n_head_kv = field(f"{arch}.attention.head_count_kv", n_head)
    n_ff = field(f"{arch}.feed_forward_length", 4 * n_embd)
    head_dim = n_embd // n_head if n_head else 0
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path, arch=arch, name=field("general.name"), file_type=_file_type_name(field("general.file_type")),
        size_bytes=size, n_layers=int(field(f"{arch}.block_count", 0)),
        n_ctx_train=field(f"{arch}.context_length"), n_embd=n_embd, n_head=n_head,
        n_head_kv=[int(h) for h in n_head_kv] if isinstance(n_head_kv, list) else int(n_head_kv),
        k_dim=int(field(f"{arch}.attention.key_length", head_dim)),
        v_dim=int(field(f"{arch}.attention.value_length", head_dim)),
        n_ff=max(n_ff) if isinstance(n_ff, list) else int(n_ff),
        n_vocab=int(field(f"{arch}.vocab_size", 0) or (len(tokens.data) if tokens is not None else 0)),
        chat_template="tokenizer.chat_template" in reader.fields,
        n_params=sum(int(t.n_elements) for t in reader.tensors),
        tied_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )


def safetensors_numels(folder: Path) -> list[tuple[str, int]] | None:
    """(tensor name, element count) from the safetensors headers (8-byte length + JSON), without the tensors.

    Raises ``AgentlabError`` naming the file when a header cannot be read (truncated or not safetensors)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    out: list[tuple[str, int]] = []
    for file in files:
        try:
            with open(file, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(length))
            out += [(key, math.prod(meta["shape"])) for key, meta in header.items() if key != "__metadata__"]
        except (OSError, struct.error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AgentlabError(f"{file}: not a readable safetensors file ({type(exc).__name__}: {exc})",
                                hint="check the download or save the model again") from None
    return out


def hf_config(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A transformers folder's ``config.json`` and its text part (``text_config`` of multimodal models)."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise AgentlabError(f"not a transformers model folder (no config.json): {folder}",
                            hint="make one with `agentlab models make-tiny DIR`, or point at a save_pretrained folder")
    config = _read_json(config_file)
    text_config = config.get("text_config") or config
    if not isinstance(text_config, dict):
        raise AgentlabError(f"{config_file}: text_config is not a JSON object", hint="check the model folder")
    return config, text_config


def hf_info(folder: str | Path) -> HFInfo:
    """Architecture and sizes of a transformers model folder (``config.json`` + weights)."""
    folder = Path(folder)
    config, text_config = hf_config(folder)
    n_head = text_config.get("num_attention_heads")
    n_embd = text_config.get("hidden_size")
    weights = [p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern)]
    return HFInfo(
        path=str(folder), arch=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
        dtype=config.get("dtype") or config.get("torch_dtype"), size_bytes=sum(p.stat().st_size for p in weights),
        n_params=sum(n for _, n in safetensors_numels(folder) or []) or None,
        n_layers=text_config.get("num_hidden_layers"),
        n_ctx_train=text_config.get("max_position_embeddings"), n_embd=n_embd, n_head=n_head,
        n_head_kv=text_config.get("num_key_value_heads") or n_head,
        head_dim=text_config.get("head_dim") or (n_embd // n_head if n_embd and n_head else None),
        chat_template=(folder / "chat_template.jinja").is_file()
        or "chat_template" in _read_json(folder / "tokenizer_config.json"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model folder ({} when absent); ``InputError`` when unreadable or not an object."""
    if not path.is_file():
        return {}
    data = read_json(path, "model file")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}", hint="check the model folder")
    return data


def find_local_models(directory: str | Path) -> list[GGUFInfo | HFInfo]:
    """Every GGUF file and transformers folder under ``directory`` (recursively), sorted by path."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found: list[GGUFInfo | HFInfo] = []
    for path in sorted(directory.rglob("*")):
        try:
            if path.is_file() and path.suffix == ".gguf":
                found.append(gguf_info(path))
            elif path.is_dir() and (path / "config.json").is_file():
                found.append(hf_info(path))
        except AgentlabError:
            continue  # a half-written or foreign file: `models list` shows what it can read
    return found

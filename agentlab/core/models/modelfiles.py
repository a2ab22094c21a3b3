"""What a local model file says about itself, read from metadata only (nothing is loaded).

GGUF files through :func:`read_gguf_header` (the key-value header and the tensor index, read with ``struct``; string
arrays such as the vocabulary are stepped over, not decoded); HF folders through ``config.json`` and the safetensors
headers. Used by the resource manager and ``agentlab models``.
"""

from __future__ import annotations

import functools
import json
import math
import mmap
import os
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
    """Architecture, sizes and file type of a GGUF file; raises ``AgentlabError`` when it is not one (a folder: the
    message says it is one, and what runs it).

    Cached per (path, size, mtime). ``path`` in the result, and in the message of a file that cannot be read, is the
    path as given (like :func:`hf_info`), whichever spelling of the file filled the cache: `models list` printed an
    unreadable GGUF's absolute path beside the relative ones of everything else.
    """
    path = Path(path)
    if path.is_dir():  # e.g. a models file's HF folder on `backend: llama_cpp`: the message is all a note shows
        raise AgentlabError(f"{path}: is a folder (an HF model), not a GGUF file: run it with `backend: hf`, or "
                            "point `file` at a .gguf file", hint="llama.cpp loads GGUF files only")
    if not path.is_file():
        raise AgentlabError(f"GGUF file not found: {path}", hint="make one with `agentlab models make-tiny DIR`")
    stat, resolved = path.stat(), str(path.resolve())
    try:
        info = _gguf_info(resolved, stat.st_size, stat.st_mtime_ns)
    except AgentlabError as exc:
        if not exc.message.startswith(resolved):
            raise
        raise AgentlabError(str(path) + exc.message[len(resolved):], hint=exc.hint) from None
    return replace(info, path=str(path))


@dataclass
class GGUFHeader:
    """A GGUF file's metadata (``fields``: each key's value; a string array as :class:`Skipped`, its length) and
    tensor index (``tensors``: name, shape as GGUF stores it (innermost dimension first), GGML type number)."""

    fields: dict[str, Any]
    tensors: list[tuple[str, tuple[int, ...], int]]


@dataclass(frozen=True)
class Skipped:
    """A string array stepped over unread (the vocabulary, the merges): only its length."""

    length: int


# GGUF value types (gguf.GGUFValueType): struct formats of the fixed-size ones; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The header of the GGUF file ``path`` (versions 2 and 3, either byte order), without its weights.

    ``gguf.GGUFReader`` decodes every element of every array into a numpy view: seconds for a vocabulary of 151k
    tokens and their merges, paid by each command that checks a model's memory before it loads. Here string arrays
    are stepped over (one length read per element) and numeric ones read whole. Raises ``AgentlabError`` for a file
    that is not a GGUF, or is truncated: it ends inside its header, or before the end of the tensor data the header
    describes (a download or copy cut short; the tensors themselves are not read, only their extent is checked
    against the file's size). The message then says "truncated" and why."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse_header(buf)
    except (_Truncated, struct.error) as exc:  # struct.error: a read past the end of the file
        why = exc if isinstance(exc, _Truncated) else "the file ends inside its header"
        raise AgentlabError(f"{path}: not a readable GGUF file (truncated: {why})",
                            hint="check the download or re-export it") from None
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise AgentlabError(f"{path}: not a readable GGUF file ({_plainly(exc)})",
                            hint="check the download or re-export it") from None


def _plainly(exc: Exception) -> str:
    """Why a model file cannot be read, for people: mmap's "cannot mmap an empty file" is "empty file", an OSError
    its strerror; the class name only where the text alone says little (a KeyError's bare key)."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError):
        return "empty file" if str(exc) == "cannot mmap an empty file" else str(exc)
    return f"{type(exc).__name__}: {exc}"


class _Truncated(ValueError):
    """A GGUF file that ends before what its header describes."""


def _tensor_bytes(shape: tuple[int, ...], kind: int) -> int:
    """Bytes of one tensor's data (0 for a GGML type the gguf package does not know: its extent is not checked)."""
    import gguf

    try:
        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        return 0
    return math.prod(shape) // block * type_size


def _parse_header(buf: mmap.mmap) -> GGUFHeader:
    if buf[:4] != b"GGUF":
        raise ValueError(f"starts with {bytes(buf[:4])!r}, not GGUF")
    order = "<"
    (version,) = struct.unpack_from("<I", buf, 4)
    if version & 0xFFFF == 0:  # written big-endian
        order, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} (versions 2 and 3 are read)")
    n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
    pos = 24

    def unpack(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from(order + fmt, buf, pos)[0]
        pos += struct.calcsize(order + fmt)  # standard sizes: without the order, native ones
        return value

    def string() -> str:
        nonlocal pos
        length = unpack("Q")
        pos += length
        if pos > len(buf):
            raise _Truncated("a string runs past the end of the file")
        return bytes(buf[pos - length:pos]).decode("utf-8")

    def value(kind: int) -> Any:
        nonlocal pos
        if kind in _SCALARS:
            return unpack(_SCALARS[kind])
        if kind == 8:
            return string()
        if kind != 9:
            raise ValueError(f"unknown GGUF value type {kind}")
        item, count = unpack("I"), unpack("Q")
        if item in _SCALARS:
            fmt = f"{order}{count}{_SCALARS[item]}"
            items = list(struct.unpack_from(fmt, buf, pos))
            pos += struct.calcsize(fmt)
            return items
        if item != 8:
            return [value(item) for _ in range(count)]  # arrays of arrays: none in llama.cpp's files today
        for _ in range(count):
            pos += 8 + struct.unpack_from(order + "Q", buf, pos)[0]
        if pos > len(buf):
            raise _Truncated("a string array runs past the end of the file")
        return Skipped(count)

    fields = {}
    for _ in range(n_kv):
        key = string()
        fields[key] = value(unpack("I"))
    tensors = []
    data_end = 0  # where the last tensor's data ends, from the start of the data section
    for _ in range(n_tensors):
        name = string()
        shape = tuple(unpack("Q") for _ in range(unpack("I")))
        kind = unpack("I")
        tensors.append((name, shape, kind))
        data_end = max(data_end, unpack("Q") + _tensor_bytes(shape, kind))
    alignment = fields.get("general.alignment", 32)
    if n_tensors and isinstance(alignment, int) and alignment > 0:
        need = -(-pos // alignment) * alignment + data_end  # the data section starts at the next aligned offset
        if need > len(buf):
            raise _Truncated(f"its tensor data needs {need} bytes, the file has {len(buf)}")
    return GGUFHeader(fields, tensors)


@functools.lru_cache(maxsize=64)
def _gguf_info(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    header = read_gguf_header(path)

    def field(key: str, default: Any = None) -> Any:
        return header.fields.get(key, default)

    arch = field("general.architecture", "llama")
    for key in (f"{arch}.block_count", f"{arch}.embedding_length"):  # a model of 0 layers (make_tiny_model once
        value = field(key)  # wrote one) aborts llama.cpp's loader, the whole process: unreadable, as an HF folder is
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AgentlabError(f"{path}: not a loadable GGUF model ({key} is {value!r}, not a positive whole "
                                "number)", hint="re-export it from a model with at least one layer")
    n_embd = int(field(f"{arch}.embedding_length", 0))
    n_head = field(f"{arch}.attention.head_count", 1)
    n_head = max(n_head) if isinstance(n_head, list) else int(n_head or 1)  # per-layer lists in some archs
    n_head_kv = field(f"{arch}.attention.head_count_kv", n_head)
    n_ff = field(f"{arch}.feed_forward_length", 4 * n_embd)
    head_dim = n_embd // n_head if n_head else 0
    tokens = field("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path, arch=arch, name=field("general.name"), file_type=_file_type_name(field("general.file_type")),
        size_bytes=size, n_layers=int(field(f"{arch}.block_count", 0)),
        n_ctx_train=field(f"{arch}.context_length"), n_embd=n_embd, n_head=n_head,
        n_head_kv=[int(h) for h in n_head_kv] if isinstance(n_head_kv, list) else int(n_head_kv),
        k_dim=int(field(f"{arch}.attention.key_length", head_dim)),
        v_dim=int(field(f"{arch}.attention.value_length", head_dim)),
        n_ff=max(n_ff) if isinstance(n_ff, list) else int(n_ff),
        n_vocab=int(field(f"{arch}.vocab_size", 0) or (tokens.length if isinstance(tokens, Skipped) else 0)),
        chat_template="tokenizer.chat_template" in header.fields,
        n_params=sum(math.prod(shape) for _, shape, _ in header.tensors),
        tied_embeddings=not any(name == "output.weight" for name, _, _ in header.tensors),
    )


def safetensors_numels(folder: Path) -> list[tuple[str, int]] | None:
    """(tensor name, element count) from the safetensors headers, without the tensors; None without such files.

    Raises ``AgentlabError`` naming the file when a header cannot be read (truncated or not safetensors)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    out: list[tuple[str, int]] = []
    for file in files:
        header = safetensors_header(file)
        try:
            out += [(key, math.prod(meta["shape"])) for key, meta in header.items() if key != "__metadata__"]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AgentlabError(f"{file}: not a readable safetensors file ({_plainly(exc)})",
                                hint="check the download or save the model again") from None
    return out


def safetensors_header(file: Path) -> dict[str, Any]:
    """A safetensors file's header (an 8-byte length, then JSON), checked to end within the file and to place its
    tensors' data within it (a download or copy cut short ends before them); ``AgentlabError`` naming the file
    otherwise. No tensor is read."""
    hint = "check the download or save the model again"
    try:
        size = file.stat().st_size  # a link whose target is gone (an HF cache missing a blob): named too
        with open(file, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length)) if length <= size - 8 else {}
        end = max((int(meta["data_offsets"][1]) for key, meta in header.items() if key != "__metadata__"), default=0)
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise AgentlabError(f"{file}: not a readable safetensors file ({_plainly(exc)})",
                            hint=hint) from None
    if 8 + length + end > size:
        what = "its header ends" if length > size - 8 else "its tensors end"
        raise AgentlabError(f"{file}: not a readable safetensors file (truncated: the file has {size} bytes, {what} "
                            f"at byte {8 + length + end})", hint=hint)
    return dict(header)


def hf_config(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A transformers folder's ``config.json`` and its text part (``text_config`` of multimodal models).
    ``AgentlabError`` when there is none, or it names no model type (``{}``: transformers could not load it)."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise AgentlabError(f"not a transformers model folder (no config.json): {folder}",
                            hint="make one with `agentlab models make-tiny DIR`, or point at a save_pretrained folder")
    config = _read_json(config_file)
    if not config.get("model_type") and not config.get("architectures"):  # `{}`: what transformers cannot load
        raise AgentlabError(f"{config_file}: names no model (no model_type or architectures)",
                            hint="save the model again with save_pretrained, or remove the folder")
    text_config = config.get("text_config") or config
    if not isinstance(text_config, dict):
        raise AgentlabError(f"{config_file}: text_config is not a JSON object", hint="check the model folder")
    return config, text_config


# The keys a config.json names a decoder's sizes by: Llama's spelling (transformers' own) first, then those of other
# families, as their config classes map them (GPT-2 / GPT-J: n_embd, n_layer, n_head, n_positions, n_inner; T5 / BART:
# d_model, num_layers, num_heads, d_ff; MPT: n_layers, n_heads, max_seq_len; OPT: ffn_dim; Falcon: num_kv_heads).
# Read with Llama's key alone, every other family's folder was a KeyError in the memory estimate.
HF_SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "n_embd": ("hidden_size", "n_embd", "d_model"),
    "n_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "n_head": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "n_head_kv": ("num_key_value_heads", "num_kv_heads", "n_head_kv"),
    "head_dim": ("head_dim",),
    "n_ff": ("intermediate_size", "n_inner", "ffn_dim", "d_ff"),
    "n_ctx_train": ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"),
    "n_vocab": ("vocab_size",),
}


def hf_sizes(folder: str | Path, config: dict[str, Any], text_config: dict[str, Any]) -> dict[str, int | None]:
    """The sizes of :data:`HF_SIZE_KEYS` from a folder's config (:func:`hf_config`), each under the first of its keys
    present (None where none is: the caller says what it cannot do without it). A value that is not a positive
    whole number (``"num_hidden_layers": "x"``) is ``AgentlabError`` naming the file and the key: transformers would
    fail on it deep inside the model's construction, and a table would show the string as a layer count."""
    where = Path(folder) / "config.json"
    prefix = "text_config." if text_config is not config else ""
    out: dict[str, int | None] = {}
    for size, keys in HF_SIZE_KEYS.items():
        key = next((k for k in keys if text_config.get(k) is not None), None)
        value = None if key is None else text_config[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise AgentlabError(f"{where}: {prefix}{key} is {json.dumps(value)}, not a positive whole number",
                                hint="fix that value in config.json, or save the model again with save_pretrained")
        out[size] = value
    if out["n_head_kv"] is None and text_config.get("multi_query") is True:  # Falcon's first configs: one KV head
        out["n_head_kv"] = 1
    return out


# What transformers' from_pretrained looks for: the weights (one file, or an index of shards) and a tokenizer's
# vocabulary (a fast tokenizer's tokenizer.json, a sentencepiece model, a BPE vocab.json, a WordPiece vocab.txt).
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
HF_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "spm.model",
                "sentencepiece.bpe.model", "vocab.txt", "tekken.json")


def check_hf_folder(folder: str | Path) -> None:
    """Check that a transformers folder holds what loading it needs, from file names and headers alone (no weights
    read): a config.json that names a model (:func:`hf_config`), weights (``HF_WEIGHTS``; an index's shards present),
    each ``*.safetensors`` file's header and tensor extent (:func:`safetensors_header`), and a tokenizer
    (``HF_TOKENIZER``). Without it a folder missing its tokenizer or weights fails deep inside transformers ("Couldn't
    instantiate the backend tokenizer", "no file named model.safetensors") after a run folder exists or an export was
    reported. ``AgentlabError`` naming the folder and what is missing."""
    folder = Path(folder)
    _check_model_type(folder / "config.json", hf_config(folder)[0])
    _check_hf_weights(folder)
    for file in sorted(folder.glob("*.safetensors")):
        safetensors_header(file)
    if not any((folder / name).is_file() for name in HF_TOKENIZER):
        raise AgentlabError(f"{folder}: no tokenizer (none of {', '.join(HF_TOKENIZER)})",
                            hint="copy the tokenizer files of the model it was saved from into the folder (or "
                            "tokenizer.save_pretrained(FOLDER))")


def _check_model_type(config_file: Path, config: dict[str, Any]) -> None:
    """``AgentlabError`` naming ``config_file`` and its ``model_type`` when that is not a model type the installed
    transformers knows, or not a string (transformers' own error came after the tokenizer loaded and a run folder
    existed). A config with ``auto_map`` (code of its own) or without ``model_type`` (transformers may match the
    folder by its name), or transformers not installed, is left to the load."""
    if "auto_map" in config or "model_type" not in config:
        return
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError:
        return
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        return
    import difflib

    import transformers

    near = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=1) \
        if isinstance(model_type, str) else []
    raise AgentlabError(f"{config_file}: model_type {json.dumps(model_type)} is not a model type transformers "
                        f"{transformers.__version__} knows",
                        hint=(f"did you mean \"{near[0]}\"? " if near else "") + "set model_type to the model's "
                        "family (llama, qwen2, ...) as save_pretrained writes it, or upgrade transformers")


def _check_hf_weights(folder: Path) -> None:
    """``AgentlabError`` unless ``folder`` holds weights (``HF_WEIGHTS``) and every shard its index names."""
    weights = [name for name in HF_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise AgentlabError(f"{folder}: no weights (none of {', '.join(HF_WEIGHTS)})",
                            hint="copy the model's weights into the folder, or save it again with save_pretrained")
    for index in (name for name in weights if name.endswith(".index.json")):
        weight_map = _read_json(folder / index).get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        missing = [shard for shard in shards if not (folder / str(shard)).is_file()]
        if not shards or missing:
            what = f"names weight files that are missing: {', '.join(missing[:3])}" if missing else \
                "lists no weight files (no weight_map)"
            raise AgentlabError(f"{folder / index}: {what}",
                                hint="copy every shard of the model, or save it again with save_pretrained")


def hf_info(folder: str | Path) -> HFInfo:
    """Architecture and sizes of a transformers model folder (``config.json`` + weights). ``AgentlabError`` for a
    folder without weights (a config.json alone is no model: listed as one it showed 0 B, and loading it fails) or
    with a size in config.json that is not a positive whole number (:func:`hf_sizes`); a size config.json does not
    give under any known key is None."""
    folder = Path(folder)
    config, text_config = hf_config(folder)
    numels = safetensors_numels(folder)  # first: a weights file that cannot be read is named (a link to nothing too)
    _check_hf_weights(folder)
    sizes = hf_sizes(folder, config, text_config)
    n_head, n_embd = sizes["n_head"], sizes["n_embd"]
    weights = [p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern)]
    return HFInfo(
        path=str(folder), arch=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
        dtype=config.get("dtype") or config.get("torch_dtype"), size_bytes=sum(p.stat().st_size for p in weights),
        n_params=sum(n for _, n in numels or []) or None,
        n_layers=sizes["n_layers"], n_ctx_train=sizes["n_ctx_train"], n_embd=n_embd, n_head=n_head,
        n_head_kv=sizes["n_head_kv"] or n_head,
        head_dim=sizes["head_dim"] or (n_embd // n_head if n_embd and n_head else None),
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


def model_shape(path: str | Path) -> tuple[Any, ...] | None:
    """What a model is, from its metadata alone (no weights read): architecture, layers, width, heads. The same
    model as a transformers folder, its GGUF or a copy has one shape; None when ``path`` cannot be read."""
    try:
        info: GGUFInfo | HFInfo = gguf_info(path) if Path(path).is_file() else hf_info(path)
    except AgentlabError:
        return None
    kv = tuple(info.n_head_kv) if isinstance(info.n_head_kv, list) else info.n_head_kv or info.n_head
    return info.arch.removesuffix("ForCausalLM").lower(), info.n_layers, info.n_embd, info.n_head, kv


def find_local_models(directory: str | Path,
                      unreadable: list[tuple[str, str]] | None = None) -> list[GGUFInfo | HFInfo]:
    """Every GGUF file and transformers folder under ``directory`` (recursively), sorted by path. Those that cannot
    be read (half-written, foreign, a ``.gguf`` link whose target is gone, a config.json without weights) are left
    out, and appended to ``unreadable`` (path, why) when given; a folder whose only weights are GGUF files is theirs,
    not a transformers folder. Hidden files and folders are skipped: a model being written
    (``make-tiny``'s ``.NAME.XXXX.partial``, ``export-hf``'s temporary folder) is not one yet."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found: list[GGUFInfo | HFInfo] = []
    for path in sorted(directory.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(directory).parts):
            continue
        try:
            if path.suffix == ".gguf" and path.is_symlink() and not path.exists():
                raise AgentlabError(f"{path}: a broken link (its target {os.readlink(path)} is missing)")
            if path.is_file() and path.suffix == ".gguf":
                found.append(gguf_info(path))
            elif path.is_dir() and (path / "config.json").is_file():
                if not any((path / name).is_file() for name in HF_WEIGHTS) and any(path.glob("*.gguf")):
                    continue  # a GGUF's folder beside the config.json of the model it came from: its GGUFs are listed
                found.append(hf_info(path))
        except AgentlabError as exc:  # a half-written or foreign file: `models list` names it apart
            if unreadable is not None:
                unreadable.append((str(path), exc.message))
    return found

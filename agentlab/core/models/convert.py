"""GGUF -> transformers folder, converted once and cached, so the transformers provider can run a GGUF model (the
built-in ``smollm2-135m`` among them).

transformers reads a GGUF with ``from_pretrained(folder, gguf_file=name)``; every load de-quantizes all tensors again
and converts the tokenizer (slow even for a small model: docs/design/measurements.md). ``gguf_to_hf`` does that once
and saves a plain float folder (safetensors + tokenizer + chat template) under ``$AGENTLAB_CACHE`` (default
``~/.cache/agentlab``)::

    hf-from-gguf/<file stem>-<key>/     key: the file's resolved path, size and mtime (a changed file re-converts)

The folder is written under a temporary name and renamed into place, and a file lock makes concurrent processes
wait for one conversion: a crash or a race never leaves a half-made folder where a complete one is expected.

transformers, torch and gguf are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, missing_package, one_line
from agentlab.core.files import ordinary_modes
from agentlab.core.models.builtin import cache_dir
from agentlab.core.models.modelfiles import read_gguf_header

log = logging.getLogger(__name__)

MARKER = "agentlab-gguf.json"  # written last into the temporary folder: a folder with it is complete
# bump _FORMAT when the conversion changes what it writes: old cache folders are then left alone
# (2: the GGUF's special tokens set where transformers' converter left them unset)
_FORMAT = 2
_conversions = 0


def conversion_count() -> int:
    """How many GGUF files this process converted (tests prove the cache is reused with it)."""
    return _conversions


def converted_folder(gguf: str | Path) -> Path:
    """Where the transformers folder of ``gguf`` is (or will be) cached."""
    path = Path(gguf).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{_FORMAT}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "hf-from-gguf" / f"{path.stem}-{key}"


def gguf_to_hf(gguf: str | Path) -> Path:
    """The transformers folder of the GGUF file ``gguf``: from the cache, else converted now (blocking; seconds to
    minutes) and cached. Raises ``AgentlabError`` naming the file when the conversion fails."""
    path = Path(gguf)
    if not path.is_file():
        raise AgentlabError(f"GGUF file not found: {path}", hint="check the path")
    target = converted_folder(path)
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f"{target.name}.lock"):
        if (target / MARKER).is_file():  # another process converted it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            start = time.perf_counter()
            _convert(path.resolve(), tmp)
            seconds = time.perf_counter() - start
            (tmp / MARKER).write_text(json.dumps({"source": str(path.resolve()), "seconds": round(seconds, 2),
                                                  "format": _FORMAT}) + "\n")
            ordinary_modes(tmp)  # mkdtemp and safetensors make theirs private; the cache folder is an ordinary one
            if target.exists():  # a folder without the marker: not ours to trust (renames are atomic, so rare)
                shutil.rmtree(target)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _drop_older_formats(path.resolve(), target)
    global _conversions
    _conversions += 1
    log.info("converted %s to a transformers folder %s in %.1fs", path, target, seconds)
    return target


def _drop_older_formats(source: Path, target: Path) -> None:
    """The conversions of ``source`` an older ``_FORMAT`` wrote: never read again (the format is in the key), each
    the size of the model, so they go once the new one is in place."""
    for folder in target.parent.glob(f"{source.stem}-*"):
        try:
            marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if folder != target and marker.get("source") == str(source) and marker.get("format", 1) < _FORMAT:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.with_name(folder.name + ".lock").unlink()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes, or by the kernel when we die
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert(path: Path, out: Path) -> None:
    """De-quantize ``path`` with transformers and save it, with its tokenizer, into ``out``."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    load: dict[str, Any] = {"gguf_file": path.name, "local_files_only": True}
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, **load)
            model: Any = AutoModelForCausalLM.from_pretrained(
                path.parent, quantization_config=GgufConfig(dequantize=True), **load)
            # save_pretrained refuses a model that carries the GGUF quantizer ("quantized with gguf and is not
            # serializable"); de-quantized, its weights are plain tensors, so the quantizer and its config go.
            model.hf_quantizer = None
            if getattr(model.config, "quantization_config", None) is not None:
                del model.config.quantization_config
            if not getattr(tokenizer, "chat_template", None):
                tokenizer.chat_template = gguf_chat_template(path)  # some tokenizer converters drop it
            _special_tokens(tokenizer, path)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    except Exception as exc:  # transformers raises many types for architectures or tokenizers it cannot read
        raise AgentlabError(f"{path}: transformers could not convert this GGUF ({one_line(exc)})",
                            hint="check that transformers supports its architecture (transformers' GGUF docs list "
                            "them), or run it on the llama_cpp backend instead") from exc


_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "pad_token": "padding_token_id",
                "unk_token": "unknown_token_id"}


def _special_tokens(tokenizer: Any, path: Path) -> None:
    """The special tokens the GGUF names by id (``tokenizer.ggml.eos_token_id``, ...) set on ``tokenizer`` where
    transformers' converter left them unset (it does for a ``gpt2``-model vocabulary on a llama architecture):
    without a pad token TRL refuses to train on the converted folder."""
    fields = read_gguf_header(path).fields
    size = len(tokenizer)
    for attr, key in _SPECIAL_IDS.items():
        token_id = fields.get(f"tokenizer.ggml.{key}")
        if getattr(tokenizer, attr, None) is None and isinstance(token_id, int) and 0 <= token_id < size:
            setattr(tokenizer, attr, tokenizer.convert_ids_to_tokens(token_id))


def gguf_chat_template(path: Path) -> str | None:
    """The chat template a GGUF file carries (``tokenizer.chat_template``), or None."""
    value = read_gguf_header(path).fields.get("tokenizer.chat_template")
    return str(value) if value else None


@contextlib.contextmanager
def quiet_transformers(logs: bool = True) -> Iterator[None]:
    """No progress bars from transformers on the user's terminal (the CLI draws its own); with ``logs``, no info or
    warning logs either (used while converting, where failures raise anyway)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if logs:
        hf_logging.set_verbosity_error()
    try:
        with _quiet_gguf_tqdm():
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_gguf_tqdm() -> Iterator[None]:
    # transformers' GGUF de-quantizer calls tqdm directly, past its own progress-bar switch.
    import importlib

    module: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = getattr(module, "tqdm", None)
    if original is None:
        yield
        return
    module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original

"""``agentlab train-persona export``: merge a persona's LoRA adapter into its base model and write one GGUF file, so
the persona runs on llama.cpp (``agentlab pipeline``, ``llm-bench``, ``serve``) without PEFT or transformers.

The merge runs in float32 with PEFT's ``merge_and_unload``; the merged model goes to a temporary transformers folder,
then through ``core/models/gguf_export`` (the same writer as the tiny test models) and, if asked, llama.cpp's
quantizer. torch, transformers, peft, gguf and llama_cpp are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError, missing_package
from agentlab.core.files import cannot_write, nearest_existing, ordinary_mode
from agentlab.core.models import gguf_export
from agentlab.core.models.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_lora_rank,
    read_lora,
    warn_other_base,
)
from agentlab.core.models.builtin import BUILTIN_MODELS
from agentlab.core.models.convert import gguf_to_hf, quiet_transformers
from agentlab.core.models.gguf_export import ARCHITECTURES, gguf_architecture
from agentlab.core.models.load import put_adapter
from agentlab.core.models.modelfiles import gguf_info, hf_config
from agentlab.core.models.modelref import ModelNotFound, is_gguf_file, resolve_model
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.search.records import worker_alive

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ExportBase:
    """The base model an adapter is merged into: the transformers folder to load, and where the GGUF's tokenizer
    comes from (the original GGUF for a GGUF base, so its tokenizer keys are copied exactly; else the folder)."""

    ref: str
    hf_dir: Path
    tokenizer_from: Path
    description: str


def export_gguf(adapter_dir: str | Path, out: str | Path, *, base_model: str | None = None,
                quantize: str | None = None, dtype: str = "f16", force: bool = False,
                progress: Progress | None = None) -> Path:
    """Merge the PEFT adapter in ``adapter_dir`` into its base model and write the result to the GGUF file ``out``.

    - ``adapter_dir``: a PEFT folder (``adapter_config.json`` + ``adapter_model.safetensors``), e.g. one written by
      ``agentlab train-persona``.
    - ``base_model``: the model the adapter was trained on; default the adapter config's ``base_model_name_or_path``.
      Either is resolved like every model reference (``core.models.modelref``): a built-in name (``smollm2-135m``), a
      GGUF file (de-quantized once through ``convert.gguf_to_hf``; its tokenizer keys are copied into ``out``), a
      transformers folder, or a hub id already in the local hub cache. Llama and Qwen2 architectures are supported.
    - ``dtype``: "f16" (2-D weights in float16, norms in float32) or "f32". ``quantize``: a llama.cpp kind from
      ``gguf_export.QUANT_KINDS`` (e.g. "q8_0"), applied to the ``dtype`` file, which is then removed.
    - ``out`` is written under a temporary name beside it and renamed into place, so it is either complete or
      absent; an existing ``out`` is refused unless ``force``. The merged float32 model passes through a temporary
      folder (~4 bytes per parameter) that is removed afterwards.
    - ``progress`` gets the tasks "merging adapter", "writing GGUF" and, with ``quantize``, "quantizing KIND".

    Returns ``out``. Raises ``InputError`` (exit 2) for a missing or non-PEFT adapter folder, a base that cannot be
    found (naming every reading tried), an unsupported architecture, a bad dtype/quantize or an existing ``out``;
    ``InputError`` too when the adapter does not fit the base or its weights are damaged; ``MissingPackage`` naming
    the extra to install.
    """
    if not str(adapter_dir).strip():  # Path('') is '.', the current folder
        raise InputError("the adapter folder argument is empty; give the folder of the adapter to export",
                         hint="e.g. agentlab train-persona export adapters/persona_a --gguf models/persona_a.gguf")
    example = f"{Path(adapter_dir).name or 'adapter'}.gguf"
    if not str(out):  # Path('') is '.', the current folder
        raise InputError("--gguf is empty; give a file path", hint=f"e.g. --gguf {example}")
    last = str(out).replace(os.sep, "/").rsplit("/", 1)[-1]  # Path() drops a trailing / or ., then wrote out/n
    if last in ("", ".", ".."):
        raise InputError(f"{out}: ends with '{last or '/'}', a folder; the export writes one GGUF file",
                         hint=f"give a file path, e.g. {os.path.join(os.path.normpath(out), example)}")
    adapter, out = Path(adapter_dir), Path(out)
    if dtype not in gguf_export.GGUF_DTYPES:
        raise InputError(f"unsupported GGUF dtype '{dtype}'", hint=f"use one of: {', '.join(gguf_export.GGUF_DTYPES)}")
    if quantize is not None and quantize.lower() not in gguf_export.QUANT_KINDS:  # any case, e.g. Q8_0
        raise InputError(f"unknown quantization '{quantize}'",
                         hint=f"use one of: {', '.join(gguf_export.QUANT_KINDS)}")
    quantize = quantize.lower() if quantize is not None else None
    _check_out(out, force)
    adapter_config = read_lora(adapter, "merged and exported to GGUF")
    check_lora_rank(adapter, adapter_config)
    progress = progress or NullProgress()
    timings: dict[str, float] = {}
    written: list[Path] = []
    created: list[Path] = []  # folders made for ``out``: removed again if the export fails
    done = False
    try:
        check_finite_weights(adapter)
        base = resolve_base(adapter, adapter_config, base_model)
        with tempfile.TemporaryDirectory(prefix="agentlab-merge-") as tmp:
            start = time.perf_counter()
            merged = merge_adapter(adapter, base, Path(tmp) / "merged", progress)
            if base_model:  # once it has loaded: one whose layers do not fit is refused with no warning before
                warn_other_base(adapter, adapter_config, base_model)
            timings["merge"] = time.perf_counter() - start
            start = time.perf_counter()
            created = _make_parents(out)  # only now: bad input above leaves no empty folder behind
            written.append(_temp_beside(out))
            gguf_export.export_gguf(merged, written[-1], dtype, tokenizer_from=base.tokenizer_from,
                                    name=f"{Path(base.ref).name} + {adapter.resolve().name}", progress=progress)
            timings["write"] = time.perf_counter() - start
        if quantize is not None:
            start = time.perf_counter()
            task = progress.task(f"quantizing {quantize}", total=1)
            written.append(_temp_beside(out))
            gguf_export.quantize_gguf(written[-2], written[-1], quantize)
            task.advance()
            timings["quantize"] = time.perf_counter() - start
        _check_out(out, force)  # it may have appeared while we worked
        os.replace(written[-1], out)
        done = True
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    finally:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not done:
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty
    log.info("exported %s on %s to %s (%s)", adapter, base.description, out,
             ", ".join(f"{step} {seconds:.1f}s" for step, seconds in timings.items()))
    return out


def check_finite_weights(adapter: Path) -> None:
    """Refuse (``InputError``, exit 2, naming the file) an adapter whose weights hold NaN or inf, before any model
    loads: a training run that diverged saved such an adapter, and its GGUF answered nothing but NaN."""
    import torch

    weights = next((adapter / name for name in ADAPTER_WEIGHTS if (adapter / name).is_file()), None)
    if weights is None:  # read_lora refused a folder without weights
        return
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    else:
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    broken = [key for key, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise InputError(f"{weights}: {len(broken)} of its {len(tensors)} tensors hold NaN or inf (e.g. {broken[0]}): "
                         "the training run that made it diverged; nothing was written",
                         hint="train the adapter again with a lower learning rate (--lr)")


def resolve_base(adapter: Path, adapter_config: dict[str, Any], base_model: str | None) -> ExportBase:
    """The base to merge into: ``base_model`` if given, else the adapter's ``base_model_name_or_path``, resolved by
    ``resolve_model`` (relative paths from the current folder); a GGUF is de-quantized (cached) first."""
    ref = base_model or adapter_config.get("base_model_name_or_path")
    source = "" if base_model else f" (from {ADAPTER_CONFIG})"
    hint = ("pass the base model the adapter was trained on (--base-model NAME_OR_PATH, e.g. "
            f"{', '.join(BUILTIN_MODELS)})")
    if not ref or not isinstance(ref, str):
        raise InputError(f"{adapter}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path)", hint=hint)
    try:
        found = resolve_model(ref, user="the GGUF export")
    except ModelNotFound as exc:
        # resolve_model says "model 'REF' not found; tried ..."
        raise InputError(f"{adapter}: base model{source} {exc.message.removeprefix('model ')}", hint=hint) from None
    description = found.describe()
    if found.format == "gguf":
        arch = gguf_info(found.path).arch
        if arch not in ARCHITECTURES.values():
            raise InputError(f"{description}: cannot export architecture '{arch}' to GGUF "
                             f"(supported: {', '.join(ARCHITECTURES.values())})",
                             hint="use llama.cpp's convert_hf_to_gguf.py and convert_lora_to_gguf.py")
        return ExportBase(ref, gguf_to_hf(found.path), found.path, description)
    try:
        gguf_architecture(hf_config(found.path)[0], description)
    except AgentlabError as exc:
        raise InputError(exc.message, hint=exc.hint) from None
    return ExportBase(ref, found.path, found.path, description)


def merge_adapter(adapter: Path, base: ExportBase, out_dir: Path, progress: Progress) -> Path:
    """Load ``base`` in float32, apply the adapter, ``merge_and_unload`` and ``save_pretrained`` into ``out_dir``."""
    import functools

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    task = progress.task("merging adapter", total=3)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(base.hf_dir, dtype=torch.float32)
        task.advance()
        try:
            # one line, exit 2, for an adapter that does not fit (PEFT's errors) or lacks weights (its warning)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                peft_model = put_adapter(functools.partial(PeftModel.from_pretrained, model, str(adapter)), adapter,
                                         adapter.name, base.description)
            for caught_warning in caught:
                log.debug("while loading the adapter: %s", caught_warning.message)
        except AgentlabError as error:
            weights = "weights cannot be read" in error.message or "weights file lacks" in error.message
            hint = error.hint if weights or error.hint is None else f"{error.hint} (choose the base with --base-model)"
            raise type(error)(error.message, hint=hint) from None
        merged = peft_model.merge_and_unload()
        task.advance()
        merged.save_pretrained(out_dir)
        task.advance()
    return out_dir


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise InputError(f"{out}: is a folder; the export writes one GGUF file", hint="give a file path, e.g. OUT.gguf")
    if out.exists() and not force:
        raise InputError(f"{out}: already exists", hint="choose another path, or pass --force to replace it")
    if out.exists() and not is_gguf_file(out):  # --force replaces an earlier export, never a user's other file
        raise InputError(f"--gguf {out}: already exists and is not a GGUF file; nothing was written",
                         hint="--force replaces only a GGUF file: choose another --gguf")
    # Checked, not made: the folder is created once the inputs have proved good (_make_parents).
    ancestor = nearest_existing(out.parent)
    if not ancestor.is_dir():
        raise InputError(f"{out.parent}: cannot create the folder ({ancestor} is a file)",
                         hint="give a path under a folder, e.g. models/NAME.gguf")
    unwritable = cannot_write(ancestor)  # tried, not asked: root passes os.access on /proc or a read-only disk
    if unwritable is not None:
        raise InputError(f"--gguf {out}: cannot write in {unwritable[0]} ({unwritable[1]}); nothing was written",
                         hint="give --gguf a path in a folder you can write to")


def _make_parents(out: Path) -> list[Path]:
    """Create ``out``'s missing folders; returns those it made, outermost first."""
    missing = [folder for folder in [out.parent, *out.parent.parents] if not folder.exists()][::-1]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out.parent}: cannot create the folder ({exc.strerror or exc})") from None
    return missing


def _temp_beside(out: Path) -> Path:
    # Beside ``out`` (same filesystem), so the final rename is atomic; hidden, and removed on any failure. Named by
    # this process, so that the next export removes what a killed one (kill -9) left: up to the model's size.
    host = socket.gethostname()
    for stale in out.parent.glob(f".{glob.escape(out.name)}.{glob.escape(host)}-*.tmp"):
        pid = stale.name[len(f".{out.name}.{host}-"):].split(".")[0]
        if pid.isdigit() and not worker_alive(f"{host}:{pid}"):  # gone (a PID reused since by another program too)
            stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.{host}-{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    ordinary_mode(name, replacing=out)
    return Path(name)

"""Device, dtype, seeding and 4-bit quantization: the settings every command that loads or trains a torch model shares.

Flat functions from plain settings to library objects, in the style of TRL's ``trl/trainer/utils.py``
(``get_quantization_config``). torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

from agentlab.core.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
FourBit = bool | Literal["auto"]
CPU_NOTICE = "no CUDA GPU: plain LoRA on float32 weights instead of 4-bit QLoRA (bitsandbytes needs CUDA)"


def resolve_device_dtype(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", *,
                         load_in_4bit: bool = False, what: str = "device") -> tuple[torch.device, torch.dtype]:
    """The torch device and dtype for ``device`` / ``dtype`` settings.

    ``device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. ``dtype``: ``auto``
    (bfloat16 on CUDA, float16 on a GPU without bfloat16, float32 on CPU), ``float32``, ``bfloat16``, ``float16``
    (or ``fp32``/``bf16``/``fp16``). ``load_in_4bit=True`` also checks that the device is CUDA (bitsandbytes' 4-bit
    kernels). ``what`` names the setting in errors (``train.device``). Raises ``ConfigError`` with the next step.
    """
    import torch

    cuda = torch.cuda.is_available()
    name = str(device)
    if name == "auto":
        dev = torch.device("cuda" if cuda else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"{what}: unknown device {name!r}", hint=f"set {what} to auto, cpu or cuda") from None
    if dev.type == "cuda" and not cuda:
        raise ConfigError(f"{what} is {name} but CUDA is not available",
                          hint=f"set {what} to auto or cpu, or install a CUDA build of torch")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what}: device {name!r} is not supported", hint=f"set {what} to auto, cpu or cuda")
    if load_in_4bit:
        _check_4bit(dev)
    return dev, _dtype(dtype, dev)


def _dtype(dtype: str | torch.dtype, dev: torch.device) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _ALIASES.get(str(dtype), str(dtype))
    if name == "auto":
        if dev.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise ConfigError(f"dtype: unknown dtype {dtype!r}", hint=f"use auto or one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def _check_4bit(dev: torch.device) -> None:
    if dev.type != "cuda":
        raise ConfigError(f"bitsandbytes quantization (load_in_4bit / load_in_8bit) needs CUDA, but the device is "
                          f"{dev.type}", hint="set load_in_4bit: false (plain float weights), or run on a CUDA GPU")


def wants_4bit(load_in_4bit: FourBit, device: str | torch.device = "auto") -> bool:
    """Whether ``load_in_4bit`` (True, False or ``auto``: 4-bit exactly when the device is CUDA) means 4-bit here.
    ``auto`` on a CPU logs :data:`CPU_NOTICE` once (info: -v); True on a CPU is a ``ConfigError``."""
    dev, _ = resolve_device_dtype(device, "float32", load_in_4bit=load_in_4bit is True)
    if load_in_4bit == "auto":
        if dev.type != "cuda":
            log.info(CPU_NOTICE)
        return dev.type == "cuda"
    return bool(load_in_4bit)


# Loggers that speak at import time about optional kernels a CPU run never needs: bitsandbytes on CPUs with
# AVX512-BF16 (the optional ``kernels`` package), torchao (its CUDA-only .so files, no triton) and torch's pytree
# (an Enum deprecation torchao triggers). A screen of lines on every run that ask nothing of the user.
NOISY_IMPORT_LOGGERS = ("bitsandbytes.backends.cpu.ops", "torchao", "torch.utils._pytree")


def quiet_imports() -> None:
    """Silence the import-time warnings of ``NOISY_IMPORT_LOGGERS``, and transformers' note on a resume that
    checkpoint folders written within a second of each other are ordered by step (:class:`_MtimeNote`). Call it
    before importing transformers' trainer, peft, trl or torchao (peft imports torchao when it is installed)."""
    for name in NOISY_IMPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    logger = logging.getLogger(_MTIME_LOGGER)
    if not any(isinstance(f, _MtimeNote) for f in logger.filters):
        logger.addFilter(_MtimeNote())


# transformers' Trainer sorts checkpoint-N folders by mtime, and when the newest and oldest differ by under a second
# (a tiny model saves fast) it says "mtime may not be reliable on this filesystem, falling back to numerical
# ordering" and orders them by N: the right order, and nothing about the filesystem. Only that message is dropped.
_MTIME_LOGGER = "transformers.trainer_utils"


class _MtimeNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("mtime may not be reliable on this filesystem")


@contextlib.contextmanager
def quiet_library_warnings() -> Iterator[None]:
    """Hide deprecation warnings that one library raises about its use of another (peft reading transformers'
    ``is_gradient_checkpointing``): nothing a user of agentlab can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy and torch (every device) with ``seed``."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    import torch

    torch.manual_seed(seed)  # seeds every CUDA device too


def quantization_config(*, load_in_4bit: FourBit = True, device: str | torch.device = "auto",
                        quant_type: str = "nf4", double_quant: bool = True,
                        compute_dtype: str | torch.dtype = "auto") -> BitsAndBytesConfig | None:
    """The bitsandbytes 4-bit config of QLoRA (Dettmers et al. 2023): NF4 weights, double quantization (the
    quantization constants quantized too), matmuls in ``compute_dtype`` (``auto``: bfloat16, float16 on a GPU
    without it). None when ``load_in_4bit`` is False, or ``auto`` on a CPU (with a one-line warning); True on a
    CPU is a ``ConfigError`` (bitsandbytes' 4-bit kernels need CUDA)."""
    if not wants_4bit(load_in_4bit, device):
        return None
    from transformers import BitsAndBytesConfig

    _, compute = resolve_device_dtype("cuda", compute_dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=compute)


def int8_config() -> BitsAndBytesConfig:
    """bitsandbytes' 8-bit config (LLM.int8(), Dettmers et al. 2022: int8 weights, outlier features kept in 16 bit).
    CUDA only: callers check the device first."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=True)


def cuda_index(dev: torch.device) -> int:
    """The GPU a process should load onto: the device's own index, else the local rank under ``accelerate launch`` /
    ``torchrun`` (one GPU per process), else the current device."""
    import torch

    if dev.index is not None:
        return dev.index
    local_rank = os.environ.get("LOCAL_RANK")
    return int(local_rank) if local_rank is not None else torch.cuda.current_device()


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")

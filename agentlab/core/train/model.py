"""LoRA configs for training: :func:`lora_config`, shared by ``train-persona``, ``compress``'s recovery and the
benchmarks. Loading a model is ``core/models/load.py``.

peft is imported inside the function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from agentlab.core.models.device import quiet_imports

__all__ = ["lora_config"]


def lora_config(*, r: int = 16, alpha: int | None = None, dropout: float = 0.05,
                target_modules: str | Sequence[str] = "all-linear", bias: Literal["none", "all", "lora_only"] = "none",
                modules_to_save: Sequence[str] | None = None, use_rslora: bool = False,
                use_dora: bool = False) -> Any:
    """A PEFT ``LoraConfig`` for a causal LM: rank ``r``, scale ``alpha`` (default ``2 * r``), ``dropout`` on the
    adapter input, ``target_modules`` (``all-linear``: every linear layer but the output head, as in QLoRA; or
    module names such as ``["q_proj", "v_proj"]``). ``modules_to_save``: modules trained in full and saved with
    the adapter (e.g. ``["lm_head"]`` after adding tokens)."""
    quiet_imports()
    from peft import LoraConfig

    targets: str | list[str] = target_modules if isinstance(target_modules, str) else list(target_modules)
    return LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                      lora_dropout=dropout, target_modules=targets, bias=bias,
                      modules_to_save=list(modules_to_save) if modules_to_save else None,
                      use_rslora=use_rslora, use_dora=use_dora)

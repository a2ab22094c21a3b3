"""LoRA configs for training: :func:`lora_config`, shared by ``train-persona``, ``compress``'s recovery and the
benchmarks, and :func:`check_target_modules`, which checks the module names of one against a model. Loading a model
is ``core/models/load.py``.

peft is imported inside the function.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal

from agentlab.core.errors import ConfigError
from agentlab.core.models.device import quiet_imports

__all__ = ["check_target_modules", "lora_config"]


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


def check_target_modules(model: Any, target_modules: str | Collection[str] | None) -> None:
    """Each module name in a LoRA config's ``target_modules`` list must name a module of ``model`` (PEFT stops only
    when none does, and trains the others alone otherwise); ``ConfigError`` naming those that do not, with the
    model's linear layers. A string (``all-linear``, a regex) is PEFT's to match. ``model`` may be a loaded model or
    one built on the meta device (``train-persona`` checks before any weights load, the trainer builder again)."""
    if target_modules is None or isinstance(target_modules, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__.startswith("Linear")})
        named = ", ".join(repr(t) for t in sorted(missing))
        raise ConfigError(f"LoRA target_modules: {named} name{'s' if len(missing) == 1 else ''} no module of the model",
                          hint=f"the model's linear layers: {', '.join(linear)}; or all-linear (each of them but the "
                          "output head)")

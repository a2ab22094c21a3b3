"""Flat builders over torch / transformers / peft / trl, shared by every command that loads or trains a model.

- :func:`resolve_device_dtype`, :func:`seed_everything`, :func:`quantization_config`, :func:`load_causal_lm` (base +
  optional 4-bit + optional adapters), :func:`hf_model_folder`: re-exported from ``agentlab.core.models``, where
  model loading lives (used by the providers of ``core/llm`` too)
- :func:`lora_config` (``model.py``)
- :func:`build_sft_trainer` over TRL's ``SFTTrainer`` (its hyperparameters in one :class:`SFTSettings`),
  :class:`LossSummary`, :func:`last_checkpoint`, :func:`resume_training` (``sft.py``)
- :class:`ProgressCallback`: a ``TrainerCallback`` reporting to agentlab's ``Progress`` (``callbacks.py``)
- :func:`training_chat_template`: chat templates that mark assistant turns (``chat.py``)
- :func:`share`, :func:`world_size`, :func:`is_main`, :class:`FollowerRun`: one run folder for every process of
  ``accelerate launch`` / ``torchrun`` (``dist.py``)
- :func:`blend_adapters`, :func:`read_parent`, :class:`BlendResult`: exact LoRA blends (``blend.py``)
- tiny local models for tests and demos (``tiny.py``)

GGUF <-> transformers conversion, adapter folders and the fused multi-LoRA forward are in ``agentlab.core.models``.

Names are imported on first use, so ``import agentlab.core.train`` stays cheap (no torch): the CLI's ``--help``
must not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentlab.core.models.device import quantization_config, resolve_device_dtype, seed_everything, wants_4bit
    from agentlab.core.models.load import hf_model_folder, load_causal_lm
    from agentlab.core.train.blend import BlendResult, blend_adapters, read_parent
    from agentlab.core.train.callbacks import ProgressCallback
    from agentlab.core.train.chat import TrainingTemplate, training_chat_template
    from agentlab.core.train.dist import FollowerRun, is_main, share, world_size
    from agentlab.core.train.model import lora_config
    from agentlab.core.train.sft import LossSummary, SFTSettings, build_sft_trainer, last_checkpoint, resume_training

_EXPORTS = {
    "resolve_device_dtype": "agentlab.core.models.device", "seed_everything": "agentlab.core.models.device",
    "quantization_config": "agentlab.core.models.device", "wants_4bit": "agentlab.core.models.device",
    "load_causal_lm": "agentlab.core.models.load", "hf_model_folder": "agentlab.core.models.load",
    "lora_config": f"{__name__}.model",
    "build_sft_trainer": f"{__name__}.sft", "LossSummary": f"{__name__}.sft", "last_checkpoint": f"{__name__}.sft",
    "SFTSettings": f"{__name__}.sft", "resume_training": f"{__name__}.sft",
    "ProgressCallback": f"{__name__}.callbacks",
    "share": f"{__name__}.dist", "world_size": f"{__name__}.dist", "is_main": f"{__name__}.dist",
    "FollowerRun": f"{__name__}.dist",
    "training_chat_template": f"{__name__}.chat", "TrainingTemplate": f"{__name__}.chat",
    "blend_adapters": f"{__name__}.blend", "read_parent": f"{__name__}.blend", "BlendResult": f"{__name__}.blend",
}
__all__ = ["BlendResult", "FollowerRun", "LossSummary", "ProgressCallback", "SFTSettings", "TrainingTemplate",
           "blend_adapters", "build_sft_trainer", "hf_model_folder", "is_main", "last_checkpoint", "load_causal_lm",
           "lora_config", "quantization_config", "read_parent", "resolve_device_dtype", "resume_training",
           "seed_everything", "share", "training_chat_template", "wants_4bit", "world_size"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

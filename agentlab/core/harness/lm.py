"""One model loaded once, handed to lm-eval's HF backend with its PEFT adapters switched in place.

lm-eval's ``HFLM(pretrained=<model object>, peft=...)`` ignores ``peft`` without a word (0.4.13: log-likelihoods
equal to the base's), and lm-eval has had silent no-op adapter loads before (its issues #808, #511). So agentlab
loads the base and every adapter itself (:func:`agentlab.core.models.load.load_causal_lm`: a built-in or GGUF is
de-quantized once and cached, no hub lookup), gives ``HFLM`` the ``PeftModel`` itself, and switches adapters with
``set_adapter`` / ``disable_adapter`` between evaluations. Each adapter must change the next-token logits on a probe
before it is scored (:meth:`HarnessModel.probe`); after scoring, its per-sample log-likelihoods must differ from the
base's (:func:`agentlab.core.harness.evaluate.check_applied`).

torch, transformers, peft and lm_eval are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import AgentlabError, InputError, missing_package
from agentlab.core.harness.evaluate import evaluate_row, logliks_of
from agentlab.core.harness.tasks import go_offline
from agentlab.core.models.adapters import read_scored
from agentlab.core.models.load import adapter_logit_changes, check_model_files, load_causal_lm

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from agentlab.core.harness.evaluate import Settings

log = logging.getLogger(__name__)

BASE = "base"  # the row of the model without adapters


@dataclass
class HarnessModel:
    """A loaded model (a ``PeftModel`` when it has adapters), its tokenizer and lm-eval's ``HFLM`` over them."""

    ref: str
    model: Any
    tokenizer: Any
    lm: Any
    adapters: dict[str, Path] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # lm-eval requests answered, by type

    @contextlib.contextmanager
    def active(self, adapter: str | None) -> Iterator[None]:
        """The model as ``adapter`` (None: the base, every adapter disabled) for the block."""
        if adapter is not None and adapter not in self.adapters:
            raise AgentlabError(f"no adapter '{adapter}' loaded (loaded: {', '.join(self.adapters) or 'none'})")
        if not self.adapters:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    def probe(self, prompt: str) -> dict[str, float]:
        """Each adapter's largest absolute change to the next-token logits after ``prompt`` (a chat turn)."""
        if not self.adapters:
            return {}
        return adapter_logit_changes(self.model, self.tokenizer, list(self.adapters), prompt)

    def loglikelihoods(self, pairs: Sequence[tuple[str, str]], adapter: str | None) -> list[float]:
        """log P(continuation | context) of each ``(context, continuation)`` under ``adapter`` (None: the base),
        through lm-eval's own ``loglikelihood``."""
        from lm_eval.api.instance import Instance

        if not pairs:
            return []
        requests = [Instance("loglikelihood", {}, (context, continuation), i) for i, (context, continuation)
                    in enumerate(pairs)]
        with self.active(adapter):
            return [float(ll) for ll, _ in self.lm.loglikelihood(requests)]

    def evaluate(self, adapter: str | None, tasks: Sequence[str], manager: TaskManager, settings: Settings
                 ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        """lm-eval's ``(results, samples)`` of ``tasks`` as ``adapter`` (:func:`~.evaluate.evaluate_row`)."""
        return evaluate_row(self, adapter, tasks, manager, settings)

    def logliks(self, samples: dict[str, list[dict[str, Any]]], adapter: str | None) -> dict[str, list[float]]:
        """Per task, the per-sample log-likelihoods of a row (:func:`~.evaluate.logliks_of`)."""
        return logliks_of(self, samples, adapter)

    def uses_chat_template(self, setting: bool | str) -> bool:
        """``setting`` True / False, or ``auto``: whether the tokenizer has a chat template."""
        if setting == "auto":
            return bool(getattr(self.tokenizer, "chat_template", None))
        return bool(setting)


def load_harness_model(ref: str, adapters: Mapping[str, str | Path] | None = None, *, device: str = "auto",
                       dtype: str = "auto", batch_size: int = 8, max_length: int | None = None,
                       on_requests: Callable[[str, int], None] | None = None) -> HarnessModel:
    """Load ``ref`` (a built-in name, a GGUF file, a transformers folder, a cached hub id) and ``adapters`` (name ->
    PEFT folder) once, in eval mode, and wrap them in lm-eval's ``HFLM``. ``on_requests(kind, n)`` is told each batch
    of requests lm-eval sends (``loglikelihood``, ``generate_until``, ...), instead of lm-eval's own progress bars.
    ``InputError`` for an adapter folder that is not a PEFT adapter, or a damaged model (:func:`check_model_files`)."""
    go_offline()
    folders = {name: Path(path) for name, path in (adapters or {}).items()}
    read_scored(folders.values())
    check_model_files(ref, user="lm-eval")
    model, tokenizer = load_causal_lm(ref, device=device, dtype=dtype, adapters=folders or None)
    return wrap_model(model, tokenizer, ref=ref, adapters=folders, batch_size=batch_size, max_length=max_length,
                      on_requests=on_requests)


def wrap_model(model: Any, tokenizer: Any, *, ref: str = "model", adapters: Mapping[str, Path] | None = None,
               batch_size: int = 8, max_length: int | None = None,
               on_requests: Callable[[str, int], None] | None = None) -> HarnessModel:
    """A model already in memory (a ``PeftModel`` holding ``adapters``, or a plain one: a compressed model, say)
    wrapped for lm-eval, in eval mode."""
    model.eval()
    hm = HarnessModel(ref, model, tokenizer, None, dict(adapters or {}))

    def told(kind: str, n: int) -> None:
        hm.requests[kind] = hm.requests.get(kind, 0) + n
        if on_requests is not None:
            on_requests(kind, n)

    hm.lm = _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                        on_requests=told)
    return hm


@functools.cache
def _lm_class() -> type:
    """lm-eval's ``HFLM`` that reports its requests to agentlab instead of drawing tqdm bars over the CLI's."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise missing_package(exc) or exc from None

    class AgentlabHFLM(HFLM):
        def __init__(self, *args: Any, on_requests: Callable[[str, int], None] | None = None, **kwargs: Any):
            with _quiet_lm_eval():
                super().__init__(*args, **kwargs)
            self._on_requests = on_requests or (lambda kind, n: None)

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self._on_requests("loglikelihood", len(requests))
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self._on_requests("loglikelihood_rolling", len(requests))
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self._on_requests("generate_until", len(requests))
            return super().generate_until(requests, disable_tqdm=True)

    return AgentlabHFLM


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval's warning that a model object was passed (agentlab does so on purpose) kept off the terminal."""
    logger = logging.getLogger("lm_eval.models.huggingface")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_probe(changes: Mapping[str, float], min_change: float, paths: Mapping[str, Path]) -> None:
    """``InputError`` (exit 2) naming every adapter whose largest logit change on the probe is below
    ``min_change``: it changes nothing, so it must not get a score."""
    dead = {name: change for name, change in changes.items() if change < min_change}
    if dead:
        lines = "; ".join(f"{name} ({paths[name]}): largest logit change {change:.3g}" for name, change in dead.items())
        raise InputError(f"adapter changes nothing on the probe, so it is not scored: {lines} (below "
                         f"min_logit_change {min_change:g})",
                         hint="check that the adapter was trained (a LoRA's lora_B weights are not all zero) and on "
                         "this base model; only if the adapter is meant to be tiny, lower min_logit_change "
                         "(`agentlab eval`: --set min_logit_change=1e-6; `train-persona --eval`: "
                         "--set eval.min_logit_change=1e-6)")

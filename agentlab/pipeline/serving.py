"""Serving one model slot of a stage: the router's retries, an out-of-memory retry on smaller settings, fallbacks.

A slot (a single stage's model, each model of a multi stage, a synthesis aggregator) is asked of its model, then of
the stage's ``fallbacks`` in order. Each model goes through ``Router.try_model``, so the routing rules apply as to
any routed call: retryable failures (timeout, connection, HTTP 5xx / 429, an empty reply) are retried up to the
models file's ``retries`` (a routed model: under the routing config's ``timeout_s`` and ``retries``); the others (a
file that is not a GGUF, a model over the memory budget, auth) move on at once. A model that ran out of memory
(``core/llm/oom.py``: CUDA, Metal or host, as llama.cpp or torch report it) is unloaded and asked once more on
smaller settings (``smaller``) before the next model; those settings stay for the rest of the run. Every attempt is
recorded (``serving`` in the step file); a slot no model serves raises ``StageFailed``, which names the stage.

A model named more than once in a multi stage is sampled apart: its k-th repeat (from 0) is sent seed + k
(``repeat_params``), so a vote over one model's repeats counts several samples, not one answer k times.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field, replace
from typing import Any

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.oom import OOM_KIND, on_gpu, oom_memory
from agentlab.core.llm.results import CallState
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import Completion, GenParams, Messages, Provider
from agentlab.core.runs import RunDir
from agentlab.pipeline.config import ModelsConfig, ModelSettings
from agentlab.pipeline.models import LOCAL_PREFIX, local_provider
from agentlab.pipeline.sessions import session_ref

MIN_CTX, MIN_BATCH = 128, 32


class StageFailed(LLMError):
    """No model could serve a stage: the run stops there (the steps before it are kept)."""

    def __init__(self, stage: str, message: str, kind: str, serving: list[dict[str, Any]], hint: str | None = None,
                 routed: bool = False):
        super().__init__(message, kind, hint=hint)
        self.stage = stage
        self.serving = serving
        self.routed = routed  # every model asked is routed (HTTP): the fix is in the routing config or its server


def failed_hint(session: str, stage: str, position: int | None = None, *, kept: bool = True,
                routed: bool = False) -> str:
    """What to do about a stage no model served (said by `pipeline run` and `pipeline show`); ``session`` as a command
    line names it (``sessions.session_ref``); ``position``: the stage's place in ``base_pipeline.stages`` (from 0, as
    ``--set`` counts; not the step number, which follows the run's order); ``kept``: whether a stage before it
    finished; ``routed``: every model asked is routed. A rerun reads the session's saved models.yaml and llm.yaml: a
    model fixed in the models file is run by naming that file (``--models FILE``), a routed model's provider fixed in
    the routing config by naming that one (``--llm FILE``; a routed model's failure, a connection refused, a timeout,
    an HTTP error, is its server's or its provider's, not the models file's)."""
    rerun = f"agentlab pipeline rerun {session} --from {stage}"
    fix = (f"start the model's server, or fix its provider (base_url, key) or model in your routing config, then "
           f"`{rerun} --llm FILE`" if routed else f"fix the model in your models file, then `{rerun} --models FILE`")
    return (f"{'the steps before it are kept: ' if kept else ''}{fix}; or give the stage `fallbacks:` instead, with "
            f"--set base_pipeline.stages.{'N' if position is None else position}.fallbacks=[MODEL] on that rerun")


def smaller(settings: ModelSettings, backend: str, memory: str) -> tuple[ModelSettings, str] | None:
    """The settings to retry a model on after it ran out of ``memory``, and what changed; None when there is nothing
    smaller to try. GPU memory: the CPU (llama.cpp: no layers offloaded; transformers: device cpu). Host memory:
    llama.cpp halves the context and the batch (down to 128 / 32 tokens); transformers loads bfloat16 weights."""
    if backend == "llama_cpp":
        if on_gpu(memory) and settings.n_gpu_layers != 0:
            return settings.model_copy(update={"n_gpu_layers": 0}), "on the CPU (n_gpu_layers 0)"
        n_ctx, n_batch = max(settings.n_ctx // 2, MIN_CTX), max(settings.n_batch // 2, MIN_BATCH)
        if (n_ctx, n_batch) == (settings.n_ctx, settings.n_batch):
            return None
        return (settings.model_copy(update={"n_ctx": n_ctx, "n_batch": n_batch}),
                f"n_ctx {settings.n_ctx} -> {n_ctx}, n_batch {settings.n_batch} -> {n_batch}")
    if on_gpu(memory) and settings.device != "cpu":
        return settings.model_copy(update={"device": "cpu", "load_in_4bit": False}), "on the CPU (device cpu)"
    if settings.dtype in ("auto", "float32"):
        return settings.model_copy(update={"dtype": "bfloat16"}), f"dtype {settings.dtype} -> bfloat16"
    return None


def free_memory(path: str) -> int:
    """Unload the llama.cpp models loaded from ``path`` and return memory to the system (and torch's CUDA cache).
    How many models were unloaded."""
    freed = 0
    llama = sys.modules.get("agentlab.core.llm.providers.llama_cpp")
    if llama is not None:
        freed = llama.unload(path)
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return freed


@dataclass
class StageServer:
    """Serves the slots of every stage of one run, each model over its router in ``routers`` (local models under the
    models file's rules, routed ones under the routing config's: ``models.split_by_rules``); ``given``: providers by
    name (tests), also used for a model's smaller settings (a test double has no settings)."""

    routers: dict[str, Router]
    llm_cfg: LLMConfig
    models_cfg: ModelsConfig
    run_dir: RunDir
    given: dict[str, Provider] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)  # stage -> its place in base_pipeline.stages (hints)
    reduced: dict[str, tuple[Router, str]] = field(default_factory=dict)  # model -> its router on smaller settings

    def repeat_params(self, name: str, params: GenParams, repeat: int) -> GenParams:
        """``params`` for the ``repeat``-th repeat (from 0) of model ``name`` in one multi stage: the seed the model
        would sample with (the stage's ``seed``, else the model's params', else a GGUF's ``seed`` setting) plus
        ``repeat``. The first (``repeat`` 0) is sent as configured; so is a repeat with no seed to offset (a
        transformers or routed model with none set, or a negative seed, llama.cpp's random one: each call samples
        afresh)."""
        if not repeat:
            return params
        seed = params.merged(self.llm_cfg.models[name].params).seed
        if seed is None and self.models_cfg.backend(name) == "llama_cpp":
            seed = self.models_cfg.settings(name).seed
        return params if seed is None or seed < 0 else replace(params, seed=seed + repeat)

    async def serve(self, stage: str, model: str, fallbacks: list[str], messages: Messages,
                    params: GenParams, repeat: int = 0) -> tuple[Completion, str, list[dict[str, Any]]]:
        """The answer for one slot, the model that gave it, and every attempt (``serving``); ``repeat``: how many
        slots before this one in the stage name the same model (``repeat_params``, for each model asked)."""
        serving: list[dict[str, Any]] = []
        for name in [model, *[f for f in fallbacks if f != model]]:
            completion = await self._ask(stage, name, messages, self.repeat_params(name, params, repeat), serving)
            if completion is not None:
                if name != model:
                    self.run_dir.event("stage_fallback", stage=stage, model=model, served_by=name)
                return completion, name, serving
        tried = ", ".join(f"model '{a['model']}'{' (' + a['settings'] + ')' if a['settings'] else ''}: {a['outcome']}"
                          for a in serving)
        last = serving[-1] if serving else {"outcome": "unavailable", "error": None}
        detail = f"; last error: {last['error']}" if last.get("error") else ""
        routed = bool(serving) and all(self.models_cfg.backend(a["model"]) == "routed" for a in serving)
        kept = any((self.run_dir.path / "steps").glob("*.json"))  # the stages before it (run, or reused) are written
        raise StageFailed(stage, f"stage '{stage}' could not be served: {tried}{detail}", str(last["outcome"]),
                          serving, hint=failed_hint(session_ref(self.run_dir.path), stage, self.positions.get(stage),
                                                    kept=kept, routed=routed), routed=routed)

    async def _ask(self, stage: str, name: str, messages: Messages, params: GenParams,
                   serving: list[dict[str, Any]]) -> Completion | None:
        router, settings = self.reduced.get(name, (self.routers[name], ""))
        completion, outcome = await self._try(router, stage, name, messages, params, settings, serving)
        if completion is not None or outcome != OOM_KIND or name in self.reduced:
            return completion
        memory = oom_memory(serving[-1]["error"] or "") or "host"
        retry = self._reduced_router(name, memory)
        if retry is None:
            return None
        self.reduced[name] = retry
        completion, _ = await self._try(retry[0], stage, name, messages, params, retry[1], serving)
        return completion

    async def _try(self, router: Router, stage: str, name: str, messages: Messages, params: GenParams,
                   settings: str, serving: list[dict[str, Any]]) -> tuple[Completion | None, str]:
        call = CallState(f"pipeline:{stage}", None)
        completion = await router.try_model(call, name, messages, params)
        for attempt in call.attempts:
            serving.append({"model": name, "settings": settings, "outcome": attempt.outcome,
                            "seconds": round(attempt.latency_s, 4), "error": attempt.message})
        return completion, call.attempts[-1].outcome if call.attempts else "unavailable"

    def _reduced_router(self, name: str, memory: str) -> tuple[Router, str] | None:
        """A router for ``name`` alone on smaller settings, after unloading it; None for a routed model or when
        nothing is smaller."""
        backend = self.models_cfg.backend(name)
        if backend == "routed":
            return None
        found = smaller(self.models_cfg.settings(name), backend, memory)
        if found is None:
            return None
        settings, change = found
        model_cfg = self.llm_cfg.models[name]
        freed = free_memory(model_cfg.model)
        provider = f"{LOCAL_PREFIX}{name}"
        cfg = LLMConfig(providers={provider: local_provider(settings, backend)}, models={name: model_cfg},
                        timeout_s=self.llm_cfg.timeout_s, retries=self.llm_cfg.retries,
                        resources=self.llm_cfg.resources)
        given = {provider: self.given[provider]} if provider in self.given else None
        self.run_dir.event("stage_oom_retry", model=name, memory=memory, settings=change, unloaded=freed)
        return Router.for_run(cfg, self.run_dir, providers=given), change

    async def aclose(self) -> None:
        for router in {id(r): r for r in [*self.routers.values(), *(r for r, _ in self.reduced.values())]}.values():
            await router.aclose()

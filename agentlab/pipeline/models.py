"""From the models file to the router: one provider per local model, routed models copied from the routing config;
and ``check_models``, what ``agentlab models check`` shows (metadata only, nothing is loaded)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, ConfigError, MissingPackage
from agentlab.core.files import human_size
from agentlab.core.llm.config import HFProviderConfig, LlamaCppProviderConfig, LLMConfig, ModelConfig
from agentlab.core.llm.resources import check_fits as fits
from agentlab.core.llm.resources import estimate_gguf, estimate_hf
from agentlab.core.models.convert import MARKER, converted_folder
from agentlab.core.models.modelfiles import gguf_info, hf_info
from agentlab.pipeline.config import ModelsConfig, ModelSettings, make_advice, same_type

LOCAL_PREFIX = "local:"


def local_provider(settings: ModelSettings, backend: str) -> LlamaCppProviderConfig | HFProviderConfig:
    """The provider config of one local model (paths are resolved already, so no models_directory here)."""
    if backend == "hf":
        return HFProviderConfig(device=settings.device, dtype=settings.dtype, load_in_4bit=settings.load_in_4bit)
    return LlamaCppProviderConfig(n_ctx=settings.n_ctx, n_gpu_layers=settings.n_gpu_layers,
                                  n_threads=settings.n_threads, n_batch=settings.n_batch,
                                  cache_type=settings.cache_type, seed=settings.seed)


def build_llm_config(models_cfg: ModelsConfig, routed: LLMConfig | None, used: set[str]) -> LLMConfig:
    """An ``LLMConfig`` for the ``used`` models: ``local:<name>`` providers (llama_cpp or hf, merged settings, the
    model id is the resolved path) and routed models with their provider copied from the routing config.

    Params: the models file's ``defaults.params``, then a routed model's own params, then the model's overrides.
    """
    providers: dict[str, Any] = {}
    models: dict[str, ModelConfig] = {}
    for name in [n for n in models_cfg.models if n in used]:
        entry, settings = models_cfg.models[name], models_cfg.settings(name)
        if entry.routed is not None:
            if routed is None or entry.routed not in routed.models:
                known = ", ".join(routed.models) if routed else "no routing config loaded"
                raise ConfigError(f"models.{name}.routed: '{entry.routed}' is not a model of the routing config "
                                  f"(known: {known})", hint="pass the routing config with --llm FILE")
            source = routed.models[entry.routed]
            providers[source.provider] = routed.providers[source.provider]
            overrides = entry.overrides.params or {}
            params = {**models_cfg.defaults.params, **source.params, **overrides}
            models[name] = source.model_copy(update={"params": params})
            continue
        backend, path = models_cfg.backend(name), models_cfg.path(name)
        provider = f"{LOCAL_PREFIX}{name}"
        providers[provider] = local_provider(settings, backend)
        models[name] = ModelConfig(provider=provider, model=str(path.resolve() if path else ""),
                                   params=dict(settings.params), stream=False)
    return LLMConfig(providers=providers, models=models, timeout_s=models_cfg.timeout_s, retries=models_cfg.retries,
                     resources=models_cfg.resources)


ROUTING_RULES = ("timeout_s", "retries", "max_retry_after_s", "circuit_breaker")


def split_by_rules(llm_cfg: LLMConfig, models_cfg: ModelsConfig, routed: LLMConfig | None) -> list[LLMConfig]:
    """``llm_cfg`` as one config per set of call rules (one router each): the local models under the models file's
    ``timeout_s`` and ``retries``, the routed models under the routing config's own (``timeout_s``, ``retries``, the
    Retry-After cap, the circuit breaker), as llm-bench and every other command calls them."""
    parts = []
    for http in (False, True):
        models = {n: m for n, m in llm_cfg.models.items() if (models_cfg.models[n].routed is not None) == http}
        if models:
            rules = {key: getattr(routed, key) for key in ROUTING_RULES} if http and routed is not None else {}
            parts.append(llm_cfg.model_copy(update={
                "models": models, "providers": {m.provider: llm_cfg.providers[m.provider] for m in models.values()},
                **rules}))
    return parts


def estimate(models_cfg: ModelsConfig, name: str) -> Any:
    """The memory estimate of a local model (``resources.MemoryEstimate``); the file must exist."""
    settings, path = models_cfg.settings(name), models_cfg.path(name)
    assert path is not None, f"{name} is a routed model"
    if models_cfg.backend(name) == "hf":
        device = "cuda" if settings.device == "cuda" else "cpu"
        dtype = "float32" if settings.dtype == "auto" and device == "cpu" else settings.dtype
        dtype = "bfloat16" if dtype == "auto" else dtype
        # at the model's own context, as the provider checks it: the hf backend has no n_ctx
        return estimate_hf(path, dtype=dtype, load_in_4bit=settings.load_in_4bit, device=device, name=name)
    # The resolved path and n_batch as the provider passes them: check_fits then knows a loaded model as the same one.
    return estimate_gguf(path.resolve(), n_ctx=settings.n_ctx, cache_type=settings.cache_type,
                         n_gpu_layers=settings.n_gpu_layers, name=name, n_batch=settings.n_batch)


def check_fits(models_cfg: ModelsConfig, names: list[str], *, skip_unreadable: bool = False) -> list[Any]:
    """Estimates of the local ``names`` (one per name), checked together (the process-wide cache holds them all at
    once). Raises ``ResourceError`` before anything loads when they do not fit. ``skip_unreadable``: a model whose
    file cannot be read (not a GGUF) is left out instead of raising; loading it fails later, as a model call.

    Names that share a file and every load setting are one model in memory (the provider cache loads it once), so
    they count once, under their names joined by ``+``."""
    local, estimates = [], []
    for name in [n for n in names if models_cfg.backend(n) != "routed"]:
        try:
            estimates.append(estimate(models_cfg, name))
        except AgentlabError:
            if not skip_unreadable:
                raise
            continue
        local.append(name)
    if estimates and models_cfg.resources.check:
        fits(one_per_load(models_cfg, local, estimates), models_cfg.resources)
    return estimates


def one_per_load(models_cfg: ModelsConfig, names: list[str], estimates: list[Any]) -> list[Any]:
    """``estimates`` with the names that would share one loaded model merged into one estimate."""
    groups: dict[tuple[str, str, str, int], list[int]] = {}
    for i, name in enumerate(names):
        backend, path = models_cfg.backend(name), models_cfg.path(name)
        load = local_provider(models_cfg.settings(name), backend).model_dump_json()
        key = (backend, str(path.resolve() if path else ""), load, estimates[i].n_ctx)  # hf: n_ctx sizes the KV
        groups.setdefault(key, []).append(i)
    return [replace(estimates[idx[0]], name="+".join(names[i] for i in idx)) for idx in groups.values()]


@dataclass
class ModelStatus:
    """One model of the models file as the disk and the resource estimate see it."""

    name: str
    backend: str  # llama_cpp | hf | routed
    path: str | None
    exists: bool | None  # None: routed
    size_bytes: int | None
    required: bool
    quantization: str | None  # declared in the models file
    quantization_found: str | None  # the GGUF's file type / the HF dtype
    estimate: Any = None  # resources.MemoryEstimate | None
    fits: bool | None = None  # None: not checked (routed, missing, or resources.check off)
    note: str = ""
    unreadable: bool = False  # on disk, but not a model file agentlab can read (the note says why)

    @property
    def ok(self) -> bool:
        return (self.exists is not False and self.fits is not False and not self.quantization_mismatch
                and not self.unreadable)

    @property
    def quantization_mismatch(self) -> bool:
        return bool(self.quantization and self.quantization_found
                    and not same_type(self.quantization, self.quantization_found))

    def cells(self) -> dict[str, str]:
        """The row of the `models check` table as plain text: the CLI colours it, the UI shows it as it is."""
        kind = self.quantization_found or self.quantization or "-"
        return {"model": self.name, "backend": self.backend,
                "on disk": "-" if self.exists is None else "unreadable" if self.unreadable
                else "yes" if self.exists else "missing",
                "type": f"{kind} (declared {self.quantization})" if self.quantization_mismatch else kind,
                "size": human_size(self.size_bytes),
                "needs": human_size(self.estimate.total_bytes) if self.estimate is not None else "-",
                "fits": "-" if self.fits is None else "yes" if self.fits else "no"}

    def to_dict(self) -> dict[str, Any]:
        est = self.estimate
        return {"name": self.name, "backend": self.backend, "path": self.path, "exists": self.exists,
                "size_bytes": self.size_bytes, "required": self.required, "quantization": self.quantization,
                "quantization_found": self.quantization_found, "ok": self.ok, "fits": self.fits, "note": self.note,
                "unreadable": self.unreadable,
                "estimate": None if est is None else {"total_bytes": est.total_bytes, "describe": est.describe()}}


def check_models(models_cfg: ModelsConfig, names: Iterable[str] | None = None) -> list[ModelStatus]:
    """Every model of the file (or those ``names``): does it exist, what type is it, how much memory will it take,
    does it fit alone."""
    out = []
    for name, entry in models_cfg.models.items():
        if names is not None and name not in names:
            continue
        backend, builtin = models_cfg.backend(name), models_cfg.builtin(name)
        try:
            path = models_cfg.path(name)
        except MissingPackage as exc:  # a built-in model whose package is absent
            out.append(ModelStatus(name, backend, None, False, None, entry.required_for_base, entry.quantization, None,
                                   note=f"{exc.message}: {exc.hint}"))
            continue
        status = ModelStatus(name, backend, str(path.resolve()) if path else None, None, None,
                             entry.required_for_base, entry.quantization, None)
        out.append(status)
        if path is None:
            status.note = f"routed: '{entry.routed}' of the routing config (--llm)"
            continue
        status.exists = path.exists()
        if builtin:
            status.note = f"built-in model {builtin}"
        if not status.exists:
            status.note = f"not found; {make_advice(path)}, or check models_directory ({models_cfg.models_directory})"
            continue
        try:
            info = gguf_info(path) if path.is_file() else hf_info(path)  # hf also runs a GGUF (converted)
            status.size_bytes = info.size_bytes
            status.quantization_found = getattr(info, "file_type", None) or getattr(info, "dtype", None)
            status.estimate = estimate(models_cfg, name)
        except AgentlabError as exc:
            status.note, status.unreadable = exc.message, True
            continue
        notes = [status.note] if status.note else []
        if backend == "hf" and path.is_file():
            notes.append(_conversion_note(path))
        if status.quantization_mismatch:
            notes.append(f"declared {status.quantization} but the file is {status.quantization_found}")
        n_ctx, trained = models_cfg.settings(name).n_ctx, info.n_ctx_train
        # still ok: it loads, the KV cache only grows for positions never trained (llama.cpp; the hf backend's
        # context is the model's own, whatever n_ctx says)
        if backend == "llama_cpp" and trained and n_ctx > trained:
            notes.append(f"n_ctx {n_ctx} is above its training context {trained}: past {trained} the model is not "
                         "trained and the extra memory buys nothing")
        if models_cfg.resources.check:
            try:
                fits([status.estimate], models_cfg.resources, include_loaded=False)
                status.fits = True
            except AgentlabError as exc:
                status.fits = False
                notes.append(exc.message)
        status.note = "; ".join(notes)
    return out


def check_together(models_cfg: ModelsConfig, statuses: list[ModelStatus]) -> dict[str, Any] | None:
    """The required local models of ``statuses`` checked together, as `pipeline run` checks the models it loads
    before loading any (a file several names share, with the same settings, counted once): `models check`'s last
    row and the ui's Models page. None for fewer than two, or with ``resources.check`` off."""
    names = [s.name for s in statuses if s.required and s.estimate is not None]
    if len(names) < 2 or not models_cfg.resources.check:
        return None
    # the statuses' estimates (check_fits above would read every file's header again)
    loads = one_per_load(models_cfg, names, [s.estimate for s in statuses if s.name in names])
    needs = sum(e.total_bytes for e in loads)
    try:
        fits(loads, models_cfg.resources)
    except AgentlabError as exc:
        return {"models": names, "needs_bytes": needs, "fits": False, "note": exc.message}
    shared = " (names of one file with the same settings load it once)" if len(loads) < len(names) else ""
    return {"models": names, "needs_bytes": needs, "fits": True,
            "note": f"the {len(names)} required models, {len(loads)} loaded{shared}: {human_size(needs)} at once, "
            "checked as `pipeline run` checks them before loading"}


def _conversion_note(gguf: Path) -> str:
    """Whether the transformers folder of a GGUF run on the hf backend is cached yet."""
    folder = converted_folder(gguf)
    if (folder / MARKER).is_file():
        return f"transformers folder cached: {folder}"
    return f"the first load converts the GGUF to a transformers folder (once, cached in {folder.parent})"

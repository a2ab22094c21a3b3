"""The routing config (``configs/llm.yaml``): providers, models, routes. This shape is a contract for users' scripts.

Backends are a closed union on ``kind``; secrets never live here, only the *name* of the variable that holds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from agentlab.core.config import StrictModel, load_config
from agentlab.core.errors import ConfigError
from agentlab.core.llm.cache import CacheConfig
from agentlab.core.models.builtin import BUILTIN_MODELS, close_builtin

DEFAULT_LLM_CONFIG = Path("configs/llm.yaml")


def _not_bool(value: Any) -> Any:
    # pydantic's lax mode reads true as 1: `max_tokens: yes` would silently mean one token.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


_Float = Annotated[float, BeforeValidator(_not_bool)]
_Int = Annotated[int, BeforeValidator(_not_bool)]


class GenerationParams(BaseModel):
    """The generation params a config may set: a model's ``params`` in the routing config, ``defaults.params`` and
    ``overrides.params`` of the pipeline's models file, a stage's ``params``. Every ``params`` field validates through
    this model (see :data:`Params`), so a wrong type is a ``file:line: field`` error before anything runs.

    Other keys are allowed and passed on: the OpenAI-compatible provider forwards them to the server.
    """

    model_config = ConfigDict(extra="allow")

    # A key the config does not set stays unset (None here, left out of the dict); an explicit null is an error.
    temperature: _Float | None = Field(None, ge=0, description="sampling temperature; 0: greedy")
    max_tokens: _Int | None = Field(None, ge=1, description="most tokens to generate")
    top_p: _Float | None = Field(None, gt=0, le=1, description="nucleus sampling: the smallest set of tokens whose "
                          "probabilities add up to top_p")
    stop: str | list[str] | None = Field(None, description="a string or a list of strings that end the answer")
    seed: _Int | None = Field(None, description="sampling seed")
    json_schema: dict[str, Any] | None = Field(None, description="structured output: {name, schema}")
    # Sampling extras of the in-process backends (llama.cpp: EXTRA_SAMPLING; transformers: adapter)
    top_k: _Int | None = Field(None, ge=0, description="llama.cpp: sample from the k most likely tokens; 0: all")
    min_p: _Float | None = Field(None, ge=0, le=1,
                                 description="llama.cpp: drop tokens below min_p x the top probability")
    typical_p: _Float | None = Field(None, gt=0, le=1, description="llama.cpp: locally typical sampling; 1: off")
    repeat_penalty: _Float | None = Field(None, gt=0, description="llama.cpp: penalty on repeated tokens; 1: off")
    presence_penalty: _Float | None = Field(None, ge=-2, le=2, description="penalty on tokens already present (-2..2)")
    frequency_penalty: _Float | None = Field(None, ge=-2, le=2, description="penalty by token frequency so far (-2..2)")
    adapter: str | None = Field(None, description="transformers: the PEFT adapter that answers (a name of the "
                                "provider's `adapters`)")

    @field_validator("*", mode="before")
    @classmethod
    def _no_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not a value here; leave the key out for the default")
        return value


def check_params(value: Any) -> Any:
    """A ``params`` mapping validated by :class:`GenerationParams`, as a plain dict of the keys it sets (``stop``
    always a list). Errors carry the key's location, so ``load_config`` names the file, line and field."""
    if not isinstance(value, dict):
        return value  # the dict type of the field reports it
    params = GenerationParams.model_validate(value).model_dump(exclude_unset=True)
    if isinstance(params.get("stop"), str):
        params["stop"] = [params["stop"]]  # a provider that iterates over `stop` must not stop at each character
    return params


LOCAL_KINDS = ("llama_cpp", "hf")  # in-process backends: a params key GenerationParams lacks reaches nothing


# The sampling params llama.cpp reads beyond a request's own fields (providers.llama_cpp passes them on).
EXTRA_SAMPLING = ("top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty")


def local_reads(kind: str) -> list[str]:
    """The params keys an in-process backend reads (``kind``: llama_cpp or hf): those of every request (GenParams'
    own fields: temperature, max_tokens, ..., tools, tool_choice, parallel_tool_calls), the tool switches of
    ``tools.LOCAL_PARAMS``, and the backend's own: llama.cpp's sampling extras, transformers' ``adapter``."""
    from agentlab.core.llm.tools import LOCAL_PARAMS
    from agentlab.core.llm.types import GenParams

    own = list(EXTRA_SAMPLING) if kind == "llama_cpp" else ["adapter"]
    return [*(k for k in GenParams.__dataclass_fields__ if k != "extra"), *own, *sorted(LOCAL_PARAMS)]


def check_local_params(params: dict[str, Any], where: str, kinds: Iterable[str]) -> None:
    """Refuse (``ValueError`` naming ``where``, the params' place) a key of ``params`` that none of the in-process
    backends ``kinds`` (llama_cpp, hf) reads (``local_reads``): only an OpenAI-compatible server takes other keys,
    so `max_tokenz: 5` was dropped without a word."""
    kinds = sorted(set(kinds))
    known = list(dict.fromkeys(key for kind in kinds for key in local_reads(kind)))
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            raise ValueError(f"{where}.{key}: not a param {' or '.join(kinds)} reads"
                             + (f" (did you mean {close[0]}?)" if close else "") + f"; it reads {', '.join(known)}")


PARAMS_HELP = ("generation params: temperature, max_tokens, top_p, stop, seed; llama.cpp: top_k, min_p, typical_p, "
               "repeat_penalty, presence_penalty, frequency_penalty; transformers: adapter; other keys go to "
               "OpenAI-compatible servers as they are (a local model refuses them)")
# The type of every `params` field: a dict for the code that merges params, validated key by key for the user.
Params = Annotated[dict[str, Any], BeforeValidator(check_params)]


def _http_url(value: str) -> str:
    """An HTTP provider's ``base_url``: http(s) with a host (``not a url`` was accepted, and every call failed to
    connect). Checked after ``${VAR}`` is filled in; the value is not shown: a URL may hold a credential."""
    value = value.strip()  # " http://..." reached httpx as "%20http://..."
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL, such as https://api.example.com (a ${VAR} is checked as filled in)")
    return value


HttpURL = Annotated[str, AfterValidator(_http_url)]


class OpenAIProviderConfig(StrictModel):
    kind: Literal["openai"] = Field("openai", description="OpenAI-compatible HTTP API (OpenRouter, OpenAI, vLLM, "
                                    "llama.cpp server, Ollama)")
    base_url: HttpURL = Field(description="API root including /v1, e.g. https://openrouter.ai/api/v1")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key "
                                    "(read from the environment or .env; never written anywhere)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers sent with every request")
    max_connections: int = Field(128, ge=1, description="connection pool size for this provider")


class AnthropicProviderConfig(StrictModel):
    kind: Literal["anthropic"] = Field("anthropic", description="Anthropic's Messages API (Claude), tools and "
                                       "streaming mapped to agentlab's types")
    base_url: HttpURL = Field("https://api.anthropic.com", description="API root, without /v1")
    api_key_env: str | None = Field("ANTHROPIC_API_KEY", description="name of the environment variable holding the "
                                    "API key (sent as x-api-key; never written anywhere)")
    version: str = Field("2023-06-01", description="the anthropic-version header")
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens of a request that sets none (the API needs "
                                    "one)")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers (e.g. anthropic-beta)")
    max_connections: int = Field(64, ge=1, description="connection pool size for this provider")


class ScriptedProviderConfig(StrictModel):
    kind: Literal["scripted"] = Field("scripted", description="replays fixed replies offline: tests and --dry-run")
    replies: list[str] = Field(default_factory=lambda: ["ok"], description="replies returned in turn (cycled)")
    latency_s: float = Field(0.0, ge=0, description="simulated latency of each reply")
    script: Any = Field(None, exclude=True, description="set from Python only, never written to a file: a reply "
                        "function (model, messages, params) -> text or tool calls that answers every call instead of "
                        "`replies` (a scripted agent of agentlab.testing.agents in a planner model's place)")

    @field_validator("script")
    @classmethod
    def _callable(cls, value: Any) -> Any:
        if value is not None and (not callable(value) or isinstance(value, type)):
            raise ValueError("a Python callable (an instance, not a class), set from Python (a file gives `replies` "
                             "instead)")
        return value


CacheType = Literal["f32", "f16", "q8_0", "q4_0"]


class LlamaCppProviderConfig(StrictModel):
    kind: Literal["llama_cpp"] = Field("llama_cpp", description="in-process GGUF models through llama-cpp-python; "
                                       "a model's `model` is the GGUF path")
    models_directory: Path = Field(Path("."), description="relative GGUF paths resolve against this folder (itself "
                                   "relative to the current directory; a run folder's config.yaml holds it absolute)")
    n_ctx: int = Field(2048, ge=16, description="context window in tokens (the KV cache is sized for it)")
    n_gpu_layers: int = Field(0, ge=-1, description="layers offloaded to the GPU; -1: all (needs a CUDA build of "
                              "llama-cpp-python)")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; empty: llama.cpp's default")
    n_batch: int = Field(512, ge=1, description="prompt-processing batch size")
    cache_type: CacheType = Field("f16", description="KV cache element type (f32 makes logits match transformers "
                                  "most closely; q8_0/q4_0 halve or quarter its memory)")
    seed: int = Field(0, description="sampling seed")
    prompt_cache: bool = Field(True, description="keep the KV cache of the last request, so a request sharing its "
                               "prefix (an agent's system prompt, tools and history) evaluates only the rest; false: "
                               "every prompt evaluated whole (slower; for measuring what the reuse saves)")
    prompt_states: int = Field(2, ge=0, description="with prompt_cache: KV caches kept per model of the "
                               "conversations a request displaced (an agent's, while the evaluator route asks the same "
                               "model), put back when their conversation goes on; each takes up to the KV cache's "
                               "memory (n_ctx); 0: only the last request's")


class HFProviderConfig(StrictModel):
    kind: Literal["hf"] = Field("hf", description="in-process transformers causal LM (+ PEFT adapters); a model's "
                                "`model` is a local HF folder")
    models_directory: Path = Field(Path("."), description="relative model folders resolve against this folder (itself "
                                   "relative to the current directory; a run folder's config.yaml holds it absolute)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on CUDA (float16 on a GPU without bfloat16), float32 on CPU")
    load_in_4bit: bool = Field(False, description="QLoRA-style 4-bit NF4 weights through bitsandbytes (CUDA only)")
    adapters: dict[str, str] = Field(default_factory=dict, description="PEFT adapter name -> folder; a request picks "
                                     "one with the param `adapter`")
    max_batch_size: int = Field(8, ge=1, description="concurrent requests generated together in one batch")
    batch_wait_ms: float = Field(5.0, ge=0, description="how long a request waits for others to join its batch")
    mixed_lora: Literal["fused", "peft"] = Field(
        "fused", description="how a batch whose rows use different LoRA adapters runs: fused (the adapters stacked "
        "once; every layer computes every row's LoRA delta in a few batched ops, near the base model's cost) or peft "
        "(PEFT's adapter_names, which loops over the adapters in every layer); adapters the fused forward does not "
        "cover (DoRA, LoRA on embeddings, modules_to_save) take PEFT's path either way, with one log line")


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | ScriptedProviderConfig | LlamaCppProviderConfig
    | HFProviderConfig,
    Field(discriminator="kind"),
]


class ResourceConfig(StrictModel):
    safety_factor: float = Field(0.85, gt=0, le=1, description="a model set must fit in this share of free memory")
    memory_budget_gb: float | None = Field(None, gt=0, description="RAM budget instead of the free RAM measured")
    vram_budget_gb: float | None = Field(None, gt=0, description="GPU memory budget instead of the free VRAM measured")
    check: bool = Field(True, description="refuse to load local models whose estimate does not fit")


class ModelProfile(StrictModel):
    """What a model needs around it, named once in the routing config and applied where each need arises: the
    providers' tool gate (the router's request params) and the agent runtime's guards (``core/agent``). A small
    local model gets help; a strong model behind an API gets none of it, so its context and its choices are its own.
    """

    tool_gate: bool = Field(description="a question that shares no word with any tool is answered in text "
                            "(tool_choice auto on a local model; core/llm/tools.py)")
    drop_repeats: bool = Field(description="under tool_choice auto, a call that repeats one already answered in the "
                               "conversation is dropped and the model answers from the results in text (the router; "
                               "core/llm/tools.py checking_calls)")
    answer_in_words: bool = Field(False, description="after a dropped repeat, the model answers from the whole "
                                  "conversation put in words (a tiny model copies tool-response tags back); "
                                  "otherwise from the question and this turn's results in one user turn")
    repeat_watch: bool = Field(description="agent: a call repeated since the last trial gets its earlier answer, and "
                               "the next step offers only suggest and the action")
    window: bool = Field(description="agent: the model sees the brief and the last `agent.keep` messages, not the "
                         "whole conversation")
    short_tools: bool = Field(description="agent: tools described by their name and argument schema only (a small "
                              "model copies descriptions into its answers)")
    short_brief: bool = Field(description="agent: a short brief that names the order of the calls once (suggest, "
                              "then the action); otherwise the full brief (the tools, the guard, the leads, the "
                              "budget) and no order")
    one_call: bool = Field(description="agent: one tool call a step (no parallel calls; only the first is kept); "
                           "otherwise up to four")
    text_steps: bool = Field(description="agent: a step may be text instead of a call (tool_choice auto; the step "
                             "counts and the model is told what to do next); otherwise every step calls a tool "
                             "(tool_choice required)")
    suggest_first: bool = Field(description="agent: the action that runs a suggested candidate is offered only once "
                                "suggest has run (the tools then change from step to step)")
    open_values: bool = Field(description="agent: its own configs may take any value inside the search space; "
                              "otherwise one of a short grid per key (a small model under a grammar picks from a list)")
    result_chars: int = Field(ge=200, description="agent: a tool's result as the model sees it, at most (characters)")


# small: a tiny model under a grammar (SmolLM2-135M) gets every guard. full: a strong model gets none. medium: a
# capable small local model (Qwen2.5-Coder-0.5B / 1.5B) gets the agent's freedoms but keeps what the measurements
# (docs/commands/models.md) show it needs: the router's tool gate and repeat drop, and a call every agent step (given
# the choice, Qwen2.5-Coder-0.5B answered the agent's brief in text five steps running).
PROFILES: dict[str, ModelProfile] = {
    "small": ModelProfile(tool_gate=True, drop_repeats=True, answer_in_words=True, repeat_watch=True, window=True,
                          short_tools=True, short_brief=True, one_call=True, text_steps=False, suggest_first=True,
                          open_values=False, result_chars=1500),
    "medium": ModelProfile(tool_gate=True, drop_repeats=True, repeat_watch=False, window=False, short_tools=False,
                           short_brief=False, one_call=False, text_steps=False, suggest_first=False,
                           open_values=True, result_chars=4000),
    "full": ModelProfile(tool_gate=False, drop_repeats=False, repeat_watch=False, window=False, short_tools=False,
                         short_brief=False, one_call=False, text_steps=True, suggest_first=False, open_values=True,
                         result_chars=6000),
}
ProfileName = Literal["small", "medium", "full"]
LOCAL_KINDS = ("llama_cpp", "hf")  # their models' profile: a built-in model's own, else `small`


class ModelConfig(StrictModel):
    provider: str = Field(description="a key of `providers`")
    model: str = Field(description="the provider's model id, e.g. anthropic/claude-3.5-sonnet")
    params: Params = Field(default_factory=dict, description=f"default {PARAMS_HELP}; a request's own params win")
    stream: bool = Field(True, description="whether the endpoint supports SSE streaming (llm-bench measures TTFT)")
    profile: ProfileName | None = Field(
        None, description="what the model needs around it: small (a tiny grammar-bound local model: the tool gate "
        "and repeat drop, and for the agent one call a step, the repeat watch, a windowed history and short tool "
        "descriptions), medium (a capable local model: the tool gate and repeat drop only) or full (none of it); "
        "empty: a built-in model's own (smollm2-135m small, the qwen2.5-coder models medium), small for other "
        "llama_cpp and hf models, full for HTTP ones")


class ClassChoice(StrictModel):
    keywords: list[str] = Field(default_factory=list, description="by: keywords: the choice when the last user "
                                "message holds one of these words (case-insensitive, whole words)")
    metadata: list[str] = Field(default_factory=list, description="by: metadata: the choice when the request's "
                                "metadata field holds one of these values (its own name always matches)")
    description: str = Field("", description="by: model: what this route is for, shown to the classifying model")


class ClassifyConfig(StrictModel):
    """Routing by task: the route's request goes to one of ``choices`` (route names), picked by a rule."""

    by: Literal["keywords", "metadata", "model"] = Field(description="keywords: the first choice whose keywords "
                                                         "occur in the last user message; metadata: the request's "
                                                         "metadata field; model: a small model picks a choice")
    choices: dict[str, ClassChoice] = Field(min_length=1, description="route name -> how it is recognised, in "
                                            "order of precedence")
    default: str = Field(description="the route when no rule matches (or the classifying model fails)")
    field: str = Field("task", description="by: metadata: the key of the request's metadata read")
    model: str | None = Field(None, description="by: model: the model (a name of `models`) that picks a choice")


class RouteConfig(StrictModel):
    classify: ClassifyConfig | None = Field(None, description="routing by task: this route names no models; each "
                                            "request goes to one of the classifier's choices (the choice is an "
                                            "event: route_choice)")
    primary: list[str] = Field(default_factory=list, description="models tried first, in order")
    duplicate: list[str] = Field(default_factory=list, description="same-quality stand-ins; also the default judges "
                                 "for best_of_n")
    reserve: list[str] = Field(default_factory=list, description="cheaper or slower models tried next")
    fallback: list[str] = Field(default_factory=list, description="last resort")
    strategy: Literal["single", "fastest", "best_of_n"] = Field(
        "single", description="single: first healthy model in chain order; fastest: lowest measured latency first "
        "(EWMA, unmeasured models tried first, with exploration); best_of_n: n models answer concurrently and a judge "
        "picks the best")
    n: int = Field(2, ge=2, description="best_of_n: how many models answer")
    judge: str | None = Field(None, description="best_of_n: the judge model (default: the first `duplicate`)")

    def chain(self) -> list[str]:
        """Every model of the route in fallback order, each once."""
        seen: list[str] = []
        for name in [*self.primary, *self.duplicate, *self.reserve, *self.fallback]:
            if name not in seen:
                seen.append(name)
        return seen


class CircuitBreakerConfig(StrictModel):
    failures: int = Field(3, ge=1, description="consecutive failed calls that open the breaker for a model")
    cooldown_s: float = Field(30.0, ge=0, description="how long an open breaker skips the model before a trial call")


class LLMConfig(StrictModel):
    providers: dict[str, ProviderConfig] = Field(default_factory=dict, description="named backends")
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="named models on those backends")
    routes: dict[str, RouteConfig] = Field(default_factory=dict, description="a command asks for a route by name "
                                           "(planner, evaluator, ...); unknown names use `default`")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    retries: int = Field(1, ge=0, description="retries on the same model for retryable failures before falling back")
    deadline_s: float | None = Field(None, gt=0, description="overall deadline of one routed call, fallbacks included")
    max_retry_after_s: float = Field(30.0, ge=0, description="longest Retry-After (429) honoured before falling back")
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig,
                                                  description="stop calling a model that keeps failing")
    resources: ResourceConfig = Field(default_factory=ResourceConfig,
                                      description="memory checks before local models load")
    ewma_alpha: float = Field(0.3, gt=0, le=1, description="fastest: weight of the newest latency sample")
    explore: float = Field(0.1, ge=0, le=1, description="fastest: chance of trying a non-fastest model first")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="response cache for repeated requests "
                               "(off by default)")
    _named: bool = PrivateAttr(default=False)

    @property
    def named(self) -> bool:
        """The user named this routing config for this call (``--llm``, ``llm=``), not the default routing nor a
        resumed run's own copy: a key it lacks is then a failure, never "offline" (``core.search.session``)."""
        return self._named

    @named.setter
    def named(self, value: bool) -> None:
        self._named = value

    @model_validator(mode="after")
    def _check_references(self) -> LLMConfig:
        for name, model in self.models.items():
            if model.provider not in self.providers:
                known = ", ".join(self.providers) or "none defined"
                raise ValueError(f"models.{name}.provider: unknown provider '{model.provider}' (known: {known})")
            provider = self.providers[model.provider]
            if provider.kind in LOCAL_KINDS:
                check_local_params(model.params, f"models.{name}.params", [provider.kind])
        for route_name, route in self.routes.items():
            for role in ("primary", "duplicate", "reserve", "fallback"):
                for model_name in getattr(route, role):
                    if model_name not in self.models:
                        known = ", ".join(self.models) or "none defined"
                        raise ValueError(f"routes.{route_name}.{role}: unknown model '{model_name}' (known: {known})")
            if route.judge is not None and route.judge not in self.models:
                raise ValueError(f"routes.{route_name}.judge: unknown model '{route.judge}'")
            if route.classify is not None:
                self._check_classify(route_name, route.classify)
        return self

    def _check_classify(self, route_name: str, classify: ClassifyConfig) -> None:
        where = f"routes.{route_name}.classify"
        for target, place in [*((c, f"choices.{c}") for c in classify.choices), (classify.default, "default")]:
            found = self.routes.get(target)
            if found is None:
                raise ValueError(f"{where}.{place}: unknown route '{target}' (known: {', '.join(self.routes)})")
            if found.classify is not None:
                raise ValueError(f"{where}.{place}: route '{target}' classifies too; a choice must name models")
        if classify.by == "model":
            if classify.model is None:
                raise ValueError(f"{where}.model: by: model needs the model that classifies (a name of `models`)")
            if classify.model not in self.models:
                raise ValueError(f"{where}.model: unknown model '{classify.model}'")
        if classify.by == "keywords" and not any(c.keywords for c in classify.choices.values()):
            raise ValueError(f"{where}.choices: by: keywords needs keywords in at least one choice")

    def route(self, name: str) -> RouteConfig:
        """The named route, else ``default``, else every model in file order."""
        if name in self.routes:
            return self.routes[name]
        if "default" in self.routes:
            return self.routes["default"]
        return RouteConfig(primary=list(self.models))

    def has_route(self, name: str) -> bool:
        return name in self.routes

    def profile(self, model: str) -> ModelProfile:
        """The model's profile (``ModelConfig.profile``; empty: a built-in model's own, else by its provider's
        kind)."""
        mcfg = self.models[model]
        if mcfg.profile is not None:
            return PROFILES[mcfg.profile]
        provider = self.providers.get(mcfg.provider)
        if provider is None or provider.kind not in LOCAL_KINDS:
            return PROFILES["full"]
        builtin = BUILTIN_MODELS.get(mcfg.model)
        return PROFILES[builtin.profile if builtin is not None and builtin.profile else "small"]

    def model_params(self, model: str) -> dict[str, Any]:
        """The model's default request params: its ``params`` over what its profile sets for a local model (the tool
        gate; an HTTP request carries no such key: its upstream would refuse it)."""
        mcfg = self.models[model]
        provider = self.providers.get(mcfg.provider)
        if provider is None or provider.kind not in LOCAL_KINDS or self.profile(model).tool_gate:
            return dict(mcfg.params)  # the gate is on unless a param turns it off (core/llm/tools.py)
        return {"tool_gate": False, **mcfg.params}


def builtin_name(ref: str | Path) -> str | None:
    """The built-in model ``ref`` names where a routing config file is asked for (``--llm qwen2.5-coder-0.5b``), or
    None: a file of that name wins (a folder does not: ``models export-hf smollm2-135m --out smollm2-135m`` makes
    one)."""
    return str(ref) if str(ref) in BUILTIN_MODELS and not Path(ref).is_file() else None


def _routing_ref(value: Path | str) -> Path | str:
    """A built-in model's name stays a name, so a run folder's config.yaml keeps ``llm: qwen2.5-coder-0.5b`` rather
    than a path made absolute; anything else is a path."""
    return builtin_name(value) or Path(value)


# a config's ``llm`` field: a routing config file, or a built-in model's name (``load_llm_config``)
RoutingRef = Annotated[Path | str, AfterValidator(_routing_ref)]


def builtin_routing(name: str) -> dict[str, Any]:
    """``--llm qwen2.5-coder-1.5b``: one built-in model on the ``default`` route, which every route a command asks
    falls back to (nas's ``evaluator``, asked only when defined, is not), in process on llama.cpp (a context of 8192
    tokens, greedy, 512 new tokens at most; its profile the built-in's own), no routing config file needed."""
    return {
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 8192, "cache_type": "f16", "seed": 0}},
        "models": {name: {"provider": "local", "model": name, "params": {"temperature": 0, "max_tokens": 512}}},
        "routes": {"default": {"primary": [name]}},
        "timeout_s": 300}


def routing_source(path: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """What ``--llm`` names: ``(file, None)``, or ``(None, builtin_routing(name))`` for a built-in model's name;
    neither a file, a folder nor a built-in name is one error naming the built-ins."""
    name = builtin_name(path)
    if name is not None:
        return None, builtin_routing(name)
    if not Path(path).exists():
        near = close_builtin(str(path))  # `--llm qwen2.5-coder-0.5`: the built-in name, misspelled
        raise ConfigError(f"{path}: routing config not found",
                          hint=(f"did you mean {near}? Or g" if near else "G") + "ive a routing config file or a "
                          f"built-in model ({', '.join(BUILTIN_MODELS)}); `agentlab config examples .` writes "
                          "configs/llm.qwen.yaml and the other examples")
    return Path(path), None


def load_llm_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LLMConfig:
    """``--llm FILE``; with no file, ``configs/llm.yaml`` when present, else an empty config (no models). A built-in
    model's name where no such file is (``--llm qwen2.5-coder-1.5b``) is that model on the ``default`` route
    (``builtin_routing``). One that holds a ``***`` (a run folder's copy of a config with a credential agentlab does
    not write) is refused."""
    if path is None and DEFAULT_LLM_CONFIG.is_file():
        path = DEFAULT_LLM_CONFIG
    file, base = routing_source(path) if path is not None else (None, None)
    return load_config(file, LLMConfig, overrides, base=base, schema="llm", refuse_redacted=True)

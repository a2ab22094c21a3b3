"""`agentlab eval --base-url URL`: models an OpenAI-compatible server serves (`agentlab serve`, vLLM, llama.cpp's
server), scored through lm-eval's ``local-completions`` backend, which needs ``/v1/completions`` with ``echo`` and
``logprobs`` for log-likelihood and multiple-choice tasks (`agentlab serve` has it for its local models).

Each row is a served name: ``model`` (the base) and each of ``adapters`` (names the server serves, e.g. the adapters
of an ``hf`` provider). The probe and the applied check work on the served log-probabilities: each adapter must
change the log-probabilities of the probe prompt before it is scored, and its per-sample log-likelihoods after.
lm-eval counts tokens with a local tokenizer (``tokenizer``, else the model's own when it names a local model).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import InputError, MissingPackage, UsageError, pip_install
from agentlab.core.harness.evaluate import _env_info_once, logliks_of, quiet_bars
from agentlab.core.harness.lm import BASE, check_probe
from agentlab.core.models.load import hf_model_folder
from agentlab.eval.config import EvalConfig
from agentlab.eval.prepared import Prepared

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

    from agentlab.core.harness.evaluate import Settings


@dataclass
class ServedModels:
    """The rows of a served evaluation: served names, each one lm-eval ``local-completions`` model."""

    base_url: str
    base: str  # the served name of the base row
    tokenizer: str  # a local transformers folder
    batch_size: int = 8
    lms: dict[str, Any] = field(default_factory=dict)

    def name(self, adapter: str | None) -> str:
        return adapter if adapter is not None else self.base

    def lm(self, adapter: str | None) -> Any:
        name = self.name(adapter)
        if name not in self.lms:
            from lm_eval.api.registry import get_model

            try:
                self.lms[name] = get_model("local-completions")(
                    base_url=f"{self.base_url}/completions", model=name, tokenizer=self.tokenizer,
                    tokenizer_backend="huggingface", tokenized_requests=True, batch_size=self.batch_size,
                    num_concurrent=1, max_retries=2)
            except ModuleNotFoundError as exc:  # lm-eval's API models need its [api] extra (tenacity, aiohttp)
                raise MissingPackage(f"lm-eval's API backend is not installed ({exc})",
                                     hint=f"{pip_install('eval')} (it brings lm-eval[api])") from None
        return self.lms[name]

    def evaluate(self, adapter: str | None, tasks: Sequence[str], manager: TaskManager, settings: Settings
                 ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        from lm_eval import simple_evaluate

        _env_info_once()
        with quiet_bars():
            out = simple_evaluate(model=self.lm(adapter), tasks=list(tasks), task_manager=manager,
                                  limit=settings.limit, samples=settings.samples, num_fewshot=settings.num_fewshot,
                                  apply_chat_template=settings.chat_template, log_samples=True,
                                  bootstrap_iters=settings.bootstrap_iters, **settings.seeds())
        samples = out.pop("samples", {})
        return out, samples

    def loglikelihoods(self, pairs: Sequence[tuple[str, str]], adapter: str | None) -> list[float]:
        from lm_eval.api.instance import Instance

        requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
        return [float(ll) for ll, _ in self.lm(adapter).loglikelihood(requests, disable_tqdm=True)] if pairs else []

    def logliks(self, samples: dict[str, list[dict[str, Any]]], adapter: str | None) -> dict[str, list[float]]:
        return logliks_of(self, samples, adapter)

    def probe(self, prompt: str, adapters: Sequence[str]) -> dict[str, float]:
        """Each adapter's largest change to the served log-probabilities of ``prompt`` (its tokens and the likeliest
        next one), against the base's."""
        base = _prompt_logprobs(self.base_url, self.base, prompt)
        out = {}
        for name in adapters:
            mine = _prompt_logprobs(self.base_url, name, prompt)
            out[name] = max((abs(a - b) for a, b in zip(mine, base, strict=False)), default=0.0)
        return out


def _prompt_logprobs(base_url: str, model: str, prompt: str) -> list[float]:
    import httpx

    key = os.environ.get("OPENAI_API_KEY")
    try:
        reply = httpx.post(f"{base_url}/completions", json={"model": model, "prompt": prompt, "max_tokens": 1,
                                                            "echo": True, "logprobs": 1, "temperature": 0},
                           headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=300)
    except httpx.HTTPError as exc:
        raise UsageError(f"--base-url {base_url}: no answer ({exc})", hint="start the server first (agentlab serve)") \
            from None
    if reply.status_code != 200:
        raise InputError(f"{base_url}/completions refused '{model}' with echo and logprobs (HTTP "
                         f"{reply.status_code}: {reply.text[:300]})", hint=_NEEDS_LOGPROBS)
    try:
        values = [float(v) for v in reply.json()["choices"][0]["logprobs"]["token_logprobs"] if v is not None]
    except (ValueError, LookupError, TypeError):  # not JSON, no choices, logprobs missing or null
        raise InputError(f"{base_url}/completions returned no log-probabilities for '{model}' with echo and logprobs "
                         f"(choices[0].logprobs.token_logprobs; it answered: {reply.text[:300]})",
                         hint=_NEEDS_LOGPROBS) from None
    return values


_NEEDS_LOGPROBS = ("lm-eval's log-likelihood tasks need /v1/completions with echo and logprobs; "
                   "`agentlab serve` has it for its local models (hf, llama_cpp)")


def prepare_served(cfg: EvalConfig, manager: TaskManager) -> Prepared:
    """The served rows (probed), for ``run``."""
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise UsageError(f"api_key_env: {cfg.api_key_env} is not set", hint="export it, or put it in .env")
        os.environ["OPENAI_API_KEY"] = key
    base_url = cfg.base_url.rstrip("/") if cfg.base_url else ""
    try:
        tokenizer = str(hf_model_folder(cfg.tokenizer or cfg.model, user="lm-eval's tokenizer"))
    except InputError as exc:
        raise UsageError(f"no local tokenizer for '{cfg.model}': {exc.message}",
                         hint="name one with --set tokenizer=MODEL (a built-in, a transformers folder or a GGUF): "
                         "lm-eval counts tokens locally") from None
    names = [Path(a).name for a in cfg.adapters]  # served names (config.yaml keeps paths absolute: the last part)
    if BASE in names or cfg.model in names:
        raise UsageError("an adapter row has the name of the base row", hint="give each served name once")
    served = ServedModels(base_url, cfg.model, tokenizer, cfg.batch_size)
    probe = served.probe(cfg.probe, names)
    check_probe(probe, cfg.min_logit_change, {n: Path(n) for n in names})
    from transformers import AutoTokenizer

    chat = cfg.chat_template if cfg.chat_template != "auto" else bool(
        getattr(AutoTokenizer.from_pretrained(tokenizer), "chat_template", None))
    return Prepared({BASE: None, **{n: n for n in names}}, manager, {}, served=served, probe=probe,
                    chat_template=bool(chat))

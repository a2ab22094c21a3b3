"""lm-eval on a GGUF file through llama-cpp-python in process: what `compress` needs to score a GGUF experiment on the
backend it will run on (a de-quantized copy in transformers would not measure the quantization).

:class:`llama_lm` builds an lm-eval ``TemplateLM``: log-likelihoods token by token from the context's own logits
(:func:`agentlab.core.llm.scoring.llama_prompt_logprobs`; the context is evaluated once as a batch), greedy
generation with llama.cpp's sampler and the stop strings, and the GGUF's own chat template.

llama_cpp and lm_eval are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentlab.core.errors import missing_package
from agentlab.core.llm.providers.llama_cpp import _formatter
from agentlab.core.llm.scoring import RawRequest, complete_llama, llama_prompt_logprobs


def llama_lm(path: str | Path, *, n_ctx: int = 2048, threads: int | None = None) -> Any:
    """An lm-eval ``LM`` over the GGUF ``path`` (loaded now)."""
    try:
        import llama_cpp
        from lm_eval.api.model import TemplateLM
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    class LlamaCppLM(TemplateLM):
        def __init__(self) -> None:
            super().__init__()
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, logits_all=False,
                                       verbose=False)
            self.path = str(path)

        @property
        def eot_token_id(self) -> int:
            return int(self.llm.token_eos())

        @property
        def tokenizer_name(self) -> str:
            return Path(self.path).name

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
            return list(self.llm.tokenize(string.encode("utf-8"), add_bos=bool(add_special_tokens), special=True))

        def _loglikelihood_tokens(self, requests: list[Any], **kwargs: Any) -> list[tuple[float, bool]]:
            out = []
            for _, context, continuation in requests:
                scores = llama_prompt_logprobs(self.llm, context + continuation, top=1, first=len(context))
                values = scores.logprobs[len(context):]
                greedy = all(token in top and top[token] >= max(top.values()) for token, top in
                             zip(continuation, scores.top[len(context):], strict=True) if top is not None)
                out.append((float(sum(v for v in values if v is not None)), greedy))
            return out

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
            out = []
            for request in requests:
                tokens = [self.eot_token_id, *self.tok_encode(request.args[0])]
                scores = llama_prompt_logprobs(self.llm, tokens[: n_ctx], top=1)
                out.append(float(sum(v for v in scores.logprobs if v is not None)))
            return out

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in requests:
                context, kwargs = request.args
                until = kwargs.get("until") or []
                raw = RawRequest([self.tok_encode(context)], max_tokens=int(kwargs.get("max_gen_toks", 256)),
                                 stop=[until] if isinstance(until, str) else list(until))
                out.append(complete_llama(self.llm, raw)[0].text)
            return out

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            rendered = _formatter(self.llm, self.path)(messages=chat_history)
            return str(rendered.prompt)

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return str(self.llm.metadata.get("tokenizer.chat_template") or "") if chat_template else None

    return LlamaCppLM()

"""`/v1/completions` with echo and logprobs on the gateway's local backends: the per-token log-probabilities equal
the model's own (transformers for hf with an adapter, and llama.cpp for a GGUF), generation with stop strings, the
refusals; and lm-eval's `local-completions` backend scoring served models through `agentlab eval --base-url`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentlab.core.llm.config import LLMConfig
from agentlab.serve import Gateway, ServeConfig

PROMPT = "The cat sat on the mat and"


@pytest.fixture(scope="module")
def adapter(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from agentlab.core.train.tiny import make_tiny_adapter

    return make_tiny_adapter(tiny_model["hf"], tmp_path_factory.mktemp("completion-adapters") / "loud", seed=3,
                             scale=0.4)


def reference(model_dir: Path, ids: list[int], adapter: Path | None = None) -> list[float]:
    """log P(token_i | tokens before it) from transformers (and PEFT), the numbers the gateway must give."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]


def hf_llm(tiny_model: dict[str, Path], adapter: Path) -> LLMConfig:
    return LLMConfig.model_validate({
        "providers": {"local": {"kind": "hf", "device": "cpu", "adapters": {"loud": str(adapter)}}},
        "models": {"tiny": {"provider": "local", "model": str(tiny_model["hf"])}}, "timeout_s": 120})


def post(gw: Gateway, **body: Any) -> httpx.Response:
    return httpx.post(gw.base_url + "/completions", json=body, timeout=120)


def test_echo_logprobs_are_the_models_own_for_base_and_adapter(tiny_model: dict[str, Path], adapter: Path,
                                                                one_torch_thread: None) -> None:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model["hf"])(PROMPT).input_ids
    with Gateway(ServeConfig(port=0), hf_llm(tiny_model, adapter)) as gw:
        for name, adapter_dir in (("tiny", None), ("loud", adapter)):
            reply = post(gw, model=name, prompt=[ids, ids[:4]], echo=True, logprobs=2, max_tokens=1, temperature=0)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["object"] == "text_completion" and len(body["choices"]) == 2
            lp = body["choices"][0]["logprobs"]
            assert len(lp["token_logprobs"]) == len(ids) + 1 and lp["token_logprobs"][0] is None
            assert lp["top_logprobs"][0] is None and all(len(t) <= 2 for t in lp["top_logprobs"][1:])
            want = reference(tiny_model["hf"], ids, adapter_dir)
            assert max(abs(a - b) for a, b in zip(lp["token_logprobs"][1:len(ids)], want, strict=True)) < 1e-4
            generated = lp["token_logprobs"][-1]  # the greedy next token: the likeliest at the last position
            assert generated == pytest.approx(max(lp["top_logprobs"][-1].values()), abs=1e-6)
            assert body["choices"][0]["text"].startswith(PROMPT)
            assert body["usage"]["prompt_tokens"] == len(ids) + 4
        base = post(gw, model="tiny", prompt=PROMPT, echo=True, logprobs=0, max_tokens=0).json()["choices"][0]
        loud = post(gw, model="loud", prompt=PROMPT, echo=True, logprobs=0, max_tokens=0).json()["choices"][0]
        assert base["text"] == PROMPT and base["logprobs"]["tokens"][0] == "The"
        assert base["logprobs"]["token_logprobs"] != loud["logprobs"]["token_logprobs"]
        text = post(gw, model="tiny", prompt=PROMPT, max_tokens=6, stop=["\n"]).json()["choices"][0]
        assert "\n" not in text["text"] and text["logprobs"] is None
        for bad, says in ((dict(prompt=PROMPT, stream=True), "stream"), (dict(prompt=PROMPT, logprobs=99), "logprobs"),
                          (dict(prompt=PROMPT, max_tokens=0), "echo"), (dict(prompt=[]), "prompt"),
                          (dict(prompt=[ids, [5, 10**8]], max_tokens=1), "token id 100000000 is not in the model's"),
                          (dict(prompt=[10**8], echo=True, logprobs=1, max_tokens=0), "vocabulary")):
            refused = post(gw, model="tiny", **bad)
            assert refused.status_code == 400 and says in refused.json()["error"]["message"]
        assert post(gw, model="nope", prompt=PROMPT).status_code == 404


def test_llama_cpp_echo_logprobs_match_transformers(tiny_model: dict[str, Path]) -> None:
    pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_model["hf"])(PROMPT).input_ids
    llm = LLMConfig.model_validate({"providers": {"gguf": {"kind": "llama_cpp", "n_ctx": 256}},
                                    "models": {"tiny-gguf": {"provider": "gguf", "model": str(tiny_model["gguf"])}},
                                    "timeout_s": 120})
    with Gateway(ServeConfig(port=0), llm) as gw:
        body = post(gw, model="tiny-gguf", prompt=ids, echo=True, logprobs=1, max_tokens=2, temperature=0).json()
        lp = body["choices"][0]["logprobs"]
        assert len(lp["token_logprobs"]) == len(ids) + body["usage"]["completion_tokens"]
        want = reference(tiny_model["hf"], ids)
        assert max(abs(a - b) for a, b in zip(lp["token_logprobs"][1:len(ids)], want, strict=True)) < 1e-3
        for bad in (dict(prompt=[ids[0], 10**8], max_tokens=2), dict(prompt=[10**8], echo=True, logprobs=1,
                                                                           max_tokens=0)):
            refused = post(gw, model="tiny-gguf", **bad)  # llama.cpp failed the decode: a 500 without the reason
            assert refused.status_code == 400 and "not in the model's vocabulary" in refused.text, refused.text


def test_lm_eval_scores_served_models_through_agentlab_eval(tiny_model: dict[str, Path], adapter: Path, in_tmp: Path,
                                                            one_torch_thread: None) -> None:
    pytest.importorskip("lm_eval")
    from agentlab.cli import main

    with Gateway(ServeConfig(port=0), hf_llm(tiny_model, adapter)) as gw:
        assert main(["eval", "--base-url", gw.base_url, "--model", "tiny", "--adapter", "loud", "--tasks",
                     "agentlab_arithmetic_mc", "--limit", "4", "--set", f"tokenizer={tiny_model['hf']}",
                     "--set", "chat_template=false", "--out", "served"]) == 0
    served = json.loads((in_tmp / "served" / "results.json").read_text())
    assert list(served["rows"]) == ["base", "loud"] and served["probe"]["loud"] > 1e-3
    assert served["applied"]["loud"]["agentlab_arithmetic_mc"] > 1e-6
    # the same rows in process: the same log-likelihoods, item by item
    assert main(["eval", "--model", str(tiny_model["hf"]), "--adapter", str(adapter), "--tasks",
                 "agentlab_arithmetic_mc", "--limit", "4", "--set", "chat_template=false", "--set", "device=cpu",
                 "--out", "local"]) == 0
    for row in ("base", "loud"):
        a = [json.loads(line)["filtered_resps"] for line in
             (in_tmp / "served" / "lm-eval" / row / "samples_agentlab_arithmetic_mc.jsonl").read_text().splitlines()]
        b = [json.loads(line)["filtered_resps"] for line in
             (in_tmp / "local" / "lm-eval" / row / "samples_agentlab_arithmetic_mc.jsonl").read_text().splitlines()]
        flat_a = [float(x[0]) for item in a for x in item]
        flat_b = [float(x[0]) for item in b for x in item]
        assert max(abs(x - y) for x, y in zip(flat_a, flat_b, strict=True)) < 1e-3

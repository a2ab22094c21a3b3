"""`POST /v1/embeddings` with the real `openai` SDK: through an HTTP upstream (the scripted loopback server's
embeddings, base64 and float, `dimensions` passed on), on a local llama.cpp model (the loaded chat model embeds, and
chats the same afterwards) and a local transformers model (mean-pooled, normalised; the same vectors as llama.cpp for
the same f32 weights); the 400s for models that cannot embed and for bad input."""

from __future__ import annotations

import math

import httpx
import openai
import pytest
from openai.types import CreateEmbeddingResponse
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.testing.server import Reply, ScriptedServer, embedding_of


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)


def client(gw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=120)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_through_an_http_upstream(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    srv.default("emb", Reply())
    llm = upstream_llm(srv.base_url, ["emb", "chat-only"], {"vectors": {"primary": ["emb"]}})
    llm["providers"]["canned"] = {"kind": "scripted", "replies": ["hi"]}
    llm["models"]["canned"] = {"provider": "canned", "model": "canned"}
    gw = gateway(llm)
    texts = ["the cat sat", "a dog"]
    # the SDK asks for base64 by default and decodes it
    raw = client(gw).embeddings.with_raw_response.create(model="vectors", input=texts)
    reply = raw.parse()
    assert reply.model == "vectors" and raw.headers["x-agentlab-model"] == "emb"
    assert [d.index for d in reply.data] == [0, 1]
    for d, text in zip(reply.data, texts, strict=True):
        assert d.embedding == pytest.approx(embedding_of(text), abs=1e-6)
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (5, 5)
    assert srv.requests[-1] == {**srv.requests[-1], "model": "emb", "input": texts, "encoding_format": "float"}
    as_floats = client(gw).embeddings.create(model="emb", input="the cat sat", encoding_format="float",
                                             dimensions=4)
    assert as_floats.data[0].embedding == pytest.approx(embedding_of("the cat sat", 4))
    assert srv.requests[-1]["dimensions"] == 4
    body = httpx.post(gw.base_url + "/embeddings", json={"model": "emb", "input": ["x"]}).json()
    CreateEmbeddingResponse.model_validate(body)  # the SDK's own type, validated
    # an upstream without embeddings for the model, a provider that cannot embed: 400
    for name, says in (("chat-only", "model does not support embeddings"),
                       ("canned", "model 'canned' does not support embeddings")):
        with pytest.raises(openai.BadRequestError, match=says):
            client(gw).embeddings.create(model=name, input="x")
    # the upstream's own refusal of `dimensions` comes back as a 400 with its message
    srv.script("emb", [Reply(status=400, text="This model does not support specifying dimensions.")])
    with pytest.raises(openai.BadRequestError, match="does not support specifying dimensions") as err:
        client(gw).embeddings.create(model="emb", input="x", dimensions=3)
    assert err.value.body["param"] == "dimensions"  # it was null


def test_bad_embedding_requests_are_400s_naming_the_field(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    gw = gateway(upstream_llm(srv.base_url, ["emb"]))
    url = gw.base_url + "/embeddings"
    for body, param in (({"input": ""}, "input"), ({"input": []}, "input"), ({"input": [[1, 2, 3]]}, "input"),
                        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
                        ({"input": "x", "dimensions": 0}, "dimensions"), ({"input": 3}, "input"),
                        ({"input": "x", "dimension": 4}, "dimension")):  # unknown: refused, as OpenAI does
        response = httpx.post(url, json={"model": "emb", **body})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    assert httpx.post(url, json={"model": "nope", "input": "x"}).status_code == 404
    assert srv.requests == []


def test_local_models_embed_llama_cpp_and_transformers_alike(gateway, tiny_model, one_torch_thread) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    gw = gateway({"providers": {"gguf": {"kind": "llama_cpp", "n_ctx": 512}, "hf": {"kind": "hf", "device": "cpu"}},
                  "models": {"tiny": {"provider": "gguf", "model": str(tiny_model["gguf"]),
                                      "params": {"max_tokens": 8, "temperature": 0}},
                             "tiny-hf": {"provider": "hf", "model": str(tiny_model["hf"])}},
                  "routes": {}, "timeout_s": 120, "retries": 0})
    c = client(gw)
    ask = [{"role": "user", "content": "Name a colour."}]
    before = c.chat.completions.create(model="tiny", messages=ask).choices[0].message.content
    texts = ["the cat sat on the mat", "a completely different sentence about ships", "the cat sat on the mat"]
    local = c.embeddings.create(model="tiny", input=texts)
    vectors = [d.embedding for d in local.data]
    assert local.model == "tiny" and len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)  # normalised
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6) and cosine(vectors[0], vectors[1]) < 0.999
    assert local.usage.prompt_tokens > 10
    # the loaded chat model embedded: it chats the same afterwards
    assert c.chat.completions.create(model="tiny", messages=ask).choices[0].message.content == before
    assert c.embeddings.create(model="tiny", input="x", dimensions=64).data[0].embedding
    with pytest.raises(openai.BadRequestError, match="64-dimensional embeddings and cannot shorten") as err:
        c.embeddings.create(model="tiny", input="x", dimensions=32)
    assert err.value.body["param"] == "dimensions"  # it was null
    # transformers: mean-pooled last hidden state, normalised; the same weights give the same vectors
    hf = c.embeddings.create(model="tiny-hf", input=texts, encoding_format="float")
    assert all(cosine(a.embedding, b) > 0.999 for a, b in zip(hf.data, vectors, strict=True))
    assert hf.usage.prompt_tokens == local.usage.prompt_tokens

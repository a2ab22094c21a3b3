"""OpenAI's embeddings wire format (``POST /v1/embeddings``): ``input`` a string or a list of strings, ``model``,
``encoding_format`` (``float``, or ``base64``: the little-endian float32 bytes, which the ``openai`` SDK asks for by
default and decodes), ``dimensions`` (passed to an HTTP upstream; a local model gives its own size only).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from agentlab.core.llm.types import Embeddings
from agentlab.serve.protocol import ApiError, check_fields

__all__ = ["EmbeddingsRequest", "parse_embeddings", "embeddings_body", "MAX_INPUTS"]

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request
# The fields OpenAI's API documents for /v1/embeddings (the `openai` SDK's EmbeddingCreateParams); any other is refused.
EMBEDDINGS_FIELDS = frozenset({"input", "model", "dimensions", "encoding_format", "user"})


class EmbeddingsRequest:
    def __init__(self, model: str, texts: list[str], encoding: str, dimensions: int | None):
        self.model, self.texts, self.encoding, self.dimensions = model, texts, encoding, dimensions


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code, param=param, kind="bad_request")


def parse_embeddings(body: Any) -> EmbeddingsRequest:
    """Check an embeddings body; ``ApiError`` (400) names the field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    check_fields(body, EMBEDDINGS_FIELDS, "/v1/embeddings")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must name a route or a model (GET /v1/models lists them)", "model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        tokens = isinstance(texts, list) and texts and all(isinstance(t, (int, list)) for t in texts)
        raise _bad("'input' must be a string or a non-empty list of strings" + (
            " (token ids are not served: send the text)" if tokens else ""), "input")
    if len(texts) > MAX_INPUTS:
        raise _bad(f"'input' has {len(texts)} strings; at most {MAX_INPUTS} per request", "input")
    empty = next((i for i, t in enumerate(texts) if not t), None)
    if empty is not None:
        where = "'input'" if isinstance(raw, str) else f"'input[{empty}]'"  # the string sent, or the list's item
        raise _bad(f"{where} is empty: every input needs text", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad(f"'encoding_format' must be float or base64, got {json.dumps(encoding)[:40]}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or dimensions < 1):
        raise _bad("'dimensions' must be a positive integer", "dimensions")
    return EmbeddingsRequest(model, texts, encoding, dimensions)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embeddings_body(model: str, result: Embeddings, encoding: str) -> dict[str, Any]:
    """A ``list`` of ``embedding`` objects; ``model`` is the name the client asked for."""
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                     for i, v in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}

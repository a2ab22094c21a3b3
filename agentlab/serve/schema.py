"""A client's JSON schema (``response_format``) as the pydantic model type the router's structured path takes.

The router's structured output (``Router.structured``) works on pydantic models: it shows ``model_json_schema()`` to
the model, sends it as the request's ``json_schema`` (a grammar for llama.cpp, ``response_format`` upstream) and
validates the reply, with a bounded repair loop. A client sends a JSON schema instead, so the type built here returns
that schema as its own and validates with ``jsonschema``; every error becomes a pydantic validation error, which the
repair loop shows back to the model.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import RootModel, model_validator

from agentlab.serve.protocol import ApiError

__all__ = ["schema_model"]

_MAX_ERRORS = 8


def schema_model(schema: dict[str, Any], name: str = "output") -> type[RootModel[Any]]:
    """A ``RootModel`` whose JSON schema is ``schema`` and whose validation is ``jsonschema``'s; an invalid schema is
    an ``ApiError`` (400). Built once per distinct schema."""
    try:
        return _build(json.dumps(schema, sort_keys=True), name)
    except ApiError:
        raise
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f"response_format: the schema is not JSON: {exc}", "invalid_schema",
                       param="response_format", kind="bad_request") from None


@functools.lru_cache(maxsize=256)
def _build(text: str, name: str) -> type[RootModel[Any]]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    schema = json.loads(text)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ApiError(400, f"response_format: invalid JSON schema: {exc.message}", "invalid_schema",
                       param="response_format", kind="bad_request") from None
    validator = Draft202012Validator(schema)

    class ClientSchema(RootModel[Any]):
        @model_validator(mode="after")
        def _follows_schema(self) -> ClientSchema:
            errors = sorted(validator.iter_errors(self.root), key=lambda e: list(e.absolute_path))
            if errors:
                shown = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
                         for e in errors[:_MAX_ERRORS]]
                raise ValueError("; ".join(shown))
            return self

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return schema

    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "output"
    ClientSchema.__name__ = ClientSchema.__qualname__ = safe
    return ClientSchema

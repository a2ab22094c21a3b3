"""`agentlab serve`: the router as an OpenAI-compatible gateway (chat completions, the Responses API, embeddings,
models, health, metrics).

Importing this package is cheap: starlette, uvicorn and prometheus_client load when a gateway is built.
"""

from agentlab.serve.config import ServeConfig
from agentlab.serve.run import Gateway, prepare, run, serve

__all__ = ["Gateway", "ServeConfig", "prepare", "run", "serve"]

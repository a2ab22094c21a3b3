"""The HTTP provider and `agentlab llm-bench` against llama-cpp-python's own OpenAI-compatible server
(`python -m llama_cpp.server`) on a tiny GGUF, and `llm-bench` against the in-process llama_cpp and hf backends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentlab.cli import main
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import GenParams

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server on a free port, serving the tiny GGUF; yields the API root (…/v1)."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model["gguf"]), "--n_ctx", "512",
             "--host", "127.0.0.1", "--port", str(port), "--n_threads", "1",
             # By default the server cuts an in-flight stream when the next request arrives (llm-bench saw those
             # as `empty` answers at concurrency 2): queue requests instead.
             "--interrupt_requests", "False"],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start (exit {proc.poll()}):\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def ascii_only(text: str) -> str:
    return "".join(ch for ch in text if ch.isascii())


def http_config(base: str) -> dict:
    return {"providers": {"llamacpp": {"kind": "openai", "base_url": base}},
            # A random model may end a turn at once, which llm-bench rightly counts as an `empty` answer: bias the
            # end-of-text and end-of-turn tokens (ids 1 and 3 of the tiny tokenizer) away.
            "models": {"tiny-http": {"provider": "llamacpp", "model": "tiny",
                                     "params": {"temperature": 0, "logit_bias": {"1": -100, "3": -100}}}},
            "timeout_s": 30, "retries": 0}


def test_http_provider_generates_and_streams_against_llama_cpp_server(llama_server: str) -> None:
    with Router.from_config(LLMConfig.model_validate(http_config(llama_server))) as router:
        params = GenParams(max_tokens=12)
        first, again, streamed = (
            router.generate_sync([{"role": "user", "content": "hello there"}], params=params, stream=stream).completion
            for stream in (False, False, True))
    # The ChatML template from the GGUF wraps the prompt: 2 words become a dozen-plus tokens.
    assert first.usage.prompt_tokens > 8 and 0 < first.usage.completion_tokens <= 12
    assert first.finish_reason in {"stop", "length"}
    assert first.text == again.text  # greedy
    # The same answer over SSE. A random model emits byte tokens that are not valid UTF-8; the server's streaming
    # and non-streaming detokenizers drop or keep those differently, so compare the ASCII text.
    assert ascii_only(streamed.text) == ascii_only(first.text) != ""
    assert streamed.ttft_s is not None and streamed.ttft_s <= streamed.latency_s
    # usage is asked for in the stream, but llama-cpp-python's server does not send it: recorded as not reported
    assert streamed.usage.reported is False and first.usage.reported is True


def test_llm_bench_against_llama_cpp_server(llama_server: str, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "llm.yaml"
    config.write_text(json.dumps(http_config(llama_server)))
    code = main(["llm-bench", "-c", str(config), "--requests", "3", "--concurrency", "1,2", "--max-tokens", "8",
                 "--json", "--out", str(in_tmp / "bench")])
    assert code == 0
    model = json.loads(capsys.readouterr().out)["models"][0]
    assert model["available"] and model["ok"] == model["requests"] == 6
    assert model["ttft_s"]["p50"] is not None and model["output_tokens_per_s"] > 0


def test_llm_bench_against_in_process_backends(tiny_model: dict[str, Path], in_tmp: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "llm.yaml"
    config.write_text(json.dumps({
        "providers": {"gguf": {"kind": "llama_cpp", "n_ctx": 512, "n_threads": 1},
                      "transformers": {"kind": "hf", "device": "cpu"}},
        "models": {"tiny-gguf": {"provider": "gguf", "model": str(tiny_model["gguf"])},
                   "tiny-hf": {"provider": "transformers", "model": str(tiny_model["hf"])}},
        "timeout_s": 60, "retries": 0}))
    code = main(["llm-bench", "-c", str(config), "--requests", "2", "--concurrency", "1,2", "--max-tokens", "8",
                 "--json", "--out", str(in_tmp / "bench")])
    assert code == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    for name in ("tiny-gguf", "tiny-hf"):
        assert models[name]["available"], models[name]
        assert models[name]["ok"] == models[name]["requests"] == 4
        assert models[name]["ttft_s"]["p50"] is not None  # both stream in-process

"""A server that answers whole (it ignores `stream: true`) and without `usage`: the router's llm_call event, the
completion and llm-bench give it no time to first token (the router timed its one piece after the whole answer was
read, TTFT ~= latency), and its output tokens are an estimate (`reported=False`), not a measured 0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.core.llm import LLMConfig, Router
from agentlab.core.llm.providers.openai import OpenAIProvider
from agentlab.core.llm.types import Completion, GenParams, Messages, StreamDelta, Usage

TEXT = "".join(f"w{i} " for i in range(20))  # 70 characters: about 18 tokens (4 characters a token)
ASK = [{"role": "user", "content": "hi"}]


class _Whole(BaseHTTPRequestHandler):
    """One chat completion with no `usage`, whatever `stream` says."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        body = json.dumps({"id": "x", "object": "chat.completion", "model": request["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def whole(http_server: Callable[[type[BaseHTTPRequestHandler]], Any]) -> str:
    return f"{http_server(_Whole).url}/v1"


def test_an_answer_without_usage_is_an_estimate_not_zero(whole: str) -> None:
    async def both() -> tuple[Completion, Completion]:
        provider = OpenAIProvider("w", whole)
        try:
            *_, streamed = [item async for item in provider.stream("m", ASK, GenParams(), 10.0)]
            plain = await provider.generate("m", ASK, GenParams(), 10.0)
        finally:
            await provider.aclose()
        assert isinstance(streamed, Completion)
        return streamed, plain

    for completion in asyncio.run(both()):
        assert completion.text == TEXT and completion.ttft_s is None
        usage = completion.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (0, 18, False)


def test_the_router_gives_a_whole_answer_no_first_token_time(whole: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cfg = LLMConfig.model_validate({"providers": {"w": {"kind": "openai", "base_url": whole}},
                                    "models": {"m": {"provider": "w", "model": "m", "stream": True}},
                                    "routes": {"default": {"primary": ["m"]}}, "retries": 0})
    router = Router.from_config(cfg, lambda kind, **data: events.append((kind, data)))
    try:
        completion = router.generate_sync(ASK, stream=True).completion
    finally:
        router.close()
    assert completion.text == TEXT and completion.ttft_s is None
    (call,) = [data for kind, data in events if kind == "llm_call"]
    assert call["outcome"] == "ok" and call["ttft_s"] is None
    assert call["prompt_tokens"] is None and call["completion_tokens"] == 18


class _Pieces:
    """A provider that streams ``pieces`` and leaves the time to first token to the router."""

    name = "pieces"
    supports_stream = True

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        raise AssertionError("streamed only")

    async def stream(self, model: str, messages: Messages, params: GenParams,
                     timeout_s: float) -> AsyncIterator[StreamDelta | Completion]:
        for piece in self.pieces:
            await asyncio.sleep(0.01)
            yield StreamDelta(piece)
        yield Completion("".join(self.pieces), model, Usage(1, len(self.pieces)), latency_s=0.01 * len(self.pieces))

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(("pieces", "timed"), [(["a ", "b ", "c"], True), (["a b c"], False)])
def test_the_router_times_a_stream_of_pieces_not_one_whole_piece(pieces: list[str], timed: bool) -> None:
    from agentlab.core.llm.router import _stream

    final = asyncio.run(_stream(_Pieces(pieces), "m", ASK, GenParams(), 10.0))  # type: ignore[arg-type]
    assert final.text == "a b c"
    assert (final.ttft_s is not None) == timed
    if timed:
        assert final.ttft_s is not None and 0.005 <= final.ttft_s < 0.025


def test_llm_bench_marks_a_whole_answers_tokens_estimated(whole: str, in_tmp: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "llm.yaml").write_text(f"providers:\n  w: {{kind: openai, base_url: '{whole}'}}\n"
                                     "models:\n  m: {provider: w, model: m}\nretries: 0\nbench: {tools: false}\n")
    assert main(["llm-bench", "-c", "llm.yaml", "--requests", "2", "--concurrency", "1", "--out", "r"]) == 0
    (model,) = json.loads((in_tmp / "r" / "results.json").read_text())["models"]
    assert model["tokens_estimated"] is True and model["ttft_s"]["p50"] is None
    (level,) = model["levels"]
    assert level["tokens_estimated"] is True and level["throughput_tokens_per_s"] > 0
    report = (in_tmp / "r" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| m | 1 |"))
    assert row.rstrip(" |").rsplit("| ", 1)[1].startswith("~")
    assert "an answer sent whole as one token per four characters" in " ".join(report.split())
    assert "an answer sent whole as one token per four characters" in " ".join(capsys.readouterr().err.split())

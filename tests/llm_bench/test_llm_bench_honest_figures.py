"""llm-bench's figures say only what was measured: a server that ignores `stream: true` has no TTFT nor a decode
speed of billions of tokens a second; output tokens counted from stream chunks are marked estimated; a route record's
`fallbacks` means one thing answered or failed; an interrupted report's advice fits the run; the chart's names and
legend sit clear of the bars; the docs' Python example skips the tool probe as --demo does."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.testing.server import Reply, ScriptedServer

REPO = Path(__file__).resolve().parents[2]
WORDS = [f"w{i} " for i in range(20)]


class _Quirky(BaseHTTPRequestHandler):
    """An OpenAI-compatible server with the quirks of real ones, chosen by the model name: ``plain`` answers one
    chat completion whatever `stream` says; ``nousage`` streams a token a chunk with no usage; ``bigchunk`` streams
    the whole answer as one chunk (with usage), everything in one write."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        model = request["model"]
        usage = {"prompt_tokens": 5, "completion_tokens": len(WORDS), "total_tokens": 5 + len(WORDS)}
        if model == "plain" or not request.get("stream"):
            self._send(json.dumps({"id": "x", "object": "chat.completion", "model": model, "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}]}
            ).encode(), "application/json")
            return

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "model": model, **extra,
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        if model == "bigchunk":
            self._send((event({"content": "".join(WORDS)}) + event({}, "stop", usage=usage)
                        + "data: [DONE]\n\n").encode(), "text/event-stream")
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for text in [*(event({"content": word}) for word in WORDS), event({}, "stop"), "data: [DONE]\n\n"]:
            time.sleep(0.002)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(text), text.encode()))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def quirky(http_server: Callable[[type[BaseHTTPRequestHandler]], Any]) -> str:
    return f"{http_server(_Quirky).url}/v1"


def _config(path: Path, base_url: str, *names: str) -> Path:
    path.write_text(f"providers:\n  q: {{kind: openai, base_url: '{base_url}'}}\nmodels:\n"
                    + "".join(f"  {name}: {{provider: q, model: {name}}}\n" for name in names)
                    + "retries: 0\nbench: {tools: false}\n")
    return path


def test_a_server_ignoring_stream_has_no_ttft_nor_decode_speed(quirky: str, in_tmp: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """It reported TTFT = the whole latency and a decode speed of ~19,000,000,000 tokens/s (the tokens after the
    first over the ~0 s between the "first token" and the end); an answer in one chunk did the same."""
    config = _config(in_tmp / "llm.yaml", quirky, "plain", "bigchunk")
    assert main(["llm-bench", "-c", str(config), "--requests", "3", "--concurrency", "1", "--out", "r"]) == 0
    models = {m["name"]: m for m in json.loads((in_tmp / "r" / "results.json").read_text())["models"]}
    plain, big = models["plain"], models["bigchunk"]
    assert plain["ok"] == 3 and plain["stream"] is True
    assert plain["ttft_s"] == {"p50": None, "p90": None, "p99": None} and plain["output_tokens_per_s"] is None
    assert big["ok"] == 3 and big["ttft_s"]["p50"] is not None and big["output_tokens_per_s"] is None
    report = " ".join((in_tmp / "r" / "report.md").read_text().split())
    assert "Asked for a stream but answered whole" in report and "came in one piece" in report


def test_a_whole_answer_through_the_router_is_no_first_token() -> None:
    """The provider gives a plain answer no TTFT; the router then times its one piece after the whole answer was
    read (at or past the latency), which llm-bench does not take for a first token."""
    import asyncio

    from agentlab.core.llm.types import Completion, Usage
    from agentlab.llm_bench.run import Sample, _summarise, _timed

    async def answered(ttft: float) -> Completion:
        return Completion("x " * 20, "m", Usage(5, 20), latency_s=0.2, ttft_s=ttft)

    assert asyncio.run(_timed(answered(0.2001))).ttft_s is None
    assert asyncio.run(_timed(answered(0.05))).ttft_s == 0.05
    # tokens that came in one piece: no decode speed over the ~0 s after the first (never a division by ~0)
    whole = Sample(ok=True, latency_s=0.2, ttft_s=0.2 - 1e-6, output_tokens=20)
    assert _summarise([whole])["output_tokens_per_s"] is None
    assert _summarise([whole, Sample(ok=True, latency_s=1.0, ttft_s=0.2, output_tokens=9)])[
        "output_tokens_per_s"] == 10.0


def test_openai_provider_gives_a_plain_answer_to_a_stream_no_ttft(quirky: str) -> None:
    import asyncio

    from agentlab.core.llm.providers.openai import OpenAIProvider
    from agentlab.core.llm.types import Completion, GenParams

    async def final() -> Completion:
        provider = OpenAIProvider("q", quirky)
        try:
            items = [item async for item in provider.stream("plain", [{"role": "user", "content": "hi"}],
                                                             GenParams(max_tokens=8), 10.0)]
        finally:
            await provider.aclose()
        assert isinstance(items[-1], Completion)
        return items[-1]

    completion = asyncio.run(final())
    assert completion.text == "".join(WORDS) and completion.ttft_s is None and completion.usage.completion_tokens == 20


def test_output_tokens_without_usage_are_marked_estimated(quirky: str, in_tmp: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """A stream without usage had its chunks counted as output tokens and shown as measured."""
    config = _config(in_tmp / "llm.yaml", quirky, "nousage", "bigchunk")
    assert main(["llm-bench", "-c", str(config), "--requests", "2", "--concurrency", "1", "--out", "r"]) == 0
    results = json.loads((in_tmp / "r" / "results.json").read_text())
    models = {m["name"]: m for m in results["models"]}
    assert models["nousage"]["tokens_estimated"] is True and models["bigchunk"]["tokens_estimated"] is False
    assert [lv["tokens_estimated"] for lv in models["nousage"]["levels"]] == [True]
    assert [lv["tokens_estimated"] for lv in models["bigchunk"]["levels"]] == [False]
    report = (in_tmp / "r" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| nousage | yes"))
    assert row.rstrip(" |").rsplit("| ", 1)[1].startswith("~")
    level = next(line for line in report.splitlines() if line.startswith("| nousage | 1 |"))
    assert level.rstrip(" |").rsplit("| ", 1)[1].startswith("~")
    assert "each stream chunk counted as one output token" in " ".join(report.split())
    err = " ".join(capsys.readouterr().err.split())
    assert "each stream chunk counted as one output token" in err


def test_a_failed_routed_request_counts_its_fallbacks_as_an_answered_one(srv: ScriptedServer, in_tmp: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A failed request's `fallbacks` was its attempts, retries included (4 on a route of two models), and its
    `fallback_time_s` 0.0: "0.000 s lost to fallbacks" when every request failed through the chain."""
    srv.default("broken-a", Reply(status=500))
    srv.default("broken-b", Reply(status=500))
    srv.default("fine", Reply(text="one two three"))
    config = in_tmp / "llm.yaml"
    config.write_text(
        f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
        "models:\n  a: {provider: loop, model: broken-a}\n  b: {provider: loop, model: broken-b}\n"
        "  fine: {provider: loop, model: fine}\n"
        "routes:\n  dead: {primary: [a], fallback: [b]}\n  default: {primary: [fine]}\nretries: 1\n"
        "bench: {tools: false}\n")
    assert main(["llm-bench", "-c", str(config), "-m", "fine", "--route", "dead", "--requests", "2",
                 "--concurrency", "1", "--out", "r"]) == 0
    route = json.loads((in_tmp / "r" / "results.json").read_text())["route"]
    assert [(r["ok"], r["model"], r["fallbacks"], r["fallback_time_s"]) for r in route] == [(False, None, 1, None)] * 2
    said = " ".join(capsys.readouterr().err.split())
    assert re.search(r"2/2 failed \(every model of the route, \d+\.\d{3} s spent on them\); 0/2 answered after a "
                     r"fallback, 0\.000 s lost to fallbacks before their answers", said), said


def test_an_interrupted_non_demo_report_gives_no_demo_advice(in_tmp: Path) -> None:
    """It said "measure again with `agentlab llm-bench -c RUN/config.yaml` (a --demo run: `agentlab llm-bench
    --demo`)" for a run that was no demo run; the terminal line names the config as its first line does."""
    from agentlab.llm_bench.report import measure_again, render_report

    results = {"models": [], "interrupted": True, "available": [], "fastest": None, "settings": {}}
    report = render_report(results, in_tmp, rerun=None)
    assert f"measure again with `agentlab llm-bench -c {in_tmp.absolute() / 'config.yaml'}`." in report
    assert "--demo`" not in report
    # a config.yaml that cannot tell (damaged first line): both
    assert "(a --demo run: `agentlab llm-bench --demo` with the run's options)" in measure_again(Path("c.yaml"))


def test_the_charts_names_are_centred_and_its_legend_covers_no_bar(in_tmp: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With two series each name sat on the second bar; the legend (lower right) covered the longest bars."""
    pytest.importorskip("matplotlib")
    from agentlab.llm_bench import report

    figures: list[Any] = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path, **kw: figures.append(fig))
    for ttft in (0.05, None):  # three series, then two (not streamed)
        models = [{"name": name, "available": True, "ttft_s": {"p50": ttft}, "latency_s": {"p50": lat, "p90": lat}}
                  for name, lat in (("fast", 0.1), ("slow", 0.9))]
        report.save_chart(models, in_tmp / "latency.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    assert len(figures) == 2
    for fig in figures:
        ax = fig.axes[0]
        canvas = FigureCanvasAgg(fig)  # save_chart closed it: a canvas to measure on
        canvas.draw()
        renderer = canvas.get_renderer()
        bars = [patch for container in ax.containers for patch in container]
        for row, tick in enumerate(ax.get_yticks()):
            group = [bar for bar in bars if row - 0.01 <= bar.get_y() + bar.get_height() / 2 < row + 0.8]
            low = min(bar.get_y() for bar in group)
            high = max(bar.get_y() + bar.get_height() for bar in group)
            assert tick == pytest.approx((low + high) / 2)
        legend = fig.legends[0].get_window_extent(renderer)
        assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in bars)
        assert not legend.overlaps(ax.xaxis.label.get_window_extent(renderer))  # nor the axis' name


def test_the_docs_python_example_skips_the_tool_probe_as_the_demo_does(capsys: pytest.CaptureFixture) -> None:
    """The page says the demo turns the probe off, but its Python example (demo_config, which has no bench section)
    probed the text-only demo models and reported each as failing it."""
    page = (REPO / "docs" / "commands" / "llm-bench.md").read_text(encoding="utf-8")
    code = page.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "llm-bench.md", "exec"), namespace)  # noqa: S102 - the docs' own example
    results = namespace["results"]
    assert results["settings"]["tools"] is False and not any("tool_call" in m for m in results["models"])
    assert results["available"] == ["demo-fast", "demo-slow"]

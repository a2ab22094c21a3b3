"""Dockerfile, Dockerfile.cuda and docker-compose.yml: `docker compose config` accepts the compose file (skipped where
docker compose is not installed), both images install from the lock with the README's own install command, and the
vLLM service serves the persona names that the debate's routing config asks for. No image is built here (no Docker
daemon, no GPU)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]  # CPU, CUDA


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
    assert services == ({"ui", "serve", "agentlab", "agentlab-cuda", "vllm"} if profile else {"ui", "serve"})


def readme_install_commands() -> list[str]:
    """The commands of the README's first code block (the set-up commands), comments dropped."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block is not None
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(instruction, arguments) of each line of a Dockerfile, continuation lines joined, comments dropped."""
    text = (REPO / name).read_text().replace("\\\n", " ")
    return [(line.split()[0], " ".join(line.split()[1:])) for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def dockerfile_runs(name: str) -> list[str]:
    return [args for instruction, args in dockerfile_instructions(name) if instruction == "RUN"]


def dockerfile_installs(name: str) -> list[str]:
    parts = [part.strip() for run in dockerfile_runs(name) for part in run.split("&&")]
    return [part for part in parts if part.startswith("make ") or "pip install" in part
            or part.split()[0].rsplit("/", 1)[-1] in ("uv", "uvx")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_installs_with_the_readme_install_command(dockerfile: str) -> None:
    readme = readme_install_commands()
    assert "make install" in readme
    installs = dockerfile_installs(dockerfile)
    assert installs, f"{dockerfile} installs nothing"
    makefile = (REPO / "Makefile").read_text()
    readme_text = (REPO / "README.md").read_text()
    for command in installs:
        words = command.split()
        assert words[:2] == ["make", "install"], f"{dockerfile}: `{command}` is not the README's `make install`"
        for assignment in words[2:]:  # only the Makefile's variables, each explained in the README
            name = assignment.split("=")[0]
            assert re.search(rf"^{name}\s*\?=", makefile, re.M), f"{name} is not a variable of the Makefile"
            assert f"{name}=" in readme_text, f"the README does not say what {name} does"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_copies_the_lock_before_it_installs(dockerfile: str) -> None:
    """`make install` runs `uv sync --locked`, which needs uv.lock beside pyproject.toml in the image."""
    steps = dockerfile_instructions(dockerfile)
    copied = [i for i, (instruction, args) in enumerate(steps)
              if instruction == "COPY" and "uv.lock" in args.split()[:-1]]  # a source, not the destination
    install = next(i for i, (instruction, args) in enumerate(steps) if instruction == "RUN" and "make install" in args)
    assert copied and copied[0] < install, f"{dockerfile} does not COPY uv.lock before `make install`"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not {"uv.lock", "*.lock"} & set(ignored), ".dockerignore keeps uv.lock out of the build context"
    assert any("/root/.cache/uv" in run for run in dockerfile_runs(dockerfile)), "uv's cache stays in the image"


def test_the_cuda_image_builds_llama_cpp_with_cuda_and_uses_the_gpu_in_compose() -> None:
    steps = dockerfile_instructions("Dockerfile.cuda")
    assert steps[0][0] == "FROM" and steps[0][1].startswith("nvidia/cuda:") and "-devel-" in steps[0][1]
    cmake_args = [args for instruction, args in steps
                  if instruction in ("ARG", "ENV") and args.startswith("CMAKE_ARGS")]
    assert cmake_args and "-DGGML_CUDA=on" in cmake_args[0] and "-DGGML_NATIVE=OFF" in cmake_args[0]
    # no driver at build time: llama.cpp's executables link against libggml-cuda.so, whose libcuda.so.1 is the
    # driver's (abetlen/llama-cpp-python#2061); linked as llama.cpp's own CUDA image does, resolved at run time
    flags = cmake_args[0].split("=", 1)[1].strip('"').split()  # as llama-cpp-python's build splits CMAKE_ARGS
    assert "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" in flags
    assert not any("TORCH_INDEX" in command for command in dockerfile_installs("Dockerfile.cuda"))  # PyPI's CUDA torch
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["agentlab-cuda"]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile.cuda"} and service["profiles"] == ["gpu"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


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
    for name in ("ui", "serve", "agentlab", "agentlab-cuda"):
        service = services[name]
        assert service["environment"]["VLLM_BASE_URL"] == "http://vllm:8000/v1"
        assert {v.split(":")[1] for v in service["volumes"]} == {"/app/configs", "/app/models", "/app/adapters",
                                                                  "/app/runs", "/root/.cache/agentlab"}
    assert services["ui"]["command"][:1] == ["ui"] and services["ui"]["ports"] == ["127.0.0.1:8501:8501"]
    assert services["serve"]["command"] == ["serve", "--llm", "configs/llm.yaml", "--host", "0.0.0.0", "--port", "8000"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_copies_the_example_projects_before_it_installs(dockerfile: str) -> None:
    """The docs run `agentlab nas -c examples/own_code/nas.yaml`; the images had no examples/ (and setup.py installs
    the folder as agentlab.examples, so the install needs it there)."""
    steps = dockerfile_instructions(dockerfile)
    copied = [i for i, (instruction, args) in enumerate(steps) if instruction == "COPY" and args == "examples examples"]
    install = next(i for i, (instruction, args) in enumerate(steps) if instruction == "RUN" and "make install" in args)
    assert copied and copied[0] < install, f"{dockerfile} does not COPY examples before `make install`"
    assert "examples" not in (REPO / ".dockerignore").read_text().split()


def test_compose_keeps_agentlabs_cache_and_passes_the_keys_the_docs_name() -> None:
    """Each `docker compose run --rm agentlab ... --llm qwen2.5-coder-0.5b` assembled the model's 0.5-1 GiB again in a
    fresh container: the cache is a named volume. The keys passed from the host are the ones getting-started names,
    each to the service it says (HF_TOKEN to vLLM alone: agentlab never downloads from the hub)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    agentlab_services = ("ui", "serve", "agentlab", "agentlab-cuda")
    for name in agentlab_services:
        mounts = dict(v.split(":")[:2][::-1] for v in compose["services"][name]["volumes"])
        assert mounts.get("/root/.cache/agentlab") in compose["volumes"], name  # a named volume, not a host folder
    docs = (REPO / "docs" / "getting-started.md").read_text()
    docker = docs[docs.index("### Docker"):docs.index("### How a release is cut")]
    keys = {name: {k for k in compose["services"][name].get("environment", {}) if k.endswith(("_KEY", "_TOKEN"))}
            for name in (*agentlab_services, "vllm")}
    assert all(keys[name] == {"OPENROUTER_API_KEY", "OPENAI_API_KEY"} for name in agentlab_services), keys
    assert keys["vllm"] == {"HF_TOKEN"}
    assert "`OPENROUTER_API_KEY` and `OPENAI_API_KEY` to the agentlab services" in " ".join(docker.split())
    assert "`HF_TOKEN` to the `vllm` service alone" in " ".join(docker.split())
    assert "/root/.cache/agentlab" in docker

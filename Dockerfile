# agentlab, CPU image: the toolkit with every extra, installed from the lock (uv.lock) by the README's `make install`;
# `agentlab` is the entrypoint. The CUDA image is Dockerfile.cuda.
#   docker build -t agentlab:cpu .
#   docker run --rm -v "$PWD/runs:/app/runs" agentlab:cpu nas --max-iterations 5
#   docker compose up ui          (docker-compose.yml: the UI, agentlab serve, and vLLM with the persona LoRAs)
FROM python:3.11-slim-bookworm

# make and a C/C++ toolchain with cmake: llama-cpp-python compiles from source (a CPU build, see the Makefile);
# git: run.json records the commit when there is one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml uv.lock setup.py Makefile README.md ./
COPY agentlab agentlab
COPY cli cli
COPY configs configs
# the example projects the docs run (agentlab nas -c examples/own_code/nas.yaml); installed as agentlab.examples
COPY examples examples
COPY benchmarks benchmarks

# The README's install command. PyPI's Linux torch wheel is the CUDA build (several GB with its libraries):
# TORCH_INDEX takes the lock's torch version as the CPU build from PyTorch's own index instead. The caches go (uv's;
# pip's holds uv itself, which the Makefile installs into .tools/).
RUN make install TORCH_INDEX=https://download.pytorch.org/whl/cpu \
    && rm -rf /root/.cache/uv /root/.cache/pip

ENV PATH=/app/.venv/bin:$PATH \
    AGENTLAB_RUNS=/app/runs \
    MPLBACKEND=Agg
# Configs, local models, persona adapters and run folders live on the host (docker-compose.yml mounts them).
RUN mkdir -p /app/models /app/adapters /app/runs
VOLUME ["/app/configs", "/app/models", "/app/adapters", "/app/runs"]
# 8501: agentlab ui; 8000: agentlab serve
EXPOSE 8501 8000
ENTRYPOINT ["agentlab"]
CMD ["--help"]

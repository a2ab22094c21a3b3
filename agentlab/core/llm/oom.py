"""Recognising an out-of-memory failure, whichever library reports it and on which memory.

The providers turn such a failure into ``LLMError(kind="out_of_memory")`` (not retryable: the same request on the same
settings runs out again), and a caller that can change the settings (a pipeline stage: a smaller context, or the CPU)
tries once more before falling back. The messages matched are the ones torch and llama.cpp print:

- torch, CUDA: ``torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB ...``
- torch, Metal: ``MPS backend out of memory (MPS allocated: ...)``
- torch, host: ``[enforce fail at alloc_cpu.cpp:117] ... DefaultCPUAllocator: can't allocate memory: you tried to
  allocate ... bytes`` (and Python's own ``MemoryError``)
- llama.cpp, CUDA: ``ggml_backend_cuda_buffer_type_alloc_buffer: allocating ... MiB on device 0: cudaMalloc failed:
  out of memory``, ``CUDA error: out of memory``
- llama.cpp, Metal: ``ggml_metal_graph_compute: command buffer 0 failed with status 5 ... Insufficient Memory
  (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)``, ``ggml_backend_metal_buffer_type_alloc_buffer: error:
  failed to allocate buffer``
- llama.cpp, host: ``ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size ...``,
  ``llama_kv_cache_init: failed to allocate buffer for kv cache``, ``std::bad_alloc``
- llama-cpp-python, either: ``Failed to create llama_context`` (llama.cpp's own log is off with ``verbose=False``, and
  creating a context fails when its KV cache or compute buffers cannot be allocated), on the GPU when layers were
  offloaded, else on the host.
"""

from __future__ import annotations

import re

OOM_KIND = "out_of_memory"

# (memory, pattern): the first match names the memory; Metal before the generic "failed to allocate buffer".
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("cuda", re.compile(r"CUDA out of memory|cudaMalloc failed: out of memory|CUDA error: out of memory|"
                        r"CUBLAS_STATUS_ALLOC_FAILED|cuda\w*_alloc\w*: .*out of memory", re.I)),
    ("metal", re.compile(r"MPS backend out of memory|kIOGPUCommandBufferCallbackErrorOutOfMemory|"
                         r"ggml_(backend_)?metal\w*: (error: )?failed to allocate|Insufficient Memory", re.I)),
    ("host", re.compile(r"DefaultCPUAllocator: (can't allocate memory|not enough memory)|"
                        r"ggml_backend_cpu\w*: failed to allocate|failed to allocate buffer|std::bad_alloc|"
                        r"Cannot allocate memory|unable to allocate [\d.]+ \w+ for an array", re.I)),
]
_CONTEXT = re.compile(r"Failed to create llama_context", re.I)


def oom_memory(error: BaseException | str, *, offloaded: bool = False) -> str | None:
    """The memory an out-of-memory failure ran out of (``cuda``, ``metal``, ``gpu``, ``host``), or None when
    ``error`` is not one. ``offloaded``: the model had layers on a GPU (names a bare llama_context failure)."""
    if isinstance(error, MemoryError):
        return "host"
    if isinstance(error, BaseException) and type(error).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        return "cuda"
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    for memory, pattern in _PATTERNS:
        if pattern.search(text):
            return memory
    if _CONTEXT.search(text):
        return "gpu" if offloaded else "host"
    return None


def on_gpu(memory: str | None) -> bool:
    """Whether an out-of-memory failure was in GPU memory (CUDA, Metal or an unnamed GPU)."""
    return memory in ("cuda", "metal", "gpu")


def oom_message(model: str, memory: str, during: str, error: BaseException | str) -> str:
    """The one-line message of an ``out_of_memory`` ``LLMError``: the memory first, then the library's words."""
    words = " ".join(str(error).split())[:300] or type(error).__name__
    return f"{model}: out of {memory} memory while {during} ({words})"

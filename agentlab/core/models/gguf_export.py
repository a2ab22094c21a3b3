"""HF causal LM folder -> GGUF file llama.cpp loads, and llama.cpp's own quantizer.

:func:`export_gguf` writes a Llama or Qwen2 ``save_pretrained`` folder (the tiny test models, the built-in SmolLM2
de-quantized by ``convert.gguf_to_hf``, a merged persona adapter) as a GGUF: hyper-parameters, the byte-level BPE
tokenizer (from the folder's ``tokenizer.json``, or copied key by key from a GGUF file), the chat template, and the
weights with Q/K rows in the RoPE order llama.cpp expects. :func:`quantize_gguf` turns an f32/f16 GGUF into q8_0,
q4_k_m, ... through llama.cpp.

numpy, safetensors, transformers, gguf and llama_cpp are imported inside the functions, so importing this module
stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import AgentlabError
from agentlab.core.progress import Progress

if TYPE_CHECKING:
    import numpy as np

# HF architecture -> GGUF architecture: what this exporter can write.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
GGUF_DTYPES = ("f32", "f16")
# llama_ftype values from llama.h; the names follow `llama-quantize --help`. Largest first. The K-quants (`_k`) need
# rows that are a multiple of 256 values; llama.cpp stores other tensors with a 32-block fallback type.
QUANT_KINDS = {"f16": 1, "q8_0": 7, "q6_k": 18, "q5_k_m": 17, "q5_k_s": 16, "q5_1": 9, "q5_0": 8, "q4_k_m": 15,
               "q4_k_s": 14, "q4_1": 3, "q4_0": 2, "q3_k_m": 12, "q2_k": 10}
# Tokens that end a chat turn (ChatML, Llama 3): the first one the vocabulary has becomes llama.cpp's EOT token.
EOT_TOKENS = ("<|im_end|>", "<|eot_id|>")
# Per-layer HF parameter suffix -> llama.cpp tensor name (without the `blk.N.` prefix).
_LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_architecture(config: dict[str, Any], where: str | Path) -> str:
    """The GGUF architecture name for an HF ``config.json`` dict, or ``AgentlabError`` naming the supported ones."""
    arch = ARCHITECTURES.get((config.get("architectures") or [""])[0])
    if arch is None:
        raise AgentlabError(
            f"{where}: cannot export architecture {config.get('architectures')} to GGUF "
            f"(supported: {', '.join(ARCHITECTURES)})",
            hint="use llama.cpp's convert_hf_to_gguf.py for other architectures",
        )
    return arch


def export_gguf(hf_dir: str | Path, out_path: str | Path, dtype: str = "f32", *,
                tokenizer_from: str | Path | None = None, name: str | None = None,
                progress: Progress | None = None) -> Path:
    """Write the HF model in ``hf_dir`` (Llama or Qwen2) as a GGUF file llama.cpp loads. Returns ``out_path``.

    ``dtype`` "f32" keeps every tensor in float32; "f16" stores 2-D weight matrices in float16 and keeps norms and
    biases in float32, as llama.cpp's converter does. The tokenizer comes from ``tokenizer_from``: a GGUF file (its
    ``tokenizer.*`` keys are copied as they are, e.g. the original GGUF of a de-quantized model) or a folder with a
    byte-level BPE ``tokenizer.json`` (default: ``hf_dir``). ``name`` is ``general.name`` (default: the folder's
    name). With tied embeddings no ``output.weight`` is written; llama.cpp then uses ``token_embd.weight``.
    ``progress`` gets a "writing GGUF" task advanced per tensor. The file is written in place, not atomically.
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise AgentlabError(f"unsupported GGUF dtype '{dtype}'", hint=f"use one of: {', '.join(GGUF_DTYPES)}")
    hf = Path(hf_dir)
    config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    arch = gguf_architecture(config, hf)
    tok_src = Path(tokenizer_from) if tokenizer_from is not None else hf
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = _gguf_tensors(hf, config, arch)
    task = progress.task("writing GGUF", total=len(tensors) + 1) if progress is not None else None
    writer = gguf.GGUFWriter(str(out), arch)
    try:
        _write_hparams(writer, config, name or hf.name, dtype)
        if tok_src.is_file():
            _copy_gguf_tokenizer(writer, tok_src, config["vocab_size"])
        else:
            _write_tokenizer(writer, tok_src, config["vocab_size"])
        for gguf_name, load in tensors:
            array = load()
            if dtype == "f16" and array.ndim == 2:
                array = array.astype("float16")
            writer.add_tensor(gguf_name, array)
            if task is not None:
                task.advance()
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    if task is not None:
        task.advance()
    return out


def _write_hparams(writer: Any, config: dict[str, Any], name: str, dtype: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    # transformers >= 5 nests RoPE settings in rope_parameters; 4.x keeps rope_theta / rope_scaling at the top.
    rope = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0)}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default" or config.get("rope_scaling"):
        raise AgentlabError(
            f"RoPE scaling '{rope_type}' is not supported by this exporter",
            hint="use llama.cpp's convert_hf_to_gguf.py for models with RoPE scaling",
        )
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(config["vocab_size"])


def _gguf_pre_tokenizer(spec: dict[str, Any]) -> str | None:
    """llama.cpp's pre-tokenizer name for a tokenizer.json whose splitting it reproduces, else None."""
    def gpt2_split(pre: dict[str, Any]) -> bool:
        return pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space") and pre.get("use_regex", True)

    pre = spec.get("pre_tokenizer") or {}
    if gpt2_split(pre):
        return "gpt-2"  # llama.cpp's GPT-2 regex: the ByteLevel split with use_regex=True
    parts = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(parts) == 2 and parts[0].get("type") == "Digits"
            and parts[0].get("individual_digits") and gpt2_split(parts[1])):
        return "smollm"  # every digit alone, then the GPT-2 regex (SmolLM, StarCoder)
    return None


def _write_tokenizer(writer: Any, hf: Path, n_vocab: int) -> None:
    import gguf
    from transformers import AutoTokenizer

    spec = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))
    pre = _gguf_pre_tokenizer(spec)
    if spec["model"]["type"] != "BPE" or pre is None:
        raise AgentlabError(
            f"{hf}: tokenizer is not a byte-level BPE this exporter knows (GPT-2 splitting without a prefix space, "
            "optionally after single digits)",
            hint="build the tokenizer with agentlab.core.train.tiny.build_tokenizer, "
            "or convert with llama.cpp's convert_hf_to_gguf.py",
        )
    tok = AutoTokenizer.from_pretrained(str(hf))
    vocab = tok.get_vocab()
    id_to_token = {i: t for t, i in vocab.items()}
    control = set(tok.all_special_ids) | {int(a["id"]) for a in spec.get("added_tokens", []) if a.get("special")}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in id_to_token:
            # Embedding rows beyond the tokenizer: llama.cpp needs one token entry per row.
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in ((tok.bos_token_id, writer.add_bos_token_id), (tok.eos_token_id, writer.add_eos_token_id),
                          (tok.pad_token_id, writer.add_pad_token_id), (tok.unk_token_id, writer.add_unk_token_id)):
        if token_id is not None:
            add(token_id)
    eot = next((vocab[t] for t in EOT_TOKENS if t in vocab), None)
    if eot is not None:
        writer.add_eot_token_id(eot)
    # llama.cpp must add a BOS exactly when the HF tokenizer does, or the two disagree on every prompt.
    writer.add_add_bos_token(tok.bos_token_id is not None and tok.encode("a")[:1] == [tok.bos_token_id])
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def _copy_gguf_tokenizer(writer: Any, source: Path, n_vocab: int) -> None:
    """Copy every ``tokenizer.*`` key of the GGUF ``source`` (tokens, merges, special ids, pre-tokenizer, template)."""
    import gguf

    fields = gguf.GGUFReader(source).fields
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != n_vocab:
        raise AgentlabError(
            f"{source}: its tokenizer has {len(tokens.data) if tokens else 0} tokens, the model {n_vocab} rows",
            hint="give the GGUF the model was converted from",
        )
    for key, field in fields.items():
        if key.startswith("tokenizer."):
            sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type)


def _gguf_tensors(hf: Path, config: dict[str, Any], arch: str) -> list[tuple[str, Any]]:
    """(llama.cpp name, loader of the float32 array) for every weight of the model, Q/K permuted where llama.cpp
    needs it. Loaders read one tensor each, so a caller can report progress tensor by tensor."""
    from safetensors import safe_open

    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    files = sorted(hf.glob("*.safetensors"))
    if not files:
        raise AgentlabError(f"{hf}: no .safetensors weights found", hint="save the model with save_pretrained")
    tied = bool(config.get("tie_word_embeddings"))

    def loader(file: Path, hf_name: str, n_head: int | None) -> Any:
        def load() -> np.ndarray:
            with safe_open(str(file), framework="numpy") as fh:
                array = fh.get_tensor(hf_name).astype("float32")
            # HF Llama rotates halves (rotate_half); llama.cpp's "llama" RoPE rotates adjacent pairs, so its
            # converter reorders the rows of Q and K inside every head. Qwen2 uses NEOX RoPE: no reordering.
            return _permute_rope(array, n_head) if n_head else array
        return load

    found = []
    for file in files:
        with safe_open(str(file), framework="numpy") as fh:
            names = sorted(fh.keys())
        for hf_name in names:
            name = _gguf_name(hf_name)
            if name is None or (tied and name == "output.weight"):
                continue
            n_head = None
            if arch == "llama" and name.endswith("attn_q.weight"):
                n_head = heads
            elif arch == "llama" and name.endswith("attn_k.weight"):
                n_head = kv_heads
            found.append((name, loader(file, hf_name, n_head)))
    return found


def _gguf_name(hf_name: str) -> str | None:
    if hf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[hf_name]
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    parts = hf_name.split(".", 3)  # model.layers.N.<suffix>
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_TENSORS:
        return f"blk.{parts[2]}.{_LAYER_TENSORS[parts[3]]}"
    raise AgentlabError(
        f"no GGUF name for tensor '{hf_name}'", hint="only plain Llama / Qwen2 checkpoints can be exported"
    )


def _permute_rope(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from HF's half-split RoPE layout to llama.cpp's interleaved one (LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def quantize_gguf(src: str | Path, dst: str | Path, kind: str = "q8_0", n_threads: int = 0) -> Path:
    """Quantize the GGUF ``src`` to ``dst`` with llama.cpp's own quantizer; ``n_threads`` 0 means all cores.

    ``kind`` is one of :data:`QUANT_KINDS` (q8_0, q4_0, q4_k_m, ...; any case). Tensors whose rows do not fit the
    kind's block size fall back to another type inside llama.cpp (K-quants: q5_0 / q5_1 / q8_0; see
    ``agentlab.compress.gguf.gguf_tensor_types`` for what a file really holds). Returns ``dst`` as a Path.
    """
    import ctypes

    import llama_cpp

    _quiet_devnull(llama_cpp)
    if kind.lower() not in QUANT_KINDS:  # any case; the message echoes it as given
        raise AgentlabError(f"unknown quantization '{kind}'", hint=f"use one of: {', '.join(QUANT_KINDS)}")
    kind = kind.lower()
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise AgentlabError(f"GGUF file not found: {src}", hint="export one first with export_gguf")
    dst.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_KINDS[kind]
    params.nthread = n_threads
    # llama.cpp prints a line per tensor on the C-level stdout, which would corrupt `--json` output: keep it aside
    # and show its tail only when quantization fails.
    with _c_output_captured() as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
        raise AgentlabError(
            f"llama.cpp could not quantize {src} to {kind} (return code {rc}){': ' + tail if tail else ''}",
            hint="check that the source loads with llama_cpp.Llama and is f32/f16",
        )
    return dst


def _quiet_devnull(llama_cpp: Any) -> None:
    """llama-cpp-python opens os.devnull twice when imported (``llama_cpp._utils.outnull_file`` and
    ``errnull_file``, for its ``suppress_stdout_stderr``) and never closes them: at exit Python printed "sys:1:
    ResourceWarning: unclosed file <... name='/dev/null'>" twice under `train-persona export --quantize`. They are
    swapped for files on descriptors of their own that Python does not own (``closefd=False``: no warning when they
    are collected) and the originals closed; the library goes on writing to /dev/null through the new ones."""
    utils = getattr(llama_cpp, "_utils", None)
    for name in ("outnull_file", "errnull_file"):
        old = getattr(utils, name, None)
        if old is None or getattr(old, "name", None) != os.devnull or old.closed:
            continue
        setattr(utils, name, open(os.open(os.devnull, os.O_WRONLY), "w", closefd=False))
        old.close()


@contextmanager
def _c_output_captured() -> Iterator[Path]:
    """Point file descriptors 1 and 2 at a temp file (C libraries write there directly), then restore them."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "c-output.log"
        saved = [os.dup(1), os.dup(2)]
        with open(log, "wb") as fh:
            try:
                os.dup2(fh.fileno(), 1)
                os.dup2(fh.fileno(), 2)
                yield log
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)

"""Tiny random-weight chat models built offline, saved in HF format and exported to GGUF for llama.cpp.

Tests and demos need real models without a model hub: :func:`make_tiny_model` trains a byte-level BPE tokenizer on
the shipped ``corpus.txt`` and saves a Llama (or Qwen2) with seeded random weights; :func:`export_gguf` writes the
same weights as a GGUF file llama.cpp loads; :func:`quantize_gguf` runs llama.cpp's own quantizer on it.

torch, transformers, tokenizers, safetensors, gguf and llama_cpp are imported inside the functions, so importing
this module stays cheap.
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

from agentlab.core.errors import AgentlabError, InputError

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerFast

CORPUS = Path(__file__).with_name("corpus.txt")
BOS, EOS, IM_START, IM_END = "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (BOS, EOS, IM_START, IM_END)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ARCHS = ("llama", "qwen2")
GGUF_DTYPES = ("f32", "f16")
# llama_ftype values from llama.h; the names follow `llama-quantize --help`.
QUANT_KINDS = {"f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
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


def build_tokenizer(out_dir: str | Path, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the shipped corpus and save it (with a ChatML template) to ``out_dir``.

    Special tokens take ids 0-3 (``<|begin_of_text|>``, ``<|end_of_text|>``, ``<|im_start|>``, ``<|im_end|>``),
    then the 256 byte symbols, then merges up to ``vocab_size``. Neither this tokenizer nor the GGUF export adds a
    BOS token on encode, so both sides of a comparison see the same ids.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    n_fixed = len(SPECIAL_TOKENS) + 256
    if vocab_size <= n_fixed:
        raise AgentlabError(
            f"vocab_size={vocab_size} leaves no room for merges", hint=f"use a vocab_size above {n_fixed}"
        )
    tok = Tokenizer(models.BPE())
    # GPT-2 splitting without a prefix space: llama.cpp's "gpt-2" pre-tokenizer does exactly this.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_paragraphs(), trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS, chat_template=CHATML_TEMPLATE
    )
    hf_tok.save_pretrained(str(out_dir))
    return hf_tok


def _corpus_paragraphs() -> Iterator[str]:
    # Paragraphs, not lines: merges may then span the newline inside a paragraph, as in real chat text.
    yield from (p for p in CORPUS.read_text(encoding="utf-8").split("\n\n") if p.strip())


def make_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    arch: str = "llama",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vocab_size: int = 512,
    max_position_embeddings: int = 512,
) -> Path:
    """Save a random-weight float32 causal LM (``arch`` "llama" or "qwen2") and its tokenizer to ``out_dir``.

    Same arguments and seed give identical ``model.safetensors`` bytes. Weights are drawn at a scale where attention
    is far from uniform and logits are O(1), so a wrong RoPE layout or a missing norm changes the output visibly.
    Returns ``out_dir`` as a Path.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch not in ARCHS:
        raise AgentlabError(f"unknown tiny-model arch '{arch}'", hint=f"use one of: {', '.join(ARCHS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out, vocab_size)
    settings: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**settings))
    # float() is the same cast as to(torch.float32); transformers wraps to() with functools.wraps, which mypy
    # types as an unbound function (python/typeshed#10653).
    model = model.float().eval()
    _randomize(model, seed)
    # Chat generation should stop at the end of a turn as well as at the end of text.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    model.save_pretrained(str(out))
    return out


def _randomize(model: Any, seed: int) -> None:
    """Overwrite every parameter from a private generator, so the result does not depend on HF's init code."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                # Not all ones: a dropped or misplaced norm weight must show up in the logits.
                param.copy_(torch.empty_like(param).uniform_(0.5, 1.5, generator=gen))
            elif name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
            elif "embed_tokens" in name:
                param.copy_(torch.randn(param.shape, generator=gen))
            else:
                # 1/sqrt(fan_in) keeps activations O(1); HF's default 0.02 makes attention nearly uniform,
                # which would hide a RoPE permutation bug from the logit comparison.
                param.copy_(torch.randn(param.shape, generator=gen) / param.shape[-1] ** 0.5)


def export_gguf(hf_dir: str | Path, out_path: str | Path, dtype: str = "f32") -> Path:
    """Write the HF model in ``hf_dir`` (Llama or Qwen2, byte-level BPE tokenizer) as a GGUF file llama.cpp loads.

    ``dtype`` "f32" keeps every tensor in float32; "f16" stores 2-D weight matrices in float16 and keeps norms and
    biases in float32, as llama.cpp's converter does. Returns ``out_path`` as a Path.
    """
    import gguf

    if dtype not in GGUF_DTYPES:
        raise AgentlabError(f"unsupported GGUF dtype '{dtype}'", hint=f"use one of: {', '.join(GGUF_DTYPES)}")
    hf = Path(hf_dir)
    config = json.loads((hf / "config.json").read_text(encoding="utf-8"))
    arch = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}.get((config.get("architectures") or [""])[0])
    if arch is None:
        raise AgentlabError(
            f"{hf}: cannot export architecture {config.get('architectures')} to GGUF",
            hint="only LlamaForCausalLM and Qwen2ForCausalLM are supported; use llama.cpp's convert_hf_to_gguf.py",
        )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), arch)
    try:
        _write_hparams(writer, config, hf.name, dtype)
        _write_tokenizer(writer, hf, config["vocab_size"])
        for name, array in _gguf_tensors(hf, config, arch):
            if dtype == "f16" and array.ndim == 2:
                array = array.astype("float16")
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
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


def _write_tokenizer(writer: Any, hf: Path, n_vocab: int) -> None:
    import gguf
    from transformers import AutoTokenizer

    spec = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))
    pre = spec.get("pre_tokenizer") or {}
    if spec["model"]["type"] != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
        raise AgentlabError(
            f"{hf}: tokenizer is not a plain byte-level BPE (GPT-2 splitting, no prefix space)",
            hint="build the tokenizer with agentlab.core.train.tiny.build_tokenizer, "
            "or convert with llama.cpp's convert_hf_to_gguf.py",
        )
    tok = AutoTokenizer.from_pretrained(str(hf))
    id_to_token = {i: t for t, i in tok.get_vocab().items()}
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
    # "gpt-2" selects llama.cpp's GPT-2 regex, the same split as the ByteLevel pre-tokenizer with use_regex=True.
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tok.bos_token_id is not None:
        writer.add_bos_token_id(tok.bos_token_id)
    if tok.eos_token_id is not None:
        writer.add_eos_token_id(tok.eos_token_id)
    if tok.pad_token_id is not None:
        writer.add_pad_token_id(tok.pad_token_id)
    im_end = tok.get_vocab().get(IM_END)
    if im_end is not None:
        writer.add_eot_token_id(im_end)
    # The HF tokenizer adds no BOS on encode; llama.cpp must not either, or the two disagree on every prompt.
    writer.add_add_bos_token(False)
    if tok.chat_template:
        writer.add_chat_template(tok.chat_template)


def _gguf_tensors(hf: Path, config: dict[str, Any], arch: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (llama.cpp name, float32 array) for every weight of the model, Q/K permuted where llama.cpp needs it."""
    from safetensors.numpy import load_file

    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    files = sorted(hf.glob("*.safetensors"))
    if not files:
        raise AgentlabError(f"{hf}: no .safetensors weights found", hint="save the model with save_pretrained")
    for file in files:
        for hf_name, array in sorted(load_file(str(file)).items()):
            name = _gguf_name(hf_name)
            if name is None:
                continue
            array = array.astype("float32")
            # HF Llama rotates halves (rotate_half); llama.cpp's "llama" RoPE rotates adjacent pairs, so its converter
            # reorders the rows of Q and K inside every head. Qwen2 uses NEOX RoPE in llama.cpp: no reordering.
            if arch == "llama" and name.endswith("attn_q.weight"):
                array = _permute_rope(array, heads)
            elif arch == "llama" and name.endswith("attn_k.weight"):
                array = _permute_rope(array, kv_heads)
            yield name, array


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

    ``kind`` is one of :data:`QUANT_KINDS` (q8_0, q4_0, q4_k_m, ...). Tensors whose rows do not fit the kind's
    block size fall back to a wider type inside llama.cpp. Returns ``dst`` as a Path.
    """
    import ctypes

    import llama_cpp

    if kind not in QUANT_KINDS:
        raise AgentlabError(f"unknown quantization '{kind}'", hint=f"use one of: {', '.join(QUANT_KINDS)}")
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


def prepare_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Create ``out_dir`` for a new model, refusing (``InputError``, one line) to write over a file, or over a folder
    that already holds files unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; make-tiny writes a model folder there (give a new folder path)")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise InputError(f"{out}: the folder already holds files; pass --force to write the model over them")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the folder ({exc.strerror or exc})") from None
    return out


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


def make_tiny(out_dir: str | Path, seed: int = 0, arch: str = "llama", dtype: str = "f32",
              quantize: str | None = None, overwrite: bool = False, **sizes: Any) -> dict[str, Path]:
    """``agentlab models make-tiny``: the HF model in ``out_dir``, ``out_dir/model.gguf`` and, with ``quantize``,
    ``out_dir/model.<kind>.gguf``. ``sizes`` go to :func:`make_tiny_model`. Returns the paths by role.

    ``out_dir`` must be new or an empty folder; ``overwrite`` writes the model's files over a folder that holds
    files (other files in it stay). A path that is a file is refused either way (``InputError``)."""
    prepare_out_dir(out_dir, overwrite)
    out = make_tiny_model(out_dir, seed=seed, arch=arch, **sizes)
    paths = {"hf": out, "gguf": export_gguf(out, out / "model.gguf", dtype=dtype)}
    if quantize:
        paths[quantize] = quantize_gguf(paths["gguf"], out / f"model.{quantize}.gguf", kind=quantize)
    return paths

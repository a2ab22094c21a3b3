"""Tiny random-weight chat models built offline, saved in HF format and exported to GGUF for llama.cpp.

Tests and demos need real models without a model hub: :func:`make_tiny_model` trains a byte-level BPE tokenizer on
the shipped ``corpus.txt`` and saves a Llama (or Qwen2) with seeded random weights; :func:`make_tiny` also writes
them as GGUF (``gguf_export.export_gguf``) and, if asked, quantizes that file through llama.cpp.

torch, transformers and tokenizers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import ordinary_modes, rename_into_place, replace_problem, unwritable
from agentlab.core.models.convert import quiet_transformers
from agentlab.core.models.gguf_export import export_gguf, quantize_gguf

if TYPE_CHECKING:
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
MAX_SEED = 2**64 - 1  # torch's generators take a seed of 64 bits


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
    if arch not in ARCHS:
        raise AgentlabError(f"unknown tiny-model arch '{arch}'", hint=f"use one of: {', '.join(ARCHS)}")
    check_sizes(hidden_size=hidden_size, layers=layers, heads=heads, kv_heads=kv_heads, intermediate=intermediate,
                max_position_embeddings=max_position_embeddings)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

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
    with quiet_transformers(logs=False):  # no "Writing model shards" bar under the CLI's own output
        model.save_pretrained(str(out))
    return out


def check_sizes(*, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int = 128,
                max_position_embeddings: int = 512) -> None:
    """Refuse (``InputError``, before anything is written) sizes whose model llama.cpp cannot load: it aborted the
    process (SIGABRT) on a model of 0 layers, of 3 key/value heads for 4 heads, or with an intermediate size of 0, and
    a hidden size of 0 failed here with ZeroDivisionError. Each size is a whole number of at least 1; ``heads`` is a
    multiple of ``kv_heads`` (each key/value head serves a group of heads) and ``hidden_size`` of ``heads``, with an
    even size per head (RoPE turns pairs of dimensions). The defaults are :func:`make_tiny_model`'s."""
    sizes = {"hidden_size": hidden_size, "layers": layers, "heads": heads, "kv_heads": kv_heads,
             "intermediate": intermediate, "max_position_embeddings": max_position_embeddings}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"tiny model {name}={value!r}: not a whole number of at least 1; give {name} >= 1")
    if heads % kv_heads:
        raise InputError(f"tiny model heads={heads}, kv_heads={kv_heads}: heads must be a multiple of kv_heads (each "
                         f"key/value head serves a group of heads); give kv_heads dividing {heads}, e.g. 1")
    if hidden_size % heads:
        raise InputError(f"tiny model hidden_size={hidden_size}, heads={heads}: hidden_size must be a multiple of "
                         f"heads (each head gets hidden_size / heads dimensions); give e.g. hidden_size={16 * heads}")
    if hidden_size // heads % 2:
        raise InputError(f"tiny model hidden_size={hidden_size}, heads={heads}: the size per head "
                         f"({hidden_size // heads}) is odd, and RoPE turns pairs of dimensions; give e.g. "
                         f"hidden_size={2 * hidden_size}")


# make_tiny_model's sizes that check_sizes checks
_SIZES = ("hidden_size", "layers", "heads", "kv_heads", "intermediate", "max_position_embeddings")


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


def prepare_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check that a new model may go to ``out_dir``, and create the folder it will be written beside; refused
    (``InputError``, one line, nothing written or deleted): a file; the current folder or one that holds it; a folder
    that holds files but no ``config.json`` (not a model folder: ``overwrite`` would delete those files); a model
    folder without ``overwrite``; a place where no file can be made (``/proc``, a read-only disk, a path through a
    file: ``afile.txt/sub``). Returns
    ``out_dir`` as a Path; the folder itself is not created (:func:`make_tiny` renames the finished model into
    place)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; make-tiny writes a model folder there", hint="give a new folder path")
    if out.is_dir():
        problem = replace_problem(out, "config.json", "a model folder")
        if problem is not None:
            raise InputError(f"{out}: {problem}; make-tiny replaces a folder as a whole, so nothing was written or "
                             "deleted", hint="give a new folder path")
        if not overwrite and any(out.iterdir()):
            raise InputError(f"{out}: the folder already holds a model",
                             hint="pass --force to replace it with the new one, or give a new folder path")
    problem = unwritable(_target(out).parent if out.is_symlink() else out.parent)
    if problem is not None:  # else mkdtemp failed naming its hidden folder (/proc/.x.3twgaz62.partial), exit 1
        raise InputError(f"{out}: {problem}; nothing was written", hint="give a folder path you can write to")
    try:
        _target(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the folder ({exc.strerror or exc})",
                         hint="give a folder path you can write to") from None
    return out


def _target(out: Path) -> Path:
    """The folder a model for ``out`` is renamed to: ``out``, or the folder it links to (replaced, the link kept)."""
    return out.resolve() if out.is_symlink() else out.absolute()


def check_seed(seed: int) -> None:
    """Refuse (``InputError``) a seed torch's generators cannot take."""
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"--seed {seed}: out of range", hint=f"give a seed from 0 to {MAX_SEED} (2^64 - 1)")


def make_tiny(out_dir: str | Path, seed: int = 0, arch: str = "llama", dtype: str = "f32",
              quantize: str | None = None, overwrite: bool = False, **sizes: Any) -> dict[str, Path]:
    """``agentlab models make-tiny``: the HF model in ``out_dir``, ``out_dir/model.gguf`` and, with ``quantize``,
    ``out_dir/model.<kind>.gguf``. ``sizes`` go to :func:`make_tiny_model`. Returns the paths by role.

    ``out_dir`` must be new or an empty folder; ``overwrite`` replaces a model folder (one with ``config.json``) as a
    whole, so no file of the old model (an old ``model.q8_0.gguf``) stays beside the new one. What
    :func:`prepare_out_dir` refuses is refused either way, as is a seed outside 0 to 2^64 - 1 (``InputError``).

    Every file is written into a hidden temporary folder beside ``out_dir`` (``.NAME.XXXX.partial``, which
    ``agentlab models list`` skips), renamed to ``out_dir`` once complete: a build that fails or is killed leaves
    no half-made model at ``out_dir``, and an old model there stays until the new one replaces it. A killed build
    may leave the temporary folder behind, to delete by hand."""
    check_seed(seed)
    check_sizes(**{k: v for k, v in sizes.items() if k in _SIZES})  # before the folder is touched
    out = prepare_out_dir(out_dir, overwrite)
    final = _target(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        make_tiny_model(tmp, seed=seed, arch=arch, **sizes)
        # general.name from what the model is made of, never a folder's name (it was OUT's: the same seed gave
        # other model.gguf bytes in another folder)
        export_gguf(tmp, tmp / "model.gguf", dtype=dtype, name=f"tiny-{arch}-seed{seed}")
        if quantize:
            quantize_gguf(tmp / "model.gguf", tmp / f"model.{quantize}.gguf", kind=quantize)
        ordinary_modes(tmp)  # mkdtemp and safetensors make theirs private; the model folder is an ordinary one
        rename_into_place(tmp, final)  # an old model at final is deleted only once the new one is in its place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    paths = {"hf": out, "gguf": out / "model.gguf"}
    if quantize:
        paths[quantize] = out / f"model.{quantize}.gguf"
    return paths


def make_tiny_adapter(base: str | Path, out: str | Path, *, r: int = 4, alpha: int = 8, rslora: bool = False,
                      seed: int = 0, scale: float = 0.2) -> Path:
    """A LoRA adapter on every linear layer of ``base`` with seeded random A and B (``scale`` their std; 0 gives an
    adapter that changes nothing), saved as a PEFT folder: parents for blends and seeds for evolve in tests."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn_like(p) * scale)
    peft.save_pretrained(str(out))
    return Path(out)

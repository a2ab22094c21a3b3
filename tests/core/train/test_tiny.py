"""Tiny local models: tokenizer, determinism, and transformers vs llama.cpp on the exported GGUF (logits and ids)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from agentlab.core.errors import AgentlabError  # noqa: E402
from agentlab.core.models import gguf_export  # noqa: E402
from agentlab.core.train import tiny  # noqa: E402

GGML_TYPE_F32 = 0
TEXTS = [
    "Hello world, it's 42 degrees today!",
    "  two  spaces,\ttabs\nand a new line",
    "naïve café — ünïcode, 東京 and emoji 🙂",
    "The heron stood in the reeds at dawn.",
]
CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Where does the river go at dawn?"},
    {"role": "assistant", "content": "It runs past the mill and on to the sea."},
    {"role": "user", "content": "And in winter?"},
]


@dataclass
class Built:
    hf_dir: Path
    f32: Path
    f16: Path
    tokenizer: Any
    model: Any


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("tiny")
    hf_dir = tiny.make_tiny_model(root / "hf", seed=0)
    return Built(
        hf_dir=hf_dir,
        f32=gguf_export.export_gguf(hf_dir, root / "tiny-f32.gguf", "f32"),
        f16=gguf_export.export_gguf(hf_dir, root / "tiny-f16.gguf", "f16"),
        tokenizer=AutoTokenizer.from_pretrained(hf_dir),
        model=AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(),
    )


@contextmanager
def loaded(path: Path, **kwargs: Any) -> Iterator[Any]:
    # Closed explicitly: Llama.__del__ at interpreter exit raises inside llama-cpp-python.
    llm = llama_cpp.Llama(str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=1, **kwargs)
    try:
        yield llm
    finally:
        llm.close()


def prompt_ids(tokenizer: Any) -> list[int]:
    text = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def hf_logits(model: Any, ids: list[int]) -> Any:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def gguf_logits(path: Path, ids: list[int], **kwargs: Any) -> Any:
    with loaded(path, **kwargs) as llm:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])


def max_diff(path: Path, built: Built, **kwargs: Any) -> float:
    """Max |logit difference| over every position and vocab entry of the same token ids."""
    ids = prompt_ids(built.tokenizer)
    return float(np.abs(gguf_logits(path, ids, **kwargs) - hf_logits(built.model, ids)).max())


def test_tokenizer_round_trips_and_has_chatml(built: Built) -> None:
    tok = built.tokenizer
    assert len(tok) == 512
    for text in TEXTS:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert tok.convert_tokens_to_ids(list(tiny.SPECIAL_TOKENS)) == [0, 1, 2, 3]
    assert (tok.bos_token, tok.eos_token) == (tiny.BOS, tiny.EOS)
    rendered = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhere does the river go at dawn?<|im_end|>\n<|im_start|>assistant\n"
    )
    # Special tokens are single ids in a chat prompt, not spelled out byte by byte.
    assert prompt_ids(tok).count(tok.convert_tokens_to_ids(tiny.IM_START)) == 5


def test_make_tiny_model_is_deterministic(built: Built, tmp_path: Path) -> None:
    again = tiny.make_tiny_model(tmp_path / "again", seed=0)
    other = tiny.make_tiny_model(tmp_path / "other", seed=1)
    weights = (built.hf_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (again / "tokenizer.json").read_bytes() == (built.hf_dir / "tokenizer.json").read_bytes()
    assert (other / "model.safetensors").read_bytes() != weights


def test_f32_gguf_logits_match_transformers(built: Built) -> None:
    # llama.cpp keeps its KV cache in f16 by default, which alone costs ~1e-3; an f32 cache isolates the export.
    exact = max_diff(built.f32, built, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    assert exact < 1e-3, f"f32 GGUF vs transformers: max |logit diff| {exact:.3g} with an f32 KV cache"
    default = max_diff(built.f32, built)
    assert default < 5e-3, f"f32 GGUF vs transformers: max |logit diff| {default:.3g} with the default f16 KV cache"


def test_logit_check_catches_a_missing_rope_permutation(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    # Proves the comparison above is sensitive: without llama.cpp's Q/K row order the logits must drift far apart.
    monkeypatch.setattr(gguf_export, "_permute_rope", lambda weights, n_head: weights)
    wrong = gguf_export.export_gguf(built.hf_dir, built.f32.with_name("no-permute.gguf"))
    assert max_diff(wrong, built, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32) > 0.1


def test_f16_gguf_logits_close_to_transformers(built: Built) -> None:
    diff = max_diff(built.f16, built)
    assert diff < 5e-2, f"f16 GGUF vs transformers: max |logit diff| {diff:.3g}"
    assert built.f16.stat().st_size < built.f32.stat().st_size


def test_gguf_tokenizer_gives_the_hf_ids(built: Built) -> None:
    tok = built.tokenizer
    chat = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    with loaded(built.f32) as llm:
        for text in TEXTS:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(
                text, add_special_tokens=False
            ), text
        assert llm.tokenize(chat.encode(), add_bos=False, special=True) == prompt_ids(tok)
        assert llm.detokenize(prompt_ids(tok), special=True).decode() == chat


def test_gguf_metadata_has_chat_template_and_tokenizer(built: Built) -> None:
    with loaded(built.f32) as llm:
        meta = llm.metadata
    assert meta["tokenizer.chat_template"] == tiny.CHATML_TEMPLATE
    assert meta["general.architecture"] == "llama"
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == ("0", "1")
    assert meta["tokenizer.ggml.eot_token_id"] == "3"


def test_q8_0_quantization_is_smaller_and_loads(built: Built) -> None:
    q8 = gguf_export.quantize_gguf(built.f32, built.f32.with_name("tiny-q8_0.gguf"), "q8_0", n_threads=1)
    assert q8.stat().st_size < built.f16.stat().st_size < built.f32.stat().st_size
    ids = prompt_ids(built.tokenizer)
    got, ref = gguf_logits(q8, ids), hf_logits(built.model, ids)
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_qwen2_variant_matches_transformers(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_dir = tiny.make_tiny_model(tmp_path / "qwen2", arch="qwen2")
    qwen = Built(
        hf_dir=hf_dir,
        f32=gguf_export.export_gguf(hf_dir, tmp_path / "qwen2.gguf"),
        f16=tmp_path / "unused.gguf",
        tokenizer=AutoTokenizer.from_pretrained(hf_dir),
        model=AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval(),
    )
    with loaded(qwen.f32) as llm:
        assert llm.metadata["general.architecture"] == "qwen2"
    assert max_diff(qwen.f32, qwen, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32) < 1e-3


def test_bad_arguments_raise_agentlab_errors(built: Built, tmp_path: Path) -> None:
    with pytest.raises(AgentlabError, match="unsupported GGUF dtype"):
        gguf_export.export_gguf(built.hf_dir, tmp_path / "x.gguf", "bf8")
    with pytest.raises(AgentlabError, match="unknown quantization"):
        gguf_export.quantize_gguf(built.f32, tmp_path / "x.gguf", "q3_weird")
    with pytest.raises(AgentlabError, match="not found"):
        gguf_export.quantize_gguf(tmp_path / "missing.gguf", tmp_path / "x.gguf")
    with pytest.raises(AgentlabError, match="unknown tiny-model arch"):
        tiny.make_tiny_model(tmp_path / "m", arch="gpt2")


def test_tied_embeddings_and_digit_splitting_tokenizer(built: Built, tmp_path: Path) -> None:
    """SmolLM2's shape: a head tied to the embeddings (no output.weight; llama.cpp reuses token_embd) and a
    tokenizer that splits every digit before the GPT-2 regex (llama.cpp's "smollm" pre-tokenizer)."""
    import json

    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(built.hf_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tmp_path / "tied")
    spec = json.loads((built.hf_dir / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {**spec["pre_tokenizer"], "trim_offsets": True}]}
    (tmp_path / "tied" / "tokenizer.json").write_text(json.dumps(spec))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (built.hf_dir / name).is_file():
            (tmp_path / "tied" / name).write_bytes((built.hf_dir / name).read_bytes())
    out = gguf_export.export_gguf(tmp_path / "tied", tmp_path / "tied.gguf")
    assert "output.weight" not in {t.name for t in gguf.GGUFReader(out).tensors}
    tied = Built(tmp_path / "tied", out, out, AutoTokenizer.from_pretrained(tmp_path / "tied"),
                 AutoModelForCausalLM.from_pretrained(tmp_path / "tied", dtype=torch.float32).eval())
    assert max_diff(out, tied, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32) < 1e-3
    with loaded(out) as llm:
        for text in ["In 2024, 12345 apples cost 3.50 each", *TEXTS]:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == tied.tokenizer.encode(
                text, add_special_tokens=False), text
        assert llm.metadata["tokenizer.ggml.pre"] == "smollm"


@pytest.mark.parametrize("sizes, says", [
    ({"layers": 0}, "tiny model layers=0: not a whole number of at least 1"),
    ({"intermediate": 0}, "tiny model intermediate=0: not a whole number of at least 1"),
    ({"hidden_size": 0}, "tiny model hidden_size=0: not a whole number of at least 1"),
    ({"max_position_embeddings": -1}, "tiny model max_position_embeddings=-1: not a whole number"),
    ({"kv_heads": 3}, "tiny model heads=4, kv_heads=3: heads must be a multiple of kv_heads"),
    ({"hidden_size": 66}, "tiny model hidden_size=66, heads=4: hidden_size must be a multiple of heads"),
    ({"hidden_size": 12}, "tiny model hidden_size=12, heads=4: the size per head (3) is odd"),
])
def test_sizes_llama_cpp_cannot_load_are_refused_before_anything_is_written(sizes: dict[str, int], says: str,
                                                                            tmp_path: Path) -> None:
    """layers=0, kv_heads=3 with 4 heads or intermediate=0 wrote a model whose load aborted llama.cpp (SIGABRT, the
    whole process); hidden_size=0 ended in ZeroDivisionError."""
    from agentlab.core.errors import InputError

    with pytest.raises(InputError) as caught:
        tiny.make_tiny(tmp_path / "m", **sizes)
    assert caught.value.message.startswith(says), caught.value.message
    with pytest.raises(InputError, match="^" + re.escape(says)):
        tiny.make_tiny_model(tmp_path / "hf", **sizes)
    assert not list(tmp_path.iterdir())

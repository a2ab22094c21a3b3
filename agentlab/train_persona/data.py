"""Chat JSONL for `agentlab train-persona`: checked line by line before any model loads.

One conversation per line: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`` (other
keys, such as a checkable ``answer``, are kept and ignored by training). Problems are reported with ``file:line``:
bad JSON, a line that is not such an object, an unknown or missing role, a content that is not text, a system
message anywhere but first, an empty assistant turn, a conversation with no assistant turn to learn from, and (once
the tokenizer is known) a conversation longer than ``max_length`` tokens.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError, one_line
from agentlab.core.files import file_sha256, iter_jsonl
from agentlab.core.models.convert import converted_folder, gguf_chat_template, quiet_transformers
from agentlab.core.models.modelfiles import check_hf_folder, read_gguf_header
from agentlab.core.models.modelref import ModelRef, resolve_model
from agentlab.train_persona.config import SHIPPED_PERSONAS, SHIPPED_SKILLS

ROLES = ("system", "user", "assistant")
_SHOWN = 5  # problems listed in one error; the rest are counted


@dataclass
class ChatData:
    """Validated conversations and what the report needs about them."""

    path: Path
    rows: list[dict[str, Any]]  # {"messages": [...]} as read (extra keys dropped)
    lines: list[int]  # the file line of each row
    sha256: str
    turns: int = 0
    tokens: list[int] = field(default_factory=list)  # per row, with the chat template; empty until measured
    truncated: int = 0

    def stats(self) -> dict[str, Any]:
        return {"file": str(self.path), "sha256": self.sha256, "conversations": len(self.rows), "turns": self.turns,
                "tokens": sum(self.tokens) if self.tokens else None,
                "max_tokens": max(self.tokens) if self.tokens else None, "truncated": self.truncated}


def _problem(message: Any) -> str | None:
    """What is wrong with one conversation object, or None."""
    if not isinstance(message, dict):
        return f"expected a JSON object with \"messages\", got {type(message).__name__}"
    messages = message.get("messages")
    if not isinstance(messages, list) or not messages:
        return "\"messages\" must be a non-empty list of {\"role\", \"content\"} objects"
    has_reply = False
    for index, turn in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(turn, dict):
            return f"{where}: expected an object with role and content, got {type(turn).__name__}"
        role = turn.get("role")
        if role is None:
            return f"{where}: role is missing (one of {', '.join(ROLES)})"
        if role not in ROLES:
            return f"{where}: unknown role {role!r} (one of {', '.join(ROLES)})"
        if not isinstance(turn.get("content"), str):
            return f"{where}: content must be text"
        if role == "system" and index != 0:
            return f"{where}: a system message may only come first"
        if role == "assistant":
            if not turn["content"].strip():
                return f"{where}: empty assistant turn (nothing to learn)"
            has_reply = True
    if not has_reply:
        return "no assistant turn: nothing to learn from this conversation"
    return None


def load_chat_jsonl(path: str | Path) -> ChatData:
    """Read and check every line of a chat JSONL file; ``InputError`` (exit 2) lists the first problems as
    ``file:line: message`` with the count of the rest."""
    path = Path(path)
    if not path.exists():  # a mistyped shipped name (persona_z) is the usual cause: name them, and the nearest
        names = (*SHIPPED_PERSONAS, *SHIPPED_SKILLS)
        score = {name: difflib.SequenceMatcher(None, path.stem, name).ratio() for name in names}
        nearest = [name for name in names if score[name] >= 0.6 and score[name] == max(score.values())]
        guess = ", ".join(nearest[:-1]) + " or " + nearest[-1] if len(nearest) > 1 else "".join(nearest)
        raise InputError(f"{path}: chat data file not found" + (f" (did you mean {guess}?)" if guess else ""),
                         hint=f"give a chat JSONL file, or a shipped data name: {', '.join(names)}")
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    turns = 0
    try:
        records = list(iter_jsonl(path, "chat data file"))
    except InputError as exc:
        raise InputError(exc.message, hint="each line must be one JSON object: {\"messages\": [{\"role\": \"user\", "
                         "\"content\": \"...\"}, {\"role\": \"assistant\", \"content\": \"...\"}]}") from None
    for number, record in records:
        problem = _problem(record)
        if problem is not None:
            problems.append(f"{path}:{number}: {problem}")
            continue
        rows.append({"messages": [{"role": t["role"], "content": t["content"]} for t in record["messages"]]})
        lines.append(number)
        turns += len(record["messages"])
    if problems:
        _fail(problems, "fix the line above (or drop it) and run again" if len(problems) == 1 else
              "fix the lines above (or drop them) and run again")
    if not rows:
        raise InputError(f"{path}: no conversations in the file", hint="one JSON object per line: {\"messages\": "
                         "[...]}; see the shipped examples in agentlab/train_persona/data/")
    return ChatData(path, rows, lines, file_sha256(path), turns)


def check_base_model(base_model: str) -> ModelRef:
    """The base model resolved, and its files checked from their headers alone (no weights read), so a damaged one
    stops the run (``InputError``, exit 2, naming the file) before a run folder exists, not halfway through loading:
    a GGUF's header and the extent of its tensor data (``read_gguf_header``); a transformers folder's config.json
    (valid JSON that names a model) and each ``*.safetensors`` file's header and the extent of the tensors it
    describes (a download or copy cut short ends before them), and that it has its weights and a tokenizer
    (``check_hf_folder``)."""
    ref = resolve_model(base_model, user="train-persona")
    try:
        if ref.format == "gguf":
            read_gguf_header(ref.path)
        else:
            check_hf_folder(ref.path)
    except AgentlabError as exc:
        raise InputError(f"--base-model {base_model}: {exc.message}",
                         hint=f"{exc.hint or 'check the model files'} (or choose another --base-model)") from None
    return ref


def load_tokenizer(ref: ModelRef) -> Any:
    """The base model's tokenizer alone (no weights), to measure the data before any model loads: from the
    transformers folder, or a GGUF's metadata (its cached conversion when there is one). ``ref``: from
    ``check_base_model``. A tokenizer that its files name but transformers cannot build (a damaged tokenizer.json,
    one of a kind this transformers lacks) is ``InputError`` naming the model, not a traceback."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            if ref.format == "hf":
                return AutoTokenizer.from_pretrained(str(ref.path))
            cached = converted_folder(ref.path)
            if (cached / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(str(cached))
            tokenizer = AutoTokenizer.from_pretrained(str(ref.path.parent), gguf_file=ref.path.name)
    except ImportError:
        raise
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError, ... for a tokenizer it cannot build
        raise InputError(f"--base-model {ref.ref}: its tokenizer could not be loaded from {ref.path} "
                         f"({one_line(exc)[:300]})", hint="check the model's tokenizer files (tokenizer.json, "
                         "tokenizer_config.json), or choose another --base-model") from None
    if not getattr(tokenizer, "chat_template", None):  # some tokenizer converters drop it, as in convert.py
        tokenizer.chat_template = gguf_chat_template(ref.path)
    return tokenizer


def meta_model(ref: ModelRef) -> Any | None:
    """The base model built from its config on torch's meta device (its modules and their names, no weights read or
    allocated), to check settings that name modules before any model loads; None when transformers cannot build it
    so (the check is then left to the loaded model)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with quiet_transformers():
        try:
            if ref.format == "hf":
                config = AutoConfig.from_pretrained(str(ref.path))
            elif (converted_folder(ref.path) / "config.json").is_file():
                config = AutoConfig.from_pretrained(str(converted_folder(ref.path)))
            else:
                config = AutoConfig.from_pretrained(str(ref.path.parent), gguf_file=ref.path.name)
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config)
        except Exception:  # transformers raises many types for configs it cannot build; the loaded model decides
            return None


def measure(data: ChatData, tokenizer: Any, max_length: int, truncate: bool, marked: str | None = None) -> None:
    """Token counts with the chat template; conversations over ``max_length`` stop the run with their lines unless
    ``truncate`` (then they are counted). ``marked``: the template that marks assistant tokens when the loss is on
    them alone; a cut (it keeps the start) that leaves no conversation an assistant token stops the run too, before
    the model loads (the trainer's own check came after it, in a run folder left failed)."""
    data.tokens = [len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
                   for row in data.rows]
    too_long = [(line, n) for line, n in zip(data.lines, data.tokens, strict=True) if n > max_length]
    if too_long and not truncate:
        _fail([f"{data.path}:{line}: {n} tokens, over max_length {max_length}" for line, n in too_long],
              f"raise --set data.max_length=N (the longest is {max(n for _, n in too_long)}), shorten or drop the "
              "conversations, or --set data.truncate=true to cut them")
    data.truncated = len(too_long)
    if too_long and len(too_long) == len(data.rows) and marked is not None and not any(
            any(tokenizer.apply_chat_template(row["messages"], chat_template=marked, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True)["assistant_masks"][:max_length])
            for row in data.rows):
        raise InputError(f"{data.path}: no conversation keeps an assistant token within max_length {max_length}: "
                         f"data.truncate cuts all {len(data.rows)} before their answer, nothing would be learned",
                         hint="raise --set data.max_length=N, or shorten the conversations' prompts")


def _fail(problems: list[str], hint: str) -> None:
    more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
    raise InputError("\n".join(problems[:_SHOWN]) + more, hint=hint)

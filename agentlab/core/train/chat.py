"""Chat templates that mark assistant turns, so SFT puts the loss on assistant tokens only.

transformers computes an assistant-token mask from ``{% generation %}...{% endgeneration %}`` blocks of a chat
template (``apply_chat_template(..., return_assistant_tokens_mask=True)``); most shipped templates have none. TRL
carries marked copies of the templates of some model families; SmolLM2's ChatML template is not among them, and TRL
then refuses ``assistant_only_loss``. :func:`training_chat_template` finds a marked template in this order: one given
by the user, the tokenizer's own when it is marked, TRL's copy for a known template, and for a ChatML template
(``<|im_start|>role ... <|im_end|>``) one built here. The built one must render every probe conversation exactly as
the original does (so training and inference see the same text), otherwise it is an error rather than a silent
fall-back to training on every token.

In the ChatML template built here, an assistant turn is ``<|im_start|>assistant\\n`` (the generation prompt, no loss)
+ the content + ``<|im_end|>`` (loss: the model must learn to stop) + ``\\n`` (no loss). A default system message
that the original inserts when a conversation has none (SmolLM2: "You are a helpful AI assistant named SmolLM,
trained by Hugging Face") is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.errors import ConfigError
from agentlab.core.files import read_text

START, END = "<|im_start|>", "<|im_end|>"
_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBES: list[tuple[list[dict[str, str]], bool]] = [
    ([{"role": "system", "content": "Sys one."}, {"role": "user", "content": "Hi there?"},
      {"role": "assistant", "content": "Hello, friend."}], False),
    ([{"role": "user", "content": "Hi there?"}, {"role": "assistant", "content": "Hello, friend."}], False),
    ([{"role": "system", "content": "Sys one."}, {"role": "user", "content": "One?"},
      {"role": "assistant", "content": "Two."}, {"role": "user", "content": "Three?"},
      {"role": "assistant", "content": "Four."}], False),
    ([{"role": "user", "content": "Hi there?"}], True),
    ([{"role": "system", "content": "Sys one."}, {"role": "user", "content": "Hi there?"}], True),
]
SOURCES = {
    "given": "the chat template given",
    "tokenizer": "the tokenizer's own chat template",
    "trl": "TRL's training copy of the tokenizer's chat template",
    "chatml": "agentlab's ChatML training template (renders exactly as the tokenizer's own)",
}


@dataclass(frozen=True)
class TrainingTemplate:
    """A chat template with ``{% generation %}`` markers around assistant output, and where it came from
    (a key of :data:`SOURCES`)."""

    template: str
    source: str

    def describe(self) -> str:
        return SOURCES.get(self.source, self.source)


def has_generation_markers(template: str | None) -> bool:
    """Whether ``template`` marks assistant output with ``{% generation %}`` (any whitespace-trim variant)."""
    return bool(template) and _MARKER.search(template or "") is not None


def training_chat_template(tokenizer: Any, chat_template: str | Path | None = None) -> TrainingTemplate:
    """A template that marks the assistant turns of ``tokenizer``'s conversations (see the module docstring).

    ``chat_template``: a ``.jinja`` / ``.j2`` file or the template text, used as given (it must have markers).
    Raises ``ConfigError`` when no marked template can be had, naming what to give instead.
    """
    hint = ("give a chat template file (.jinja) whose assistant output sits inside {% generation %}...{% "
            "endgeneration %}, or train on every token (assistant_only_loss: false)")
    if chat_template is not None:
        text = _read_template(chat_template)
        if not has_generation_markers(text):
            raise ConfigError("the chat template given has no {% generation %} markers around assistant output",
                              hint=hint)
        return TrainingTemplate(text, "given")
    own = tokenizer.chat_template
    if isinstance(own, dict):
        own = own.get("default")
    if not own:
        raise ConfigError("the tokenizer has no chat template, so assistant turns cannot be found", hint=hint)
    if has_generation_markers(own):
        return TrainingTemplate(own, "tokenizer")
    try:
        from trl.chat_template_utils import get_training_chat_template

        patched = get_training_chat_template(tokenizer)
    except (ImportError, ValueError):  # an older TRL, or a template TRL has no training copy of
        patched = None
    if patched:
        return TrainingTemplate(patched, "trl")
    built = chatml_training_template(tokenizer)
    if built is None:
        raise ConfigError("the tokenizer's chat template marks no assistant turns, and agentlab cannot supply a "
                          "marked copy of it (only ChatML templates are rebuilt)", hint=hint)
    return TrainingTemplate(built, "chatml")


def chatml_training_template(tokenizer: Any) -> str | None:
    """A ChatML template with generation markers that renders every probe exactly as ``tokenizer``'s own template,
    or None when the tokenizer's template is not ChatML (or renders differently)."""
    own = tokenizer.chat_template
    if not isinstance(own, str) or START not in own or END not in own:
        return None
    try:
        alone = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there?"}], tokenize=False)
    except Exception:  # a template that rejects a lone user message is not one we can rebuild
        return None
    default_system = None
    head = f"{START}system\n"
    if alone.startswith(head) and END in alone:
        default_system = alone[len(head):alone.index(END)]
    template = _chatml(default_system)
    try:
        for messages, prompt in _PROBES:
            mine = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                                 chat_template=template)
            theirs = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            if mine != theirs:
                return None
    except Exception:
        return None
    return template


def _chatml(default_system: str | None) -> str:
    system = ""
    if default_system is not None:
        # json.dumps writes a valid Jinja string literal (quotes and backslashes escaped)
        system = ("{%- if messages[0]['role'] != 'system' %}{{- '" + START + "system\\n' + "
                  + json.dumps(default_system) + " + '" + END + "\\n' }}{%- endif %}")
    return (
        system
        + "{%- for message in messages %}"
        "{%- if message['role'] == 'assistant' %}"
        "{{- '" + START + "assistant\\n' }}"
        "{%- generation %}{{- message['content'] + '" + END + "' }}{%- endgeneration %}"
        "{{- '\\n' }}"
        "{%- else %}"
        "{{- '" + START + "' + message['role'] + '\\n' + message['content'] + '" + END + "\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '" + START + "assistant\\n' }}{%- endif %}"
    )


def _read_template(value: str | Path) -> str:
    path = Path(value)
    if isinstance(value, Path) or (path.suffix in (".jinja", ".j2") and "\n" not in str(value)):
        return read_text(path)
    return str(value)

"""Chat JSONL checks of train-persona: each bad line is named with file:line before any model loads; the shipped
persona files are valid and are exactly what the generator makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentlab.core.errors import InputError
from agentlab.train_persona.config import SHIPPED_DATA
from agentlab.train_persona.data import load_chat_jsonl
from agentlab.train_persona.personas import PERSONAS, conversations

GOOD = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}]}


@pytest.mark.parametrize("line, says", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"text": "hi"}', '"messages" must be a non-empty list'),
    ('{"messages": []}', '"messages" must be a non-empty list'),
    ('{"messages": ["hi"]}', "messages[0]: expected an object"),
    ('{"messages": [{"content": "hi"}]}', "messages[0]: role is missing"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "messages[0]: unknown role 'bot'"),
    ('{"messages": [{"role": "user", "content": 3}]}', "messages[0]: content must be text"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, '
     '{"role": "assistant", "content": "c"}]}', "messages[1]: a system message may only come first"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}',
     "messages[1]: empty assistant turn"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "no assistant turn"),
], ids=["json", "list", "no-messages", "empty-messages", "turn-not-object", "no-role", "unknown-role",
        "content-not-text", "late-system", "empty-assistant", "no-assistant"])
def test_each_bad_line_is_named(in_tmp: Path, line: str, says: str) -> None:
    path = in_tmp / "chat.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n")
    with pytest.raises(InputError) as info:
        load_chat_jsonl(path)
    assert f"{path}:3: " in info.value.message and says in info.value.message
    assert info.value.exit_code == 2 and info.value.hint


@pytest.mark.parametrize("content", [b"", b"\n\n", b"\xff\xfe{}", b"\x00" * 10])
def test_empty_or_binary_files(in_tmp: Path, content: bytes) -> None:
    path = in_tmp / "chat.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError, match=str(path)):
        load_chat_jsonl(path)


def test_many_problems_are_counted(in_tmp: Path) -> None:
    path = in_tmp / "chat.jsonl"
    path.write_text("".join('{"messages": [{"role": "user", "content": "a"}]}\n' for _ in range(8)))
    with pytest.raises(InputError) as info:
        load_chat_jsonl(path)
    assert info.value.message.count("no assistant turn") == 5 and "(and 3 more)" in info.value.message


def test_extra_keys_are_kept_out_of_the_rows(in_tmp: Path) -> None:
    path = in_tmp / "chat.jsonl"
    path.write_text(json.dumps({**GOOD, "answer": "4"}) + "\n")
    data = load_chat_jsonl(path)
    assert data.rows == [GOOD] and data.lines == [1] and data.turns == 2 and len(data.sha256) == 64


@pytest.mark.parametrize("persona", PERSONAS)
def test_shipped_personas_are_valid_and_regenerate_exactly(persona: str) -> None:
    path = SHIPPED_DATA / f"sft_persona_{persona}.jsonl"
    data = load_chat_jsonl(path)
    assert 50 <= len(data.rows) <= 200
    assert path.read_text(encoding="utf-8") == "".join(json.dumps(c, ensure_ascii=False) + "\n"
                                                       for c in conversations(persona))


def test_personas_differ_in_style_on_checkable_answers() -> None:
    first = {p: next(iter(conversations(p))) for p in PERSONAS}
    replies = {p: c["messages"][-1]["content"] for p, c in first.items()}
    assert len(set(replies.values())) == 3
    for p, c in first.items():
        assert c["answer"] in replies[p]


@pytest.mark.parametrize("name, guess", [("persona_z", "(did you mean persona_a, persona_b or persona_c?)"),
                                         ("skill_unit", "(did you mean skill_units?)"), ("chats.jsonl", "")])
def test_a_missing_file_lists_the_shipped_names_and_the_nearest(in_tmp: Path, name: str, guess: str) -> None:
    """`--data persona_z` said only "chat data file not found", with a hint about the JSON of each line."""
    with pytest.raises(InputError) as info:
        load_chat_jsonl(name)
    assert info.value.message == f"{name}: chat data file not found" + (f" {guess}" if guess else "")
    assert "persona_a, persona_b, persona_c, skill_arithmetic, skill_geography, skill_units" in (info.value.hint or "")

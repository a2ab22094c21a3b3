"""core.llm.structured.parse_reply: the one JSON fault forgiven is a raw control character inside a string."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agentlab.core.llm.structured import InvalidOutput, parse_reply


class Reply(BaseModel):
    answer: int
    note: str


def test_a_raw_control_character_in_a_string_is_read_leniently() -> None:
    assert parse_reply('{"answer": 3, "note": "a\x17b"}', Reply).note == "a\x17b"


@pytest.mark.parametrize("text, says", [('{"answer": "x", "note": "a\x17b"}', "answer"),
                                        ('{"answer": 3, "note": "ab}', "Invalid JSON")])
def test_other_faults_still_fail(text: str, says: str) -> None:
    with pytest.raises(InvalidOutput, match=says):
        parse_reply(text, Reply)

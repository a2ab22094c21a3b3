"""The hint of a task's local .jsonl data that is no JSON lines names the fields the task's own YAML reads, not the
{"question", "answer"} of `debate make-task`'s files."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from eval_helpers import user_tasks  # noqa: E402

from agentlab.core.errors import InputError  # noqa: E402
from agentlab.core.harness.tasks import load_tasks, task_manager  # noqa: E402


@pytest.mark.parametrize("data", [b'{"q": \n', b"[1]\n", b"", b"\xff\n"])
def test_a_bad_data_file_hint_names_the_fields_the_task_reads(in_tmp: Path, data: bytes) -> None:
    folder = user_tasks(in_tmp)
    (folder / "data" / "sums.jsonl").write_bytes(data)
    with pytest.raises(InputError) as caught:
        load_tasks(task_manager([folder], names=["my_sums"]), ["my_sums"])
    hint = caught.value.hint or ""
    assert '"q": ...' in hint and '"options": ...' in hint and '"label": ...' in hint, hint
    assert "question" not in hint and "answer" not in hint, hint

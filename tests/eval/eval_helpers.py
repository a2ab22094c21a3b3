"""Shared by the eval tests: a user's own lm-eval task folder (YAML + JSONL data beside it)."""

from __future__ import annotations

import json
from pathlib import Path

USER_TASK = """task: my_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/sums.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{q}} ="
doc_to_choice: "{{options}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def user_tasks(root: Path) -> Path:
    folder = root / "my_tasks"
    (folder / "data").mkdir(parents=True)
    (folder / "my_task.yaml").write_text(USER_TASK)
    (folder / "data" / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"q": "2 + 2", "options": ["4", "5"], "label": 0}, {"q": "3 + 4", "options": ["6", "7"], "label": 1})))
    return folder

"""The shipped skill datasets and mixed task equal their generator's output; the splits are disjoint and balanced;
arithmetic and unit questions of the mixed task are unseen in training; `--data skill_X` names the shipped file."""

from __future__ import annotations

import json

from agentlab.core import skills


def test_shipped_files_equal_the_generator() -> None:
    made = skills.files()
    for name, text in made.items():
        assert (skills.DATA_DIR / name).read_text(encoding="utf-8") == text, f"regenerate: python -m {skills.__name__}"
    assert {p.name for p in skills.DATA_DIR.glob("*.jsonl")} == set(made)


def test_splits_are_disjoint_balanced_and_held_out() -> None:
    task = skills.mixed_task()
    seen: set[str] = set()
    for split, rows in task.items():
        questions = {r["question"] for r in rows}
        assert len(questions) == len(rows) == skills.SPLITS[split] * 3 and not questions & seen
        assert [r["skill"] for r in rows[:3]] == list(skills.SKILLS)
        seen |= questions
    for skill in skills.SKILLS:
        trained = {c["messages"][0]["content"] for c in skills.conversations(skill)}
        asked = {q for rows in task.values() for q in (r["question"] for r in rows if r["skill"] == skill)}
        if skill == "geography":
            assert asked <= trained and len(trained) == len(skills.geography_facts())  # facts: every one taught
        else:
            assert not asked & trained  # new numbers: the skill must generalise


def test_train_persona_names_the_shipped_skill_data() -> None:
    from agentlab.train_persona.config import TrainPersonaConfig

    for skill in skills.SKILLS:
        path = TrainPersonaConfig(data={"path": f"skill_{skill}"}).data.path
        assert path == skills.DATA_DIR / f"sft_skill_{skill}.jsonl"
        first = json.loads(path.read_text().splitlines()[0])
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]

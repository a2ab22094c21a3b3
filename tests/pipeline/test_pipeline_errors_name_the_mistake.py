"""Errors that blamed the wrong thing: a bad --stage NAME said only pydantic's pattern; a models file without
`models:` was an unknown model of the pipeline file ("known: none"); `models: [a, b]` on a single stage said it
needs `model`; `temprature:` on a stage offered `template`; `show ""` said '' matches every session."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import write_models, write_pipeline

from agentlab.cli import main


def _err(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, " ".join(capsys.readouterr().err.split())


def test_a_bad_stage_name_on_the_command_line_is_named_with_the_characters_allowed(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, err = _err(capsys, "pipeline", "run", "--stage", "a b=smollm2", "-i", "hi")
    assert code == 2 and "should match pattern" not in err
    assert "error: --stage a b=smollm2: bad stage name 'a b': a stage name is letters, digits and _ . -" in err
    assert "hint: e.g. --stage a-b=smollm2" in err


def test_a_models_file_with_no_models_is_said_of_that_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "nomodels.yaml").write_text("defaults:\n  n_ctx: 512\n")
    write_pipeline(in_tmp, [{"name": "s", "model": "smollm2"}])
    code, err = _err(capsys, "pipeline", "run", "--models", "nomodels.yaml", "--pipeline", "pipeline.yaml", "-i", "hi")
    assert code == 2 and "error: nomodels.yaml: defines no models" in err and "known: none" not in err
    code, err = _err(capsys, "pipeline", "run", "--models", "nomodels.yaml", "--stage", "s=smollm2", "-i", "hi")
    assert code == 2 and "error: nomodels.yaml: defines no models" in err


@pytest.mark.parametrize(("stage", "said"), [
    ({"type": "single", "models": ["a", "b"]}, "stages[0].models: a single stage takes one `model`; for several, "
     "write `type: multi`"),
    ({"model": "a", "temprature": 0.3}, "stages[0].temprature: unknown key: a generation setting goes under the "
     "stage's `params` (did you mean params.temperature?)"),
    ({"model": "a", "max_token": 10}, "(did you mean params.max_tokens?)"),
    ({"model": "a", "templat": "x"}, "stages[0].templat: unknown key (did you mean 'template'?)"),
])
def test_a_stage_field_in_the_wrong_place_says_where_it_goes(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                             stage: dict, said: str) -> None:
    write_models(in_tmp, ["a", "b"])
    write_pipeline(in_tmp, [{"name": "s", **stage}])
    code, err = _err(capsys, "pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml", "-i", "hi")
    assert code == 2 and said in err, err


@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_session_name_is_said_to_be_empty(in_tmp: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    for session in ("s1", "s2"):
        (in_tmp / "runs" / "pipeline" / session).mkdir(parents=True)
        (in_tmp / "runs" / "pipeline" / session / "run.json").write_text("{}")
    for command in ("show", "rerun"):
        code, err = _err(capsys, "pipeline", command, name)
        assert code == 2 and "the session name is empty" in err and "matches" not in err, err

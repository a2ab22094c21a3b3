"""The four aggregations, each against answers where a plausible wrong implementation gives another result, and the
template sandbox."""

from __future__ import annotations

import pytest

from agentlab.core.errors import AgentlabError, ConfigError
from agentlab.core.vote import normalise
from agentlab.pipeline.aggregate import Answer, concat, render_template, synthesis_messages, vote

A = [Answer("m1", "London"), Answer("m2", " Paris. "), Answer("m3", "paris"), Answer("m4", "PARIS  !")]


def test_concat_keeps_model_order_under_model_headers() -> None:
    out = concat([Answer("zeta", "last?\n"), Answer("alpha", "first")])
    assert out == "### zeta\nlast?\n\n### alpha\nfirst"


def test_normalise_strip_casefold_whitespace_trailing_punctuation() -> None:
    assert normalise("  The   ANSWER is\n42 !?. ") == "the answer is 42"
    assert normalise("Straße.") == normalise("STRASSE")  # casefold, not lower
    assert normalise("3.5") == "3.5"  # only trailing punctuation goes


def test_vote_majority_of_normalised_answers_not_first_answer() -> None:
    text, details = vote(A)
    assert text == "Paris."  # the first voter's own wording, stripped
    assert details["winner"] == "m2" and details["tie"] is False
    assert details["votes"] == [{"answer": "london", "count": 1, "models": ["m1"]},
                                {"answer": "paris", "count": 3, "models": ["m2", "m3", "m4"]}]


def test_vote_tie_goes_to_the_earliest_model() -> None:
    text, details = vote([Answer("a", "blue"), Answer("b", "Red"), Answer("c", "red."), Answer("d", "Blue")])
    assert text == "blue" and details["winner"] == "a" and details["tie"] is True
    text, details = vote([Answer("a", "x"), Answer("b", "y"), Answer("c", "z")])
    assert text == "x" and details["tie"] is True


def test_synthesis_prompt_has_question_numbered_answers_and_instruction() -> None:
    messages = synthesis_messages("What is the capital of France?", A[:2])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "synthesise these responses" in messages[0]["content"]
    user = messages[1]["content"]
    assert "What is the capital of France?" in user
    assert "1. London\n\n2. Paris." in user
    assert "do not mention the candidates" in user and "single, better answer" in user


def test_template_sees_answers_input_original_stages() -> None:
    template = ("{{ original }}|{{ input }}|{{ stages.draft }}|"
                "{% for a in answers %}{{ loop.index }}:{{ a.model }}={{ a.text|trim|upper }};{% endfor %}")
    out = render_template(template, A[:2], input="IN", original="ORIG", stages={"draft": "D"})
    assert out == "ORIG|IN|D|1:m1=LONDON;2:m2=PARIS.;"


@pytest.mark.parametrize("template", [
    "{{ answers.__class__.__mro__ }}",
    "{{ ''.__class__.__subclasses__() }}",
    "{{ answers|attr('__class__') }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler }}",
    "{{ '{0.__class__}'.format(answers) }}",
    "{{ answers.append(1) }}",
    "{{ stages.update({'x': 1}) }}",
    "{{ self.__init__.__globals__ }}",
    "{{ answers[0].text.__class__ }}",
    "{{ undefined_name }}",
])
def test_template_sandbox_refuses_python_internals(template: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_template(template, A, input="i", original="o", stages={"s": "x"}, where="stage 'v': template")
    assert "stage 'v': template" in info.value.message
    assert isinstance(info.value, AgentlabError) and info.value.exit_code == 2


@pytest.mark.parametrize("template", ["{% for i in range(10**9) %}{% endfor %}", "{{ 1 / 0 }}", "{{ answers[9] }}"])
def test_template_runtime_errors_are_config_errors(template: str) -> None:
    with pytest.raises(ConfigError):
        render_template(template, A, input="", original="", stages={})

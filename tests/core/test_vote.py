"""agentlab.core.vote: weights, ReConcile's binning, the tie rule, unparseable answers as no vote, Wilson intervals."""

from __future__ import annotations

import pytest

from agentlab.core.vote import Ballot, normalise, reconcile_weight, tally, wilson_interval


def test_numbers_and_words_normalise_to_one_vote() -> None:
    assert normalise(" 56. ") == normalise("56.0") == normalise("56") == "56"
    assert normalise("1,000") == "1000" and normalise("-3.50") == "-3.5"
    assert normalise("  The   ANSWER is\n42 !?. ") == "the answer is 42"


@pytest.mark.parametrize("confidence, weight", [(1.0, 1.0), (0.95, 0.8), (0.9, 0.8), (0.85, 0.5), (0.8, 0.5),
                                                (0.7, 0.3), (0.6, 0.1), (0.2, 0.1), (0.0, 0.1)])
def test_reconcile_bins(confidence: float, weight: float) -> None:
    assert reconcile_weight(confidence) == weight


def test_confidence_outweighs_a_headcount() -> None:
    ballots = [Ballot("a", "12", 1.0), Ballot("b", "13", 0.3), Ballot("c", "13", 0.3)]
    assert tally(ballots, "majority").winner == "13"
    assert tally(ballots, "confidence").winner == "12"  # 1.0 against 0.3 + 0.3
    assert tally(ballots, "reconcile").winner == "12"  # bins: 1.0 vs 0.1 + 0.1


def test_raw_confidence_vote() -> None:
    ballots = [Ballot("a", "x", 0.9), Ballot("b", "y", 0.5), Ballot("c", "y", 0.5)]
    result = tally(ballots, "confidence")
    assert result.winner == "y" and result.groups[0]["weight"] == 1.0 and result.groups[1]["weight"] == 0.9


def test_unparseable_answers_are_no_votes_never_the_winner() -> None:
    ballots = [Ballot("a", None), Ballot("b", None), Ballot("c", "7", 0.1), Ballot("d", "   ")]
    result = tally(ballots, "reconcile")
    assert result.winner == "7" and result.no_votes == 3 and result.share() == 1.0
    nobody = tally([Ballot("a", None), Ballot("b", None)], "majority")
    assert nobody.winner is None and nobody.text is None and nobody.no_votes == 2 and nobody.share() == 0.0


def test_ties_go_to_more_ballots_then_to_the_first_answer() -> None:
    # equal weight (0.8 vs 0.5 + 0.3): more ballots win
    ballots = [Ballot("a", "1", 0.95), Ballot("b", "2", 0.85), Ballot("c", "2", 0.7)]
    result = tally(ballots, "reconcile")
    assert result.winner == "2" and result.tie
    # equal weight and count: the answer given first
    result = tally([Ballot("a", "Rome", text="Rome."), Ballot("b", "Paris")], "majority")
    assert result.winner == "rome" and result.text == "Rome." and result.tie


def test_missing_confidence_weighs_half() -> None:
    result = tally([Ballot("a", "1"), Ballot("b", "2", 0.4)], "confidence")
    assert result.winner == "1" and result.groups[0]["weight"] == 0.5
    # under reconcile too (the weight, not a confidence binned to 0.1): two answers stating none outvote a 65% one
    result = tally([Ballot("a", "7"), Ballot("b", "7"), Ballot("c", "8", 0.65)], "reconcile")
    assert result.winner == "7" and result.groups[0]["weight"] == 1.0 and result.groups[1]["weight"] == 0.3


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        tally([], "plurality")  # type: ignore[arg-type]


def test_a_long_answer_naming_one_short_answer_votes_for_it() -> None:
    from agentlab.core.vote import canonical

    ballots = [Ballot("a", "Warszawa"), Ballot("b", "Warsaw"), Ballot("c", "Yo ho, that be Warsaw, sailor")]
    t = tally(ballots)
    assert (t.winner, t.tie, t.groups[0]["count"], t.groups[0]["voters"]) == ("warsaw", False, 2, ["b", "c"])
    # the most specific short answer named; two named, or none: the long answer keeps its own vote
    assert canonical(["new delhi", "delhi", "arr, that be new delhi, matey"])["arr, that be new delhi, matey"] == \
        "new delhi"
    assert canonical(["delhi", "new delhi"]) == {"delhi": "delhi", "new delhi": "new delhi"}  # both short: apart
    long = "not sydney but canberra, me hearty"
    assert canonical(["sydney", "canberra", long])[long] == long
    assert canonical(["paris", "the capital of france is lyon"])["the capital of france is lyon"] == \
        "the capital of france is lyon"
    assert tally([Ballot("a", "12"), Ballot("b", "3 times 4 is 12 in all")]).groups[0]["count"] == 2


def test_unanimous_groups_as_the_vote_does() -> None:
    from agentlab.core.debate.answers import Answer
    from agentlab.core.debate.rules import unanimous

    said = [Answer("a", "Lima", "Lima", None), Answer("c", "", "Yo ho, that be Lima, sailor", None)]
    assert unanimous(said) and not unanimous([*said, Answer("b", "Cusco", "Cusco", None)])

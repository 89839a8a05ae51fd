"""Bench scorers on hand-made cases."""

from __future__ import annotations

import pytest

from contextbox.bench.scoring import f1, format_gold, parse_pairs, score


@pytest.mark.parametrize("answer,expected", [
    ("4688797", 1.0), ("The magic number is 4688797.", 1.0), ("46887970", 0.0), ("4688798", 0.0), ("", 0.0),
])
def test_needle(answer, expected):
    assert score("needle", answer, "4688797") == expected


def test_needle_words_case_insensitive():
    assert score("needle", "amber-1234", "AMBER-1234") == 1.0
    assert score("needle", "XAMBER-1234", "AMBER-1234") == 0.0


@pytest.mark.parametrize("answer,expected", [
    ("15", 1.0), ("There are 15 instances.", 1.0), ("14", 0.75), ("18", 0.75 ** 3), ("1,015", 0.75 ** 1000),
    ("none", 0.0), (None, 0.0),
])
def test_numeric_oolong(answer, expected):
    assert score("numeric", answer, 15) == pytest.approx(expected, abs=1e-6)


def test_label_first_named_wins():
    assert score("label", "entity", "entity") == 1.0
    assert score("label", "Label: Entity.", "entity") == 1.0
    assert score("label", "human is more common than entity", "entity") == 0.0
    assert score("label", "entity is more common than human", "entity") == 1.0
    assert score("label", "entities", "entity") == 0.0


def test_ranking_partial():
    gold = ["DiskFull", "NetworkTimeout", "DatabaseError"]
    assert score("ranking", "DiskFull: 20, NetworkTimeout: 10, DatabaseError: 5", gold) == 1.0
    assert score("ranking", "NetworkTimeout, DiskFull, DatabaseError", gold) == pytest.approx(1 / 3)


def test_percentiles():
    gold = {"p50": 83, "p95": 331, "p99": 550}
    assert score("percentiles", "p50=83, p95=331, p99=550", gold) == 1.0
    assert score("percentiles", "p50: 83 ms; p95: 330 ms; p99: 550 ms", gold) == pytest.approx(2 / 3)
    assert score("percentiles", "83", gold) == 0.0


def test_topk():
    gold = ["report", "request", "payment", "profile", "channel"]
    assert score("topk", "report, request, payment, profile, channel", gold) == 1.0
    assert score("topk", "The top words are: report, request, payment, cache, order", gold) == pytest.approx(0.6)


def test_pairs_f1():
    gold = [[1, 2], [1, 3], [2, 3]]
    assert parse_pairs("(2, 1)\n(1, 3)") == {(1, 2), (1, 3)}
    assert parse_pairs("(1, 2), (1, 3), (2, 3)") == {(1, 2), (1, 3), (2, 3)}
    assert score("pairs", "(1, 2)\n(1, 3)\n(2, 3)", gold) == 1.0
    assert score("pairs", "(1, 2)\n(1, 3)", gold) == pytest.approx(0.8)
    assert score("pairs", "(1, 2)\n(4, 5)", gold) == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert score("pairs", "(7, 8)", gold) == 0.0
    assert f1(set(), set()) == 1.0


def test_name():
    meta = {"suspects": ["Florence Dunmore", "Edmund Kestrel", "Julia Hollis"]}
    assert score("name", "Florence Dunmore", "Florence Dunmore", meta) == 1.0
    assert score("name", "It was Dunmore.", "Florence Dunmore", meta) == 1.0
    assert score("name", "Dunmore or Kestrel", "Florence Dunmore", meta) == 0.0
    assert score("name", "Edmund Kestrel", "Florence Dunmore", meta) == 0.0


@pytest.mark.parametrize("kind,gold", [
    ("needle", "4688797"), ("numeric", 12), ("label", "location"), ("ranking", ["A", "B"]),
    ("percentiles", {"p50": 1, "p95": 2, "p99": 3}), ("topk", ["cache", "order"]), ("pairs", [[10, 20], [10, 30]]),
    ("name", "Ann Lee"),
])
def test_format_gold_scores_full(kind, gold):
    meta = {"suspects": ["Ann Lee", "Bo Kim"]}
    assert score(kind, format_gold(kind, gold), gold, meta) == 1.0


def test_unknown_kind():
    with pytest.raises(ValueError):
        score("nope", "x", "x")


def test_rlms_usage_summary_tokens_are_summed():
    from contextbox.bench.runner import _sum_tokens

    usage = {"model_usage_summaries": {"m": {"total_calls": 3, "total_input_tokens": 100, "total_output_tokens": 20},
                                       "s": {"total_calls": 1, "total_input_tokens": 5, "total_output_tokens": 1}}}
    assert _sum_tokens(usage) == 126
    assert _sum_tokens({"total_tokens": 7, "input_tokens": 1}) == 7
    assert _sum_tokens(None) == 0

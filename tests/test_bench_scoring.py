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


COUNTS = {"DiskFull": 20, "NetworkTimeout": 10, "DatabaseError": 5}
RANKED = ["DiskFull", "NetworkTimeout", "DatabaseError"]


@pytest.mark.parametrize("answer,expected", [
    ("DiskFull: 20, NetworkTimeout: 10, DatabaseError: 5", 1.0),
    ("1. DiskFull (20)\n2. NetworkTimeout (10)\n3. DatabaseError (5)", 1.0),
    ("DiskFull: 1,020... no: DiskFull: 20", 0.0),  # the count right after the first mention is what counts
    ("DiskFull: 20, NetworkTimeout: 11, DatabaseError: 5", 2 / 3),  # a wrong count costs its position
    ("DiskFull, NetworkTimeout, DatabaseError", 0.0),  # counts were asked for and not given
    ("DiskFull: 20.5, NetworkTimeout: 10, DatabaseError: 5", 2 / 3),  # counts are whole numbers
    ("NetworkTimeout: 10, DiskFull: 20, DatabaseError: 5", 1 / 3),  # the order still counts
])
def test_ranking_checks_counts_when_asked(answer, expected):
    assert score("ranking", answer, RANKED, {"counts": COUNTS}) == pytest.approx(expected, abs=1e-6)


def test_ranking_without_counts_checks_order_only():
    assert score("ranking", "DiskFull, NetworkTimeout, DatabaseError", RANKED) == 1.0
    assert score("ranking", "DiskFull, DatabaseError, NetworkTimeout", RANKED) == pytest.approx(1 / 3)


def test_percentiles():
    gold = {"p50": 83, "p95": 331, "p99": 550}
    assert score("percentiles", "p50=83, p95=331, p99=550", gold) == 1.0
    assert score("percentiles", "p50: 83 ms; p95: 330 ms; p99: 550 ms", gold) == pytest.approx(2 / 3)
    assert score("percentiles", "83", gold) == 0.0


@pytest.mark.parametrize("answer,expected", [
    ("p50=83.4, p95=331, p99=550", 2 / 3),  # exact to the stated rounding (whole ms): 83.4 is not 83
    ("p50=83.0, p95=331, p99=550", 1.0),  # the same whole number written with a zero decimal
    ("50th percentile: 83 ms, 95th percentile: 331 ms, 99th percentile: 550 ms", 1.0),
    ("p50 - 83, p95 - 331, p99 - 1,550", 2 / 3),
    ("P50 = 83ms, P95 = 331ms, P99 = 550ms", 1.0),
    ("p50=82, p95=332, p99=551", 0.0),  # off by one is wrong: nearest rank leaves no tolerance
])
def test_percentiles_exact(answer, expected):
    assert score("percentiles", answer, {"p50": 83, "p95": 331, "p99": 550}) == pytest.approx(expected, abs=1e-6)


def test_topk():
    gold = ["report", "request", "payment", "profile", "channel"]
    assert score("topk", "report, request, payment, profile, channel", gold) == 1.0
    assert score("topk", "The top words are: report, request, payment, cache, order", gold) == pytest.approx(0.6)


def test_topk_counts_only_the_first_k_words_of_the_answer():
    """Listing the whole vocabulary is not a top 5: words after the k-th do not count."""
    from contextbox.bench.logs import CONTENT

    gold = ["report", "request", "payment", "profile", "channel"]
    wrong = [w for w in CONTENT if w not in gold][:3]
    answer = ", ".join(wrong + gold)  # 3 wrong words first, then all five gold ones
    assert score("topk", answer, gold) == pytest.approx(2 / 5)
    assert score("topk", answer, gold, {"ordered": True}) == 0.0
    assert score("topk", ", ".join(gold + wrong), gold) == 1.0


def test_topk_checks_order_when_asked():
    gold = ["report", "request", "payment", "profile", "channel"]
    swapped = "request, report, payment, profile, channel"
    assert score("topk", swapped, gold) == 1.0  # order not asked: the set counts
    assert score("topk", swapped, gold, {"ordered": True}) == pytest.approx(0.6)
    assert score("topk", "The top words are: report, request, payment, profile, channel", gold,
                 {"ordered": True}) == 1.0
    assert score("topk", "channel, profile, payment, request, report", gold, {"ordered": True}) == pytest.approx(0.2)


def test_pairs_f1():
    gold = [[1, 2], [1, 3], [2, 3]]
    assert parse_pairs("(2, 1)\n(1, 3)") == {(1, 2), (1, 3)}
    assert parse_pairs("(1, 2), (1, 3), (2, 3)") == {(1, 2), (1, 3), (2, 3)}
    assert score("pairs", "(1, 2)\n(1, 3)\n(2, 3)", gold) == 1.0
    assert score("pairs", "(1, 2)\n(1, 3)", gold) == pytest.approx(0.8)
    assert score("pairs", "(1, 2)\n(4, 5)", gold) == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert score("pairs", "(7, 8)", gold) == 0.0
    assert f1(set(), set()) == 1.0


SUSPECTS = {"suspects": ["Florence Dunmore", "Edmund Kestrel", "Julia Hollis"]}


@pytest.mark.parametrize("answer,expected", [
    ("Florence Dunmore", 1.0), ("The culprit is FLORENCE DUNMORE.", 1.0), ("Florence\nDunmore", 1.0),
    ("It was Dunmore.", 0.0),  # a surname alone is not the full name
    ("Florence", 0.0), ("Miss Dunmore", 0.0),
    ("Florence Dunmore or Edmund Kestrel", 0.0), ("Florence Dunmore, not Kestrel", 0.0),  # another suspect named
    ("Edmund Kestrel", 0.0), ("Florence Dunmores", 0.0),
])
def test_name_requires_the_full_name(answer, expected):
    assert score("name", answer, "Florence Dunmore", SUSPECTS) == expected


@pytest.mark.parametrize("match_type,expected,answer,ok", [
    ("contains", "3", "There are 3 classes.", 1.0),
    ("contains", "3", "There are 13 classes.", 0.0),  # a whole token, not any substring
    ("contains", "3", "3.5", 1.0),
    ("contains", "PURPLE-ELEPHANT-42", "the passphrase is purple-elephant-42", 1.0),
    ("contains", "AdminUser", "SuperAdminUser", 0.0),
    ("contains_all", ["create_user", "find_user"], "create_user, find_user, delete_user", 1.0),
    ("contains_all", ["create_user", "find_user"], "create_user only", 0.0),
    ("exact", "NIGHTINGALE", " nightingale. ", 1.0),
    ("exact", "NIGHTINGALE", "Agent NIGHTINGALE", 0.0),
    ("regex", r"\d+\.\d+\.\d+\.\d+", "10.0.3.4 is the busiest", 1.0),
    ("regex", r"\d+\.\d+\.\d+\.\d+", "about 60 addresses", 0.0),
])
def test_seed_match_types(match_type, expected, answer, ok):
    assert score("seed", answer, expected, {"match_type": match_type}) == ok


def test_seed_regex_pattern_overrides_expected():
    meta = {"match_type": "regex", "regex_pattern": r"40.*100|0\.4|40%|2:5"}
    assert score("seed", "ERROR 40 vs WARN 100", "40", meta) == 1.0
    assert score("seed", "2:5", "40", meta) == 1.0
    assert score("seed", "40", "40", meta) == 0.0  # the expected string alone does not match the pattern
    with pytest.raises(ValueError, match="match_type"):
        score("seed", "x", "x", {"match_type": "fuzzy"})


@pytest.mark.parametrize("kind,gold,meta", [
    ("needle", "4688797", {}), ("numeric", 12, {}), ("label", "location", {}), ("ranking", ["A", "B"], {}),
    ("ranking", ["Bee", "Ant"], {"counts": {"Ant": 3, "Bee": 9}}),
    ("percentiles", {"p50": 1, "p95": 2, "p99": 3}, {}), ("topk", ["cache", "order"], {"ordered": True}),
    ("pairs", [[10, 20], [10, 30]], {}), ("name", "Ann Lee", {"suspects": ["Ann Lee", "Bo Kim"]}),
    ("seed", ["x", "y"], {"match_type": "contains_all"}), ("seed", "Z9", {"match_type": "exact"}),
])
def test_format_gold_scores_full(kind, gold, meta):
    assert score(kind, format_gold(kind, gold, meta), gold, meta) == 1.0


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


# ---------------------------------------------------------------------- edges found by mutation testing
def test_first_int_reads_thousands_separators():
    from contextbox.bench.scoring import first_int

    assert first_int("There are 1,234 rows") == 1234
    assert first_int("-17 degrees") == -17 and first_int("none") is None
    assert score("numeric", "1,234", 1234) == 1.0


def test_an_empty_gold_list_is_matched_by_any_answer():
    assert score("ranking", "anything", []) == 1.0
    assert score("topk", "anything", []) == 1.0


def test_ranking_count_must_follow_its_own_name():
    counts = {"DiskFull": 10, "NetworkTimeout": 10, "DatabaseError": 5}
    # DiskFull has no count of its own; the 10 after NetworkTimeout is not its count
    assert score("ranking", "DiskFull, NetworkTimeout: 10, DatabaseError: 5", RANKED,
                 {"counts": counts}) == pytest.approx(2 / 3, abs=1e-6)
    # the digits inside the next name are not a count either
    assert score("ranking", "Http404, Http500: 7", ["Http404", "Http500"],
                 {"counts": {"Http404": 500, "Http500": 7}}) == 0.5


def test_topk_ignores_articles_between_the_words():
    gold = ["report", "request", "payment", "profile", "channel"]
    assert score("topk", "a report, the request, a payment, the profile, a channel", gold, {"ordered": True}) == 1.0


def test_f1_of_nothing_against_something_is_zero():
    assert f1(set(), {(1, 2)}) == 0.0 and f1({(1, 2)}, set()) == 0.0


def test_name_another_suspects_surname_is_their_last_word():
    meta = {"suspects": ["Florence Dunmore", "Mary Ann Voss"]}
    assert score("name", "Florence Dunmore, not Voss", "Florence Dunmore", meta) == 0.0
    assert score("name", "Florence Dunmore, not Ann", "Florence Dunmore", meta) == 1.0


def test_seed_match_type_defaults_to_contains():
    assert score("seed", "There are 3 classes.", "3", {}) == 1.0
    assert score("seed", "There are 13 classes.", "3", {}) == 0.0


def test_a_blank_answer_scores_zero_whatever_the_scorer():
    assert score("seed", "   \n", "x", {"match_type": "regex", "regex_pattern": r"\s"}) == 0.0
    assert score("seed", "", "x", {"match_type": "regex", "regex_pattern": ""}) == 0.0


def test_scores_are_rounded_to_six_decimals_and_unknown_kinds_named():
    assert score("ranking", "NetworkTimeout, DiskFull, DatabaseError", RANKED) == 0.333333
    with pytest.raises(ValueError, match="unknown scorer 'nope'"):
        score("nope", "x", "x")


def test_format_gold_writes_lists_as_comma_separated_words():
    assert format_gold("seed", ["x", "y"]) == "x, y"
    assert format_gold("topk", ["cache", "order"]) == "cache, order"
    assert format_gold("pairs", [[1, 2], [3, 4]]) == "(1, 2)\n(3, 4)"
    assert format_gold("percentiles", {"p50": 1, "p95": 2}) == "p50=1, p95=2"
    assert format_gold("ranking", ["A", "B"], {"counts": {"A": 3, "B": 1}}) == "A: 3, B: 1"
    assert format_gold("needle", 42) == "42"


def test_pairs_a_line_with_an_odd_number_of_numbers_keeps_its_pairs():
    assert parse_pairs("(1, 2), 3") == {(1, 2)}


def test_topk_a_gold_word_outside_the_log_vocabulary_still_counts():
    assert score("topk", "zebra, report", ["zebra", "report"]) == 1.0

"""The table route's column choice: the column a question is about, from its words and the data."""

from __future__ import annotations

import random
import re

import pytest
from helpers import cmd

from contextbox import RLM, Config, Context, table_ops
from contextbox.bench.logs import make_log
from contextbox.column_hints import field_choice, rank_columns
from contextbox.providers import ScriptedProvider


@pytest.fixture(scope="module")
def log_table():
    text, facts = make_log(60_000, random.Random(3))
    return table_ops.extract(Context.from_value(text)), text, facts


@pytest.mark.parametrize("question,op,want", [
    ("Which error type occurs most often?", "count_by", "name"),
    ("Rank the error types from most to least frequent. Show the count for each error type.", "count_by", "name"),
    ("Rank the error types (the word after the response time on ERROR lines) by frequency.", "count_by", "name"),
    ("How many times does RateLimited occur?", "count_by", "name"),
    ("How many ERROR lines are in this log?", "count_by", "level"),
    ("What is the ratio of ERROR to WARN messages?", "count_by", "level"),
    ("What is the p95 response time?", "stats", "duration"),
    ("What is the average latency in milliseconds?", "stats", "duration"),
    ("How many unique IP addresses appear in these logs?", "unique", "ip"),
    ("Which IP address has the most ERROR lines?", "count_by", "ip"),
    ("What are the 5 most frequent words in the quoted messages?", "word_counts", "message"),
    ("Which endpoint gets the most requests?", "count_by", "path"),
    ("Which HTTP status code is most common?", "count_by", "status"),
    ("What is the most frequent error?", "count_by", "name"),
    ("Which path returns status 500 most often?", "count_by", "path"),
])
def test_the_clear_winner_is_the_only_field(log_table, question, op, want):
    t, _, _ = log_table
    assert field_choice(question, {"t": t}, op) == [want], rank_columns(question, t, op)[:4]


def test_a_modifier_value_points_at_the_column_filled_on_its_rows():
    # "detail" is filled exactly on the FAIL rows: the kinds of failure; "level" only selects them
    rows = [{"level": "FAIL" if i % 3 == 0 else "PASS", "detail": ("Disk", "Net")[i % 2] if i % 3 == 0 else None,
             "host": f"h{i % 4}"} for i in range(300)]
    t = table_ops.Table.from_rows(rows)
    assert field_choice("Which fail kind is most common?", {"t": t}, "count_by") == ["detail"]
    # without the modifier the same value names its own column
    assert field_choice("How many FAIL rows are there?", {"t": t}, "count_by") == ["level"]


def test_stats_never_offers_a_non_numeric_column(log_table):
    t, _, _ = log_table
    ranked = dict(rank_columns("What is the median?", t, "stats"))
    numeric = {"duration", "status"}
    assert max(ranked, key=ranked.get) in numeric
    assert all(ranked[c] < min(ranked[n] for n in numeric) for c in ("ip", "level", "path", "date", "time"))


def test_nothing_to_go_on_gives_no_choice():
    t = table_ops.Table.from_rows([{"a": "x", "b": "y"}, {"a": "z", "b": "w"}])
    assert field_choice("Which is most common?", {"t": t}, "count_by") is None
    assert field_choice("Which is most common?", {}, "count_by") is None


def test_ties_offer_every_column_best_first(log_table):
    t, _, _ = log_table
    got = field_choice("Which path or method is most common?", {"t": t}, "count_by")
    assert got is not None and set(got[:2]) == {"path", "method"} and len(got) == len(t.columns) - 2


def _fields_of(schema, op):
    for b in schema["anyOf"]:
        if b["properties"]["op"]["const"] == op:
            return b["properties"]["field"]["enum"]
    return None


def test_the_engine_limits_the_aggregate_field_and_fires_an_aid(log_table):
    _, text, facts = log_table
    replies = [cmd("extract", store="t", thought="t"), cmd("count_by", on="t", field="name", thought="t"),
               cmd("final", answer=facts["error_ranking"][0], thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run("Which error type occurs most often?",
                                                          Context.from_value(text))
    assert res.status == "answered" and res.answer == facts["error_ranking"][0]
    second = p.options[1]["response_schema"]
    assert _fields_of(second, "count_by") == ["name"]
    assert _fields_of(second, "top") == ["name"]
    assert "level" in _fields_of(second, "sort")  # ordering rows is not an aggregate: every column
    aids = [e.data for e in res.events if e.type == "aid" and e.data["aid"] == "column_choice"]
    assert len(aids) == 1 and aids[0]["fields"] == ["name"] and aids[0]["op"] == "count_by"


def test_column_choice_can_be_turned_off(log_table):
    _, text, facts = log_table
    cfg = Config()
    cfg.aids.column_choice = False
    replies = [cmd("extract", store="t", thought="t"), cmd("count_by", on="t", field="name", thought="t"),
               cmd("final", answer=facts["error_ranking"][0], thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    RLM(model=p, config=cfg, levels="l1").run("Which error type occurs most often?", Context.from_value(text))
    assert "level" in _fields_of(p.options[1]["response_schema"], "count_by")


@pytest.mark.parametrize("question,want", [
    ("What are the 5 most frequent words, ignoring these stop words: the, a, to, of? Answer with 5 words.",
     ["the", "a", "to", "of"]),
    ("Top 3 words ignoring stop words (the, a, and an)?", ["the", "a", "an"]),
    ('Top words, stop words: "the", "of" and "a".', ["the", "of", "a"]),
    ("Top words ignoring stop words", None),
])
def test_stop_words_listed_in_the_question(question, want):
    from contextbox.column_hints import question_stop_words

    assert question_stop_words(question) == want


def test_the_question_s_stop_words_are_fixed_in_the_schema(log_table):
    from contextbox.bench.logs import STOP_WORDS, logs_question

    _, text, facts = log_table
    question = logs_question(3, facts)[0]
    replies = [cmd("extract", store="t", thought="t"),
               cmd("word_counts", on="t", field="message", stop=STOP_WORDS, thought="t"),
               cmd("final", answer=", ".join(facts["top_words"]), thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(question, Context.from_value(text))
    assert res.status == "answered"
    branch = next(b for b in p.options[1]["response_schema"]["anyOf"]
                  if b["properties"]["op"]["const"] == "word_counts")
    assert branch["properties"]["stop"] == {"const": STOP_WORDS} and "stop" in branch["required"]
    assert branch["properties"]["field"]["enum"] == ["message"]


def test_a_value_named_with_its_column_is_a_filter_step_before_the_aggregate(log_table):
    from collections import Counter

    from contextbox.bench.logs import LINE_RE

    _, text, _ = log_table
    rows = [LINE_RE.match(line) for line in text.splitlines()]
    gold = Counter(m.group(3) for m in rows if m and m.group(2) == "ERROR").most_common(1)[0][0]
    q = "Which IP address has the most ERROR lines?"
    replies = [cmd("extract", store="t", thought="t"),
               cmd("filter", on="t", where={"level": "ERROR"}, store="sel", thought="t"),
               cmd("count_by", on="sel", field="ip", thought="t"), cmd("final", answer=gold, thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, Context.from_value(text))
    assert res.status == "answered" and res.answer == gold
    schemas = [o["response_schema"] for o in p.options]
    only = schemas[1]["anyOf"]
    assert [b["properties"]["op"]["const"] for b in only] == ["filter"]
    assert only[0]["properties"]["where"] == {"const": {"level": "ERROR"}}
    assert only[0]["properties"]["store"] == {"const": "sel"}
    count_by = next(b for b in schemas[2]["anyOf"] if b["properties"]["op"]["const"] == "count_by")
    assert count_by["properties"]["on"] == {"enum": ["sel"]} and count_by["properties"]["field"]["enum"] == ["ip"]
    # the count the model saw is over the ERROR rows only
    step = next(s for s in res.steps if s.op == "count_by")
    assert f"{gold}: " in step.output and "over " + str(sum(1 for m in rows if m and m.group(2) == "ERROR"))\
        in step.output.replace(",", "")
    assert any(e.data["aid"] == "question_filter" for e in res.events if e.type == "aid")


@pytest.mark.parametrize("question,want", [
    ("Which IP address has the most ERROR lines?", {"level": "ERROR"}),
    ("How many ERROR lines are there?", {}),
    ("Which path returns status 500 most often?", {"status": "500"}),
    ("How many requests went to path /api/login?", {"path": "/api/login"}),
    ("Which error type occurs most often?", {}),
])
def test_question_filters(log_table, question, want):
    from contextbox.column_hints import question_filters

    t, _, _ = log_table
    got = question_filters(question, {"t": t})
    assert {k: str(v) for k, v in got.items()} == want


def test_a_date_bound_in_the_question_is_a_date_filter():
    from contextbox.column_hints import question_filters

    rows = [{"Date": d, "User": str(u), "Instance": "What is it ?"}
            for d, u in [("Dec 01, 2024", 11), ("Mar 02, 2023", 22), ("Mar 04, 2023", 33), ("Jan 05, 2023", 44)]]
    t = table_ops.Table.from_rows(rows)
    f = question_filters("Among the instances dated before Mar 03, 2023, which label is more common?", {"t": t})
    assert f == {"Date": {"lt": "Mar 03, 2023"}}
    assert table_ops.filter_rows(t, f).column("User") == ["22", "44"]
    f = question_filters("How many instances dated after Mar 03, 2023 are there?", {"t": t})
    assert table_ops.filter_rows(t, f).column("User") == ["11", "33"]
    assert question_filters("How many instances from user 33 are there?", {"t": t}) == {"User": "33"}
    # no date column, no date filter
    assert question_filters("before Mar 03, 2023?", {"t": table_ops.Table.from_rows([{"a": "x y"}])}) == {}


def test_an_oolong_style_question_runs_filter_then_typed_map_then_count_within_the_schemas():
    """The whole table route for "how many instances from user U should be labelled L", with a root
    whose every reply validates against the schema it was offered (what a constrained model can send)."""
    import json

    import jsonschema

    rng = random.Random(5)
    words = {"human": "Who", "location": "Where", "numeric": "How many"}
    recs = [(f"{rng.choice(['Jan', 'Mar', 'Jun'])} {rng.randint(10, 28)}, 2023", str(rng.choice([11111, 22222, 33333])),
             rng.choice(list(words))) for _ in range(120)]
    ctx = "".join(f"Date: {d} || User: {u} || Instance: {words[lab]} is thing number {i} ?\n"
                  for i, (d, u, lab) in enumerate(recs))
    truth = sum(1 for _, u, lab in recs if u == "22222" and lab == "location")
    question = ("Each instance is a question with one of the labels: human, location, numeric (by the kind of answer). "
                "How many instances from user 22222 should be labelled 'location'? Answer with the number only.")

    class Sub:
        name, context_window = "fn/sub", None

        def __init__(self):
            self.records = 0

        def complete(self, messages, **opts):
            from contextbox.providers.base import Completion

            items = re.findall(r"^\[\d+\] (.*)$", messages[-1]["content"], re.M)
            self.records += len(items)
            out = ["human" if t.startswith("Who") else "location" if t.startswith("Where") else "numeric"
                   for t in items]
            return Completion(json.dumps(out), 1, 1, model=self.name)

    sub = Sub()
    replies = [cmd("extract", store="t", thought="t"),
               cmd("filter", on="t", where={"User": "22222"}, store="sel", thought="t"),
               cmd("llm_map", on="sel", prompt="Label?", choices=["human", "location", "numeric"], store="m",
                   thought="t"),
               cmd("count_by", on="m", field="label", thought="t"),
               cmd("final", answer=str(truth), thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, sub_model=sub, config=Config(), levels="l1,l4").run(question, Context.from_value(ctx))
    for reply, opts in zip(replies, p.options, strict=True):
        jsonschema.validate(json.loads(reply), opts["response_schema"])  # each step was allowed
    assert res.status == "answered" and res.answer == str(truth)
    assert sub.records == sum(1 for _, u, _ in recs if u == "22222")  # only the user's rows were labelled
    assert "llm_map" not in [b["properties"]["op"]["const"] for b in p.options[3]["response_schema"]["anyOf"]]
    mapping = next(b for b in p.options[2]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "llm_map")
    assert mapping["properties"]["choices"] == {"const": ["human", "location", "numeric"]}  # the question's labels
    count = next(s for s in res.steps if s.op == "count_by")
    assert f"location: {truth}" in count.output


def test_log_questions_with_a_condition_filter_then_aggregate(log_table):
    """The private-task shapes: a statistic or a count over the rows a condition selects."""
    from contextbox.column_hints import question_filters

    t, text, _ = log_table
    day = t.column("date")[-1]
    cases = [
        ("What is the p99 response time for POST requests?", {"method": "POST"}, "stats", "duration"),
        ("What is the average response time of ERROR lines?", {"level": "ERROR"}, "stats", "duration"),
        ("How many unique IP addresses got status 500?", {"status": "500"}, "unique", "ip"),
        (f"How many DatabaseError entries occurred on {day}?", {"date": {"ge": day, "le": day}}, "count_by", "name"),
    ]
    for q, want, op, field in cases:
        got = question_filters(q, {"t": t})
        assert {k: (v if isinstance(v, dict) else str(v)) for k, v in got.items()} == want, q
        sel = table_ops.filter_rows(t, got)
        assert 0 < len(sel) and (len(sel) < len(t) or "date" in got), q  # (the test log spans one day)
        assert field_choice(q, {"sel": sel}, op)[0] == field, (q, rank_columns(q, sel, op)[:3])


@pytest.mark.parametrize("question,want", [
    ("Labels: description (a definition), entity (a thing), human (a person), numeric (a number). Which is most "
     "frequent?", ["description", "entity", "human", "numeric"]),
    ("Are most of these tickets about billing, delivery or login?", ["billing", "delivery", "login"]),
    ("Classify each review with one of these labels: positive, negative, neutral. Which is most common?",
     ["positive", "negative", "neutral"]),
    ("Which error type occurs most often?", None),
    ("How many lines mention the cache?", None),
])
def test_labels_the_question_defines(question, want):
    from contextbox.column_hints import question_choices

    assert question_choices(question) == want


def test_column_hints_never_fail_on_odd_tables_and_questions():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from contextbox.column_hints import question_choices, question_filters, question_stop_words

    cell = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.floats(allow_nan=True),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                     st.sampled_from(["ERROR", "Mar 03, 2023", "2024-01-02", "user", "a b c d"]))
    names = st.sampled_from(["level", "ip", "date", "label", "message", "name", "doc", "line", "x y", ""])

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(names, st.lists(cell, min_size=3, max_size=3), min_size=1, max_size=5),
           st.text(max_size=80) | st.sampled_from(["How many ERROR lines before Mar 03, 2023?",
                                                     "Which label: a, b or c? top 3 words, stop words: the, a"]),
           st.sampled_from([None, "count_by", "stats", "unique", "word_counts"]))
    def check(cols, question, op):
        t = table_ops.Table(cols)
        rank_columns(question, t, op)
        field_choice(question, {"t": t}, op)
        question_filters(question, {"t": t})
        question_choices(question)
        question_stop_words(question)

    check()


def test_a_ranking_answer_that_stops_at_the_head_goes_back_with_the_whole_ranking(log_table):
    from collections import Counter

    from contextbox.bench.logs import LINE_RE

    _, text, facts = log_table
    counts = Counter(m.group(8) for m in map(LINE_RE.match, text.splitlines()) if m and m.group(8))
    ranking = [f"{k}: {v}" for k, v in counts.most_common()]
    q = "Rank the error types from most to least frequent, with the count of each."
    full = ", ".join(ranking)
    replies = [cmd("extract", store="t", thought="t"), cmd("count_by", on="t", field="name", thought="t"),
               cmd("final", answer=ranking[0], thought="t"), cmd("final", answer=full, thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, Context.from_value(text))
    assert res.status == "answered" and res.answer == full and res.iterations == 4
    aid = next(e.data for e in res.events if e.type == "aid" and e.data["aid"] == "ranking_complete")
    assert aid["left_out"] == [k for k, _ in counts.most_common()[1:]]
    assert full in aid["message"]  # the whole ranking, in order, with the counts
    # the table route's extract reads the lines' fields: no pattern to copy from the question
    extract = next(b for b in p.options[0]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "extract")
    assert "pattern" not in extract["properties"]
    # a complete answer passes at once
    p = ScriptedProvider(replies[:2] + [cmd("final", answer=full, thought="t")], constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, Context.from_value(text))
    assert res.iterations == 3 and not any(e.data["aid"] == "ranking_complete" for e in res.events if e.type == "aid")


def test_a_word_frequency_question_goes_straight_to_word_counts():
    from contextbox.bench.logs import STOP_WORDS, logs_question

    lines = [f'2024-03-01 08:00:{i % 60:02d} INFO 10.0.0.{i % 7} GET /x 200 {i}ms "{"the" if i % 9 == 0 else "cache hit"}"'
             for i in range(300)]
    q = logs_question(3, {"top_words": []})[0]
    replies = [cmd("extract", store="t", thought="t"),
               cmd("word_counts", on="t", field="message", stop=STOP_WORDS, thought="t"),
               cmd("final", answer="cache, hit", thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, Context.from_value("\n".join(lines) + "\n"))
    assert res.status == "answered"
    assert [b["properties"]["op"]["const"] for b in p.options[1]["response_schema"]["anyOf"]] == ["word_counts"]
    assert not any(e.data["aid"] == "question_filter" for e in res.events if e.type == "aid")


def test_common_words_are_never_values_the_question_names():
    from contextbox.column_hints import question_filters

    t = table_ops.Table({"word": ["the", "of", "cache"] * 20, "n": list(range(60))})
    assert question_filters("Top words, ignoring these stop words: the, of?", {"t": t}) == {}
    assert question_filters("How many rows have word cache?", {"t": t}) == {"word": "cache"}


def test_a_top_n_answer_that_misses_the_ranking_goes_back_and_the_words_route_ends_after_word_counts(log_table):
    from contextbox.bench.logs import STOP_WORDS, logs_question

    _, text, facts = log_table
    q = logs_question(3, facts)[0]
    top5 = facts["top_words"]
    replies = [cmd("extract", store="t", thought="t"),
               cmd("word_counts", on="t", field="message", stop=STOP_WORDS, thought="t"),
               cmd("final", answer=f"the, {top5[1]}, {top5[0]}, in, a", thought="t"),
               cmd("final", answer=", ".join(top5), thought="t")]
    p = ScriptedProvider(replies, constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, Context.from_value(text))
    assert res.status == "answered" and res.answer == ", ".join(top5) and res.iterations == 4
    aid = next(e.data for e in res.events if e.type == "aid" and e.data["aid"] == "ranking_complete")
    assert aid["message"].endswith("exactly: " + ", ".join(top5))
    ops = [b["properties"]["op"]["const"] for b in p.options[2]["response_schema"]["anyOf"]]
    assert set(ops) <= {"final", "final_var"}  # the aggregate is on screen: only an answer is left

"""The aids that end a small model's loop: steering through the next turn's schema, answer checks, compaction."""

from __future__ import annotations

import json

from helpers import cmd, fed_back

from contextbox import RLM, Config, Context
from contextbox.providers import ScriptedProvider

LOG = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR QuotaExceeded request {i}\n" for i in range(279))
LOG += "".join(f"2024-03-01 09:00:{i % 60:02d} INFO ok request {i}\n" for i in range(100))


def _run(replies, context, question="q?", *, constrained=False, window=None, config=None, **limits):
    p = ScriptedProvider(replies, constrained=constrained, context_window=window)
    rlm = RLM(model=p, config=config or Config(), levels="l1", limits=limits or None)
    res = rlm.run(question, Context.from_value(context))
    return res, rlm, p


def _ops(schema):
    return [b["properties"]["op"]["const"] for b in schema["anyOf"]]


def _aids(res):
    return [e.data["aid"] for e in res.events if e.type == "aid"]


def test_repeated_find_leaves_only_final_for_a_constrained_model():
    find = cmd("find", text="QuotaExceeded", thought="t")
    cfg = Config()
    cfg.aids.table_route = False  # (the table route would not offer find at all)
    res, _, p = _run([find, find, find, cmd("final", answer="279", thought="t")], LOG,
                     "How many times does QuotaExceeded occur?", constrained=True, config=cfg)
    assert res.status == "answered" and res.answer == "279" and res.iterations == 4
    schemas = [o["response_schema"] for o in p.options]
    assert "find" not in _ops(schemas[2])  # the first repeat bans the op it repeated
    assert "search" in _ops(schemas[2])
    assert set(_ops(schemas[3])) <= {"final", "final_var"}  # the second repeat: answer now
    assert "final_only" in _aids(res) and _aids(res).count("repetition") == 2


def test_repeated_find_is_told_to_answer_for_an_api_model():
    find = cmd("find", text="QuotaExceeded")
    res, rlm, p = _run([find, find, find, cmd("final", answer="279")], LOG, "How many times does QuotaExceeded occur?")
    assert res.status == "answered"
    assert all("response_schema" not in o for o in p.options)
    fb = fed_back(rlm)
    assert "You must answer now" in fb[2] and "You must answer now" not in fb[1]


def test_while_it_must_answer_other_commands_are_refused_not_run():
    find = cmd("find", text="QuotaExceeded")
    res, rlm, _ = _run([find, find, find, cmd("lines", start=0, end=3), cmd("final", answer="279")], LOG,
                       "How many times does QuotaExceeded occur?")
    assert res.status == "answered" and res.iterations == 5
    assert "refused: you must answer now" in fed_back(rlm)[3]
    ran = [e.data["op"] for e in res.events if e.type == "action_start"]
    assert "lines" not in ran


def test_stall_turns_without_new_actions_force_the_answer():
    cfg = Config()
    cfg.aids.stall_turns = 2
    cfg.aids.repetition = True
    find = cmd("find", text="ok request 5", thought="t")
    other = cmd("find", text="ok request 7", thought="t")
    # find, find(repeat: find banned), other, other(repeat) -> 2 repeats -> final only
    res, _, p = _run([find, find, other, other, cmd("final", answer="x", thought="t")], LOG, constrained=True,
                     config=cfg)
    schemas = [o["response_schema"] for o in p.options]
    assert set(_ops(schemas[4])) <= {"final", "final_var"}


def test_stall_turns_zero_switches_the_stall_rule_off():
    cfg = Config()
    cfg.aids.stall_turns = 0
    find = cmd("find", text="QuotaExceeded", thought="t")
    res, _, p = _run([find, find, cmd("lines", start=0, end=2, thought="t"), cmd("final", answer="279", thought="t")],
                     LOG, constrained=True, config=cfg)
    assert "final_only" not in _aids(res)
    assert "lines" in _ops(p.options[2]["response_schema"])


def test_last_turn_schema_is_final_only():
    res, _, p = _run([cmd("find", text="QuotaExceeded", thought="t"), cmd("final", answer="279", thought="t")], LOG,
                     constrained=True, max_iterations=2)
    assert set(_ops(p.options[1]["response_schema"])) <= {"final", "final_var"}
    assert "find" in _ops(p.options[0]["response_schema"])


TEXT = "line one\nthe registry number is RX-32798 as filed.\nline three\n"


def test_answer_cut_inside_a_token_is_sent_back_with_the_whole_token():
    res, rlm, _ = _run([cmd("find", text="registry"), cmd("final", answer="RX-3"), cmd("final", answer="RX-32798")],
                       TEXT, "What is the registry number?")
    assert res.answer == "RX-32798" and res.iterations == 3
    assert "'RX-32798'" in fed_back(rlm)[1] and "'RX-3'" in fed_back(rlm)[1]
    assert "cut_answer" in _aids(res)


def test_whole_token_answer_is_accepted_and_cut_check_can_be_off():
    res, _, _ = _run([cmd("find", text="registry"), cmd("final", answer="RX-32798")], TEXT, "What is the number?")
    assert res.answer == "RX-32798" and res.iterations == 2
    cfg = Config()
    cfg.aids.cut_answer = False
    cfg.aids.grounding = False
    res, _, _ = _run([cmd("find", text="registry"), cmd("final", answer="RX-3")], TEXT, "What is it?", config=cfg)
    assert res.answer == "RX-3" and res.iterations == 2


def test_count_answered_from_a_capped_list_is_told_the_total():
    res, rlm, _ = _run([cmd("find", text="QuotaExceeded"), cmd("final", answer="50"), cmd("final", answer="279")],
                       LOG, "How many times does QuotaExceeded occur?")
    fb = fed_back(rlm)
    assert "listed only 50 of its 279 hits" in fb[1]
    assert res.answer == "279" and "capped_count" in _aids(res)


def test_count_equal_to_total_is_accepted_at_once():
    res, _, _ = _run([cmd("find", text="QuotaExceeded"), cmd("final", answer="279")], LOG,
                     "How many times does QuotaExceeded occur?")
    assert res.answer == "279" and res.iterations == 2 and "capped_count" not in _aids(res)


SHIP = ("Manifest notes.\ncrate 705 was stowed aboard the Marigold in March.\nfiller line\n"
        "The Marigold was bound for Lisbon with wool.\n")


def test_restated_sentence_gets_one_constrained_verification_turn():
    verify = json.dumps({"thought": "t", "answers_question": False, "op": "find", "text": "Marigold was bound"})
    res, rlm, p = _run([cmd("find", text="crate 705", thought="t"),
                        cmd("final", answer="crate 705 was stowed aboard the Marigold", thought="t"),
                        verify, cmd("final", answer="Lisbon", thought="t")], SHIP,
                       "For which port was crate 705 bound?", constrained=True)
    assert res.answer == "Lisbon", res.reason
    verify_schema = p.options[2]["response_schema"]
    assert all(b["required"][:2] == ["thought", "answers_question"] for b in verify_schema["anyOf"])
    assert "answers_question" not in json.dumps(p.options[3]["response_schema"])
    assert "does your answer" in fed_back(rlm)[1]
    ev = [e.data for e in res.events if e.type == "aid"]
    assert {"aid": "verify_answer", "answers_question": False} .items() <= next(
        d for d in ev if d["aid"] == "verify_answer").items()


def test_a_direct_answer_is_not_verified():
    res, _, _ = _run([cmd("find", text="bound for"), cmd("final", answer="Lisbon")], SHIP,
                     "For which port was crate 705 bound?")
    assert res.answer == "Lisbon" and res.iterations == 2


def test_history_is_compacted_before_it_outgrows_the_window():
    ctx = "\n".join(f"row {i} " + "x" * 200 for i in range(400))
    replies = [cmd("lines", start=i * 10, end=i * 10 + 10) for i in range(12)] + [cmd("final", answer="row 5")]
    res, rlm, p = _run(replies, ctx, "q?", window=4000)
    assert res.status == "answered", res.reason
    assert any(e.type == "compacted" for e in res.events)
    sizes = [sum(len(m["content"]) for m in req) for req in p.requests]
    assert max(sizes) // 3 < 4000  # every prompt fit the window (≈3 characters a token)
    compacted = [m["content"] for m in p.requests[-1] if "[compacted" in m["content"]]
    assert compacted and all(len(c) < 400 for c in compacted)
    # variables survive compaction: only what the model re-reads shrinks
    assert p.requests[-1][1] == p.requests[0][1]


def test_no_compaction_without_a_window_or_when_off():
    ctx = "\n".join(f"row {i} " + "x" * 200 for i in range(400))
    replies = [cmd("lines", start=i * 10, end=i * 10 + 10) for i in range(8)] + [cmd("final", answer="row 5")]
    res, _, _ = _run(replies, ctx, "q?")
    assert not any(e.type == "compacted" for e in res.events)
    cfg = Config()
    cfg.aids.compact = False
    res, _, _ = _run(replies, ctx, "q?", window=3000, config=cfg)
    assert not any(e.type == "compacted" for e in res.events)


def test_scripted_file_can_be_constrained(tmp_path):
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"constrained": True, "replies": [cmd("find", text="x", thought="t")]}))
    p = ScriptedProvider.from_path(str(f))
    assert p.supports_schema is True


CODE = "alpha\ndef read_settings():\n    return tomllib.loads(path.read_text())  # the TOML configuration\nzeta\n"


def test_find_with_no_hits_for_several_words_shows_ranked_passages():
    res, rlm, _ = _run([cmd("find", text="load toml configuration file"), cmd("final", answer="read_settings")],
                       CODE, "Which function loads the TOML configuration?")
    fb = fed_back(rlm)[0]
    assert "0 hits" in fb and "closest passages" in fb and "- line 2 (score" in fb
    assert "ranked_fallback" in _aids(res) and "zero_hits" not in _aids(res)
    cfg = Config()
    cfg.aids.ranked_fallback = False
    res, rlm, _ = _run([cmd("find", text="load toml configuration file"), cmd("final", answer="x")], CODE,
                       "q?", config=cfg)
    assert "closest passages" not in fed_back(rlm)[0] and "zero_hits" in _aids(res)


def test_count_question_over_a_log_takes_the_table_route():
    from contextbox.schema import TABLE_FIRST_OPS, TABLE_ROUTE_OPS

    replies = [cmd("extract", store="t", thought="t"), cmd("count_by", on="t", field="name", thought="t"),
               cmd("final", answer="QuotaExceeded", thought="t")]
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR 10.0.0.{i % 9} GET /x 500 {i}ms "
                  f"{'QuotaExceeded' if i % 3 else 'DiskFull'} \"m\"\n" for i in range(300))
    res, _, p = _run(replies, log, "Which error type occurs most often?", constrained=True)
    assert res.answer == "QuotaExceeded" and "table_route" in _aids(res)
    schemas = [o["response_schema"] for o in p.options]
    assert _ops(schemas[0]) == ["extract"]  # ranking: no literal count; the automatic fields, not a text column
    _, _, p2 = _run([cmd("count", pattern="DiskFull", thought="t"), cmd("final", answer="100", thought="t")], log,
                    "How many times does DiskFull occur?", constrained=True)
    assert set(_ops(p2.options[0]["response_schema"])) == set(TABLE_FIRST_OPS)
    assert set(_ops(schemas[1])) <= set(TABLE_ROUTE_OPS) and "find" not in _ops(schemas[1])
    branch = next(b for b in schemas[1]["anyOf"] if b["properties"]["op"]["const"] == "count_by")
    assert "name" in branch["properties"]["field"]["enum"] and branch["properties"]["on"] == {"enum": ["t"]}


def test_no_table_route_for_prose_or_for_retrieval_questions():
    novel = "".join(f"Chapter {i}. Natasha walked in the garden and thought of many things that day.\n"
                    for i in range(200))
    res, _, p = _run([cmd("search", query="Natasha", thought="t"), cmd("final", answer="x", thought="t")], novel,
                     "How many times did Natasha walk?", constrained=True)
    assert "search" in _ops(p.options[0]["response_schema"]) and "table_route" not in _aids(res)
    res, _, p = _run([cmd("search", query="error", thought="t"), cmd("final", answer="x", thought="t")], LOG,
                     "What does the first line say?", constrained=True)
    assert "search" in _ops(p.options[0]["response_schema"])
    cfg = Config()
    cfg.aids.table_route = False
    res, _, p = _run([cmd("search", query="error", thought="t"), cmd("final", answer="x", thought="t")], LOG,
                     "How many errors?", constrained=True, config=cfg)
    assert "search" in _ops(p.options[0]["response_schema"])


def test_grounding_accepts_an_answer_sentence_around_a_value_it_read():
    cfg = Config()
    cfg.aids.grounding = True
    res, _, _ = _run([cmd("find", text="QuotaExceeded"), cmd("final", answer="The type that occurs most is QuotaExceeded.")],
                     LOG, "Which error type occurs most often?", config=cfg)
    assert res.iterations == 2 and "grounding" not in _aids(res)
    res, _, _ = _run([cmd("find", text="QuotaExceeded"), cmd("final", answer="It is DiskFull."), cmd("final", answer="x")],
                     LOG, "Which error type occurs most often?", config=cfg)
    assert "grounding" in _aids(res)  # a value it never read still goes back


def test_the_table_route_follows_what_the_question_asks():
    from contextbox.aids_table import route_ops

    first, later = route_ops("What is the p95 response time?")
    assert first == ("extract",) and "stats" in later and "count_by" not in later  # fields, not a text column
    first, later = route_ops("How many unique IPs are there?")
    assert "unique" in later and "stats" not in later
    first, later = route_ops("How many times does DiskFull occur?")
    assert first[0] == "count" and "count_by" in later and "final" in later
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} INFO 10.0.0.{i % 9} GET /x 200 {i}ms \"m\"\n" for i in range(200))
    _, _, p = _run([cmd("extract", store="t", thought="t"), cmd("stats", on="t", field="duration", thought="t"),
                    cmd("final", answer="189ms", thought="t")], log, "What is the p95 response time?",
                   constrained=True)
    assert set(_ops(p.options[1]["response_schema"])) == {"stats", "filter"}  # no answer before an aggregate


def test_extract_again_into_the_same_table_is_a_repeat_and_not_offered():
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR 10.0.0.{i % 9} GET /x 500 {i}ms "
                  f"{'QuotaExceeded' if i % 3 else 'DiskFull'} \"m\"\n" for i in range(300))
    ex = cmd("extract", store="t", thought="t")
    res, _, p = _run([ex, ex, cmd("count_by", on="t", field="name", thought="t"), cmd("final", answer="QuotaExceeded",
                                                                                     thought="t")],
                     log, "Rank the error types from most to least frequent.", constrained=True)
    assert "extract" not in _ops(p.options[1]["response_schema"])  # the table exists: aggregate it
    assert "repetition" in _aids(res)
    assert [e.data["op"] for e in res.events if e.type == "action_start"].count("extract") == 1


def test_stats_output_repeats_the_statistics_the_question_names():
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} INFO 10.0.0.{i % 9} GET /x 200 {i + 1}ms \"m\"\n" for i in range(100))
    res, rlm, _ = _run([cmd("extract", store="t"), cmd("stats", on="t", field="duration"),
                        cmd("final", answer="p50=50, p95=95, p99=99")], log,
                       "What are the p50, p95 and p99 response times? And the average?")
    fb = fed_back(rlm)[1]
    assert fb.rstrip().endswith("asked: p50=50, p95=95, p99=99, mean=50.5"), fb


def test_word_questions_route_to_word_counts():
    from contextbox.aids_table import route_ops

    _, later = route_ops("What are the 5 most frequent words in the messages?")
    assert later[0] == "word_counts" and "count_by" not in later


def test_a_label_question_maps_labels_onto_the_table_before_counting():
    recs = "".join(f"Date: Jan {i % 28 + 1:02d}, 2023 || User: {10000 + i % 3} || Instance: question {i} ?\n"
                   for i in range(10))
    root = ScriptedProvider([
        cmd("extract", store="t", thought="t"),
        cmd("llm_map", on="t", prompt="Which kind?", choices=["human", "location"], per_call=5, store="m",
            thought="t"),
        cmd("count_by", on="m", field="label", thought="t"),
        cmd("final", answer="human", thought="t")], constrained=True)
    sub = ScriptedProvider([json.dumps(["human"] * 4 + ["location"])] * 2)
    rlm = RLM(model=root, sub_model=sub, config=Config(), levels="l1,l4")
    res = rlm.run("Which label is the most frequent among all instances?", Context.from_value(recs))
    assert res.answer == "human", res.reason
    schemas = [o["response_schema"] for o in root.options]
    assert _ops(schemas[0]) == ["extract"]
    assert _ops(schemas[1]) == ["llm_map"]  # a table without labels: label it first
    assert "count_by" in _ops(schemas[2])  # labelled: now aggregate
    assert len(sub.requests) == 2


def test_table_route_offers_final_only_after_an_aggregate():
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR 10.0.0.{i % 9} GET /x 500 {i}ms "
                  f"{'QuotaExceeded' if i % 3 else 'DiskFull'} \"m\"\n" for i in range(300))
    res, _, p = _run([cmd("extract", store="t", thought="t"), cmd("count_by", on="t", field="name", thought="t"),
                      cmd("final", answer="QuotaExceeded: 200, DiskFull: 100", thought="t")], log,
                     "Rank the error types with the count of each.", constrained=True)
    schemas = [o["response_schema"] for o in p.options]
    assert "final" not in _ops(schemas[1]) and "count_by" in _ops(schemas[1])
    assert "final" in _ops(schemas[2])


def test_a_filter_is_a_step_not_an_aggregate():
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} ERROR 10.0.0.{i % 9} GET /x 500 {i}ms "
                  f"{'QuotaExceeded' if i % 3 else 'DiskFull'} \"m\"\n" for i in range(300))
    _, _, p = _run([cmd("extract", store="t", thought="t"),
                    cmd("filter", on="t", where={"level": "ERROR"}, store="f", thought="t"),
                    cmd("count_by", on="f", field="name", thought="t"), cmd("final", answer="x", thought="t")],
                   log, "Rank the error types with the count of each.", constrained=True)
    assert "final" not in _ops(p.options[2]["response_schema"]) and "final" in _ops(p.options[3]["response_schema"])


def test_a_field_described_as_a_word_is_not_a_word_frequency_question():
    from contextbox.aids_table import route_ops

    _, later = route_ops("Rank the error types (the word after the response time) from most to least frequent.")
    assert later[0] == "count_by" and "word_counts" not in later


def test_a_list_longer_than_the_top_n_asked_goes_back_once_with_the_first_n():
    words = [f"w{i}" for i in range(12)]
    text = "".join(f"{w} " * (20 - i) + "\n" for i, w in enumerate(words))
    q = "What are the 3 most frequent words? Answer with the words separated by commas."
    long = ", ".join(words)
    res, rlm, _ = _run([cmd("find", text="w0"), cmd("final", answer=long), cmd("final", answer=long)], text, q)
    assert res.status == "answered" and res.iterations == 3 and "list_length" in _aids(res)
    back = fed_back(rlm)[1]
    assert "asks for 3 items" in back and "w0, w1, w2." in back
    # a list of the asked length (or one lead-in item more) passes at once
    res, _, _ = _run([cmd("find", text="w0"), cmd("final", answer="Top: w0, w1, w2")], text, q)
    assert res.iterations == 2 and "list_length" not in _aids(res)
    cfg = Config()
    cfg.aids.list_length = False
    res, _, _ = _run([cmd("find", text="w0"), cmd("final", answer=long)], text, q, config=cfg)
    assert res.iterations == 2 and res.answer == long


def test_a_question_about_code_searches_whole_definitions(tmp_path):
    (tmp_path / "config.py").write_text("import tomllib\n\n\nclass Config:\n    @classmethod\n    def load(cls, path):\n"
                                        "        return tomllib.loads(open(path).read())\n")
    (tmp_path / "cli.py").write_text("def main():\n    print('hello')\n")
    ctx = Context.load([str(tmp_path)])
    q = "Which function loads the TOML configuration file?"
    p = ScriptedProvider([cmd("search", query="load TOML", unit="paragraph", thought="t"),
                          cmd("final", answer="Config.load", thought="t")], constrained=True)
    res = RLM(model=p, config=Config(), levels="l1").run(q, ctx)
    assert res.status == "answered"
    search = next(b for b in p.options[0]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "search")
    assert search["properties"]["unit"] == {"const": "paragraph"} and "unit" in search["required"]
    assert search["properties"]["query"] == {"const": q}  # the question's words, not "config.py"
    out = next(s for s in res.steps if s.op == "search").output
    assert "def load(cls, path):" in out and "tomllib.loads" in out  # the definition, not one line
    # prose, or the aid off: the unit stays the model's choice
    for context, cfg in ((Context.from_value("The load was heavy. " * 50), Config()), (ctx, Config())):
        if context is ctx:
            cfg.aids.code_search = False
        p = ScriptedProvider([cmd("search", query="load", thought="t"), cmd("final", answer="x", thought="t")],
                             constrained=True)
        RLM(model=p, config=cfg, levels="l1").run(q, context)
        search = next(b for b in p.options[0]["response_schema"]["anyOf"]
                      if b["properties"]["op"]["const"] == "search")
        assert "const" not in search["properties"]["unit"]


def test_a_question_s_first_search_ranks_on_all_its_words():
    """The 1.5B model shortens "What sum did Vyazemtsev have to pay back to Shishkin?" to "Vyazemtsev debt"; a short
    line with "debts" twice outranks the passage. The first search's query is the question (schema const)."""
    filler = "".join(f"debts and debts were paid on day {i}.\n" for i in range(300))
    text = filler + "Young Count Vyazemtsev owed the moneylender Shishkin eleven thousand roubles.\n" + filler
    q = "What sum did Vyazemtsev have to pay back to Shishkin, the money lender?"

    def searches(cfg: Config) -> tuple[list[dict], object]:
        p = ScriptedProvider([cmd("search", query=q, thought="t"), cmd("search", query="roubles", thought="t"),
                              cmd("final", answer="eleven thousand roubles", thought="t")], constrained=True)
        res = RLM(model=p, config=cfg, levels="l1").run(q, Context.from_value(text))
        return [next(b for b in o["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "search")
                for o in p.options[:2]], res

    (first, second), res = searches(Config())
    assert first["properties"]["query"] == {"const": q}
    assert "const" not in second["properties"]["query"]  # later searches are the model's own
    assert "Vyazemtsev owed" in res.steps[0].output.split("\n")[1]  # ranked first on the question's words
    cfg = Config()
    cfg.aids.question_search = False
    (first, _), _ = searches(cfg)
    assert "const" not in first["properties"]["query"]


def test_a_statistic_over_all_lines_is_not_offered_a_filter():
    """The 1.5B model filtered ``status = 200`` before "the p95 response time over all lines" (370 for 372)."""
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} INFO 10.0.0.{i % 9} GET /x {200 if i % 7 else 500} {i}ms \"m\"\n"
                  for i in range(200))
    steps = [cmd("extract", store="t", thought="t"), cmd("stats", on="t", field="duration", thought="t"),
             cmd("final", answer="189ms", thought="t")]
    for question, offered in (("What is the p95 response time over all lines?", {"stats"}),
                              ("What is the p95 response time?", {"stats", "filter"})):
        _, _, p = _run(steps, log, question, constrained=True)
        assert set(_ops(p.options[1]["response_schema"])) == offered


def test_a_top_n_answer_that_is_a_template_goes_back_with_the_ranking_then_must_be_it():
    """Asked for "the 3 most active IPs ... as 'IP: count'", the 1.5B model answered the template itself three
    times: a generic check went first and spent the turns. The engine's ranking goes back first, and the
    next turn's final answer is exactly that ranking (schema const)."""
    from collections import Counter

    ips = [f"10.0.0.{k}" for k in (3, 1, 4, 1, 5, 9, 2, 6) for _ in range(k * 10)]  # no ties at the top
    log = "".join(f"2024-03-01 08:00:{i % 60:02d} INFO {ip} GET /x 200 {i}ms \"m\"\n" for i, ip in enumerate(ips))
    want = Counter(ips).most_common(3)
    ranking = ", ".join(f"{ip}: {n}" for ip, n in want)
    q = "List the 3 most active IP addresses with the number of lines of each. Answer as 'IP: count' items."
    res, _, p = _run([cmd("extract", store="t", thought="t"), cmd("top", on="t", field="ip", k=3, thought="t"),
                      cmd("final", answer="IP: count", thought="t"), cmd("final", answer=ranking, thought="t")],
                     log, q, constrained=True)
    assert res.answer == ranking and _aids(res).count("ranking_complete") == 1 and "grounding" not in _aids(res)
    final = next(b for b in p.options[3]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "final")
    assert final["properties"]["answer"] == {"const": ranking}
    assert "const" not in next(b for b in p.options[2]["response_schema"]["anyOf"]
                               if b["properties"]["op"]["const"] == "final")["properties"]["answer"]


def test_a_restated_sentence_for_an_answer_only_question_leaves_a_short_final():
    """ "Answer with the password only": the 1.5B model answered the whole sentence twice. After the verification
    send-back the final answer may hold a short value only; without "only" in the question it stays long."""
    text = "filler line\n" * 50 + "The secret password to the old library is MARBLE-8629.\n" + "filler line\n" * 50
    sentence = "The secret password to the old library is MARBLE-8629."
    for question, short in (("What is the secret password to the old library? Answer with the password only.", True),
                            ("What is the secret password to the old library?", False)):
        res, _, p = _run([cmd("search", query=question, thought="t"), cmd("final", answer=sentence, thought="t"),
                          cmd("final", answer="MARBLE-8629", thought="t")], text, question, constrained=True)
        assert "verify_restated" in _aids(res)
        final = next(b for b in p.options[2]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "final")
        # "only": the answer is the span of the sentence the question does not hold
        assert (final["properties"]["answer"].get("enum") == ["MARBLE-8629"]) is short
        assert (final["properties"]["answer"].get("maxLength") == 400) is not short
        assert res.answer == "MARBLE-8629"


def test_the_spans_a_question_does_not_hold():
    from contextbox.aids import new_spans

    q = "What is the secret password to the old library? Answer with the password only."
    assert new_spans("The secret password to the old library is AMBER-2500.", q) == ["AMBER-2500"]
    assert new_spans("The ship's cook was named Ivan Petrov of Kiev.", "What was the ship's cook named?") == \
        ["Ivan Petrov of Kiev"]
    assert new_spans("Dr. Lindqvist treated the colonel on the brig.", "Who treated the colonel?") == \
        ["Dr. Lindqvist", "brig"]
    assert new_spans("The secret password to the old library", q) == []  # nothing new: no span
    many = "alpha password beta password gamma password delta password eps password zeta password eta"
    assert new_spans(many, q) == []  # too many spans to offer: the answer stays free (short)


def test_a_restated_sentence_with_no_new_span_keeps_a_short_free_answer():
    text = "filler line\n" * 50 + "The secret password to the old library\n" + "filler line\n" * 50
    question = "What is the secret password to the old library? Answer with the password only."
    sentence = "The secret password to the old library"
    res, _, p = _run([cmd("search", query=question, thought="t"), cmd("final", answer=sentence, thought="t"),
                      cmd("final", answer="unknown", thought="t")], text, question, constrained=True)
    assert "verify_restated" in _aids(res)
    final = next(b for b in p.options[2]["response_schema"]["anyOf"] if b["properties"]["op"]["const"] == "final")
    assert final["properties"]["answer"].get("maxLength") == 40 and "enum" not in final["properties"]["answer"]

"""L1 commands in detail: what each op shows and stores, the error messages the model reads,
answer sizes, and the variables a command reads (for the repetition check).

Written against the survivors of `make mutation MODULES=commands.py` (docs/mutation.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from test_commands import error_of, run

from contextbox.context import Context
from contextbox.errors import CommandError
from contextbox.executors import ActionOutput, Session
from contextbox.levels.commands import (
    MAX_ANSWER_CHARS,
    MAX_ANSWER_ROWS,
    CommandExecutor,
    answer_sized,
    as_text,
    input_vars,
)
from contextbox.table import Table
from contextbox.types import Limits

TEXT = "zero\none\ntwo\nthree\nfour\nfive\n"


def make(value: Any = TEXT, **limits: Any) -> CommandExecutor:
    return CommandExecutor(Session(Context.from_value(value), Limits(**limits), ("l1",), "test"))




# ----------------------------------------------------------------------------- how values read
def test_as_text_of_lists_dicts_and_odd_values():
    assert as_text([{"a": 1}]) == '[{"a": 1}]'  # dicts that are not hits read as JSON
    assert as_text([{"text": "t"}, 3]) == '[{"text": "t"}, 3]'  # a mixed list too
    assert as_text({"when": dt.date(2020, 1, 2)}) == '{"when": "2020-01-02"}'  # what JSON cannot hold: str()
    assert as_text({"é": "ü"}) == '{"é": "ü"}'
    assert as_text(2.5) == "2.5" and as_text(True) == "True"


# ----------------------------------------------------------------------------- messages naming variables
def test_unknown_variables_are_listed_sorted_or_none_yet():
    ex = make()
    assert error_of(ex, op="slice", on="nope") == "no variable 'nope'; variables: (none yet)"
    run(ex, op="set", name="b", value="x")
    run(ex, op="set", name="a", value="y")
    assert error_of(ex, op="slice", on="nope") == "no variable 'nope'; variables: a, b"
    assert error_of(ex, op="final_var", name="c") == "final_var: no variable 'c'; variables: a, b"


# ----------------------------------------------------------------------------- lines
def test_lines_past_the_end_show_nothing():
    ex = make()
    out = run(ex, op="lines", start=100, store="none")
    assert out.text == "[lines 6–6 of 6 (0-based)]\n\n(stored in 'none')"
    assert ex.s.variables["none"] == ""


def test_lines_of_a_variable_honour_start_and_end():
    ex = make()
    run(ex, op="set", name="v", value="a\nb\nc\nd\ne")
    out = run(ex, op="lines", on="v", start=1, end=3, store="got")
    assert ex.s.variables["got"] == "b\nc"
    assert out.text.startswith("[lines 1–2 of 5 (0-based)]\n1: b\n2: c")


# ----------------------------------------------------------------------------- find
def test_find_lists_the_first_50_by_default_and_counts_all():
    ex = make("ab\n" * 60)
    out = run(ex, op="find", text="ab")
    assert out.text.startswith("60 hit(s) for \"ab\", first 50 listed:")
    assert out.text.count("\n- line ") == 50 and "(10 more hits not listed; raise 'max' or narrow the search)" in out.text
    assert out.hits == 60 and out.meta["listed"] == 50


def test_find_is_case_insensitive_by_default_and_shows_the_text_unescaped():
    ex = make("Ça va, ça va.\n")
    out = run(ex, op="find", text="ça va")
    assert out.text.startswith('2 hit(s) for "ça va":')
    assert run(ex, op="find", text="ça va", case_sensitive=True).hits == 1


# ----------------------------------------------------------------------------- chunk / split output
def test_split_and_chunk_show_each_piece_with_its_size():
    ex = make("aa|bbb|c")
    out = run(ex, op="split", delimiter="|")
    assert out.text == '3 piece(s)\n[0] (2 chars): "aa"\n[1] (3 chars): "bbb"\n[2] (1 chars): "c"'
    out = run(ex, op="chunk", size=3)
    assert out.text.splitlines()[:2] == ["3 chunk(s) of ≤ 3 characters (overlap 0)", '[0] (3 chars): "aa|"']
    assert out.text.endswith('\n(add "store": NAME to keep them, then read one with "on": "NAME[i]")')
    stored = run(ex, op="chunk", size=3, store="c")
    assert "add \"store\"" not in stored.text


def test_pieces_beyond_ten_are_summarised():
    ex = make("|".join("x" * 11))
    out = run(ex, op="split", delimiter="|")
    assert out.text.count("\n[") == 10 and out.text.endswith("\n… 1 more")
    ex = make("|".join("x" * 10))
    out = run(ex, op="split", delimiter="|")
    assert out.text.count("\n[") == 10 and "more" not in out.text


# ----------------------------------------------------------------------------- set / get / print
def test_set_shows_a_preview_of_200_characters():
    ex = make()
    out = run(ex, op="set", name="long", value="x" * 300)
    assert out.text == 'long = "' + "x" * 199 + '…"'
    assert run(ex, op="set", name="short", value=[1, 2]).text == 'short = "[1, 2]"'
    assert error_of(ex, op="set", name="a[1]", value=1) == "set 'name' must be a plain variable name like \"notes\""
    assert error_of(ex, op="set", name="1a", value=1) == "set 'name' must be a plain variable name like \"notes\""


def test_get_describes_the_value_and_can_store_it():
    ex = make()
    run(ex, op="set", name="l", value=["p", "q"])
    run(ex, op="set", name="s", value="text")
    run(ex, op="set", name="d", value={"k": 1})
    assert run(ex, op="get", name="l").text == "l (list of 2 items):\np\nq"
    assert run(ex, op="get", name="s").text == "s (str):\ntext"
    assert run(ex, op="get", name="d").text == 'd (dict of 1 items):\n{"k": 1}'
    assert run(ex, op="get", name="l[1]").text == "l[1] (str):\nq"
    run(ex, op="get", name="l", store="copy")
    assert ex.s.variables["copy"] == ["p", "q"]
    assert error_of(ex, op="get", name="l[x]") == "get 'name' must be a variable name like \"hits\" or \"chunks[2]\""
    ex.s.variables["t"] = Table({"a": [1, 2]})
    out = run(ex, op="get", name="t", store="t2")
    assert out.text.startswith("t: ") and isinstance(ex.s.variables["t2"], Table)
    assert ex.s.variables["t2"].n == 2


def test_print_can_store_its_value():
    ex = make()
    out = run(ex, op="print", value={"a": [1]}, store="p")
    assert ex.s.variables["p"] == {"a": [1]} and out.text.startswith('{"a": [1]}')


# ----------------------------------------------------------------------------- answers
def test_final_honours_the_runs_answer_limit():
    ex = make(max_answer_chars=10)
    assert run(ex, op="final", answer="  0123456789  ").final == "0123456789"
    msg = error_of(ex, op="final", answer="01234567890")
    assert msg.startswith("the answer holds 11 characters, over the limit of 10 ([limits] max_answer_chars)")
    assert error_of(ex, op="final", answer="   ") == "final needs a non-empty 'answer'"


def test_final_var_size_limits_are_inclusive():
    ex = make()
    ex.s.variables.update(rows=list(range(MAX_ANSWER_ROWS)), more=list(range(MAX_ANSWER_ROWS + 1)),
                          s="x" * MAX_ANSWER_CHARS, big="x" * (MAX_ANSWER_CHARS + 1))
    assert run(ex, op="final_var", name="rows").final.startswith("[0, 1, 2")
    assert run(ex, op="final_var", name="s").final == "x" * MAX_ANSWER_CHARS
    assert error_of(ex, op="final_var", name="more") == (
        "final_var: 'more' holds 1,001 rows, too much for an answer; answer with final and the value you found, "
        "or final_var a small result (from count_by, top or stats)")
    assert error_of(ex, op="final_var", name="big").startswith("final_var: 'big' holds 50,001 characters, too much")


def test_answer_sized():
    assert answer_sized(7) and answer_sized(2.5) and answer_sized(True)
    assert answer_sized({str(i): i for i in range(MAX_ANSWER_ROWS)})
    assert not answer_sized({str(i): i for i in range(MAX_ANSWER_ROWS + 1)})
    assert not answer_sized(Table({"a": list(range(MAX_ANSWER_ROWS + 1))}))
    assert answer_sized({"k": "x" * (MAX_ANSWER_CHARS - 9)})  # '{"k": "…"}' is exactly the limit
    assert not answer_sized({"k": "x" * (MAX_ANSWER_CHARS - 8)})


# ----------------------------------------------------------------------------- variables a command reads
def test_input_vars_of_commands():
    s = make().s
    assert input_vars({"op": "slice", "on": "chunks[3]"}, s) == ["chunks"]
    assert input_vars({"op": "slice", "on": "a[1][2]"}, s) == ["a"]
    assert input_vars({"op": "join", "on": ["left[0]", "right"]}, s) == ["left", "right"]
    assert input_vars({"op": "get", "name": "notes[2]"}, s) == ["notes"]
    assert input_vars({"op": "set", "name": "notes"}, s) == []  # set writes its name, it does not read it
    assert input_vars({"op": "find", "text": "x"}, s) == []  # the context, no variable
    assert input_vars({"op": "get", "name": "x", "on": "y"}, s) == ["y"]


def test_input_vars_of_table_ops_is_the_latest_table():
    from contextbox.levels.commands import TABLE_INPUT_OPS

    ex = make("a,b\n1,2\n")
    op = sorted(TABLE_INPUT_OPS)[0]
    assert input_vars({"op": op}, ex.s) == []  # no table yet
    ex.s.variables["old"] = Table({"a": [1]})
    ex.s.variables["new"] = Table({"a": [2]})
    ex.s.services["table_order"] = ["old", "new"]
    assert input_vars({"op": op}, ex.s) == ["new"]
    ex.s.variables["new"] = "no longer a table"
    assert input_vars({"op": op}, ex.s) == ["old"]


# ----------------------------------------------------------------------------- hit lists
def test_no_hits_is_zero_hits():
    out = run(make(), op="find", text="absent")
    assert out.text == '0 hits for "absent".' and out.hits == 0
    out = run(make(), op="regex", pattern="absent")
    assert out.text == "0 hits for /absent/." and out.hits == 0


def test_hits_name_their_document_in_a_many_document_context():
    ctx = Context.from_documents([("a.txt", "alpha beta\n"), ("b.txt", "gamma beta\n")])
    ex = CommandExecutor(Session(ctx, Limits(), ("l1",), "test"))
    out = run(ex, op="find", text="beta")
    lines = out.text.splitlines()
    assert lines[1].startswith("- a.txt: line 1, offset ") and lines[2].startswith("- b.txt: line 3, offset ")


def test_regex_hits_show_matches_and_groups_unescaped():
    ex = make("naïve café\n" + "x" * 300 + "\n")
    out = run(ex, op="regex", pattern=r"(caf.)")
    assert '- line 0, offset 6: match "café" groups=["café"]' in out.text
    out = run(ex, op="regex", pattern=r"x+")
    assert 'match "' + "x" * 119 + '…"' in out.text  # a long match is previewed in 120 characters
    assert out.text.splitlines()[1] == '- line 1, offset 11: match "' + "x" * 119 + '…"'  # no groups: no more


def test_regex_lists_the_first_50_by_default():
    ex = make("ab\n" * 60)
    out = run(ex, op="regex", pattern="a(b)")
    assert out.text.startswith("60 hit(s) for /a(b)/, first 50 listed:") and out.meta["listed"] == 50


def test_hits_record_what_was_read_of_the_context():
    ex = make("." * 300 + "needle" + "." * 300)
    out = run(ex, op="find", text="needle")
    assert out.meta["read"] == [[200, 400]]  # a find hit: 100 characters either side of its start
    out = run(ex, op="regex", pattern="needle")
    assert out.meta["read"] == [[200, 406]]  # a regex hit: from 100 before its start to 100 past its end
    out = run(make("ab" * 5), op="find", text="a", max=None)
    assert out.meta["read"][0] == [0, 100]
    ex = make("x " * 100)
    assert len(run(ex, op="find", text="x", max=None).meta["read"]) == 50  # at most 50 hits are recorded
    run(ex, op="set", name="v", value="needle")
    assert run(ex, op="find", text="needle", on="v").meta["read"] == []  # a variable is not the context


# ----------------------------------------------------------------------------- count
def test_count_literal_and_regex_case_rules():
    ex = make("Error error ERROR\n")
    assert run(ex, op="count", pattern="error").text == 'count of "error": 3'  # a literal ignores case
    assert run(ex, op="count", pattern="error", case_sensitive=True).hits == 1
    assert run(ex, op="count", pattern="error", regex=True).hits == 1  # a regex does not, unless told
    assert run(ex, op="count", pattern="e.ror", regex=True, case_sensitive=False).hits == 3
    assert run(ex, op="count", pattern="e r", regex=True).hits == 0  # no hidden flags (x would drop the space)
    out = run(make("é É"), op="count", pattern="é")
    assert out.text == 'count of "é": 2'
    out = run(ex, op="count", what="lines")
    assert out.text == "count of lines: 1" and out.hits is None and out.meta == {}


# ----------------------------------------------------------------------------- regex under the hit limit
def test_regex_under_the_hit_limit():
    from contextbox import host_limits, ops
    from contextbox.host_limits import HostGuard

    with host_limits.guarded(HostGuard(max_hits=3)):
        assert len(ops.regex("aaa", "a", max=None)) == 3
        with pytest.raises(CommandError, match=r"^regex: more than 3 hits, the limit per call"):
            ops.regex("aaaa", "a", max=None)
        with pytest.raises(CommandError, match=r"^regex: max=4 is over the limit of 3 hits per call"):
            ops.regex("aaaa", "a", max=4)


# ----------------------------------------------------------------------------- ops other modules add
def test_register_op_adds_the_op_its_handler_and_whether_it_reads(monkeypatch):
    from contextbox.levels import commands
    from contextbox.levels.commands import STR, Spec, register_op

    monkeypatch.setattr(commands, "SPECS", dict(commands.SPECS))
    monkeypatch.setattr(commands, "_HANDLERS", dict(commands._HANDLERS))
    monkeypatch.setattr(commands, "READ_OPS", set(commands.READ_OPS))

    def shout(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
        return ActionOutput(cmd["word"].upper(), meta={"value": cmd["word"] * 2})

    register_op("shout", Spec({"word": STR}, {}, '{"op": "shout", "word": "hi"}'), shout)
    register_op("note", Spec({}, {}, '{"op": "note"}'), lambda ex, cmd: ActionOutput("noted"), reads=False)
    assert "shout" in commands.READ_OPS and "note" not in commands.READ_OPS
    ex = make()
    assert run(ex, op="shout", word="hi", store="w").text == "HI\n(stored in 'w')"
    assert ex.s.variables["w"] == "hihi"
    assert run(ex, op="note").text == "noted"
    assert "shout needs 'word'" in error_of(ex, op="shout")


# ----------------------------------------------------------------------------- store and on: names and indexes
def test_store_must_be_a_plain_variable_name():
    ex = make()
    # not a name at all: refused before the op runs, nothing stored under an odd key
    assert error_of(ex, op="count", pattern="o", store="two words") == (
        "'store' must be a variable name like \"hits\" (or \"chunks[2]\" for 'on')")
    assert error_of(ex, op="count", pattern="o", store=5).startswith("'store' must be a variable name")
    # an index is for reading ('on'), not for storing
    assert error_of(ex, op="count", pattern="o", store="hits[2]") == (
        "'store' takes a plain variable name, without [index]")
    assert ex.s.variables == {}


def test_join_takes_a_list_of_two_table_names_for_on():
    from contextbox.levels.commands import validate

    cmd = {"op": "join", "on": ["a", "b"], "key": "user"}
    assert validate(cmd) is cmd
    with pytest.raises(CommandError, match=r"^join 'on' takes two table variable names, e\.g\. "):
        validate({"op": "join", "on": ["a"]})
    with pytest.raises(CommandError, match=r"^join 'on' takes two table variable names"):
        validate({"op": "join", "on": ["a", "not a name"]})
    ex = make()
    ex.s.variables["a"] = Table({"user": ["u1", "u2"], "x": [1, 2]})
    ex.s.variables["b"] = Table({"user": ["u2", "u3"], "y": [3, 4]})
    out = run(ex, op="join", on=["a", "b"], key="user", store="j")
    assert out.text.startswith("join of a and b on 'user': 1 row(s)")
    assert ex.s.variables["j"].row(0)["user"] == "u2"


def test_on_a_table_row_by_index_in_range_and_out_of_range():
    ex = make()
    ex.s.variables["t"] = Table({"text": ["first row", "second row"]})
    ex.s.variables["m"] = Table({"match": ["m0"], "text": ["t0"]})
    assert run(ex, op="find", text="row", on="t[1]").text.startswith("1 hit(s) for \"row\"")
    assert run(ex, op="slice", on="t[-2]").text.endswith("first row")  # a row's text is what is read
    assert "match" in run(ex, op="slice", on="m[0]").text  # a hit-like row reads whole
    assert error_of(ex, op="slice", on="t[2]") == "t[2] is out of range: the table 't' has 2 rows"
    assert error_of(ex, op="slice", on="t[-3]") == "t[-3] is out of range: the table 't' has 2 rows"


def test_on_an_index_of_a_list_of_strings_or_of_a_non_list():
    ex = make()
    # items that are strings read as themselves, even when they contain the word "text"
    run(ex, op="set", name="parts", value=["the text here", "more text", 7])
    assert run(ex, op="slice", on="parts[0]").text.endswith("the text here")
    assert run(ex, op="slice", on="parts[2]").text.endswith("7")
    run(ex, op="set", name="hits", value=[{"text": "line one", "offset": 0}])
    assert run(ex, op="slice", on="hits[0]").text.endswith("line one")
    run(ex, op="set", name="word", value="plain")
    assert error_of(ex, op="slice", on="word[0]") == "'word' is a str, not a list; drop the [index]"


def test_final_and_final_var_ignore_store():
    ex = make()
    run(ex, op="set", name="a", value="42")
    out = run(ex, op="final", answer="yes", store="kept")
    assert out.final == "yes" and out.text == "final answer: yes"
    out = run(ex, op="final_var", name="a", store="kept")
    assert out.final == "42" and out.text == "final answer: 42"
    assert set(ex.s.variables) == {"a"}


def test_find_refuses_an_empty_text():
    assert error_of(make(), op="find", text="") == "find needs a non-empty 'text' to look for"


def test_a_regex_total_past_max_is_bounded_by_regex_timeout_s():
    from types import SimpleNamespace

    # three quick hits, then a stretch where (a+)+b backtracks for ever: the listing stops at max=2,
    # the total goes on over the whole text and must stop at the run's regex_timeout_s, not the default
    ex = make("xxx" + "a" * 40)
    ex.s.config = SimpleNamespace(regex_timeout_s=0.3)
    msg = error_of(ex, op="regex", pattern="x|(a+)+b", max=2)
    assert msg.startswith("regex 'x|(a+)+b' ran longer than 0.3 s and was stopped")
    msg = error_of(ex, op="regex", pattern="(a+)+b")  # the listing itself, likewise
    assert msg.startswith("regex '(a+)+b' ran longer than 0.3 s and was stopped")

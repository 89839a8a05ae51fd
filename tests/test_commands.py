"""The L1 command executor: store/on, output caps, error messages, output formats, timeouts."""

from __future__ import annotations

import re
import signal
import threading
from typing import Any

import pytest

from contextbox import ops
from contextbox.context import Context
from contextbox.errors import CommandError
from contextbox.executors import Action, ActionOutput, Session
from contextbox.levels.commands import SPECS, CommandExecutor, as_text, cap, validate
from contextbox.types import Limits

TEXT = (
    "The quick brown fox\n"
    "jumps over the lazy dog.\n"
    "ERROR: disk full on /dev/sda1\n"
    "Über café — naïve 中文 😀\n"
    "error: second error, lower case\r\n"
    "the end"
)


def make(value: Any = TEXT, max_output_chars: int = 4000) -> CommandExecutor:
    ctx = Context.from_value(value)
    return CommandExecutor(Session(ctx, Limits(max_output_chars=max_output_chars), ("l1",), "test"))


def run(ex: CommandExecutor, **cmd: Any) -> ActionOutput:
    return ex.run(Action("command", "l1", str(cmd.get("op")), cmd))


def error_of(ex: CommandExecutor, **cmd: Any) -> str:
    with pytest.raises(CommandError) as info:
        run(ex, **cmd)
    return str(info.value)


# ----------------------------------------------------------------------------- store / on
def test_store_keeps_full_value_and_says_so() -> None:
    ex = make()
    out = run(ex, op="find", text="error", store="hits")
    assert out.text.endswith("\n(stored in 'hits')")
    hits = ex.s.variables["hits"]
    assert [h["offset"] for h in hits] == [m.start() for m in re.finditer("error", TEXT, re.I)]
    assert "value" not in out.meta
    out = run(ex, op="slice", start=4, end=9, store="word")
    assert ex.s.variables["word"] == "quick"
    out = run(ex, op="count", pattern="e", store="n")
    assert ex.s.variables["n"] == TEXT.lower().count("e")  # case ignored, as find does


def test_without_store_nothing_is_kept() -> None:
    ex = make()
    out = run(ex, op="slice", start=0, end=3)
    assert ex.s.variables == {}
    assert "stored" not in out.text
    assert "value" not in out.meta


def test_on_variable_and_item() -> None:
    ex = make()
    run(ex, op="split", delimiter="\n", store="rows")
    rows = TEXT.split("\n")
    assert ex.s.variables["rows"] == rows
    out = run(ex, op="slice", on="rows[2]", store="r2")
    assert ex.s.variables["r2"] == rows[2]
    assert out.meta["read"] == []  # reading a variable is not reading the context
    assert run(ex, op="slice", on="rows[-1]", store="last") and ex.s.variables["last"] == "the end"
    out = run(ex, op="find", text="disk", on="rows[2]")
    assert "line 0, offset 7" in out.text
    run(ex, op="count", what="lines", on="rows", store="nl")
    assert ex.s.variables["nl"] == len(rows)  # a list of str reads as its items joined by \n
    # a stored hit list reads as the hits' line texts; an item of it as that hit's line
    run(ex, op="find", text="fox", store="fx")
    assert run(ex, op="slice", on="fx[0]", store="line0") and ex.s.variables["line0"] == "The quick brown fox"


def test_on_errors() -> None:
    ex = make()
    assert "no variable 'nope'" in error_of(ex, op="slice", on="nope")
    assert "(none yet)" in error_of(ex, op="slice", on="nope")
    run(ex, op="set", name="s", value="text")
    assert "not a list; drop the [index]" in error_of(ex, op="slice", on="s[0]")
    run(ex, op="set", name="xs", value=["a", "b"])
    msg = error_of(ex, op="slice", on="xs[5]")
    assert "xs[5] is out of range" in msg and "has 2 items" in msg
    assert "variable name" in error_of(ex, op="slice", on="bad name")
    assert "without [index]" in error_of(ex, op="slice", store="x[1]")


def test_set_get_print() -> None:
    ex = make()
    out = run(ex, op="set", name="notes", value={"k": [1, 2]})
    assert out.text.startswith("notes = ")
    assert ex.s.variables["notes"] == {"k": [1, 2]}
    out = run(ex, op="get", name="notes")
    assert out.text.startswith("notes (dict of 1 items):\n")
    assert '{"k": [1, 2]}' in out.text
    run(ex, op="set", name="xs", value=["a", "b"])
    assert run(ex, op="get", name="xs[1]").text.endswith("\nb")
    assert run(ex, op="print", value="hello").text == "hello"
    assert "plain variable name" in error_of(ex, op="set", name="a[1]", value=1)


def test_final_and_final_var() -> None:
    ex = make()
    out = run(ex, op="final", answer="  42 ")
    assert out.final == "42"
    assert "non-empty" in error_of(ex, op="final", answer="   ")
    run(ex, op="set", name="ans", value="the fox")
    assert run(ex, op="final_var", name="ans").final == "the fox"
    msg = error_of(ex, op="final_var", name="missing")
    assert "final_var: no variable 'missing'" in msg and "ans" in msg
    run(ex, op="set", name="blank", value="")
    assert "is empty" in error_of(ex, op="final_var", name="blank")


# ----------------------------------------------------------------------------- output cap
def test_output_cap_with_explicit_note() -> None:
    ex = make("x" * 10_000, max_output_chars=500)
    out = run(ex, op="slice", start=0, end=5000)
    assert len(out.text) < 800
    assert out.text.startswith("[characters 0–5,000 of 10,000]\n" + "x" * 100)
    total = len("[characters 0–5,000 of 10,000]\n") + 5000
    assert f"[output cut: showing 500 of {total:,} characters, {total - 500:,} more not shown." in out.text
    assert "Use 'store'" in out.text
    assert out.text.endswith("]")


def test_output_cap_keeps_the_stored_note() -> None:
    ex = make("y" * 10_000, max_output_chars=300)
    out = run(ex, op="slice", store="big")
    assert ex.s.variables["big"] == "y" * 10_000  # the variable holds everything
    assert "[output cut: showing 300 of" in out.text
    assert "stored in 'big'" in out.text.split("[output cut")[1]
    assert out.text.endswith("\n(stored in 'big')")


def test_cap_function() -> None:
    assert cap("short", 10) == "short"
    assert cap("abcdef", 0) == "abcdef"  # 0 = no cap
    s = cap("abcdefghij", 4, "read less")
    assert s.startswith("abcd\n[output cut: showing 4 of 10 characters, 6 more not shown. read less")
    assert s.endswith("]")


# ----------------------------------------------------------------------------- validation errors
def test_unknown_op_did_you_mean() -> None:
    ex = make()
    msg = error_of(ex, op="fnd", text="x")
    assert "unknown op 'fnd'" in msg
    assert "Did you mean 'find'?" in msg
    assert "Ops are: slice, lines, find, regex" in msg
    msg = error_of(ex, op="zzzzzz")
    assert "unknown op 'zzzzzz'" in msg and "Did you mean" not in msg


def test_missing_op_and_not_an_object() -> None:
    with pytest.raises(CommandError, match="no 'op' field"):
        validate({"text": "x"})
    with pytest.raises(CommandError, match="must be a JSON object"):
        validate(["op", "find"])


def test_missing_argument() -> None:
    ex = make()
    msg = error_of(ex, op="find")
    assert msg == "find needs 'text'; e.g. " + SPECS["find"].example
    assert "regex needs 'pattern'" in error_of(ex, op="regex")
    assert "chunk needs 'size'" in error_of(ex, op="chunk")
    assert "split needs 'delimiter'" in error_of(ex, op="split")
    assert "set needs 'value'" in error_of(ex, op="set", name="x")


def test_wrong_type() -> None:
    ex = make()
    assert error_of(ex, op="slice", start="0") == "slice: 'start' must be integer, got \"0\""
    assert "'start' must be integer, got 1.5" in error_of(ex, op="lines", start=1.5)
    assert "'start' must be integer, got true" in error_of(ex, op="slice", start=True)
    assert "'text' must be str, got 3" in error_of(ex, op="find", text=3)
    assert "'case_sensitive' must be bool" in error_of(ex, op="find", text="a", case_sensitive="yes")
    assert "'flags' must be str or list" in error_of(ex, op="regex", pattern="a", flags=2)


def test_unknown_argument() -> None:
    ex = make()
    msg = error_of(ex, op="find", text="a", limit=3)
    assert msg == "find has no argument 'limit'; its arguments are: text, case_sensitive, max, store, on, thought"
    assert run(ex, op="find", text="fox", thought="looking for the fox").hits == 1  # thought is allowed


def test_bad_regex_and_flags() -> None:
    ex = make()
    msg = error_of(ex, op="regex", pattern="(unclosed")
    assert msg.startswith("bad regex '(unclosed': missing ), unterminated subpattern")
    assert "escape special characters" in msg
    assert "unknown regex flag 'q'" in error_of(ex, op="regex", pattern="a", flags="iq")
    assert "non-empty 'pattern'" in error_of(ex, op="regex", pattern="")


def test_op_argument_errors() -> None:
    ex = make()
    assert "non-empty 'text'" in error_of(ex, op="find", text="")
    assert "positive number" in error_of(ex, op="chunk", size=0)
    assert "'overlap' must be a number from 0 to size-1 (9)" in error_of(ex, op="chunk", size=10, overlap=10)
    assert "non-empty 'delimiter'" in error_of(ex, op="split", delimiter="")
    assert "lines, chars or words" in error_of(ex, op="count", what="pages")
    assert "non-empty 'pattern'" in error_of(ex, op="count", pattern="")
    assert "non-empty 'pattern'" in error_of(ex, op="count", pattern="", case_sensitive=False)
    assert "non-empty 'pattern'" in error_of(ex, op="count", pattern="", regex=True)


# ----------------------------------------------------------------------------- output formats
def test_chunk_without_store_hints_at_store() -> None:
    ex = make("abcdefghij")
    out = run(ex, op="chunk", size=4)
    assert out.text.startswith("3 chunk(s) of ≤ 4 characters (overlap 0)\n")
    assert '[0] (4 chars): "abcd"' in out.text
    assert '[2] (2 chars): "ij"' in out.text
    assert 'add "store": NAME to keep them' in out.text
    assert '"on": "NAME[i]"' in out.text
    out = run(ex, op="chunk", size=4, store="c")
    assert "add \"store\"" not in out.text
    assert ex.s.variables["c"] == ["abcd", "efgh", "ij"]


def test_many_pieces_are_summarised() -> None:
    ex = make("a,b,c,d,e,f,g,h,i,j,k,l")
    out = run(ex, op="split", delimiter=",")
    assert out.text.startswith("12 piece(s)\n")
    assert "… 2 more" in out.text


def test_lines_numbered_output() -> None:
    ex = make()
    out = run(ex, op="lines", start=2, end=5)
    assert out.text == (
        "[lines 2–4 of 6 (0-based)]\n"
        "2: ERROR: disk full on /dev/sda1\n"
        "3: Über café — naïve 中文 😀\n"
        "4: error: second error, lower case"  # the \r of \r\n is not shown
    )
    lines = TEXT.split("\n")
    a = TEXT.index(lines[2])
    assert out.meta["read"] == [[a, a + len("\n".join(lines[2:5])) + 1]]
    out = run(ex, op="lines", start=-1)
    assert out.text == "[lines 5–5 of 6 (0-based)]\n5: the end"
    out = run(ex, op="lines", start=10, end=20)
    assert out.text.startswith("[lines 6–6 of 6 (0-based)]")  # past the end: nothing to show

    wide = make("\n".join(f"row {i}" for i in range(120)))
    out = run(wide, op="lines", start=98, end=101)
    assert out.text.split("\n")[1:] == [" 98: row 98", " 99: row 99", "100: row 100"]


def test_slice_output() -> None:
    ex = make("0123456789")
    out = run(ex, op="slice", start=-4)
    assert out.text == "[characters 6–10 of 10]\n6789"
    assert out.meta["read"] == [[6, 10]]
    assert run(ex, op="slice", start=8, end=2).text == "[characters 8–8 of 10]\n"


def test_find_output_lists_lines_and_offsets() -> None:
    ex = make()
    out = run(ex, op="find", text="error")
    off1, off2, off3 = (m.start() for m in re.finditer("error", TEXT, re.I))
    assert out.hits == 3
    assert out.text.split("\n") == [
        "3 hit(s) for \"error\":",
        f"- line 2, offset {off1}: ERROR: disk full on /dev/sda1",
        f"- line 4, offset {off2}: error: second error, lower case",
        f"- line 4, offset {off3}: error: second error, lower case",
    ]
    out = run(ex, op="find", text="error", case_sensitive=True, max=1)
    assert out.hits == 2
    assert out.text.split("\n") == [
        "2 hit(s) for \"error\", first 1 listed:",
        f"- line 4, offset {off2}: error: second error, lower case",
        "(1 more hits not listed; raise 'max' or narrow the search)",
    ]
    assert run(ex, op="find", text="zebra").text == '0 hits for "zebra".'


def test_find_with_max_zero_reports_the_total() -> None:
    ex = make()
    out = run(ex, op="find", text="error", max=0)
    assert out.hits == 3
    assert out.text.startswith("3 hit(s) for \"error\", first 0 listed:")


def test_regex_output_with_groups() -> None:
    ex = make()
    out = run(ex, op="regex", pattern=r"(\w+): (\w+)", max=10)
    assert out.hits == 2
    off = TEXT.index("ERROR:")
    assert f'- line 2, offset {off}: match "ERROR: disk" groups=["ERROR", "disk"]' in out.text
    out = run(ex, op="regex", pattern=r"^error", flags="im", max=1)
    assert out.text.startswith("2 hit(s) for /^error/, first 1 listed:")
    assert "groups" not in out.text
    out = run(ex, op="regex", pattern="über", flags=["i"])
    assert out.hits == 1
    assert "line 3" in out.text


def test_hits_in_documents_name_the_document() -> None:
    ex = make({"a.log": "ok\nneedle one\n", "b.log": "x\ny\nneedle two\n"})
    out = run(ex, op="find", text="needle")
    text = ex.s.context.text
    assert f"- a.log: line 2, offset {text.index('needle one')}: needle one" in out.text
    assert f"- b.log: line 6, offset {text.index('needle two')}: needle two" in out.text


def test_count_output() -> None:
    ex = make()
    # a count agrees with a find of the same text: both ignore case unless case_sensitive is true
    assert run(ex, op="count", pattern="error").text == 'count of "error": 3'
    assert run(ex, op="count", pattern="error").hits == run(ex, op="find", text="error", max=None).hits == 3
    assert run(ex, op="count", pattern="error", case_sensitive=True).text == 'count of "error": 2'
    assert run(ex, op="count", pattern="error", case_sensitive=True).hits == run(
        ex, op="find", text="error", case_sensitive=True, max=None).hits
    assert run(ex, op="count", pattern=r"e\w+r", regex=True).hits == len(re.findall(r"e\w+r", TEXT))
    # with regex: true, case_sensitive false ignores case too (a regex is case-sensitive by default)
    assert run(ex, op="count", pattern="ERR?OR", regex=True).hits == len(re.findall("ERR?OR", TEXT))
    assert run(ex, op="count", pattern="ERR?OR", regex=True, case_sensitive=False).hits == len(
        re.findall("ERR?OR", TEXT, re.I)) == 3
    assert run(ex, op="count", what="lines").text == "count of lines: 6"
    out = run(ex, op="count")
    assert out.text == f"chars: {len(TEXT):,}, lines: 6, words: {len(TEXT.split()):,}"
    assert out.hits is None


def test_as_text() -> None:
    assert as_text("s") == "s"
    assert as_text(["a", "b"]) == "a\nb"
    assert as_text([{"match": "m", "offset": 1}, {"text": "t"}]) == "m\nt"
    assert as_text(3) == "3"
    assert as_text({"k": "é"}) == '{"k": "é"}'


# ----------------------------------------------------------------------------- regex timeout
CATASTROPHIC = {"op": "regex", "pattern": "(a+)+$"}


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "REGEX_TIMEOUT_S", 0.5)


def test_regex_timeout_main_thread(short_timeout: None) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread (SIGALRM path)")
    before = signal.getsignal(signal.SIGALRM)
    ex = make("a" * 40 + "b")
    msg = error_of(ex, **CATASTROPHIC)
    assert "ran longer than 0.5 s and was stopped" in msg
    assert "(a+)+" in msg
    assert signal.getsignal(signal.SIGALRM) == before  # the handler is put back
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    # and later regexes run normally
    assert run(ex, op="regex", pattern="a+b").hits == 1
    # count with regex=true is guarded too
    assert "ran longer than" in error_of(ex, op="count", pattern="(a+)+$", regex=True)


def test_regex_timeout_worker_thread(short_timeout: None) -> None:
    ex = make("a" * 40 + "b")
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["out"] = run(ex, **CATASTROPHIC)
        except CommandError as e:
            box["error"] = str(e)
        box["ok"] = run(ex, op="regex", pattern=r"(a)(b)", store="m").hits
        box["m"] = ex.s.variables["m"]

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert "out" not in box
    assert "ran longer than 0.5 s and was stopped" in box["error"]
    # normal regexes from a thread (fork path) give their results back
    assert box["ok"] == 1
    assert box["m"] == [{"offset": 39, "end": 41, "line": 0, "match": "ab", "groups": ["a", "b"]}]


def test_worker_thread_errors_come_back(short_timeout: None) -> None:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            ops.run_guarded(lambda: 1 // 0, 5, "test")
        except ZeroDivisionError as e:
            box["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert isinstance(box.get("error"), ZeroDivisionError)

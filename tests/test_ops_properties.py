"""Property tests: every L1 operation agrees with plain Python.

Each op is checked three ways on generated texts (ASCII and not: accents, Cyrillic, CJK,
emoji, ``\\r\\n``, empty strings, with and without a trailing newline):

* the pure function in :mod:`contextbox.ops`;
* the same op as an L1 command through :class:`CommandExecutor` (``store`` holds the
  plain-Python value, ``on`` a stored variable equals running on that string);
* :class:`Context`'s line index, with the block size made tiny so that the multi-block
  paths run.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextbox import context as context_mod
from contextbox import ops
from contextbox.context import Context
from contextbox.errors import CommandError
from contextbox.executors import Action, Session
from contextbox.levels.commands import CommandExecutor
from contextbox.types import Limits

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- strategies
ALPHABET = (
    "aAbBxXzZ 019\t\n\r.,;:-_()[]*+?"  # ASCII incl. regex metacharacters (find must treat them literally)
    "éÉèüÜñçÅ"  # accents
    "жЖяЯшЩ"  # Cyrillic
    "中文字日本"  # CJK
    "😀🎉"  # astral (emoji)
    "ßİıΣσςǅ\u212a\u017f"  # awkward case mappings (the Kelvin sign and long s match "k" and "s")
    "\u00a0\u2028\x1c\u3000"  # unusual whitespace
)
chars = st.sampled_from(ALPHABET)
words = st.text(alphabet=chars, max_size=12)


@st.composite
def line_texts(draw: st.DrawFn) -> str:
    """Texts built from lines, joined by \\n or \\r\\n, with or without a trailing newline."""
    ls = draw(st.lists(words, max_size=12))
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    text = sep.join(ls)
    if draw(st.booleans()):
        text += sep
    return text


texts = st.one_of(
    st.just(""),
    st.text(alphabet=chars, max_size=200),
    line_texts(),
    st.text(max_size=80),  # anything Hypothesis likes (no surrogates)
)


@st.composite
def text_and_needle(draw: st.DrawFn) -> tuple[str, str]:
    """A text and a non-empty needle: usually a piece of the text, so that it has hits."""
    text = draw(texts)
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i + 1, min(len(text), i + 4)))
        needle = text[i:j]
        if draw(st.booleans()):
            needle = needle.swapcase()
        return text, needle
    return text, draw(st.text(alphabet=chars, min_size=1, max_size=3))


index = st.one_of(st.none(), st.integers(-30, 230))
maxes = st.one_of(st.none(), st.integers(0, 12))

REGEXES = [
    r"\w+",
    r"(\w)(\d)?",
    r"[а-яА-Я]+",
    r"^.*$",
    r"\s+",
    r"(?P<v>a|é|中)",
    r"\b\w",
    r"(\n)",
    r"[^\n]{2}",
    r"\d*",  # zero-width matches
    r"x?",
    r"(a)|(b)",
    r"ß|ss",
    r"😀+",
    r"\r$",
    r"a # comment in verbose mode",
]
FLAGS: list[Any] = ["", "i", "m", "s", "a", "im", "ms", "ims", ["i", "m"], "IGNORECASE", ["MULTILINE", "s"], None]


def flag_bits(flags: Any) -> int:
    letters = {"i": re.I, "m": re.M, "s": re.S, "x": re.X, "a": re.A}
    names = {"IGNORECASE": re.I, "MULTILINE": re.M, "DOTALL": re.S, "VERBOSE": re.X, "ASCII": re.A}
    out = 0
    for item in flags if isinstance(flags, list) else [flags or ""]:
        if item in names:
            out |= names[item]
        else:
            for ch in item:
                out |= letters[ch]
    return out


# ----------------------------------------------------------------------------- oracles
def py_lines(text: str) -> list[str]:
    """The \\n-separated lines; a trailing newline does not start a new line."""
    if not text:
        return []
    return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")


def py_find(text: str, needle: str, case_sensitive: bool, limit: int | None) -> list[int]:
    if case_sensitive:
        out, pos = [], text.find(needle)
        while pos >= 0:
            out.append(pos)
            pos = text.find(needle, pos + len(needle))
    else:
        out = [m.start() for m in re.finditer(re.escape(needle), text, re.IGNORECASE)]
    return out if limit is None else out[:limit]


def py_chunks(text: str, size: int, overlap: int) -> list[str]:
    out = []
    for i in range(0, len(text), size - overlap):
        out.append(text[i : i + size])
        if i + size >= len(text):
            break
    return out


def line_start_oracle(text: str, n: int) -> int:
    """Offset after the n-th newline; len(text) past the last one."""
    if n <= 0:
        return 0
    nl = [i for i, c in enumerate(text) if c == "\n"]
    return nl[n - 1] + 1 if n <= len(nl) else len(text)


# ----------------------------------------------------------------------------- helpers
def executor(text: str, max_output_chars: int = 1_000_000) -> CommandExecutor:
    ctx = Context.from_value(text)
    return CommandExecutor(Session(ctx, Limits(max_output_chars=max_output_chars), ("l1",), "test"))


def run(ex: CommandExecutor, **cmd: Any) -> Any:
    """Run one command with ``store`` and return the stored value."""
    cmd.setdefault("store", "out")
    out = ex.run(Action("command", "l1", cmd["op"], cmd))
    assert f"(stored in {cmd['store']!r})" in out.text
    return ex.s.variables[cmd["store"]]


@contextmanager
def small_blocks(n: int):
    with mock.patch.object(context_mod, "_BLOCK", n):
        yield


# ============================================================================ pure ops
@SETTINGS
@given(texts, index, index)
def test_slice(text: str, start: int | None, end: int | None) -> None:
    assert ops.slice_text(text, start, end) == text[start:end]


@SETTINGS
@given(texts, index, index)
def test_lines(text: str, start: int | None, end: int | None) -> None:
    assert ops.lines(text) == py_lines(text)
    assert ops.lines(text, start, end) == py_lines(text)[start:end]
    assert ops.n_lines(text) == len(py_lines(text))


@SETTINGS
@given(text_and_needle(), st.booleans(), maxes)
def test_find(tn: tuple[str, str], case_sensitive: bool, limit: int | None) -> None:
    text, needle = tn
    hits = ops.find(text, needle, case_sensitive=case_sensitive, max=limit)
    assert [h["offset"] for h in hits] == py_find(text, needle, case_sensitive, limit)
    for h in hits:
        assert h["line"] == text.count("\n", 0, h["offset"])
        assert "\n" not in h["text"]
    assert ops.count_find(text, needle, case_sensitive) == len(py_find(text, needle, case_sensitive, None))
    if case_sensitive:
        assert ops.count_find(text, needle, True) == text.count(needle)


@SETTINGS
@given(text_and_needle(), st.integers(1, 6), maxes)
def test_find_case_insensitive_in_small_blocks(tn: tuple[str, str], block: int, limit: int | None) -> None:
    """The blockwise case-insensitive scan: matches across block edges, ASCII and other blocks."""
    text, needle = tn
    if len(text) < 60 and needle.isascii():
        text = text + "-" + needle.upper() + text + needle.lower() + needle + "x" * block
    with mock.patch.object(ops, "_CI_BLOCK", block):
        hits = ops.find(text, needle, case_sensitive=False, max=limit)
        n = ops.count_find(text, needle, case_sensitive=False)
    assert [h["offset"] for h in hits] == py_find(text, needle, False, limit)
    assert n == len(py_find(text, needle, False, None))


@pytest.mark.parametrize("block", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("aaaaaaa", "aa"),  # self-overlapping needle: matches must not overlap across block edges
        ("AaAaAaA", "aA"),
        ("é" + "a" * 9, "aa"),  # the same in blocks that go through re
        ("ab" * 5 + "é" + "AB" * 5, "bab"),
        ("\u017fs\u017fS\u017f", "ss"),  # long s matches "s" only under re's rules
        ("\u212ak\u212aK", "kk"),
        ("x" * 20, "xxx"),
    ],
)
def test_find_case_insensitive_block_edges(text: str, needle: str, block: int) -> None:
    with mock.patch.object(ops, "_CI_BLOCK", block):
        assert [h["offset"] for h in ops.find(text, needle, max=None)] == py_find(text, needle, False, None)
        assert ops.count_find(text, needle) == len(py_find(text, needle, False, None))


@SETTINGS
@given(texts, st.sampled_from(REGEXES), st.sampled_from(FLAGS), maxes)
def test_regex(text: str, pattern: str, flags: Any, limit: int | None) -> None:
    bits = flag_bits(flags)
    if "comment" in pattern:
        bits |= re.X
        flags = (flags if isinstance(flags, list) else [flags or ""]) + ["x"]
    expected = list(re.finditer(pattern, text, bits))
    hits = ops.regex(text, pattern, flags, max=limit)
    want = expected if limit is None else expected[:limit]
    assert [(h["offset"], h["end"], h["match"], h["groups"]) for h in hits] == [
        (m.start(), m.end(), m.group(0), list(m.groups())) for m in want
    ]
    assert [h["line"] for h in hits] == [text.count("\n", 0, m.start()) for m in want]
    assert ops.count_regex(text, pattern, flags) == len(expected)


@SETTINGS
@given(text_and_needle())
def test_count(tn: tuple[str, str]) -> None:
    text, needle = tn
    assert ops.count(text, needle, case_sensitive=True) == text.count(needle)
    assert ops.count(text, needle) == len(py_find(text, needle, False, None))  # as find: case ignored
    assert ops.count(text, what="lines") == len(py_lines(text))
    assert ops.count(text, what="chars") == len(text)
    assert ops.count(text, what="words") == len(text.split())
    assert ops.count(text) == {"chars": len(text), "lines": len(py_lines(text)), "words": len(text.split())}


@SETTINGS
@given(texts, st.integers(1, 7))
def test_count_words_across_blocks(text: str, block: int) -> None:
    # tiny blocks: a block boundary must never cut a word in two
    assert ops.count_words(text, block=block) == len(text.split())


@SETTINGS
@given(texts, st.integers(1, 25), st.data())
def test_chunk(text: str, size: int, data: st.DataObject) -> None:
    pieces = ops.chunk(text, size)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= size for p in pieces)
    assert pieces == [text[i : i + size] for i in range(0, len(text), size)]
    overlap = data.draw(st.integers(0, size - 1))
    pieces = ops.chunk(text, size, overlap)
    assert pieces == py_chunks(text, size, overlap)
    if text:
        step = size - overlap
        assert all(p == text[k * step : k * step + size] for k, p in enumerate(pieces))
        assert (len(pieces) - 1) * step + len(pieces[-1]) == len(text)  # the last piece reaches the end
        assert all((k * step + size) < len(text) for k in range(len(pieces) - 1))  # and only the last


@SETTINGS
@given(text_and_needle())
def test_split(tn: tuple[str, str]) -> None:
    text, delimiter = tn
    assert ops.split(text, delimiter) == text.split(delimiter)


def test_bad_arguments() -> None:
    for call in (
        lambda: ops.find("abc", ""),
        lambda: ops.count_find("abc", ""),
        lambda: ops.count_find("abc", "", case_sensitive=True),
        lambda: ops.count("abc", ""),
        lambda: ops.count("abc", what="pages"),
        lambda: ops.chunk("abc", 0),
        lambda: ops.chunk("abc", 3, 3),
        lambda: ops.chunk("abc", 3, -1),
        lambda: ops.split("abc", ""),
        lambda: ops.regex("abc", ""),
        lambda: ops.regex("abc", "a", "q"),
        lambda: ops.regex("abc", "(a"),
    ):
        with pytest.raises(CommandError):
            call()


def test_line_index_out_of_order() -> None:
    text = "a\nb\nc\nd"
    idx = ops.LineIndex(text)
    assert [idx.line_of(o) for o in (6, 2, 0, 4, 4, 7)] == [3, 1, 0, 2, 2, 3]


# ============================================================================ through the command executor
@SETTINGS
@given(texts, index, index)
def test_cmd_slice(text: str, start: int | None, end: int | None) -> None:
    assert run(executor(text), op="slice", start=start, end=end) == text[start:end]


@SETTINGS
@given(texts, index, index, st.sampled_from([1, 2, 3, 7, 1 << 20]))
def test_cmd_lines(text: str, start: int | None, end: int | None, block: int) -> None:
    want = py_lines(text)[start:end]
    with small_blocks(block):
        ex = executor(text)
        assert run(ex, op="lines", start=start, end=end) == "\n".join(want)
        out = ex.run(Action("command", "l1", "lines", {"op": "lines", "start": start, "end": end})).text
    head, _, body = out.partition("\n")
    assert head.startswith("[lines ")
    assert f"of {len(py_lines(text)):,} (0-based)]" in head
    a = slice(start, end).indices(len(py_lines(text)))[0]
    got = body.split("\n") if want else []
    assert len(got) == len(want)
    for i, (shown, line) in enumerate(zip(got, want, strict=True)):
        num, sep, rest = shown.partition(": ")
        assert sep and int(num) == a + i
        assert rest == line.rstrip("\r")


@SETTINGS
@given(text_and_needle(), st.booleans(), maxes, st.sampled_from([1, 3, 1 << 20]))
def test_cmd_find(tn: tuple[str, str], case_sensitive: bool, limit: int | None, block: int) -> None:
    text, needle = tn
    with small_blocks(block):
        hits = run(executor(text), op="find", text=needle, case_sensitive=case_sensitive, max=limit)
    assert [h["offset"] for h in hits] == py_find(text, needle, case_sensitive, limit)
    assert [h["line"] for h in hits] == [text.count("\n", 0, h["offset"]) for h in hits]


@SETTINGS
@given(texts, st.sampled_from(REGEXES), st.sampled_from([f for f in FLAGS if f is not None]), maxes)
def test_cmd_regex(text: str, pattern: str, flags: Any, limit: int | None) -> None:
    if "comment" in pattern:
        return  # covered by test_regex
    want = list(re.finditer(pattern, text, flag_bits(flags)))
    want = want if limit is None else want[:limit]
    hits = run(executor(text), op="regex", pattern=pattern, flags=flags, max=limit)
    assert [(h["offset"], h["end"], h["match"], h["groups"], h["line"]) for h in hits] == [
        (m.start(), m.end(), m.group(0), list(m.groups()), text.count("\n", 0, m.start())) for m in want
    ]


@SETTINGS
@given(text_and_needle())
def test_cmd_count(tn: tuple[str, str]) -> None:
    text, needle = tn
    ex = executor(text)
    assert run(ex, op="count", pattern=needle) == len(py_find(text, needle, False, None))  # as find
    assert run(ex, op="count", pattern=needle, case_sensitive=True) == text.count(needle)
    assert run(ex, op="count", pattern=needle, case_sensitive=False) == len(py_find(text, needle, False, None))
    assert run(ex, op="count", pattern=re.escape(needle), regex=True) == len(re.findall(re.escape(needle), text))
    assert run(ex, op="count", pattern=re.escape(needle), regex=True, case_sensitive=False) == len(
        re.findall(re.escape(needle), text, re.IGNORECASE))
    assert run(ex, op="count", what="lines") == len(py_lines(text))
    assert run(ex, op="count", what="chars") == len(text)
    assert run(ex, op="count", what="words") == len(text.split())
    assert run(ex, op="count") == {"chars": len(text), "lines": len(py_lines(text)), "words": len(text.split())}


@SETTINGS
@given(texts, st.integers(1, 25), st.data())
def test_cmd_chunk(text: str, size: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, size - 1))
    ex = executor(text)
    assert run(ex, op="chunk", size=size, overlap=overlap) == py_chunks(text, size, overlap)
    assert "".join(run(ex, op="chunk", size=size)) == text


@SETTINGS
@given(text_and_needle())
def test_cmd_split(tn: tuple[str, str]) -> None:
    text, delimiter = tn
    assert run(executor(text), op="split", delimiter=delimiter) == text.split(delimiter)


@FEW
@given(texts, index, index, text_and_needle(), st.sampled_from(REGEXES[:12]))
def test_cmd_on_variable(
    text: str, start: int | None, end: int | None, tn: tuple[str, str], pattern: str
) -> None:
    """Any op ``on`` a stored string gives what the op gives on that string as the context."""
    ex = executor(text)
    piece = run(ex, op="slice", start=start, end=end, store="v")
    assert piece == text[start:end]
    needle = tn[1]
    direct = executor(piece)
    cases: list[dict[str, Any]] = [
        {"op": "slice", "start": 1, "end": -1},
        {"op": "lines", "start": 1},
        {"op": "lines", "start": -2, "end": None},
        {"op": "find", "text": needle, "max": None},
        {"op": "find", "text": needle, "case_sensitive": True, "max": 3},
        {"op": "regex", "pattern": pattern, "flags": "m", "max": None},
        {"op": "count", "pattern": needle},
        {"op": "count", "what": "words"},
        {"op": "count", "what": "lines"},
        {"op": "chunk", "size": 5, "overlap": 2},
        {"op": "split", "delimiter": needle},
    ]
    for cmd in cases:
        on = run(ex, **cmd, on="v", store="a")
        plain = run(direct, **cmd, store="b")
        assert on == plain, cmd


@FEW
@given(texts, st.integers(1, 9), st.data())
def test_cmd_on_list_item(text: str, size: int, data: st.DataObject) -> None:
    """``on: "name[i]"`` works on one stored item (negative indices too)."""
    ex = executor(text)
    pieces = run(ex, op="chunk", size=size, store="c")
    if not pieces:
        return
    i = data.draw(st.integers(-len(pieces), len(pieces) - 1))
    assert run(ex, op="slice", on=f"c[{i}]") == pieces[i]
    assert run(ex, op="count", what="chars", on=f"c[{i}]") == len(pieces[i])
    assert run(ex, op="lines", on=f"c[{i}]") == "\n".join(py_lines(pieces[i]))
    # the whole list reads as its items joined by newlines
    assert run(ex, op="slice", on="c") == "\n".join(pieces)


# ============================================================================ Context's line index
@SETTINGS
@given(texts, st.sampled_from([1, 2, 3, 5, 8, 64]), st.data())
def test_context_line_index(text: str, block: int, data: st.DataObject) -> None:
    with small_blocks(block):
        ctx = Context(text)
        lines = py_lines(text)
        assert ctx.n_lines == len(lines)
        offsets = data.draw(st.lists(st.integers(0, len(text)), max_size=20))
        for o in [*offsets, 0, len(text)]:
            assert ctx.line_of(o) == text.count("\n", 0, o)
        for n in range(-1, len(lines) + 3):
            assert ctx.line_start(n) == line_start_oracle(text, n), n
        for n, line in enumerate(lines):
            s, e = ctx.line_start(n), ctx.line_start(n + 1)
            assert text[s:e].removesuffix("\n") == line
            assert ctx.line_of(s) == n

"""ops at their edges: outside the main thread (the forked worker of ``run_guarded``), ``chunk_lines``,
the line shown for a hit, argument errors, and the host-guard limits of ``chunk`` and ``split`` —
what `make mutation MODULES=ops.py` found untested (docs/mutation.md).

Off the main thread a regex runs in a forked child that is killed at its deadline or when the
run is cancelled; its result comes back through a pipe, whole, however large, and the child is
reaped (no zombie left behind).
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_host_limits import _line_text_before

from contextbox import host_limits, ops
from contextbox.errors import CommandError
from contextbox.host_limits import HostGuard, HostStopped


def in_thread(fn: Any) -> dict[str, Any]:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert not t.is_alive()
    return box


def zombie_children() -> list[int]:
    me, out = os.getpid(), []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            s = stat_file.read_text()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == me:
            out.append(int(stat_file.parent.name))
    return out


def test_a_large_result_comes_back_whole_from_the_worker():
    text = "ab cd\n" * 60_000  # ~5 MB of pickled hits: many reads of the pipe
    box = in_thread(lambda: ops.regex(text, r"a(b)", max=None, timeout_s=30))  # a hang: its clear error
    assert "error" not in box, box.get("error")
    assert box["value"] == ops.regex(text, r"a(b)", max=None, timeout_s=60)  # the main thread's answer
    assert len(box["value"]) == 60_000 and box["value"][-1]["line"] == 59_999


def test_the_worker_runs_no_finalizer_of_the_parent():
    """A child forked from a threaded process must not collect garbage: a finalizer there may wait
    on a lock another thread held at the fork, and would wait forever (a CI hang, once)."""
    held, parent = threading.Lock(), os.getpid()

    class Stuck:
        def __del__(self) -> None:
            if os.getpid() != parent:  # in the child: wait on a lock no thread will release
                with held:
                    pass

    def scan() -> list[dict[str, Any]]:
        gc.collect()  # the next collection is hundreds of allocations away: not before the fork
        cycle = Stuck()
        cycle.me = cycle  # garbage only a collection can free
        del cycle
        return ops.regex("ab cd\n" * 20_000, r"a(b)", max=None, timeout_s=5)

    with held:  # held by this thread, so never released in the child
        box = in_thread(scan)
    assert "error" not in box, box.get("error")
    assert len(box["value"]) == 20_000


def test_the_worker_is_reaped():
    before = set(zombie_children())
    box = in_thread(lambda: [ops.count_regex("x" * 1000, "x", timeout_s=10) for _ in range(5)])
    assert box["value"] == [1000] * 5
    time.sleep(0.3)  # a child not waited for would be a zombie by now
    assert set(zombie_children()) <= before


def test_a_worker_that_dies_without_an_answer_is_a_clear_error():
    with pytest.raises(CommandError, match=r"^regex 'x\+' failed in its worker process; try a simpler search$"):
        ops._run_forked(lambda: os._exit(3), 10, "regex 'x+' ran longer than 10 s and was stopped; simplify it")


def test_a_cancelled_run_stops_a_regex_in_the_worker():
    cancel = threading.Event()
    text = "a" * 40 + "b"

    def work() -> Any:
        with host_limits.guarded(HostGuard(cancel=cancel, what="regex")):
            return ops.regex(text, "(a+)+$", timeout_s=30)

    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    box = in_thread(work)
    assert isinstance(box.get("error"), HostStopped), box
    assert str(box["error"]) == "regex was stopped: the run was cancelled"
    assert time.monotonic() - t0 < 20  # not the regex's own 30 s
    time.sleep(0.3)
    assert not zombie_children()


def test_a_regex_past_its_deadline_in_the_worker_names_itself():
    box = in_thread(lambda: ops.regex("a" * 40 + "b", "(a+)+$", timeout_s=0.3))
    err = box.get("error")
    assert isinstance(err, CommandError) and not isinstance(err, HostStopped)
    assert str(err).startswith("regex '(a+)+$' ran longer than 0.3 s and was stopped; simplify it")


# ----------------------------------------------------------------------------- chunk_lines
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab\n", max_size=120), st.integers(1, 30))
def test_chunk_lines_cuts_only_overlong_lines(text, size):
    chunks, cuts = ops.chunk_lines(text, size)
    assert "".join(chunks) == text
    assert all(0 < len(c) <= size for c in chunks)
    # every chunk but the last ends a line, unless it was cut out of a line longer than size
    cut_chunks = [c for c in chunks[:-1] if not c.endswith("\n")]
    assert cuts == len(cut_chunks)
    assert all(len(c) == size and "\n" not in c for c in cut_chunks)
    # a chunk holds as many whole lines as fit: the next line would not
    for c, nxt in zip(chunks, chunks[1:], strict=False):
        if c.endswith("\n"):
            first_line = nxt.split("\n")[0] + ("\n" if "\n" in nxt else "")
            assert len(c) + len(first_line) > size


def test_chunk_lines_examples_and_errors():
    assert ops.chunk_lines("", 5) == ([], 0)
    assert ops.chunk_lines("ab\ncd\n", 6) == (["ab\ncd\n"], 0)
    assert ops.chunk_lines("ab\ncd\n", 5) == (["ab\n", "cd\n"], 0)
    assert ops.chunk_lines("abcdefg\nh", 3) == (["abc", "def", "g\nh"], 2)
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(CommandError, match="^chunk size must be a positive number of characters$"):
            ops.chunk_lines("abc", bad)


# ----------------------------------------------------------------------------- split under a guard
def test_split_refuses_too_many_pieces_naming_the_delimiter_and_the_way_out():
    with host_limits.guarded(HostGuard(max_items=10)):
        assert ops.split("a,b,c", ",") == ["a", "b", "c"]
        assert len(ops.split(",".join("x" * 10), ",")) == 10
        with pytest.raises(CommandError) as info:
            ops.split(",".join("x" * 20), ",")
    assert str(info.value) == ("split(',') would return 20 pieces, over the limit of 10 per call ([limits] "
                               "max_host_items); split a part of the text, or use a delimiter that occurs less often "
                               "(chunk for fixed sizes)")
    with pytest.raises(CommandError, match="^split needs a non-empty 'delimiter' string$"):
        ops.split("a", "")


def test_find_and_regex_hits_agree_with_re():
    text = "Ab ab AB\nxab"
    assert [h["offset"] for h in ops.find(text, "ab")] == [m.start() for m in re.finditer("ab", text, re.I)]
    assert [h["line"] for h in ops.find(text, "ab")] == [0, 0, 0, 1]


# ----------------------------------------------------------------------------- the line shown for a hit
# the reference: the whole line holding the offset, cut around it to ``width`` with "…"
reference_line = _line_text_before


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="ab\n\r", min_size=1, max_size=40), st.data(), st.integers(1, 12))
def test_the_line_of_a_hit_is_the_whole_line_or_a_window_of_it(text, data, width):
    offset = data.draw(st.integers(0, len(text) - 1))
    assert ops._line_text(text, offset, width) == reference_line(text, offset, width)


# ----------------------------------------------------------------------------- argument errors
@pytest.mark.parametrize("size", [0, -3, True, 2.0, "4", None])
def test_chunk_refuses_a_bad_size(size):
    with pytest.raises(CommandError, match="^chunk needs 'size', a positive number of characters$"):
        ops.chunk("abcdef", size)


@pytest.mark.parametrize("overlap", [-1, 4, 5, True, 1.0, "1"])
def test_chunk_refuses_a_bad_overlap(overlap):
    with pytest.raises(CommandError, match=r"^chunk 'overlap' must be a number from 0 to size-1 \(3\)$"):
        ops.chunk("abcdef", 4, overlap)


@pytest.mark.parametrize("pattern", ["", 5, ["a"]])
def test_count_refuses_a_pattern_that_is_not_a_non_empty_string(pattern):
    with pytest.raises(CommandError, match=r"^count needs a non-empty 'pattern' \(a literal\) or 'what': "
                                           r"lines\|chars\|words$"):
        ops.count("abc", pattern)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n\t", max_size=60), st.integers(1, 7))
def test_count_words_in_blocks_is_len_split(text, block):
    assert ops.count_words(text, block=block) == len(text.split())


# ----------------------------------------------------------------------------- host-guard limits
def test_chunk_under_the_guard_names_the_call_and_the_way_out():
    with host_limits.guarded(HostGuard(max_items=3)):
        assert ops.chunk("x" * 30, 10) == ["x" * 10] * 3
        with pytest.raises(CommandError) as info:
            ops.chunk("x" * 4000, 1000, overlap=500)
    assert str(info.value) == ("chunk(1,000, overlap=500) would return 7 pieces, over the limit of 3 per call "
                               "([limits] max_host_items); use a larger size")
    with host_limits.guarded(HostGuard(max_result_chars=100)):
        assert len(ops.chunk("x" * 100, 10)) == 10
        with pytest.raises(CommandError) as info:
            ops.chunk("x" * 100, 20, overlap=10)
    assert str(info.value) == ("chunk(20, overlap=10) would return 180 characters, over the limit of 100 per "
                               "call ([limits] max_host_result_chars); use a smaller overlap or a part of the text")


def test_chunk_stops_when_the_run_is_cancelled():
    g = HostGuard(cancel=threading.Event())
    with host_limits.guarded(g):
        g.cancel.set()
        with pytest.raises(HostStopped, match="cancelled"):
            ops.chunk("short", 10)


# ----------------------------------------------------------------------------- defaults and limits of find / count
def test_find_defaults():
    assert len(ops.find("a" * 150, "a")) == 100  # max defaults to 100
    hit = ops.find("x" * 500 + "NEEDLE" + "y" * 500, "needle")[0]
    assert hit["text"] == "…" + "x" * 120 + "NEEDLE" + "y" * 114 + "…"  # 240 characters of a long line
    assert [h["offset"] for h in ops.find("k K", "\u212a")] == [0, 2]  # the Kelvin sign matches k, as re says
    assert ops.count_find("k K \u212a", "\u212a") == 3
    assert ops.count_regex("a b A", "a b") == 1  # no flags by default: case and spaces count


@pytest.mark.parametrize("cs", [False, True])
def test_find_under_the_hit_limit(cs):
    with host_limits.guarded(HostGuard(max_hits=5)):
        assert len(ops.find("a" * 5, "a", case_sensitive=cs, max=None)) == 5
        with pytest.raises(CommandError, match=r"^find: more than 5 hits, the limit per call \(\[limits\] "
                                               r"max_host_hits\); pass max=N"):
            ops.find("a" * 6, "a", case_sensitive=cs, max=None)
        with pytest.raises(CommandError, match=r"^find: max=6 is over the limit of 5 hits per call"):
            ops.find("a" * 6, "a", case_sensitive=cs, max=6)


def test_count_find_and_count_regex_errors():
    with pytest.raises(CommandError, match=r"^count needs a non-empty 'pattern' \(a literal\) or 'what': "
                                           r"lines\|chars\|words$"):
        ops.count_find("abc", "")
    with pytest.raises(CommandError, match=r"^regex '\(a\+\)\+\$' ran longer than 0\.3 s and was stopped"):
        ops.count_regex("a" * 40 + "b", "(a+)+$", timeout_s=0.3)


def test_slice_text_defaults_to_the_whole_text():
    assert ops.slice_text("abc") == "abc" and ops.slice_text("abc", end=2) == "ab"


# ----------------------------------------------------------------------------- count of a borderless needle in blocks
BORDERLESS = ["a", "K", "s", "ab", "kS", "err", "Abc", "xy1"]  # no proper prefix is also a suffix


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "A", "b", "k", "K", "\u212a", "s", "S", "\u017f", "e", "r", "R", "c", "x",
                                 "y", "1", "é", " ", "\n", "ab", "ERR", "Abc", "xY1"]), max_size=40).map("".join),
       st.sampled_from(BORDERLESS), st.integers(1, 7))
def test_count_of_a_borderless_needle_across_blocks_is_re_s_count(text, needle, block):
    """The blockwise count (str.count on ASCII blocks, re on the others) against re over the whole text:
    matches straddling a block edge, blocks of one character, the Kelvin sign and the long s."""
    low = needle.lower()
    assert not any(low[:k] == low[-k:] for k in range(1, len(low)))  # the borderless path
    from unittest import mock

    with mock.patch.object(ops, "_CI_BLOCK", block):
        assert ops.count_find(text, needle) == len(re.findall(re.escape(needle), text, re.IGNORECASE))


# ----------------------------------------------------------------------------- flags, defaults, messages
def test_regex_flags_by_name_set_the_flags():
    assert [h["match"] for h in ops.regex("Abc aBC", "abc", "IGNORECASE")] == ["Abc", "aBC"]
    text = "one\nTWO\nthree"
    assert [h["match"] for h in ops.regex(text, "^two.*", ["MULTILINE", "IGNORECASE"])] == ["TWO"]
    assert [h["match"] for h in ops.regex(text, "e.T", ["DOTALL", "re.ignorecase"])] == ["e\nT"]
    assert ops.count_regex(text, "^t", "MULTILINE") == 1
    assert ops.parse_flags(["VERBOSE", "ASCII"]) == re.VERBOSE | re.ASCII


def test_compile_regex_has_no_flags_by_default():
    rx = ops.compile_regex("a b # c")  # verbose mode would drop the spaces and the "comment"
    assert rx.flags == re.compile("").flags and rx.search("xa b # c") is not None


def test_find_refuses_an_empty_needle():
    for needle in ("", None):
        with pytest.raises(CommandError, match=r"^find needs a non-empty 'text' to look for$"):
            ops.find("abc", needle)  # type: ignore[arg-type]


def test_hit_limit_names_the_call_and_its_argument():
    assert ops.hit_limit(7, "search", "k") == (7, None)  # no guard: as asked
    with host_limits.guarded(HostGuard(max_hits=3)):
        assert ops.hit_limit(3, "search", "k") == (3, None)
        assert ops.hit_limit(None, "search", "k") == (4, 3)  # one more than the limit, to tell an overflow
        with pytest.raises(CommandError, match=r"^search: k=5 is over the limit of 3 hits per call"):
            ops.hit_limit(5, "search", "k")
        with pytest.raises(CommandError, match=r"^regex: max=4 is over the limit of 3 hits per call"):
            ops.regex("aaaa", "a", max=4)


def test_lines_under_the_guard_refuse_too_many_lines_with_the_way_out():
    with host_limits.guarded(HostGuard(max_items=3)):
        assert ops.lines("a\nb\n") == ["a", "b"]  # "a\nb\n" counts as 3 pieces at most: allowed
        with pytest.raises(CommandError, match=r"^lines would return 4 pieces, over the limit of 3 per call "
                                               r"\(\[limits\] max_host_items\); ask for a range of a smaller text$"):
            ops.lines("a\nb\nc\nd")


# ----------------------------------------------------------------------------- where the guarded work runs
def test_in_the_main_thread_the_guarded_work_runs_in_this_process():
    seen: list[int] = []
    assert ops.run_guarded(lambda: seen.append(os.getpid()) or 5, 5.0, "x") == 5
    assert seen == [os.getpid()]  # a forked copy would have appended in its own memory


def test_a_worker_that_cannot_send_its_failure_exits_and_never_runs_the_callers_code(tmp_path):
    class Local(Exception):  # a class pickle cannot find by name: the failure itself cannot be sent
        pass

    def fn() -> None:
        raise Local("no")

    marker, parent = tmp_path / "escaped", os.getpid()
    try:
        with pytest.raises(CommandError, match=r"^regex 'x' failed in its worker process"):
            ops._run_forked(fn, 20, "regex 'x' ran longer than 20 s and was stopped")
    finally:
        if os.getpid() != parent:  # the child came back up the caller's stack: record it, leave at once
            marker.write_text("the worker returned into the caller")
            os._exit(0)
    assert not marker.exists()

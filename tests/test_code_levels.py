"""The code levels: L2 (pydantic-monty sandbox) and L3 (native CPython worker)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from contextbox.context import Context
from contextbox.executors import Action, ActionOutput, Session, executor_factory
from contextbox.types import Limits

LEVELS = ("l2", "l3")


def make_session(value: Any = "hello world\nsecond line hello\n", **services: Any) -> Session:
    svc = {"l2_time_limit_s": 2, "l3_time_limit_s": 3, "max_code_output_chars": 2000}
    svc.update(services)
    events: list[tuple[str, dict[str, Any]]] = []
    s = Session(
        context=Context.from_value(value),
        limits=Limits(),
        levels=("l1", "l2", "l3"),
        run_id="t",
        emit=lambda t, d: events.append((t, d)),
        sub_query=lambda p: f"SUB[{p}]",
        services=svc,
    )
    s.services["_events"] = events
    return s


def run(ex: Any, code: str) -> ActionOutput:
    level = ex.level
    return ex.run(Action(kind="code", level=level, op="code", args={"code": code, "lang": "python"}, source=code))


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ex(level: str) -> Iterator[Any]:
    factory = executor_factory(level)
    assert factory is not None
    e = factory(make_session())
    yield e
    e.close()


def test_registered() -> None:
    from contextbox.levels import native, sandbox

    assert executor_factory("l2") is sandbox.make_executor
    assert executor_factory("l3") is native.make_executor
    assert len(sandbox.PROMPT) < 2000 and len(native.PROMPT) < 2000


def test_namespace_persists(ex: Any) -> None:
    assert run(ex, "a = 41").error is False
    out = run(ex, "a += 1\nprint(a)")
    assert out.text.strip() == "42" and not out.error


def test_variable_survives_exception(ex: Any) -> None:
    out = run(ex, "kept = 'yes'\nraise ValueError('boom')")
    assert out.error and "ValueError: boom" in out.text
    assert run(ex, "print(kept)").text.strip() == "yes"


def test_short_traceback(ex: Any) -> None:
    out = run(ex, "def f(x):\n    return 1 / x\nf(0)")
    assert out.error
    assert "ZeroDivisionError" in out.text and "<cell" in out.text
    for host_frame in ("_native_worker", "sandbox.py", "contextbox/", "site-packages"):
        assert host_frame not in out.text
    out = run(ex, "find('')")  # an error raised inside a helper: still no host frames
    assert out.error and "non-empty" in out.text and "ops.py" not in out.text


def test_syntax_error(ex: Any) -> None:
    out = run(ex, "x = (")
    assert out.error and "SyntaxError" in out.text


def test_final_and_final_var(ex: Any) -> None:
    out = run(ex, "FINAL('direct answer')")
    assert out.final == "direct answer" and not out.error
    out = run(ex, "ans = 6 * 7\nFINAL_VAR('ans')")
    assert out.final == "42" and not out.error
    out = run(ex, "FINAL_VAR('no_such_variable')")
    assert out.final is None and out.error and "no_such_variable" in out.text


def test_show_vars(ex: Any) -> None:
    run(ex, "alpha = 1\nbeta = 'b'")
    out = run(ex, "SHOW_VARS()")
    assert "alpha: int" in out.text and "beta: str" in out.text
    assert "llm_query" not in out.text and "context:" not in out.text


def test_output_cap(ex: Any) -> None:
    out = run(ex, "print('x' * 5000)")
    assert out.text.count("x") <= 2000 + 10
    assert "3,001 more characters cut" in out.text
    assert "print less" in out.text


def test_llm_query(ex: Any) -> None:
    out = run(ex, "r = llm_query('hi')\nprint(r)\nprint(llm_query_batched(['a', 'b']))")
    assert "SUB[hi]" in out.text and "['SUB[a]', 'SUB[b]']" in out.text


def test_llm_query_not_enabled(level: str) -> None:
    s = make_session()
    s.sub_query = None
    ex = executor_factory(level)(s)  # type: ignore[misc]
    try:
        out = run(ex, "llm_query('hi')")
        assert out.error and "not enabled" in out.text
    finally:
        ex.close()


def test_llm_query_batched_service(level: str) -> None:
    s = make_session()
    calls: list[list[str]] = []
    s.services["llm_query_batched"] = lambda ps: calls.append(ps) or [p.upper() for p in ps]
    ex = executor_factory(level)(s)  # type: ignore[misc]
    try:
        out = run(ex, "print(llm_query_batched(['a', 'b']))")
        assert "['A', 'B']" in out.text and calls == [["a", "b"]]
    finally:
        ex.close()


def test_l1_operations(ex: Any) -> None:
    out = run(
        ex,
        "print(len(context), len(find('hello')), count('hello'), lines(1, 2), slice_(0, 5))\n"
        "print(regex('h(el)lo')[0]['groups'], chunk(10)[0], split(' ')[0], find('x', text='axb')[0]['offset'])",
    )
    assert not out.error, out.text
    first, second = out.text.strip().split("\n")
    assert first == "30 2 2 ['second line hello'] hello"
    assert second == "['el'] hello worl hello 1"


def test_context_as_documents(level: str) -> None:
    s = make_session({"a.txt": "alpha text\n", "b.txt": "beta text\n"})
    ex = executor_factory(level)(s)  # type: ignore[misc]
    try:
        out = run(ex, "print(len(context), [d.path for d in context], context[1].text)")
        assert out.text.strip() == "2 ['a.txt', 'b.txt'] beta text", out.text
        out = run(ex, "print(len(find('text')))")
        assert out.text.strip() == "2"
    finally:
        ex.close()


def test_unicode_context(level: str) -> None:
    s = make_session("naïve café — 日本語\n")
    ex = executor_factory(level)(s)  # type: ignore[misc]
    try:
        out = run(ex, "print(len(context), context[:5], context[-4:-1])")
        assert out.text.strip() == "17 naïve 日本語"
    finally:
        ex.close()


def test_timeout_replaces_worker(ex: Any) -> None:
    run(ex, "before = 1")
    out = run(ex, "while True:\n    pass")
    assert out.error and "limit" in out.text and "variables from earlier blocks are lost" in out.text
    out = run(ex, "print('next cell works')")
    assert out.text.strip() == "next cell works"
    assert run(ex, "print(before)").error  # the namespace was lost, and the model was told


def test_l3_crash_replaces_worker() -> None:
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        run(ex, "v = 1")
        pid = ex.worker_pid()
        out = run(ex, "import os\nos._exit(3)")
        assert out.error and "died" in out.text and "status 3" in out.text
        assert ex.worker_pid() != pid
        assert run(ex, "print(2 + 2)").text.strip() == "4"
        out = run(ex, "import ctypes\nctypes.string_at(0)")  # segfault
        assert out.error and "SIGSEGV" in out.text
        assert run(ex, "print('ok')").text.strip() == "ok"
    finally:
        ex.close()


def test_l2_crash_replaces_worker() -> None:
    s = make_session()
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    try:
        run(ex, "v = 1")
        os.kill(ex._sess.worker_pid, 9)
        out = run(ex, "print(v)")
        assert out.error and "died" in out.text and "fresh sandbox" in out.text
        assert run(ex, "print(3)").text.strip() == "3"
        assert any(t == "warning" for t, _ in s.services["_events"])
    finally:
        ex.close()


def test_l3_context_from_source_file(tmp_path: Any) -> None:
    f = tmp_path / "ctx.txt"
    f.write_text("line one\nline two\n")
    ctx = Context.load(str(f))
    assert ctx.source_file
    s = make_session()
    s.context = ctx
    ex = executor_factory("l3")(s)  # type: ignore[misc]
    try:
        assert run(ex, "print(repr(context))").text.strip() == repr("line one\nline two\n")
        assert not (ex.base / "context.txt").exists()  # mapped in place, not copied
    finally:
        ex.close()


def test_l3_workdir_removed_and_isolated() -> None:
    s = make_session()
    ex = executor_factory("l3")(s)  # type: ignore[misc]
    base = ex.base
    out = run(ex, "import os\nopen('note.txt', 'w').write('x')\nprint(os.getcwd(), sorted(os.listdir('.')))")
    assert str(ex.workdir) in out.text and "note.txt" in out.text
    report = ex._proc.ready["report"]
    assert report["network"] == "ok"
    ex.close()
    assert not base.exists()

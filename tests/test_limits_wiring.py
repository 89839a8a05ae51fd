"""Limits and settings reach the code that enforces them, seen from the outside.

Each test drives the public path (an :class:`~contextbox.RLM` run with a scripted model, a
command, the CLI's exit code) and asserts an outcome a dropped or ignored setting would change.
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import pytest
from helpers import cmd, fed_back, outputs, run

from contextbox import RLM, Config, Context
from contextbox.budget import estimate_prompt_tokens
from contextbox.providers import ScriptedProvider
from contextbox.types import Completion

TEXT = "The weather was fine.\nThe secret code is ZEBRA-42.\nNothing else happened.\n"
ALLOC_96MB = "```repl\ns = 'x' * (96 * 2**20)\nprint(len(s))\n```"


# ---------------------------------------------------------------------- L2 memory
def _l2_alloc(memory_mb: int) -> str:
    cfg = Config()
    cfg.code.l2_memory_mb = memory_mb
    res, _ = run([ALLOC_96MB, cmd("final", answer="x")], TEXT, levels="l1,l2", config=cfg, max_iterations=2)
    return outputs(res)[0]


def test_l2_memory_setting_stops_an_allocation_above_it() -> None:
    """``[code] l2_memory_mb = 32``: a 96 MB string is a MemoryError (limit 32 MiB + room for the context)."""
    out = _l2_alloc(32)
    assert "MemoryError" in out and "100663296" not in out


def test_l2_memory_setting_allows_an_allocation_below_it() -> None:
    assert _l2_alloc(256).strip() == str(96 * 2**20)


# ---------------------------------------------------------------------- budget
def test_a_reply_that_overspends_the_budget_ends_the_run_even_with_a_final_answer() -> None:
    cfg = Config()
    cfg.aids.first_turn = False  # the first reply may answer
    probe = RLM(model=ScriptedProvider([cmd("final", answer="x")]), config=cfg)
    probe.run("q?", TEXT)
    worst = estimate_prompt_tokens(probe.root.requests[0]) + 50  # what the first call reserves
    limit = worst + 10  # the reservation fits ...
    reply = {"text": cmd("final", answer="ZEBRA-42"), "input_tokens": limit + 200, "output_tokens": 20}
    rlm = RLM(model=ScriptedProvider([reply]), config=cfg,
              limits={"max_total_tokens": limit, "reserve_output_tokens": 50})
    res = rlm.run("q?", TEXT)  # ... the reply does not
    assert res.status == "budget_exceeded" and f"max_total_tokens={limit}" in res.reason
    assert res.usage.total.total_tokens == limit + 220
    assert not any(e.type == "final" for e in res.events)


# ---------------------------------------------------------------------- regex timeout
@pytest.mark.parametrize("op", ["count", "regex"])
def test_regex_timeout_setting_bounds_count_and_regex(op: str) -> None:
    cfg = Config()
    cfg.regex_timeout_s = 0.3
    args = {"pattern": "(a+)+$", "regex": True} if op == "count" else {"pattern": "(a+)+$"}
    t = time.monotonic()
    _, rlm = run([cmd(op, **args), cmd("final", answer="x")], "a" * 40 + "b", config=cfg)
    assert time.monotonic() - t < 3
    assert "longer than 0.3 s" in fed_back(rlm)[0]


# ---------------------------------------------------------------------- count() in code cells
@pytest.mark.parametrize("level", ["l2", "l3"])
def test_count_in_a_code_cell_agrees_with_find_and_honours_case_sensitive(level: str) -> None:
    """``count()`` ignores case like ``find()`` by default; ``case_sensitive=True`` is ``str.count``."""
    text = "Hello hello HELLO hello\n"
    code = ("```repl\nprint(count('hello'), len(find('hello')), "
            "count('hello', case_sensitive=True), count('HELLO', case_sensitive=True), "
            "count('hELLO', case_sensitive=True))\n```")
    res, rlm = run([code, cmd("final", answer="x")], text, levels=f"l1,{level}")
    want = [text.lower().count("hello")] * 2 + [text.count(w) for w in ("hello", "HELLO", "hELLO")]
    assert want == [4, 4, 2, 1, 0]
    assert outputs(res)[0].strip() == " ".join(map(str, want))


# ---------------------------------------------------------------------- empty replies
@pytest.mark.parametrize("text", ["", None])
def test_an_empty_model_reply_is_an_error_the_model_is_told_about(text: str | None) -> None:
    class P(ScriptedProvider):
        def complete(self, messages, **opts):
            super().complete(messages, **opts)
            return Completion(text, 1, 0)  # type: ignore[arg-type]

    rlm = RLM(model=P(["a", "b", "c"]), config=Config(), limits={"max_consecutive_errors": 2})
    res = rlm.run("q", TEXT)
    assert res.status == "failed"
    assert res.reason == "2 consecutive replies without a valid action"  # not an internal error
    assert res.iterations == 2
    assert [e.data["text"] for e in res.events if e.type == "lm_response"] == ["", ""]
    second = [m for m in rlm.root.requests[1] if m["role"] == "user"][-1]["content"]
    assert second.startswith("error:")


# ---------------------------------------------------------------------- Ctrl-C
class _InterruptOnce(ScriptedProvider):
    """Sends this process SIGINT while the first call is in flight (as Ctrl-C would)."""

    def complete(self, messages, **opts):
        if len(self.requests) == 0:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs in the main thread meanwhile
        return super().complete(messages, **opts)


def test_a_cancelled_cli_run_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    from contextbox.cli import EXIT_NO_ANSWER, _run_and_report

    before = signal.getsignal(signal.SIGINT)
    rlm = RLM(model=_InterruptOnce([cmd("find", text="code")] * 5), config=Config())
    try:
        code = _run_and_report(rlm, "q", Context.from_value(TEXT), argparse.Namespace(json=False, quiet=True))
    finally:  # the CLI leaves Ctrl-C ignored for its own exit; this process goes on
        signal.signal(signal.SIGINT, before)
    assert code == 130 and code != EXIT_NO_ANSWER
    assert "run ended without an answer: cancelled" in capsys.readouterr().err

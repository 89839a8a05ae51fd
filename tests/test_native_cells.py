"""L3 names a run's blocks ``<cell 1>``, ``<cell 2>``, ... across worker restarts, as L2 does across sandbox
restarts: the block after a restart reports its true number in its traceback, not ``<cell 1>`` again (the
model would think its first block failed)."""

from __future__ import annotations

from typing import Any

import pytest
from test_native_details import make_session, run

from contextbox.executors import executor_factory

FAILS = "def f():\n    return 1 / 0\nf()"  # a traceback with two frames of the block: lines 3 and 2


def frames(text: str, n: int) -> bool:
    return f'File "<cell {n}>", line 3, in <module>' in text and f'File "<cell {n}>", line 2, in f' in text


@pytest.mark.parametrize("restart", ["import os\nos._exit(3)", "while True:\n    pass"], ids=["died", "timeout"])
def test_the_block_after_a_worker_restart_reports_its_true_cell_number(restart: str) -> None:
    ex: Any = executor_factory("l3")(make_session(l3_time_limit_s=2))
    try:
        assert not run(ex, "x = 1").error
        before = run(ex, FAILS)
        assert before.error and frames(before.text, 2) and "ZeroDivisionError" in before.text
        pid = ex.worker_pid()
        assert "a fresh worker was started" in run(ex, restart).text  # block 3 ends its worker
        assert ex.restarts == 1 and ex.worker_pid() != pid
        after = run(ex, FAILS)  # block 4: the new worker's first
        assert after.error and frames(after.text, 4), after.text
        assert "<cell 1>" not in after.text and "<cell 2>" not in after.text
        assert 'File "<cell 5>", line 2' in run(ex, "y = 1\nprint(x)").text  # and it goes on counting
        assert '"<cell 6>", line 1' in run(ex, "1 +").text  # a syntax error names its block too
    finally:
        ex.close()


def test_l2_and_l3_name_the_blocks_of_a_run_alike_across_a_restart() -> None:
    blocks = ["x = 1", FAILS, "while True:\n    pass", FAILS, "[].pop()"]
    seen = {}
    for level in ("l2", "l3"):
        ex: Any = executor_factory(level)(make_session(l2_time_limit_s=2, l3_time_limit_s=2))
        try:
            outs = [run(ex, b) for b in blocks]
        finally:
            ex.close()
        assert ex.restarts == 1 and "ran longer than the 2 s limit" in outs[2].text
        assert frames(outs[1].text, 2) and frames(outs[3].text, 4), [o.text for o in outs]
        seen[level] = [sorted({n for n in range(1, 6) if f"<cell {n}>" in o.text}) for o in outs]
    assert seen["l2"] == seen["l3"] == [[], [2], [], [4], [5]]

"""L2 (the pydantic-monty sandbox) in detail: what a cell that hits a limit, or a FINAL_VAR that cannot be
answered, leaves behind and tells the model.

Written against the survivors of `tests/mutation.py --modules sandbox.py` (docs/mutation.md); each test
states an outcome the model or the run sees, at the executor (no model, no engine).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_code_levels import make_session, run

from contextbox.executors import executor_factory
from contextbox.types import Limits


@pytest.fixture
def l2() -> Iterator[Any]:
    s = make_session(l2_memory_mb=64)
    s.limits = Limits(max_answer_chars=10)
    ex = executor_factory("l2")(s)  # type: ignore[misc]
    yield ex
    ex.close()


def test_a_cell_over_the_memory_limit_fails_but_the_namespace_stays(l2: Any) -> None:
    assert not run(l2, "keep = 5").error
    out = run(l2, "big = 'x' * (200 * 1024 * 1024)")
    assert out.error and "MemoryError: memory limit exceeded" in out.text
    assert "fresh sandbox" not in out.text  # the session was not replaced
    assert run(l2, "print(keep)").text.strip() == "5"
    assert l2.session.services["_events"] == [] and l2.restarts == 0


def test_final_var_over_max_answer_chars_is_refused_in_the_sandbox(l2: Any) -> None:
    out = run(l2, "v = 'y' * 11\nFINAL_VAR('v')")
    assert (out.final, out.error) == (None, True)
    assert out.text == ("FINAL_VAR error: 'v' holds 11 characters, over the limit of 10 ([limits] "
                        "max_answer_chars); answer with the result itself")
    out = run(l2, "w = 'z' * 10\nFINAL_VAR('w')")  # at the limit
    assert (out.final, out.error) == ("z" * 10, False)


def test_final_var_of_a_missing_variable_says_to_assign_it(l2: Any) -> None:
    out = run(l2, "FINAL_VAR('nope')")
    assert (out.final, out.error) == (None, True)
    assert out.text == "FINAL_VAR error: there is no variable named 'nope'; assign it first"

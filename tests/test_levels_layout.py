"""The levels' modules live in ``contextbox.levels``; what depends on where they are."""

from __future__ import annotations

from test_code_levels import make_session, run

from contextbox.executors import executor_factory


def test_the_l3_worker_runs_the_ops_in_its_own_process() -> None:
    """The worker imports ``contextbox.ops`` from the package folder the host gives it (one level above the
    levels' folder): the helpers then run in the worker, not as a call to the host for each. A wrong folder
    falls back to host calls silently, so it is checked here."""
    ex = executor_factory("l3")(make_session())  # type: ignore[misc]
    try:
        out = run(ex, "import sys\nprint(count('hello'), 'contextbox.ops' in sys.modules, "
                      "'contextbox.table_ops' in sys.modules)")
        assert (out.text, out.error) == ("2 True True", False)
    finally:
        ex.close()

"""The listed mutants of issue 19 (``make mutants-listed``) stay applicable: each one's text is found exactly
once in its module and each killing test exists. A source edit or a module move that orphans one turns this
red here, in ``make test``, instead of at the next ``make mutants-listed``."""

from __future__ import annotations

import pytest
from listed_mutants import MUTANTS, ROOT


@pytest.mark.parametrize("m", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_listed_mutant_applies_once_and_names_tests_that_exist(m) -> None:
    source = (ROOT / "src" / "contextbox" / m.path).read_text()
    assert source.count(m.old) == 1, f"{m.name!r}: its text occurs {source.count(m.old)} times in {m.path}"
    for target in m.tests:
        path, _, name = target.partition("::")
        test_file = (ROOT / path).read_text()
        if name:
            assert f"def {name.split('[')[0]}(" in test_file, f"{m.name!r}: no test {target}"

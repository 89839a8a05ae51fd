"""Every README `rlm ask` example that uses the embedded model is run by bench/bench_readme_examples.py."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_readme_examples", ROOT / "bench" / "bench_readme_examples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _readme_asks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            cmd = line.split("  #")[0].strip()
            if re.match(r"^(cat \S+ \| )?rlm ask ", cmd):
                lines.append(cmd)
    return lines


def _default_model(cmd: str) -> bool:
    argv = shlex.split(cmd.split("| ", 1)[-1])
    for flag in ("--model", "-m"):
        if flag in argv:
            return argv[argv.index(flag) + 1] == "local"
    return True


def test_every_default_model_example_is_benchmarked():
    asks = _readme_asks()
    assert len(asks) >= 5, asks  # the parser found the README's examples
    listed = {e.line for e in _bench().EXAMPLES}
    missing = [c for c in asks if _default_model(c) and c not in listed]
    assert missing == [], f"README examples with the embedded model not in bench_readme_examples: {missing}"
    # and the bench lists nothing the README no longer shows
    assert listed <= set(asks), listed - set(asks)


def test_the_checks_tell_right_from_wrong(tmp_path):
    mod = _bench()
    facts = {"error_ranking": ["DiskFull", "DatabaseError"], "error_counts": {"RateLimited": 319}, "p95": 375,
             "oolong_gold": "entity"}
    by = {e.key: e for e in mod.EXAMPLES}
    assert by["error-type"].check("DiskFull (448)", facts) == 1 and by["error-type"].check("DatabaseError", facts) == 0
    assert by["rate-limited"].check("319", facts) == 1 and by["rate-limited"].check("318", facts) == 0
    assert by["p95"].check("p95 = 375 ms", facts) == 1 and by["p95"].check("376ms", facts) == 0
    assert by["toml"].check("Config.load in config.py", facts) == 1 and by["toml"].check("main", facts) == 0
    assert by["label"].check("entity", facts) == 1 and by["label"].check("human", facts) == 0


def test_paraphrase_needle_answers_are_checked_by_their_facts():
    spec = importlib.util.spec_from_file_location("bench_paraphrase_needles",
                                                  ROOT / "bench" / "bench_paraphrase_needles.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    assert len(mod.KEYS) == len(mod.NEEDLES)
    for k, (needle, question, answer) in enumerate(mod.NEEDLES):
        assert mod.right(needle, k) and mod.right(answer, k), k
        assert not mod.right(question, k), (k, question)  # the question alone is no answer
    assert mod.right("She kept 43 canaries, each named after a saint.", 2)
    assert not mod.right("She kept 43 canaries.", 2)

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


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_multihop_answers_need_the_facts_not_the_question():
    mod = _bench_module("bench_multihop")
    mod.check_paraphrase()  # no question shares a 4-word phrase with a fact
    for k, (_, question, keys, _) in enumerate(mod.QUESTIONS):
        assert not mod.right(question, k), (k, question)
        assert mod.right(" ".join(alts[0] for alts in keys), k)
    # a two-hop answer needs the second fact's name, not the first's
    assert mod.right("Captain Oskar Thalberg", 5) and not mod.right("the brig Halcyon", 5)
    # every letter of a several-documents question must be named ("letter 18" spelt with a space too)
    assert mod.right("letter_04.txt, letter 18 and letter_36.txt", 3)
    assert not mod.right("letter_04.txt and letter_36.txt", 3)


def test_multihop_letters_hold_each_fact_in_its_letter(war_and_peace):
    from contextbox import Context
    from contextbox.search import search

    mod = _bench_module("bench_multihop")
    letters = mod.make_letters(war_and_peace.read_text(encoding="utf-8"))
    assert len(letters) == mod.N_LETTERS
    for n, fact in mod.FACTS:
        holders = [name for name, text in letters.items() if fact in text]
        assert holders == [f"letter_{n:02d}.txt"], fact
    ctx = Context.from_documents(sorted(letters.items()))
    # the two-hop question's first fact is the top ranked passage, in its own letter
    hits = search(ctx, mod.QUESTIONS[5][1], k=5, unit="paragraph")
    assert "brig Halcyon" in hits[0]["text"] and hits[0]["doc"] == "letter_12.txt"

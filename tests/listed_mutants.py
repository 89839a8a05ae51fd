"""The deliberate bugs of issue 19 that once survived the suite, each with the tests that must kill it.

``python tests/listed_mutants.py`` copies ``src/`` to a temporary directory once per mutant,
applies the mutant there (an exact text replacement that must match once), runs the named
tests against the copy (``PYTHONPATH``), and prints one line per mutant: ``killed`` when the
tests fail, ``SURVIVED`` when they pass. It first runs the same tests on the unmutated copy
(they must pass). Exit status 1 when any mutant survives. ``make mutants-listed`` runs it.

Not collected by pytest (no ``test_`` prefix); the worktree is never edited.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # under src/contextbox/
    old: str
    new: str
    tests: tuple[str, ...]


LIMITS = "tests/test_limits_wiring.py"
POLICY = "tests/test_level_policy.py"
CASE = "tests/test_case_route.py"

MUTANTS: list[Mutant] = [
    Mutant("L2 memory limit deleted", "levels/sandbox.py",
           '"max_memory": int(self.memory_mb * _MIB) + 2 * self._context_bytes() + _ROOM_MIB * _MIB,\n', "",
           (f"{LIMITS}::test_l2_memory_setting_stops_an_allocation_above_it",)),
    Mutant("l2_memory_mb ignored by the sandbox", "levels/sandbox.py",
           'self.memory_mb = float(svc.get("l2_memory_mb", 512))', "self.memory_mb = 512.0",
           (f"{LIMITS}::test_l2_memory_setting_stops_an_allocation_above_it",)),
    Mutant("l2_memory_mb not passed from the config", "engine.py",
           "l2_memory_mb=cfg.code.l2_memory_mb,", "",
           (f"{LIMITS}::test_l2_memory_setting_stops_an_allocation_above_it",)),
    Mutant("```native runs whenever L2 is allowed", "engine.py",
           "if action.level not in self.rlm.levels:",
           'if action.level not in self.rlm.levels and not (action.level == "l3" and "l2" in self.rlm.levels):',
           (POLICY,)),
    Mutant("the system prompt describes every level", "prompts.py",
           "    parts = [INTRO, L1]", '    levels = ("l1", "l2", "l3", "l4")\n    parts = [INTRO, L1]',
           (POLICY,)),
    Mutant("no budget check after the model's reply", "engine.py",
           '            messages.append({"role": "assistant", "content": reply})\n            self._check_budget()\n',
           '            messages.append({"role": "assistant", "content": reply})\n',
           (f"{LIMITS}::test_a_reply_that_overspends_the_budget_ends_the_run_even_with_a_final_answer",)),
    Mutant("the SSE stream ends at any run_end", "server/app.py",
           'if ev.type == "run_end" and ev.path == "0":', 'if ev.type == "run_end":',
           ("tests/test_server.py::test_sse_of_a_delegated_run_goes_past_the_child_run_end",)),
    Mutant("regex_timeout_s ignored by count", "levels/commands.py",
           'n: Any = ops.count_regex(text, pattern, flags, timeout_s=self._regex_timeout())',
           'n: Any = ops.count_regex(text, pattern, flags)',
           (f"{LIMITS}::test_regex_timeout_setting_bounds_count_and_regex",)),
    # count() now ignores case like find() (main, 2026-12-04); the bug is count() not agreeing with it
    Mutant("count() in code cells ignores case_sensitive", "levels/_cells.py",
           "return ops.count(_opt_text(session, text), pattern, what=what, case_sensitive=case_sensitive)",
           "return ops.count(_opt_text(session, text), pattern, what=what, case_sensitive=False)",
           (f"{LIMITS}::test_count_in_a_code_cell_agrees_with_find_and_honours_case_sensitive",)),
    Mutant("count() in code cells is case-sensitive while find() is not", "levels/_cells.py",
           "return ops.count(_opt_text(session, text), pattern, what=what, case_sensitive=case_sensitive)",
           "return ops.count(_opt_text(session, text), pattern, what=what, case_sensitive=True)",
           (f"{LIMITS}::test_count_in_a_code_cell_agrees_with_find_and_honours_case_sensitive",)),
    Mutant("topk scores all words, not the first k", "bench/scoring.py",
           "return len(set(words[: len(gold)]) & set(gold)) / len(gold)",
           "return len(set(words) & set(gold)) / len(gold)",
           ("tests/test_bench_scoring.py::test_topk_counts_only_the_first_k_words_of_the_answer",)),
    Mutant("an empty model reply crashes the loop", "engine.py",
           'reply = completion.text or ""', "reply = completion.text",
           (f"{LIMITS}::test_an_empty_model_reply_is_an_error_the_model_is_told_about",)),
    Mutant("a cancelled run exits 1, not 130", "cli.py",
           '    if res.status == "cancelled":\n        return 130\n', '    if res.status == "cancelled":\n        return 1\n',
           (f"{LIMITS}::test_a_cancelled_cli_run_exits_130",)),
    # the case route (issue 12 / 16): each deliberate bug must turn tests/test_case_route.py red
    Mutant("case route: no account of the place an alibi names", "case_file.py",
           "    for _, _, p, place in linked[:3]:", "    for _, _, p, place in linked[:0]:",
           (f"{CASE}::test_dossiers_hold_what_decides_each_suspect_and_no_distractors",
            f"{CASE}::test_right_facts_from_the_dossiers_give_the_culprit")),
    Mutant("case route: a confirmed alibi counts less", "case_route.py",
           '"alibi_confirmed": (-2, "alibi confirmed")', '"alibi_confirmed": (-1, "alibi confirmed")',
           (f"{CASE}::test_rank_orders_by_the_documented_weights_then_the_trace_then_the_order",)),
    Mutant("case route: the ranking is reversed", "case_route.py",
           'rows.sort(key=lambda r: (-r["score"], -r["_t"], r["_i"]))',
           'rows.sort(key=lambda r: (r["score"], -r["_t"], r["_i"]))',
           (f"{CASE}::test_right_facts_from_the_dossiers_give_the_culprit",)),
    Mutant("case route: examine is skipped", "case_route.py",
           '        return first, ("examine",)', '        return first, ("weigh",)',
           (f"{CASE}::test_each_step_is_offered_in_turn_then_only_an_answer_from_the_ranking",)),
    Mutant("case route: any answer passes the verdict check", "case_route.py",
           "        if any(_names(answer, n, everyone) for n in top):", "        if True:",
           (f"{CASE}::test_an_answer_that_is_not_the_leader_goes_back_once_with_the_ranking",)),
    Mutant("case route: the victim is a suspect", "case_route.py",
           "        candidates = [p for p in everyone if p not in victims]", "        candidates = list(everyone)",
           (f"{CASE}::test_seed_case_over_the_loopback_server_names_pemberton_and_the_evidence",)),
    Mutant("case route: the trace ignores numbers (size 9 boots)", "case_file.py",
           "        weights[num] = math.log((n + 1) / (df + 0.5))", "        weights[num] = 0.0",
           (f"{CASE}::test_the_trace_points_at_the_suspects_the_physical_evidence_fits",)),
    Mutant("case route: the trace does not break ties", "case_route.py",
           'rows.sort(key=lambda r: (-r["score"], -r["_t"], r["_i"]))', 'rows.sort(key=lambda r: (-r["score"], r["_i"]))',
           (f"{CASE}::test_rank_orders_by_the_documented_weights_then_the_trace_then_the_order",)),
    Mutant("case route: a passage about several people is sent whole", "case_file.py",
           "    if sum(1 for o in everyone if o.pattern().search(p.text)) < 3:",
           "    if True:",
           (f"{CASE}::test_dossiers_hold_what_decides_each_suspect_and_no_distractors",)),
]


def pytest_run(src: Path, tests: tuple[str, ...]) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    t = time.monotonic()
    rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return rc, time.monotonic() - t


def copy_src(dest: Path) -> Path:
    src = dest / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return src


def apply(src: Path, m: Mutant) -> None:
    f = src / "contextbox" / m.path
    text = f.read_text()
    n = text.count(m.old)
    if n != 1:
        raise SystemExit(f"mutant {m.name!r}: the text to replace occurs {n} times in {m.path} (the source moved?)")
    f.write_text(text.replace(m.old, m.new))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only mutants whose name contains this")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if args.k.lower() in m.name.lower()]
    if not chosen:
        print(f"no listed mutant's name contains {args.k!r}")
        return 2
    tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
    with tempfile.TemporaryDirectory(prefix="cbx-mut-") as tmp:
        rc, secs = pytest_run(copy_src(Path(tmp) / "base"), tests)
        if rc != 0:
            print(f"the killing tests fail on the unmutated source (pytest exit {rc}): fix them first")
            return 2
        print(f"baseline: {len(tests)} test targets pass on the unmutated source ({secs:.1f} s)")
        survived = 0
        for i, m in enumerate(chosen):
            src = copy_src(Path(tmp) / f"m{i}")
            apply(src, m)
            rc, secs = pytest_run(src, m.tests)
            verdict = "killed" if rc != 0 else "SURVIVED"
            survived += rc == 0
            print(f"{verdict:8}  {m.name}  ({m.path}, {secs:.1f} s)")
    print(f"{len(chosen) - survived}/{len(chosen)} listed mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

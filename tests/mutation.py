"""Mutation testing of the core modules with mutmut (``make mutation``; see docs/mutation.md).

The run happens in a scratch copy (``build/mutation/``: src, tests, pyproject.toml with its
``[tool.mutmut]`` section narrowed to the chosen modules), so the worktree never gets a
``mutants/`` folder and mutmut's cache survives between runs while tests/ is unchanged (only
changed functions are mutated and tested again; a change under tests/ starts afresh). At the end it prints, per module and in total, the mutants killed
(a test failed or timed out), survived, and with no covering test, and the kill rate
``killed / (killed + survived + no tests)``; then the survivors, one per line, for
``mutmut show NAME`` (run inside ``build/mutation/``).

    python tests/mutation.py --sweep 40                   # a random sample of 40 per module (make mutation)
    python tests/mutation.py                              # every mutant of every module (hours of CPU)
    python tests/mutation.py --modules bench/scoring.py   # one module, the tests named for it below
    python tests/mutation.py --modules ops.py --tests tests/test_ops_properties.py --max-children 1

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "build" / "mutation"  # --scratch DIR keeps one module's run apart from another's

#: files outside src/ and tests/ that tests read (test_host_safety.py checks what README.md says)
ALSO_COPY = ["README.md"]

#: the tests that exercise each module (a narrowed run uses these; the full run uses the whole selection)
TESTS_FOR: dict[str, list[str]] = {
    # no test that starts an L2 sandbox or an L3 worker: inside mutmut's forked workers they deadlock
    # (docs/mutation.md); those paths are covered by tests/test_limits_wiring.py and test_level_policy.py
    # the loop (`_Run._loop`, `events`, `_wait`, ...) is covered by every test of these three; the test_api
    # tests cover completion/arun/astream; test_session's code-cell and `rlm chat` (subprocess) tests are left out
    "engine.py": ["tests/test_engine.py", "tests/test_engine_details.py", "tests/test_engine_loop.py",
                  "tests/test_engine_config.py", "tests/test_session.py",
                  *(f"--deselect=tests/test_session.py::{t}" for t in (
                      "test_code_namespace_persists_between_questions[l2]",
                      "test_code_namespace_persists_between_questions[l3]",
                      "test_l3_worker_is_the_same_process_across_questions",
                      "test_rlm_chat_answers_each_line_and_links_runs", "test_rlm_chat_needs_a_context_file")),
                  *(f"tests/test_api.py::{t}" for t in (
                      "test_completion_returns_response_like_rlms", "test_completion_without_root_prompt_asks_the_context",
                      "test_arun_answers", "test_astream_yields_the_same_events_as_stream"))],
    "levels/commands.py": ["tests/test_commands.py", "tests/test_commands_details.py", "tests/test_ops_properties.py"],
    "ops.py": ["tests/test_ops_properties.py", "tests/test_ops_edges.py", "tests/test_commands.py"],
    # sandbox and native: run with --isolation forkserver (docs/mutation.md); the timing-bound host-limit
    # tests and the subprocess probe are left out (a loaded machine fails them with or without a mutant)
    # mutmut's stats step runs the whole selection once and gives up at its first failing test ("failed to
    # collect stats. runner returned 1"): the 12M-piece split of test_l2_session_recovers_... took 76-94 s at
    # load 13 and then met monty's request timeout (the worker killed, not the "protocol violation" it asserts),
    # and the regex test asserts < 3 s of wall clock; test_sandbox_details.py loses a session the fast way
    "levels/sandbox.py": ["tests/test_code_levels.py", "tests/test_limits_wiring.py", "tests/test_host_limits.py",
                   "tests/test_sandbox_details.py",
                   *(f"--deselect=tests/test_host_limits.py::{t}" for t in (
                       "test_the_probe_keeps_the_host_under_a_memory_ceiling_and_every_run_within_its_timeout",
                       "test_cancel_does_not_wait_for_a_host_call", "test_run_timeout_does_not_wait_for_a_host_call",
                       "test_l2_session_recovers_after_a_reply_too_large_for_it")),
                   "--deselect=tests/test_limits_wiring.py::test_regex_timeout_setting_bounds_count_and_regex"],
    # the security suite is left out (60 hostile snippets per run of a survivor, 1 GB allocations among them);
    # test_native_details.py states the host's side of those outcomes; the 4 x 700 MB and user-namespace
    # tests of test_l3_guard.py are heavy and wall-clock-bound (a loaded machine fails them with or without
    # a mutant); its 3 x 48 MB counterpart is in test_native_details.py
    "levels/native.py": ["tests/test_native_details.py", "tests/test_native_reports.py", "tests/test_code_levels.py",
                         "tests/test_l3_guard.py", "tests/test_native_cells.py",
                  "tests/test_limits_wiring.py::test_count_in_a_code_cell_agrees_with_find_and_honours_case_sensitive",
                  *(f"tests/test_host_limits.py::{t}" for t in (
                      "test_l3_worker_reaching_the_host_through_its_pipe_meets_the_same_limits",
                      "test_answers_over_max_answer_chars_are_refused",
                      "test_l3_final_too_large_for_a_frame_is_an_error_not_a_dead_worker")),
                  *(f"--deselect=tests/test_l3_guard.py::{t}" for t in (
                      "test_memory_limit_holds_for_the_worker_with_its_children",
                      "test_non_root_install_in_a_user_namespace"))],
    "levels/delegation.py": ["tests/test_delegation.py", "tests/test_typed_map.py", "tests/test_delegation_details.py",
                      "tests/test_delegation_batches.py",
                      *(f"--deselect=tests/{t}" for t in (
                          "test_delegation.py::test_real_code_cell_batches_concurrently_in_a_run[l2]",
                          "test_delegation.py::test_real_code_cell_batches_concurrently_in_a_run[l3]",
                          "test_delegation.py::test_sub_calls_from_code_need_l4",
                          "test_typed_map.py::test_llm_map_in_a_code_cell_returns_values_with_none_for_failures[l2]",
                          "test_typed_map.py::test_llm_map_in_a_code_cell_returns_values_with_none_for_failures[l3]",
                          # timing bounds: a loaded machine fails them with or without a mutant
                          "test_delegation.py::test_llm_map_over_war_and_peace_near_ideal_time",
                          "test_delegation.py::test_child_timeout_is_the_parents_remaining_time",
                          "test_delegation.py::test_timeout_mid_batch_stops_new_calls",
                          "test_delegation.py::test_batched_results_keep_input_order_and_run_concurrently"))],
    # the ASGI tests of test_server.py (the live-uvicorn, 50-run, restart and `rlm serve` ones are slow)
    "server/app.py": ["tests/test_server.py", "tests/test_server_app_details.py",
                      *(f"--deselect=tests/test_server.py::{t}" for t in (
                          "test_live_sse_resume_slow_reader_loses_nothing", "test_openai_client_against_chat_completions",
                          "test_load_50_concurrent_runs_lose_nothing", "test_restart_marks_interrupted_and_keeps_events",
                          "test_50_concurrent_submissions_with_defaults_all_answered",
                          "test_queued_runs_survive_a_restart"))],
    "server/security.py": ["tests/test_server_security_units.py", "tests/test_host_safety.py"],
    "stores/sqlite.py": ["tests/test_store_sqlite.py", "tests/test_store_sqlite_details.py",
                         "tests/test_cli_ctrl_c.py::test_an_interrupt_landing_inside_a_store_write_leaves_no_transaction_open"],
    "bench/scoring.py": ["tests/test_bench_scoring.py"],
}


#: modules whose tests start L2 sandboxes or L3 workers: mutmut must fork each mutant's worker from a clean
#: server process (docs/mutation.md), and they are slow (more room before a slow mutant counts as hung)
ISOLATION_FOR = {"levels/sandbox.py": ("forkserver", 6.0), "levels/native.py": ("forkserver", 6.0)}

_SAMPLE_LINE = re.compile(r"^sample: (\d+)/(\d+) killed of (\d+) mutants; kill rate [\d.]+% "
                          r"\(95% interval ([\d.]+)%–([\d.]+)%\)$", re.M)


def sweep(mods: list[str], n: int, seed: int, max_children: int) -> int:
    """A random sample of ``n`` mutants of each module, each module in its own scratch folder under
    ``build/mutation-sweep/``, then one table: each module's sampled kill rate with its 95 % interval, and the
    rate over every mutant of the modules (each module's rate weighted by its number of mutants)."""
    rows: list[tuple[str, int, int, int, float, float] | tuple[str, None]] = []
    for mod in mods:
        scratch = ROOT / "build" / "mutation-sweep" / re.sub(r"[^\w]", "_", mod)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--modules", mod, "--scratch", str(scratch),
               "--sample", str(n), "--seed", str(seed), "--max-children", str(max_children)]
        if mod in ISOLATION_FOR:
            iso, mult = ISOLATION_FOR[mod]
            cmd += ["--isolation", iso, "--timeout-multiplier", str(mult)]
        print(f"\n=== {mod}: a sample of {n} mutants (seed {seed}) in {scratch}", flush=True)
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        m = _SAMPLE_LINE.search(out.stdout)
        if m is None:
            tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
            print(f"{mod}: no figure (exit {out.returncode}): {' | '.join(tail)}", flush=True)
            rows.append((mod, None))
            continue
        k, d, total, lo, hi = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])
        print(f"{mod}: {k} of {d} killed ({100 * k / d:.1f} %, 95 % interval {lo:.1f}–{hi:.1f} %) of its "
              f"{total} mutants", flush=True)
        rows.append((mod, k, d, total, lo, hi))
    print(f"\n{'module':24} {'sample':>9} {'kill rate':>9}  95 % interval  mutants")
    done = [r for r in rows if r[1] is not None]
    for r in rows:
        if r[1] is None:
            print(f"{r[0]:24} {'failed':>9}")
            continue
        mod, k, d, total, lo, hi = r  # type: ignore[misc]
        print(f"{mod:24} {f'{k}/{d}':>9} {100 * k / d:8.1f}%  {lo:5.1f}–{hi:5.1f} %  {total:7}")
    if not done:
        return 1
    all_mutants = sum(r[3] for r in done)  # type: ignore[misc]
    rate = sum(r[3] * r[1] / r[2] for r in done) / all_mutants  # type: ignore[misc]
    # a stratified sample's standard error (each module a stratum weighted by its mutants; normal approximation)
    se = sum((r[3] / all_mutants) ** 2 * (r[1] / r[2]) * (1 - r[1] / r[2]) / r[2] for r in done) ** 0.5  # type: ignore[misc]
    print(f"kill rate: {100 * rate:.1f}% (estimated over all {all_mutants} mutants of {len(done)} modules, "
          f"from samples of {n} each; 95% interval {100 * max(0.0, rate - 1.96 * se):.1f}%–"
          f"{100 * min(1.0, rate + 1.96 * se):.1f}%)" + (f"; {len(rows) - len(done)} module(s) failed" if len(done) < len(rows) else ""))
    return 0 if len(done) == len(rows) else 1


def _where(mod: str) -> str:
    """A module's path under src/contextbox/; the levels' modules and the SQLite store also by their names
    before they moved to levels/ and stores/ (the seventh session), as earlier sections of docs/mutation.md
    name them."""
    if mod == "store_sqlite.py":
        return "stores/sqlite.py"
    if not (ROOT / "src" / "contextbox" / mod).is_file() and (ROOT / "src" / "contextbox" / "levels" / mod).is_file():
        return f"levels/{mod}"
    return mod


def configured() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def mutmut_section(only: list[str], tests: list[str], base: dict) -> str:
    cfg = {**base, "only_mutate": only, "pytest_add_cli_args_test_selection": tests, "also_copy": ALSO_COPY}

    def val(v: object) -> str:
        return json.dumps(v)  # TOML accepts JSON strings, numbers, booleans and arrays of them

    return "[tool.mutmut]\n" + "".join(f"{k} = {val(v)}\n" for k, v in cfg.items())


def tests_hash() -> str:
    h = hashlib.sha256()
    for f in sorted((ROOT / "tests").rglob("*.py")):
        if f.name == "mutation.py":  # this script is not a test
            continue
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def prepare(only: list[str], tests: list[str], fresh: bool, overrides: dict | None = None) -> None:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    # mutmut caches verdicts per mutated function and knows when the source changes, not when
    # the tests do: new tests must get every survivor again, so a change of tests/ starts afresh
    stamp = SCRATCH / "tests.sha256"
    digest = tests_hash()
    if fresh or not stamp.exists() or stamp.read_text() != digest:
        shutil.rmtree(SCRATCH / "mutants", ignore_errors=True)
    stamp.write_text(digest)
    for name in ("src", "tests"):
        shutil.rmtree(SCRATCH / name, ignore_errors=True)
        shutil.copytree(ROOT / name, SCRATCH / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis"))
    for name in ALSO_COPY:  # files some tests read beside the code (mutmut copies them into mutants/)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, SCRATCH / name)
    text = (ROOT / "pyproject.toml").read_text()
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    (SCRATCH / "pyproject.toml").write_text(text.rstrip() + "\n\n" + mutmut_section(only, tests, {**configured(), **(overrides or {})}))


def verdicts(scratch: Path) -> dict[str, dict[str, int | None]]:
    """Per module file (relative to src/contextbox): mutant name -> mutmut's exit code (None: not run)."""
    out: dict[str, dict[str, int | None]] = {}
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        rel = str(meta.relative_to(scratch / "mutants" / "src" / "contextbox"))[: -len(".meta")]
        out.setdefault(rel, {}).update(data.get("exit_code_by_key", {}))
    return out


def chained(scratch: Path) -> dict[str, dict[str, int | None]]:
    """The verdicts of the run in ``scratch`` over those of the run it re-tested (its ``--survivors-of``,
    recorded in ``base.txt``), and so on back to the first run of the chain."""
    mine = verdicts(scratch)
    link = scratch / "base.txt"
    if not link.is_file():
        return mine
    old = chained(Path(link.read_text().strip()))
    return {rel: {k: v if v is not None else old.get(rel, {}).get(k) for k, v in codes.items()}
            for rel, codes in mine.items()}


def first_run(scratch: Path) -> Path:
    link = scratch / "base.txt"
    return first_run(Path(link.read_text().strip())) if link.is_file() else scratch


def merged(base: Path | None) -> dict[str, dict[str, int | None]]:
    """This run's verdicts over those of ``base`` (a run whose survivors this one tested again): a mutant
    this run did not test keeps its verdict from ``base``; one that no longer exists (its code was removed)
    is dropped."""
    mine = verdicts(SCRATCH)
    if base is None:
        return mine
    old = chained(base)
    return {rel: {k: v if v is not None else old.get(rel, {}).get(k) for k, v in codes.items()}
            for rel, codes in mine.items()}


def tally(base: Path | None = None) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per file: killed / survived / no tests / timeout / other, from mutmut's .meta files."""
    from mutmut.stats import status_by_exit_code

    per: dict[str, dict[str, int]] = {}
    survivors: list[str] = []
    for rel, codes in merged(base).items():
        counts = per.setdefault(rel, {"killed": 0, "survived": 0, "no tests": 0, "timeout": 0, "other": 0})
        for name, code in codes.items():
            status = status_by_exit_code[code]  # mutmut's own reading of the exit code
            if status == "survived":
                counts["survived"] += 1
                survivors.append(name)
            elif status in ("killed", "timeout", "no tests"):
                counts[status] += 1
            else:  # not checked, skipped, suspicious, segfault, caught by type check
                counts["other"] += 1
    return per, survivors


def not_killed(scratch: Path) -> list[str]:
    """The survivors and the untested mutants of an earlier run (``--survivors-of``)."""
    from mutmut.stats import status_by_exit_code

    return sorted(name for codes in chained(scratch).values() for name, code in codes.items()
                  if status_by_exit_code[code] in ("survived", "no tests"))


def untested(scratch: Path) -> list[str]:
    """The mutants an earlier run never reached (stopped before the end)."""
    return sorted(name for codes in chained(scratch).values() for name, code in codes.items() if code is None)


def sampled_estimate(base: Path | None) -> None:
    """With ``--sample``: the kill rate over every mutant, from two strata. A: the mutants the earlier run
    decided (every one of them counted, with this run's verdict where it tested them again); B: those it
    never reached, of which this run tested a random sample. Estimate = (killed in A + |B| x the sample's
    kill rate) / (|A| + |B|), with a 95 % Wilson interval for the sample's rate carried through."""
    import math

    from mutmut.stats import status_by_exit_code

    old, mine = (verdicts(first_run(base)) if base is not None else {}), merged(base)
    a_den = a_kill = b_all = b_den = b_kill = 0
    for rel, codes in mine.items():
        for name, code in codes.items():
            st = status_by_exit_code[code]
            in_a = old.get(rel, {}).get(name) is not None
            b_all += not in_a
            if st not in ("killed", "timeout", "survived", "no tests"):
                continue
            kill = st in ("killed", "timeout")
            if in_a:
                a_den, a_kill = a_den + 1, a_kill + kill
            else:
                b_den, b_kill = b_den + 1, b_kill + kill
    if not b_all or not b_den:
        return
    p, n, z = b_kill / b_den, b_den, 1.96
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    total = a_den + b_all
    est = [(a_kill + b_all * q) / total for q in (p, mid - half, mid + half)]
    if base is None:
        print(f"\nsample: {b_kill}/{b_den} killed of {b_all} mutants; kill rate {100 * p:.1f}% (95% interval "
              f"{100 * (mid - half):.1f}%–{100 * (mid + half):.1f}%)")
        return
    print(f"\nstratified estimate: A (decided by the earlier run) {a_kill}/{a_den} killed; B (not reached: "
          f"{b_all}) sample {b_kill}/{b_den} killed ({100 * p:.1f}%)")
    print(f"kill rate over all {total} mutants: {100 * est[0]:.1f}% (95% interval {100 * est[1]:.1f}%–"
          f"{100 * est[2]:.1f}%)")


def recheck_timeouts(scratch: Path, wall_s: float) -> None:
    """Test each mutant mutmut marked as timed out again, in a fresh process of its own (``python -m pytest``
    on its covering tests, ``MUTANT_UNDER_TEST`` set, no fork): on a loaded machine a slow run of a harmless
    mutant passes mutmut's wall-clock limit, and a forked worker can hang where a fresh process does not
    (pydantic-monty). The verdict (killed, survived, or a timeout again after ``wall_s``) replaces mutmut's."""
    from mutmut.stats import status_by_exit_code

    stats = json.loads((scratch / "mutants" / "mutmut-stats.json").read_text())
    cover = stats["tests_by_mangled_function_name"]
    extra = configured().get("pytest_add_cli_args", [])
    env = {**os.environ, "PYTHONPATH": str(scratch / "mutants" / "src")}
    for meta in sorted((scratch / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        for name, code in list(codes.items()):
            if status_by_exit_code[code] != "timeout":
                continue
            tests = sorted(cover.get(name.partition("__mutmut_")[0], []), key=lambda t: stats["duration_by_test"].get(t, 0))
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", *extra, *tests], cwd=scratch / "mutants",
                                    env={**env, "MUTANT_UNDER_TEST": name}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=wall_s).returncode
            except subprocess.TimeoutExpired:
                rc = 36  # mutmut's code for a timeout
            print(f"recheck {name}: {status_by_exit_code[rc]}", flush=True)
            codes[name] = rc
            meta.write_text(json.dumps(data))


def report(base: Path | None = None) -> float | None:
    per, survivors = tally(base)
    tot = {k: sum(c[k] for c in per.values()) for k in ("killed", "survived", "no tests", "timeout", "other")}
    print(f"\n{'module':28} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} {'rate':>6}")
    for rel, c in sorted(per.items()):
        den = c["killed"] + c["timeout"] + c["survived"] + c["no tests"]
        rate = f"{100 * (c['killed'] + c['timeout']) / den:5.1f}%" if den else "  -  "
        print(f"{rel:28} {c['killed']:7} {c['timeout']:7} {c['survived']:8} {c['no tests']:8} {rate:>6}")
    den = tot["killed"] + tot["timeout"] + tot["survived"] + tot["no tests"]
    rate = 100 * (tot["killed"] + tot["timeout"]) / den if den else None
    if rate is not None:
        print(f"{'total':28} {tot['killed']:7} {tot['timeout']:7} {tot['survived']:8} {tot['no tests']:8} "
              f"{rate:5.1f}%")
        print(f"kill rate: {rate:.1f}% ({tot['killed'] + tot['timeout']} of {den} mutants)")
    if survivors:
        print(f"\nsurvivors ({len(survivors)}; `cd build/mutation && mutmut show NAME`):")
        for s in survivors:
            print("  " + s)
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description="mutation testing of the core modules (mutmut)")
    ap.add_argument("--modules", default="", help="comma-separated paths under src/contextbox/ (default: all)")
    ap.add_argument("--tests", default="", help="space-separated test paths (default: the modules' own tests)")
    ap.add_argument("--max-children", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--report", action="store_true", help="only print the report of the last run")
    ap.add_argument("--fresh", action="store_true", help="forget mutmut's cached verdicts (a changed tests/ does too)")
    ap.add_argument("--scratch", default="", help="the scratch folder (default build/mutation)")
    ap.add_argument("--survivors-of", default="",
                    help="test again only the survivors of the run in this scratch folder (after new tests); "
                         "the report merges both runs' verdicts")
    ap.add_argument("--also", default="",
                    help="with --survivors-of: mutant name patterns to test too (the functions changed since), "
                         "e.g. 'contextbox.ops.x_chunk__mutmut_*'")
    ap.add_argument("--timeout-multiplier", type=float, default=None,
                    help="mutmut's timeout_multiplier (a mutant whose tests run longer than (their time + "
                         "timeout_constant) x this counts as a timeout); raise it on a loaded machine, where slow "
                         "is not hung")
    ap.add_argument("--isolation", choices=("fork", "forkserver"), default=None,
                    help="mutmut's process_isolation: 'forkserver' forks each mutant's worker from a process that "
                         "only collected the tests, not from mutmut's own (which ran them all for its stats, "
                         "leaving sandbox threads behind), and which imports nothing of the tests: forking after "
                         "pydantic-monty was imported hangs some sandbox tests; the sandbox tests need it")
    ap.add_argument("--sample", type=int, default=0,
                    help="with --survivors-of: also test this many mutants, drawn at random, of those the earlier "
                         "run never reached (it was stopped); the report adds a stratified estimate over all. "
                         "Alone: test only a random sample of this many of the module's mutants")
    ap.add_argument("--sample-only", action="store_true",
                    help="with --survivors-of and --sample: test only the sample, not the earlier run's survivors")
    ap.add_argument("--seed", type=int, default=19, help="the seed of --sample's draw")
    ap.add_argument("--recheck-timeouts", type=float, default=0, metavar="SECONDS",
                    help="after the run, test every timed-out mutant again in a fresh process with this wall-clock "
                         "limit (a slow harmless mutant on a loaded machine is not a hung one)")
    ap.add_argument("--sweep", type=int, default=0, metavar="N",
                    help="a random sample of N mutants of each module (--modules, default all), each in its own "
                         "scratch folder under build/mutation-sweep/, then one table with every module's rate")
    ap.add_argument("--min-rate", type=float, default=0.0, help="exit 1 when the kill rate is below this")
    args = ap.parse_args()
    if args.sweep:
        mods = ([_where(m.strip()) for m in args.modules.split(",") if m.strip()] if args.modules else
                [m.removeprefix("src/contextbox/") for m in configured()["only_mutate"]])
        return sweep(mods, args.sweep, args.seed, args.max_children)
    if args.scratch:
        global SCRATCH
        SCRATCH = Path(args.scratch).resolve()
    base = Path(args.survivors_of).resolve() if args.survivors_of else None
    if base is not None and base == SCRATCH:
        print("mutation: --survivors-of needs another --scratch folder than the earlier run's", file=sys.stderr)
        return 2
    if not args.report:
        cfg = configured()
        if args.modules:
            mods = [_where(m.strip()) for m in args.modules.split(",") if m.strip()]
            unknown = [m for m in mods if not (ROOT / "src" / "contextbox" / m).is_file()]
            if unknown:
                print(f"mutation: no such module under src/contextbox/: {', '.join(unknown)}", file=sys.stderr)
                return 2
            only = [f"src/contextbox/{m}" for m in mods]
            tests = args.tests.split() or sorted({t for m in mods for t in TESTS_FOR.get(m, ["tests/"])})
        else:
            only = cfg["only_mutate"]
            tests = args.tests.split() or cfg["pytest_add_cli_args_test_selection"]
        names = ((not_killed(base) if not args.sample_only else []) + args.also.split()) if base is not None else []
        if base is not None and args.sample:  # a random sample of what the earlier run never reached
            import random

            pool = untested(first_run(base))  # the same draw along a chain of re-tests (same seed)
            decided = chained(base)
            names += sorted(n for n in random.Random(args.seed).sample(pool, min(args.sample, len(pool)))
                            if all(codes.get(n) is None for codes in decided.values()))
        if base is not None and not names:
            print(f"mutation: the run in {base} left no survivors", file=sys.stderr)
            return report(base) is None
        if names and (SCRATCH / "mutants").is_dir() and not args.fresh:  # resume: skip what is decided here
            from mutmut.stats import status_by_exit_code

            done = {k for codes in verdicts(SCRATCH).values() for k, v in codes.items()
                    if status_by_exit_code[v] in ("killed", "survived", "no tests")}
            names = [n for n in names if n not in done]
        overrides: dict = {"timeout_multiplier": args.timeout_multiplier} if args.timeout_multiplier else {}
        if args.isolation:
            overrides["process_isolation"] = args.isolation
            if args.isolation == "forkserver":  # the server imports nothing of the tests (nor pydantic-monty)
                overrides["forkserver_warmup"] = "none"
        env = dict(os.environ)
        data = ROOT.parent / "shared" / "data"  # the tests look for ../shared/data beside the repo: not the scratch's
        if not env.get("CONTEXTBOX_DATA") and data.is_dir():
            env["CONTEXTBOX_DATA"] = str(data)
        prepare(only, tests, args.fresh, overrides)
        (SCRATCH / "base.txt").unlink(missing_ok=True)
        if base is not None:  # a chain of re-tests merges back to its first run
            (SCRATCH / "base.txt").write_text(str(base))
        if base is None and args.sample:  # mutate and collect the tests' coverage, then draw the sample
            subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", "1", "nothing__mutmut_0"],
                           cwd=SCRATCH, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            import random

            pool = untested(SCRATCH)
            if not pool:
                print("mutation: no mutants were generated (or the tests' first run failed)", file=sys.stderr)
                return 2
            names = sorted(random.Random(args.seed).sample(pool, min(args.sample, len(pool))))
        print(f"mutating {len(only)} module(s) with tests {' '.join(tests)} in {SCRATCH}"
              + (f" ({len(names)} of the mutants: survivors of {base} and those --also/--sample add)" if base else f" (a random sample of {len(names)} mutants)" if names else ""), flush=True)
        rc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children), *names],
                            cwd=SCRATCH, env=env).returncode
        if rc not in (0, 1):
            print(f"mutation: mutmut exited {rc}", file=sys.stderr)
            return rc
    if args.recheck_timeouts:
        recheck_timeouts(SCRATCH, args.recheck_timeouts)
    rate = report(base)
    if base is not None or args.sample:
        sampled_estimate(base)
    return 1 if rate is None or rate < args.min_rate else 0


if __name__ == "__main__":
    sys.exit(main())

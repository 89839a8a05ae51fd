"""``rlm demo detective``: the seed's Ashford Manor murder (``seed/detective-mystery.txt``), solved with L4.

The answer is scored against ``seed/detective-answer.txt`` — the culprit named on its ``ANSWER:`` line
and the key evidence of its reasoning — a file that is read only here, after the run, and never reaches
a model. Two plans:

* ``--plan model`` (the default): the root model gets the case file in the context box and L1 + L4; it
  is asked to examine each suspect with sub-calls and name the murderer with the evidence. A model with
  constrained decoding (the embedded one) is steered through the engine's case route
  (:mod:`contextbox.case_route`): ``suspects`` → ``examine`` (a typed sub-call per suspect) → ``weigh``
  (the engine's ranking) → the verdict.
* ``--plan fixed``: one sub-call per witness (their statement, alibi, time unaccounted for, what the
  evidence and the others say of them), then one sub-call that weighs the findings and names the
  murderer. The output says so.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from ..context import Context
from ..errors import ContextError
from .common import Check, Outcome, fixed_plan, make_rlm, need_data_file, report, run_share, sub_spec

CASE = "seed/detective-mystery.txt"
ANSWER = "seed/detective-answer.txt"
QUESTION = ("Who killed Lord Edward Ashford? Examine each suspect with sub-calls (llm_query or rlm_query): their "
            "statement, their alibi and time unaccounted for, and the physical evidence. Then name the murderer "
            "first, then the motive and the key evidence (contradictions in the timeline, physical traces, means).")
#: the key evidence of the answer file, each with the words that show an answer states it; the first
#: word of each must occur in the answer file (checked), so the rubric stays tied to the file
EVIDENCE: dict[str, list[str]] = {
    "motive (the 1998 insurance fraud)": ["fraud", "embezzl", "'98", "1998", "insurance"],
    "the gardener saw the figure return after 10:20": ["gardener", "fletcher", "10:30", "returning", "came back"],
    "the limping footprints": ["footprint", "limp", "gait", "size 10"],
    "the belladonna (poison) from the garden": ["belladonna", "poison"],
}
_WITNESS = re.compile(r"^\[WITNESS \d+: ([^\]]+?) - [^\]]*\]", re.M)


def load_solution(path: Path) -> dict[str, Any]:
    """The culprit (``ANSWER:`` line) of the answer file, with the rubric checked against it."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r"^ANSWER:\s*(.+)$", text, re.M)
    if not m:
        raise ContextError(f"{path} has no 'ANSWER: NAME' line")
    folded = text.casefold()
    missing = [k for k, words in EVIDENCE.items() if words[0] not in folded]
    if missing:
        raise ContextError(f"{path} does not state the evidence the demo scores ({', '.join(missing)})")
    return {"culprit": m.group(1).strip()}


def suspects(case: str) -> list[str]:
    """The witnesses' names, from the ``[WITNESS n: Name - role]`` headers."""
    return _WITNESS.findall(case)


def _key(name: str, everyone: list[str]) -> str:
    """The word that tells a person apart: the surname, else (shared surname) the first name."""
    words = [w for w in name.replace(".", "").split() if w not in ("Dr", "Colonel", "Lord", "Mr", "Mrs", "Miss")]
    last = words[-1]
    shared = sum(1 for n in everyone if n.split()[-1] == last) > 1
    return words[0] if shared and len(words) > 1 else last


def score(answer: str, culprit: str, everyone: list[str]) -> tuple[float, float, list[str]]:
    """(culprit right 0/1, share of key evidence stated, the evidence found). The culprit is right when
    the first suspect the answer names is the culprit (the questions ask to name the murderer first)."""
    a = answer.casefold()
    people = everyone + ([culprit] if culprit not in everyone else [])
    first: list[tuple[int, str]] = []
    for n in people:
        m = re.search(rf"\b{re.escape(_key(n, people).casefold())}\b", a)
        if m:
            first.append((m.start(), n))
    right = 1.0 if first and min(first)[1] == culprit else 0.0
    found = [k for k, words in EVIDENCE.items() if any(w in a for w in words)]
    return right, len(found) / len(EVIDENCE), found


def plan_commands(names: list[str], case: str) -> list[dict[str, Any]]:
    """The fixed plan: one sub-call per witness, then one that decides. Every witness's prompt starts with
    the whole case file, so a local model's prefix cache evaluates the file once for all of them."""
    prompts = [f"Case file:\n{case}\n\nYou are a detective. Examine {n} in this case file: what they say they did, "
               "their alibi and any time unaccounted for, and what the physical evidence and the other witnesses "
               "say about them (sightings, footprints, motive, means). Start with their name; say whether their "
               "account is contradicted. "
               "Answer in at most 5 sentences." for n in names]
    return [
        {"op": "llm_query_batched", "prompts": prompts, "store": "findings"},
        {"op": "llm_query", "prompt": "These are the findings on each suspect of a murder case. Who is the "
         "murderer? Name them first, then the motive and the key evidence (contradictions, physical traces, "
         "means). Answer in at most 6 sentences.", "on": "findings", "store": "verdict"},
        {"op": "final_var", "name": "verdict"},
    ]


def run_demo(args: argparse.Namespace) -> int:
    case_path, answer_path = need_data_file(CASE), need_data_file(ANSWER)
    case = case_path.read_text(encoding="utf-8")
    names = suspects(case)
    solution = load_solution(answer_path)  # read for scoring only; never part of a prompt
    plan = getattr(args, "plan", None) or "model"
    limits = {"max_iterations": args.max_iterations} if args.max_iterations else None
    if plan == "fixed":
        rlm = make_rlm(args, levels="l1,l4", root=fixed_plan(plan_commands(names, case)), sub_model=sub_spec(args),
                       limits=limits, aids=False)
        plan_text = f"fixed pipeline (one sub-call per witness, {len(names)}, then one to decide); " \
                    f"sub-model: {rlm.sub.name}"
    else:
        rlm = make_rlm(args, levels="l1,l4", limits=limits)
        steered = getattr(rlm.root, "supports_schema", False) and rlm.config.aids.case_route
        plan_text = ("the engine's case route: suspects, examine (one sub-call each), weigh, verdict (L1 + L4)"
                     if steered else "the root model designs the steps (L1 + L4)")
    print(f"detective: {case_path} ({len(case):,} characters, {len(names)} witnesses); root {rlm.root.name}, "
          f"sub {rlm.sub.name}", file=sys.stderr)
    ctx = Context.from_documents([("detective-mystery.txt", case)])
    t0 = time.monotonic()
    res = rlm.run(QUESTION, ctx)
    elapsed = time.monotonic() - t0
    answer = (res.answer or "").strip() if res.status == "answered" else ""
    right, share, found = score(answer, solution["culprit"], names)
    short = " ".join(answer.split())
    checks = [Check("culprit", solution["culprit"], short[:160] or f"(no answer: {res.status})", right),
              Check("key evidence", "; ".join(EVIDENCE), f"{len(found)}/{len(EVIDENCE)}: "
                    + (", ".join(found) or "none"), share)]
    sub_calls = sum(1 for e in res.events if e.type == "sub_call")
    out = Outcome("detective", checks, [res], len(ctx.text), plan_text,
                  f"root {rlm.root.name}, sub {rlm.sub.name}", run_share([res], len(ctx.text)), elapsed,
                  [f"answer: {short[:600]}", f"sub-calls: {sub_calls}"],
                  data={"answer": answer, "sub_calls": sub_calls, "evidence_found": found})
    return report(out, args.json)

"""``rlm demo explain``: the paper's point in one command — the same question asked two ways.

A password sentence is hidden in War and Peace (3.2 MB, some 800k tokens: far over any small model's
window; as in ``rlm demo war-and-peace``). The model is asked for it

* **directly**: one call with the novel cut to what fits the model's window (the first characters:
  what "just put it in the prompt" can do) — for the embedded model 16k tokens, about 2% of the novel;
* **as an RLM**: the novel stays in the context box; the model works on it through commands.

Both answers are scored against the hidden password; the output shows them side by side with tokens,
the share of the novel each read, and the time. See docs/how-it-works.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..context import Context
from ..errors import ContextboxError
from ..pricing import cost as price
from .common import Check, Outcome, find_text, make_rlm, read_share, report
from .war_and_peace import QUESTION, insert_needle, make_needle

#: the window assumed for a model that does not say its own (tokens)
DEFAULT_WINDOW = 32_000
#: characters per token when cutting the text to the window (English prose is about 4; 3 leaves room)
CHARS_PER_TOKEN = 3.0
ANSWER_TOKENS = 48


def direct_prompt(text: str, window: int) -> tuple[str, int]:
    """The question after as much of the text as fits ``window`` tokens; (prompt, characters kept)."""
    room = max(1000, int((window - 400 - ANSWER_TOKENS) * CHARS_PER_TOKEN))
    kept = text[:room]
    return (f"Read this text and answer the question after it.\n\n{kept}\n\nQuestion: {QUESTION}", len(kept))


def ask_directly(provider: Any, text: str, prices: Any = None, providers: Any = None) -> dict[str, Any]:
    """One plain call with the text cut to the provider's window."""
    window = int(getattr(provider, "context_window", None) or DEFAULT_WINDOW)
    prompt, kept = direct_prompt(text, window)
    t0 = time.monotonic()
    try:
        c = provider.complete([{"role": "user", "content": prompt}], max_tokens=ANSWER_TOKENS, temperature=0.0)
        answer, tin, tout = (c.text or "").strip(), c.input_tokens, c.output_tokens
        error = None
    except ContextboxError as e:
        answer, tin, tout, error = "", 0, 0, str(e)
    return {"answer": answer, "input_tokens": tin, "output_tokens": tout, "chars_read": kept, "window": window,
            "seconds": time.monotonic() - t0, "error": error,
            "cost_usd": price(provider.name, tin, tout, prices, providers)}


def is_right(answer: str, code: str) -> bool:
    return code in (answer or "").upper()


def run_demo(args: argparse.Namespace) -> int:
    path = find_text(args.text)
    text = path.read_text(encoding="utf-8", errors="replace")
    sentence, code = make_needle(args.seed)
    hay, at = insert_needle(text, sentence, args.depth)
    rlm = make_rlm(args, limits={"max_iterations": args.max_iterations} if args.max_iterations else None)
    print(f"explain: War and Peace with a password hidden at {args.depth:.0%} ({len(hay):,} characters); "
          f"model {rlm.root.name}", file=sys.stderr)
    t0 = time.monotonic()
    direct = ask_directly(rlm.root, hay, rlm.config.prices, rlm.config.providers)
    res = rlm.run(QUESTION, Context.from_value(hay))
    elapsed = time.monotonic() - t0
    rlm_right = res.status == "answered" and is_right(res.answer or "", code)
    d_right = not direct["error"] and is_right(direct["answer"], code)
    roles = res.usage.to_dict()["by_role"]
    rlm_tokens = (f"root {roles.get('root', {}).get('total_tokens', 0):,} / "
                  f"sub {roles.get('sub', {}).get('total_tokens', 0):,}")
    share = read_share(res.events, len(hay))
    rows = [
        ("", "direct reading (cut to the window)", "RLM (context box)"),
        ("read", f"{direct['chars_read'] / len(hay):.2%} (the first {direct['chars_read']:,} chars)",
         f"{share:.2%} (what its commands showed it)"),
        ("answer", " ".join((direct["answer"] or f"(error: {direct['error']})").split())[:60],
         " ".join((res.answer or f"({res.status})").split())[:60]),
        ("verified", "right" if d_right else "WRONG", "right" if rlm_right else "WRONG"),
        ("tokens", f"{direct['input_tokens'] + direct['output_tokens']:,}", rlm_tokens),
        ("time", f"{direct['seconds']:.1f}s", f"{res.elapsed_s:.1f}s ({res.iterations} iterations)"),
    ]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    lines = [f"the password is in one sentence at character {at:,} of {len(hay):,} ({args.depth:.0%}); "
             f"expected {code}"]
    lines += [f"  {a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    lines.append("the direct reading sees only what fits the window; the RLM keeps the novel out of the prompt "
                 "and reads where its searches point (docs/how-it-works.md)")
    out = Outcome("explain", [Check("RLM answer", code, str(res.answer), 1.0 if rlm_right else 0.0)], [res],
                  len(hay), "the root model designs the steps (RLM); one plain call (direct)",
                  f"root {rlm.root.name}, sub {rlm.sub.name}", share, elapsed, lines,
                  data={"code": code, "direct": direct | {"right": d_right}, "rlm_right": rlm_right})
    return report(out, args.json)

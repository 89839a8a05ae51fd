"""System prompt and turn messages. Only the allowed levels are described."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from .context import Context

log = logging.getLogger("contextbox")

INTRO = """You answer a question about a context that is far too large to show you. It is stored \
in a context box; you see only its size and a short preview. You explore it with tools, one \
step per reply, and you see each step's output before your next reply. Work in small steps: \
search for distinctive words, read the lines around the hits, then answer. Never guess: an \
answer must come from what you read."""

L1 = """## L1 commands (cheapest: use them first)
Reply with ONE JSON object (or a JSON array of them) with an "op" field, optionally in a ```json fence.
- {"op": "search", "query": "words", "k": 10}   ranked search (best for questions in plain words): passages with lines
- {"op": "find", "text": "...", "case_sensitive": false, "max": 50}   literal search: hits with line numbers and offsets
- {"op": "regex", "pattern": "...", "flags": "i", "max": 50}        Python re search: hits with groups
- {"op": "lines", "start": LINE, "end": LINE + 40}                   read lines [start, end), 0-based
- {"op": "slice", "start": OFFSET, "end": OFFSET + 2000}             read characters [start, end)
- {"op": "count", "pattern": "...", "case_sensitive": false}  exact number of occurrences (case as in find; \
"regex": true counts a regex)  or  {"op": "count", "what": "lines|chars|words"}
- {"op": "chunk", "size": 20000, "overlap": 0}   {"op": "split", "delimiter": "..."}
- {"op": "set", "name": "x", "value": ...}  {"op": "get", "name": "x"}  {"op": "print", "value": "..."}
- {"op": "final", "answer": "..."}   or   {"op": "final_var", "name": "x"}   ends the run with your answer
Tables (the engine counts exactly; never count by reading samples):
- {"op": "extract", "store": "t"}   every line split into named columns (or "pattern" with (?P<name>...) groups)
- {"op": "records", "store": "r"}   one row per line ("by": "blank_line" for paragraphs), with its doc and line
- {"op": "count_by", "on": "t", "field": COLUMN}   counts per value, most frequent first, with the total
- {"op": "top", "on": "t", "field": COLUMN, "k": 10}   {"op": "unique", "on": "t", "field": COLUMN}
- {"op": "stats", "on": "t", "field": COLUMN}   count, sum, min, max, mean, median, p90, p95, p99 of its numbers
- {"op": "word_counts", "on": "t", "field": COLUMN, "stop": [WORDS]}   how often each word of a text column occurs
- {"op": "filter", "on": "t", "where": {COLUMN: VALUE or {"ge": NUMBER}}, "store": "f"}   {"op": "sort", ...}
- {"op": "join", "on": ["a", "b"], "key": COLUMN}   rows of a and b with equal keys ("pairs": true: each pair once)
- {"op": "pairs", "on": "f", "field": COLUMN, "at_least": K, "store": "p"}   every (smaller, larger) pair of the
  values found in at least K rows of f, one "(a, b)" line each
Every command takes "store": "name" (keep its full result in a variable) and "on": "name" (work on a
variable, or one item "name[2]", instead of the context). A "thought" field is allowed and ignored.
Outputs are cut to a maximum length; the note says how to see more."""

RECIPES = """## Recipes
- A fact: search (or find a distinctive word), read the hit's line (lines around it if needed), final with the
  exact words of the text. If the found sentence names another thing you need, look that up next.
- How many times does X occur: {"op": "count", "pattern": X} gives the exact number.
- Which value is most frequent / rank / how many of each / how many different / average or percentile over
  lines of a log or records: extract into a table, then count_by, top, unique or stats on the right column, and
  answer with the value the output shows."""

RECIPES_L4 = """- A label per record that no keyword gives (a topic, a kind, a sentiment): records into a table, then
  {"op": "llm_map", "on": "r", "prompt": WHAT TO DECIDE, "choices": [LABELS], "per_call": 10, "store": "m"}
  (a sub-model labels every record), then count_by "label" on m (or filter by label first).
- Pairs (which two X both have at least K rows with Y): label or extract, filter the rows with Y (store "f"),
  then {"op": "pairs", "on": "f", "field": X, "at_least": K, "store": "p"} and final_var p."""

L4 = """## L4 delegation (sub-models read for you; every call costs tokens)
- {"op": "llm_query", "prompt": "...", "on": "var"}  ask a sub-model once; "on" appends the variable's text
- {"op": "llm_map", "prompt": "...", "on": "var", "chunk_size": 20000}  split the variable (or, without "on",
  the whole context) into chunks and ask the prompt about every chunk in parallel; the list of answers is
  stored in "store" (default "answers"): read one with {"op": "get", "name": "answers[3]"}
- {"op": "llm_map", "prompt": "...", "on": "rows", "choices": ["a", "b"], "per_call": 10}  typed: label every
  record (table row, list item, or line of the text/context) with one of the choices (or "schema": a JSON
  Schema); stores a table with a "label" column (and "map_error" where a record failed) to count or filter
- {"op": "llm_query_batched", "prompts": ["...", "..."]}  several independent questions in parallel
- {"op": "rlm_query", "prompt": "...", "on": "var"}  a child RLM with its own tools answers the prompt about
  a variable (or "start"/"end" of the context, or by default the whole context)
- {"op": "rlm_query_batched", "prompt": "...", "on": "list_var"}  one child per item of a list, in parallel
A failed call leaves "error: ..." in its slot. A sub-prompt too large for the sub-model is refused."""

GUIDE = """## Which level
Use the cheapest level that can do the job: L1 commands for finding and reading; code when you must \
compute over many pieces; delegation when the meaning of many chunks matters."""

FINISH = """When you know the answer, reply with the final command. Text that is not a command or a code \
block is ignored: writing an answer in prose does not end the run."""


def _section(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "PROMPT", "")).strip()
    except ImportError as e:
        log.debug("no prompt section from %s: %s", module, e)
        return ""


def system_prompt(levels: tuple[str, ...], code: Any = None) -> str:
    """The system prompt for these levels; ``code`` (the ``[code]`` settings) gives the time
    limits per code block the L2/L3 sections state (defaults when None)."""
    from .config import CodeSettings

    code = code if code is not None else CodeSettings()
    parts = [INTRO, L1]  # L1 commands are always understood; policy still refuses them if not allowed
    parts.append(RECIPES + ("\n" + RECIPES_L4 if "l4" in levels else ""))
    if "l2" in levels:
        parts.append(_section("contextbox.levels.sandbox").replace("<L2_TIME_S>", f"{code.l2_time_limit_s:g}"))
    if "l3" in levels:
        native = _section("contextbox.levels.native").replace("<L3_TIME_S>", f"{code.l3_time_limit_s:g}")
        if "l2" in levels:  # ```repl goes to the sandbox then: native code needs its own fence
            native = native.replace("code in ```repl blocks runs",
                                    "code in ```native blocks (not ```repl, which is the L2 sandbox) runs", 1)
        parts.append(native)
    if "l4" in levels:
        parts.append(L4)
    if len(levels) > 1:
        parts.append(GUIDE)
    parts.append(FINISH)
    return "\n\n".join(p for p in parts if p)


def first_user_message(question: str, context: Context, preview_chars: int = 300) -> str:
    return (
        f"Question: {question}\n\n"
        f"The context box:\n{context.describe(preview_chars=preview_chars)}\n\n"
        "Start by looking at the context. Reply with your first command."
    )


def summarize_output(text: str, width: int = 160) -> str:
    """One line per action output of an old turn (history compaction)."""
    out = []
    for part in text.split("\n\n"):
        lines = [ln for ln in part.split("\n") if ln.strip()]
        if not lines:
            continue
        head = " ".join(lines[:2]) if lines[0].rstrip().endswith("→") else lines[0]
        head = head if len(head) <= width else head[: width - 1] + "…"
        more = f" [compacted: {len(lines) - 2} more lines]" if len(lines) > 2 else ""
        out.append(head + more)
    return "\n".join(out) or "[compacted]"


LAST_TURN = "This is your last turn: answer now with the final command, using what you have found."

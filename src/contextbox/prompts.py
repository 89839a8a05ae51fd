"""System prompt and turn messages. Only the allowed levels are described."""

from __future__ import annotations

import importlib
import logging

from .context import Context

log = logging.getLogger("contextbox")

INTRO = """You answer a question about a context that is far too large to show you. It is stored \
in a context box; you see only its size and a short preview. You explore it with tools, one \
step per reply, and you see each step's output before your next reply. Work in small steps: \
search for distinctive words, read the lines around the hits, then answer. Never guess: an \
answer must come from what you read."""

L1 = """## L1 commands (cheapest: use them first)
Reply with ONE JSON object (or a JSON array of them) with an "op" field, optionally in a ```json fence.
- {"op": "find", "text": "...", "case_sensitive": false, "max": 50}   literal search: hits with line numbers and offsets
- {"op": "regex", "pattern": "...", "flags": "i", "max": 50}        Python re search: hits with groups
- {"op": "lines", "start": LINE, "end": LINE + 40}                   read lines [start, end), 0-based
- {"op": "slice", "start": OFFSET, "end": OFFSET + 2000}             read characters [start, end)
- {"op": "count", "pattern": "..."}  or  {"op": "count", "what": "lines|chars|words"}
- {"op": "chunk", "size": 20000, "overlap": 0}   {"op": "split", "delimiter": "..."}
- {"op": "set", "name": "x", "value": ...}  {"op": "get", "name": "x"}  {"op": "print", "value": "..."}
- {"op": "final", "answer": "..."}   or   {"op": "final_var", "name": "x"}   ends the run with your answer
Every command takes "store": "name" (keep its full result in a variable) and "on": "name" (work on a
variable, or one item "name[2]", instead of the context). A "thought" field is allowed and ignored.
Outputs are cut to a maximum length; the note says how to see more.
A good plan: find a distinctive word of the question; each hit shows its whole line; read around a
hit with lines if needed; answer with final, copying the exact words from the text."""

L4 = """## L4 delegation (sub-models read for you; every call costs tokens)
- {"op": "llm_query", "prompt": "...", "on": "var"}  ask a sub-model once; "on" appends the variable's text
- {"op": "llm_map", "prompt": "...", "on": "var", "chunk_size": 20000}  split the variable (or, without "on",
  the whole context) into chunks and ask the prompt about every chunk in parallel; the list of answers is
  stored in "store" (default "answers"): read one with {"op": "get", "name": "answers[3]"}
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


def system_prompt(levels: tuple[str, ...]) -> str:
    parts = [INTRO, L1]  # L1 commands are always understood; policy still refuses them if not allowed
    if "l2" in levels:
        parts.append(_section("contextbox.sandbox"))
    if "l3" in levels:
        parts.append(_section("contextbox.native"))
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


LAST_TURN = "This is your last turn: answer now with the final command, using what you have found."

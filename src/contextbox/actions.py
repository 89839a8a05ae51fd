"""Turning a model reply into actions.

A reply may hold one L1 command (a JSON object with ``op``) or an array of them, bare or in
a ```json fence, and/or code cells in ```repl / ```python fences (``native`` fences go to
L3). Only the first JSON command unit is taken; everything else that looks like a command,
tool output or an answer in prose is ignored — and the model is told so.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .errors import CommandError
from .executors import Action

L4_OPS = {"llm_query", "llm_map", "rlm_query", "rlm_query_batched", "llm_query_batched"}
CODE_LANGS = {"repl", "python", "py", "python3"}
NATIVE_LANGS = {"native", "python-native", "l3"}
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class ParsedReply:
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # told to the model with the outputs
    error: str | None = None  # the reply could not be understood at all


def canonical(cmd: dict) -> str:
    """A command's identity for spotting repeats (``thought`` and ``store`` don't count)."""
    return json.dumps({k: v for k, v in cmd.items() if k not in ("thought", "store")}, sort_keys=True,
                      ensure_ascii=False)


def _command_actions(obj: object) -> list[Action]:
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise CommandError("empty command array; send one JSON command object")
    out = []
    for item in items:
        if not isinstance(item, dict) or "op" not in item:
            raise CommandError('each command must be a JSON object with an "op" field, e.g. {"op": "find", "text": "..."}')
        op = str(item["op"])
        level = "l4" if op in L4_OPS else "l1"
        out.append(Action("command", level, op, item, canonical(item)))
    return out


def _first_json(text: str) -> tuple[object, int, int] | None:
    """The first JSON object/array in free text: (value, start, end)."""
    dec = json.JSONDecoder()
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return None
        s = min(starts)
        try:
            val, end = dec.raw_decode(text, s)
        except json.JSONDecodeError:
            i = s + 1
            continue
        if isinstance(val, dict) and "op" in val or isinstance(val, list) and val and all(
            isinstance(v, dict) and "op" in v for v in val
        ):
            return val, s, end
        i = s + 1


def _json_error(text: str) -> str | None:
    """If the reply tried to send JSON but it does not parse, say where."""
    for s in (text.find("{"), text.find("[")):
        if s < 0:
            continue
        try:
            json.JSONDecoder().raw_decode(text, s)
        except json.JSONDecodeError as e:
            if '"op"' in text[s:]:
                return f"your command is not valid JSON ({e.msg} at character {e.pos - s}); send exactly one JSON object"
    return None


def parse_reply(text: str, levels: tuple[str, ...] = ("l1",)) -> ParsedReply:
    """Split a reply into actions, in order. Never raises."""
    out = ParsedReply()
    code_level = "l2" if "l2" in levels or "l3" not in levels else "l3"
    took_json = False
    ignored = 0
    outside: list[str] = []
    pos = 0
    for m in _FENCE.finditer(text):
        outside.append(text[pos : m.start()])
        pos = m.end()
        lang, body = m.group(1).lower(), m.group(2)
        if lang in CODE_LANGS or lang in NATIVE_LANGS:
            if body.strip():
                level = "l3" if lang in NATIVE_LANGS else code_level
                out.actions.append(Action("code", level, "code", {"code": body, "lang": lang}, body.strip()))
            continue
        if lang in ("json", "") or body.lstrip()[:1] in "{[":
            found = _first_json(body)
            if found is None:
                if not took_json and out.error is None:
                    out.error = _json_error(body) or "the ```json block holds no command object with an \"op\" field"
                continue
            if took_json:
                ignored += 1
                continue
            try:
                out.actions.extend(_command_actions(found[0]))
                took_json = True
            except CommandError as e:
                out.error = str(e)
    outside.append(text[pos:])
    if not took_json:
        rest = "".join(outside)
        found = _first_json(rest)
        if found is not None:
            try:
                out.actions.extend(_command_actions(found[0]))
                took_json = True
                out.error = None
                if _first_json(rest[found[2] :]) is not None:
                    ignored += 1
            except CommandError as e:
                out.error = str(e)
        elif not out.actions and out.error is None:
            out.error = _json_error(rest)
    elif _first_json("".join(outside)) is not None:
        ignored += 1
    if ignored:
        out.notes.append(
            f"note: only the first command in your reply was run; {ignored} more ignored. "
            "Send one command (or one JSON array of commands) per reply and wait for its output."
        )
    if not out.actions and out.error is None:
        out.error = "no command found in your reply"
    if out.actions:
        # a final in an array ends it: what follows could not have seen any output
        for i, a in enumerate(out.actions):
            if a.kind == "command" and a.op in ("final", "final_var") and i < len(out.actions) - 1:
                out.notes.append("note: commands after final were ignored.")
                del out.actions[i + 1 :]
                break
    return out

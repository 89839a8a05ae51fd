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

L4_OPS = {"llm_query", "llm_map", "rlm_query", "rlm_query_batched", "llm_query_batched", "examine"}
#: ParsedReply.error of a reply with no command in it at all (prose), as opposed to a malformed one
NO_COMMAND = "no command found in your reply"
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


def _decode_at(text: str, s: int) -> tuple[object, int] | None:
    try:
        return json.JSONDecoder().raw_decode(text, s)
    except (json.JSONDecodeError, RecursionError):  # deeply nested junk is just not a command
        return None


def _is_command_json(val: object) -> bool:
    if isinstance(val, dict):
        return "op" in val
    return isinstance(val, list) and bool(val) and all(isinstance(v, dict) and "op" in v for v in val)


def _first_json(text: str) -> tuple[object, int, int] | None:
    """The first JSON command (object or array) in free text: (value, start, end)."""
    i = 0
    while True:
        starts = [p for p in (text.find("{", i), text.find("[", i)) if p >= 0]
        if not starts:
            return None
        s = min(starts)
        got = _decode_at(text, s)
        if got is not None and _is_command_json(got[0]):
            return got[0], s, got[1]
        i = s + 1


def _json_error(text: str) -> str | None:
    """If the reply tried to send JSON but it does not parse, say where."""
    for s in (text.find("{"), text.find("[")):
        if s < 0 or '"op"' not in text[s:]:
            continue
        try:
            json.JSONDecoder().raw_decode(text, s)
        except json.JSONDecodeError as e:
            return f"your command is not valid JSON ({e.msg} at character {e.pos - s}); send exactly one JSON object"
        except RecursionError:
            return "your command is nested too deeply to read; send one flat JSON object"
    return None


def parse_reply(text: str, levels: tuple[str, ...] = ("l1",)) -> ParsedReply:
    """Split a reply into actions, in the order they appear. Never raises."""
    out = ParsedReply()
    code_level = "l2" if "l2" in levels or "l3" not in levels else "l3"
    took_json = False
    ignored = 0
    # the reply as ordered segments: ("text", s) outside fences, ("fence", lang, body) inside
    segments: list[tuple[str, ...]] = []
    pos = 0
    for m in _FENCE.finditer(text):
        segments.append(("text", text[pos : m.start()]))
        segments.append(("fence", m.group(1).lower(), m.group(2)))
        pos = m.end()
    segments.append(("text", text[pos:]))
    json_errors: list[str] = []

    def take_json(found: tuple[object, int, int] | None, where: str) -> None:
        nonlocal took_json, ignored
        if found is None:
            return
        if took_json:
            ignored += 1
            return
        try:
            out.actions.extend(_command_actions(found[0]))
            took_json = True
        except CommandError as e:
            json_errors.append(str(e))
        rest = where[found[2] :]
        if took_json and _first_json(rest) is not None:
            ignored += 1

    for seg in segments:
        if seg[0] == "text":
            take_json(_first_json(seg[1]), seg[1])
            if not took_json:
                err = _json_error(seg[1])
                if err:
                    json_errors.append(err)
            continue
        lang, body = seg[1], seg[2]
        if lang in CODE_LANGS or lang in NATIVE_LANGS:
            if body.strip():
                level = "l3" if lang in NATIVE_LANGS else code_level
                out.actions.append(Action("code", level, "code", {"code": body, "lang": lang}, body.strip()))
            continue
        if lang in ("json", "") or body.lstrip()[:1] in "{[":
            found = _first_json(body)
            if found is None:
                json_errors.append(_json_error(body) or 'the ```json block holds no command object with an "op" field')
            take_json(found, body)
    if ignored:
        out.notes.append(
            f"note: only the first command in your reply was run; {ignored} more ignored. "
            "Send one command (or one JSON array of commands) per reply and wait for its output."
        )
    if not out.actions:
        out.error = json_errors[0] if json_errors else NO_COMMAND
    else:
        # a final in an array ends it: what follows could not have seen any output
        for i, a in enumerate(out.actions):
            if a.kind == "command" and a.op in ("final", "final_var") and i < len(out.actions) - 1:
                out.notes.append("note: commands after final were ignored.")
                del out.actions[i + 1 :]
                break
    return out

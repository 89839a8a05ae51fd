"""L1: the JSON command language, run by the engine itself.

A command is a JSON object with an ``op`` field. Every command also accepts ``store``
(save the full result in a variable), ``on`` (work on a variable instead of the context;
``name[3]`` picks one item of a list) and ``thought`` (free text, ignored).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import host_limits, ops
from ..context import Context
from ..errors import CommandError
from ..executors import Action, ActionOutput, Session, register_executor
from ..table import Table

COMMON = ("store", "on", "thought")


@dataclass(frozen=True)
class Spec:
    required: dict[str, tuple[type, ...]]
    optional: dict[str, tuple[type, ...]]
    example: str
    #: ``on`` may also be a list of two variable names (join)
    on_list: bool = False


INT = (int,)
STR = (str,)
ANY = (object,)
SPECS: dict[str, Spec] = {
    "slice": Spec({}, {"start": INT, "end": INT}, '{"op": "slice", "start": 0, "end": 2000}'),
    "lines": Spec({}, {"start": INT, "end": INT}, '{"op": "lines", "start": 100, "end": 140}'),
    "find": Spec(
        {"text": STR}, {"case_sensitive": (bool,), "max": INT}, '{"op": "find", "text": "password"}'
    ),
    "regex": Spec(
        {"pattern": STR}, {"flags": (str, list), "max": INT}, '{"op": "regex", "pattern": "code is (\\\\w+)"}'
    ),
    "count": Spec(
        {},
        {"pattern": STR, "what": STR, "regex": (bool,), "case_sensitive": (bool,)},
        '{"op": "count", "pattern": "ERROR"} or {"op": "count", "what": "lines"}',
    ),
    "chunk": Spec({"size": INT}, {"overlap": INT}, '{"op": "chunk", "size": 20000, "store": "chunks"}'),
    "split": Spec({"delimiter": STR}, {}, '{"op": "split", "delimiter": "\\n\\n", "store": "parts"}'),
    "set": Spec({"name": STR, "value": ANY}, {}, '{"op": "set", "name": "notes", "value": "..."}'),
    "get": Spec({"name": STR}, {}, '{"op": "get", "name": "notes"}'),
    "print": Spec({"value": ANY}, {}, '{"op": "print", "value": "..."}'),
    "final": Spec({"answer": ANY}, {}, '{"op": "final", "answer": "..."}'),
    "final_var": Spec({"name": STR}, {}, '{"op": "final_var", "name": "answer"}'),
}
#: ops the engine treats as reading the context (for the first-turn rule and repetition)
READ_OPS = {"slice", "lines", "find", "regex", "count", "chunk", "split", "get"}

#: op -> handler(executor, cmd) for ops that other modules register (table ops, search, ...)
Handler = Callable[["CommandExecutor", dict[str, Any]], ActionOutput]
_HANDLERS: dict[str, Handler] = {}


def register_op(name: str, spec: Spec, handler: Handler, *, reads: bool = True) -> None:
    """Add an L1 op: its argument spec, its handler, and whether it reads the context or a variable.

    Built-in modules (``table_ops``, ``search``) register their ops exactly like a plugin would."""
    SPECS[name] = spec
    _HANDLERS[name] = handler
    if reads:
        READ_OPS.add(name)
_VAR_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(-?\d+)\])?$")


def validate(cmd: Any, known_ops: dict[str, Spec] | None = None) -> dict[str, Any]:
    """Check one command object; raise CommandError with a message the model can act on."""
    specs = known_ops or SPECS
    if not isinstance(cmd, dict):
        raise CommandError(f"a command must be a JSON object with an 'op' field, got {type(cmd).__name__}")
    op = cmd.get("op")
    if not isinstance(op, str) or not op:
        raise CommandError("the command has no 'op' field; e.g. " + SPECS["find"].example)
    if op not in specs:
        close = difflib.get_close_matches(op, list(specs), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CommandError(f"unknown op {op!r}.{hint} Ops are: {', '.join(specs)}")
    spec = specs[op]
    allowed = set(spec.required) | set(spec.optional) | set(COMMON) | {"op"}
    for key, val in cmd.items():
        if key not in allowed:
            args = ", ".join(list(spec.required) + list(spec.optional) + list(COMMON))
            raise CommandError(f"{op} has no argument {key!r}; its arguments are: {args}")
        types = spec.required.get(key) or spec.optional.get(key)
        if types and types != ANY and val is not None and not _is(val, types):
            want = " or ".join("integer" if t is int else t.__name__ for t in types)
            raise CommandError(f"{op}: {key!r} must be {want}, got {json.dumps(val)[:60]}")
    for name, types in spec.required.items():
        if name not in cmd or (cmd[name] is None and types != ANY):
            raise CommandError(f"{op} needs {name!r}; e.g. {spec.example}")
    on = cmd.get("on")
    if spec.on_list and isinstance(on, list):
        if len(on) != 2 or not all(isinstance(v, str) and _VAR_NAME.match(v) for v in on):
            raise CommandError(f"{op} 'on' takes two table variable names, e.g. {spec.example}")
    for key in ("store", "on"):
        if key == "on" and spec.on_list and isinstance(on, list):
            continue
        if key in cmd and cmd[key] is not None and not (isinstance(cmd[key], str) and _VAR_NAME.match(cmd[key])):
            raise CommandError(f"{key!r} must be a variable name like \"hits\" (or \"chunks[2]\" for 'on')")
    if "store" in cmd and cmd["store"] and "[" in cmd["store"]:
        raise CommandError("'store' takes a plain variable name, without [index]")
    return cmd


def _is(val: Any, types: tuple[type, ...]) -> bool:
    if isinstance(val, bool) and bool not in types:
        return False
    return isinstance(val, types)


def as_text(value: Any) -> str:
    """How a variable reads when a command works ``on`` it."""
    if isinstance(value, str):
        return value
    if isinstance(value, Table):
        return value.as_text()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, list) and all(isinstance(v, dict) and ("match" in v or "text" in v) for v in value):
        return "\n".join(str(v.get("match", v.get("text"))) for v in value)
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def cap(text: str, limit: int, hint: str = "") -> str:
    """Cut ``text`` to ``limit`` characters with an explicit note of what was cut."""
    if limit <= 0 or len(text) <= limit:
        return text
    more = len(text) - limit
    note = f"\n[output cut: showing {limit:,} of {len(text):,} characters, {more:,} more not shown. "
    note += hint or "Use 'store' to keep the full result, then read parts with slice/lines and 'on'.]"
    if not note.endswith("]"):
        note += "]"
    return text[:limit] + note


def _preview(s: str, n: int = 80) -> str:
    s = s if len(s) <= n else s[: n - 1] + "…"
    return json.dumps(s, ensure_ascii=False)


class CommandExecutor:
    """Runs L1 commands against the session's context and variables."""

    level = "l1"

    def __init__(self, session: Session):
        self.s = session

    def close(self) -> None:
        pass

    # -- helpers
    def _target(self, cmd: dict[str, Any]) -> tuple[str, Context | None]:
        on = cmd.get("on")
        if not on:
            return self.s.context.text, self.s.context
        m = _VAR_NAME.match(on)
        assert m
        name, index = m.group(1), m.group(2)
        if name not in self.s.variables:
            raise CommandError(f"no variable {name!r}; variables: {self._var_list()}")
        value = self.s.variables[name]
        if index is not None and isinstance(value, Table):
            i = int(index)
            if not -value.n <= i < value.n:
                raise CommandError(f"{name}[{i}] is out of range: the table {name!r} has {value.n} rows")
            value = value.row(i)
            if "text" in value and "match" not in value:
                value = value["text"]
        elif index is not None:
            if not isinstance(value, list):
                raise CommandError(f"{name!r} is a {type(value).__name__}, not a list; drop the [index]")
            i = int(index)
            if not -len(value) <= i < len(value):
                raise CommandError(f"{name}[{i}] is out of range: {name!r} has {len(value)} items")
            value = value[i]
            if isinstance(value, dict) and "text" in value and "match" not in value:
                value = value["text"]
        return as_text(value), None

    def _regex_timeout(self) -> float | None:
        """``regex_timeout_s`` from the run's config (None: the ops default)."""
        return getattr(self.s.config, "regex_timeout_s", None)

    def _var_list(self) -> str:
        return ", ".join(sorted(self.s.variables)) or "(none yet)"

    # -- dispatch
    def run(self, action: Action) -> ActionOutput:
        cmd = validate(action.args)
        op = cmd["op"]
        handler = _HANDLERS.get(op)
        # bounded like a code cell's helper call: [limits] on hits and result size, the run's timeout and cancel
        with host_limits.guarded(host_limits.guard_for(self.s, what=op)):
            out = handler(self, cmd) if handler is not None else getattr(self, "op_" + op)(cmd)
        auto = out.meta.pop("store_as", None)
        if (cmd.get("store") or auto) and op not in ("set", "final", "final_var"):
            name = cmd.get("store") or auto
            self.s.variables[name] = out.meta.pop("value")
            if isinstance(self.s.variables[name], Table):
                self.s.services.setdefault("table_order", []).append(name)
            # cap first so the "stored" note is never the part that gets cut
            hint = f"The full result is stored in {name!r}; read parts of it with slice/lines and \"on\"."
            out.text = cap(out.text, self.s.limits.max_output_chars, hint) + f"\n(stored in {name!r})"
            return out
        out.meta.pop("value", None)
        out.text = cap(out.text, self.s.limits.max_output_chars)
        return out

    # -- ops
    def op_slice(self, cmd: dict[str, Any]) -> ActionOutput:
        text, ctx = self._target(cmd)
        start, end = cmd.get("start") or 0, cmd.get("end")
        piece = ops.slice_text(text, start, end)
        a, b, _ = slice(start, end).indices(len(text))
        head = f"[characters {a:,}–{max(a, b):,} of {len(text):,}]\n"
        read = [[a, max(a, b)]] if ctx is not None else []
        return ActionOutput(head + piece, meta={"value": piece, "read": read})

    def op_lines(self, cmd: dict[str, Any]) -> ActionOutput:
        text, ctx = self._target(cmd)
        start, end = cmd.get("start") or 0, cmd.get("end")
        if ctx is not None:
            total = ctx.n_lines
            a, b, _ = slice(start, end).indices(total)
            b = max(a, b)
            so, eo = ctx.line_start(a), ctx.line_start(b)
            chunk = text[so:eo]
            got = chunk.split("\n") if chunk else []
            if chunk.endswith("\n"):
                got.pop()
            read = [[so, eo]]
        else:
            all_lines = ops.lines(text)
            total = len(all_lines)
            a, b, _ = slice(start, end).indices(total)
            b = max(a, b)
            got, read = all_lines[a:b], []
        width = len(str(max(b - 1, 0)))
        body = "\n".join(f"{a + i:>{width}}: {ln.rstrip(chr(13))}" for i, ln in enumerate(got))
        head = f"[lines {a}–{a + len(got) - 1 if got else a} of {total:,} (0-based)]\n"
        return ActionOutput(head + body, meta={"value": "\n".join(got), "read": read})

    def _hits_output(self, what: str, hits: list[dict[str, Any]], total: int, ctx: Context | None) -> ActionOutput:
        if not hits and not total:
            return ActionOutput(f"0 hits for {what}.", hits=0, meta={"value": []})
        shown = len(hits)
        lines = [f"{total:,} hit(s) for {what}" + (f", first {shown} listed:" if shown < total else ":")]
        for h in hits:
            where = f"line {h['line']}, offset {h['offset']}"
            if ctx is not None and len(ctx.documents) > 1:
                doc = ctx.document_at(h["offset"])
                where = f"{doc.path if doc else '?'}: " + where
            if "match" in h:
                g = f" groups={json.dumps(h['groups'], ensure_ascii=False)}" if h["groups"] else ""
                lines.append(f"- {where}: match {_preview(h['match'], 120)}{g}")
            else:
                lines.append(f"- {where}: {h['text']}")
        if shown < total:
            lines.append(f"({total - shown:,} more hits not listed; raise 'max' or narrow the search)")
        read = []
        if ctx is not None:
            for h in hits[:50]:
                read.append([max(0, h["offset"] - 100), h.get("end", h["offset"]) + 100])
        return ActionOutput("\n".join(lines), hits=total, meta={"value": hits, "read": read, "listed": shown})

    def op_find(self, cmd: dict[str, Any]) -> ActionOutput:
        text, ctx = self._target(cmd)
        cs = bool(cmd.get("case_sensitive", False))
        limit = cmd.get("max", 50)
        hits = ops.find(text, cmd["text"], case_sensitive=cs, max=limit)
        if ctx is not None:  # exact line numbers from the context's index
            for h in hits:
                h["line"] = ctx.line_of(h["offset"])
        total = len(hits) if limit is None or len(hits) < limit else ops.count_find(text, cmd["text"], cs)
        return self._hits_output(json.dumps(cmd["text"], ensure_ascii=False), hits, total, ctx)

    def op_regex(self, cmd: dict[str, Any]) -> ActionOutput:
        text, ctx = self._target(cmd)
        limit = cmd.get("max", 50)
        flags = cmd.get("flags", "")
        hits = ops.regex(text, cmd["pattern"], flags, max=limit, timeout_s=self._regex_timeout())
        total = len(hits)
        if limit is not None and len(hits) >= limit:
            total = ops.count_regex(text, cmd["pattern"], flags, timeout_s=self._regex_timeout())
        return self._hits_output(f"/{cmd['pattern']}/", hits, total, ctx)

    def op_count(self, cmd: dict[str, Any]) -> ActionOutput:
        text, _ = self._target(cmd)
        pattern, what = cmd.get("pattern"), cmd.get("what")
        if pattern is not None and cmd.get("regex"):  # a regex is case-sensitive unless told otherwise
            flags = "" if cmd.get("case_sensitive", True) else "i"
            n: Any = ops.count_regex(text, pattern, flags, timeout_s=self._regex_timeout())
        else:  # a literal ignores case unless told otherwise, as find does
            n = ops.count(text, pattern, what, case_sensitive=bool(cmd.get("case_sensitive", False)))
        if isinstance(n, dict):
            return ActionOutput(", ".join(f"{k}: {v:,}" for k, v in n.items()), meta={"value": n})
        label = f"{json.dumps(pattern, ensure_ascii=False)}" if pattern is not None else str(what)
        return ActionOutput(f"count of {label}: {n}", hits=n if pattern is not None else None, meta={"value": n})

    def _pieces_output(self, pieces: list[str], what: str) -> ActionOutput:
        lines = [f"{len(pieces):,} {what}"]
        for i, p in enumerate(pieces[:10]):
            lines.append(f"[{i}] ({len(p):,} chars): {_preview(p)}")
        if len(pieces) > 10:
            lines.append(f"… {len(pieces) - 10:,} more")
        return ActionOutput("\n".join(lines), meta={"value": pieces})

    def op_chunk(self, cmd: dict[str, Any]) -> ActionOutput:
        text, _ = self._target(cmd)
        size, overlap = cmd["size"], cmd.get("overlap") or 0
        pieces = ops.chunk(text, size, overlap)
        out = self._pieces_output(pieces, f"chunk(s) of ≤ {size:,} characters (overlap {overlap:,})")
        if not cmd.get("store"):
            out.text += "\n(add \"store\": NAME to keep them, then read one with \"on\": \"NAME[i]\")"
        return out

    def op_split(self, cmd: dict[str, Any]) -> ActionOutput:
        text, _ = self._target(cmd)
        pieces = ops.split(text, cmd["delimiter"])
        return self._pieces_output(pieces, "piece(s)")

    def op_set(self, cmd: dict[str, Any]) -> ActionOutput:
        name = cmd["name"]
        if not _VAR_NAME.match(name) or "[" in name:
            raise CommandError("set 'name' must be a plain variable name like \"notes\"")
        self.s.variables[name] = cmd["value"]
        return ActionOutput(f"{name} = {_preview(as_text(cmd['value']), 200)}")

    def op_get(self, cmd: dict[str, Any]) -> ActionOutput:
        name = cmd["name"]
        m = _VAR_NAME.match(name)
        if not m:
            raise CommandError("get 'name' must be a variable name like \"hits\" or \"chunks[2]\"")
        whole = self.s.variables.get(m.group(1))
        if m.group(2) is None and isinstance(whole, Table):
            return ActionOutput(f"{name}: {whole.render()}", meta={"value": whole})
        text, _ = self._target({"on": name})
        value = self.s.variables[m.group(1)]
        if m.group(2) is not None:
            value = value[int(m.group(2))]  # _target checked the index
        kind = type(value).__name__ + (f" of {len(value)} items" if isinstance(value, (list, dict)) else "")
        return ActionOutput(f"{name} ({kind}):\n{text}", meta={"value": value})

    def op_print(self, cmd: dict[str, Any]) -> ActionOutput:
        value = cmd["value"]
        return ActionOutput(as_text(value), meta={"value": value})

    def op_final(self, cmd: dict[str, Any]) -> ActionOutput:
        answer = host_limits.check_answer(as_text(cmd["answer"]).strip(), host_limits.max_answer_chars(self.s))
        if not answer:
            raise CommandError("final needs a non-empty 'answer'")
        return ActionOutput(f"final answer: {answer}", final=answer)

    def op_final_var(self, cmd: dict[str, Any]) -> ActionOutput:
        name = cmd["name"]
        if name not in self.s.variables:
            raise CommandError(f"final_var: no variable {name!r}; variables: {self._var_list()}")
        value = self.s.variables[name]
        if not answer_sized(value):
            size = f"{len(value):,} rows" if isinstance(value, (Table, list)) else f"{len(as_text(value)):,} characters"
            raise CommandError(f"final_var: {name!r} holds {size}, too much for an answer; answer with final and "
                               "the value you found, or final_var a small result (from count_by, top or stats)")
        answer = as_text(value).strip()
        if not answer:
            raise CommandError(f"final_var: variable {name!r} is empty")
        return ActionOutput(f"final answer: {answer}", final=answer)


#: the largest variable final_var will turn into an answer
MAX_ANSWER_ROWS = 1000
MAX_ANSWER_CHARS = 50_000


def answer_sized(value: Any) -> bool:
    """Whether a variable is small enough to be an answer (not a whole table of a log)."""
    if isinstance(value, (Table, list, dict)) and len(value) > MAX_ANSWER_ROWS:
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ANSWER_CHARS
    return isinstance(value, (int, float, bool)) or len(as_text(value)) <= MAX_ANSWER_CHARS


def latest_table(session: Session) -> str | None:
    """The most recently stored variable that still holds a table."""
    for name in reversed(session.services.get("table_order", [])):
        if isinstance(session.variables.get(name), Table):
            return name
    return None


def input_vars(cmd: dict[str, Any], session: Session) -> list[str]:
    """The variables a command reads (for telling a repeated action from one on changed data)."""
    on = cmd.get("on") or (cmd.get("name") if cmd.get("op") == "get" else None)
    if isinstance(on, list):
        return [str(v).partition("[")[0] for v in on]
    if on:
        return [str(on).partition("[")[0]]
    if cmd.get("op") in TABLE_INPUT_OPS:
        name = latest_table(session)
        return [name] if name else []
    return []


#: ops that work on the most recent table when 'on' is not given
TABLE_INPUT_OPS: set[str] = set()

register_executor("l1", CommandExecutor)

# registering modules: the "search" op, the table ops, the case route's "suspects" and "weigh"
from .. import case_route, table_commands  # noqa: E402,F401,I001
from .. import search as _search  # noqa: E402,F401

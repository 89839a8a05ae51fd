"""The JSON schema of one L1 (and L4) command, for constrained decoding.

Each command is one branch of an ``anyOf`` whose first property is ``thought``, so a small
model writes a short plan before it commits to an op.
"""

from __future__ import annotations

from typing import Any

_S = {"type": "string", "maxLength": 1000}
_I = {"type": "integer"}
_B = {"type": "boolean"}
_THOUGHT = {"type": "string", "maxLength": 160}

_NAME = {"type": "string", "pattern": "^[a-z_][a-z0-9_]{0,15}$"}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 200}

#: op -> (required args, optional args)
L1_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "search": ({"query": _TEXT}, {"unit": {"enum": ["line", "paragraph", "chunk", "document"]}}),
    "find": ({"text": _TEXT}, {"case_sensitive": _B}),
    "regex": ({"pattern": _TEXT}, {"flags": _S}),
    "lines": ({"start": _I, "end": _I}, {}),
    "slice": ({"start": _I, "end": _I}, {}),
    "count": ({"pattern": _TEXT}, {"case_sensitive": _B}),
    "records": ({"store": _NAME}, {"by": {"type": "string", "minLength": 1, "maxLength": 40}}),
    "extract": ({"store": _NAME}, {"pattern": _TEXT}),
    "final": ({"answer": {"type": "string", "minLength": 1, "maxLength": 400}}, {}),
}
#: table ops: their "on" and "field" are filled in per turn from the tables that exist
TABLE_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "count_by": ({"on": _S, "field": _S}, {}),
    "top": ({"on": _S, "field": _S}, {"k": {"type": "integer", "minimum": 1, "maximum": 100}}),
    "unique": ({"on": _S, "field": _S}, {}),
    "stats": ({"on": _S, "field": _S}, {}),
    "word_counts": ({"on": _S, "field": _S}, {"stop": {"type": "array", "items": {"type": "string", "maxLength": 30},
                                                        "maxItems": 40}}),
    "sort": ({"on": _S, "field": _S}, {"desc": _B}),
    "filter": ({"on": _S, "where": {"type": "object"}}, {"store": _NAME}),
    "pairs": ({"on": _S, "field": _S}, {"at_least": {"type": "integer", "minimum": 1, "maximum": 10_000},
                                        "store": _NAME}),
}
L4_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llm_query": ({"prompt": _S}, {"on": _S, "store": _S}),
    "llm_map": ({"prompt": _S}, {"on": _S, "store": _S, "chunk_size": {"type": "integer", "minimum": 1},
                                 "choices": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 40},
                                             "minItems": 1, "maxItems": 20},
                                 "per_call": {"type": "integer", "minimum": 1, "maximum": 200},
                                 "field": {"type": "string", "minLength": 1, "maxLength": 40}}),
    "llm_query_batched": ({"prompts": {"type": "array", "items": _S, "minItems": 1}}, {"on": _S, "store": _S}),
    "rlm_query": ({"prompt": _S}, {"on": _S, "store": _S}),
}


def _tables(variables: dict[str, Any] | None) -> dict[str, list[str]]:
    """Table variables and their columns (for the per-turn enums)."""
    from .table import Table

    return {k: v.columns for k, v in (variables or {}).items() if isinstance(v, Table) and v.columns}


def _dynamic_shapes(variables: dict[str, Any] | None,
                    fields: list[str] | None = None) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Shapes that depend on the run's variables: table ops over existing tables, final_var over names.
    ``fields``: the columns the aggregating ops may name (the engine's column choice), in that order."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    tables = _tables(variables)
    if tables:
        on = {"enum": list(tables)}
        columns: list[str] = []
        for cols in tables.values():
            columns += [c for c in cols if c not in columns]
        field = {"enum": columns}
        chosen = [c for c in fields or () if c in columns]
        agg_field = {"enum": chosen} if chosen else field
        for op, (req, opt) in TABLE_SHAPES.items():
            f = field if op in ("filter", "sort", "pairs") else agg_field
            req = {k: on if k == "on" else f if k == "field" else v for k, v in req.items()}
            out[op] = (req, opt)
        if len(tables) >= 1:
            out["join"] = ({"on": {"type": "array", "items": on, "minItems": 2, "maxItems": 2}},
                           {"key": field, "pairs": _B})
    from .levels.commands import answer_sized

    small = sorted(k for k, v in (variables or {}).items() if answer_sized(v))
    if small:
        out["final_var"] = ({"name": {"enum": small}}, {})
    return out


def _branch(op: str, required: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {"thought": _THOUGHT, "op": {"const": op}}
    props.update(required)
    props.update(optional)
    return {
        "type": "object",
        "properties": props,
        "required": ["thought", "op", *required],
        "additionalProperties": False,
    }


#: what a constrained model may do before it has looked at the context: search it
FIRST_TURN_OPS = ("search", "find", "regex", "count", "records", "extract")
#: the table route: what a constrained model may do for a counting/ranking question over structured
#: lines (logs, records) — first make a table, then aggregate it; no reading of samples
TABLE_FIRST_OPS = ("extract", "count")
TABLE_ROUTE_OPS = ("extract", "records", "count", "count_by", "top", "unique", "stats", "filter", "sort", "join",
                   "pairs", "word_counts", "llm_map", "final", "final_var")
#: what a constrained model may do when it must answer now
FINAL_OPS = ("final", "final_var")


def command_schema(levels: tuple[str, ...] = ("l1",), *, first_turn: bool = False,
                   only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                   verify: bool = False, variables: dict[str, Any] | None = None,
                   table_route: bool | tuple[tuple[str, ...], tuple[str, ...]] = False,
                   fields: list[str] | None = None,
                   overrides: dict[str, dict[str, Any]] | None = None,
                   answer_schema: dict[str, Any] | None = None,
                   extra_shapes: dict[str, tuple[dict[str, Any], dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The schema of one command.

    ``first_turn``: only a search (look before answering). ``only``: just these ops (e.g. FINAL_OPS
    when the model must answer now). ``exclude``: every op but these (e.g. an op the model just
    repeated). ``verify``: each branch starts with ``answers_question`` (a boolean the model sets
    about its previous answer before it chooses to resend it or look further). ``variables``: the
    run's variables; table ops appear once a table exists, with ``on``/``field`` limited to the
    existing tables and their columns, and ``final_var`` to existing names; with l4 and a table,
    ``llm_map`` is the typed map over it. ``table_route``: only the table ops (True: TABLE_FIRST_OPS on the first turn, then
    TABLE_ROUTE_OPS; or a pair (first-turn ops, later ops)). ``fields``: the columns the aggregating
    ops (count_by, top, unique, stats, word_counts) may name, best first (see column_hints).
    ``overrides``: op -> {arg: schema}, a required argument's schema fixed by the engine (e.g. the stop
    words a question lists as ``word_counts``' ``stop``), or ``None``: the argument is not offered. ``answer_schema``: the JSON schema of a typed
    answer (``answer_type=``): ``final``'s ``answer`` must follow it (its ``$defs`` move to the root).
    ``extra_shapes``: ops a route adds for this turn (e.g. the case route's ``suspects``/``examine``/``weigh``).
    """
    shapes = dict(L1_SHAPES)
    shapes.update(_dynamic_shapes(variables, fields))
    if "l4" in levels:
        shapes.update(L4_SHAPES)
        tables = _tables(variables)
        if tables:  # a label per row of a table: the typed map
            shapes["llm_map"] = ({"on": {"enum": list(tables)}, "prompt": _S,
                                  "choices": L4_SHAPES["llm_map"][1]["choices"], "store": _NAME},
                                 {"per_call": {"type": "integer", "minimum": 1, "maximum": 50}})
    shapes.update(extra_shapes or {})
    if table_route:
        first, later = table_route if isinstance(table_route, tuple) else (TABLE_FIRST_OPS, TABLE_ROUTE_OPS)
        keep = first if first_turn else later
        if _tables(variables):  # a table exists: aggregate it, don't make it again
            keep = tuple(op for op in keep if op not in ("extract", "records")) or keep
        shapes = {op: shapes[op] for op in keep if op in shapes}
    elif first_turn:
        shapes = {op: shapes[op] for op in FIRST_TURN_OPS if op in shapes}
    if only is not None:
        kept = {op: shapes[op] for op in only if op in shapes}
        shapes = kept or {"final": L1_SHAPES["final"]}
    for op in exclude:
        if len(shapes) > 1 and op not in FINAL_OPS:
            shapes.pop(op, None)
    for op, args in (overrides or {}).items():
        if op in shapes:
            req, opt = shapes[op]
            req = {k: v for k, v in {**req, **args}.items() if v is not None}  # None: the arg is not offered
            shapes[op] = (req, {k: v for k, v in opt.items() if k not in args})
    defs: dict[str, Any] = {}
    if answer_schema is not None and "final" in shapes:
        from .typed_answer import hoist_defs

        answer, defs = hoist_defs(answer_schema)
        shapes["final"] = ({"answer": answer}, {})
    branches = [_branch(op, req, opt) for op, (req, opt) in shapes.items()]
    if verify:
        for b in branches:
            b["properties"] = {"thought": _THOUGHT, "answers_question": _B,
                               **{k: v for k, v in b["properties"].items() if k != "thought"}}
            b["required"] = ["thought", "answers_question", *b["required"][1:]]
    return {"anyOf": branches, **({"$defs": defs} if defs else {})}


def constrainable(levels: tuple[str, ...]) -> bool:
    """Constrained decoding applies when the run allows no code level."""
    return not ({"l2", "l3"} & set(levels))

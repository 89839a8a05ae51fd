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

#: op -> (required args, optional args)
L1_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "find": ({"text": {"type": "string", "minLength": 1, "maxLength": 200}}, {"case_sensitive": _B}),
    "regex": ({"pattern": {"type": "string", "minLength": 1, "maxLength": 200}}, {"flags": _S}),
    "lines": ({"start": _I, "end": _I}, {}),
    "slice": ({"start": _I, "end": _I}, {}),
    "count": ({"pattern": {"type": "string", "minLength": 1, "maxLength": 200}}, {}),
    "final": ({"answer": {"type": "string", "minLength": 1, "maxLength": 400}}, {}),
}
L4_SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llm_query": ({"prompt": _S}, {"on": _S, "store": _S}),
    "llm_map": ({"prompt": _S}, {"on": _S, "store": _S, "chunk_size": {"type": "integer", "minimum": 1}}),
    "llm_query_batched": ({"prompts": {"type": "array", "items": _S, "minItems": 1}}, {"on": _S, "store": _S}),
    "rlm_query": ({"prompt": _S}, {"on": _S, "store": _S}),
}


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
FIRST_TURN_OPS = ("find", "regex")


def command_schema(levels: tuple[str, ...] = ("l1",), *, first_turn: bool = False) -> dict[str, Any]:
    """The schema of one command. On the first turn only a search is allowed (look before answering)."""
    shapes = dict(L1_SHAPES)
    if "l4" in levels:
        shapes.update(L4_SHAPES)
    if first_turn:
        shapes = {op: shapes[op] for op in FIRST_TURN_OPS}
    return {"anyOf": [_branch(op, req, opt) for op, (req, opt) in shapes.items()]}


def constrainable(levels: tuple[str, ...]) -> bool:
    """Constrained decoding applies when the run allows no code level."""
    return not ({"l2", "l3"} & set(levels))

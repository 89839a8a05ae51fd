"""Typed answers: ``rlm.run(q, ctx, answer_type=MyModel)``.

An :class:`AnswerSpec` wraps the requested type (a pydantic model, a dataclass, ``list[int]``…: anything a
pydantic ``TypeAdapter`` accepts). It gives

* the JSON schema the final answer must follow — told to the model in the first message, and carried by the
  ``final`` branch of the constrained command schema (the local model, constrained scripted models);
* :meth:`AnswerSpec.check`: the final answer (a JSON text, or a Python literal from a code cell's ``FINAL``)
  validated against the type. A valid answer becomes the parsed object (``RunResult.parsed``) and the run's
  answer becomes its canonical JSON; an invalid one is refused with a message the model can act on, and the
  run goes on so the model can send a corrected answer.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from .errors import UsageError

#: how many validation errors the model is shown at most
MAX_ERRORS = 5


class AnswerRejected(Exception):
    """The final answer does not match the answer type; the message is for the model."""


class AnswerSpec:
    def __init__(self, answer_type: Any):
        try:
            from pydantic import TypeAdapter
        except ImportError:  # pragma: no cover - pydantic comes with pydantic-monty and fastapi
            raise UsageError("answer_type needs pydantic: pip install pydantic") from None
        if answer_type is None or isinstance(answer_type, (str, int, float, bool, dict, list)):
            raise UsageError(f"answer_type must be a type (e.g. a pydantic model class), not {answer_type!r}")
        try:
            self.adapter: Any = TypeAdapter(answer_type)
            self.schema: dict[str, Any] = self.adapter.json_schema()
        except Exception as e:  # noqa: BLE001 - pydantic raises several kinds for unusable types
            raise UsageError(f"answer_type {getattr(answer_type, '__name__', answer_type)!s} cannot be used "
                             f"as an answer type: {str(e).splitlines()[0]}") from None
        self.type = answer_type
        self.name = getattr(answer_type, "__name__", None) or str(answer_type)

    def prompt(self) -> str:
        """The instruction added to the first message."""
        schema = json.dumps(self.schema, ensure_ascii=False, separators=(",", ":"))
        return ("Answer format: the final answer must be JSON that matches this JSON schema (send it as final's "
                f"answer, e.g. {{\"op\": \"final\", \"answer\": {{...}}}}; in code, FINAL(a dict)): {schema}")

    def check(self, final: str) -> tuple[Any, str]:
        """``(parsed object, canonical JSON)``; :class:`AnswerRejected` when ``final`` does not match."""
        from pydantic import ValidationError

        text = final.strip()
        try:
            value = self.adapter.validate_json(text)
        except ValidationError as first:
            value = None
            err: ValidationError | None = first
            try:  # a code cell's FINAL(dict) arrives as the dict's Python repr
                literal = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                literal = _MISSING
            if literal is not _MISSING and not isinstance(literal, str):
                try:
                    value, err = self.adapter.validate_python(literal), None
                except ValidationError as second:
                    err = second
            if err is not None:
                raise AnswerRejected(self._explain(err, text)) from None
        return value, self.adapter.dump_json(value).decode("utf-8")

    def _explain(self, err: Any, text: str) -> str:
        errors = err.errors(include_url=False)
        if any(e.get("type") == "json_invalid" for e in errors):
            why = "it is not JSON"
        else:
            items = []
            for e in errors[:MAX_ERRORS]:
                loc = ".".join(str(p) for p in e.get("loc", ())) or "(the answer)"
                items.append(f"{loc}: {e.get('msg')}")
            more = f" (+{len(errors) - MAX_ERRORS} more)" if len(errors) > MAX_ERRORS else ""
            why = "; ".join(items) + more
        return (f"final answer refused: it must be JSON matching the {self.name} schema, but {why}. "
                "Send final again with a corrected answer.")


_MISSING = object()


def hoist_defs(schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(schema without $defs, $defs)``: nested in a command branch, ``#/$defs/..`` must point at the root."""
    s = dict(schema)
    defs = s.pop("$defs", None) or {}
    return s, defs

"""Typed ``llm_map``: records in, one validated answer per record out.

``{"op": "llm_map", "prompt": "...", "choices": [...]}`` (or ``"schema": {...}``) turns the
records — the rows of a table, the items of a list, or the non-empty lines of a text or of
the context — into one answer each:

* records go ``per_call`` at a time into one sub-call whose prompt is the **instruction
  first** (task, labels or schema, output format: identical for every call of the map, so a
  local model's prefix cache evaluates it once) and the **records last**;
* the sub-call is asked for a JSON array of exactly that many items, with
  ``response_schema`` for constrained decoding where the provider can (an array with
  ``minItems = maxItems = n`` whose items are the labels' enum or the schema);
* the answer is validated — a fenced block, a ``{"items": [...]}`` wrapper and labels in
  another case are accepted; a wrong length or invalid items get one retry (the note saying
  what was wrong goes after the records); after that the call's records are marked failed,
  with the reason, never dropped: a right-length answer keeps its valid items.

The result is aligned with the records: value ``None`` and a reason where a record failed.
:func:`run_map` does the work for both the L4 op and the code levels' ``llm_map``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CommandError, ContextboxError, RunStopped
from .table import Table

if TYPE_CHECKING:
    from .context import Context
    from .levels.delegation import Delegation

log = logging.getLogger("contextbox")

#: most records in one sub-call
MAX_PER_CALL = 200
#: records per sub-call when ``per_call`` is not given. Small models keep answers aligned
#: with records far better in short arrays (bench/bench_typed_map.py: the local 1.5B model
#: labels TREC questions 60% right at 10 a call, about 40% at 25); large models take more.
DEFAULT_PER_CALL = {"choices": 10, "schema": 10}
MAX_CHOICES = 200
#: the column holding why a record has no value (None where it has one)
ERROR_COLUMN = "map_error"
#: the rows an llm_map output shows
SHOWN_ROWS = 5

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.S)


# ---------------------------------------------------------------------- the answer type
class AnswerSpec:
    """What each record's answer must be: one of ``choices``, or JSON valid against ``schema``."""

    def __init__(self, choices: list[str] | None = None, schema: dict[str, Any] | None = None,
                 field: str | None = None):
        self.choices = choices
        self.schema = schema
        self.kind = "choices" if choices is not None else "schema"
        self._by_fold = {c.casefold(): c for c in choices or []}
        props = (schema or {}).get("properties")
        #: an object schema's properties, each its own output column
        self.properties: list[str] | None = (
            [str(p) for p in props] if (schema or {}).get("type") == "object" and isinstance(props, dict) and props
            else None)
        self.field = field or ("label" if self.kind == "choices" else "value")
        self._validator: Any = None
        if schema is not None:
            import jsonschema

            cls = jsonschema.validators.validator_for(schema)
            self._validator = cls(schema)

    @classmethod
    def parse(cls, choices: Any = None, schema: Any = None, field: Any = None, op: str = "llm_map") -> AnswerSpec:
        """Check the command's ``choices`` / ``schema`` / ``field``; a one-line CommandError if wrong."""
        if choices is not None and schema is not None:
            raise CommandError(f"{op} takes 'choices' (a list of labels) or 'schema' (a JSON Schema), not both")
        if choices is None and schema is None:
            raise CommandError(f"{op}: a typed map needs 'choices' or 'schema'")
        if field is not None and (not isinstance(field, str) or not field.strip()):
            raise CommandError(f"{op} 'field' must be a non-empty column name, got {json.dumps(field)[:60]}")
        if choices is not None:
            return cls(choices=_check_choices(choices, op), field=field)
        if not isinstance(schema, dict):
            raise CommandError(f"{op} 'schema' must be a JSON Schema object like "
                               f'{{"type": "integer"}}, not a {type(schema).__name__}')
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            raise CommandError(f"{op} 'schema' is not a valid JSON Schema: {_one_line(e.message)}") from None
        spec = cls(schema=schema, field=field)
        if spec.properties is not None and field is not None:
            raise CommandError(f"{op}: 'field' does not apply to an object schema: its properties "
                               f"({', '.join(spec.properties)}) name the columns")
        return spec

    # -- what the sub-model is told and constrained to
    @property
    def item_schema(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"type": "string", "enum": list(self.choices)}
        assert self.schema is not None
        return self.schema

    def array_schema(self, n: int) -> dict[str, Any]:
        """The whole answer of a sub-call of ``n`` records."""
        return {"type": "array", "items": self.item_schema, "minItems": n, "maxItems": n}

    def describe(self) -> str:
        """The output-format part of the instruction (the same for every call)."""
        if self.choices is not None:
            labels = ", ".join(self.choices)
            return (f"Give each record exactly one of these labels: {labels}.\n"
                    "Reply with only a JSON array of label strings, one per record, in record order.")
        return ("Give each record one JSON value matching this JSON Schema:\n"
                f"{json.dumps(self.schema, ensure_ascii=False)}\n"
                "Reply with only a JSON array of those values, one per record, in record order.")

    def max_tokens(self, n: int) -> int:
        """Room for an answer of ``n`` items (a grammar-constrained reply stops when complete)."""
        if self.choices is not None:
            per = max(len(c) for c in self.choices) // 2 + 8  # the label, quotes, comma, whitespace
            return n * per + 32
        return min(8192, n * 150 + 64)

    # -- checking answers
    def check(self, item: Any) -> tuple[Any, str | None]:
        """``(value, None)`` for a valid item (labels in their canonical spelling), else ``(None, why)``."""
        if self.choices is not None:
            if isinstance(item, str):
                label = self._by_fold.get(item.strip().strip("\"'`.").strip().casefold())
                if label is not None:
                    return label, None
            return None, f"{_short(item)} is not one of the labels"
        err = self._error(item)
        if err is None:
            return item, None
        loose = _loosen(item, self.schema or {})
        if loose is not item and self._error(loose) is None:
            return loose, None
        return None, f"{_short(item)} does not match the schema: {err}"

    def _error(self, item: Any) -> str | None:
        err = next(iter(self._validator.iter_errors(item)), None)
        return None if err is None else _one_line(err.message)

    def row(self, value: Any) -> dict[str, Any]:
        """The output columns for one value."""
        if self.properties is not None:
            obj = value if isinstance(value, dict) else {}
            return {p: obj.get(p) for p in self.properties}
        return {self.field: value}

    @property
    def columns(self) -> list[str]:
        return list(self.properties) if self.properties is not None else [self.field]


def _loosen(item: Any, schema: dict[str, Any], depth: int = 0) -> Any:
    """``item`` with harmless slips undone: JSON sent as a string (``"3"`` for 3), an enum label in
    another case; the same inside an object's properties. Returns ``item`` itself when nothing applies."""
    if isinstance(item, str):
        enum = schema.get("enum")
        if isinstance(enum, list):
            folded = [e for e in enum if isinstance(e, str) and e.casefold() == item.strip().casefold()]
            if len(folded) == 1:
                return folded[0]
        if schema.get("type") not in (None, "string"):
            try:
                return json.loads(item)
            except ValueError:
                return item
    if isinstance(item, dict) and depth < 2 and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        out = {k: _loosen(v, props[k], depth + 1) if isinstance(props.get(k), dict) else v for k, v in item.items()}
        return item if all(out[k] is item[k] for k in item) else out
    return item


def _check_choices(choices: Any, op: str) -> list[str]:
    if not isinstance(choices, list) or not choices:
        raise CommandError(f"{op} 'choices' must be a non-empty list of labels, e.g. [\"yes\", \"no\"]")
    for c in choices:
        if not isinstance(c, str):
            raise CommandError(f"{op} 'choices' must be strings; {json.dumps(c)[:40]} is a "
                               f"{type(c).__name__} (write it as a string label)")
        if not c.strip():
            raise CommandError(f"{op} 'choices' may not hold an empty label")
    folded = Counter(c.strip().casefold() for c in choices)
    dup = [c for c, k in folded.items() if k > 1]
    if dup:
        raise CommandError(f"{op} 'choices' repeats the label {dup[0]!r} (labels are matched ignoring case)")
    if len(choices) > MAX_CHOICES:
        raise CommandError(f"{op} takes at most {MAX_CHOICES} choices, got {len(choices)}")
    return [c.strip() for c in choices]


def check_per_call(per_call: Any, kind: str, op: str = "llm_map") -> int:
    if per_call is None:
        return DEFAULT_PER_CALL[kind]
    if not isinstance(per_call, int) or isinstance(per_call, bool) or not 1 <= per_call <= MAX_PER_CALL:
        raise CommandError(f"{op} 'per_call' must be a whole number from 1 to {MAX_PER_CALL} "
                           f"(records per sub-call), got {json.dumps(per_call)[:40]}")
    return per_call


def _one_line(s: str, n: int = 160) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _short(v: Any) -> str:
    return _one_line(json.dumps(v, ensure_ascii=False, default=str), 60)


# ---------------------------------------------------------------------- records
def lines_table(text: str, base_line: int = 0, doc: str | None = None) -> Table:
    """The non-empty lines of ``text``: columns ``text``, ``line`` (0-based) and ``doc`` if given."""
    texts: list[str] = []
    nums: list[int] = []
    for i, ln in enumerate(text.split("\n")):
        if ln.strip():
            texts.append(ln.rstrip("\r"))
            nums.append(base_line + i)
    cols: dict[str, list[Any]] = {"text": texts}
    if doc is not None:
        cols["doc"] = [doc] * len(texts)
    cols["line"] = nums
    return Table(cols)


def context_records(ctx: Context) -> Table:
    """The context's non-empty lines, each with its document and line number (headers skipped)."""
    parts = [lines_table(ctx.text[d.start:d.end], ctx.line_of(d.start), d.path) for d in ctx.documents]
    if not parts:
        return lines_table(ctx.text, 0, None)
    cols: dict[str, list[Any]] = {"text": [], "doc": [], "line": []}
    for t in parts:
        for k in cols:
            cols[k].extend(t.cols[k])
    return Table(cols)


def records_of(value: Any) -> Table:
    """A Table of records from a variable: a Table, a list (of str, of rows, of values) or a text."""
    if isinstance(value, Table):
        return value
    if isinstance(value, str):
        return lines_table(value)
    if isinstance(value, (list, tuple)):
        value = list(value)
        if all(isinstance(v, str) for v in value):
            return Table({"text": value})
        if all(isinstance(v, dict) for v in value):
            return Table.from_rows(value)
        return Table({"text": [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                               for v in value]})
    raise CommandError(f"llm_map maps over a table, a list or a text, not a {type(value).__name__}")


#: columns that say where a record is, not what it says: never sent to the sub-model
BOOKKEEPING = frozenset({"doc", "line", "map_error"})


def prose_columns(table: Table, sample: int = 200) -> list[str]:
    """The columns of free text (most values three words or more, not dates): what a record *says*,
    as opposed to its dates, numbers, ids and codes."""
    from .table_values import as_date

    out = []
    for c in table.columns:
        if c in BOOKKEEPING:
            continue
        vals = [v for v in table.cols[c][:sample] if v is not None]
        if vals and sum(isinstance(v, str) and len(v.split()) >= 3 and as_date(v) is None
                        for v in vals) >= 0.6 * len(vals):
            out.append(c)
    return out


def record_texts(table: Table, prose_only: bool = False) -> list[str]:
    """What the sub-model reads of each row: its ``text`` column, else the row rendered (without the
    bookkeeping columns ``doc``, ``line``, ``map_error``: file names and line numbers only distract).
    ``prose_only``: only the free-text columns when the row has some (see :func:`prose_columns`)."""
    if "text" in table.cols and all(isinstance(v, str) for v in table.cols["text"]):
        return list(table.cols["text"])
    keep = [c for c in table.columns if c not in BOOKKEEPING] or table.columns
    if prose_only:
        keep = prose_columns(table) or keep
        if len(keep) == 1:
            return [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                    for v in table.cols[keep[0]]]
    out = []
    for row in table:
        out.append("; ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)}"
                             for k, v in row.items() if k in keep))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])|\n+")


def with_definitions(task: str, spec: AnswerSpec, question: str | None) -> str:
    """The map's task, plus the sentences of the run's question that define the labels.

    A root model often passes the aggregate question itself as the map's prompt ("how many instances
    should be labelled 'numeric'?"): a small sub-model then gives every record that label, so such a
    prompt becomes a neutral labelling task. What each record needs is how the labels are told apart,
    which the question usually says ("description (a definition, reason or manner), entity (a thing,
    ...)"): the sentences naming two or more of the choices are added once, to the shared prefix."""
    if spec.choices is None or len(spec.choices) < 2:
        return task
    from .aids_table import aggregate_question

    def asks_aggregate(sent: str) -> bool:
        return sent.rstrip().endswith("?") and (
            aggregate_question(sent) or any(f"'{c}'" in sent or f'"{c}"' in sent for c in spec.choices))

    sentences = [sent for sent in _SENTENCE_END.split(task) if sent.strip()]
    kept = [sent for sent in sentences if not asks_aggregate(sent)]
    if len(kept) < len(sentences):
        # "how many instances should be labelled 'numeric'?" as the map's prompt makes a small sub-model
        # answer 'numeric' for every record: that question goes; what else the task says (how the labels
        # are told apart) stays, and a task that was only the question becomes a neutral labelling task
        task = " ".join(k.strip() for k in kept) if kept else "Give each record the one label that fits it best."
    if not question:
        return task
    defs = []
    for sent in _SENTENCE_END.split(question):
        sent = sent.strip()
        low = sent.casefold()
        if sum(re.search(rf"(?<!\w){re.escape(c.casefold())}(?!\w)", low) is not None for c in spec.choices) >= 2 \
                and sent not in task:
            defs.append(sent)
    if not defs:
        return task
    return (f"{task.strip()}\n\nDo not answer that question here: give each record its own label. How the labels "
            f"are told apart (from the user's question): {' '.join(defs)}")


# ---------------------------------------------------------------------- prompts and answers
def instruction(task: str, spec: AnswerSpec) -> str:
    """The shared head of every sub-call of one map."""
    return (f"{task.strip()}\n\n"
            "You get numbered records after this instruction. Answer for every record, in order.\n"
            f"{spec.describe()}\n\n")


def records_block(texts: Sequence[str]) -> str:
    """The part of a sub-call that varies: the records, then the count to answer."""
    n = len(texts)
    body = "\n".join(f"[{i + 1}] {t}" for i, t in enumerate(texts))
    return f"Records ({n}):\n{body}\n\nAnswer: a JSON array of exactly {n} item{'s' if n != 1 else ''}."


def retry_note(reason: str, n: int) -> str:
    return (f"\n\nYour previous answer was not accepted: {reason}. Answer again with only a JSON array of "
            f"exactly {n} items, one per record.")


def parse_array(text: str) -> tuple[list[Any] | None, str | None]:
    """The JSON array in a reply (bare, fenced, or wrapped in a one-key object), or why there is none."""
    t = (text or "").strip()
    m = _FENCE.search(t)
    if m:
        t = m.group(1).strip()
    try:
        data = json.loads(t)
    except ValueError:
        i, j = t.find("["), t.rfind("]")
        try:
            data = json.loads(t[i:j + 1]) if 0 <= i < j else None
        except ValueError:
            data = None
        if data is None:
            return None, f"the answer is not a JSON array: {_one_line(t, 80)!r}"
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        return None, f"the answer is a JSON {type(data).__name__}, not an array"
    return data, None


@dataclass
class Checked:
    """One answer checked against ``n`` records."""

    values: list[Any]
    errors: list[str | None]
    reason: str | None  # why the answer as a whole is not accepted (None: all items valid)

    @property
    def valid(self) -> int:
        return sum(e is None for e in self.errors)


def check_answer(text: str, n: int, spec: AnswerSpec) -> Checked:
    items, why = parse_array(text)
    if items is None:
        return Checked([None] * n, [why] * n, why)
    if len(items) != n:
        why = f"answered {len(items)} item{'s' if len(items) != 1 else ''} for {n} records"
        return Checked([None] * n, [why] * n, why)
    values, errors = [], []
    for item in items:
        v, e = spec.check(item)
        values.append(v)
        errors.append(e)
    bad = [i for i, e in enumerate(errors) if e is not None]
    reason = None
    if bad:
        reason = f"item {bad[0] + 1}: {errors[bad[0]]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    return Checked(values, errors, reason)


# ---------------------------------------------------------------------- running a map
@dataclass
class MapResult:
    """Per-record values (``None`` where failed) and reasons, plus what the map cost."""

    values: list[Any]
    errors: list[str | None]
    calls: int  # sub-calls planned (one per group of records)
    sent: int = 0  # sub-calls made, retries included
    retried: int = 0
    stop: RunStopped | None = None
    elapsed_s: float = 0.0
    per_call: int = 0
    scored: bool = False  # labels chosen by calibrated probabilities (scores_labels)
    failed_calls: list[tuple[int, int, str]] = field(default_factory=list)  # (first record, last, reason)

    @property
    def ok(self) -> int:
        return sum(e is None for e in self.errors)


def scores_labels(d: Delegation, spec: AnswerSpec) -> bool:
    """Whether this map's labels are chosen by the sub-model's calibrated probabilities: a map with
    ``choices``, ``[delegation] choice_scoring`` on, and a sub-model that can score these labels."""
    if spec.choices is None or not getattr(d.settings, "choice_scoring", True):
        return False
    sub = d.sub
    if not getattr(sub, "supports_choice_scores", False):
        return False
    try:
        return bool(sub.can_score(list(spec.choices)))
    except Exception:  # noqa: BLE001 - a model that cannot say decodes as before
        log.debug("choice scoring unavailable", exc_info=True)
        return False


def plan_calls(n: int, per_call: int, op: str = "llm_map") -> int:
    """How many sub-calls ``n`` records make; refuses a map wider than MAX_MAP_ITEMS."""
    from .levels.delegation import MAX_MAP_ITEMS

    calls = -(-n // per_call)
    if calls > MAX_MAP_ITEMS:
        raise CommandError(f"{op}: {n:,} records at per_call {per_call} would make {calls:,} sub-calls "
                           f"(at most {MAX_MAP_ITEMS:,}); raise per_call (up to {MAX_PER_CALL}) or map fewer "
                           "records (filter them first)")
    return calls


def run_map(d: Delegation, task: str, texts: list[str], spec: AnswerSpec, per_call: int,
            op: str = "llm_map", content_free: Sequence[str] | None = None) -> MapResult:
    """Classify/extract ``texts`` with the sub-model, ``per_call`` records a call, concurrently.
    ``content_free``: the records with no content that calibrate a scored map (default: "N/A", "", "?")."""
    from .levels.delegation import preflight, run_batch

    if not isinstance(task, str) or not task.strip():
        raise CommandError(f"{op} needs a non-empty 'prompt' (the task for every record)")
    n = len(texts)
    if n == 0:
        raise CommandError(f"{op}: nothing to map over (no records)")
    scored = scores_labels(d, spec)
    calls = plan_calls(n, per_call, op)
    head = instruction(task, spec)
    groups = [(s, min(s + per_call, n)) for s in range(0, n, per_call)]
    prompts = [head + records_block(texts[a:b]) for a, b in groups]
    for p in prompts:  # refuse the whole map before any call is made
        preflight(d.sub, p)
    d.check_fanout(len(prompts), op)  # and one larger than the sub-calls left
    res = MapResult([None] * n, [None] * n, calls, per_call=per_call, scored=scored)
    bid = f"m{next(d._batches)}"
    counts = {"sent": 0, "retried": 0}
    base: dict[str, Any] = {}
    if scored:  # the model's lean toward each label, from records with no content, divided out below
        from .providers.choice_scores import CONTENT_FREE, mean_prior

        blanks = [head + records_block([blank]) for blank in content_free or CONTENT_FREE]
        text = d.query(blanks[0], tag={"op": op, "batch": bid, "calibration": len(blanks)},
                       choice_scores={"choices": spec.choices, "raw": True, "prompts": blanks}, max_tokens=1)
        strength = float(getattr(d.settings, "calibration", 1.0))
        try:
            prior: dict[str, float] | None = mean_prior(
                [{c: float(v) for c, v in one.items()} for one in json.loads(text)], strength)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError):  # no usable scores: uncalibrated
            log.warning("%s: the calibration answer was not label scores; labels by raw probability", op)
            prior = None
        base = {"choice_scores": {"choices": spec.choices, "prior": prior}}
    lock = threading.Lock()

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    def one(k: int) -> str:
        a, b = groups[k]
        m = b - a
        opts: dict[str, Any] = {"response_schema": spec.array_schema(m), "schema_name": "answers",
                                "max_tokens": spec.max_tokens(m), "temperature": 0.0}
        if base:  # scored: each record of the call on its own, as if it were the only one
            opts["choice_scores"] = {**base["choice_scores"],
                                     "prompts": [head + records_block([t]) for t in texts[a:b]]}
        best: Checked | None = None
        for attempt in (1, 2):
            prompt = prompts[k] if best is None else prompts[k] + retry_note(best.reason or "", m)
            tag = {"op": op, "batch": bid, "index": k, "records": [a, b], "attempt": attempt}
            count("sent")
            try:
                text = d.query(prompt, tag=tag, **opts)
            except RunStopped:
                raise
            except ContextboxError as e:
                if best is None:
                    raise
                best.reason = f"{best.reason}; the retry failed: {e}"
                break
            got = check_answer(text, m, spec)
            if best is None or got.valid >= best.valid:
                best = got
            if got.reason is None:
                break
            if attempt == 1:
                count("retried")
                log.debug("%s %s call %d: %s; retrying once", op, bid, k, got.reason)
        assert best is not None
        res.values[a:b] = best.values
        res.errors[a:b] = best.errors
        if best.reason is not None:
            res.failed_calls.append((a, b - 1, best.reason))
        return "ok" if best.reason is None else f"error: {best.reason}"

    batch = run_batch(len(groups), one, d.concurrency, cancel=d.s.cancel, name=f"map-{bid}",
                      on_progress=d._progress(op, bid, len(groups)))
    for k, (a, b) in enumerate(groups):
        if not batch.ok[k]:  # the call itself failed (provider error, not run): all its records
            why = batch.answers[k].removeprefix("error: ")
            res.values[a:b] = [None] * (b - a)
            res.errors[a:b] = [why] * (b - a)
            res.failed_calls.append((a, b - 1, why))
    res.failed_calls.sort()
    res.sent, res.retried = counts["sent"], counts["retried"]
    res.stop, res.elapsed_s = batch.stop, batch.elapsed_s
    return res


def result_table(records: Table, spec: AnswerSpec, res: MapResult) -> Table:
    """The records' columns, then the answer column(s), then ``map_error``."""
    out = records
    rows = [spec.row(v) for v in res.values]
    for col in spec.columns:
        out = out.with_column(col, [r[col] for r in rows])
    return out.with_column(ERROR_COLUMN, list(res.errors))


def summary(res: MapResult, spec: AnswerSpec, table: Table, concurrency: int, op: str = "llm_map") -> str:
    """What the root model sees: counts, label counts, failures and a few rows."""
    n = len(res.values)
    done = "labelled" if spec.kind == "choices" else "valid"
    extra = f"; {res.retried} retried" if res.retried else ""
    how = f"{res.per_call} per call" + (", labels by calibrated probability" if res.scored else "")
    lines = [f"{op}: {n:,} records in {res.calls:,} sub-calls ({how}{extra}), "
             f"{res.ok:,} {done}, {n - res.ok:,} failed ({res.elapsed_s:.1f}s, up to {concurrency} at once)"]
    if spec.choices is not None:
        counts = Counter(v for v in res.values if v is not None)
        ordered = sorted(spec.choices, key=lambda c: (-counts[c], spec.choices.index(c)))  # type: ignore[union-attr]
        lines.append("labels: " + ", ".join(f"{c} {counts[c]:,}" for c in ordered))
    if res.failed_calls:
        shown = res.failed_calls[:3]
        more = len(res.failed_calls) - len(shown)
        lines.append("failed: " + "; ".join(f"records {a}-{b}: {_one_line(r, 120)}" for a, b, r in shown)
                     + (f"; and {more} more call(s)" if more else ""))
    lines.append(table.render(max_rows=SHOWN_ROWS, max_cell=80))
    return "\n".join(lines)


def values_for_cells(d: Delegation, prompt: Any, records: Any, choices: Any = None, schema: Any = None,
                     per_call: Any = None, field: Any = None) -> list[Any]:
    """``llm_map(prompt, records, choices=None, schema=None, per_call=None)`` for code cells."""
    spec = AnswerSpec.parse(choices, schema, field)
    if isinstance(records, str) or not isinstance(records, (list, tuple)):
        raise CommandError("llm_map(prompt, records, ...) takes a list of records (strings or dict rows)")
    table = records_of(list(records))
    res = run_map(d, prompt, record_texts(table), spec, check_per_call(per_call, spec.kind))
    if res.stop is not None:
        d._note_stop(res.stop)
    return list(res.values)


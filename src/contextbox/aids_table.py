"""The table route of the small-model aids (``[aids] table_route``): a counting or ranking question
over structured lines is answered by building and aggregating tables, not by reading.

:func:`route_ops` picks the ops each turn may use from what the question asks; :class:`TableRoute`
(a part of :class:`contextbox.aids.RunAids`) narrows them as the run goes (filter the rows the
question names first, label rows before counting labels, answer once the one aggregate is shown),
chooses the column to aggregate and fixes the arguments the question decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .column_hints import FILTERED
from .context import Context
from .executors import Session

FINAL_ONLY = ("final", "final_var")
#: ops whose output is an aggregate a table-route answer can be copied from
AGGREGATING = frozenset({"count", "count_by", "top", "unique", "stats", "word_counts", "join", "pairs"})
#: the variable the pairs route stores the engine's pair list in (``final_var`` answers with it)
PAIRS = "pairs"
#: the longest answer a constrained ``final`` offers (llama.cpp's grammar refuses much longer strings);
#: a longer pair list is answered with ``final_var``
FINAL_MAX_CHARS = 1000
#: the thought and the JSON around a final answer, in tokens
REPLY_OVERHEAD_TOKENS = 160


def answer_tokens(text: str) -> int:
    """At most about how many tokens a small model's tokenizer makes of ``text``: one per digit (Qwen2.5
    splits numbers into digits), one per two other characters."""
    digits = sum(c.isdigit() for c in text)
    return digits + (len(text) - digits + 1) // 2
#: the longest ``final`` answer after a restated sentence went back for "answer with the X only"
SHORT_ANSWER_CHARS = 40
#: questions whose answer aggregates many lines: counts, rankings, frequencies, statistics, pairs
_AGGREGATE_Q = re.compile(
    r"\b(how many|how often|number of|count|counts|frequen\w*|most (?:often|frequent|common)|"
    r"least (?:often|frequent|common)|more common|less common|percentiles?|p\d\d|median|average|mean|"
    r"unique|distinct|top \d+|rank\w*|every pair|all pairs|pairs of|in total|total number|ratio|proportion|"
    r"percentage|share of|(?:has|have|had|with|gets?|got|made|makes|received|sent|returns?) the (?:most|fewest|least))\b",
    re.I)


#: "how many times does X occur": a literal count answers it
_OCCURRENCE_Q = re.compile(r"\b(how many times|how often does|how often is|number of (?:times|occurrences)|"
                           r"occurrences of)\b", re.I)


#: questions that name a statistic: ``stats`` aggregates them (the aids repeat the asked ones)
STATS_Q = re.compile(r"\b(percentiles?|p\d\d|median|average|mean|minimum|maximum|min|max|sum|std)\b", re.I)
#: questions about a label per record that no keyword gives: the typed map labels the rows first
_LABEL_Q = re.compile(r"\b(label\w*|categor\w*|classif\w*|sentiment|topics?)\b", re.I)
_WORDS_Q = re.compile(r"\b(words|terms|vocabulary)\b", re.I)  # plural: "the word after X" names a field
_DISTINCT_Q = re.compile(r"\b(unique|distinct|different)\b", re.I)
#: "over all lines", "across every request", "overall": the aggregate is of the whole table
_ALL_ROWS_Q = re.compile(r"\b(?:over|across|among|of|in|for)\s+(?:all|every|the (?:whole|entire))\b|\boverall\b", re.I)
_FINISH = ("final", "final_var")


def route_ops(question: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The table route for a question: (ops of the first turn, ops of later turns).

    A literal count starts only how-often questions; a statistic question aggregates with
    ``stats``, a how-many-different question with ``unique``, others with counts and labels."""
    # the route runs on structured lines: ``extract``'s automatic fields are the table (``records``
    # gave the model a text/line table, and ``stats line`` answered p50=9999 for a response time)
    first = ("count", "extract") if _OCCURRENCE_Q.search(question) else ("extract",)
    if _WORDS_Q.search(question):  # word frequencies of a text column: nothing to select first
        later: tuple[str, ...] = ("word_counts",)
    elif STATS_Q.search(question):
        later = ("stats", "filter", "extract")
    elif _DISTINCT_Q.search(question):
        later = ("unique", "filter", "count_by", "extract")
    else:
        later = ("count_by", "top", "filter", "join", "llm_map", "unique", "sort", "extract", "records")
    return first, later + _FINISH


def aggregate_question(question: str) -> bool:
    return _AGGREGATE_Q.search(question) is not None


def structured(context: Context, sample: int = 60) -> bool:
    """Whether most lines of the context are records with typed fields (a log, a table, key: value rows)."""
    from .auto_fields import parse_line

    text = context.text
    if not text:
        return False
    step = max(1, len(text) // sample)
    lines: list[str] = []
    for pos in range(0, len(text), step):
        a = text.rfind("\n", 0, pos) + 1
        b = text.find("\n", pos)
        line = text[a: b if b >= 0 else len(text)].strip()
        if line and not line.startswith("==> "):
            lines.append(line[:2000])
        if len(lines) >= sample:
            break
    if len(lines) < 5:
        return False
    typed = 0
    seen: dict[str, bool] = {}  # a short text (or a long line) is sampled at many points of one line
    for line in lines:
        is_typed = seen.get(line)
        if is_typed is None:
            row = parse_line(line)
            is_typed = seen[line] = len([k for k in row if not k.startswith(("word", "message", "number"))]) >= 2
        typed += is_typed
    return typed >= 0.7 * len(lines)


class TableRoute:
    """The table route's part of :class:`contextbox.aids.RunAids` (its state is set up there)."""

    settings: Any
    question: str
    session: Session
    table_route: bool
    code_question: bool
    searched: bool
    ranking_answer: str | None
    short_answer: bool
    short_spans: list[str]
    pairs_ask: Any  # a pairs_hints.PairsQuestion, or None
    pairs_made: str | None
    last_pairs: list[tuple[str, str]] | None
    used: set[str]
    _fire: Callable[..., None]
    route_ops: tuple[tuple[str, ...], tuple[str, ...]]
    aggregated: bool
    filter_done: bool
    work: str | None
    _fields_key: Any
    _fields: list[str] | None
    _filters: dict[str, Any]
    _announce: bool
    _filtered: set[str]
    _fire: Callable[..., None]

    def route(self, variables: dict[str, Any], levels: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The table route's ops for the coming turn: a label question maps labels onto a table first."""
        first, later = self.route_ops
        if self.pairs_ask is not None:  # the pairs are of a column: automatic fields make it ("User: 44552")
            first = ("extract",)
        if not self.aggregated:  # no answer before the engine has counted: nothing to copy one from
            later = tuple(op for op in later if op not in FINAL_ONLY)
        self._refresh(variables)
        from .table import Table

        tables = [v for v in variables.values() if isinstance(v, Table)]
        if self.pairs_ask is not None and (tables or self.pairs_made):
            return first, self._pairs_route(levels, later)
        if self._filters and not self.filter_done:  # the rows the question names, before anything else
            return first, ("filter",)
        if not self._filters and _ALL_ROWS_Q.search(self.question):  # "over all lines": no row to leave out
            later = tuple(op for op in later if op != "filter") or later
        labelled = any("map_error" in t.cols for t in tables)
        if "l4" in levels and _LABEL_Q.search(self.question) and tables and not labelled:
            return first, ("llm_map",)  # no labels yet: label the rows
        if labelled:  # the rows have their labels: count them, don't label them again
            later = tuple(op for op in later if op != "llm_map")
        if self.aggregated and later and later[0] in ("word_counts", "stats"):
            return first, FINAL_ONLY  # the one aggregate this question needs is on screen: answer from it
        return first, later

    def _refresh(self, variables: dict[str, Any]) -> None:
        """Recompute the column choice and the question's filters when the tables changed."""
        if not (self.table_route and getattr(self.settings, "column_choice", True)):
            return
        from .column_hints import field_choice, question_filters
        from .table import Table

        tables = {k: v for k, v in variables.items() if isinstance(v, Table) and v.columns}
        key = tuple((k, len(t), tuple(t.columns)) for k, t in tables.items())
        if not tables or key == self._fields_key:
            return
        self._fields_key = key
        # rows the question names, from the tables the route built (not from a filter's own output)
        self._filters = question_filters(self.question, {k: t for k, t in tables.items()
                                                         if k not in self._filtered})
        op = next((o for o in self.route_ops[1] if o in AGGREGATING), None)
        target = {k: t for k, t in tables.items() if k == self.work} or tables
        fields = field_choice(self.question, target, op)
        if fields and self._filters:  # a filter column only selects rows: the question is about another
            fields = [f for f in fields if f not in self._filters] or fields
        self._fields = fields
        if self.pairs_ask is not None:  # the condition's rows, then the pairs of the subject's column
            self._pairs_plan(tables)
        self._announce = True

    def _pairs_plan(self, tables: dict[str, Any]) -> None:
        from .pairs_hints import condition, label_column, subject_column

        base = {k: t for k, t in tables.items() if k not in self._filtered and k != self.pairs_made}
        assert self.pairs_ask is not None
        self._filters = condition(self.pairs_ask, base, label_column(base)) or {}
        col = subject_column(self.pairs_ask, base)
        self._fields = [col] if col else self._fields

    def _pairs_route(self, levels: tuple[str, ...], later: tuple[str, ...]) -> tuple[str, ...]:
        """The pairs route's next step: label → filter the condition's rows → pairs → answer."""
        if self.pairs_made:  # final_var first: the engine's list as it stands ("none": only final)
            if not self.last_pairs:
                return ("final",)
            if self._pairs_text_len() > FINAL_MAX_CHARS:  # too long to type under a grammar: the variable
                return ("final_var",)
            # a pair list sent back once: the engine's own list is the way to answer now
            return ("final_var",) if "pairs_complete" in self.used else FINAL_ONLY[::-1]
        if self.filter_done:
            return ("pairs",)
        if self._filters:
            return ("filter",)
        if "l4" in levels:
            return ("llm_map",)  # nothing holds the condition's values yet: label the rows
        return tuple(op for op in later if op not in FINAL_ONLY) or later

    def fields(self, variables: dict[str, Any], iteration: int) -> list[str] | None:
        """The table route's column choice for the aggregating ops of the coming turn (``[aids]
        column_choice``): the column the question is about, from its words and the tables' values."""
        self._refresh(variables)
        if self._announce:
            self._announce = False
            op = "pairs" if self.pairs_ask is not None else \
                next((o for o in self.route_ops[1] if o in AGGREGATING), None)
            if self._fields:
                self._fire("column_choice", iteration,
                           f"{op or 'aggregate'} on: {', '.join(self._fields[:4])}", fields=self._fields, op=op)
            if self._filters and not self.filter_done:
                self._fire("question_filter", iteration, "the question selects rows: " + ", ".join(
                    f"{k} = {v}" for k, v in self._filters.items()), where=dict(self._filters))
            if self.pairs_ask is not None and "pairs_route" not in self.used:
                self.used.add("pairs_route")
                a = self.pairs_ask
                self._fire("pairs_route", iteration, f"pairs of {a.subject} with at least {a.at_least} row(s) of "
                           + " or ".join(a.values), subject=a.subject, values=list(a.values), at_least=a.at_least)
        return self._fields

    def overrides(self) -> dict[str, dict[str, Any]] | None:
        """Arguments the question fixes: the rows it names (``filter``'s ``where``, stored as ``sel``),
        the route's working table (every aggregate's ``on``), the stop words it lists (``word_counts``'
        ``stop``), the labels it defines (the typed map's ``choices``)."""
        out: dict[str, dict[str, Any]] = {}
        if self.code_question:  # "which function ...": a search hit should show the whole definition
            out["search"] = {"unit": {"const": "paragraph"}}
        if self.short_answer:  # a restated sentence went back for "the X only": the answer is a short value
            spans = self.short_spans
            out["final"] = {"answer": {"enum": list(spans)} if spans else
                            {"type": "string", "minLength": 1, "maxLength": SHORT_ANSWER_CHARS}}
        if not (self.table_route or self.searched) and getattr(self.settings, "question_search", True):
            # a small model shortens the question to two words ("Vyazemtsev debt", "config.py") and a short
            # line with the common one outranks the passage; ranked on all the question's words it comes first
            out.setdefault("search", {})["query"] = {"const": self.question}
        if not (self.table_route and getattr(self.settings, "column_choice", True)):
            return out or None
        from .column_hints import question_choices, question_stop_words

        # structured lines: automatic fields read them; a pattern copied from the question ("NNNms")
        # matched nothing and left the model nothing to aggregate
        out["extract"] = {"pattern": None}

        if self._filters and not self.filter_done:
            out["filter"] = {"where": {"const": dict(self._filters)}, "store": {"const": FILTERED}}
            if self.work:
                out["filter"]["on"] = {"enum": [self.work]}
        elif self.work:  # the newest table of the route holds what the question is about
            for op in ("count_by", "top", "unique", "stats", "word_counts", "sort", "llm_map", "filter"):
                out[op] = {"on": {"enum": [self.work]}}
        if self.pairs_ask is not None:
            out.update(self._pairs_overrides())
        if self.ranking_answer and len(self.ranking_answer) <= FINAL_MAX_CHARS:  # sent back with the ranking:
            out["final"] = {"answer": {"const": self.ranking_answer}}  # the answer is exactly that now
        stop = question_stop_words(self.question)
        if stop:
            out.setdefault("word_counts", {})["stop"] = {"const": stop}
        choices = question_choices(self.question)
        if choices:  # the labels the question defines: the typed map uses exactly those
            out.setdefault("llm_map", {})["choices"] = {"const": choices}
        return out or None

    def _pairs_overrides(self) -> dict[str, dict[str, Any]]:
        """The pairs step's arguments (the filtered rows, the subject's column, the question's K, the
        store), the answer's (``final_var`` of the pairs; ``final`` long enough for the whole list), and
        no ``per_call`` for the typed map (its default)."""
        assert self.pairs_ask is not None
        # the typed map at its default records per call: a small sub-model labels short arrays best
        out: dict[str, dict[str, Any]] = {"llm_map": {"per_call": None}}
        if self.filter_done:
            args: dict[str, Any] = {"on": {"const": FILTERED}, "at_least": {"const": self.pairs_ask.at_least},
                                    "store": {"const": PAIRS}}
            if self._fields and len(self._fields) == 1:
                args["field"] = {"const": self._fields[0]}
            out["pairs"] = args
        if self.pairs_made:
            out["final_var"] = {"name": {"const": self.pairs_made}}
            size = self._pairs_text_len()
            out["final"] = {"answer": {"type": "string", "minLength": 1,
                                       "maxLength": min(FINAL_MAX_CHARS, max(400, size + 200))}}
        return out

    def _pairs_text_len(self) -> int:
        return sum(len(a) + len(b) + 5 for a, b in self.last_pairs or [])

    def reply_tokens(self) -> int | None:
        """Room the next reply needs when its answer may be a long text the engine already has (the pair
        list, the ranking): a small model writes each digit as a token, and 28 pairs of 5-digit ids (~440
        tokens) ran past the embedded model's 384-token reply three times in a row. None: the default."""
        texts = ["\n".join(f"({a}, {b})" for a, b in self.last_pairs or []) if self.pairs_made else "",
                 self.ranking_answer or ""]
        need = max(answer_tokens(t) for t in texts)
        return need + REPLY_OVERHEAD_TOKENS if need else None

    def pairs_result(self, action: Any) -> None:
        """Keep the engine's pairs (the answer check compares a final answer's pairs with them)."""
        from .levels.commands import latest_table
        from .table import cell_text

        name = action.args.get("store") or latest_table(self.session)
        t = self.session.variables.get(name) if name else None
        if t is None or getattr(t, "meta", {}).get("_kind") != "pairs" or len(t.cols) != 2:
            return
        a, b = t.cols.values()
        self.pairs_made = name
        self.last_pairs = [(cell_text(x), cell_text(y)) for x, y in zip(a, b, strict=True)]

    def wrong_pairs(self, answer: str) -> str | None:
        """Why an answer's pair list differs from the engine's ``pairs`` output (None when it matches;
        order within a pair and of the lines is free, as for the pairs scorer)."""
        from .pairs_hints import answer_pairs

        assert self.last_pairs is not None
        want = {frozenset(p) for p in self.last_pairs}
        got = answer_pairs(answer)
        if got == want:
            return None
        if not want:
            return ("check: no pair qualifies by the pairs output above, but your answer lists pairs. Send the "
                    'final command again with exactly: none')
        right = len(got & want)
        lines = "\n".join(f"({a}, {b})" for a, b in self.last_pairs)
        return (f"check: the pairs computed above are {len(want)} pair(s); your answer gives {len(got)} "
                f"({right} of them right). Send {{\"op\": \"final_var\", \"name\": \"{self.pairs_made}\"}}, or the "
                f"final command again with exactly these lines:\n{lines}")

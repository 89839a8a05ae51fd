"""Which column of a table a question is about: the table route's column choice.

A small model picks the wrong column as often as the right one ("rank the error types" →
``count_by level``, whose values include ``ERROR``). The engine can tell from the question and the
data alone, without a model:

- a column whose *name* the question uses ("IP addresses" → ``ip``, "messages" → ``message``,
  "response time" → ``duration``);
- a column one of whose *values* the question names ("how many times does RateLimited occur" →
  the column holding ``RateLimited``);
- a value used as a modifier ("error *types*", "WARN messages"): that column only selects rows; the
  question is about the column that is filled on exactly those rows ("the type of the ERROR
  lines" → the column present on ERROR lines and missing elsewhere);
- what the op needs: ``stats`` numbers, ``word_counts`` text, ``unique``/``count_by`` a column with
  repeated values.

:func:`rank_columns` scores the columns; :func:`field_choice` turns that into the ``field`` enum of
the next constrained turn: the one clear winner, or the columns in order of relevance.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from .table import Table

_WORD = re.compile(r"[A-Za-z0-9_.:/-]+")
#: words that say "the column whose values name kinds of the word before me"
_TYPE_WORDS = frozenset("type types kind kinds category categories class classes code codes name names "
                        "reason reasons".split())
#: words that ask for rows selected by a value ("ERROR lines", "WARN messages")
_ROW_WORDS = frozenset("line lines message messages entry entries event events record records row rows "
                       "request requests".split())
#: phrases that name a column by meaning: phrase -> column names it means
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "response time": ("duration", "latency", "elapsed", "response_time", "ms"),
    "latency": ("duration", "latency", "elapsed", "response_time"),
    "duration": ("duration", "latency", "elapsed"),
    "milliseconds": ("duration", "latency", "elapsed", "ms"),
    "ip address": ("ip", "client", "address", "host"),
    "ip": ("ip", "client", "address"),
    "client": ("ip", "client"),
    "host": ("host", "ip"),
    "endpoint": ("path", "url", "endpoint", "route"),
    "url": ("path", "url"),
    "route": ("path", "route"),
    "status": ("status", "code"),
    "status code": ("status", "code"),
    "severity": ("level", "severity"),
    "log level": ("level",),
    "http method": ("method",),
    "verb": ("method",),
    "user": ("user", "username", "user_id"),
    "error type": ("name", "error", "error_type", "type", "exception"),
    "exception": ("name", "exception", "error"),
    "word": ("message", "text", "msg"),
    "words": ("message", "text", "msg"),
    "label": ("label",),
}
#: phrases whose words name no column
_NOT_NAMES = re.compile(r"\b(?:how many times|number of times|how often|at the same time|each time|per line)\b")
#: words too common to be a value the question names ("the" is a message in some logs)
_COMMON = frozenset("the a an of to in on at for is was are be by with from and or not as it this that these "
                    "those all any each no yes".split())
#: columns no question is about
_SKIP = frozenset({"doc", "line", "map_error"})
#: the route's aggregate ops and what kind of column each needs
NUMERIC_OPS = frozenset({"stats"})
TEXT_OPS = frozenset({"word_counts"})


@dataclass
class _Col:
    name: str
    values: list[object]
    distinct: int
    filled: float  # share of rows with a value
    numeric: float  # share of filled values that parse as numbers
    spaced: float  # share of filled values with a space (free text)


def _snowball() -> Any:
    try:
        import Stemmer  # PyStemmer, a core dependency (search.py uses it too)

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - the wheel is a dependency
        return None


_SNOWBALL = _snowball()


@functools.lru_cache(maxsize=4096)
def _stem(w: str) -> str:
    """One stem for a word's forms: labelled/labels → label, users → user, dated → date."""
    w = w.casefold()
    if _SNOWBALL is not None and w.isalpha():
        return _SNOWBALL.stemWord(w)
    for suf in ("ies", "es", "s"):
        if len(w) > 3 and w.endswith(suf) and not w.endswith("ss"):
            return w[: -len(suf)] + ("y" if suf == "ies" else "")
    return w


def _names(column: str) -> set[str]:
    """The words that name ``column``: its parts ("status_code" → status, code) and their synonyms."""
    names = {_stem(p) for p in re.split(r"[_\W]+", column.casefold()) if p}
    return names | {_stem(k) for k, v in _SYNONYMS.items() if column.casefold() in v and " " not in k}


def _describe(t: Table, scan: int) -> list[_Col]:
    from .table_values import as_number

    n = min(len(t), scan)
    out = []
    for name in t.columns:
        if name in _SKIP:
            continue
        vals = t.column(name)[:n]
        filled = [v for v in vals if v is not None and v != ""]
        k = max(1, len(filled))
        out.append(_Col(name, vals, len({str(v) for v in filled}), len(filled) / max(1, n),
                        sum(as_number(v) is not None for v in filled) / k,
                        sum(isinstance(v, str) and " " in v.strip() for v in filled) / k))
    return out


def rank_columns(question: str, table: Table, op: str | None = None, scan: int = 20_000) -> list[tuple[str, float]]:
    """The table's columns with a relevance score for ``question`` (best first; ties keep table order)."""
    cols = _describe(table, scan)
    if not cols:
        return []
    q = question.casefold()
    words = _WORD.findall(q)
    stems = [_stem(w.strip(".:/-")) for w in words]
    score = {c.name: 0.0 for c in cols}
    # the sentences that ask (with a "?") weigh more than a preamble describing the data's format
    asking = [x for x in re.split(r"(?<=[.!?])\s+", q) if "?" in x]
    ask_stems = {_stem(w.strip(".:/-")) for w in _WORD.findall(" ".join(asking) if asking else q)}
    # 1. names: a phrase that means a column ("response time"), then the column's own name in the
    #    words the phrases left ("time" of "response time" is not the ``time`` column)
    used: set[int] = set()
    for phrase, names in sorted(_SYNONYMS.items(), key=lambda kv: -len(kv[0])):
        m = re.search(rf"\b{re.escape(phrase)}s?\b", q)
        if not m:
            continue
        span = range(len(_WORD.findall(q[: m.start()])), len(_WORD.findall(q[: m.end()])))
        if used & set(span):
            continue
        hit = [c for c in cols if c.name.casefold() in names]
        if hit:
            used |= set(span)
        for c in hit:
            score[c.name] += 3 + 0.5 * len(phrase.split())  # a longer phrase is the better evidence
    for m in _NOT_NAMES.finditer(q):  # "how many times": a count, not the ``time`` column
        used |= set(range(len(_WORD.findall(q[: m.start()])), len(_WORD.findall(q[: m.end()]))))
    free = {s for i, s in enumerate(stems) if i not in used}
    for c in cols:
        parts = {_stem(p) for p in re.split(r"[_\W]+", c.name.casefold()) if p} | {_stem(c.name)}
        if parts & free:
            score[c.name] += 3 if parts & free & ask_stems else 1
    # 2. values the question names
    how_many = re.search(r"\b(how many|how often|number of|count)\b", q) is not None
    ranking = re.search(r"\b(which|what|most|least|rank\w*|top)\b", q) is not None
    row_words = {_stem(x) for x in _ROW_WORDS}
    type_words = {_stem(x) for x in _TYPE_WORDS}
    for c in cols:
        if c.spaced > 0.5:  # free text holds every word: naming one is no evidence
            continue
        seen = {str(v).casefold() for v in c.values if v is not None} - _COMMON
        hits = [(i, w) for i, w in enumerate(words) if len(w) >= 2 and w in seen]
        if len({w for _, w in hits}) >= 2:  # "ERROR to WARN": the question compares this column's values
            score[c.name] += 3
            continue
        if not hits:
            continue
        i, w = hits[0]
        before = stems[i - 1] if i else ""
        nxt = stems[i + 1] if i + 1 < len(stems) else ""
        if before in _names(c.name):  # "status 500", "user 44552": a filter, see question_filters
            score[c.name] -= 1
        elif nxt in type_words:  # "error types": the kinds of the rows this value selects
            _conditional(cols, c, w, score)
        elif nxt in row_words and not how_many:  # "the IP with the most ERROR lines": a filter
            score[c.name] -= 1
        elif how_many or not ranking:  # "how many ERROR lines", "how often does RateLimited occur"
            score[c.name] += 3
        else:  # "what is the most frequent error": which *kind* of error
            _conditional(cols, c, w, score)
    # 3. what the op needs
    for c in cols:
        if op in NUMERIC_OPS:
            score[c.name] += 2 if c.numeric > 0.9 else -6
        elif op in TEXT_OPS:
            score[c.name] += 2 if c.spaced > 0.3 else -2
        elif op in ("count_by", "top", "unique"):
            if c.distinct <= 1:
                score[c.name] -= 4
            if c.numeric > 0.9 and c.distinct > 0.2 * max(1, c.filled * len(c.values)):
                score[c.name] -= 2  # a measurement, not a category
            if c.spaced > 0.5 and c.distinct > 0.9 * max(1, len([v for v in c.values if v is not None])):
                score[c.name] -= 2  # every row its own value: nothing to count
    if any(w in _TYPE_WORDS for w in words):  # "which type": a column of repeated names
        for c in cols:
            if 2 <= c.distinct <= 200 and c.numeric < 0.5 and c.spaced < 0.3:
                score[c.name] += 1
    order = {c.name: i for i, c in enumerate(cols)}
    return sorted(score.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def _conditional(cols: list[_Col], by: _Col, value: str, score: dict[str, float]) -> None:
    """``value`` of column ``by`` selects rows ("ERROR lines", "error types"): favour the columns that
    are filled on those rows and empty on the others (the type *of* an error)."""
    sel = [i for i, v in enumerate(by.values) if v is not None and str(v).casefold() == value]
    if not sel:
        return
    chosen = set(sel)
    rest = len(by.values) - len(chosen)
    score[by.name] -= 1  # it only selects
    for c in cols:
        if c is by:
            continue
        inside = sum(c.values[i] is not None and c.values[i] != "" for i in sel) / len(sel)
        outside = (sum(v is not None and v != "" for j, v in enumerate(c.values) if j not in chosen) / rest
                   if rest else 0.0)
        if inside >= 0.8:
            score[c.name] += 4 * (inside - outside)


def field_choice(question: str, tables: dict[str, Table], op: str | None = None,
                 margin: float = 2.0) -> list[str] | None:
    """The ``field`` enum for the next turn: the clear winner alone, or all columns best first.

    ``None`` when there is nothing to go on (no table, or no column scores above zero)."""
    ranked: list[tuple[str, float]] = []
    filters = question_filters(question, tables) if tables else {}
    for t in tables.values():
        for name, s in rank_columns(question, t, op):
            if name not in dict(ranked) and name not in filters:  # a filter column only selects rows
                ranked.append((name, s))
    ranked.sort(key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= 0:
        return None
    if len(ranked) == 1 or ranked[0][1] - ranked[1][1] >= margin:
        return [ranked[0][0]]
    return [name for name, s in ranked if s > ranked[0][1] - margin] + \
        [name for name, s in ranked if s <= ranked[0][1] - margin]


_STOP_LIST = re.compile(r"stop[ -]?words?\b[^:(\n]{0,40}?[:(]\s*([^)?\n]+)", re.I)
_SPLIT = re.compile(r"\s*(?:[,;]|\s(?:and|or)\s)\s*", re.I)


def question_stop_words(question: str) -> list[str] | None:
    """The stop words a question lists ("ignoring these stop words: the, a, to"), or None."""
    m = _STOP_LIST.search(question)
    if not m:
        return None
    body = m.group(1).strip().rstrip(".")
    words = []
    for part in _SPLIT.split(body):
        w = re.sub(r"^(?:and|or)\s+", "", part.strip(), flags=re.I).strip("'\"`").strip()
        if not w or " " in w:  # the list ended: "..., by, from? Answer with the 5 words"
            break
        words.append(w.casefold())
    return words if len(words) >= 2 else None


#: the table the engine's filter step stores its rows under
FILTERED = "sel"


def question_filters(question: str, tables: dict[str, Table], scan: int = 20_000) -> dict[str, object]:
    """Rows a question selects by naming a value next to its column ("from user 44552", "status 500",
    "path /api/login") or before a row word in a ranking question ("the IP with the most ERROR lines"):
    {column: value as the table holds it}. A value the question asks about ("how many ERROR lines")
    is no filter: counting that column answers it."""
    q = question.casefold()
    words = _WORD.findall(q)
    stems = [_stem(w.strip(".:/-")) for w in words]
    how_many = re.search(r"\b(how many|how often|number of|count)\b", q) is not None
    row_words = {_stem(x) for x in _ROW_WORDS}
    out: dict[str, object] = {}
    for t in tables.values():
        for c in _describe(t, scan):
            if c.spaced > 0.5 or c.name in out:
                continue
            names = _names(c.name)
            seen = {str(v).casefold(): v for v in c.values if v is not None and str(v).casefold() not in _COMMON}
            if len({w for w in words if w in seen and len(w) >= 2}) >= 2:  # "ERROR to WARN": compared
                continue
            for i, w in enumerate(words):
                if w not in seen or len(w) < 2:
                    continue
                before = stems[i - 1] if i else ""
                nxt = stems[i + 1] if i + 1 < len(stems) else ""
                if before in names or (nxt in row_words and not how_many):
                    out[c.name] = seen[w]
                    break
    dated = _date_filter(question, tables, scan)
    if dated and dated[0] not in out:
        out[dated[0]] = dated[1]
    return out


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE_TEXT = rf"(?:\d{{4}}-\d{{2}}-\d{{2}}|{_MONTH} \d{{1,2}},? \d{{4}}|\d{{1,2}} {_MONTH},? \d{{4}})"
_WHEN = re.compile(rf"\b(before|after|since|until|prior to|earlier than|later than|on)\s+({_DATE_TEXT})", re.I)
_WHEN_OP = {"before": "lt", "prior to": "lt", "earlier than": "lt", "until": "le", "after": "gt",
            "later than": "gt", "since": "ge", "on": "on"}


def _date_filter(question: str, tables: dict[str, Table], scan: int) -> tuple[str, dict[str, str]] | None:
    """("date", {"lt": "Mar 03, 2023"}) for "dated before Mar 03, 2023" when a column holds dates."""
    from .table_values import as_date

    m = _WHEN.search(question)
    if not m or as_date(m.group(2).replace(".", "")) is None:
        return None
    for t in tables.values():
        for c in _describe(t, min(scan, 2000)):
            vals = [v for v in c.values if v is not None]
            if vals and sum(as_date(v) is not None for v in vals) >= 0.8 * len(vals):
                op, day = _WHEN_OP[m.group(1).lower()], m.group(2).replace(".", "")
                # "on <date>": that day, whatever the cells' date format (compared as dates)
                return c.name, ({"ge": day, "le": day} if op == "on" else {op: day})
    return None


_DEFINED = re.compile(r"(?:^|[,:;]\s*)([A-Za-z][\w-]*(?: [A-Za-z][\w-]*)?) \(")
_LISTED = re.compile(r"\b(?:labels?|categories|category|classes|one of)\b[^:.?]{0,40}:\s*([^.?\n]+)", re.I)
_ABOUT = re.compile(r"\babout ((?:[\w-]+, )*[\w-]+,? (?:or|and) [\w-]+)\s*\?", re.I)


def question_choices(question: str) -> list[str] | None:
    """The labels a question defines or lists, in its order: "description (a definition ...), entity (a
    thing ...)", "labels: spam, ham", "about billing, delivery or login?". None when it names none."""
    for sent in re.split(r"(?<=[.!?])\s+", question):
        found = [m.group(1).strip() for m in _DEFINED.finditer(sent)]
        found = [w.split()[-1] if len(w.split()) > 1 and w.split()[0].lower() in ("and", "or") else w for w in found]
        if len(found) >= 3:
            return _clean(found)
    for rx in (_LISTED, _ABOUT):
        m = rx.search(question)
        if m:
            body = re.sub(r"\([^)]*\)", "", m.group(1))  # "numeric (a number)": the label, not its gloss
            items = [x for x in re.split(r"\s*(?:,|;|\bor\b|\band\b)\s*", body) if x.strip()]
            got = _clean([x.strip(" '\"`") for x in items])
            if got:
                return got
    return None


def _clean(items: list[str]) -> list[str] | None:
    out: list[str] = []
    for x in items:
        if not x or len(x.split()) > 3 or len(x) > 40:
            return None
        if x not in out:
            out.append(x)
    return out if 2 <= len(out) <= 20 else None

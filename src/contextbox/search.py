"""Ranked search: BM25 over the lines, paragraphs, chunks or documents of the context.

A literal ``find`` only works when the question's words are the text's words. ``search``
ranks passages by the words they share with a prose query (BM25, with the ``bm25s``
library), with code-aware tokens: ``load_config``, ``Config.load`` and ``loadConfig`` all
read as *load* + *config*; accents are folded (*Natásha* = *Natasha*), words are lowercased, stemmed (Snowball English via PyStemmer,
or a small suffix stripper without it), common code abbreviations are folded into their
full word (*config* = *configuration*) and a short list of stop words is dropped.

Units are built on exact lines: ``line`` (each line that has a word), ``paragraph`` (blocks
of non-blank lines), ``chunk`` (groups of :data:`CHUNK_LINES` lines) and ``document`` (each
document of a multi-document context, found by its path too). Units never cross a document
boundary. A hit gives the document path, the 0-based line number of the unit's first line in
the whole text (as ``find`` and ``lines`` count), the character offset where the unit starts,
the BM25 score and the passage (capped).

An index is built on first use, once per (text, documents, unit), and kept in a small
process-wide LRU, so the later searches of a run, and the questions of a session on the
same context, reuse it. The key uses ``hash(str)``, which CPython computes once per string
object and caches, so a 100 MB context is not re-hashed per query.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import sys
import threading
import unicodedata
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .context import Context
from .errors import CommandError
from .executors import ActionOutput
from .levels.commands import INT, STR, Spec, register_op
from .ops import hit_limit

if TYPE_CHECKING:
    import numpy as np

    from .levels.commands import CommandExecutor

log = logging.getLogger("contextbox")

UNITS = ("line", "paragraph", "chunk", "document")
CHUNK_LINES = 20
MAX_K = 200
#: characters of a unit kept in a hit's ``text``, and of the best line in ``best_text``
PASSAGE_CHARS = 2000
BEST_LINE_CHARS = 300
BEST_SCAN_CHARS = 1 << 18  # how far into a unit its best line is looked for
CACHE_SIZE = 4
#: indexes are also evicted (least recently used first, never the newest) while the cache, with the
#: texts it keeps alive, holds more than this many bytes
CACHE_BYTES = 1 << 30
#: the largest text search indexes (a 100 MB log takes ~30 s and ~0.8 GB to index)
MAX_CHARS = 256 * 1000 * 1000
K1, B = 1.5, 0.75  # bm25s's defaults (its Lucene variant)
_BLOCK = 4 << 20  # lines are split block by block (characters)

# ---------------------------------------------------------------------------- tokens
STOP_WORDS = frozenset(
    """a about after all also am an and any are as at be been before being but by can could did do does
    for from had has have he her here him his how i if in into is it its just me my of on or our she so
    than that the their them then there these they this those to too us very was we were what when where
    which while who whom why will with would you your""".split()
)
_WORD = re.compile(r"[^\W_]+")  # letters and digits: '_', '.', '-' and other punctuation split words
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z\d]+|[A-Z\d]+")
#: abbreviations common in code, folded into their full word (both sides are stemmed)
ABBREVIATIONS = {
    "config": "configuration", "cfg": "configuration", "conf": "configuration", "init": "initialize",
    "param": "parameter", "arg": "argument", "env": "environment", "dir": "directory", "db": "database",
    "auth": "authentication", "msg": "message", "err": "error", "repo": "repository", "info": "information",
    "impl": "implementation", "doc": "document", "str": "string", "num": "number", "attr": "attribute",
}


def _fallback_stem(word: str) -> str:
    """A light suffix stripper (plurals, -ing, -ed), used when PyStemmer is not installed."""
    n = len(word)
    if n > 4 and word.endswith("ies"):
        return word[:-3] + "i"
    if n > 5 and word.endswith("sses"):
        return word[:-2]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and n - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]  # running -> run
            return stem
    if n > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _make_stemmer() -> Callable[[str], str]:
    try:
        import Stemmer  # PyStemmer: Snowball English
    except ImportError:
        log.debug("PyStemmer is not installed; search uses a light suffix stripper")
        return _fallback_stem
    return Stemmer.Stemmer("english").stemWord  # type: ignore[no-any-return]


_stem = _make_stemmer()
_ABBREV = {_stem(k): _stem(v) for k, v in ABBREVIATIONS.items()}


def _fold(word: str) -> str:
    """``word`` without accents: "Natásha" → "Natasha" (NFKD, combining marks dropped)."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _word_tokens(word: str) -> list[str]:
    """The tokens of one ``_WORD`` match: accents folded, camelCase split, lowercased, stemmed, folded.

    Words with digits (numbers, ids such as ``8b33e968``) are kept whole and not stemmed."""
    if not word.isascii():
        word = _fold(word)
    if word.islower():  # one part (the common case, and every id or number with a lowercase letter)
        if len(word) < 2 or word in STOP_WORDS:
            return []
        if not word.isalpha():
            return [word]
        s = _stem(word)
        return [_ABBREV.get(s, s)]
    if word.isdigit():
        return [word]
    out = []
    for p in _CAMEL.findall(word) if word.isascii() else [word]:
        p = p.lower()
        if len(p) < 2 and not p.isdigit() or p in STOP_WORDS:
            continue
        if p.isalpha():
            p = _stem(p)
            p = _ABBREV.get(p, p)
        out.append(p)
    return out


def tokenize(text: str) -> list[str]:
    """The tokens ``text`` is indexed (or queried) as; e.g. ``"loadConfig()"`` → ``["load", "configur"]``."""
    return [t for w in _WORD.findall(text) for t in _word_tokens(w)]


def query_tokens(query: str) -> list[str]:
    """A query's distinct tokens, in order."""
    return list(dict.fromkeys(tokenize(query)))


# ---------------------------------------------------------------------------- index
@dataclass
class _Index:
    text: str  # the indexed text (kept to verify cache hits exactly)
    docs_key: tuple[tuple[str, int, int], ...]
    unit: str
    paths: list[str]
    starts: np.ndarray  # per unit: start offset, end offset, first line, document number
    ends: np.ndarray
    lines: np.ndarray
    doc_of: np.ndarray
    bm25: Any  # a bm25s.BM25, or None when no unit has a word

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def nbytes(self) -> int:
        """About what the index holds in memory (the text itself belongs to the context)."""
        n = sum(a.nbytes for a in (self.starts, self.ends, self.lines, self.doc_of))
        if self.bm25 is not None:
            n += sum(a.nbytes for a in (self.bm25.scores["data"], self.bm25.scores["indices"],
                                        self.bm25.scores["indptr"]))
            n += 150 * len(self.bm25.vocab_dict)  # a str key, an int and a dict slot per term
        return n


@dataclass
class _Flat:
    """The tokenized corpus: all token ids in one array, unit ``i`` at ``tok[ptr[i]:ptr[i+1]]``.

    ``bm25s.BM25.index`` takes it as a corpus object (it has ``ids`` and ``vocab``)."""

    tok: np.ndarray  # int32
    ptr: np.ndarray  # int64, one more than there are units
    vocab: dict[str, int]

    @property
    def ids(self) -> _Flat:
        return self


def eager_scores(flat: _Flat, k1: float = K1, b: float = B) -> dict[str, Any]:
    """The BM25 score matrix of a flat corpus (CSC: one column per term), in numpy array steps.

    The scores ``bm25s.BM25()`` (Lucene variant) computes one document at a time in Python —
    ``tests/test_search.py`` checks they agree — but fast for a million units (a 100 MB log),
    and in two passes over blocks of units, so that no temporary array spans the corpus."""
    import numpy as np

    n, n_vocab = len(flat.ptr) - 1, len(flat.vocab)
    doc_len = np.diff(flat.ptr)
    len_norm = (k1 * (1 - b + b * doc_len / doc_len.mean())).astype(np.float32)
    blocks, u = [], 0
    while u < n:  # units in blocks of about 2M tokens
        v = min(max(int(np.searchsorted(flat.ptr, flat.ptr[u] + (1 << 21), side="right")) - 1, u + 1), n)
        blocks.append((u, v))
        u = v

    def pairs(u: int, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit, term, term frequency) of each distinct term of units u..v-1, by unit then term."""
        key = np.repeat(np.arange(u, v, dtype=np.int64), doc_len[u:v]) * n_vocab
        key += flat.tok[flat.ptr[u] : flat.ptr[v]]
        key.sort()
        first = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        tf = np.diff(np.append(first, len(key))).astype(np.float32)
        key = key[first]
        return (key // n_vocab).astype(np.int32), (key % n_vocab).astype(np.int32), tf

    df = np.zeros(n_vocab, dtype=np.int64)  # pass 1: document frequencies
    for u, v in blocks:
        df += np.bincount(pairs(u, v)[1], minlength=n_vocab)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    data = np.empty(int(indptr[-1]), dtype=np.float32)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    cursor = indptr[:-1].copy()  # pass 2: each block's scores go to the end of their term's column
    for u, v in blocks:
        doc, term, tf = pairs(u, v)
        order = np.argsort(term, kind="stable")  # by term; units stay ascending within a term
        term = term[order]
        heads = np.flatnonzero(np.concatenate(([True], term[1:] != term[:-1])))
        sizes = np.diff(np.append(heads, len(term)))
        dest = cursor[term] + (np.arange(len(term)) - np.repeat(heads, sizes))
        doc, tf = doc[order], tf[order]
        data[dest] = idf[term] * (tf / (len_norm[doc] + tf))
        indices[dest] = doc
        cursor[term[heads]] += sizes
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n}


_BM25: Any = None


def _bm25_class() -> Any:
    """``bm25s.BM25`` whose documented extension point, ``build_index_from_ids``, is :func:`eager_scores`."""
    global _BM25
    if _BM25 is None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on its logger at import

        class EagerBM25(bm25s.BM25):  # type: ignore[misc,name-defined]
            def build_index_from_ids(self, unique_token_ids: Any, corpus_token_ids: Any,
                                     show_progress: bool = True, leave_progress: bool = False) -> dict[str, Any]:
                self.nonoccurrence_array = None
                return eager_scores(corpus_token_ids, self.k1, self.b)

        _BM25 = EagerBM25
    return _BM25


class _Builder:
    """Tokenizes lines into one growing array and records each unit's span and place."""

    WORD_CACHE = 1 << 18  # distinct words kept tokenized; cleared when full (logs hold millions of ids)

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.words: dict[str, tuple[int, ...]] = {}
        self.tok = array("i")
        self.ptr, self.starts, self.ends, self.lines = array("q"), array("q"), array("q"), array("q")
        self.doc_of = array("i")
        self.mark = 0  # where the open unit's tokens begin

    def _miss(self, w: str) -> tuple[int, ...]:
        got = self.words.get(w)
        if got is None:
            if len(self.words) >= self.WORD_CACHE:
                self.words.clear()
            vocab = self.vocab
            toks = _word_tokens(w)
            if len(toks) == 1:
                i = vocab.get(toks[0])
                if i is None:
                    i = vocab[toks[0]] = len(vocab)
                got = (i,)
            else:
                got = tuple(vocab.setdefault(t, len(vocab)) for t in toks)
            self.words[w] = got
        return got

    def feed(self, text: str) -> None:
        """Add ``text``'s tokens to the open unit."""
        get, miss = self.words.get, self._miss
        self.tok.extend([i for w in _WORD.findall(text) for i in (get(w) or miss(w))])

    def close(self, start: int, end: int, line: int, doc: int) -> None:
        """End the open unit; it is kept only if it has tokens."""
        if len(self.tok) > self.mark:
            self.ptr.append(self.mark)
            self.starts.append(start)
            self.ends.append(end)
            self.lines.append(line)
            self.doc_of.append(doc)
            self.mark = len(self.tok)


def _iter_lines(text: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    """(offset, line) for each line of ``text[start:end]``, without its newline; block by block."""
    pos = start
    while pos < end:
        stop = min(end, pos + _BLOCK)
        if stop < end:
            nl = text.rfind("\n", pos, stop)
            stop = nl + 1 if nl >= 0 else (text.find("\n", stop, end) + 1 or end)
        block = text[pos:stop]
        parts = block.split("\n")
        if block.endswith("\n"):
            parts.pop()
        for ln in parts:
            yield pos, ln
            pos += len(ln) + 1
        pos = stop


def _regions(source: Context | str) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    if isinstance(source, Context):
        text = source.text
        docs = tuple((d.path, d.start, d.end) for d in source.documents) or (("<text>", 0, len(text)),)
        return text, docs
    return source, (("<text>", 0, len(source)),)


def _build(text: str, docs: tuple[tuple[str, int, int], ...], unit: str) -> _Index:
    import numpy as np

    b = _Builder()
    line, pos = 0, 0
    for di, (path, s, e) in enumerate(docs):
        line += text.count("\n", pos, s)
        pos, first = s, line
        if unit == "document" and not path.startswith(("<", "[")):
            b.feed(path)  # a document is also found by its path
        g_start, g_line, g_end = -1, first, s  # the open paragraph or chunk
        for n, (off, ln) in enumerate(_iter_lines(text, s, e)):
            if unit == "line":
                b.feed(ln)
                b.close(off, off + len(ln), first + n, di)
                continue
            if unit == "paragraph" and not ln.strip():
                if g_start >= 0:
                    b.close(g_start, g_end, g_line, di)
                g_start = -1
                continue
            if unit == "chunk" and n % CHUNK_LINES == 0 and g_start >= 0:
                b.close(g_start, g_end, g_line, di)
                g_start = -1
            if g_start < 0:
                g_start, g_line = off, first + n
            b.feed(ln)
            g_end = off + len(ln)
        if unit == "document":
            b.close(s, e, first, di)
        elif unit != "line" and g_start >= 0:
            b.close(g_start, g_end, g_line, di)
    b.words.clear()
    bm25 = None
    if b.ptr:
        b.ptr.append(len(b.tok))
        flat = _Flat(np.frombuffer(b.tok, dtype=np.int32), np.frombuffer(b.ptr, dtype=np.int64), b.vocab)
        bm25 = _bm25_class()()
        bm25.index(flat, create_empty_token=False, show_progress=False)
        bm25.unique_token_ids_set = None  # retrieve()'s id filter; get_scores_from_ids needs none of it
    return _Index(text, docs, unit, [d[0] for d in docs], np.frombuffer(b.starts, dtype=np.int64),
                  np.frombuffer(b.ends, dtype=np.int64), np.frombuffer(b.lines, dtype=np.int64),
                  np.frombuffer(b.doc_of, dtype=np.int32), bm25)


_CACHE: OrderedDict[tuple[Any, ...], _Index] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()
_stats = {"builds": 0}


def index_stats() -> dict[str, int]:
    """How many indexes this process has built, and how many are cached now."""
    with _CACHE_LOCK:
        return {"builds": _stats["builds"], "cached": len(_CACHE)}


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _cache_bytes() -> int:
    texts = {id(i.text): sys.getsizeof(i.text) for i in _CACHE.values()}
    return sum(i.nbytes for i in _CACHE.values()) + sum(texts.values())


def _lookup(key: tuple[Any, ...], text: str, docs: tuple[tuple[str, int, int], ...]) -> _Index | None:
    with _CACHE_LOCK:
        idx = _CACHE.get(key)
        if idx is not None and idx.docs_key == docs and (idx.text is text or idx.text == text):
            _CACHE.move_to_end(key)
            return idx
    return None


def get_index(source: Context | str, unit: str = "line") -> _Index:
    """The index of ``source`` for ``unit``: from the cache, or built now (and cached)."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; units are {UNITS}")
    text, docs = _regions(source)
    if len(text) > MAX_CHARS:
        raise CommandError(f"search: {len(text):,} characters are too many to index (at most {MAX_CHARS:,}); "
                           "use find or regex, or search a smaller piece with 'on'")
    key = (unit, len(text), hash(text), hash(docs))
    idx = _lookup(key, text, docs)
    if idx is not None:
        return idx
    with _BUILD_LOCK:  # one build at a time; a concurrent search for the same index waits for it
        idx = _lookup(key, text, docs)
        if idx is not None:
            return idx
        idx = _build(text, docs, unit)
        with _CACHE_LOCK:
            _stats["builds"] += 1
            _CACHE[key] = idx
            while len(_CACHE) > 1 and (len(_CACHE) > CACHE_SIZE or _cache_bytes() > CACHE_BYTES):
                _CACHE.popitem(last=False)
        log.debug("search index built: unit %s, %d units", unit, len(idx))
        return idx


# ---------------------------------------------------------------------------- search
def _check(query: Any, k: Any, unit: Any) -> list[str]:
    if not isinstance(query, str) or not query.strip():
        raise CommandError('search needs a non-empty "query": the words to look for, e.g. '
                           '{"op": "search", "query": "where is the config loaded"}')
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise CommandError(f"search: 'k' (how many passages) must be an integer from 1 to {MAX_K}, got {k!r}")
    if unit not in UNITS:
        close = difflib.get_close_matches(str(unit), UNITS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise CommandError(f"search: unknown unit {unit!r}.{hint} Units are: {', '.join(UNITS)}")
    toks = query_tokens(query)
    if not toks:
        raise CommandError(f"search: the query {query!r} has no searchable words (stop words, single letters "
                           "and punctuation are ignored); use find for an exact string")
    return toks


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best positive scores, best first; ties go to the earlier unit."""
    import numpy as np

    pos = np.flatnonzero(scores > 0)
    if len(pos) > k:
        vals = scores[pos]
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        pos = pos[vals >= kth]
    return pos[np.lexsort((pos, -scores[pos]))[:k]]


#: candidates (BM25's best) re-ranked by how much of the query's weight each matches
RERANK = 100


def _coord_top(idx: _Index, ids: list[int], scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best units as (unit, score): BM25 times the share of the query's IDF weight the unit matches.

    BM25's length normalisation lets a short line holding two common query words ("reins and started
    of his own accord") outrank the one line holding the query's rarest word ("Dr. Lindqvist wrote …");
    weighing each candidate by the IDF share of the query terms it contains (the idea of Lucene's
    classic ``coord`` factor, weighted) puts the passage that matches most of the question first."""
    import numpy as np

    cand = _top(scores, max(k, RERANK))
    if len(ids) < 2 or len(cand) < 2:
        return [(int(i), float(scores[i])) for i in cand[:k]]
    mat = idx.bm25.scores
    n = len(idx)
    have = np.zeros(len(cand), dtype=np.float64)
    total = 0.0
    for t in dict.fromkeys(ids):
        units = mat["indices"][mat["indptr"][t]: mat["indptr"][t + 1]]
        df = len(units)
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        total += idf
        have += idf * np.isin(cand, units)
    final = scores[cand] * (have / total if total > 0 else 1.0)
    order = np.lexsort((cand, -final))[:k]
    return [(int(cand[j]), float(final[j])) for j in order if final[j] > 0]


def _best_line(text: str, start: int, end: int, wanted: set[str]) -> tuple[int, str]:
    """(line number within the unit, line) of the unit's line sharing most query words; first wins.

    Only the unit's first :data:`BEST_SCAN_CHARS` characters are scanned (a document may be huge)."""
    best_n, best_got, best_ln = 0, -1, ""
    seen: dict[str, set[str]] = {}
    for n, (_, ln) in enumerate(_iter_lines(text, start, min(end, start + BEST_SCAN_CHARS))):
        got: set[str] = set()
        for w in _WORD.findall(ln):
            t = seen.get(w)
            if t is None:
                t = seen[w] = wanted.intersection(_word_tokens(w))
            got |= t
        if len(got) > best_got and (got or ln.strip()):
            best_n, best_got, best_ln = n, len(got), ln
            if best_got == len(wanted):
                break
    return best_n, best_ln


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def search(source: Context | str, query: str, k: int = 10, unit: str = "line") -> list[dict[str, Any]]:
    """The ``k`` passages of ``source`` that best match ``query`` (BM25), best first.

    Each hit is a dict: ``doc`` (document path), ``line`` (0-based number of the unit's first
    line in the whole text), ``offset`` / ``end`` (characters), ``score`` and ``text`` (the
    unit, capped at :data:`PASSAGE_CHARS`). Units larger than a line also give ``best_line``
    and ``best_text``: the unit's line sharing most words with the query. Passages sharing
    no word with the query are never returned. Raises :class:`CommandError` for bad
    arguments or a query without searchable words."""
    toks = _check(query, k, unit)
    hit_limit(k, "search", "k")  # under a host guard: k over [limits] max_host_hits is refused
    idx = get_index(source, unit)
    ids = idx.bm25.get_tokens_ids(toks) if idx.bm25 is not None else []
    if not ids:
        return []
    scores = idx.bm25.get_scores_from_ids(ids)
    text, wanted = idx.text, set(toks)
    hits = []
    for i, score in _coord_top(idx, ids, scores, k):
        s, e = int(idx.starts[i]), int(idx.ends[i])
        h: dict[str, Any] = {"doc": idx.paths[int(idx.doc_of[i])], "line": int(idx.lines[i]), "offset": s,
                             "end": e, "score": round(score, 4),
                             "text": _cut(text[s : min(e, s + PASSAGE_CHARS + 1)], PASSAGE_CHARS)}
        if unit != "line":
            n, ln = _best_line(text, s, e, wanted)
            h["best_line"], h["best_text"] = h["line"] + n, _cut(ln, BEST_LINE_CHARS)
            h["last_line"] = h["line"] + text.count("\n", s, e)
        hits.append(h)
    return hits


# ---------------------------------------------------------------------------- output
SHOW_CHARS = 300  # characters of a passage shown per hit, at most
MIN_SHOW_CHARS = 40  # ... and at least, when the output cap is tight (then the cap cuts the last hits)


def _show_docs(source: Context | str) -> bool:
    """Whether hits name their document: only when there are several."""
    return isinstance(source, Context) and len(source.documents) > 1


def render_hit(h: dict[str, Any], show_doc: bool, width: int = SHOW_CHARS) -> str:
    """One hit as a line (two for units larger than a line): where, score, passage (``width`` characters)."""
    where = f"{h['doc']}: " if show_doc else ""
    if "best_line" not in h:
        return f"{where}line {h['line']} (score {h['score']:g}): {_cut(h['text'].strip(), width)}"
    span = f"lines {h['line']}–{h['last_line']}" if h["last_line"] > h["line"] else f"line {h['line']}"
    return (f"{where}{span} (score {h['score']:g}): {_cut(' '.join(h['text'].split()), width)}\n"
            f"   best line {h['best_line']}: {_cut(h['best_text'].strip(), width)}")


def render(hits: list[dict[str, Any]], source: Context | str, query: str, unit: str,
           width: int = SHOW_CHARS) -> str:
    """What the model sees of a search: the ranked hits, then how to read around one."""
    idx = get_index(source, unit)
    vocab = idx.bm25.vocab_dict if idx.bm25 is not None else {}
    kept = {w: _word_tokens(w) for w in _WORD.findall(query)}  # the query's words as written
    kept = {w: t for w, t in kept.items() if t}
    missing = [w for w, t in kept.items() if not any(x in vocab for x in t)]
    words = ", ".join(kept) + (f" (not in the text: {', '.join(missing)})" if missing else "")
    q = json.dumps(query, ensure_ascii=False)
    if not hits:
        return (f"0 passages share a word with {q} (searched words: {words}). Try other words: synonyms, "
                "a name, a word the answer would sit next to; or find for an exact string.")
    show_doc = _show_docs(source)
    head = f"{len(hits)} {unit}(s) ranked for {q} (BM25 over the words {words}), best first:"
    body = [f"{i + 1}. {render_hit(h, show_doc, width)}" for i, h in enumerate(hits)]
    line = hits[0].get("best_line", hits[0]["line"])
    tail = f'read around a hit with {{"op": "lines", "start": {max(0, line - 5)}, "end": {line + 15}}}'
    return "\n".join([head, *body, tail])


#: hit 1 holds a question when it has at least this share of the question's IDF weight ...
HOLDS_SHARE = 0.6
#: ... and scores at least this many times hit 2
HOLDS_RATIO = 2.0


def question_share(source: Context | str, text: str, question: str, unit: str = "line") -> float:
    """The share of ``question``'s IDF weight (its words the text holds) that ``text`` holds."""
    idx = get_index(source, unit)
    if idx.bm25 is None:
        return 0.0
    mat, total = idx.bm25.scores, len(idx)
    held = {t for w in _WORD.findall(text) for t in _word_tokens(w)}
    have = weight = 0.0
    for tok in query_tokens(question):
        for t in idx.bm25.get_tokens_ids([tok]):
            idf = _idf(total, int(mat["indptr"][t + 1] - mat["indptr"][t]))
            weight += idf
            have += idf if tok in held else 0.0
    return have / weight if weight > 0 else 0.0


def hit_holds_question(source: Context | str, hits: list[dict[str, Any]], question: str, unit: str = "line") -> bool:
    """Whether a search's hit 1 is the passage a literal question asks about: it holds most of the
    question's weight (:data:`HOLDS_SHARE`) and far outscores hit 2 (:data:`HOLDS_RATIO`). "What is the
    secret password to the old library?" → "The secret password to the old library is AMBER-2500." (8.7
    against 1.4); a paraphrased question sharing no rare word with its answer does not qualify."""
    if not hits:
        return False
    if len(hits) > 1 and hits[0]["score"] < HOLDS_RATIO * hits[1]["score"]:
        return False
    return question_share(source, str(hits[0]["text"]), question, unit) >= HOLDS_SHARE


#: a word of hit 1 links to other passages when it is this rare: in at most this many units ...
LINK_MAX_DF = 3
#: ... or in at most this share of them (for two or more such words together)
LINK_SHARE = 1 / 300


def _idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


def linked_passages(source: Context | str, hits: list[dict[str, Any]], query: str, unit: str = "line",
                    n: int = 2) -> tuple[list[str], list[dict[str, Any]]]:
    """The second hop of a question: passages not among ``hits`` that share rare words with hit 1.

    "Who captained the ship that carried the letters to Memel?" ranks "… aboard the brig Halcyon"
    first; the answer ("Captain Thalberg commanded the Halcyon …") shares no rare word with the
    question, only with that hit. Words of hit 1 that the query lacks and that few units hold
    (at most :data:`LINK_SHARE` of them) are looked up; a passage qualifies when the rare words it
    shares weigh at least one word held by :data:`LINK_MAX_DF` units (one name, or two rarer common
    words: "the cook's dog"). Returns (the linking words as written in hit 1, up to ``n`` hits)."""
    import numpy as np

    if not hits:
        return [], []
    idx = get_index(source, unit)
    if idx.bm25 is None:
        return [], []
    mat, total = idx.bm25.scores, len(idx)
    asked = set(query_tokens(query))
    top = hits[0]["text"]
    written: dict[str, str] = {}
    for w in _WORD.findall(top):
        for t in _word_tokens(w):
            if t not in asked:
                written.setdefault(t, w)
    max_df = max(LINK_MAX_DF, int(total * LINK_SHARE))
    weight: dict[int, float] = {}
    words: dict[int, str] = {}
    for tok, w in written.items():
        for t in idx.bm25.get_tokens_ids([tok]):
            df = int(mat["indptr"][t + 1] - mat["indptr"][t])
            if 1 < df <= max_df:  # held by hit 1 alone: it links nothing
                weight[t], words[t] = _idf(total, df), w
    if not weight:
        return [], []
    shown = {h["offset"] for h in hits}
    got: dict[int, float] = {}
    used: dict[int, set[int]] = {}
    for t, wt in weight.items():
        for u in mat["indices"][mat["indptr"][t]: mat["indptr"][t + 1]].tolist():
            if int(idx.starts[u]) not in shown:
                got[u] = got.get(u, 0.0) + wt
                used.setdefault(u, set()).add(t)
    need = _idf(total, LINK_MAX_DF) - 1e-9
    best = sorted((u for u, g in got.items() if g >= need), key=lambda u: (-got[u], u))[:n]
    out: list[dict[str, Any]] = []
    for u in best:
        st, e = int(idx.starts[u]), int(idx.ends[u])
        out.append({"doc": idx.paths[int(idx.doc_of[u])], "line": int(idx.lines[u]), "offset": st, "end": e,
                    "score": round(float(got[u]), 4),
                    "text": _cut(idx.text[st: min(e, st + PASSAGE_CHARS + 1)], PASSAGE_CHARS),
                    "links": [words[t] for t in sorted(used[u], key=lambda t: -weight[t])]})
    del np
    linking = list(dict.fromkeys(w for h in out for w in h["links"]))
    return linking, out


def render_linked(links: list[str], linked: list[dict[str, Any]], source: Context | str,
                  width: int = SHOW_CHARS) -> str:
    """The linked passages under a search's hits ("" when there are none)."""
    if not linked:
        return ""
    show_doc = _show_docs(source)
    head = f"linked passages (they share rare words with hit 1: {', '.join(links)}):"
    body = [f"- {render_hit({k: v for k, v in h.items() if k != 'links'}, show_doc, width)}" for h in linked]
    return "\n".join([head, *body])


def closest_passages(context: Context | str, text: str, k: int = 3) -> str:
    """For a ``find`` of several words that had no literal hit: the ``k`` closest lines by ranked search.

    Returns "" when ``text`` has fewer than two searchable words or no line shares a word with it."""
    try:
        if len(query_tokens(text)) < 2:
            return ""
        hits = search(context, text, k=k, unit="line")
    except CommandError:
        return ""
    if not hits:
        return ""
    show_doc = _show_docs(context)
    lines = ["no literal hits; closest passages (lines sharing the most words, ranked by BM25):"]
    lines += [f"- {render_hit(h, show_doc)}" for h in hits]
    lines.append(f'(more: {{"op": "search", "query": {json.dumps(text, ensure_ascii=False)}}})')
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the L1 op
def _op_search(ex: CommandExecutor, cmd: dict[str, Any]) -> ActionOutput:
    text, ctx = ex._target(cmd)
    source: Context | str = ctx if ctx is not None else text
    k = 10 if cmd.get("k") is None else cmd["k"]
    unit = cmd.get("unit") or "line"
    hits = search(source, cmd["query"], k, unit)
    limit, width = ex.s.limits.max_output_chars, SHOW_CHARS
    out = render(hits, source, cmd["query"], unit, width)
    while hits and 0 < limit < len(out) and width > MIN_SHOW_CHARS:  # shorter passages, so that all hits fit
        per_line = -(-(len(out) - limit) // (len(hits) * (1 if unit == "line" else 2)))
        width = max(MIN_SHOW_CHARS, width - per_line - 1)
        out = render(hits, source, cmd["query"], unit, width)
    read = [[h["offset"], min(h["end"], h["offset"] + width)] for h in hits] if ctx is not None else []
    return ActionOutput(out, hits=len(hits), meta={"value": hits, "read": read, "ranked": hits})


register_op(
    "search",
    Spec({"query": STR}, {"k": INT, "unit": STR},
         '{"op": "search", "query": "where is the configuration loaded", "k": 10, "unit": "line"}'),
    _op_search,
)

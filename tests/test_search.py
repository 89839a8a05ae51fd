"""Ranked search (BM25): tokens, units, exact places, the index cache, the L1 op and the code levels."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from conftest import REPO
from helpers import cmd, outputs, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contextbox import Config, Context, ops
from contextbox import search as S
from contextbox.config import Aids
from contextbox.errors import CommandError
from contextbox.executors import Action, Session, executor_factory
from contextbox.levels.commands import CommandExecutor
from contextbox.types import Limits


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    S.clear_cache()


def l1(ctx: Any) -> CommandExecutor:
    return CommandExecutor(Session(Context.from_value(ctx), Limits(max_output_chars=8000), ("l1",), "t"))


def l1_run(ex: CommandExecutor, **args: Any) -> Any:
    return ex.run(Action("command", "l1", str(args.get("op")), args))


# ----------------------------------------------------------------------------- the engine, on this project
def test_search_op_through_the_engine_finds_the_toml_loading_code() -> None:
    ctx = Context.load(REPO / "src", include=["*.py"])
    res, _ = run([cmd("search", query="load toml configuration", unit="line", store="hits"),
                  cmd("final", answer="config.py")], context=ctx)
    out = outputs(res)[0]
    ranked = [ln for ln in out.splitlines() if re.match(r"\d+\. ", ln)]
    assert len(ranked) == 10
    top3 = [re.match(r"\d+\. (\S+): line (\d+) \(score ([\d.]+)\): (.*)$", ln) for ln in ranked[:3]]
    assert all(top3) and any(m.group(1) == "contextbox/config.py" for m in top3)
    scores = [float(re.search(r"\(score ([\d.]+)\)", ln).group(1)) for ln in ranked]
    assert scores == sorted(scores, reverse=True)
    all_lines = ops.lines(ctx.text)
    for m in top3:  # "doc: line N" is exact: line N of the whole text, inside that document
        n = int(m.group(2))
        assert all_lines[n].strip()[:100] == m.group(4)[:100]
        assert ctx.document_at(ctx.line_start(n)).path == m.group(1)
    assert res.answer == "config.py"


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("text", ["load_config", "Config.load", "loadConfig", "LOAD-CONFIG", "load config",
                                  "config::load()", "loading configurations", "loadedConfigs"])
def test_code_names_and_prose_read_as_the_same_words(text: str) -> None:
    assert sorted(S.tokenize(text)) == sorted(S.tokenize("load configuration"))


def test_tokenizer_cases() -> None:
    assert S.tokenize("HTTPServer") == ["http", "server"]
    assert S.tokenize("getHTTPResponse") == ["get", "http", "respons"]
    assert S.tokenize("parse_json_file") == ["pars", "json", "file"]
    assert S.tokenize("os.path.join") == ["os", "path", "join"]
    assert S.tokenize("The cat and a dog") == ["cat", "dog"]  # stop words and single letters dropped
    assert S.tokenize("error 404 at req=8b33e968 x 7") == ["error", "404", "req", "8b33e968", "7"]
    assert S.tokenize("Natasha MARRIED Pierre") == ["natasha", "marri", "pierr"]
    assert S.tokenize("École Über Natásha Rostóv ﬁle") == S.tokenize("ecole uber natasha rostov file")
    assert S.tokenize("Москва 中文") == ["москва", "中文"]
    assert S.tokenize("cfg params args env") == S.tokenize("configuration parameters arguments environment")
    assert S.query_tokens("config config Config.load") == ["configur", "load"]


@pytest.mark.parametrize(("word", "stem"), [("files", "file"), ("marries", "marri"), ("loading", "load"),
                                            ("loaded", "load"), ("running", "run"), ("classes", "class"),
                                            ("status", "status"), ("glass", "glass"), ("bed", "bed")])
def test_fallback_stemmer(word: str, stem: str) -> None:
    assert S._fallback_stem(word) == stem


def test_plurals_and_verb_forms_match() -> None:
    text = "nothing here\nthe configuration loads slowly\nthe files were opened\n"
    assert [h["line"] for h in S.search(text, "configurations loaded")] == [1]
    assert [h["line"] for h in S.search(text, "opening a file")] == [2]


# ----------------------------------------------------------------------------- exact places
LINE = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "the", "Über", "café", "load_config",
                                 "loadConfig", " ", "  ", "\t", "!", "42"]), max_size=8).map(" ".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=30), crlf=st.booleans(), trailing=st.booleans(),
       query=st.sampled_from(["alpha", "beta gamma", "config", "café", "42", "über delta"]))
def test_line_hits_are_the_exact_lines_sharing_a_word(lines: list[str], crlf: bool, trailing: bool,
                                                       query: str) -> None:
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if trailing else "")
    hits = S.search(text, query, k=S.MAX_K)
    plain = ops.lines(text)
    starts = [m.start() for m in re.finditer(r"(?m)^", text)][: len(plain)]
    wanted = set(S.query_tokens(query))
    assert {h["line"] for h in hits} == {i for i, ln in enumerate(plain) if wanted & set(S.tokenize(ln))}
    for h in hits:
        assert h["text"] == plain[h["line"]] == text[h["offset"] : h["end"]]
        assert h["offset"] == starts[h["line"]] and h["doc"] == "<text>"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@settings(max_examples=60, deadline=None)
@given(paras=st.lists(st.lists(LINE.filter(lambda s: s.strip() != ""), min_size=1, max_size=4), min_size=1,
                      max_size=8),
       gaps=st.lists(st.sampled_from(["\n", "\n\n", "\n \t\n", "\n\n\n"]), min_size=8, max_size=8))
def test_paragraph_hits_are_exact_blank_line_separated_blocks(paras: list[list[str]], gaps: list[str]) -> None:
    parts, blocks, pos = [], [], 0
    for i, p in enumerate(paras):
        body = "\n".join(p)
        blocks.append((pos, pos + len(body), body))
        parts.append(body + gaps[i])
        pos += len(body) + len(gaps[i])
    text = "".join(parts)
    # a block boundary only where a blank line separates; a single "\n" gap joins two blocks
    expected, cur = [], None
    for i, (s, e, _) in enumerate(blocks):
        cur = (cur[0], e) if cur is not None and gaps[i - 1] == "\n" else (s, e)
        if i == len(blocks) - 1 or gaps[i] != "\n":
            expected.append(cur)
    expected = [(s, e) for s, e in expected if S.tokenize(text[s:e])]
    query = "alpha beta gamma delta config café über 42"
    hits = S.search(text, query, k=S.MAX_K, unit="paragraph")
    wanted = {(s, e) for s, e in expected if set(S.query_tokens(query)) & set(S.tokenize(text[s:e]))}
    assert {(h["offset"], h["end"]) for h in hits} == wanted
    for h in hits:
        assert h["text"] == text[h["offset"] : h["end"]]
        assert h["line"] == text.count("\n", 0, h["offset"]) and h["last_line"] == text.count("\n", 0, h["end"])
        assert h["line"] <= h["best_line"] <= h["last_line"]
        assert h["best_text"] == ops.lines(text)[h["best_line"]]


def test_chunk_units_are_groups_of_lines_per_document() -> None:
    doc_a = "".join(f"a line {i}\n" for i in range(45))
    ctx = Context.from_documents([("a.txt", doc_a), ("b.txt", "zebra here\n" * 3)])
    hits = S.search(ctx, "line zebra", k=10, unit="chunk")
    got = sorted((h["doc"], h["line"], h["last_line"]) for h in hits)
    first_a = ctx.line_of(ctx.documents[0].start)
    first_b = ctx.line_of(ctx.documents[1].start)
    assert got == [("a.txt", first_a, first_a + 19), ("a.txt", first_a + 20, first_a + 39),
                   ("a.txt", first_a + 40, first_a + 44), ("b.txt", first_b, first_b + 2)]
    for h in hits:
        assert h["text"] == ctx.text[h["offset"] : h["end"]]


def test_document_units_and_multi_document_paths() -> None:
    ctx = Context.from_documents([
        ("notes/todo.md", "buy milk\ncall the plumber\n"),
        ("src/parser.py", "def parse(tokens):\n    return tree\n"),
        ("logs/app.log", "ERROR disk full\nINFO ok\nERROR disk full again\n"),
    ])
    hits = S.search(ctx, "disk error", unit="document")
    assert [h["doc"] for h in hits] == ["logs/app.log"]
    d = ctx.documents[2]
    assert (hits[0]["offset"], hits[0]["end"], hits[0]["line"]) == (d.start, d.end, ctx.line_of(d.start))
    assert hits[0]["best_text"] == "ERROR disk full"
    assert [h["doc"] for h in S.search(ctx, "parser", unit="document")] == ["src/parser.py"]  # by its path
    assert S.search(ctx, "parser", unit="line") == []  # a line is not found by its document's path
    line_hits = S.search(ctx, "plumber tree")
    assert [(h["doc"], h["text"]) for h in line_hits] in (
        [("notes/todo.md", "call the plumber"), ("src/parser.py", "    return tree")],
        [("src/parser.py", "    return tree"), ("notes/todo.md", "call the plumber")])
    for h in line_hits:
        assert h["line"] == ctx.line_of(h["offset"]) and ctx.document_at(h["offset"]).path == h["doc"]
        assert ops.lines(ctx.text)[h["line"]] == h["text"]


def test_ranking_prefers_rare_words_and_ties_go_to_the_earlier_line() -> None:
    text = "the common word\nthe common word\nthe rare zeppelin word\nnothing\n"
    hits = S.search(text, "common zeppelin")
    assert hits[0]["line"] == 2  # the rarer word weighs more
    assert [h["line"] for h in hits[1:]] == [0, 1]
    assert hits[1]["score"] == hits[2]["score"]
    assert [h["line"] for h in S.search(text, "common", k=1)] == [0]


def test_passages_are_capped() -> None:
    text = "short needle\n" + "needle " + "x" * 5000 + "\n"
    hits = S.search(text, "needle")
    long = next(h for h in hits if h["line"] == 1)
    assert len(long["text"]) == S.PASSAGE_CHARS and long["text"].endswith("…")
    assert long["end"] - long["offset"] == 5007


# ----------------------------------------------------------------------------- bm25s agreement
@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=12), min_size=1, max_size=25),
       query=st.lists(st.sampled_from("abcdefghijk"), min_size=1, max_size=4, unique=True))
def test_eager_index_scores_equal_bm25s_own_index(docs: list[list[str]], query: list[str]) -> None:
    import bm25s

    ref = bm25s.BM25()
    ref.index(docs, show_progress=False)
    vocab: dict[str, int] = {}
    tok = np.array([vocab.setdefault(t, len(vocab)) for d in docs for t in d], dtype=np.int32)
    ptr = np.concatenate(([0], np.cumsum([len(d) for d in docs]))).astype(np.int64)
    ours = S._bm25_class()()
    ours.index(S._Flat(tok, ptr, vocab), create_empty_token=False, show_progress=False)
    q = [t for t in query if t in vocab]
    if q:
        np.testing.assert_allclose(ours.get_scores(q), ref.get_scores(q), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the cache
def test_index_is_built_once_per_text_and_unit() -> None:
    ctx = Context.from_value("alpha beta\ngamma delta\n" * 50)
    before = S.index_stats()["builds"]
    first = S.search(ctx, "alpha")
    assert S.search(ctx, "gamma delta") and S.search(ctx, "alpha", k=3)
    assert S.index_stats()["builds"] == before + 1
    same_text = Context.from_value("".join(["alpha beta\ngamma delta\n"] * 50))  # another object, same text
    assert S.search(same_text, "alpha") == first
    assert S.index_stats()["builds"] == before + 1
    S.search(ctx, "alpha", unit="paragraph")
    assert S.index_stats()["builds"] == before + 2
    other = Context.from_value("alpha beta\ngamma delta\n" * 49 + "alpha beta\ngamma delts\n")  # same length
    assert len(other.text) == len(ctx.text)
    assert S.search(other, "delts") and S.index_stats()["builds"] == before + 3


def test_same_text_with_other_documents_is_another_index() -> None:
    a = Context.from_documents([("a.txt", "zebra one\n"), ("b.txt", "zebra two\n")])
    b = Context.from_documents([("x.txt", "zebra one\n"), ("y.txt", "zebra two\n")])
    b.text = a.text  # same text, different document paths
    b.documents = [type(d)(p, d.start, d.end) for d, p in zip(a.documents, ["x.txt", "y.txt"], strict=True)]
    assert {h["doc"] for h in S.search(a, "zebra")} == {"a.txt", "b.txt"}
    assert {h["doc"] for h in S.search(b, "zebra")} == {"x.txt", "y.txt"}


def test_least_recently_used_index_is_evicted() -> None:
    texts = [f"word{i} common\n" * 3 for i in range(S.CACHE_SIZE + 1)]
    before = S.index_stats()["builds"]
    for t in texts:
        S.search(t, "common")
    assert S.index_stats() == {"builds": before + S.CACHE_SIZE + 1, "cached": S.CACHE_SIZE}
    S.search(texts[-1], "common")  # still cached
    assert S.index_stats()["builds"] == before + S.CACHE_SIZE + 1
    S.search(texts[0], "common")  # evicted: built again
    assert S.index_stats()["builds"] == before + S.CACHE_SIZE + 2


def test_questions_of_a_session_reuse_the_index() -> None:
    ctx = Context.from_value("the vault code is 4417\nnothing else\n" * 20)
    before = S.index_stats()["builds"]
    for _ in range(2):
        res, _ = run([cmd("search", query="what is the vault code"), cmd("search", query="vault"),
                      cmd("final", answer="4417")], context=ctx)
        assert res.answer == "4417"
    assert S.index_stats()["builds"] == before + 1


# ----------------------------------------------------------------------------- the L1 op
def test_search_op_output_store_and_on() -> None:
    ex = l1("first line about apples\nsecond line about pears\nthird: apples and pears\n")
    out = l1_run(ex, op="search", query="apples pears", store="hits")
    assert out.hits == 3
    assert out.text.splitlines()[1].startswith("1. line 2 (score ")  # a plain text names no document
    hits = ex.s.variables["hits"]
    assert [h["line"] for h in hits] == [2, 0, 1]
    assert set(hits[0]) == {"doc", "line", "offset", "end", "score", "text"}
    assert out.meta["read"] == [[h["offset"], h["end"]] for h in hits]
    assert "(stored in 'hits')" in out.text
    ex.s.variables["notes"] = "nothing\nmore pears here\n"
    out = l1_run(ex, op="search", query="pears", on="notes", store="mine")
    assert [(h["line"], h["text"]) for h in ex.s.variables["mine"]] == [(1, "more pears here")]
    assert out.meta["read"] == []  # not the context


def test_search_op_zero_hits_names_the_missing_words() -> None:
    ex = l1("alpha beta\n")
    out = l1_run(ex, op="search", query="zeppelin airship")
    assert out.hits == 0 and out.meta.get("value") is None
    assert out.text.startswith("0 passages share a word") and "not in the text: zeppelin, airship" in out.text


def test_search_op_multi_document_output_names_documents() -> None:
    ctx = Context.from_documents([("a.txt", "nothing\n"), ("dir/b.txt", "one\nthe needle is here\n")])
    ex = l1(ctx)
    out = l1_run(ex, op="search", query="needle")
    n = ctx.line_of(ctx.text.index("the needle"))
    assert f"1. dir/b.txt: line {n} (score" in out.text
    assert f'"start": {max(0, n - 5)}, "end": {n + 15}' in out.text


@pytest.mark.parametrize(("args", "needle"), [
    ({"query": "x", "unit": "sentence"}, "unknown unit 'sentence'"),
    ({"query": "x", "unit": "lines"}, "Did you mean 'line'?"),
    ({"query": "x", "k": 0}, "'k' (how many passages) must be an integer from 1 to 200"),
    ({"query": "x", "k": 500}, "from 1 to 200"),
    ({"query": "x", "k": "5"}, "'k' must be integer"),
    ({"query": "   "}, 'search needs a non-empty "query"'),
    ({"query": "the of and"}, "has no searchable words"),
    ({}, "search needs 'query'"),
    ({"query": "x", "max": 3}, "search has no argument 'max'"),
])
def test_bad_arguments_are_one_line_errors(args: dict[str, Any], needle: str) -> None:
    with pytest.raises(CommandError) as info:
        l1_run(l1("alpha\n"), op="search", **args)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_search_in_a_run_is_reported_and_the_run_goes_on() -> None:
    res, _ = run([cmd("search", query="alpha", unit="word"), cmd("search", query="alpha"),
                  cmd("final", answer="alpha")])
    outs = outputs(res)
    assert "unknown unit 'word'" in outs[0] and "1 line(s) ranked" in outs[1]
    assert res.answer == "alpha"


# ----------------------------------------------------------------------------- closest passages
def test_closest_passages_for_a_find_without_literal_hits() -> None:
    ctx = Context.load(REPO / "src", include=["*.py"])
    query = "parse the configuration from toml files"
    assert ops.find(ctx.text, query) == []
    text = S.closest_passages(ctx, query, k=3)
    lines = text.splitlines()
    assert lines[0].startswith("no literal hits; closest passages")
    assert len([ln for ln in lines if ln.startswith("- ")]) == 3
    top = S.search(ctx, query, k=3)
    for ln, h in zip(lines[1:4], top, strict=True):
        assert ln.startswith(f"- {h['doc']}: line {h['line']} (score ")
    assert lines[-1] == '(more: {"op": "search", "query": "parse the configuration from toml files"})'


def test_closest_passages_stays_silent_when_it_cannot_help() -> None:
    text = "alpha beta\ngamma delta\n"
    assert S.closest_passages(text, "alpha") == ""  # one word: nothing to add to the zero-hits hint
    assert S.closest_passages(text, "the alpha of") == ""  # one searchable word
    assert S.closest_passages(text, "zeppelin airship") == ""  # no shared word
    got = S.closest_passages(text, "beta zeppelin", k=3)
    assert got.splitlines()[1] == "- line 0 (score " + f"{S.search(text, 'beta')[0]['score']:g}): alpha beta"


def test_ranked_fallback_config_key(tmp_path: Any) -> None:
    assert Aids().ranked_fallback is True and Config().aids.ranked_fallback is True
    p = tmp_path / "c.toml"
    p.write_text("[aids]\nranked_fallback = false\n")
    assert Config.load(p).aids.ranked_fallback is False
    p.write_text('[aids]\nranked_fallback = "maybe"\n')
    with pytest.raises(Exception, match="ranked_fallback"):
        Config.load(p)


# ----------------------------------------------------------------------------- code levels
@pytest.mark.parametrize("level", ["l2", "l3"])
def test_search_in_code_cells(level: str) -> None:
    ctx = Context.from_documents([("a.md", "intro\n"), ("b.md", "the loadConfig function\nend\n")])
    s = Session(ctx, Limits(), ("l1", level), "t", services={"l2_time_limit_s": 10, "l3_time_limit_s": 10})
    ex = executor_factory(level)(s)
    try:
        code = ("hits = search('load config', k=2)\n"
                "print(hits[0]['doc'], hits[0]['line'], hits[0]['text'])\n"
                "print(search('zeta', text='alpha\\nzeta beta')[0]['line'])\n"
                "print(len(search('intro function', 5, 'document')))")
        out = ex.run(Action(kind="code", level=level, op="code", args={"code": code}, source=code))
        n = ctx.line_of(ctx.text.index("the loadConfig"))
        assert out.text.splitlines() == [f"b.md {n} the loadConfig function", "1", "2"], out.text
        bad = "search('x', unit='word')"
        out = ex.run(Action(kind="code", level=level, op="code", args={"code": bad}, source=bad))
        assert out.error and "unknown unit 'word'" in out.text
    finally:
        ex.close()


# ----------------------------------------------------------------------------- limits
def test_output_fits_a_small_models_output_cap(war_and_peace: Any) -> None:
    ctx = Context.load(war_and_peace)
    for unit, limit in (("line", 3000), ("line", 1500), ("paragraph", 3000), ("paragraph", 2000)):
        ex = CommandExecutor(Session(ctx, Limits(max_output_chars=limit), ("l1",), "t"))
        out = l1_run(ex, op="search", query="Natasha sings at the dinner for the count", unit=unit)
        assert "[output cut" not in out.text and len(out.text) <= limit
        assert len([ln for ln in out.text.splitlines() if re.match(r"\d+\. ", ln)]) == 10
        assert out.text.splitlines()[-1].startswith('read around a hit with {"op": "lines"')
        if unit == "paragraph":
            assert re.search(r"…$", out.text, re.M)  # passages were shortened to fit
    roomy = CommandExecutor(Session(ctx, Limits(max_output_chars=100_000), ("l1",), "t"))
    out = l1_run(roomy, op="search", query="Natasha sings at the dinner for the count", unit="paragraph")
    widest = max(len(ln.split("): ", 1)[-1]) for ln in out.text.splitlines() if re.match(r"\d+\. ", ln))
    assert widest == S.SHOW_CHARS  # not shortened when there is room


def test_too_large_a_text_is_refused_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "MAX_CHARS", 50)
    before = S.index_stats()["builds"]
    with pytest.raises(CommandError, match=r"^search: 60 characters are too many to index \(at most 50\); use find"):
        S.search("alpha " * 10, "alpha")
    assert S.index_stats()["builds"] == before
    assert S.search("alpha " * 8, "alpha")  # 48 characters: fine


def test_cache_byte_budget_keeps_only_the_newest_when_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "CACHE_BYTES", 1)
    S.search("alpha beta\n" * 10, "alpha")
    S.search("gamma delta\n" * 10, "gamma")
    assert S.index_stats()["cached"] == 1
    before = S.index_stats()["builds"]
    S.search("gamma delta\n" * 10, "delta")  # the newest stays
    assert S.index_stats()["builds"] == before


def test_without_pystemmer_the_suffix_stripper_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "Stemmer", None)  # import Stemmer now raises ImportError
    stem = S._make_stemmer()
    assert stem is S._fallback_stem
    assert [stem(w) for w in ("configurations", "loaded", "files")] == ["configuration", "load", "file"]

"""Loading contexts: files, directories, stdin, values; the large-file reader; metadata."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from contextbox import context as context_mod
from contextbox.context import Context, Document, decode_bytes, read_text_file
from contextbox.errors import ContextError, UsageError


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8"))
    else:
        path.write_bytes(data)
    return path


def doc_texts(ctx: Context) -> dict[str, str]:
    return {d.path: ctx.text[d.start : d.end] for d in ctx.documents}


def read_replace(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read()


# ----------------------------------------------------------------------------- files
def test_one_file(tmp_path: Path) -> None:
    body = "first line\nsecond — ünïcødé 中文 😀\r\nthird"
    f = write(tmp_path / "a.txt", body)
    ctx = Context.load(f)
    assert ctx.text == body  # exactly the file, no header, \r\n kept
    assert ctx.kind == "text"
    assert ctx.documents == [Document(str(f), 0, len(body))]
    assert ctx.warnings == []
    assert ctx.source_file == str(f.resolve())
    assert len(ctx) == len(body)
    assert ctx.n_lines == 3


def test_one_file_as_list_and_str(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "x\n")
    assert Context.load(str(f)).text == Context.load([f]).text == "x\n"


def test_many_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "alpha\nneedle A\n")
    b = write(tmp_path / "b.md", "beta without newline: needle B")
    c = write(tmp_path / "c.txt", "")
    ctx = Context.load([a, b, c])
    assert ctx.kind == "documents"
    assert [d.path for d in ctx.documents] == [str(a), str(b), str(c)]
    assert doc_texts(ctx) == {str(a): "alpha\nneedle A\n", str(b): "beta without newline: needle B", str(c): ""}
    for d in ctx.documents:
        header = f"==> {d.path} <==\n"
        assert ctx.text[d.start - len(header) : d.start] == header
    assert ctx.text == (
        f"==> {a} <==\nalpha\nneedle A\n"
        f"==> {b} <==\nbeta without newline: needle B\n"
        f"==> {c} <==\n\n"
    )
    # offsets of hits map back to the right document
    off = ctx.text.index("needle B")
    assert ctx.document_at(off).path == str(b)
    assert ctx.document_at(ctx.text.index("needle A")).path == str(a)
    assert ctx.document_at(0).path == str(a)  # a header belongs to its document
    assert ctx.source_file is None


def test_directory_recursive_with_globs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "main.py", "print('main')\n")
    write(root / "README.md", "# readme\n")
    write(root / "pkg" / "mod.py", "x = 1\n")
    write(root / "pkg" / "deep" / "more.py", "y = 2\n")
    write(root / "pkg" / "data.json", "{}\n")
    write(root / "build" / "gen.py", "generated\n")
    write(root / ".git" / "config", "[core]\n")
    write(root / ".git" / "objects" / "ab.py", "not source\n")
    write(root / "pkg" / "__pycache__" / "mod.cpython-311.pyc", b"\x00\x01")

    ctx = Context.load(root)
    paths = [d.path for d in ctx.documents]
    # sorted, top-down: a directory's files before its subdirectories
    assert paths == ["README.md", "main.py", "build/gen.py", "pkg/data.json", "pkg/mod.py", "pkg/deep/more.py"]
    assert not any(p.startswith(".git") or "__pycache__" in p for p in paths)
    texts = doc_texts(ctx)
    assert texts["pkg/deep/more.py"] == "y = 2\n"
    assert "==> pkg/mod.py <==\nx = 1\n" in ctx.text

    ctx = Context.load(root, include=["*.py"], exclude=["build/*"])
    assert sorted(d.path for d in ctx.documents) == ["main.py", "pkg/deep/more.py", "pkg/mod.py"]

    ctx = Context.load(root, include=["pkg/*"])
    assert sorted(d.path for d in ctx.documents) == ["pkg/data.json", "pkg/deep/more.py", "pkg/mod.py"]

    ctx = Context.load(root, include=["*.md"])  # one file: its text as is, no header
    assert ctx.text == "# readme\n" and ctx.kind == "text"
    assert ctx.documents[0].path == "README.md"


def test_directory_next_to_files_uses_full_paths(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write(root / "x.txt", "in dir\n")
    f = write(tmp_path / "f.txt", "loose\n")
    ctx = Context.load([root, f])
    assert [d.path for d in ctx.documents] == [str(root / "x.txt"), str(f)]
    assert doc_texts(ctx) == {str(root / "x.txt"): "in dir\n", str(f): "loose\n"}


def test_stdin() -> None:
    ctx = Context.load("-", stdin=io.BytesIO("from stdin — ok\n".encode()))
    assert ctx.text == "from stdin — ok\n"
    assert ctx.documents[0].path == "<stdin>"
    assert ctx.source_file is None


def test_stdin_with_file(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "file text\n")
    ctx = Context.load([f, "-"], stdin=io.BytesIO(b"piped"))
    assert doc_texts(ctx) == {str(f): "file text\n", "<stdin>": "piped"}
    assert "==> <stdin> <==\npiped\n" in ctx.text


def test_undecodable_bytes_are_replaced_and_counted(tmp_path: Path) -> None:
    raw = b"ok \xff\xfe then \xc3 and valid \xc3\xa9 end\n"
    f = write(tmp_path / "bad.txt", raw)
    ctx = Context.load(f)
    assert ctx.text == raw.decode("utf-8", "replace")
    assert ctx.text.count("\ufffd") == 3
    assert any("3 undecodable byte(s)" in w and "U+FFFD" in w for w in ctx.warnings)
    assert ctx.source_file is None  # the text is not the file's bytes any more

    ctx = Context.load("-", stdin=io.BytesIO(b"\x80\x81"))
    assert ctx.text == "\ufffd\ufffd"
    assert any("2 undecodable byte(s)" in w for w in ctx.warnings)

    assert decode_bytes(b"plain") == ("plain", 0)
    assert decode_bytes(b"\xe2\x82") == ("\ufffd", 2)  # truncated sequence: one replacement, two bytes


def test_undecodable_bytes_summed_over_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", b"\xff")
    b = write(tmp_path / "b.txt", b"x\xfe\xfd")
    ctx = Context.load([a, b])
    assert any("3 undecodable byte(s)" in w for w in ctx.warnings)


def test_empty_file_warns(tmp_path: Path) -> None:
    f = write(tmp_path / "empty.txt", b"")
    ctx = Context.load(f)
    assert ctx.text == ""
    assert ctx.n_lines == 0
    assert any("empty" in w for w in ctx.warnings)
    assert "warning: the context is empty" in ctx.describe()


def test_binary_file_in_directory_is_skipped(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "text\n")
    write(tmp_path / "img.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    ctx = Context.load(tmp_path)
    assert [d.path for d in ctx.documents] == ["a.txt"]
    assert any("skipped binary file" in w and "img.png" in w for w in ctx.warnings)
    # the binary file's bad bytes are not counted as replaced
    assert not any("undecodable" in w for w in ctx.warnings)


def test_directory_of_only_binary_files(tmp_path: Path) -> None:
    write(tmp_path / "a.bin", b"\x00\x01\x02")
    with pytest.raises(ContextError, match="no readable text files"):
        Context.load(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="not found"):
        Context.load(tmp_path / "nope.txt")
    with pytest.raises(ContextError, match="not found"):
        read_text_file(tmp_path / "nope.txt")
    assert issubclass(ContextError, UsageError)


def test_directory_without_matching_files(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x")
    with pytest.raises(ContextError, match="no files matching"):
        Context.load(tmp_path, include=["*.py"])
    with pytest.raises(ContextError, match="no files matching"):
        Context.load(tmp_path, exclude=["*.txt"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ContextError):
        Context.load(empty)


def test_no_sources() -> None:
    with pytest.raises(ContextError):
        Context.load([])


def test_read_text_file_on_directory(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match="directory"):
        read_text_file(tmp_path)


# ----------------------------------------------------------------------------- values
def test_from_value_str() -> None:
    ctx = Context.from_value("héllo\nworld")
    assert ctx.text == "héllo\nworld" and ctx.kind == "text"
    assert ctx.documents == [Document("<text>", 0, 11)]
    assert Context.from_value(ctx) is ctx


def test_from_value_list_of_str() -> None:
    ctx = Context.from_value(["one", "two\n", ""])
    assert ctx.kind == "documents"
    assert doc_texts(ctx) == {"[0]": "one", "[1]": "two\n", "[2]": ""}
    assert ctx.text.startswith("==> [0] <==\none\n==> [1] <==\ntwo\n")
    single = Context.from_value(["only"])
    assert single.text == "only" and single.documents[0].path == "[0]"


def test_from_value_dict_of_str() -> None:
    ctx = Context.from_value({"intro": "Once upon a time", "end": "The end.\n"})
    assert doc_texts(ctx) == {"intro": "Once upon a time", "end": "The end.\n"}
    assert "==> intro <==\n" in ctx.text


def test_from_value_json() -> None:
    value = {"name": "Zoë", "n": [1, 2, {"deep": True}], "none": None}
    ctx = Context.from_value(value)
    assert ctx.kind == "json"
    assert json.loads(ctx.text) == value
    assert "Zoë" in ctx.text  # not \u-escaped
    assert Context.from_value([1, "a"]).kind == "json"
    assert Context.from_value([]).text == "[]"
    assert Context.from_value(42).text == "42"


def test_from_value_bytes() -> None:
    ctx = Context.from_value(b"caf\xc3\xa9 \xff")
    assert ctx.text == "café \ufffd"
    assert any("1 undecodable byte(s)" in w for w in ctx.warnings)


def test_from_value_unserialisable() -> None:
    class Loop(dict):
        pass

    d: dict = Loop()
    d["self"] = d
    with pytest.raises(ContextError):
        Context.from_value(d)


# ----------------------------------------------------------------------------- the large-file reader
@pytest.fixture
def small_large(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of 16 bytes or more goes through the in-place large-file reader."""
    monkeypatch.setattr(context_mod, "LARGE_FILE_BYTES", 16)


def _large_cases() -> dict[str, bytes]:
    line = "2024-05-01 12:00:00 INFO request id=42 path=/api/v1/items status=200\n"
    return {
        "ascii": (line * 500).encode(),
        "ascii_no_newline": (line * 10).encode().rstrip(b"\n"),
        "crlf": (line.replace("\n", "\r\n") * 50).encode(),
        "accents": ("café naïve résumé\n" * 100).encode(),
        "mixed_scripts": ("ascii then Кириллица 中文 😀\n" * 100).encode(),
        "non_ascii_at_end": (line * 100).encode() + "é".encode(),
        "bad_bytes": (line * 100).encode() + b"\xff\xfe\x80" + b"tail\xc3",
        "exactly_threshold": b"0123456789abcdef",
        "nul_bytes": b"abc\x00def" * 10,
    }


@pytest.mark.parametrize("name", list(_large_cases()))
def test_large_reader_matches_plain_read(tmp_path: Path, small_large: None, name: str) -> None:
    raw = _large_cases()[name]
    f = write(tmp_path / f"{name}.txt", raw)
    text, bad = read_text_file(f)
    assert text == read_replace(f)
    assert text == raw.decode("utf-8", "replace")
    assert type(text) is str and len(text) == len(raw.decode("utf-8", "replace"))
    assert hash(text) == hash(raw.decode("utf-8", "replace"))  # a proper, hashable str
    assert bad == (len(raw) - len(raw.decode("utf-8", "ignore").encode()))
    if "\x00" in text[:8192]:  # a file named explicitly that holds NULs is binary: refused
        with pytest.raises(ContextError, match="binary file"):
            Context.load(f)
        return
    ctx = Context.load(f)
    assert ctx.text == text
    assert ctx.n_lines == text.count("\n") + (0 if text.endswith("\n") else 1)
    if bad:
        assert any(f"{bad} undecodable" in w for w in ctx.warnings)
    else:
        assert ctx.source_file == str(f.resolve())


def test_large_reader_ascii_string_is_usable(tmp_path: Path, small_large: None) -> None:
    f = write(tmp_path / "a.txt", "needle in a haystack\n" * 1000)
    text, bad = read_text_file(f)
    assert bad == 0
    assert text.isascii()
    assert text.count("needle") == 1000
    assert text.upper().count("NEEDLE") == 1000
    assert (text + "x")[-2:] == "\nx"
    assert text.encode() == f.read_bytes()
    assert {text: 1}[f.read_text()] == 1


def test_large_reader_across_its_16mib_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-byte characters and bad bytes straddling the reader's 16 MiB chunk boundary."""
    monkeypatch.setattr(context_mod, "LARGE_FILE_BYTES", 1 << 20)
    chunk = 16 << 20
    ascii_head = b"a" * (chunk - 1)
    cases = {
        "ascii": ascii_head + b"\n" + b"b" * 1000,  # all ASCII, two chunks
        "split_char": ascii_head + "é中😀".encode() + b"z" * 10,  # é cut by the boundary
        "split_bad": ascii_head + b"\xe2\x82" + b"tail",  # truncated sequence over the boundary
        "non_ascii_in_second_chunk_only": b"x" * chunk + "ж".encode(),
    }
    for name, raw in cases.items():
        f = write(tmp_path / name, raw)
        text, bad = read_text_file(f)
        assert text == raw.decode("utf-8", "replace"), name
        assert text == read_replace(f), name
        assert bad == (2 if name == "split_bad" else 0), name
        f.unlink()


def test_small_files_do_not_use_large_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = context_mod._read_large
    monkeypatch.setattr(context_mod, "_read_large", lambda f, s: calls.append(s) or real(f, s))
    f = write(tmp_path / "a.txt", "small")
    assert read_text_file(f) == ("small", 0)
    assert calls == []
    monkeypatch.setattr(context_mod, "LARGE_FILE_BYTES", 5)
    assert read_text_file(f) == ("small", 0)
    assert calls == [5]


# ----------------------------------------------------------------------------- metadata / describe
def test_metadata_and_describe_single() -> None:
    text = "HEAD " + "x" * 1000 + " TAIL"
    ctx = Context.from_value(text)
    m = ctx.metadata(preview_chars=100)
    assert m["kind"] == "text"
    assert m["chars"] == len(text)
    assert m["lines"] == 1
    assert m["documents"] == 1
    assert m["head"] == text[:100]
    assert m["tail"] == text[-50:]
    assert m["warnings"] == []
    d = ctx.describe(preview_chars=100)
    assert "kind: text" in d
    assert f"size: {len(text):,} characters, 1 lines, 1 document(s)" in d
    assert repr(text[:100]) in d and repr(text[-50:]) in d
    assert "documents (path" not in d

    short = Context.from_value("tiny")
    assert short.metadata()["tail"] == ""
    assert "last" not in short.describe()


def test_metadata_and_describe_documents() -> None:
    docs = {f"file{i}.txt": f"content {i}\n" for i in range(25)}
    ctx = Context.from_value(docs)
    m = ctx.metadata(max_docs=20)
    assert m["kind"] == "documents"
    assert m["documents"] == 25
    assert len(m["document_sizes"]) == 20
    assert m["documents_not_listed"] == 5
    first = m["document_sizes"][0]
    assert first["path"] == "file0.txt"
    assert ctx.text[first["start"] : first["start"] + first["chars"]] == "content 0\n"
    d = ctx.describe()
    assert "25 document(s)" in d
    assert "documents (path: start offset, chars):" in d
    assert "… and 5 more" in d
    assert "==> path <==" in d
    assert "  file3.txt: " in d


def test_describe_shows_warnings(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", b"bad \xff byte")
    d = Context.load(f).describe()
    assert "warning: 1 undecodable byte(s)" in d


def test_document_at_boundaries() -> None:
    ctx = Context.from_value(["aa", "bb", "cc"])
    for d in ctx.documents:
        assert ctx.document_at(d.start) is d
        assert ctx.document_at(d.end - 1) is d
    assert ctx.document_at(len(ctx.text)) is ctx.documents[-1]
    assert Context("").document_at(0) is None

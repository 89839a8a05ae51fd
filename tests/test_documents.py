"""Contexts from real documents: ignore files, virtualenvs, binaries, limits, progress, PDF/DOCX/HTML, URLs.

CLI tests run the real ``rlm`` with a scripted model; the walk is also checked against git's own idea of
which files a ``.gitignore`` leaves (``git ls-files --others --exclude-standard``)."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from docmaker import make_docx, make_pdf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import rlm, script

from contextbox import Context
from contextbox.documents import PROGRESS_MIN_FILES, walk
from contextbox.errors import ContextError


def write(p: Path, data: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def ask(tmp_path: Path, question: str, *sources: str, replies=None, extra=()) -> tuple[subprocess.CompletedProcess,
                                                                                       dict | None]:
    """Run ``rlm ask`` with a scripted model; return the process and the run_start event's data."""
    runs = tmp_path / "runs"
    replies = replies or [{"op": "find", "text": "MARKER"}, {"op": "final", "answer": "done"}]
    args = ["ask", question, "--json", "--runs-dir", str(runs), "-m", script(tmp_path, *replies), *extra]
    for s in sources:
        args += ["-c", s]
    p = rlm(*args)
    if p.returncode != 0 or not p.stdout:
        return p, None
    rid = json.loads(p.stdout)["run_id"]
    log = [json.loads(x) for x in (runs / f"{rid}.jsonl").read_text().splitlines()]
    return p, log[0]["data"]


def paths_of(start: dict) -> list[str]:
    return [d["path"] for d in start["context"]["document_sizes"]]


# ---------------------------------------------------------------------- a project folder
def make_project(root: Path) -> None:
    write(root / "README.md", "MARKER readme\n")
    write(root / "src" / "app.py", "MARKER app\n")
    write(root / "src" / "gen" / ".gitignore", "*.txt\n!keep.txt\n")
    write(root / "src" / "gen" / "out.txt", "MARKER generated\n")
    write(root / "src" / "gen" / "keep.txt", "MARKER kept by negation\n")
    write(root / ".gitignore", "*.log\nbuild/\n/secret.env\n")
    write(root / "debug.log", "MARKER log\n")
    write(root / "build" / "lib.py", "MARKER build\n")
    write(root / "secret.env", "MARKER rootsecret\n")
    write(root / "docs" / "secret.env", "MARKER not root-anchored\n")
    write(root / ".rlmignore", "docs/draft*\n")
    write(root / "docs" / "draft1.md", "MARKER draft\n")
    write(root / ".venv" / "pyvenv.cfg", "home = /usr\n")
    write(root / ".venv" / "lib" / "site.py", "MARKER venv\n")
    write(root / "env2" / "pyvenv.cfg", "home = /usr\n")  # a virtualenv by any name
    write(root / "env2" / "lib" / "x.py", "MARKER venv2\n")
    write(root / ".git" / "config", "MARKER git\n")
    write(root / "node_modules" / "m" / "index.js", "MARKER node\n")
    write(root / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))


EXPECTED = ["README.md", "docs/secret.env", "src/app.py", "src/gen/keep.txt"]


def test_project_folder_loads_only_tracked_looking_files(tmp_path):
    proj = tmp_path / "proj"
    make_project(proj)
    p, start = ask(tmp_path, "what is here?", str(proj))
    assert p.returncode == 0, p.stderr
    assert sorted(paths_of(start)) == EXPECTED
    out = json.loads(p.stdout)
    found = out["steps"][0]["output"]
    for word in ("readme", "app", "kept by negation", "not root-anchored"):
        assert f"MARKER {word}" in found
    for word in ("generated", "log", "build", "rootsecret", "draft", "venv", "git", "node"):
        assert f"MARKER {word}" not in found


def test_a_folder_named_explicitly_is_loaded_even_if_ignored_above(tmp_path):
    proj = tmp_path / "proj"
    make_project(proj)
    write(proj / ".git" / "HEAD", "ref: refs/heads/main\n")  # a work tree: the ignore files above apply
    write(proj / "build" / "notes.log", "MARKER build log\n")
    assert sorted(f.relative_to(proj / "build").as_posix() for f, _ in walk(proj / "build")) == ["lib.py"]
    write(proj / "src" / "debug.log", "x\n")  # *.log from the top .gitignore applies inside src/
    assert sorted(f.relative_to(proj / "src").as_posix() for f, _ in walk(proj / "src")) == ["app.py",
                                                                                             "gen/keep.txt"]
    # a work tree inside another: the outer one's ignore files stop at the inner top
    write(proj / "src" / ".git" / "HEAD", "ref: refs/heads/main\n")
    assert "debug.log" in {f.name for f, _ in walk(proj / "src")}
    # outside any work tree, nothing above applies
    write(tmp_path / "plain" / ".gitignore", "*.md\n")
    write(tmp_path / "plain" / "sub" / "a.md", "x\n")
    assert [f.name for f, _ in walk(tmp_path / "plain" / "sub")] == ["a.md"]


def test_walk_and_load_of_the_project(tmp_path):
    proj = tmp_path / "proj"
    make_project(proj)
    got = sorted(f.relative_to(proj).as_posix() for f, _ in walk(proj))
    assert got == sorted(EXPECTED + ["logo.png"])  # the walk lists the binary; loading skips it
    ctx = Context.load(proj)
    assert sorted(d.path for d in ctx.documents) == EXPECTED
    assert any("skipped binary file" in w and "logo.png" in w for w in ctx.warnings)


def _git_files(root: Path) -> list[str]:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    out = subprocess.run(["git", "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
                         capture_output=True, check=True).stdout.decode()
    return sorted(x for x in out.split("\0") if x and not x.endswith(".gitignore"))


NAMES = st.sampled_from(["a", "b", "c.txt", "d.log", "e.py", "f.md"])
DIRS = st.sampled_from(["", "x/", "x/y/", "z/"])
PATTERNS = st.sampled_from(["*.log", "!d.log", "x/", "/c.txt", "y", "*.py", "!e.py", "z/*", "!z/f.md", "**/b",
                            "x/**/a", "f.*", "#comment", "", "c.txt", "/x/y/"])


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.sets(st.tuples(DIRS, NAMES), min_size=1, max_size=10),
       root_rules=st.lists(PATTERNS, max_size=4), sub_rules=st.lists(PATTERNS, max_size=3))
def test_walk_agrees_with_git(tmp_path_factory, files, root_rules, sub_rules):
    root = tmp_path_factory.mktemp("g")
    for d, n in files:
        write(root / d / n, "x\n")
    write(root / ".gitignore", "\n".join(root_rules) + "\n")
    if (root / "x").is_dir():
        write(root / "x" / ".gitignore", "\n".join(sub_rules) + "\n")
    ours = sorted(f.relative_to(root).as_posix() for f, _ in walk(root))
    git = _git_files(root)
    assert ours == git, (root_rules, sub_rules)
    named_ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "x/"]).returncode == 0
    if (root / "x").is_dir() and not named_ignored:  # a walk of a sub-folder applies the ignore files above it
        ours_x = sorted("x/" + f.relative_to(root / "x").as_posix() for f, _ in walk(root / "x"))
        assert ours_x == [g for g in git if g.startswith("x/")], (root_rules, sub_rules)


# ---------------------------------------------------------------------- limits and progress
def test_too_many_files_is_refused_in_one_line(tmp_path):
    d = tmp_path / "many"
    for i in range(6):
        write(d / f"f{i}.txt", "x\n")
    (tmp_path / "contextbox.toml").write_text("[context]\nmax_files = 5\n")
    p = rlm("ask", "q", "-c", str(d), "-m", script(tmp_path, "x"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "refusing to load 6 files" in p.stderr and "max_files = 5" in p.stderr and "--include" in p.stderr
    with pytest.raises(ContextError, match="refusing"):
        Context.load(d, max_files=5)
    assert len(Context.load(d, max_files=6).documents) == 6  # the limit itself is allowed


def test_too_many_bytes_is_refused(tmp_path):
    d = tmp_path / "big"
    write(d / "a.txt", "x" * 700_000)
    write(d / "b.txt", "y" * 700_000)
    (tmp_path / "contextbox.toml").write_text("[context]\nmax_mb = 1\n")
    p = rlm("ask", "q", "-c", str(d), "-m", script(tmp_path, "x"), cwd=tmp_path)
    assert p.returncode == 2 and "max_mb = 1" in p.stderr and p.stderr.count("\n") == 1
    # a single file named explicitly is not a walk: no limit
    assert Context.load(d / "a.txt", max_bytes=10).text == "x" * 700_000


def test_progress_on_big_loads_only(tmp_path):
    d = tmp_path / "lots"
    d.mkdir()
    n = PROGRESS_MIN_FILES + 1
    for i in range(n):
        (d / f"{i:05d}.txt").write_text(f"MARKER {i}\n")
    p, start = ask(tmp_path, "q", str(d))
    assert p.returncode == 0, p.stderr
    assert start["context"]["documents"] == n
    assert f"loading files: {n:,}/{n:,}" in p.stderr and "loading files: 1,000/" in p.stderr
    quiet = rlm("ask", "q", "-q", "-c", str(d), "-m", script(tmp_path, {"op": "final", "answer": "x"}))
    assert "loading files" not in quiet.stderr
    small, _ = ask(tmp_path, "q", str(d / "00001.txt"))
    assert "loading files" not in small.stderr


# ---------------------------------------------------------------------- documents
SENTENCE = "The treasure is buried under the old oak."


def test_pdf_sentence_is_found_with_its_page(tmp_path):
    pdf = write(tmp_path / "doc.pdf", make_pdf([["Chapter one", "Nothing here."], ["Chapter two", SENTENCE]]))
    p, start = ask(tmp_path, "Where is the treasure?", str(pdf),
                   replies=[{"op": "find", "text": "treasure"}, {"op": "final", "answer": "under the old oak"}])
    assert p.returncode == 0, p.stderr
    assert paths_of(start) == [f"{pdf}#page=1", f"{pdf}#page=2"]
    found = json.loads(p.stdout)["steps"][0]["output"]
    assert SENTENCE in found
    ctx = Context.load(pdf)
    page2 = ctx.documents[1]
    assert ctx.text[page2.start:page2.end] == "Chapter two\n" + SENTENCE + "\n"
    assert ctx.document_at(ctx.text.index("treasure")).path.endswith("#page=2")


def test_docx_and_html_files_become_text(tmp_path):
    docx = write(tmp_path / "memo.docx", make_docx(["Intro.", "The code word is PELICAN."], heading="Memo"))
    html = write(tmp_path / "page.html", "<html><head><style>p{color:red}</style><script>var MARKER=1</script>"
                                         "</head><body><h1>Title</h1><p>The code word is <b>HERON</b>.</p></body>")
    ctx = Context.load([docx, html])
    texts = {d.path: ctx.text[d.start:d.end] for d in ctx.documents}
    assert texts[str(docx)] == "# Memo\n\nIntro.\n\nThe code word is PELICAN.\n"
    assert "The code word is **HERON**." in texts[str(html)] and "# Title" in texts[str(html)]
    assert "color:red" not in texts[str(html)] and "var MARKER" not in texts[str(html)]


def test_documents_inside_a_folder_are_converted(tmp_path):
    d = tmp_path / "papers"
    write(d / "a.pdf", make_pdf([[SENTENCE]]))
    write(d / "b.docx", make_docx(["Second paper."]))
    write(d / "notes.txt", "plain notes\n")
    ctx = Context.load(d)
    assert sorted(x.path for x in ctx.documents) == ["a.pdf#page=1", "b.docx", "notes.txt"]
    assert SENTENCE in ctx.text and "Second paper." in ctx.text


@pytest.mark.parametrize("name,data,needle", [
    ("broken.pdf", b"%PDF-1.4\nthis is not a pdf at all", "not a readable PDF"),
    ("blank.pdf", make_pdf([[]]), "no text layer"),
    ("broken.docx", b"PK\x03\x04 not a zip", "cannot convert"),
    ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "is a binary file"),
])
def test_named_file_that_cannot_be_converted_is_a_usage_error(tmp_path, name, data, needle):
    f = write(tmp_path / name, data)
    p = rlm("ask", "q", "-c", str(f), "-m", script(tmp_path, "x"))
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_undecodable_file_in_a_folder_is_skipped_as_binary(tmp_path):
    write(tmp_path / "d" / "a.txt", "text\n")
    write(tmp_path / "d" / "b.dat", b"\xff\xfe\xfa\xfb" * 50 + b"ok")  # no NUL, but mostly undecodable
    ctx = Context.load(tmp_path / "d")
    assert [x.path for x in ctx.documents] == ["a.txt"]
    assert any("skipped binary file" in w and "b.dat" in w for w in ctx.warnings)


# ---------------------------------------------------------------------- URLs
class _Handler(http.server.BaseHTTPRequestHandler):
    pages: dict[str, tuple[str, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/page.html")
            self.end_headers()
            return
        if self.path not in self.pages:
            self.send_error(404)
            return
        ctype, body = self.pages[self.path]
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    _Handler.pages = {
        "/page.html": ("text/html; charset=utf-8",
                       b"<html><body><h1>Notice</h1><p>MARKER The meeting moved to Thursday.</p></body></html>"),
        "/paper": ("application/pdf", make_pdf([["Abstract"], [SENTENCE]])),
        "/notes.txt": ("text/plain; charset=latin-1", "caf\u00e9 MARKER notes\n".encode("latin-1")),
        "/blob": ("application/octet-stream", bytes(range(256)) * 8),
    }
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_url_html_page(tmp_path, site):
    url = f"{site}/page.html"
    p, start = ask(tmp_path, "When is the meeting?", url,
                   replies=[{"op": "find", "text": "meeting"}, {"op": "final", "answer": "Thursday"}])
    assert p.returncode == 0, p.stderr
    assert paths_of(start) == [url]
    assert "The meeting moved to Thursday." in json.loads(p.stdout)["steps"][0]["output"]
    assert Context.load(url).text == "# Notice\n\nMARKER The meeting moved to Thursday.\n"


def test_url_pdf_text_redirect_and_errors(tmp_path, site):
    ctx = Context.load(f"{site}/paper")
    assert [d.path for d in ctx.documents] == [f"{site}/paper#page=1", f"{site}/paper#page=2"]
    assert SENTENCE in ctx.text
    assert Context.load(f"{site}/notes.txt").text == "caf\u00e9 MARKER notes\n"  # the declared charset
    assert "Thursday" in Context.load(f"{site}/moved").text  # redirects are followed
    for path, needle in (("/missing", "HTTP 404"), ("/blob", "is binary")):
        p = rlm("ask", "q", "-c", site + path, "-m", script(tmp_path, "x"))
        assert p.returncode == 2 and needle in p.stderr and p.stderr.count("\n") == 1, p.stderr
    with pytest.raises(ContextError, match="refusing to fetch more than"):
        Context.load(f"{site}/blob", max_bytes=100)


def test_without_the_docs_extra_a_pdf_is_a_clear_error_and_skipped_in_folders(tmp_path, monkeypatch):
    import sys

    for mod in ("pypdf", "markitdown"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if not installed
    monkeypatch.setattr("contextbox.documents.docs_available", lambda: False)
    pdf = write(tmp_path / "d" / "doc.pdf", make_pdf([[SENTENCE]]))
    write(tmp_path / "d" / "notes.txt", "notes\n")
    with pytest.raises(ContextError, match=r"needs the docs extra: pip install 'contextbox\[docs\]'"):
        Context.load(pdf)
    ctx = Context.load(tmp_path / "d")
    assert [d.path for d in ctx.documents] == ["notes.txt"]
    assert any("doc.pdf" in w and "docs extra" in w for w in ctx.warnings)

"""Model assembly on small fake part packages, and (when present) the real local model."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import pytest

from contextbox import local_model as lm
from contextbox.errors import ContextWindowError, UsageError

COUNT = 3


def _make_parts(root: Path, prefix: str, chunks: list[bytes]) -> None:
    """Lay out fake part packages the way the real ones ship: ``<pkg>N/data/partNN.bin``."""
    for i, data in enumerate(chunks, start=1):
        pkg = root / f"{prefix.replace('-', '_')}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Three installed fake parts; returns a namespace of what the tests need."""
    prefix = f"cbfake-{uuid.uuid4().hex[:8]}-part"
    chunks = [os.urandom(1000), os.urandom(2500), os.urandom(17)]
    blob = b"".join(chunks)
    site = tmp_path / "site"
    _make_parts(site, prefix, chunks)
    monkeypatch.syspath_prepend(str(site))

    class F:
        pass

    f = F()
    f.prefix, f.site, f.blob = prefix, site, blob
    f.size, f.sha = len(blob), hashlib.sha256(blob).hexdigest()
    f.cache = tmp_path / "cache"
    f.kw = dict(prefix=prefix, count=COUNT, expected_size=f.size, expected_sha256=f.sha, filename="m.gguf")
    f.dest = f.cache / "m.gguf"
    return f


def test_find_parts_in_order(fake) -> None:
    parts = lm.find_parts(fake.prefix, COUNT)
    assert [p.name for p in parts] == ["part01.bin", "part02.bin", "part03.bin"]
    assert b"".join(p.read_bytes() for p in parts) == fake.blob


def test_good_parts_are_assembled_verified_and_recorded(fake) -> None:
    path = lm.ensure_model(fake.cache, **fake.kw)
    assert path == fake.dest
    assert path.read_bytes() == fake.blob
    side = json.loads(lm.sidecar_path(path).read_text())
    assert side == {"size": fake.size, "mtime_ns": path.stat().st_mtime_ns, "sha256": fake.sha}
    assert not list(fake.cache.glob("*.part")), "temporary file left behind"
    info = lm.model_info(fake.cache, **fake.kw)
    assert info["hash_state"] == "verified"
    assert info["exists"] and info["size"] == fake.size == info["expected_size"]
    assert info["parts_installed"] == COUNT and info["missing_parts"] == []


def test_second_call_neither_reassembles_nor_rehashes(fake, monkeypatch: pytest.MonkeyPatch) -> None:
    path = lm.ensure_model(fake.cache, **fake.kw)
    mtime = path.stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("must not run on a verified model")

    monkeypatch.setattr(lm, "assemble", boom)
    monkeypatch.setattr(lm, "sha256_file", boom)
    assert lm.ensure_model(fake.cache, **fake.kw) == path
    assert path.stat().st_mtime_ns == mtime


def test_missing_part_names_package_and_pip_command(fake) -> None:
    import shutil

    shutil.rmtree(fake.site / f"{fake.prefix.replace('-', '_')}2")
    with pytest.raises(UsageError) as ei:
        lm.ensure_model(fake.cache, **fake.kw)
    msg = str(ei.value)
    assert f"{fake.prefix}2" in msg and "pip install 'contextbox[local]'" in msg
    assert "\n" not in msg
    assert not fake.dest.exists()
    info = lm.model_info(fake.cache, **fake.kw)
    assert info["parts_installed"] == COUNT - 1 and info["missing_parts"] == [f"{fake.prefix}2"]
    assert info["hash_state"] == "missing"


def test_corrupt_parts_are_refused_and_leave_nothing(fake) -> None:
    kw = dict(fake.kw, expected_sha256="0" * 64)
    with pytest.raises(lm.ModelCorrupt) as ei:
        lm.ensure_model(fake.cache, **kw)
    msg = str(ei.value)
    assert "refusing" in msg and "sha256" in msg and "\n" not in msg
    assert isinstance(ei.value, UsageError)
    assert not fake.dest.exists()
    assert not lm.sidecar_path(fake.dest).exists()
    assert not list(fake.cache.glob("*.part"))


def test_wrong_total_size_is_refused(fake, tmp_path: Path) -> None:
    parts = lm.find_parts(fake.prefix, COUNT)
    dest = tmp_path / "out" / "x.gguf"
    with pytest.raises(lm.ModelCorrupt, match="size"):
        lm.assemble(parts, dest, fake.size + 1, fake.sha)
    assert not dest.exists()


def test_truncated_cached_model_is_corrupt_and_rebuilt(fake) -> None:
    path = lm.ensure_model(fake.cache, **fake.kw)
    with open(path, "r+b") as f:
        f.truncate(fake.size // 2)
    assert lm.model_info(fake.cache, **fake.kw)["hash_state"] == "corrupt"
    assert lm.ensure_model(fake.cache, **fake.kw) == path
    assert path.read_bytes() == fake.blob
    assert lm.model_info(fake.cache, **fake.kw)["hash_state"] == "verified"


def test_same_size_tampering_is_caught_by_the_hash(fake) -> None:
    path = lm.ensure_model(fake.cache, **fake.kw)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10_000_000))
    assert lm.model_info(fake.cache, **fake.kw)["hash_state"] == "unverified"
    assert lm.ensure_model(fake.cache, **fake.kw).read_bytes() == fake.blob


def test_unrecorded_good_file_is_hashed_once_and_kept(fake) -> None:
    fake.cache.mkdir(parents=True)
    fake.dest.write_bytes(fake.blob)
    assert lm.model_info(fake.cache, **fake.kw)["hash_state"] == "unverified"
    mtime = fake.dest.stat().st_mtime_ns
    lm.ensure_model(fake.cache, **fake.kw)
    assert fake.dest.stat().st_mtime_ns == mtime  # verified in place, not rebuilt
    assert lm.model_info(fake.cache, **fake.kw)["hash_state"] == "verified"


def test_corrupt_model_without_parts_is_a_usage_error(fake) -> None:
    import shutil

    path = lm.ensure_model(fake.cache, **fake.kw)
    path.write_bytes(b"junk")
    shutil.rmtree(fake.site / f"{fake.prefix.replace('-', '_')}3")
    with pytest.raises(UsageError, match="corrupt and cannot be rebuilt"):
        lm.ensure_model(fake.cache, **fake.kw)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lm.model_path() == tmp_path / "contextbox" / "models" / lm.MODEL_FILENAME
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert lm.models_dir() == Path.home() / ".cache" / "contextbox" / "models"


# --------------------------------------------------------------------------- provider


def test_local_without_llama_cpp_is_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from contextbox.providers import local
    from contextbox.providers.base import resolve

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(UsageError) as ei:
        resolve("local")
    assert str(ei.value) == local.MISSING_EXTRA


def test_local_path_must_exist(tmp_path: Path) -> None:
    from contextbox.providers.base import resolve

    with pytest.raises(UsageError):  # missing file, or missing extra: both one-line usage errors
        resolve(f"local:{tmp_path / 'nope.gguf'}")


def _real_model_or_fail() -> Path:
    from contextbox.providers.local import llama_available

    if llama_available() and lm.model_present():
        return lm.ensure_model()
    why = "llama-cpp-python is not installed" if not llama_available() else "the model parts are not installed"
    if os.environ.get("CONTEXTBOX_SKIP_LOCAL") == "1":
        pytest.skip(f"local model unavailable ({why}); CONTEXTBOX_SKIP_LOCAL=1")
    pytest.fail(f"local model unavailable: {why}; pip install 'contextbox[local]' or set CONTEXTBOX_SKIP_LOCAL=1")


SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "maxLength": 60},
        "op": {"type": "string", "enum": ["find", "final"]},
        "text": {"type": "string", "maxLength": 100},
    },
    "required": ["thought", "op", "text"],
}


@pytest.mark.local_model
def test_real_model_gives_schema_constrained_json() -> None:
    _real_model_or_fail()
    from contextbox.providers.base import resolve

    p = resolve("local")
    assert p.name == "local" and p.context_window == 16384
    msgs = [
        {
            "role": "system",
            "content": "Reply with a JSON object with keys thought, op and text. Keep thought to one short sentence.",
        },
        {"role": "user", "content": "What is 2+2? Give the final answer."},
    ]
    c = p.complete(msgs, max_tokens=64, response_schema=SCHEMA)
    # maxLength keeps the object short enough to close within max_tokens; without it a
    # chatty model hits the limit mid-string (finish_reason "length", truncated JSON)
    assert c.finish_reason == "stop", c
    obj = json.loads(c.text)
    assert set(obj) == {"thought", "op", "text"}
    assert obj["op"] in ("find", "final")
    assert all(isinstance(obj[k], str) for k in SCHEMA["properties"])
    assert c.input_tokens > 10 and 0 < c.output_tokens <= 64 and not c.estimated
    assert resolve("local").load()._loaded is p._loaded  # one Llama per model per process
    cache = p._loaded.llama.cache  # saved states keep one row of logits each, and are counted
    assert cache is not None and len(cache.cache_state) >= 1
    assert all(st.scores.shape[0] == 1 for st in cache.cache_state.values())
    assert cache.cache_size <= cache.capacity_bytes


@pytest.mark.local_model
def test_real_model_prompt_too_long_is_context_window_error() -> None:
    path = _real_model_or_fail()
    from contextbox.providers.local import LocalProvider

    p = LocalProvider(path, context_tokens=128)
    with pytest.raises(ContextWindowError, match="context window of 128"):
        p.complete([{"role": "user", "content": "word " * 400}], max_tokens=8)


@pytest.mark.local_model
def test_real_model_scores_labels_by_probability_and_calibrates() -> None:
    """``choice_scores``: the label with the highest log-probability at the answer's start, one token read,
    and a prior (what the model gives each label for nothing) divided out — a label the prior favours
    enormously loses to the other."""
    _real_model_or_fail()
    from contextbox.providers.base import resolve

    p = resolve("local")
    labels = ["person", "place"]
    assert p.can_score(labels) and not p.can_score(["red", "red-two"])  # "red" begins "red-two"
    assert p.can_score(["red-one", "red-two"])  # a shared first token: told apart one step down
    msgs = [{"role": "user", "content": "Does this question ask for a person or a place? 'Where is Milan?' "
                                        "Reply with a JSON array holding one label: person or place."}]
    raw = p.complete(msgs, choice_scores={"choices": labels, "raw": True})
    (scores,) = json.loads(raw.text)
    assert set(scores) == set(labels) and all(v < 0 for v in scores.values())
    assert scores["place"] > scores["person"] and raw.output_tokens == 1 and raw.input_tokens > 20
    assert json.loads(p.complete(msgs, choice_scores={"choices": labels}).text) == ["place"]
    lean = {"person": -50.0, "place": 0.0}  # a prior that says the model always answers "place"
    assert json.loads(p.complete(msgs, choice_scores={"choices": labels, "prior": lean}).text) == ["person"]
    who = msgs[0]["content"].replace("Where is Milan?", "Who wrote Hamlet?")
    both = p.complete(msgs, choice_scores={"choices": labels, "raw": True, "prompts": [who, msgs[0]["content"]]})
    first, again = json.loads(both.text)  # several prompts in one call: each scored on its own
    assert first["person"] > first["place"] and both.output_tokens == 2
    # the same prompt again, its prefix reused: the same answer (llama.cpp is not bit-exact across batch shapes)
    assert again == pytest.approx(scores, abs=0.25) and max(again, key=again.get) == "place"

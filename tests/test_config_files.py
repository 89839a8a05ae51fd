"""The JSON string-map files of the config dir (aliases.json, keys.json): one loader/saver for both."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contextbox.config_files import config_dir, load_string_map, save_string_map
from contextbox.errors import ConfigError, UsageError
from contextbox.keystore import load_keys, save_keys
from contextbox.model_ids import load_aliases, save_aliases


@settings(max_examples=40, deadline=None)
@given(data=st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=8), private=st.booleans())
def test_round_trip_keeps_every_string_and_writes_them_sorted(data: dict[str, str], private: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "sub" / "m.json"
        assert save_string_map(data, p, "the m file", private=private) == p
        assert load_string_map(p, "the m file", "V", private=private) == data
        assert list(json.loads(p.read_text(encoding="utf-8"))) == sorted(data)
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
        assert not p.with_name("m.json.tmp").exists()


def test_a_private_file_is_0600_even_over_an_old_tmp_file_and_others_get_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        stale = tmp_path / "keys.json.tmp"
        stale.write_text("{}")
        stale.chmod(0o644)
        save_keys({"A_KEY": "x"}, tmp_path / "keys.json")
        save_aliases({"fast": "openai/x"}, tmp_path / "aliases.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "aliases.json").stat().st_mode) == 0o644
    assert load_keys(tmp_path / "keys.json") == {"A_KEY": "x"}
    assert load_aliases(tmp_path / "aliases.json") == {"fast": "openai/x"}


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_only_a_private_file_is_refused_when_others_can_read_it(tmp_path: Path, mode: int) -> None:
    p = tmp_path / "m.json"
    p.write_text('{"a": "b"}')
    p.chmod(mode)
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600") as e:
        load_string_map(p, "the keys file", "KEY", private=True)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    assert load_string_map(p, "the aliases file", "SPEC") == {"a": "b"}


@pytest.mark.parametrize("content,needle", [
    ("{nope", "is not valid JSON"),
    (b"\xff\xfe{", "is not valid JSON"),
    ('["a", "b"]', "must hold a JSON object of NAME: SPEC strings"),
    ('{"a": 1}', "must hold a JSON object of NAME: SPEC strings"),
])
def test_bad_content_is_one_line_that_names_the_file(tmp_path: Path, content: str | bytes, needle: str) -> None:
    p = tmp_path / "aliases.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as e:
        load_aliases(p)
    msg = str(e.value)
    assert needle in msg and f"the aliases file {p}" in msg and "\n" not in msg


def test_missing_file_is_empty_and_unreadable_paths_are_clear_errors(tmp_path: Path) -> None:
    assert load_keys(tmp_path / "none.json") == {}
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ConfigError, match=r"cannot read the aliases file .*dir\.json"):
        load_aliases(tmp_path / "dir.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"cannot write the keys file .*file/keys\.json"):
        save_keys({"A": "b"}, tmp_path / "file" / "keys.json")


def test_config_dir_follows_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_dir() == tmp_path / "contextbox"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert config_dir() == tmp_path / "h" / ".config" / "contextbox"

"""The test data is found like the bench finds it: $CONTEXTBOX_DATA first, then ../shared/data;
with neither, a test that needs it fails with a message saying what to do (it never skips)."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest


def test_contextbox_data_is_used_when_shared_data_is_absent(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "elsewhere"
    (data / "trec").mkdir(parents=True)
    monkeypatch.setattr(conftest, "REPO", tmp_path / "clone" / "repo")  # no ../shared beside it
    monkeypatch.setenv("CONTEXTBOX_DATA", str(data))
    assert conftest.shared_data_dir() == data
    assert conftest.shared_data("trec") == data / "trec"


def test_contextbox_data_comes_before_shared_data(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "clone" / "repo"
    (repo.parent / "shared" / "data" / "trec").mkdir(parents=True)
    data = tmp_path / "mine"
    (data / "trec").mkdir(parents=True)
    monkeypatch.setattr(conftest, "REPO", repo)
    monkeypatch.setenv("CONTEXTBOX_DATA", str(data))
    assert conftest.shared_data_dir() == data
    monkeypatch.delenv("CONTEXTBOX_DATA")
    assert conftest.shared_data_dir() == repo.parent / "shared" / "data"


def test_no_data_anywhere_fails_loudly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(conftest, "REPO", tmp_path / "clone" / "repo")
    monkeypatch.delenv("CONTEXTBOX_DATA", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"test data trec not found: .*CONTEXTBOX_DATA"):
        conftest.shared_data_dir()
    monkeypatch.setenv("CONTEXTBOX_DATA", str(tmp_path / "empty"))  # set, but without the file
    with pytest.raises(pytest.fail.Exception, match="not found"):
        conftest.shared_data("war_and_peace.txt")

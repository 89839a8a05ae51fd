"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakeserver import FakeLLMServer


@pytest.fixture(autouse=True)
def _private_data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs are recorded in the user's run store by default (the CLI's and the API's): in tests, a fresh one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A started :class:`fakeserver.FakeLLMServer` (OpenAI + Anthropic) on 127.0.0.1.

    Configure it in the test: ``fake_llm.replies = [...]``, ``fake_llm.add_faults("429")``,
    ``fake_llm.fail_all(503)``, ``fake_llm.latency = 0.1``.
    """
    with FakeLLMServer() as server:
        yield server


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def shared_data(name: str):
    """A file from ../shared/data (or $CONTEXTBOX_DATA); the test fails clearly if it is absent."""
    import os
    from pathlib import Path

    for base in (os.environ.get("CONTEXTBOX_DATA"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / name).exists():
            return Path(base) / name
    pytest.fail(f"test data {name} not found: put ../shared/data beside the repo or set CONTEXTBOX_DATA")


@pytest.fixture
def war_and_peace():
    return shared_data("war_and_peace.txt")


def shared_data_dir():
    """The shared data folder itself ($CONTEXTBOX_DATA, else ../shared/data); fails when it lacks trec/."""
    return shared_data("trec").parent


@pytest.fixture
def bench_data():
    """The data folder for the bench suites (TREC, the novels, seed/); a missing one fails the test."""
    return shared_data_dir()

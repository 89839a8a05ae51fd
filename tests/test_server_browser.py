"""/visualize in a real headless Chromium (Debian's, driven by Playwright with ``executable_path``).

Needs ``apt-get install -y chromium`` and the ``playwright`` Python package (no browser
download: ``playwright install`` is never needed). Missing either is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fakeserver import FakeLLMServer
from server_helpers import LiveServer, cmd, fake_config, slow_finds

from contextbox.config import Config
from contextbox.server import create_app

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str:
    for p in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if p and Path(p).is_file():
            return p
    pytest.fail("Chromium not found: install it with 'apt-get install -y chromium' (or set CHROMIUM=/path)")


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install playwright "
                    "(only the package; Debian's chromium is used, no 'playwright install')")
    exe = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "root"
    root.mkdir()
    cfg = Config()
    cfg.runs_dir = tmp_path / "runs"
    cfg.server.roots = [str(root)]
    return {"root": root, "config": cfg, "tmp": tmp_path}


def open_page(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(url + "/visualize")
    page.wait_for_selector("#sample option[value=large-logs]", state="attached")
    return page


def test_scripted_run_from_the_page_shows_answer_and_iterations(browser, server_env):
    script = server_env["root"] / "script.json"
    script.write_text(json.dumps([cmd("count", pattern="ERROR"), cmd("find", text="DatabaseError", max=3),
                                  cmd("lines", start=10, end=14),
                                  cmd("final", answer="AuthenticationFailed > DatabaseError > NetworkTimeout")]))
    app = create_app(server_env["config"])
    with LiveServer(app) as live:
        page = open_page(browser, live.url)
        page.select_option("#sample", "large-logs")
        assert "error types" in page.input_value("#question")
        page.fill("#model", f"scripted:{script}")
        page.click("#start")
        page.wait_for_function("document.getElementById('answer').textContent.includes('NetworkTimeout')",
                               timeout=20000)
        assert page.text_content("#answer") == "AuthenticationFailed > DatabaseError > NetworkTimeout"
        assert page.text_content("#iterations") == "4"
        assert page.text_content("#status") == "answered"
        assert page.locator("#timeline .iter").count() == 4
        assert "read" in page.text_content("#mapinfo")
        page.wait_for_selector("#runs li .badge.answered")
        rid = page.text_content("#runid")
        assert app.state.store.get_run(rid)["answer"].startswith("AuthenticationFailed")
        shot = server_env["tmp"] / "visualize.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # open it again from the store and replay it
        page.goto(live.url + "/visualize#run=" + rid)
        page.wait_for_function("document.getElementById('answer').textContent.length > 0", timeout=10000)
        page.select_option("#speed", "40")
        page.click("#replay")
        page.wait_for_function("document.getElementById('iterations').textContent === '4' && "
                               "!document.getElementById('answerbox').hidden", timeout=10000)
        assert page.errors == []
    app.state.store.close()


def test_live_run_progresses_on_the_page(browser, server_env):
    """A slow model: the page shows the run running, its iteration count rising, then the answer."""
    with FakeLLMServer(slow_finds(5, answer="the key is 42"), latency=0.4) as srv:
        fake_config(server_env, srv)
        app = create_app(server_env["config"])
        with LiveServer(app) as live:
            page = open_page(browser, live.url)
            page.select_option("#sample", "response-times")
            page.fill("#model", "fake/m")
            page.click("#start")
            page.wait_for_function("document.getElementById('status').textContent === 'running' && "
                                   "+document.getElementById('iterations').textContent >= 2", timeout=20000)
            assert page.text_content("#answer") == ""
            assert page.text_content("#conn") == "live"
            page.wait_for_function("document.getElementById('answer').textContent === 'the key is 42'",
                                   timeout=30000)
            assert page.text_content("#iterations") == "6"
            assert page.text_content("#status") == "answered"
            assert page.errors == []
        app.state.store.close()

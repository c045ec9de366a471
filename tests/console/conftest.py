"""Fixtures for the console's browser tests: a live ``acmenfs serve`` and Debian's chromium.

Owns ``serve`` (one ``acmenfs serve`` per module on free 127.0.0.1 ports with a
temp data dir, stopped by pid), ``browser`` (Playwright driving
/usr/bin/chromium headless through ``executable_path``: no browser download; if
it cannot start, the tests fail loudly instead of skipping), ``page_at`` (a
fresh browser context at a given width) and ``shot`` (screenshots under
tests/console/screenshots/, git-ignored, for a person to look at).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "appliance"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_fixtures import ServeProcess  # noqa: E402

from browser_fixtures import CHROMIUM, DESKTOP, SCREENSHOTS  # noqa: E402


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    process = ServeProcess(tmp_path_factory.mktemp("console") / "data")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not session-wide: Playwright's sync API keeps an asyncio
    loop running in this thread while it is open, and later tests call asyncio.run()."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the [test] extra installs it
        pytest.fail(f"playwright is missing ({exc}): pip install -e '.[test]'")
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # waits, not time limits: a loaded CI machine may be slow
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Exception as exc:
            pytest.fail(f"chromium at {CHROMIUM} did not start (install the Debian package 'chromium'): {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page_at(browser):
    """``page_at(viewport, javascript=True)`` -> a page in a fresh context (no cookies); closed after the test."""
    contexts = []

    errors: list[str] = []

    def make(viewport=DESKTOP, javascript=True):
        context = browser.new_context(viewport=viewport, java_script_enabled=javascript)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        # Script errors and CSP refusals show up here; a console page must have none.
        # (Refused requests the tests make on purpose, such as a wrong token's 401, log
        # "Failed to load resource" and are left out.)
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.on("console", lambda message: message.type == "error" and "/ui" in page.url
                and not message.text.startswith("Failed to load resource")
                and errors.append(f"{page.url}: {message.text}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == [], "the browser reported errors"


@pytest.fixture
def shot():
    """``shot(page, name)`` saves a full-page PNG under tests/console/screenshots/."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take

"""Pytest plugin: a real headless Chromium (Debian's `chromium`, driven by Playwright) for
the web UI's tests, a tab that collects script errors, and what those tests check with
it. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "Debian's chromium is not installed, so the web UI cannot be tested in a browser: "
            "run `bash scripts/setup.sh` as root (it installs it with apt-get), or "
            "`apt-get install chromium`",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `bash scripts/setup.sh`", pytrace=False)
    path = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class Tab:
    """A page in a fresh browser context, with its script errors collected."""

    def __init__(
        self, browser: Any, scheme: str = "light", key: str | None = None, url: str = ""
    ) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, color_scheme=scheme
        )
        if key is not None:  # as if the user had saved it in the key dialog
            cookie = {"name": "glossator_key", "value": key, "url": url, "httpOnly": True}
            self.context.add_cookies([{**cookie, "sameSite": "Strict"}])
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # A refused request (e.g. a 401 the test provokes) is logged by the browser itself.
        if message.type == "error" and "Failed to load resource" not in message.text:
            self.errors.append(message.text)

    def shot(self, name: str, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    opened = Tab(browser)
    yield opened
    opened.close()


def wait_for(page: Any, condition: str, timeout_s: float = 30) -> None:
    """Until the JavaScript `condition` holds on the page. (Playwright's wait_for_function
    evaluates its predicate with eval, which the pages' CSP rightly forbids.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"still false after {timeout_s} s: {condition}"
        time.sleep(0.1)


def unlabelled(page: Any) -> list[str]:
    """The page's form fields that have no label (a screen reader could not name them)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll(
                'input:not([type=hidden]), select, textarea')]
            .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label'))
            .map(el => el.id || el.name || el.outerHTML)"""
    )
    return found

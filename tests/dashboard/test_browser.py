"""Real-browser smoke test: `streamlit run` on 127.0.0.1, every page in headless Chromium
(Debian's, never a downloaded build), no exception shown, a screenshot of each."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import CHROMIUM_ARGS, chromium, serve, wait_until_idle
from tests.helpers import PAGES

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def server(intel_small: Path, tmp_path: Path) -> Iterator[str]:
    yield from serve(
        tmp_path, SCENESEEK_DATA=str(intel_small), SCENESEEK_RUNS=str(tmp_path / "runs")
    )


@pytest.fixture()
def search_server(intel_small: Path, tmp_path: Path) -> Iterator[str]:
    from tests.helpers import build_small, flickr_subset

    index = build_small(intel_small, flickr_subset(tmp_path / "flickr"), tmp_path / "idx")
    yield from serve(tmp_path, SCENESEEK_DATA=str(intel_small), SCENESEEK_INDEX=str(index))


def test_every_page_renders_without_exception(server: str, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    pages = ["", *sorted(p.stem for p in PAGES.glob("*.py") if p.stem != "home")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name in pages:
                page.goto(f"{server}/{name}", wait_until="domcontentloaded")
                wait_until_idle(page)
                page.screenshot(path=str(shots / f"{name or 'home'}.png"), full_page=True)
                errors = page.locator('[data-testid="stException"]')
                assert errors.count() == 0, f"page /{name}: {errors.first.inner_text()}"
                assert page.locator("h1").count() >= 1
        finally:
            browser.close()


def test_search_by_sentence_in_the_browser(search_server: str, shots: Path) -> None:
    """Type a sentence into the running app and get the result grid with scores."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{search_server}/search", wait_until="domcontentloaded")
            wait_until_idle(page)
            box = page.get_by_role("textbox", name="Describe a scene")  # not its help button
            box.fill("A serene lake surrounded by forest.")
            box.press("Enter")
            images = page.locator('[data-testid="stImage"]')
            deadline = time.time() + 120
            while images.count() < 10 and time.time() < deadline:
                time.sleep(0.5)
            wait_until_idle(page)
            page.screenshot(path=str(shots / "search-results.png"), full_page=True)
            errors = page.locator('[data-testid="stException"]')
            assert errors.count() == 0, errors.first.inner_text()
            assert images.count() >= 10
            # the query's analysis above the grid
            assert page.get_by_text(re.compile(r"keywords: .*\bforest\b")).count() >= 1
        finally:
            browser.close()

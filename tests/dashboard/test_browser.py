"""Real-browser smoke test: `streamlit run` on 127.0.0.1, every page in headless Chromium
(Debian's, never a downloaded build), no exception shown, a screenshot of each."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import PAGES, REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if path is None:
        msg = "Debian chromium is not installed (make browser-deps)"
        if os.environ.get("SCENESEEK_REQUIRE_BROWSER"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(intel_small: Path, tmp_path: Path) -> Iterator[str]:
    yield from _serve(
        tmp_path, SCENESEEK_DATA=str(intel_small), SCENESEEK_RUNS=str(tmp_path / "runs")
    )


@pytest.fixture()
def search_server(intel_small: Path, tmp_path: Path) -> Iterator[str]:
    from tests.helpers import build_small, flickr_subset

    index = build_small(intel_small, flickr_subset(tmp_path / "flickr"), tmp_path / "idx")
    yield from _serve(tmp_path, SCENESEEK_DATA=str(intel_small), SCENESEEK_INDEX=str(index))


def _serve(tmp_path: Path, **extra_env: str) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, **extra_env}
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "dashboard" / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_until_idle(page, timeout_s: float = 120) -> None:
    """A cold Streamlit page renders in stages: wait for the title, then for the run to end."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    page.wait_for_selector('h1, [data-testid="stException"]', timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 2.0:
            return
        time.sleep(0.25)
    raise AssertionError("page kept running")


@pytest.fixture()
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $SCENESEEK_SCREENSHOTS to keep them, else the test's tmp_path
    (never the working tree)."""
    env = os.environ.get("SCENESEEK_SCREENSHOTS")
    folder = Path(env).expanduser() if env else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_renders_without_exception(server: str, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    pages = ["", *sorted(p.stem for p in PAGES.glob("*.py") if p.stem != "home")]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name in pages:
                page.goto(f"{server}/{name}", wait_until="domcontentloaded")
                _wait_until_idle(page)
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
        browser = pw.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.goto(f"{search_server}/search", wait_until="domcontentloaded")
            _wait_until_idle(page)
            box = page.get_by_role("textbox", name="Describe a scene")  # not its help button
            box.fill("A serene lake surrounded by forest.")
            box.press("Enter")
            images = page.locator('[data-testid="stImage"]')
            deadline = time.time() + 120
            while images.count() < 10 and time.time() < deadline:
                time.sleep(0.5)
            _wait_until_idle(page)
            page.screenshot(path=str(shots / "search-results.png"), full_page=True)
            errors = page.locator('[data-testid="stException"]')
            assert errors.count() == 0, errors.first.inner_text()
            assert images.count() >= 10
            # the query's analysis above the grid
            assert page.get_by_text(re.compile(r"keywords: .*\bforest\b")).count() >= 1
        finally:
            browser.close()

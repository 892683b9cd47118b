"""Browser tests that act like a person on the running app (headless Chromium, a small real
subset: 8 train and 4 test Intel images per class and 16 Flickr8k photos with captions).

Each drives the widgets the way a user does (a lasso drawn with the mouse, a file uploaded,
a query typed, a slider moved with the keyboard) and reads what the page then shows: AppTest
never makes a plotly selection or lays out a grid, so these catch what it cannot. The server,
its index and the browser are built once per session; every test opens its own page (its
own Streamlit session)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import CHROMIUM_ARGS, chromium, serve, wait_until_idle
from tests.helpers import build_small, flickr_subset, make_intel_subset

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# what a build's line says, whichever step it is at (core.search.writer), or that it ended
STEP_TEXT = (
    r"Reading the folder|Loading the image model|Reading the index|Checking files|Encoding "
    r"photos|Reading photos encoded before|Writing what|Updating the search|Indexing"
)
LONG = 600_000  # ms: a cold page on a busy machine (model loads, the first audit)
WAIT = 90_000  # ms: anything else


@pytest.fixture(scope="session")
def app_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser_app")
    intel = make_intel_subset(root / "intel", n_train=8, n_test=4)
    images, captions = flickr_subset(root / "flickr")
    index = build_small(intel, (images, captions), root / "idx")
    return {"root": root, "intel": intel, "index": index, "captions": captions}


@pytest.fixture(scope="session")
def app(app_data: dict[str, Path]) -> Iterator[str]:
    root = app_data["root"]
    yield from serve(
        root,
        SCENESEEK_DATA=str(app_data["intel"]),
        SCENESEEK_INDEX=str(app_data["index"]),
        SCENESEEK_RUNS=str(root / "runs"),
        SCENESEEK_CACHE=str(root / "cache"),
        SCENESEEK_CAPTIONS=str(app_data["captions"]),
    )


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, shots: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page at 1440 px; its last state is saved as a screenshot either way."""
    p = browser.new_page(viewport={"width": 1440, "height": 1600})
    p.set_default_timeout(WAIT)
    try:
        yield p
    finally:
        p.screenshot(path=str(shots / f"{request.node.name}.png"))
        p.close()


def open_page(page, app: str, name: str) -> None:
    page.goto(f"{app}/{name}", wait_until="domcontentloaded")
    wait_until_idle(page, LONG / 1000)


def settle(page) -> None:
    time.sleep(1.0)  # let the rerun a widget triggered start before waiting for it to end
    wait_until_idle(page, LONG / 1000)


def no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def audited(page, app: str) -> None:
    """The Curate page with its audit done (the first test to get here runs it)."""
    open_page(page, app, "curate")
    start = page.get_by_role("button", name="Audit this collection")
    if start.count():
        start.click()
    page.get_by_role("tab", name="Map").wait_for(timeout=LONG)
    settle(page)
    no_exception(page)


def draw_lasso(page, chart) -> None:
    """Drag a closed loop with the mouse over the top half of the plot area (the map opens in
    lasso mode), as a person selecting a cluster does."""
    box = chart.locator(".nsewdrag").first.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    loop = [(0.02, 0.02), (0.98, 0.02), (0.98, 0.5), (0.5, 0.55), (0.02, 0.5), (0.02, 0.03)]
    page.mouse.move(x + loop[0][0] * w, y + loop[0][1] * h)
    page.mouse.down()
    for fx, fy in loop[1:]:
        page.mouse.move(x + fx * w, y + fy * h, steps=8)
    page.mouse.up()


def test_curate_map_lasso_reaches_the_grid_and_the_export(app: str, page, tmp_path: Path):
    audited(page, app)
    page.get_by_role("tab", name="Map").click()
    chart = page.locator(".st-key-curate_map")  # the map's widget key
    chart.locator(".nsewdrag").first.wait_for()
    time.sleep(1.0)  # plotly finishes drawing the points after the drag layer exists
    draw_lasso(page, chart)
    selected = page.get_by_text(re.compile(r"Selected: \d+ images"))
    selected.or_(page.locator('[data-testid="stException"]')).first.wait_for()
    settle(page)
    no_exception(page)  # issue 19: int() of a dict in selected_rows, for every lasso
    n = int(re.search(r"Selected: (\d+) images", selected.inner_text()).group(1))
    assert 3 <= n < 72, n  # a part of the 72 images, not none and not all
    panel = page.get_by_role("tabpanel")  # only the open tab's panel is in the page
    assert panel.locator('[data-testid="stImage"]').count() == min(n, 24)
    # The other tabs work while the selection stands (they showed the traceback before).
    page.get_by_role("tab", name="ImageNet groups").click()
    no_exception(page)
    page.get_by_role("tab", name="Export").click()
    page.get_by_text("map selection", exact=True).click()
    settle(page)
    page.get_by_text(re.compile(rf"^{n} images, into <label>/ folders")).wait_for()
    out = tmp_path / "export"
    folder = page.get_by_role("textbox", name="Folder (new or empty)")
    folder.fill(str(out))
    folder.press("Enter")
    settle(page)
    page.get_by_role("button", name="Export to folder").click()
    page.get_by_text(re.compile(rf"Exported {n} images")).wait_for()
    exported = [p for p in out.glob("*/*") if p.suffix == ".jpg"]
    assert len(exported) == n
    assert (out / "export.csv").exists()


def test_review_decision_in_bulk(app: str, page, app_data: dict[str, Path]):
    audited(page, app)
    page.get_by_role("tab", name="Label mistakes").click()
    page.get_by_role("button", name="Select this page").click()
    settle(page)
    apply = page.get_by_role("button", name=re.compile(r"Apply to \d+ selected"))
    n = int(re.search(r"\d+", apply.inner_text()).group())
    assert n >= 2, "a bulk action needs several flagged images on the page"
    page.get_by_role("combobox", name="Action", exact=True).click()
    page.get_by_role("option", name="remove", exact=True).click()
    settle(page)
    apply.click()
    settle(page)
    no_exception(page)
    page.get_by_text(re.compile(rf"Decisions: 0 relabel · 0 keep · {n} remove")).wait_for()
    sidecar = next((app_data["root"] / "cache").rglob("reviews/*.json"))
    actions = [d["action"] for d in json.loads(sidecar.read_text())["decisions"].values()]
    assert actions == ["remove"] * n
    # every tile's own decision says so too
    removes = page.get_by_role("radio", name="remove", exact=True).all()
    assert sum(r.is_checked() for r in removes) == n


def test_search_grid_reads_row_by_row_and_a_tile_enlarges(app: str, page):
    open_page(page, app, "search")
    box = page.get_by_role("textbox", name="Describe a scene")
    box.fill("Snow and ice on a mountain glacier.")
    box.press("Enter")
    ranks = page.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text=re.compile(r"^\d+\. \d\.\d{3} ·")
    )
    ranks.nth(9).wait_for(timeout=LONG)  # the first query loads the models
    settle(page)
    no_exception(page)
    tiles = {}
    for i in range(ranks.count()):
        text = ranks.nth(i).inner_text()
        rank = int(text.split(".", 1)[0])
        block = ranks.nth(i).locator("xpath=ancestor::*[@data-testid='stVerticalBlock'][1]")
        tiles[rank] = (block, block.locator('[data-testid="stImage"]').first.bounding_box())
    assert sorted(tiles) == list(range(1, 11))
    first_row = [tiles[r][1] for r in range(1, 6)]
    assert len({round(b["y"]) for b in first_row}) == 1, "ranks 1-5 start one row"
    assert [b["x"] for b in first_row] == sorted(b["x"] for b in first_row), "left to right"
    lowest = max(b["y"] + b["height"] for b in first_row)
    six = tiles[6][1]
    assert six["y"] > lowest and abs(six["x"] - first_row[0]["x"]) < 2, "rank 6 opens row 2"
    # Enlarge the first result: a dialog with its picture, file name and path.
    block = tiles[1][0]
    name = block.locator('[data-testid="stCaptionContainer"]').last.inner_text().strip()
    block.get_by_role("button", name=re.compile("Enlarge")).click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    expect(dialog).to_contain_text("score: ")  # the rank and score of the result
    expect(dialog.locator('[data-testid="stImage"]')).to_have_count(1)
    text = dialog.inner_text()
    assert re.search(rf"/{re.escape(name)}\b", text), f"no path to {name} in: {text}"


def test_eigen_slider_moves_the_figure(app: str, page):
    open_page(page, app, "eigen")
    page.get_by_role("tab", name="Accuracy vs k").click()
    page.locator("text=/^k=39: /").first.wait_for(timeout=LONG)  # the fit, then the marker
    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(5):
        thumb.press("ArrowRight")
    settle(page)
    no_exception(page)
    page.locator("text=/^k=44: /").first.wait_for(timeout=60_000)
    expect(page.locator("text=/^k=39: /")).to_have_count(0)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Components k")
    assert metric.locator('[data-testid="stMetricValue"]').inner_text().strip() == "44"


def test_keywords_upload_then_back_to_the_data_set_keeps_the_mapping_table(
    app: str, page, app_data: dict[str, Path]
):
    open_page(page, app, "keywords")
    page.get_by_text("Upload a file", exact=True).click()
    settle(page)
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        str(app_data["captions"])
    )
    page.locator('[data-testid="stMetric"]').filter(has_text="Captions").wait_for(timeout=LONG)
    settle(page)
    page.get_by_text("Data set's captions file", exact=True).click()
    settle(page)
    no_exception(page)
    page.get_by_role("tab", name="Mapping table").click()
    area = page.get_by_role("textbox", name="Mapping table (JSON)")
    area.wait_for()
    table = json.loads(area.input_value())
    assert table, "the mapping editor shows the table"
    assert "forest" in json.dumps(table)


def test_home_says_where_to_start_and_links_to_the_pages(app: str, page):
    open_page(page, app, "")
    page.get_by_text("Start here").wait_for()
    page.get_by_text(re.compile(r"Search index: .*88 rows")).wait_for()
    page.get_by_role("link", name=re.compile("Start: the data set")).click()
    page.get_by_role("heading", name=re.compile("Data set")).wait_for()
    assert page.url.endswith("/dataset")


@pytest.fixture(scope="module")
def fresh_app(app_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app over the same small data (72 images) with no index yet: its own server and
    index; the test session's cache, where app_data's build exported the sentence model (a
    fresh cache would export it again inside the timed build)."""
    root = tmp_path_factory.mktemp("fresh_app")
    yield from serve(
        root,
        SCENESEEK_DATA=str(app_data["intel"]),
        SCENESEEK_INDEX=str(root / "idx"),
        SCENESEEK_RUNS=str(root / "runs"),
        SCENESEEK_CACHE=os.environ["SCENESEEK_CACHE"],
    )


def go_to(page, link: str, heading: str) -> None:
    """Switch pages the way a person does: the sidebar's link (same session)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=link).first.click()
    page.get_by_role("heading", name=re.compile(heading)).first.wait_for(timeout=LONG)
    settle(page)


def test_index_build_goes_on_while_the_user_visits_another_page(fresh_app: str, page):
    open_page(page, fresh_app, "search")
    page.get_by_role("button", name="Build the index").click()
    # Running, or (photos already in the encoding store) finished before the first poll.
    first = page.get_by_text(
        re.compile(r"Started at \d\d:\d\d:\d\d · runs in the background|Indexed \d+ images")
    ).first
    first.wait_for(timeout=LONG)
    started = re.search(r"Started at (\d\d:\d\d:\d\d)", first.inner_text())
    go_to(page, "Home", "SceneSeek")  # the build is listed there, live or already finished
    page.get_by_text("Background work", exact=True).wait_for(timeout=WAIT)
    page.get_by_text(re.compile(STEP_TEXT)).first.wait_for()
    go_to(page, "Search", "Search")
    # Back on the page: the same job still running (same start time), or its result; never
    # the offer to build again (a build stopped by the page switch) or a second build.
    ended = page.get_by_text(re.compile(r"Indexed \d+ images"))
    if not ended.count() and started:
        assert started.group(1) in page.get_by_text(re.compile("Started at")).inner_text()
        assert page.get_by_role("button", name="Build the index").count() == 0
    ended.wait_for(timeout=LONG)
    no_exception(page)
    expect(page.get_by_text(re.compile(r": 72 images · categories from"))).to_be_visible()

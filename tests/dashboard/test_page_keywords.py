"""AppTest of the Keywords page: the data set's captions (with photos) and an upload."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.data.captions import upload_problem
from core.text.categories import Mapping
from tests.helpers import PAGES, REPO, require_shared

PAGE = str(PAGES / "keywords.py")


@pytest.fixture(scope="module")
def small_captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """800 real Flickr8k captions of photos that exist, a bad row, and those photos."""
    src = require_shared("flickr8k", "captions.txt")
    have = {p.name for p in (src.parent / "Images").glob("*.jpg")}
    with open(src, encoding="utf-8") as fh:
        lines = [next(fh), *[ln for ln in fh if ln.split(",", 1)[0] in have][:800]]
    folder = tmp_path_factory.mktemp("flickr_small")
    (folder / "captions.txt").write_text("".join(lines) + "broken row\n", encoding="utf-8")
    images = folder / "Images"
    images.mkdir()
    for name in {ln.split(",", 1)[0] for ln in lines[1:]}:
        photo = src.parent / "Images" / name
        if photo.exists():
            shutil.copy2(photo, images / name)
    return folder / "captions.txt"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SCENESEEK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCENESEEK_MAPPING", raising=False)


def _run(monkeypatch: pytest.MonkeyPatch, captions: Path | None) -> AppTest:
    if captions is not None:
        monkeypatch.setenv("SCENESEEK_CAPTIONS", str(captions))
    else:
        monkeypatch.delenv("SCENESEEK_CAPTIONS", raising=False)
    return AppTest.from_file(PAGE, default_timeout=120).run()


def test_page_on_data_set_captions(small_captions: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _run(monkeypatch, small_captions)
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Captions"] == "800" and metrics["Malformed rows"] == "1"
    assert any("Format **flickr8k-csv**" in c.value for c in at.caption)
    malformed = [df.value for df in at.dataframe if "reason" in df.value.columns]
    assert malformed and malformed[0]["line"].tolist() == [802]
    # HMM tab: the typed sentence's table word is highlighted.
    at.text_input(key="hmm_sentence").set_value("Two dogs run across the snowy mountains").run()
    assert not at.exception
    assert any(":green-background[**mountains**]" in md.value for md in at.markdown)
    # Captions per category shows the photo when Images/<image> exists.
    at.selectbox(key="cat_view").set_value("street").run()
    assert not at.exception
    # Word clouds (2) plus one photo per caption shown (every caption here has its photo).
    assert len(at.get("image")) >= 3
    at.checkbox(key="with_photo").check().run()
    assert not at.exception and len(at.get("image")) >= 3
    assert any("TF-IDF:" in c.value for c in at.caption)


def test_mapping_editor_apply_accept_save(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _run(monkeypatch, small_captions)
    # A broken edit is refused with a message, the table in use stays.
    at.text_area(key="mapping_editor").set_value("{not json").run()
    at.button(key="apply_mapping").click().run()
    assert any("Not applied" in e.value for e in at.error)
    # Accept a suggestion: it joins the table in use.
    options = at.multiselect(key="sugg_sea").options
    assert options, "expected chi-square/PMI suggestions for sea"
    at.multiselect(key="sugg_sea").set_value([options[0]]).run()
    at.button(key="accept_sugg").click().run()
    assert not at.exception
    in_use = Mapping.from_json(at.session_state["mapping_json"])
    assert options[0] in in_use.categories["sea"]
    at.button(key="save_mapping").click().run()
    saved = Mapping.load(tmp_path / "cache" / "mapping.json")
    assert options[0] in saved.categories["sea"]


def test_page_upload(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = _run(monkeypatch, tmp_path / "absent.txt")
    at.radio(key="source").set_value("Upload a file").run()
    assert any("Upload a captions file" in i.value for i in at.info)
    data = (
        "1000_a.jpg| 0| A dog runs along the beach by a café .\n"
        + "".join(f"{i}_b.jpg| 0| Snow covers the mountain road number {i} .\n" for i in range(40))
        + "bad row\n"
    ).encode("latin-1")
    at.file_uploader(key="captions_upload").set_value(("results.csv", data, "text/csv")).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Captions"] == "41"
    assert any("Format **flickr30k-pipe**" in c.value for c in at.caption)
    assert metrics["Malformed rows"] == "1"
    assert any("not valid UTF-8" in w.value for w in at.warning)  # latin-1 fallback said


def test_page_upload_binary_and_missing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _run(monkeypatch, tmp_path / "absent.txt")
    assert any("no such file" in e.value for e in at.error)
    at.radio(key="source").set_value("Upload a file").run()
    at.file_uploader(key="captions_upload").set_value(
        ("x.txt", b"\x89PNG\x00\x00binary", "text/plain")
    ).run()
    assert not at.exception
    assert any("looks binary" in e.value for e in at.error)


def test_page_upload_without_usable_captions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _run(monkeypatch, tmp_path / "absent.txt")
    at.radio(key="source").set_value("Upload a file").run()
    at.file_uploader(key="captions_upload").set_value(
        ("c.txt", b"image,caption\nnot a row\n", "text/plain")
    ).run()
    assert not at.exception
    assert any("No usable captions" in e.value and "1 malformed" in e.value for e in at.error)
    at.file_uploader(key="captions_upload").set_value(
        ("s.txt", b"the of and\nit is 42 !\n", "text/plain")
    ).run()
    assert not at.exception
    assert any("no content words" in e.value for e in at.error)


def test_upload_cap_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One upload limit: the label says the server's limit (.streamlit/config.toml), which
    the widget enforces; the size check is the function the page calls (a 50 MB upload
    through AppTest would only slow the suite)."""
    limit = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"][
        "maxUploadSize"
    ]
    at = _run(monkeypatch, tmp_path / "absent.txt")
    at.radio(key="source").set_value("Upload a file").run()
    labels = [w.label for w in at.get("file_uploader")]
    assert labels and f"up to {limit} MB)" in labels[0], labels
    msg = upload_problem(60 * 1024 * 1024, "big.txt", limit)
    assert (
        "60 MB" in msg and f"limit here is {limit} MB" in msg and "python -m core keywords" in msg
    )
    assert upload_problem(0, "e.txt", limit) == "e.txt is empty: no captions to read."
    assert upload_problem(10, "ok.txt", limit) is None


def _shown_after_remount(at: AppTest, key: str) -> str:
    """What the browser draws in a text area it had unmounted (and so forgotten): the value
    the server sends with the element when one was set this run, else the widget's default
    (Streamlit's frontend; AppTest itself keeps the server-side value)."""
    proto = at.text_area(key=key).proto
    return proto.value if proto.set_value else proto.default


def test_mapping_editor_survives_upload_and_back(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: after Captions -> "Upload a file" -> back, the editor was empty."""
    at = _run(monkeypatch, small_captions)
    table = Mapping.default().to_json()
    assert _shown_after_remount(at, "mapping_editor") == table
    # An edit (not yet applied) is kept through the round trip too.
    edited = table.replace('"alley"', '"alley", "lane"')
    at.text_area(key="mapping_editor").set_value(edited).run()
    for source in ("Upload a file", "Data set's captions file"):
        at.radio(key="source").set_value(source).run()
        assert not at.exception
    assert _shown_after_remount(at, "mapping_editor") == edited
    at.button(key="apply_mapping").click().run()
    assert "lane" in Mapping.from_json(at.session_state["mapping_json"]).categories["street"]


def test_mapping_editor_names_the_field_at_fault(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 8 in the app: a table of the wrong shape is refused with the field."""
    at = _run(monkeypatch, small_captions)
    bad = Mapping.default().to_dict() | {"exact": "beach"}
    at.text_area(key="mapping_editor").set_value(json.dumps(bad)).run()
    at.button(key="apply_mapping").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(
        "Not applied: exact: expected a list of words, got a string ('beach')" in e for e in errors
    ), errors
    assert "mapping_json" not in at.session_state  # the packaged table stays in use


def test_broken_mapping_file_is_named_and_the_page_goes_on(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "mapping.json"
    bad.write_text('{"categories": {"sea": ["sea"]}, "exact": null}', encoding="utf-8")
    monkeypatch.setenv("SCENESEEK_MAPPING", str(bad))
    at = _run(monkeypatch, small_captions)
    assert not at.exception, at.exception
    assert any(
        f"mapping table {bad}: exact: expected a list of words, got null" in e.value
        for e in at.error
    ), [e.value for e in at.error]
    assert {m.label: m.value for m in at.metric}["Captions"] == "800"  # the packaged table


def test_upload_finds_its_photos_next_to_the_data_set_captions(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: an upload whose photos are all in the data set's Images/ showed 0 captions
    under "Only captions whose photo is here", with no reason."""
    at = _run(monkeypatch, small_captions)
    at.radio(key="source").set_value("Upload a file").run()
    lines = small_captions.read_text(encoding="utf-8").splitlines(keepends=True)[:401]
    at.file_uploader(key="captions_upload").set_value(
        ("mine.txt", "".join(lines).encode(), "text/plain")
    ).run()
    assert not at.exception, at.exception
    at.selectbox(key="cat_view").set_value("street").run()
    at.checkbox(key="with_photo").check().run()
    assert not at.exception
    assert any(f"`{small_captions.parent / 'Images'}`" in c.value for c in at.caption)
    shown = [c.value for c in at.caption if " captions labelled street" in c.value]
    assert shown and not shown[0].startswith("0 "), shown
    assert len(at.get("image")) >= 1


def test_upload_without_a_photo_folder_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _run(monkeypatch, tmp_path / "absent.txt")
    at.radio(key="source").set_value("Upload a file").run()
    data = "".join(f"{i}.jpg| 0| Snow covers the mountain road {i} .\n" for i in range(40))
    at.file_uploader(key="captions_upload").set_value(("r.csv", data.encode(), "text/csv")).run()
    at.checkbox(key="with_photo").check().run()
    assert not at.exception
    assert any("no folder of its own" in c.value for c in at.caption)


def test_chi_square_p_values_are_readable(
    small_captions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: p-values like 1e-37 overflowed their cell in full decimals."""
    at = _run(monkeypatch, small_captions)
    table = next(df for df in at.dataframe if "p_value" in df.value.columns)
    assert table.value["p_value"].min() < 1e-10  # the tiny values the issue was about
    config = json.loads(table.proto.columns)
    assert config["p_value"]["type_config"]["format"] == "%.1e"

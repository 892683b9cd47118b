"""The index as a store that keeps its promises (issue 14): moved files followed by content
hash, deleted files pruned, one writer at a time, unreadable metadata rebuilt, damaged data
named, and a symlink loop one skipped file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.search import build_index
from core.search.maintenance import (
    IndexBusyError,
    file_missing,
    index_lock,
    prune,
    read_meta_for_update,
)
from core.search.store import SearchIndexError, load_rows, read_meta
from tests.helpers import IMAGE_SIZE, REPO, run_cli, strict_loads
from tests.hostile import symlink_loop

pytestmark = pytest.mark.slow


def _photos(intel_small: Path, out: Path) -> Path:
    """Three real photos of two classes (a private copy: tests move and delete them)."""
    for c in ("forest", "sea"):
        (out / c).mkdir(parents=True)
        for f in sorted((intel_small / "seg_test" / c).glob("*.jpg"))[:3]:
            shutil.copy2(f, out / c / f.name)
    return out


def _build(folder: Path, index: Path, encoder, **kw):
    return build_index(folder, index, encoder=encoder, workers=0, batch_size=8, **kw)


@pytest.fixture(scope="module")
def built(intel_small: Path, tmp_path_factory: pytest.TempPathFactory, encoder):
    """(photos, index) built once; tests that damage the index work on a copy."""
    root = tmp_path_factory.mktemp("built")
    photos = _photos(intel_small, root / "photos")
    _build(photos, root / "idx", encoder)
    return photos, root / "idx"


def test_moved_files_keep_their_rows_and_deleted_ones_are_pruned(
    intel_small: Path, tmp_path: Path, encoder
) -> None:
    folder = _photos(intel_small, tmp_path / "photos")
    loop = symlink_loop(folder / "sea")
    index = tmp_path / "idx"
    first = _build(folder, index, encoder)
    assert first.rows == 6
    assert [s["path"] for s in first.skipped] == [str(loop)]  # one skipped file, not an abort
    before = load_rows(index, ["path", "sha256", "vector"]).to_pydict()
    vec_of = dict(zip(before["sha256"], before["vector"], strict=True))

    moved = tmp_path / "elsewhere" / "photos"  # the whole folder moved: a new root
    shutil.move(folder, moved)
    stats = _build(moved, index, encoder)
    assert (stats.moved, stats.encoded, stats.rows) == (6, 0, 6)  # not doubled, not re-encoded
    after = load_rows(index, ["path", "sha256", "vector", "label"]).to_pydict()
    assert all(p.startswith(str(moved)) for p in after["path"])
    assert all(vec_of[s] == v for s, v in zip(after["sha256"], after["vector"], strict=True))

    (moved / "sea").rename(moved / "ocean")  # renamed inside the root: the label follows
    stats = _build(moved, index, encoder)
    assert (stats.moved, stats.encoded, stats.rows) == (3, 0, 6)
    assert set(load_rows(index, ["label"]).to_pydict()["label"]) == {"forest", "ocean"}

    gone, kept = sorted((moved / "forest").glob("*.jpg"))[:2]
    gone.unlink()
    assert file_missing(str(gone)) and not file_missing(str(kept))
    dry = prune(index, dry_run=True)
    assert dry.removed == [str(gone)] and load_rows(index).num_rows == 6
    result = prune(index)
    assert result.to_dict()["removed"] == 1 and load_rows(index).num_rows == 5
    assert read_meta(index)["rows"] == 5


def test_second_writer_is_refused_with_the_pid(built, encoder) -> None:
    folder, index = built
    with index_lock(index), pytest.raises(IndexBusyError, match=f"PID {os.getpid()}"):
        _build(folder, index, encoder)
    # Another process holds the lock: the CLI says who, in one line.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom core.search.maintenance import index_lock\n"
            f"with index_lock({str(index)!r}):\n    print('locked', flush=True)\n    time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = subprocess.run(
            [sys.executable, "-m", "core", "index", "--images", str(folder), "--index", str(index)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode != 0
        assert res.stderr.strip() == (
            f"error: index {index} is being written by PID {holder.pid}; wait for it to "
            "finish and run again"
        )
    finally:
        holder.kill()  # like kill -9: the kernel releases its lock
        holder.wait()
    with index_lock(index):
        pass


def test_unreadable_index_json_is_rebuilt_by_index(
    built, tmp_path: Path, encoder, caplog: pytest.LogCaptureFixture
) -> None:
    folder, index = built
    copy = shutil.copytree(index, tmp_path / "idx")
    (copy / "index.json").write_bytes(b'{"version": 2, "roots": {"/x": {"capt')  # torn
    with pytest.raises(SearchIndexError, match=r"index\.json") as info:
        read_meta(copy)
    assert "rebuild" in str(info.value)
    stats = _build(folder, copy, encoder)
    assert (stats.encoded, stats.unchanged, stats.rows) == (0, 6, 6)  # nothing lost or redone
    assert read_meta(copy)["rows"] == 6

    # Torn again, then `index` with no encoder options: the table kept the encoder settings
    # (never the defaults: vectors of two input sizes in one index), said in one warning.
    want = read_meta(copy)["encoder"]
    (copy / "index.json").write_bytes(b"\xff\xfe not json")
    assert read_meta_for_update(copy, warn=False)["encoder"] == want
    caplog.clear()  # the first rebuild above warned too
    with caplog.at_level("WARNING", logger="core.search.maintenance"):
        res = run_cli("index", "--images", folder, "--index", copy, "--workers", "0", "--json")
    assert res.exit_code == 0, res.stderr
    warnings = [r.getMessage() for r in caplog.records if "rebuilding index.json" in r.message]
    assert len(warnings) == 1 and str(copy / "index.json") in warnings[0]
    assert strict_loads(res.stdout)["unchanged"] == 6
    assert read_meta(copy)["encoder"]["image_size"] == IMAGE_SIZE == want["image_size"]
    (copy / "index.json").write_bytes(b"")
    res = run_cli("index", "--images", folder, "--index", copy, "--image-size", "64")
    assert res.exit_code == 2 and f"image_size={IMAGE_SIZE}, not 64" in res.stderr


def test_damaged_table_is_named_not_a_panic(built, tmp_path: Path) -> None:
    copy = shutil.copytree(built[1], tmp_path / "idx")
    for f in (copy / "images.lance" / "data").glob("*.lance"):
        f.write_bytes(os.urandom(100))  # overwritten data files
    with pytest.raises(SearchIndexError, match="damaged"):
        load_rows(copy)
    res = run_cli("search", "the sea", "--index", copy)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "damaged" in res.stderr


def test_evaluate_retrieval_uses_the_captions_file_given(built, tmp_path: Path) -> None:
    folder, index = built
    names = [p.name for p in sorted(folder.rglob("*.jpg"))]
    caps = tmp_path / "captions.txt"
    caps.write_text(
        "image,caption\n" + f"{names[0]},A dense green forest.\n"
        f"{names[0]},Tall trees in a wood.\n{names[-1]},Waves on the sea.\n",
        encoding="utf-8",
    )
    args = ["evaluate-retrieval", "--index", index, "--modes", "semantic", "--json"]
    res = run_cli(*args, "--captions", caps)
    assert res.exit_code == 0, res.stderr
    out = strict_loads(res.stdout)
    assert out["source"] == str(caps) and out["n_queries"] == 3  # FILE's captions, not the index's
    other = tmp_path / "other.txt"
    other.write_text("image,caption\nnot_indexed.jpg,A cat on a sofa.\n", encoding="utf-8")
    res = run_cli(*args, "--captions", other)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and str(other) in res.stderr


# Runs last: it deletes a photo of the shared index and prunes it.
def test_results_say_missing_and_the_page_prunes(built, tmp_path: Path, monkeypatch) -> None:
    import json

    from streamlit.testing.v1 import AppTest

    from core.search.engine import SearchEngine
    from tests.helpers import PAGES

    folder, index = built
    gone = sorted((folder / "sea").glob("*.jpg"))[0]
    gone.unlink()
    engine = SearchEngine.load(index)
    resp = engine.search("the sea", "semantic", 6)
    flags = {r.path: r.missing for r in resp.results}
    assert flags[str(gone)] is True and sum(flags.values()) == 1

    res = run_cli("search", "the sea", "--index", index, "--k", "6", "--json")
    assert res.exit_code == 0, res.stderr
    out = strict_loads(res.stdout)
    assert [r["path"] for r in out["results"] if r["missing"]] == [str(gone)]
    res = run_cli("search", "森の中の湖", "--index", index, "--json")
    assert res.exit_code == 0, res.stderr
    notes = " ".join(strict_loads(res.stdout)["notes"])
    assert "not look like English" in notes and "Empty query" not in notes
    res = run_cli("search", "château", "--index", index, "--json")  # one word, not `ch teau`
    assert res.exit_code == 0, res.stderr
    out = strict_loads(res.stdout)
    assert out["keywords"] == ["château"] and "not look like English" not in " ".join(out["notes"])
    for args, says in [
        (["--split", "nosuch"], "unknown split 'nosuch'"),
        (["--like", str(symlink_loop(tmp_path))], "symlink loop"),
    ]:
        res = run_cli("search", "the sea", "--index", index, *args)
        assert res.exit_code == 2 and res.stderr.count("\n") == 1 and says in res.stderr
    bad = tmp_path / "mapping.json"
    bad.write_bytes(b'{"categories": {"sea": ["w\xe4ter"]}}')  # latin-1, not UTF-8
    res = run_cli("search", "the sea", "--index", index, env={"SCENESEEK_MAPPING": str(bad)})
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert f"mapping table {bad} is not UTF-8" in res.stderr

    monkeypatch.setenv("SCENESEEK_INDEX", str(index))
    at = AppTest.from_file(str(PAGES / "search.py"), default_timeout=180)
    at.run()
    at.text_input(key="search_query").input("the sea").run()
    assert not at.exception, at.exception
    # a tile and a word under it (the gallery's markdown line), no crash
    assert any("file missing" in m.value for m in at.markdown)
    at.button(key="prune").click().run()
    assert not at.exception, at.exception
    assert "Removed 1 of 6 rows" in at.success[0].value
    assert load_rows(index).num_rows == 5 and json.loads((index / "index.json").read_text())


class _Killed(BaseException):
    """Stands for a kill -9 between committing new rows and deriving from them."""


def test_rows_killed_before_derive_are_counted_out_and_said(
    intel_small: Path, tmp_path: Path, encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22 item 7: an `index` run killed in its mapping stage has committed rows without
    semantic vectors. Until `index` runs again, every answer says how many images are not
    searchable, the pool counts only what a query can return, and the next run heals it."""
    import core.search.derive as derive
    from core.search.engine import SearchEngine

    first = _photos(intel_small, tmp_path / "first")
    index = tmp_path / "idx"
    _build(first, index, encoder)
    more = tmp_path / "more" / "glacier"
    more.mkdir(parents=True)
    for f in sorted((intel_small / "seg_test" / "glacier").glob("*.jpg"))[:2]:
        shutil.copy2(f, more / f.name)

    def killed(*_a, **_k):
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(derive, "write_derived", killed)
        with pytest.raises(_Killed):
            _build(more.parent, index, encoder)
    assert read_meta(index)["derived"] is False and read_meta(index)["rows"] == 8
    resp = SearchEngine.load(index).search("the sea", "semantic", 8)
    assert resp.pool == 6 and len(resp.results) == 6
    assert any("2 of 8 images are not searchable yet" in n for n in resp.notes)

    _build(more.parent, index, encoder)  # the next run derives what the killed one left
    assert read_meta(index)["derived"] is True
    resp = SearchEngine.load(index).search("the sea", "semantic", 8)
    assert resp.pool == 8 and not any("not searchable" in n for n in resp.notes)

"""What a person waiting for `build_index` is told (issue 19: every wait over 2 s shows
something): each step named as it starts, counted where there is a count; and what a reader
opened while a build is between two commits sees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import core.search.writer as writer
from core.io import read_json
from core.search import build_index
from core.search.writer import (
    CHECKING_FILES,
    DERIVING,
    ENCODING,
    INDEXING,
    LOADING_MODEL,
    READING_FOLDER,
    READING_INDEX,
    READING_STORED,
)

pytestmark = pytest.mark.slow


class Seen:
    """The `stage`, `note` and `progress` callbacks of one build, in the order they came."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.commits: list[tuple[int, int]] = []

    def stage(self, name: str, done: int, total: int) -> None:
        self.events.append((name, done, total))

    def note(self, text: str) -> None:
        self.events.append((text,))

    def progress(self, done: int, total: int) -> None:
        self.commits.append((done, total))

    def steps(self) -> list[str]:
        """The step names, each once, in the order they started."""
        out: list[str] = []
        for e in self.events:
            if not out or out[-1] != e[0]:
                out.append(e[0])
        return out

    def counts(self, name: str) -> list[tuple[int, int]]:
        return [(e[1], e[2]) for e in self.events if e[0] == name]


def _build(folder: Path, index: Path, cache: Path, seen: Seen, **kw):
    return build_index(
        folder, index, workers=0, batch_size=8, chunk=8, cache_dir=cache,
        stage=seen.stage, note=seen.note, progress=seen.progress, **kw,
    )  # fmt: skip


def _new_photo(intel_small: Path, folder: Path) -> Path:
    """A real photo whose content is not in `folder` yet (the data has exact duplicates)."""
    from core.search.files import file_sha256

    have = {file_sha256(str(p)) for p in folder.rglob("*.jpg")}
    for p in sorted((intel_small / "seg_test" / "glacier").glob("*.jpg")):
        if file_sha256(str(p)) not in have:
            return p
    raise AssertionError("no new photo in the subset")


def test_every_step_is_named_in_order_with_its_counts(
    intel_small: Path, folder: Path, tmp_path: Path, encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the session's encoder stands for the one the build loads (loading is the step named)
    monkeypatch.setattr(writer, "load_index_encoder", lambda meta, cfg: encoder)
    cache = tmp_path / "cache"  # an empty encoding store: every photo is decoded
    first = Seen()
    stats = _build(folder, tmp_path / "idx", cache, first)
    assert stats.encoded == 16
    assert first.steps() == [
        READING_FOLDER, LOADING_MODEL, CHECKING_FILES, ENCODING, DERIVING, INDEXING,
    ]  # fmt: skip
    assert first.counts(CHECKING_FILES) == [(0, 16), (16, 16)]
    # every batch of 8 as it is encoded, from 0 (shown while the store is looked up)
    assert first.counts(ENCODING) == [(0, 16), (8, 16), (16, 16)]
    assert first.commits == [(0, 16), (8, 16), (16, 16)]  # the CLI's bar: per commit, as before

    # Another index of the same photos and one new: the 16 come from the encoding store and
    # count as done under their own step (their fast reads must not inflate the rate of the
    # photo that is decoded), then the new one is encoded.
    shutil.copy2(_new_photo(intel_small, folder), folder / "sea" / "new.jpg")
    second = Seen()
    stats = _build(folder, tmp_path / "idx2", cache, second, derive=False)
    assert stats.encoded == 17
    assert second.steps() == [
        READING_FOLDER, LOADING_MODEL, CHECKING_FILES, ENCODING, READING_STORED, ENCODING,
        INDEXING,
    ]  # fmt: skip
    assert second.counts(READING_STORED) == [(8, 17), (16, 17)]
    assert second.counts(ENCODING) == [(0, 17), (17, 17)]

    # An update of the first index: its rows are read, 16 files are unchanged, one is new
    # (and now in the store)
    third = Seen()
    stats = _build(folder, tmp_path / "idx", cache, third)
    assert (stats.unchanged, stats.encoded) == (16, 1)
    assert third.steps() == [
        READING_FOLDER, LOADING_MODEL, READING_INDEX, CHECKING_FILES, ENCODING, READING_STORED,
        DERIVING, INDEXING,
    ]  # fmt: skip
    assert third.counts(CHECKING_FILES) == [(0, 17), (17, 17)]
    assert third.counts(READING_STORED) == [(1, 1)]


def test_nothing_to_encode_names_no_encoding_step(folder: Path, tmp_path: Path, encoder) -> None:
    """A given encoder is not loaded (no step for it); an update with nothing new counts no
    photos and derives nothing it need not."""
    index, cache = tmp_path / "idx", tmp_path / "cache"
    _build(folder, index, cache, Seen(), encoder=encoder, derive=False)
    again = Seen()
    stats = _build(folder, index, cache, again, encoder=encoder, derive=False)
    assert (stats.unchanged, stats.encoded) == (16, 0)
    assert again.steps() == [READING_FOLDER, READING_INDEX, CHECKING_FILES]
    assert again.commits == [(0, 0)]


def test_a_reader_between_a_writers_commits_reads_what_index_json_names(
    folder: Path, tmp_path: Path, encoder
) -> None:
    """A build commits rows (and derived columns) before it rewrites index.json: a reader
    opened in between (the page's engine, reloaded while an update runs) reads the table
    version index.json names, so rows, derived columns and side files agree; the next
    index.json moves it on."""
    import lancedb

    from core.search.index_format import TABLE, delete_paths
    from core.search.table import IndexTable

    index = tmp_path / "idx"
    _build(folder, index, tmp_path / "cache", Seen(), encoder=encoder, derive=False)
    meta = read_json(index / "index.json")
    tbl = lancedb.connect(str(index)).open_table(TABLE)
    gone = sorted(tbl.to_arrow().column("path").to_pylist())[0]
    delete_paths(tbl, [gone])  # a writer's commit; its index.json is not written yet
    assert tbl.version > meta["table_version"]
    mid = IndexTable.open(index)
    assert mid.n == 16 == meta["rows"] and mid.tbl.version == meta["table_version"]
    writer.write_meta(index, meta, tbl)  # the writer's next index.json
    after = IndexTable.open(index)
    assert after.n == 15 and after.tbl.version == tbl.version

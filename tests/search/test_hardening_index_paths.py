"""Hardening round three (issue 22) on a real index: a row whose path was altered to a file
outside the indexed folders is never exported (copied or linked); `search --like` on a device
is one line; `search` takes a query that starts with `-word` and none with --like; an
oversized CSV field is one clear line; no output folder inside the index or its images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.search import build_index
from tests.helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sub(intel_small: Path, tmp_path_factory: pytest.TempPathFactory, encoder) -> tuple[Path, Path]:
    """(images, index): 3 train and 2 test real photos of forest and sea, indexed with the
    text mapping (what `export --query` searches)."""
    root = tmp_path_factory.mktemp("sub3")
    for split, n in (("train", 3), ("test", 2)):
        for c in ("forest", "sea"):
            (root / "sub" / split / c).mkdir(parents=True)
            for f in sorted((intel_small / f"seg_{split}" / c).glob("*.jpg"))[:n]:
                shutil.copy2(f, root / "sub" / split / c / f.name)
    build_index(root / "sub", root / "idx", encoder=encoder, workers=0, batch_size=8)
    return root / "sub", root / "idx"


def _tampered(index: Path, dest: Path, target: Path) -> Path:
    """A copy of `index` whose first sea row's path is `target` (an index from elsewhere)."""
    import lancedb

    shutil.copytree(index, dest)
    table = lancedb.connect(str(dest)).open_table("images")
    path = next(p for p in table.to_arrow().column("path").to_pylist() if "/sea/" in p)
    table.update(where=f"path = '{path}'", values={"path": str(target)})
    # An index from elsewhere comes whole: its index.json names the table version it ships
    # (readers read that version, core.search.table).
    meta_file = dest / "index.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["table_version"] = table.version
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    return dest


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and "Loading weights" not in ln]
    assert res.exit_code != 0, res.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def test_export_never_copies_or_links_a_row_outside_the_indexed_folders(
    sub: tuple[Path, Path], tmp_path: Path
) -> None:
    _, index = sub
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:19000\n", encoding="utf-8")
    bad = _tampered(index, tmp_path / "idx", secret)
    for extra in ([], ["--link"]):
        out = tmp_path / f"x{len(extra)}"
        res = run_cli(
            "export", "--index", bad, "--query", "the sea", "--k", 10, "--out", out, *extra
        )
        line = one_error_line(res)
        assert str(secret) in line and "outside the folders" in line
        assert not out.exists()
    # search lists the row as missing: a path outside the indexed roots is not followed
    res = run_cli("search", "the sea", "--index", bad, "--k", 10, "--json")
    assert res.exit_code == 0, res.stderr
    flags = {r["path"]: r["missing"] for r in json.loads(res.stdout)["results"]}
    assert flags[str(secret)] is True and not any(v for p, v in flags.items() if p != str(secret))
    # The untouched index exports the same search.
    res = run_cli(
        "export", "--index", index, "--query", "the sea", "--k", 10, "--out", tmp_path / "ok"
    )
    assert res.exit_code == 0, res.stderr
    assert not list((tmp_path / "ok").rglob("shadow"))


def test_no_output_inside_the_index_or_its_images(sub: tuple[Path, Path]) -> None:
    images, index = sub
    for out in (index / "x", images / "train" / "exported"):
        res = run_cli("export", "--index", index, "--query", "the sea", "--out", out)
        assert "is inside the input" in one_error_line(res)
        assert not out.exists()
    res = run_cli("index", "--images", images, "--index", images / "idx")
    assert "is inside the input" in one_error_line(res)


def test_search_like_a_device_is_one_line(sub: tuple[Path, Path], tmp_path: Path) -> None:
    _, index = sub
    link = tmp_path / "z.jpg"
    link.symlink_to("/dev/zero")
    for like in ("/dev/zero", link):
        line = one_error_line(run_cli("search", "--index", index, "--like", like, ""))
        assert "not a regular file" in line


def test_search_query_is_optional_with_like_and_may_start_with_minus(
    sub: tuple[Path, Path],
) -> None:
    images, index = sub
    photo = sorted((images / "test" / "sea").glob("*.jpg"))[0]
    res = run_cli("search", "--index", index, "--like", photo, "--k", 3)  # the README's line
    assert res.exit_code == 0, res.stderr
    assert res.stdout.count(". ") >= 3
    res = run_cli("search", "--index", index, "-people the sea", "--k", 3)
    assert res.exit_code == 0, res.stderr
    assert "Excluded: people" in res.stdout
    assert "no such option: --kk" in one_error_line(run_cli("search", "--index", index, "--kk"))


def test_oversized_csv_field_is_one_clear_line(sub: tuple[Path, Path], tmp_path: Path) -> None:
    _, index = sub
    queries = tmp_path / "q.csv"
    queries.write_text("query,category\n" + "x" * 140_000 + ",sea\n", encoding="utf-8")
    line = one_error_line(run_cli("evaluate-retrieval", "--index", index, "--queries", queries))
    assert "not a readable CSV" in line and "unexpected" not in line

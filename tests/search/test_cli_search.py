"""`python -m core index | search | evaluate-retrieval`: --json output and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.resources import queries_csv
from tests.helpers import IMAGE_SIZE, cli_json, flickr_subset, index_json, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(intel_small: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cli_search")
    index = tmp / "idx"
    images, captions = flickr_subset(tmp / "flickr")
    d = index_json(intel_small, index, "--image-size", IMAGE_SIZE, "--no-mapping")
    assert d["found"] == d["encoded"] == d["rows"] == 168 and "mapping" not in d
    d = index_json(images, index, "--captions", captions)
    assert d["encoded"] == 16 and d["rows"] == 184
    assert d["mapping"]["train_labelled_images"] == 120
    assert d["images_per_second"] > 0
    return index, captions


def test_reindex_is_incremental(built, intel_small: Path) -> None:
    index, _ = built
    d = index_json(intel_small, index)
    assert (d["encoded"], d["unchanged"], d["rows"]) == (0, 168, 184)


def test_search_json(built) -> None:
    index, _ = built
    d = cli_json(
        "search", "--index", index, "The beach is full of tourists.", "--k", 4, "--mode", "category"
    )
    assert d["mode"] == "category" and d["categories"] == ["sea"]
    assert "beach" in d["keywords"] and len(d["results"]) == 4
    first = d["results"][0]
    assert {"path", "score", "category", "top_labels", "why"} <= set(first)
    assert first["category"] == "sea" and "'beach'" in first["why"][0]
    d = cli_json("search", "--index", index, "snowy peaks", "--category", "glacier")
    assert d["mode"] == "semantic" and all(x["category"] == "glacier" for x in d["results"])
    like = first["path"]
    d = cli_json("search", "--index", index, "", "--like", like, "--k", 3)
    assert (
        d["mode"] == "image"
        and len(d["results"]) == 3
        and like not in [x["path"] for x in d["results"]]
    )
    r = run_cli("search", "--index", index, "sea")  # readable report
    assert r.exit_code == 0 and "why:" in r.stdout


def test_evaluate_category_queries(built) -> None:
    index, _ = built
    d = cli_json("evaluate-retrieval", "--index", index, "--queries", queries_csv())
    assert d["pool"] == 48 and d["split"] == "test" and d["n_queries"] == 30
    assert set(d["modes"]) == {"keyword", "category", "semantic", "hybrid"}
    for m in d["modes"].values():
        assert 0 <= m["P@10"] <= 1 and 0 <= m["MAP"] <= 1
    # Chance level is 1/6 of the pool; every mode does clearly better on real images.
    assert d["modes"]["category"]["MAP"] > 0.4 and d["modes"]["semantic"]["MAP"] > 0.4
    measured = {  # (P@10, MAP) on these 48 test images (8 per class: P@10 is at most 0.8)
        "keyword": (0.68, 0.85),  # 0.30, 0.39 before issue 20 (words inside labels)
        "category": (0.73, 0.91),
        "semantic": (0.72, 0.90),
        "hybrid": (0.72, 0.90),
    }
    assert d["no_content_queries"] == 0
    assert d["hybrid_vs"]["category"]["metric"] == "P@10"
    assert d["hybrid_vs"]["category"]["resampled"] == "queries"
    for mode, (p10, ap) in measured.items():
        assert d["modes"][mode]["P@10"] == pytest.approx(p10, abs=0.05), mode
        assert d["modes"][mode]["MAP"] == pytest.approx(ap, abs=0.05), mode


def test_evaluate_caption_queries(built) -> None:
    index, captions = built
    d = cli_json("evaluate-retrieval", "--index", index, "--captions", captions)
    # --pool all (the default, issue 11): the held-out photos' captions against every image
    assert d["pool"] == 184 and 0 < d["n_queries"] < 80 and d["n_queries"] % 5 == 0
    assert d["n_photos"] == 7 and d["n_queries"] == 35  # 5 captions of each held-out photo
    for m in d["modes"].values():
        assert {"R@1", "R@5", "R@10", "median_rank", "MRR"} <= set(m)
        assert 1 <= m["median_rank"] <= d["pool"]
    semantic = d["modes"]["semantic"]  # measured: the photo is near the top, not the pool's middle
    assert semantic["median_rank"] == pytest.approx(4, abs=2)
    assert semantic["R@10"] == pytest.approx(0.74, abs=0.1)
    # the hybrid against each mode, its 7 photos resampled whole (5 captions each)
    vs = d["hybrid_vs"]
    assert set(vs) == {"keyword", "category", "semantic"}
    for mode, c in vs.items():
        assert c["metric"] == "R@10" and c["resampled"] == "photos"
        assert c["difference"] == pytest.approx(
            d["modes"]["hybrid"]["R@10"] - d["modes"][mode]["R@10"], abs=1e-3
        )
        assert c["ci95"][0] <= c["difference"] <= c["ci95"][1]
        assert c["better"] + c["worse"] <= d["n_queries"]
    h = cli_json(
        "evaluate-retrieval", "--index", index, "--captions", captions, "--pool", "heldout"
    )
    assert 0 < h["pool"] < 16 and h["n_queries"] == 5 * h["pool"] == d["n_queries"]
    assert h["pool"] == 7  # the held-out photos alone
    # the 9 photos that fitted the mapping: their captions refused, never mixed in ...
    assert d["refused"] == {"fitted_photos": 9, "fitted_captions": 45}
    assert d["fitted_share_pool"] == pytest.approx(9 / 16, abs=1e-4)
    assert 0 <= semantic["fitted_share_top10"] <= 1
    # ... or scored apart, on the same pool, leaving the fair figures as they were
    a = cli_json(
        "evaluate-retrieval",
        "--index",
        index,
        "--captions",
        captions,
        "--fitted-apart",
        "--modes",
        "semantic",
    )
    assert a["refused"] is None and a["modes"]["semantic"] == semantic
    assert a["fitted"]["n_queries"] == 45 and a["fitted"]["pool"] == d["pool"]
    assert set(a["fitted"]["modes"]["semantic"]) >= {"R@1", "R@5", "R@10", "median_rank", "MRR"}


def test_evaluate_caption_queries_in_another_caption_format(built, tmp_path: Path) -> None:
    """The Flickr8k token format (`photo.jpg#n<TAB>caption`), one the keywords page reads,
    gives the same queries and figures as captions.txt."""
    index, captions = built
    with captions.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]  # captions with commas are quoted
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text(
        "".join(f"{name}#{i % 5}\t{text}\n" for i, (name, text) in enumerate(rows)),
        encoding="utf-8",
    )
    args = ("evaluate-retrieval", "--index", index, "--modes", "semantic,keyword")
    want = cli_json(*args, "--captions", captions)
    got = cli_json(*args, "--captions", token)
    assert (got["pool"], got["n_queries"]) == (want["pool"], want["n_queries"]) == (184, 35)
    assert got["modes"] == want["modes"]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_bad_input_is_one_line_and_changes_nothing(built, tmp_path: Path) -> None:
    import shutil

    index, _ = built
    before = _tree(index)
    half = tmp_path / "half"  # index.json but no table: a half-written index
    half.mkdir()
    shutil.copy2(index / "index.json", half / "index.json")
    old = tmp_path / "old"
    shutil.copytree(index, old)
    meta = json.loads((old / "index.json").read_text())
    meta["version"] = 1
    (old / "index.json").write_text(json.dumps(meta))
    cases = [
        (["search", "--index", str(index), ""], "empty query"),
        (["search", "--index", str(index), "   "], "empty query"),
        (["search", "--index", str(index), "the and of it"], "No content words"),
        (["search", "--index", str(index), "forest " * 1500], "characters long"),
        (["search", "--index", str(index), "x", "--k", "0"], "--k must be from 1 to 1000"),
        (["search", "--index", str(index), "x", "--k", "-3"], "--k must be from 1 to 1000"),
        (["search", "--index", str(index), "x", "--k", "1000000000"], "--k must be from"),
        (["search", "--index", str(index), "x", "--mode", "magic"], "unknown mode"),
        (["search", "--index", str(index), "x", "--category", "desert"], "unknown category"),
        (["search", "--index", str(tmp_path / "missing"), "forest"], "(no such folder)"),
        (["search", "--index", str(half), "forest"], "half-written"),
        (["search", "--index", str(old), "forest"], "older format"),
    ]
    for args, msg in cases:
        r = run_cli(*args)
        assert r.exit_code != 0 and msg in r.stderr, (args[:4], r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert _tree(index) == before  # nothing in the index changed


def test_excluded_words_and_a_photo_steered_by_words(built, intel_small: Path) -> None:
    index, _ = built
    d = cli_json("search", "--index", index, "sea waves -people")
    assert d["negatives"] == ["people"] and d["results"] and d["search"] == "exact"
    assert all("people" not in (x["caption"] or "").lower().split() for x in d["results"])
    assert {"floor", "no_good_match"} <= set(d) and "below_floor" in d["results"][0]
    photo = sorted((intel_small / "seg_test" / "glacier").glob("*.jpg"))[0]
    d = cli_json("search", "--index", index, "a sandy beach", "--like", photo, "--k", 5)
    assert d["mode"] == "image+text" and len(d["results"]) == 5
    assert d["results"][0]["why"][0].startswith("photo (50%) + words (50%)")


def test_errors_are_one_line(built, tmp_path: Path) -> None:
    index, _ = built
    cases = [
        (
            ["index", "--images", str(tmp_path / "nope"), "--index", str(tmp_path / "i")],
            "no such folder",
        ),
        (["search", "--index", str(tmp_path / "empty"), "x"], "not an index"),
        (["search", "--index", str(index), "x", "--mode", "magic"], "unknown mode"),
        (["search", "--index", str(index), "x", "--category", "desert"], "unknown category"),
        (["evaluate-retrieval", "--index", str(index)], "exactly one of"),
    ]
    for args, msg in cases:
        r = run_cli(*args)
        assert r.exit_code != 0 and msg in r.stderr, (args, r.output)

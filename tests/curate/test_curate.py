"""Curation on small real subsets of the Intel data: injected label flips are found, a
resized/re-encoded copy is found as a near-duplicate, review decisions apply to training,
export writes exactly the selection."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.curate import explore
from core.curate.audit import run_audit
from core.curate.duplicates import find_near_duplicates, group_pairs, regroup
from core.curate.export import ExportError, ExportItem, export_folder, export_zip
from core.data.review import (
    Review,
    ReviewError,
    apply_review,
    apply_review_split,
    load_review,
    review_file,
    save_review,
)
from tests.helpers import require_shared

pytestmark = pytest.mark.slow


def linked_copy(src: Path, dest: Path, flips: int, seed: int = 0) -> set[str]:
    """Symbolic links to every train/test image of `src`; `flips` training images filed under
    another class (seeded). Returns the flipped link paths."""
    rng = random.Random(seed)
    train = sorted((src / "seg_train").glob("*/*.jpg"))
    flip = set(rng.sample(range(len(train)), flips))
    classes = sorted(p.name for p in (src / "seg_train").iterdir())
    flipped = set()
    for i, f in enumerate(train):
        label = (
            rng.choice([c for c in classes if c != f.parent.name]) if i in flip else f.parent.name
        )
        link = dest / "seg_train" / label / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
        if i in flip:
            flipped.add(str(link))
    for f in sorted((src / "seg_test").glob("*/*.jpg")):
        link = dest / "seg_test" / f.parent.name / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
    return flipped


def test_injected_label_flips_are_ranked_first(intel_small: Path, tmp_path: Path) -> None:
    flipped = linked_copy(intel_small, tmp_path / "noisy", flips=6)
    audit = run_audit(tmp_path / "noisy")
    c = audit.collection
    assert len(c) == 6 * 28 and len(audit.labelled) == len(c)
    top = [c.paths[i.index] for i in audit.issues[:12]]
    assert sum(p in flipped for p in top) >= 4, top
    # Each flagged image comes with a suggestion other than its given label and a score: one
    # minus the out-of-fold probability of its given label (what the map colours by).
    issue_score = audit.label_score()
    names, row = c.class_names, {int(pos): k for k, pos in enumerate(audit.labelled)}
    for issue in audit.issues:
        p = audit.probs[row[issue.index]]  # its out-of-fold probabilities
        assert issue.suggested == names[int(p.argmax())] and issue.suggested != issue.given
        assert issue.score == pytest.approx(1 - p[names.index(issue.given)])
        assert issue.score == pytest.approx(issue_score[issue.index])
    # What the Curate page shows of it (core.curate.explore).
    flagged = explore.export_items(audit, "likely label mistakes")
    assert [(it.path, it.label, it.score) for it in flagged] == [
        (c.paths[i.index], i.given, i.score) for i in audit.issues
    ]
    colour, numeric = explore.map_colours(audit, "label-issue score")
    assert numeric and np.array_equal(colour, issue_score)
    assert explore.map_colours(audit, "search score", None) == (c.labels, False)
    assert sum(explore.issue_pairs(audit.issues).values()) == len(audit.issues)
    first, second = audit.issues[0], audit.issues[1]
    review = Review(str(c.root))
    review.decide(c.paths[first.index], "remove")
    review.decide(c.paths[second.index], "relabel", second.suggested)
    review.decide(c.paths[second.index], "undecided")  # what the app's widget sends to undo
    assert review.get(c.paths[second.index]) is None
    review.decide(c.paths[second.index], "relabel", second.suggested)
    items = explore.export_items(audit, "reviewed data set", review=review)
    assert len(items) == len(c) - 1 and c.paths[first.index] not in {it.path for it in items}
    moved = next(it for it in items if it.path == c.paths[second.index])
    assert moved.label == second.suggested and moved.score == pytest.approx(second.score)
    only = explore.export_items(audit, "a category", review=review, category=second.suggested)
    assert moved in only and {it.label for it in only} == {second.suggested}
    picked = explore.export_items(audit, "map selection", selection=[5, 2])
    assert [it.path for it in picked] == [c.paths[5], c.paths[2]]
    scores = [i.score for i in audit.issues]
    assert scores == sorted(scores, reverse=True)
    # A second audit of the same view is read from the cache, with the same answer.
    again = run_audit(tmp_path / "noisy")
    assert again.timings.get("from_cache") == 1.0
    assert [i.index for i in again.issues] == [i.index for i in audit.issues]


def test_resized_reencoded_copy_is_a_near_duplicate(intel_small: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    linked_copy(intel_small, root, flips=0)
    original = sorted((intel_small / "seg_train" / "forest").glob("*.jpg"))[3]
    with Image.open(original) as im:  # enlarged 2x and re-encoded (benchmarks/curate.py)
        big = im.convert("RGB").resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC)
    copy = root / "seg_test" / "mountain" / "copy_of_forest.jpg"  # another class and split
    big.save(copy, "JPEG", quality=85)
    audit = run_audit(root)
    first = audit.to_dict()["near_duplicates"][0]
    real = [os.path.realpath(p) for p in first["paths"]]
    assert str(original.resolve()) in real and str(copy) in first["paths"]
    assert first["cross_class"] and first["cross_split"]  # listed first: crosses both
    assert first["max_distance"] <= 0.05
    assert audit.to_dict()["cross_split_pairs"] >= 1
    # The user's slider: below the pair's distance the group disappears, no new search.
    d = first["max_distance"]
    lower = regroup(
        audit.duplicates,
        audit.collection.labels,
        audit.collection.splits,
        len(audit.collection),
        max(0.0, d - 1e-4),
    )
    assert all(set(g.members) != set(audit.duplicates.groups[0].members) for g in lower.groups)


def byte_identical_pairs(root: Path) -> list[tuple[Path, Path]]:
    """Pairs of JPEGs under `root` with the same bytes (sha256), in sorted order."""
    by_hash: dict[str, list[Path]] = {}
    for f in sorted(root.rglob("*.jpg")):
        by_hash.setdefault(hashlib.sha256(f.read_bytes()).hexdigest(), []).append(f)
    return [
        (g[i], g[j]) for g in by_hash.values() for i in range(len(g)) for j in range(i + 1, len(g))
    ]


def test_byte_identical_intel_pairs_are_near_duplicates(tmp_path: Path) -> None:
    """The shared Intel data's byte-identical pairs (found here by hashing every file) are all
    near-duplicate pairs of the vector self-join, through LanceDB's exact scan and its ANN
    index, with their class and train/test crossings flagged."""
    intel = require_shared("intel")
    known = byte_identical_pairs(intel)
    assert len(known) == 9  # the issue's "9 known byte-identical pairs"
    root = tmp_path / "dups"
    members = sorted({f for pair in known for f in pair})
    for f in members:  # each filed as in the shared data (split/class/name), as links
        link = root / f.relative_to(intel)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
    for class_dir in sorted((intel / "seg_train").iterdir()):  # others, so every class has 3+
        for f in sorted(class_dir.glob("*.jpg"))[:3]:
            link = root / "seg_train" / class_dir.name / f.name
            if not link.exists():
                os.symlink(f, link)
    audit = run_audit(root)
    c = audit.collection
    pos = {os.path.realpath(p): i for i, p in enumerate(c.paths)}
    want = {tuple(sorted((pos[str(a)], pos[str(b)]))) for a, b in known}
    exact = audit.duplicates
    assert exact.search == "exact" and want <= {(a, b) for a, b, _ in exact.pairs}
    ann = find_near_duplicates(
        audit.vectors, c.labels, c.splits, tmp_path / "ann", exact.threshold, ann_min_rows=0
    )
    assert ann.search == "ann" and want <= {(a, b) for a, b, _ in ann.pairs}
    for report in (exact, ann):
        for a, b in want:
            g = next(g for g in report.groups if a in g.members and b in g.members)
            assert g.cross_class >= (c.labels[a] != c.labels[b])
            assert g.cross_split >= (c.splits[a] != c.splits[b])
        crossing = {(a, b) for a, b, _ in report.cross_split_pairs}
        assert {(a, b) for a, b in want if c.splits[a] != c.splits[b]} <= crossing
        flags = [(not g.cross_class, not g.cross_split) for g in report.groups]
        assert flags == sorted(flags)  # across classes, then train/test, listed first


def test_group_pairs_union_find() -> None:
    groups = group_pairs(6, [(0, 1, 0.01), (1, 2, 0.03), (4, 5, 0.02)])
    assert sorted((m, round(w, 2)) for m, w in groups) == [([0, 1, 2], 0.03), ([4, 5], 0.02)]


def test_review_sidecar_applies_to_training(intel_small: Path, tmp_path: Path) -> None:
    from core.data.split import split_data

    data = split_data(intel_small / "seg_train", intel_small / "seg_test", tmp_path / "c")
    gone, moved = data.train_paths[:2], data.train_paths[5]
    review = Review(str(intel_small))
    for p in gone:
        review.decide(p, "remove")
    review.decide(moved, "relabel", "street")
    review.decide(data.train_paths[7], "keep")
    file = review_file(intel_small, tmp_path / "c")
    save_review(file, review)
    assert file.is_relative_to(tmp_path / "c")  # in the cache, never beside the images
    before = {p.stat().st_mtime_ns for p in intel_small.rglob("*.jpg")}
    reviewed, applied = apply_review_split(data, file)
    assert len(reviewed.train_paths) == len(data.train_paths) - 2
    assert not set(gone) & set(reviewed.train_paths)
    i = reviewed.train_paths.index(moved)
    assert reviewed.class_names[reviewed.train_labels[i]] == "street"
    assert applied.to_dict() == {"removed": 2, "relabelled": 1, "kept": 1}
    assert reviewed.test_paths == data.test_paths
    assert {p.stat().st_mtime_ns for p in intel_small.rglob("*.jpg")} == before
    # A relabel to a class the data does not have is refused.
    review.decide(moved, "relabel", "volcano")
    with pytest.raises(ReviewError, match="volcano"):
        apply_review_split(data, review)


def test_review_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(ReviewError, match="not a readable review file"):
        load_review(bad)
    bad.write_text(json.dumps({"decisions": {"/x.jpg": {"action": "burn"}}}))
    with pytest.raises(ReviewError, match="invalid decision"):
        load_review(bad)
    with pytest.raises(ReviewError, match="no such review file"):
        load_review(tmp_path / "absent.json")
    items, applied = apply_review([("/a.jpg", "sea")], Review("/"))
    assert items == [("/a.jpg", "sea")] and applied.to_dict()["removed"] == 0


def test_export_writes_exactly_the_selection(intel_small: Path, tmp_path: Path) -> None:
    files = sorted((intel_small / "seg_train").glob("*/*.jpg"))
    chosen = [files[0], files[30], files[31], files[100]]
    items = [
        ExportItem(str(p), p.parent.name if k else "glacier", 0.5 + k / 10)
        for k, p in enumerate(chosen)
    ]
    csv_path = export_folder(items, tmp_path / "out", "copy")
    written = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg")
    )
    expected = sorted(f"{it.label}/{Path(it.path).name}" for it in items)
    assert written == expected
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["source"] for r in rows] == [str(p) for p in chosen]
    assert rows[0]["label"] == "glacier" and float(rows[1]["score"]) == pytest.approx(0.6)
    for it in items:  # copies are byte-identical; the originals are untouched
        assert (tmp_path / "out" / it.label / Path(it.path).name).read_bytes() == Path(
            it.path
        ).read_bytes()
    # Links point at the originals.
    export_folder(items[:2], tmp_path / "links", "link")
    link = tmp_path / "links" / items[1].label / Path(items[1].path).name
    assert link.is_symlink() and os.path.realpath(link) == os.path.realpath(items[1].path)
    # Never into a non-empty folder; never an empty selection.
    with pytest.raises(ExportError, match="not an empty folder"):
        export_folder(items, tmp_path / "out")
    with pytest.raises(ExportError, match="empty"):
        export_folder([], tmp_path / "new")
    names = zipfile.ZipFile(io.BytesIO(export_zip(items))).namelist()
    assert sorted(names) == sorted([*expected, "export.csv"])


def test_export_name_clash_gets_numbered(intel_small: Path, tmp_path: Path) -> None:
    a = sorted((intel_small / "seg_train" / "sea").glob("*.jpg"))[0]
    b = tmp_path / "other" / a.name
    b.parent.mkdir()
    b.write_bytes(np.random.default_rng(0).bytes(10))
    export_folder([ExportItem(str(a), "sea"), ExportItem(str(b), "sea")], tmp_path / "o")
    assert sorted(p.name for p in (tmp_path / "o" / "sea").iterdir()) == sorted(
        [a.name, f"{a.stem}-1{a.suffix}"]
    )

"""`python -m core audit | export` on small real subsets, and the ImageNet-label groups."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from core.text.imagenet_groups import (
    GroupsError,
    ImagenetGroups,
    add_suggestions,
    class_aliases,
    frequent_pairs,
    load_groups,
    suggest_groups,
)
from tests.helpers import cli_json, index_json, run_cli


@pytest.mark.slow
def test_audit_json_contract(intel_small: Path) -> None:
    out = cli_json("audit", "--images", intel_small)
    assert out["n_images"] == 6 * 28
    for key in ("label_issues", "near_duplicates", "cross_split_pairs", "seconds"):
        assert key in out
    assert out["label_issues"], "a real subset has some likely label mistakes"
    first = out["label_issues"][0]
    assert set(first) == {"path", "given", "suggested", "score"}
    assert Path(first["path"]).is_file() and first["given"] != first["suggested"]
    scores = [i["score"] for i in out["label_issues"]]
    assert scores == sorted(scores, reverse=True)
    assert isinstance(out["cross_split_pairs"], int)
    # The subset holds no near-duplicate pair at the default threshold (the Curate page test
    # sees 0 groups too), so none crosses train/test.
    assert out["cross_split_pairs"] == 0 and out["n_duplicate_groups"] == 0


@pytest.mark.slow
def test_audit_bad_inputs(tmp_path: Path, intel_small: Path) -> None:
    res = run_cli("audit", "--images", tmp_path / "absent", "--json")
    assert res.exit_code != 0 and "no such folder" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    one = tmp_path / "one" / "sea"
    one.mkdir(parents=True)
    for f in sorted((intel_small / "seg_train" / "sea").glob("*.jpg"))[:5]:
        shutil.copy(f, one / f.name)
    res = run_cli("audit", "--images", tmp_path / "one")
    assert res.exit_code != 0 and "at least two classes" in res.stderr
    res = run_cli("audit", "--images", intel_small, "--threshold", 3)
    assert res.exit_code != 0 and "between 0 and 2" in res.stderr


@pytest.mark.slow
def test_export_cli_paths_and_category(intel_small: Path, tmp_path: Path) -> None:
    files = sorted((intel_small / "seg_test").glob("*/*.jpg"))[::9]
    listing = tmp_path / "sel.txt"
    listing.write_text("\n".join(str(p) for p in files) + "\n")
    out = tmp_path / "sel"
    cli_json("export", "--images", intel_small, "--paths", listing, "--out", out)
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert got == sorted(f"{p.parent.name}/{p.name}" for p in files)
    rows = list(csv.DictReader((out / "export.csv").open()))
    assert sorted(r["source"] for r in rows) == sorted(str(p) for p in files)
    res = run_cli(
        "export",
        "--images",
        intel_small,
        "--category",
        "glacier",
        "--link",
        "--out",
        tmp_path / "g",
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["export.csv", "glacier"]
    assert len(list((tmp_path / "g" / "glacier").iterdir())) == 28
    res = run_cli("export", "--images", intel_small, "--out", out)
    assert res.exit_code != 0 and "not an empty folder" in res.stderr


def test_imagenet_groups_table() -> None:
    groups = load_groups()
    assert "buildings" in groups.categories  # the data set's class names
    assert groups.tags(["church", "alp", "not a label"]) == ["buildings", "glacier"]
    with pytest.raises(GroupsError, match="not ImageNet class names"):
        ImagenetGroups.from_dict({"categories": {"sea": ["seashore", "ocean view"]}})
    with pytest.raises(GroupsError, match="not valid JSON"):
        ImagenetGroups.from_json("{")
    assert class_aliases(["building", "sea", "street"], groups) == {
        "building": "buildings",
        "sea": "sea",
        "street": "street",
    }


def test_suggest_groups_from_cooccurrence() -> None:
    groups = load_groups()
    top1 = ["valley"] * 8 + ["church"] * 6 + ["lakeside"] * 4 + ["breakwater"] * 5
    pred = (
        ["mountain"] * 7
        + ["forest"]
        + ["buildings"] * 6
        + ["sea"] * 4
        + ["sea", "street"] * 2
        + ["sea"]
    )
    rows = suggest_groups(
        top1,
        pred,
        ImagenetGroups({"building": ["church"]}, "", "t"),
        category_of_class={"buildings": "building"},
    )
    # church is already listed, lakeside too rare, breakwater 60% sea (< 70%): only valley.
    assert rows == [{"label": "valley", "category": "mountain", "count": 8, "share": 0.875}]
    assert groups.with_labels({"mountain": ["valley"]}).tags(["valley"]) == ["mountain"]
    assert add_suggestions(groups, rows).tags(["valley"]) == ["mountain"]
    assert frequent_pairs(pred, top1, n=2) == [
        {"predicted": "mountain", "top-1 ImageNet label": "valley", "images": 7},
        {"predicted": "buildings", "top-1 ImageNet label": "church", "images": 6},
    ]


def train_with_review(intel_small: Path, out: Path, review: Path):
    """`python -m core train` on the subset (a 1-epoch linear probe at 96 px) with a review."""
    return run_cli(
        *("train", "--train", intel_small / "seg_train", "--test", intel_small / "seg_test"),
        *("--out", out, "--apply-review", review, "--backbone", "efficientnet_lite0"),
        *("--mode", "linear-probe", "--epochs", 1, "--image-size", 96, "--workers", 0, "--json"),
    )


@pytest.mark.slow
def test_train_and_evaluate_apply_the_review(intel_small: Path, tmp_path: Path) -> None:
    from core.data.review import Review, save_review

    train = sorted((intel_small / "seg_train").glob("*/*.jpg"))
    review = Review(str(intel_small))
    for p in train[:3]:
        review.decide(p, "remove")
    review.decide(train[50], "relabel", "sea")
    test_img = sorted((intel_small / "seg_test").glob("*/*.jpg"))[0]
    review.decide(test_img, "remove")
    file = save_review(tmp_path / "review.json", review)
    res = train_with_review(intel_small, tmp_path / "run", file)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["review"]["removed"] == 4 and out["review"]["relabelled"] == 1
    assert out["n_train"] + out["n_val"] == 6 * 20 - 3 and out["n_test"] == 6 * 8 - 1
    run = tmp_path / "run"
    out = cli_json(
        "evaluate", "--run", run, "--test", intel_small / "seg_test", "--apply-review", file
    )
    assert out["review"]["removed"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    res = train_with_review(intel_small, tmp_path / "run2", bad)
    assert res.exit_code != 0 and "not a review file" in res.stderr


@pytest.mark.slow
def test_index_applies_the_review(intel_small: Path, tmp_path: Path) -> None:
    from core.data.review import Review, save_review
    from core.search.store import load_rows, read_meta

    files = sorted((intel_small / "seg_test").glob("*/*.jpg"))
    review = Review(str(intel_small))
    review.decide(files[0], "remove")
    review.decide(files[1], "remove")
    review.decide(files[-1], "relabel", "glacier")
    file = save_review(tmp_path / "review.json", review)
    index = tmp_path / "idx"
    out = index_json(intel_small / "seg_test", index, "--no-mapping", "--apply-review", file)
    assert out["review"]["removed"] == 2
    rows = load_rows(index, ["path", "label"]).to_pydict()
    label = dict(zip(rows["path"], rows["label"], strict=True))
    assert len(label) == len(files) - 2 and str(files[0].resolve()) not in label
    assert label[str(files[-1].resolve())] == "glacier"
    assert read_meta(index)["rows"] == len(files) - 2

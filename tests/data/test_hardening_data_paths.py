"""Hardening round three (issue 22), outside the search internals: only regular files of a
bounded size are read, a path from data is followed only inside its roots, an output folder
is never inside an input, a run folder has one writer, a review is checked before any work,
and a damaged signing key is said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.data.images import check_image
from core.data.review import Review, ReviewError, apply_review, apply_review_split, load_review
from core.data.split import SplitData
from core.io import (
    FolderBusyError,
    InsideInputError,
    OutsideRootsError,
    SigningKeyError,
    confine,
    is_within,
    load_signed_pickle,
    read_regular,
    refuse_inside,
    save_signed_pickle,
    writer_lock,
)
from tests.helpers import REPO, run_cli, strict_loads
from tests.hostile import jpeg_bytes, make_hostile_tree


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_hostile_tree(tmp_path_factory.mktemp("hostile3"))


def one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code != 0, res.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# --- 2. only regular files, bounded ----------------------------------------------------------


def test_read_regular_refuses_devices_fifos_folders_and_big_files(hostile, tmp_path) -> None:
    good = hostile["good"]
    assert read_regular(good) == good.read_bytes()
    for name in ("devzero", "fifo", "empty_dir"):  # a FIFO must not block: O_NONBLOCK
        with pytest.raises(OSError, match="not a regular file"):
            read_regular(hostile[name])
    with pytest.raises(OSError, match="larger than 100 bytes"):
        read_regular(good, limit=100)
    check = check_image(hostile["devzero"])
    assert check.reason == "unreadable" and "not a regular file" in (check.note or "")


def test_dataset_skips_a_dev_zero_link_and_a_fifo_in_bounded_memory(hostile) -> None:
    """A real process under a 3 GB address-space cap: before the fix it read /dev/zero until
    memory ran out."""
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
        "from core.cli import main; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", code, "dataset", "--data", str(hostile["data"]), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = strict_loads(res.stdout)
    reasons = {Path(s["path"]).name: (s["reason"], s["note"]) for s in out["skipped"]}
    assert reasons["devzero.jpg"][0] == "unreadable" and "regular" in reasons["devzero.jpg"][1]
    assert reasons["fifo.jpg"][0] == "unreadable"
    assert out["n_usable"] == 10 + 1  # the good JPEGs and the 16-bit PNG


# --- 1. paths from data stay inside their roots ----------------------------------------------


def test_confine_follows_a_path_only_inside_its_roots(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sea").mkdir(parents=True)
    photo = root / "sea" / "a.jpg"
    photo.write_bytes(jpeg_bytes(1))
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n", encoding="utf-8")
    (root / "sea" / "out.jpg").symlink_to(secret)
    (tmp_path / "data2").mkdir()  # a sibling whose name starts like the root's
    assert confine(photo, [root]) == photo
    assert is_within(root / "sea" / ".." / "sea" / "a.jpg", [root])
    # The user's own link inside the data folder is theirs to follow (as written, it is inside).
    assert is_within(root / "sea" / "out.jpg", [root])
    for bad in (secret, "/etc/shadow", root / ".." / "secret.txt", tmp_path / "data2" / "x.jpg"):
        with pytest.raises(OutsideRootsError, match="outside the folders"):
            confine(bad, [root])
    with pytest.raises(OutsideRootsError, match="none recorded"):
        confine(photo, [])


def test_export_refuses_an_item_outside_the_roots(hostile, tmp_path: Path) -> None:
    from core.curate.export import ExportError, ExportItem, export_folder, export_zip

    secret = tmp_path / "shadow"
    secret.write_text("root:x:0\n", encoding="utf-8")
    items = [ExportItem(str(hostile["good"]), "sea"), ExportItem(str(secret), "sea")]
    for mode in ("copy", "link"):
        with pytest.raises(ExportError, match="outside the folders"):
            export_folder(items, tmp_path / f"x_{mode}", mode, roots=[hostile["data"]])
        assert not (tmp_path / f"x_{mode}").exists()
    with pytest.raises(ExportError, match="outside the folders"):
        export_zip(items, roots=[hostile["data"]])
    with pytest.raises(ExportError, match="inside the input"):  # what the Curate page calls
        export_folder(items[:1], hostile["train"] / "exported", roots=[hostile["data"]])
    assert not (hostile["train"] / "exported").exists()
    # Inside the roots it still exports, as one folder renamed into place.
    csv_path = export_folder(items[:1], tmp_path / "ok", roots=[hostile["data"]])
    assert (tmp_path / "ok" / "sea" / "good0.jpg").read_bytes() == hostile["good"].read_bytes()
    assert csv_path.is_file() and not list(tmp_path.glob(".ok.*"))


# --- 4. an output is never inside an input ---------------------------------------------------


def test_export_into_the_data_set_is_refused(hostile) -> None:
    out = hostile["train"] / "exported"
    line = one_error_line(run_cli("export", "--images", hostile["data"], "--out", out))
    assert "inside the input" in line and "--out" in line
    assert not out.exists()
    res = run_cli("dataset", "--data", hostile["data"], "--json")
    assert strict_loads(res.stdout)["class_names"] == ["forest", "sea"]  # no third class


def test_refuse_inside_covers_every_written_folder(hostile, tmp_path: Path) -> None:
    with pytest.raises(InsideInputError):
        refuse_inside(
            hostile["train"] / "sea" / "run", [hostile["test"], hostile["train"]], "--out"
        )
    refuse_inside(tmp_path / "run", [hostile["train"], None, "s3://b/x"], "--out")  # elsewhere
    d, tr, te = hostile["data"], hostile["train"], hostile["test"]
    for args in (
        ["train", "--train", tr, "--test", te, "--out", tr / "forest" / "run"],
        ["train", "--train", tr, "--test", te, "--out", tmp_path / "r", "--cache", te / "c"],
        ["index", "--images", d, "--index", d / "idx"],
        ["dataset", "--data", d, "--cache", d / "train" / "cache"],
        ["audit", "--images", d, "--cache", tr / "cache"],
    ):
        line = one_error_line(run_cli(*args))
        assert "is inside the input" in line, args
    assert not (tr / "forest" / "run").exists() and not (d / "idx").exists()


# --- 3. one writer per run folder -------------------------------------------------------------

HOLD = """
import sys, time
from core.io import writer_lock
with writer_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_train_of_one_run_is_refused_with_the_pid(hostile, tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        res = run_cli(
            "train", "--train", hostile["train"], "--test", hostile["test"], "--out", run,
            "--resume", "--epochs", "1",
        )  # fmt: skip
        line = one_error_line(res)
        assert f"being written by PID {holder.pid}" in line
        assert not (run / "metrics.jsonl").exists()
        with pytest.raises(FolderBusyError), writer_lock(run, "run"):  # any writer, here too
            pass
    finally:
        holder.kill()
        holder.wait()
    with writer_lock(run, "run"):  # the kernel dropped the dead holder's lock
        assert (run / ".writer.pid").read_text().strip() == str(os.getpid())
    assert not (run / ".writer.pid").exists()


# --- 5 and 6. a review is checked before any work -----------------------------------------------


def _split(tmp_path: Path) -> SplitData:
    def paths(split: str, n: int) -> list[str]:
        return [str(tmp_path / split / f"{i}.jpg") for i in range(n)]

    return SplitData(paths("train", 4), [0, 0, 1, 1], paths("test", 2), [0, 1], ["forest", "sea"])


def test_review_that_empties_a_class_or_the_test_split_is_refused(tmp_path: Path) -> None:
    data = _split(tmp_path)
    review = Review(str(tmp_path))
    for p in data.train_paths[2:]:  # every training sea image
        review.decide(p, "remove")
    with pytest.raises(ReviewError, match="every training image of sea"):
        apply_review_split(data, review)
    review = Review(str(tmp_path))
    for p in data.test_paths:
        review.decide(p, "remove")
    with pytest.raises(ReviewError, match="removes every test image"):
        apply_review_split(data, review)
    # What `evaluate --apply-review` runs: scoring nothing is refused, not a numpy error.
    with pytest.raises(ReviewError, match="removes every one of the 2 images"):
        apply_review([(p, "sea") for p in data.test_paths], review)
    review = Review(str(tmp_path))
    review.decide(data.train_paths[2], "remove")  # one of two: fine
    out, applied = apply_review_split(data, review)
    assert out.train_labels == [0, 0, 1] and len(applied.removed) == 1


def test_train_with_a_review_emptying_a_class_stops_before_any_run_file(
    hostile, tmp_path: Path
) -> None:
    review = Review(str(hostile["data"]))
    for p in (hostile["train"] / "sea").glob("*.jpg"):
        review.decide(p, "remove")
    file = tmp_path / "review.json"
    file.write_text(json.dumps(review.to_dict()), encoding="utf-8")
    run = tmp_path / "run"
    res = run_cli(
        "train", "--train", hostile["train"], "--test", hostile["test"], "--out", run,
        "--apply-review", file, "--epochs", "1",
    )  # fmt: skip
    assert "every training image of sea" in one_error_line(res)
    assert not (run / "config.json").exists()


@pytest.mark.parametrize(
    "name", ["label_int", "label_list", "label_object", "action_int", "given_list", "list"]
)
def test_review_values_of_the_wrong_type_are_refused_before_export(
    hostile, tmp_path: Path, name: str
) -> None:
    file = hostile[f"review_{name}"]
    with pytest.raises(ReviewError, match=str(file)):
        load_review(file)
    out = tmp_path / "x"
    res = run_cli("export", "--images", hostile["data"], "--out", out, "--apply-review", file)
    line = one_error_line(res)
    assert str(file) in line and "unexpected" not in line
    assert not out.exists()


# --- 9. the signing key ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "short", "folder"])
def test_a_damaged_signing_key_is_said_not_ignored(tmp_path: Path, monkeypatch, kind) -> None:
    key = tmp_path / "cache.key"
    if kind == "folder":
        key.mkdir()
    else:
        key.write_bytes(b"" if kind == "empty" else b"0123456789")
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(key))
    with pytest.raises(SigningKeyError, match=str(key)):
        save_signed_pickle(tmp_path / "m.pkl", {"a": 1})
    (tmp_path / "m.pkl").write_bytes(b"SCENESEEK-HMAC-SHA256\n" + b"0" * 80)
    with pytest.raises(SigningKeyError):  # not "ignoring unsigned cache file"
        load_signed_pickle(tmp_path / "m.pkl")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(jpeg_bytes(2))
    res = run_cli("index", "--images", imgs, "--index", tmp_path / "idx")
    assert "signing key" in one_error_line(res)
    assert not (tmp_path / "idx" / "index.json").exists()  # refused before any work


def test_a_signing_key_inside_an_index_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    index = tmp_path / "idx"
    index.mkdir()
    (index / "index.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(index / "cache.key"))
    with pytest.raises(SigningKeyError, match="inside an index folder"):
        save_signed_pickle(tmp_path / "m.pkl", {"a": 1})
    assert not (index / "cache.key").exists()
    fresh = tmp_path / "new_idx"
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(fresh / "cache.key"))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(jpeg_bytes(2))
    assert "inside" in one_error_line(run_cli("index", "--images", imgs, "--index", fresh))
    # A good key outside: written whole once, then read back.
    monkeypatch.setenv("SCENESEEK_KEY_FILE", str(tmp_path / "k" / "cache.key"))
    assert save_signed_pickle(tmp_path / "m.pkl", {"a": 1})
    assert load_signed_pickle(tmp_path / "m.pkl") == {"a": 1}
    assert len((tmp_path / "k" / "cache.key").read_bytes()) == 32


# --- 10. one-line errors ------------------------------------------------------------------------


def test_export_paths_not_utf8_is_one_clear_line(hostile, tmp_path: Path) -> None:
    paths = tmp_path / "paths.txt"
    paths.write_bytes(f"{hostile['good']}\n/tmp/caf\xe9.jpg\n".encode("latin-1"))
    res = run_cli("export", "--images", hostile["data"], "--out", tmp_path / "x", "--paths", paths)
    line = one_error_line(res)
    assert "not UTF-8" in line and "unexpected" not in line


def test_pickled_clip_weights_refusal_is_the_only_line(tmp_path: Path) -> None:
    import pickle

    weights = tmp_path / "w.pt"
    weights.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "a.jpg").write_bytes(jpeg_bytes(3))
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "core", "index", "--images", str(imgs), "--index",
         str(tmp_path / "idx"), "--encoder", "clip", "--clip-weights", str(weights)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and time.monotonic() - t0 < 300
    assert len(lines) == 1 and "refused" in lines[0], res.stderr


def test_a_refused_train_leaves_no_run_folder(hostile, tmp_path: Path) -> None:
    """The lock's folder goes again when the command fails before writing the run."""
    run = tmp_path / "deep" / "run"
    res = run_cli(
        "train", "--train", hostile["train"], "--test", hostile["test"], "--out", run,
        "--weights", hostile["garbage_json"],
    )  # fmt: skip
    one_error_line(res)
    assert not run.exists()
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("mine\n", encoding="utf-8")
    with writer_lock(run, "run"):
        pass
    assert sorted(p.name for p in run.iterdir()) == [".writer.lock", "notes.txt"]


@pytest.mark.parametrize("name", ["devzero", "fifo"])
def test_a_review_or_captions_file_that_is_a_device_is_refused_unread(hostile, name) -> None:
    """--apply-review and --captions read JSON and text files: a /dev/zero link must not fill
    memory, a FIFO must not block."""
    from core.data.captions import CaptionFileError, read_captions

    with pytest.raises(ReviewError, match="not a regular file"):
        load_review(hostile[name])
    with pytest.raises(CaptionFileError, match="not a regular file"):
        read_captions(hostile[name])
    res = run_cli("keywords", "--captions", hostile[name], "--json")
    assert "not a regular file" in one_error_line(res)

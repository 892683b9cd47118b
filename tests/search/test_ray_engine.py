"""The Ray engine on a local Ray instance gives the local engine's rows, reads URIs, records
bad files and resumes; the local engine never imports Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.io import read_json
from core.search.store import build_index, load_rows
from tests.helpers import IMAGE_SIZE, REPO, make_intel_subset, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real Intel images (2 per class and split) plus two files that cannot be decoded."""
    out = make_intel_subset(tmp_path_factory.mktemp("ray_imgs"), n_train=2, n_test=2)
    (out / "seg_test" / "sea" / "text.jpg").write_text("not an image")
    (out / "seg_train" / "forest" / "empty.jpg").write_bytes(b"")
    return out


@pytest.fixture(scope="module")
def local_index(folder: Path, encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("local") / "idx"
    stats = build_index(folder, index, encoder=encoder, workers=0, batch_size=8)
    assert stats.encoded == 24 and len(stats.skipped) == 2
    return index


def _ray(folder, index: Path, encoder, **kw):
    from core.search.ray_engine import RayOptions

    return build_index(
        folder,
        index,
        encoder=encoder,
        batch_size=5,
        engine="ray",
        ray_options=RayOptions(workers=1),
        cache_dir=index.parent / "store",  # its own empty encoding store: Ray encodes it all
        **kw,
    )


def _sorted(index: Path) -> pa.Table:
    t = load_rows(index)
    return t.take(pa.compute.sort_indices(t, [("path", "ascending")]))


def test_ray_engine_gives_the_local_rows(folder, encoder, local_ray, local_index, tmp_path):
    index = tmp_path / "idx"
    stats = _ray(folder, index, encoder, chunk=10)  # batches of 5 and chunks of 10: 3 commits
    assert (stats.found, stats.encoded, stats.rows, stats.chunks) == (26, 24, 24, 3)
    local, ray_ = _sorted(local_index), _sorted(index)
    assert local.num_rows == ray_.num_rows == 24
    assert ray_.column_names == local.column_names
    # the derived columns too (semantic vectors, categories, text): row for row
    assert {"semantic", "class_probs", "text", "category"} <= set(local.column_names)
    floats = ("vector", "semantic", "class_probs", "probs", "top_probs")
    for name in local.column_names:
        if name not in floats:
            assert ray_[name].to_pylist() == local[name].to_pylist(), name
    for name in floats:
        a, b = np.array(local[name].to_pylist()), np.array(ray_[name].to_pylist())
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=name)
    # Bad files: recorded with the local engine's reasons, in both index.json files.
    reasons = {Path(s["path"]).name: s["reason"] for s in stats.skipped}
    assert reasons == {"text.jpg": "not-an-image", "empty.jpg": "zero-byte"}
    meta, lmeta = read_json(index / "index.json"), read_json(local_index / "index.json")
    assert meta["rows"] == lmeta["rows"] == 24 and meta["encoder"] == lmeta["encoder"]
    assert meta["semantic"]["key"] == lmeta["semantic"]["key"]
    run = meta["roots"][str(folder.resolve())]["last_run"]
    assert run["encoded"] == 24 and run["skipped"] == stats.skipped


def test_ray_engine_reads_a_uri(folder, encoder, local_ray, local_index, tmp_path):
    """file:// goes through pyarrow's filesystem layer, as s3:// or gs:// would."""
    uri = folder.resolve().as_uri()
    index = tmp_path / "idx"
    stats = _ray(uri, index, encoder)
    assert (stats.root, stats.found, stats.encoded) == (uri, 26, 24)
    local, remote = _sorted(local_index), _sorted(index)
    assert remote["path"].to_pylist() == [Path(p).as_uri() for p in local["path"].to_pylist()]
    assert remote["root"].to_pylist() == [uri] * 24
    for name in ("split", "label", "sha256", "top_labels", "text"):
        assert remote[name].to_pylist() == local[name].to_pylist(), name
    np.testing.assert_allclose(
        np.array(remote["vector"].to_pylist()), np.array(local["vector"].to_pylist()), atol=1e-5
    )
    assert _ray(uri, index, encoder).unchanged == 24  # the hash decides over URIs too


def test_ray_engine_resumes_after_an_interruption(folder, encoder, local_ray, tmp_path):
    index = tmp_path / "idx"

    class Stop(Exception):
        pass

    def interrupt(done: int, total: int) -> None:
        if done >= 10:
            raise Stop  # as if the driver died after its first committed chunk

    with pytest.raises(Stop):
        _ray(folder, index, encoder, chunk=10, progress=interrupt)
    first = load_rows(index).num_rows
    assert 0 < first < 24 and read_json(index / "index.json")["rows"] == first
    stats = _ray(folder, index, encoder, chunk=10)
    assert (stats.unchanged, stats.encoded, stats.rows) == (first, 24 - first, 24)


def test_ray_engine_writes_the_store_back_so_local_encodes_nothing(
    folder, encoder, local_ray, local_index, tmp_path
):
    """The actors return the pretrained outputs the rows derive from; the driver writes them
    into its encoding store, so a later local index of the folder decodes no photo. A second
    Ray run on another index reads the store first and starts no actor."""
    from core.vision.encodings import EncodingStore

    index = tmp_path / "idx"
    store = EncodingStore.at(index.parent / "store")
    assert _ray(folder, index, encoder).encoded == 24
    assert store.encoded() == 24 and store.passes()["max"] == 1  # the 24 decodable photos
    again = build_index(
        folder,
        tmp_path / "local",
        encoder=encoder,
        workers=0,
        batch_size=8,
        cache_dir=index.parent / "store",
    )
    assert again.encoded == 24 and store.encoded() == 24
    local, read = _sorted(local_index), _sorted(tmp_path / "local")
    for name in ("vector", "top_probs"):
        a, b = np.array(local[name].to_pylist()), np.array(read[name].to_pylist())
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=name)
    assert read["top_ids"].to_pylist() == local["top_ids"].to_pylist()
    ray_again = _ray(folder, tmp_path / "idx2", encoder)
    assert ray_again.encoded == 24 and store.encoded() == 24
    assert len(ray_again.skipped) == 2  # the undecodable files go to the actors, not stored


def test_local_cli_never_imports_ray(folder: Path, tmp_path: Path) -> None:
    args = [
        "index",
        "--images",
        str(folder),
        "--index",
        str(tmp_path / "idx"),
        "--image-size",
        str(IMAGE_SIZE),
        "--workers",
        "0",
        "--no-mapping",
        "--json",
    ]
    code = (
        "import sys\nfrom core.cli import app\n"
        f"try:\n    app({args!r}, standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'ray')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()
    assert json.loads("\n".join(out[:-1]))["encoded"] == 24  # the index really was built
    assert json.loads(out[-1]) == []


def test_ray_client_address_is_refused_with_the_way_out(folder: Path, tmp_path: Path) -> None:
    """Ray Data cannot stream over Ray Client: say so before connecting anywhere."""
    ray_client = ("--engine", "ray", "--address", "ray://127.0.0.1:10001")
    r = run_cli("index", "--images", folder, "--index", tmp_path / "i", *ray_client)
    assert r.exit_code != 0
    assert "Ray Client" in r.output and "ray job submit" in r.output
    assert not (tmp_path / "i").exists()

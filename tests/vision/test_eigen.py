"""The eigen-image classifier and its grayscale loader, on small real subsets and synthetic
matrices whose answer is known."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from PIL import Image
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from core.data.split import labelled_split
from core.vision import eigen as eigen_mod
from core.vision import gray as gray_mod
from core.vision.eigen import (
    EigenImageClassifier,
    choose_solver,
    eigen_images,
    fit_sweep,
    fit_sweep_files,
    nearest_neighbour_sweep,
    nearest_neighbours,
    pca_decompose,
)
from core.vision.gray import GrayscaleImages, cap_per_class, load_gray_images, resize_linear
from tests.helpers import gray_splits, make_intel_subset

SOLVERS = ["full", "gram", "randomized"]
# See test_accuracy_on_real_images_clearly_above_chance for the measured figures.
ACCURACY_FLOOR = {"global": 0.25, "class-subspace": 0.27}


def _spectrum_matrix(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Rows with a decaying, well-separated spectrum (so the top axes are well defined)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = 10.0 * 0.8 ** np.arange(d)
    return rng.standard_normal((n, d)) * scales @ basis.T + rng.standard_normal(d)


def _reference(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The study's route: eigh of np.cov, largest first."""
    values, vectors = np.linalg.eigh(np.cov(X, rowvar=False))
    return values[::-1], vectors[:, ::-1].T


def _assert_same_axes(got: np.ndarray, ref: np.ndarray, atol: float) -> None:
    """Equal up to the sign of each axis."""
    signs = np.sign(np.sum(got * ref, axis=1))
    np.testing.assert_allclose(got * signs[:, None], ref, atol=atol)


# --- the decomposition against np.linalg.eigh(np.cov) ---------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [(120, 40), (25, 90)], ids=["tall", "wide"])
def test_components_match_eigh_of_cov(solver: str, shape: tuple[int, int]) -> None:
    X = _spectrum_matrix(*shape)
    k = 8
    values, vectors = _reference(X)
    model = EigenImageClassifier(n_components=k, svd_solver=solver).fit(X, np.arange(len(X)) % 3)
    assert model.svd_solver_ == solver
    assert model.components_.shape == (k, shape[1])
    _assert_same_axes(model.components_, vectors[:k], atol=1e-6)
    np.testing.assert_allclose(model.explained_variance_, values[:k], rtol=1e-6)
    np.testing.assert_allclose(
        model.explained_variance_ratio_, values[:k] / values.sum(), rtol=1e-6
    )
    np.testing.assert_allclose(model.mean_, X.mean(axis=0))
    # Orthonormal axes, and the projections are the centred data on them.
    np.testing.assert_allclose(model.components_ @ model.components_.T, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(
        model.train_projections_, (X - X.mean(axis=0)) @ model.components_.T, atol=1e-8
    )
    np.testing.assert_allclose(model.transform(X), model.train_projections_, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS)
def test_all_solvers_agree_on_full_rank_of_a_wide_matrix(solver: str) -> None:
    """k up to the rank (n - 1) of centred data with fewer rows than pixels."""
    X = _spectrum_matrix(12, 60, seed=3)
    values, vectors = _reference(X)
    dec = pca_decompose(X, 50, solver)
    assert len(dec.components) == 11  # clamped to the rank of 12 centred samples
    _assert_same_axes(dec.components, vectors[:11], atol=1e-6)
    np.testing.assert_allclose(dec.explained_variance, values[:11], rtol=1e-6)


def test_float32_pixels_stay_close_to_float64_reference() -> None:
    X = _spectrum_matrix(300, 64, seed=1).astype(np.float32)
    values, vectors = _reference(X.astype(np.float64))
    for solver in SOLVERS:
        dec = pca_decompose(X, 6, solver)
        _assert_same_axes(dec.components, vectors[:6], atol=1e-4)
        np.testing.assert_allclose(dec.explained_variance, values[:6], rtol=1e-4)


def test_auto_never_diagonalises_the_pixel_covariance(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than pixels (like 8,741 x 4,096): no d x d eigh, no np.cov."""
    n, d = 1500, 1024
    X = _spectrum_matrix(n, d, seed=2).astype(np.float32)
    sizes: list[int] = []
    real_eigh = scipy.linalg.eigh

    def spy(a, *args, **kwargs):
        sizes.append(a.shape[0])
        return real_eigh(a, *args, **kwargs)

    def no_cov(*args, **kwargs):
        raise AssertionError("np.cov called")

    monkeypatch.setattr(eigen_mod.scipy.linalg, "eigh", spy)
    monkeypatch.setattr(np, "cov", no_cov)
    monkeypatch.setattr(np.linalg, "eigh", no_cov)
    model = EigenImageClassifier(n_components=10).fit(X, np.arange(n) % 4)
    assert model.svd_solver_ == "randomized"
    assert sizes and max(sizes) < d
    # Wide data: the n x n Gram route.
    assert choose_solver(600, 4096, 39) == "gram"
    assert choose_solver(8741, 4096, 39) == "randomized"


def test_components_are_sign_fixed_and_solver_independent() -> None:
    X = _spectrum_matrix(80, 30, seed=4)
    axes = [pca_decompose(X, 5, s).components for s in SOLVERS]
    for a in axes[1:]:
        np.testing.assert_allclose(a, axes[0], atol=1e-7)
    pivots = np.abs(axes[0]).argmax(axis=1)
    assert np.all(axes[0][np.arange(5), pivots] > 0)


# --- nearest neighbours and the one-pass sweep ----------------------------------------------


def test_nearest_neighbours_and_sweep_match_brute_force() -> None:
    rng = np.random.default_rng(5)
    train, test = rng.standard_normal((300, 20)), rng.standard_normal((70, 20))
    index, dist = nearest_neighbours(train, test)
    full = cdist(test, train)
    np.testing.assert_array_equal(index, full.argmin(axis=1))
    np.testing.assert_allclose(dist, full.min(axis=1))
    ks = [1, 2, 7, 20]
    sweep = nearest_neighbour_sweep(train, test, ks)
    for row, k in zip(sweep, ks, strict=True):
        np.testing.assert_array_equal(row, cdist(test[:, :k], train[:, :k]).argmin(axis=1))
    with pytest.raises(ValueError):
        nearest_neighbour_sweep(train, test, [3, 2])


@pytest.fixture(scope="module")
def small_pixels(intel_small: Path) -> dict:
    """intel_small decoded at 32 px (fast): train/test pixels and labels."""
    return gray_splits(intel_small, 32)


@pytest.mark.parametrize("method", ["global", "class-subspace"])
def test_accuracy_for_components_equals_refits(small_pixels: dict, method: str) -> None:
    (x_train, y_train), (x_test, y_test) = small_pixels["train"], small_pixels["test"]
    big = EigenImageClassifier(n_components=60, method=method).fit(x_train, y_train)
    ks = [1, 4, 17, 39, 60]
    sweep = big.accuracy_for_components(x_test, y_test, ks)
    preds = big.predictions_for_components(x_test, ks)
    assert list(sweep) == ks
    for row, k in zip(preds, ks, strict=True):
        refit = EigenImageClassifier(n_components=k, method=method).fit(x_train, y_train)
        expected = refit.predict(x_test)
        np.testing.assert_array_equal(row, expected)
        np.testing.assert_array_equal(big.with_components(k).predict(x_test), expected)
        assert sweep[k] == float(np.mean(expected == y_test)) == refit.score(x_test, y_test)
    # Default: every k up to the fitted number.
    assert list(big.accuracy_for_components(x_test, y_test)) == list(range(1, 61))


def test_with_components_shares_arrays_and_clamps(small_pixels: dict) -> None:
    x_train, y_train = small_pixels["train"]
    big = EigenImageClassifier(n_components=500).fit(x_train, y_train)
    assert big.n_components_ == len(x_train) - 1  # rank of the centred training set
    view = big.with_components(5)
    assert view.n_components_ == 5 and view.get_params()["n_components"] == 5
    assert np.shares_memory(view.components_, big.components_)
    assert big.n_components_ == len(x_train) - 1  # the cached model is untouched
    assert big.with_components(10_000).n_components_ == big.n_components_
    with pytest.raises(ValueError):
        big.with_components(0)


def test_mean_distance_per_class_is_the_nearest_training_distance(small_pixels: dict) -> None:
    (x_train, y_train), (x_test, y_test) = small_pixels["train"], small_pixels["test"]
    model = EigenImageClassifier(n_components=12).fit(x_train, y_train)
    z_train, z_test = model.transform(x_train), model.transform(x_test)
    nearest = cdist(z_test, z_train).min(axis=1)
    dist, pred = model.nearest_distances(x_test)
    np.testing.assert_allclose(dist, nearest, rtol=1e-9)
    np.testing.assert_array_equal(pred, model.predict(x_test))
    per_class = model.mean_distance_per_class(x_test, y_test)
    assert set(per_class) == set(y_test)
    for c, value in per_class.items():
        assert value == pytest.approx(nearest[y_test == c].mean())


def test_fit_sweep_answers_every_k_like_a_refit(small_pixels: dict) -> None:
    """The one fit flow (CLI, pages, benchmark): one fit, every k from prefixes."""
    (x_train, y_train), (x_test, y_test) = small_pixels["train"], small_pixels["test"]
    sweep = fit_sweep(x_train, y_train, x_test, y_test, 60, [17, 1, 4])
    assert sweep.model.n_components_ == 60 and sweep.ks == [1, 4, 17]
    assert sweep.predictions.shape == (3, len(y_test))
    assert sweep.class_names == sorted(set(y_train))
    assert sweep.fit_seconds > 0 and sweep.sweep_seconds > 0
    results = sweep.results()
    for k in (1, 4, 17, 5):  # 5 is not in the sweep: predicted from the model cut to 5
        refit = EigenImageClassifier(n_components=k).fit(x_train, y_train)
        answer = sweep.at(k)
        assert answer.k == k
        np.testing.assert_array_equal(answer.predictions, refit.predict(x_test))
        assert answer.result.accuracy == refit.score(x_test, y_test)
        assert answer.mean_distance == pytest.approx(
            refit.mean_distance_per_class(x_test, y_test),
            rel=1e-4,  # float32 pixels
        )
        if k in sweep.ks:
            assert sweep.accuracy[k] == answer.result.accuracy == results[k].accuracy
    assert sweep.at(10_000).k == 60  # clamped to the fitted count
    # No sweep asked for: the fit alone.
    fit_only = fit_sweep(x_train, y_train, x_test, y_test, 8, [])
    assert fit_only.ks == [] and fit_only.accuracy == {}
    assert fit_only.predictions.shape == (0, len(y_test))
    assert fit_only.at(8).result.accuracy == EigenImageClassifier(8).fit(x_train, y_train).score(
        x_test, y_test
    )


def test_fit_sweep_files_decodes_and_counts_steps(intel_small: Path, tmp_path: Path) -> None:
    train = labelled_split(intel_small / "seg_train", "train")[:2]
    test = labelled_split(intel_small / "seg_test", "test")[:2]
    seen: list[tuple[str, int, int]] = []
    steps: list[str] = []
    sweep = fit_sweep_files(
        train,
        test,
        12,
        image_size=32,
        cache_dir=tmp_path,
        method="class-subspace",
        progress=lambda name, done, total: seen.append((name, done, total)),
        step=steps.append,
    )
    assert seen[-1] == ("Decoding test images", len(test[0]), len(test[0]))
    assert ("Decoding training images", len(train[0]), len(train[0])) in seen
    assert steps == ["Fitting 12 components…", "Scoring every k…"]
    assert sweep.ks == list(range(1, 13)) and sweep.n_skipped == 0
    x_train = load_gray_images(train[0], 32, tmp_path).pixels
    x_test = load_gray_images(test[0], 32, tmp_path).pixels
    direct = fit_sweep(x_train, train[1], x_test, test[1], 12, method="class-subspace")
    assert sweep.accuracy == direct.accuracy


def test_cap_per_class_spreads_over_each_class() -> None:
    paths = [Path(f"/d/{c}/{i:02d}.jpg") for c in ("b", "a") for i in range(10)]
    labels = [p.parent.name for p in paths]
    capped, capped_labels = cap_per_class(paths, labels, 3)
    assert [p.name for p in capped] == ["00.jpg", "03.jpg", "06.jpg"] * 2
    assert capped_labels == ["a"] * 3 + ["b"] * 3
    assert [p.parent.name for p in capped] == capped_labels
    assert cap_per_class(paths, labels, 0) == (paths, labels)
    assert cap_per_class(paths, labels, 50)[0] == sorted(paths)


def test_accuracy_on_real_images_clearly_above_chance(tmp_path_factory) -> None:
    """60 train / 30 test images per class (chance: 1/6 = 30 of 180). Measured at k=39:
    1-NN 0.317, one PCA per class 0.333; over every k in 10..100 never below 0.278 and 0.317.
    Exact solvers here, so the figures are deterministic; the floors keep a few images'
    margin and are still ~3.5 standard deviations above chance."""
    root = make_intel_subset(tmp_path_factory.mktemp("intel_60"), n_train=60, n_test=30)
    data = gray_splits(root, 64)
    (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
    glob = EigenImageClassifier(n_components=39).fit(x_train, y_train).score(x_test, y_test)
    sub = EigenImageClassifier(n_components=39, method="class-subspace").fit(x_train, y_train)
    assert glob >= ACCURACY_FLOOR["global"]
    assert sub.score(x_test, y_test) >= ACCURACY_FLOOR["class-subspace"]


# --- class subspaces ------------------------------------------------------------------------


def test_class_subspace_separates_classes_that_share_a_mean() -> None:
    """Two classes centred on the same point, spread along orthogonal planes: a nearest-mean
    rule cannot tell them apart; the class subspaces must, even far outside the training
    spread where nearest neighbours run out."""
    rng = np.random.default_rng(6)
    d = 30
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    planes = {"a": basis[:, :2], "b": basis[:, 2:4]}
    centre = rng.standard_normal(d)

    def sample(label: str, n: int, scale: float) -> np.ndarray:
        coef = rng.standard_normal((n, 2)) * scale
        return centre + coef @ planes[label].T + 0.01 * rng.standard_normal((n, d))

    X = np.vstack([sample("a", 40, 1.0), sample("b", 40, 1.0)])
    y = np.array(["a"] * 40 + ["b"] * 40)
    X_new = np.vstack([sample("a", 25, 8.0), sample("b", 25, 8.0)])
    y_new = np.array(["a"] * 25 + ["b"] * 25)
    model = EigenImageClassifier(n_components=2, method="class-subspace").fit(X, y)
    np.testing.assert_array_equal(model.predict(X_new), y_new)
    assert model.class_components_.shape == (2, 2, d)
    assert model.class_n_components_.tolist() == [2, 2]
    # The residual of an in-plane point to its own class is the noise, tiny.
    dist, _ = model.nearest_distances(X_new)
    assert dist.max() < 0.2


# --- scikit-learn contract ------------------------------------------------------------------


def test_get_params_set_params_clone() -> None:
    est = EigenImageClassifier(n_components=7, method="class-subspace", svd_solver="gram")
    params = est.get_params()
    assert params == {
        "n_components": 7,
        "method": "class-subspace",
        "svd_solver": "gram",
        "random_state": 0,
    }
    again = EigenImageClassifier().set_params(**params)
    assert again.get_params() == params
    assert clone(est).get_params() == params
    fitted = est.fit(_spectrum_matrix(30, 10), np.arange(30) % 2)
    fresh = clone(fitted)
    assert not hasattr(fresh, "components_") and fresh.get_params() == params
    with pytest.raises(ValueError, match="method"):
        EigenImageClassifier(method="nope").fit(_spectrum_matrix(10, 5), np.arange(10) % 2)
    with pytest.raises(ValueError, match="svd_solver"):
        EigenImageClassifier(svd_solver="nope").fit(_spectrum_matrix(10, 5), np.arange(10) % 2)


def test_pipeline_on_image_paths(intel_small: Path, tmp_path: Path) -> None:
    train_paths, train_labels, _ = labelled_split(intel_small / "seg_train", "train")
    test_paths, _, _ = labelled_split(intel_small / "seg_test", "test")
    pipe = Pipeline(
        [("gray", GrayscaleImages(32, cache_dir=tmp_path)), ("pca", EigenImageClassifier(20))]
    )
    pipe.fit(train_paths, train_labels)
    assert pipe.named_steps["pca"].components_.shape == (20, 32 * 32)
    pred = pipe.predict(test_paths)
    assert len(pred) == len(test_paths) and set(pred) <= set(train_labels)
    # The same predictions as the classifier on the loaded pixels.
    x_train = load_gray_images(train_paths, 32, tmp_path).pixels
    direct = EigenImageClassifier(20).fit(x_train, train_labels)
    np.testing.assert_array_equal(
        pred, direct.predict(load_gray_images(test_paths, 32, tmp_path).pixels)
    )
    # The slider: set_params then refit.
    pipe.set_params(pca__n_components=5)
    pipe.fit(train_paths, train_labels)
    assert pipe.named_steps["pca"].n_components_ == 5
    assert pipe.get_params()["gray__image_size"] == 32
    copy = clone(pipe)
    assert copy.get_params()["pca__n_components"] == 5
    assert not hasattr(copy.named_steps["pca"], "components_")
    np.testing.assert_array_equal(
        copy.fit(train_paths, train_labels).predict(test_paths), pipe.predict(test_paths)
    )


def test_eigen_images_are_square_and_scaled(small_pixels: dict) -> None:
    x_train, y_train = small_pixels["train"]
    faces = eigen_images(EigenImageClassifier(n_components=9).fit(x_train, y_train), 4)
    assert faces.shape == (4, 32, 32)
    assert faces.min() == 0.0 and faces.max() == 1.0


# --- grayscale decoding and its cache -------------------------------------------------------


def test_gray_pixels_shape_range_and_order(intel_small: Path, tmp_path: Path) -> None:
    paths, _, _ = labelled_split(intel_small / "seg_test", "test")
    images = load_gray_images(paths, 48, tmp_path)
    assert images.pixels.shape == (len(paths), 48 * 48) and images.pixels.dtype == np.float32
    assert images.pixels.min() >= 0.0 and images.pixels.max() <= 1.0
    assert images.ok.all() and not images.reasons
    # The rows follow the requested order, whatever the cache's order.
    backwards = load_gray_images(paths[::-1], 48, tmp_path)
    assert backwards.from_cache
    np.testing.assert_array_equal(backwards.pixels, images.pixels[::-1])
    # Every row equals decoding that file by hand.
    for row, path in zip(images.pixels, paths, strict=True):
        with Image.open(path) as im:
            by_hand = resize_linear(np.asarray(im.convert("L")), 48).reshape(-1) / 255.0
        np.testing.assert_allclose(row, by_hand, atol=1e-6)


def test_resize_linear_samples_like_opencv() -> None:
    ramp = np.tile(np.arange(0, 200, 2, dtype=np.uint8), (100, 1))  # 100 x 100, x-ramp
    half = resize_linear(ramp, 50)
    # Output pixel i samples source x = 2i + 0.5, between two ramp values 2 apart.
    np.testing.assert_array_equal(half[0], np.rint(np.arange(50) * 4 + 1.0).astype(np.uint8))
    np.testing.assert_array_equal(resize_linear(ramp, 100), ramp)
    flat = np.full((150, 120), 77, dtype=np.uint8)
    assert (resize_linear(flat, 64) == 77).all()


def test_second_load_reads_no_jpeg(
    intel_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _, _ = labelled_split(intel_small / "seg_train", "train")
    calls = {"n": 0}
    real = gray_mod.check_image

    def counting(path, *args, **kwargs):
        calls["n"] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(gray_mod, "check_image", counting)
    first = load_gray_images(paths, 32, tmp_path)
    assert calls["n"] == len(paths) and not first.from_cache
    assert list((tmp_path / "gray").glob("*.npz"))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded a JPEG although the cache holds it")

    monkeypatch.setattr(gray_mod, "check_image", refuse)
    monkeypatch.setattr(Image, "open", refuse)
    second = load_gray_images(paths, 32, tmp_path)
    assert second.from_cache
    np.testing.assert_array_equal(second.pixels, first.pixels)
    # The transformer uses the same cache.
    np.testing.assert_array_equal(
        GrayscaleImages(32, cache_dir=tmp_path).transform(paths), first.pixels
    )


def test_cache_key_follows_content(intel_small: Path, tmp_path: Path) -> None:
    src = sorted((intel_small / "seg_test" / "sea").glob("*.jpg"))[:3]
    files = [Path(shutil.copy2(p, tmp_path / p.name)) for p in src]
    key = gray_mod.cache_key(files, 32)
    # The key's recipe (caches written before stay valid): version, size, resampling and the
    # sorted [path, bytes, mtime_ns] of every file.
    stamps = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(files)]
    blob = json.dumps([gray_mod.GRAY_CACHE_VERSION, 32, "linear", stamps])
    assert key == hashlib.sha1(blob.encode()).hexdigest()[:20]
    assert gray_mod.cache_key(files[::-1], 32) == key  # order does not matter
    assert gray_mod.cache_key(files, 48) != key
    assert gray_mod.cache_key(files, 32, "antialias") != key
    stat = files[0].stat()
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert gray_mod.cache_key(files, 32) != key  # a changed file is decoded again


def test_bad_images_are_skipped_not_fatal(intel_small: Path, tmp_path: Path) -> None:
    for cls in ("forest", "sea"):
        dest = tmp_path / "train" / cls
        dest.mkdir(parents=True)
        for p in sorted((intel_small / "seg_train" / cls).glob("*.jpg"))[:5]:
            shutil.copy2(p, dest / p.name)
    good = sorted((tmp_path / "train" / "forest").glob("*.jpg"))[0]
    (tmp_path / "train" / "forest" / "empty.jpg").write_bytes(b"")
    (tmp_path / "train" / "sea" / "notes.jpg").write_text("not a picture")
    (tmp_path / "train" / "sea" / "cut.jpg").write_bytes(good.read_bytes()[:600])
    paths, labels, skipped = labelled_split(tmp_path / "train", "train", tmp_path / "cache")
    assert skipped == 3 and len(paths) == 10 and sorted(set(labels)) == ["forest", "sea"]
    assert not any(p.name in {"empty.jpg", "notes.jpg", "cut.jpg"} for p in paths)
    # Handed a bad path anyway, the loader flags it instead of raising.
    bad = tmp_path / "train" / "sea" / "notes.jpg"
    images = load_gray_images([*paths[:2], bad], 32, tmp_path / "cache")
    assert images.ok.tolist() == [True, True, False]
    assert images.reasons == {os.path.abspath(bad): "not-an-image"}
    assert np.all(images.pixels[2] == gray_mod.FILL_VALUE)
    # And the classifier trains on what is usable.
    x = load_gray_images(paths, 32, tmp_path / "cache").pixels
    model = EigenImageClassifier(n_components=5).fit(x, labels)
    assert model.score(x, labels) == 1.0  # 1-NN on its own training images


def _expected_failures(estimator: EigenImageClassifier) -> dict[str, str]:
    if estimator.method == "class-subspace":
        # Isotropic 2-D blobs: a class's line (or plane) runs through the other blobs, so a
        # subspace rule cannot reach the 83% the check demands. A property of the method.
        return {"check_classifiers_train": "subspace rule on isotropic 2-D blobs"}
    return {}


@parametrize_with_checks(
    [
        EigenImageClassifier(n_components=2),
        EigenImageClassifier(n_components=3, svd_solver="randomized"),
        EigenImageClassifier(n_components=1, method="class-subspace"),
    ],
    expected_failed_checks=_expected_failures,
)
def test_scikit_learn_estimator_checks(estimator, check) -> None:
    check(estimator)

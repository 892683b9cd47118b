"""The grayscale PCA "eigen-image" classifier, as scikit-learn estimators.

The study's method (method="global"): flatten each grayscale image, subtract the training
mean, keep the top-k principal components, project, and predict the label of the nearest
training image by Euclidean distance in PCA space (1-NN).
method="class-subspace": one PCA subspace (class mean + top-k components) per class; predict
the class whose subspace reconstructs the sample with the smallest residual.

Unlike the study's script, a fit never forms the d x d (4096 x 4096) covariance and
diagonalises it in full. The principal axes come from one of:
  "randomized": randomized block Krylov SVD of the centred data, cost ~ n*d*k;
  "gram":       eigh of the smaller Gram matrix (n x n when n < d), top-k eigenpairs only;
  "full":       thin SVD of the centred data (exact, for small problems);
  "auto":       the cheapest of these by a flop count.

Components are unique only up to sign; each one is flipped so that its largest-magnitude
entry is positive, so every solver returns the same axes.

A model fitted with K components answers for any k <= K from prefixes: the first k columns
of the projections *are* the k-component projections. `with_components(k)` returns such a
view in microseconds, and `accuracy_for_components` scores every k = 1..K in one pass of
incremental squared distances instead of K refits.

`fit_sweep` is the one fit flow every caller uses (`python -m core pca`, the Eigen-images
page, the runs page's eigen-image comparison, benchmarks/pca.py): fit the largest k once,
predict the test set at every k from prefixes (`ComponentSweep`), and answer for one k
(`ComponentSweep.at`: report and Fig. 8 distances). `fit_sweep_files` does the same from
image paths, decoding them through `core.vision.gray`.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dger
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from core.metrics import ClassificationResult, classification_result
from core.vision.gray import GrayImages, load_gray_images

log = logging.getLogger(__name__)

METHODS = ("global", "class-subspace")
SOLVERS = ("auto", "full", "randomized", "gram")
N_OVERSAMPLES = 10
# Elements of one block of the (test x train) distance matrix: bounds memory (~16 MB).
BLOCK_ELEMENTS = 2_000_000


# --- principal axes ---------------------------------------------------------------------------


@dataclass
class Decomposition:
    """Top principal axes of a data matrix."""

    mean: np.ndarray  # (d,) float64
    components: np.ndarray  # (k, d) orthonormal rows, sign-fixed
    explained_variance: np.ndarray  # (k,) eigenvalues of the covariance (ddof=1)
    total_variance: float  # trace of the covariance (ddof=1)
    solver: str


def max_components(n_samples: int, n_features: int) -> int:
    """Rank bound of centred data: n - 1 samples' worth of directions, at most d."""
    return max(0, min(n_samples - 1, n_features))


def krylov_iterations(n_components: int) -> int:
    """Block-Krylov steps. Measured on the Intel pixels (k=39, 64 px): 5 steps put the top
    axes within 1e-6 of an exact eigh, with the same 1-NN predictions on every test image.
    A wide block (the dashboard's k=200) costs more per step and needs fewer."""
    return 5 if n_components <= 64 else 3


def choose_solver(n_samples: int, n_features: int, n_components: int) -> str:
    """The solver "auto" picks: exact for small problems, else the cheaper by flop count."""
    r = min(n_samples, n_features)
    if max(n_samples, n_features) <= 500:
        return "full"
    block = n_components + N_OVERSAMPLES
    q = krylov_iterations(n_components)
    if block * (q + 1) >= r:
        return "gram"  # the Krylov space would span everything: go exact
    # Gram: one GEMM (n*d*r) plus an eigh of an r x r matrix (slow flops, weighted 4x).
    gram = n_samples * n_features * r + 4 * r**3
    rand = 2 * (2 * q + 1) * n_samples * n_features * block + 4 * n_samples * (block * (q + 1)) ** 2
    return "gram" if gram <= rand else "randomized"


def _orthonormalize(y: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Orthonormal basis of y's part orthogonal to the columns of `previous` (two passes of
    block Gram-Schmidt: the second removes what rounding left after the first)."""
    y = np.asarray(y, dtype=np.float64)
    scale = float(np.linalg.norm(y, axis=0).max(initial=0.0))
    if previous is not None:
        for _ in range(2):
            y = y - previous @ (previous.T @ y)
    q, r = np.linalg.qr(y)
    tol = 1e-9 * max(scale, 1e-300)
    if np.all(np.abs(np.diag(r)) > tol):
        return q
    # Rank-deficient (the space already holds the data's whole row space): QR would pad
    # with arbitrary directions that are not orthogonal to the basis; keep y's true range.
    u, sv, _ = np.linalg.svd(y, full_matrices=False)
    return u[:, sv > tol]


def block_krylov_svd(
    xc: np.ndarray, k: int, n_iter: int | None = None, random_state: Any = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (singular values, right singular vectors) by randomized block Krylov iteration
    (Musco & Musco, NeurIPS 2015).

    A random block of b = k + 10 directions is multiplied by Xc^T Xc n_iter times; the top
    axes are read from the whole Krylov space [W, (Xc^T Xc) W, ...] by one small eigh. For
    the same accuracy it needs about half the matrix products of subspace iteration (what
    scikit-learn's randomized_svd does), and every product with the big matrix is a GEMM in
    its own dtype (float32 stays float32)."""
    n_iter = krylov_iterations(k) if n_iter is None else n_iter
    d = xc.shape[1]
    rng = check_random_state(random_state)
    block = min(k + N_OVERSAMPLES, d)
    basis = _orthonormalize(rng.standard_normal((d, block)), None)
    new = basis
    images = []  # Xc @ each new block: together they are Xc @ basis, for the final step
    for step in range(n_iter + 1):
        image = xc @ new.astype(xc.dtype, copy=False)
        images.append(image)
        if step == n_iter:
            break
        new = _orthonormalize(xc.T @ image, basis)
        if new.shape[1] == 0:
            break  # the space is invariant: it already holds the exact axes
        basis = np.hstack([basis, new])
    # Rayleigh-Ritz: the SVD of B = Xc K through the small eigh of B^T B (its top k
    # eigenpairs are well conditioned; only the discarded tail loses precision by squaring).
    b = np.hstack(images).astype(np.float64)
    top = min(k, b.shape[1])
    vals, vecs = scipy.linalg.eigh(b.T @ b, subset_by_index=[b.shape[1] - top, b.shape[1] - 1])
    s = np.sqrt(np.clip(vals[::-1], 0.0, None))
    return s, (basis @ vecs[:, ::-1]).T


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make each row's largest-magnitude entry positive (deterministic sign across solvers)."""
    if components.size == 0:
        return components
    pivots = np.abs(components).argmax(axis=1)
    signs = np.sign(components[np.arange(len(components)), pivots])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _total_variance(xc: np.ndarray) -> float:
    """Trace of the covariance (ddof=1), summed in float64 block by block."""
    n = xc.shape[0]
    step = max(1, BLOCK_ELEMENTS // max(1, xc.shape[1]))
    ss = sum(float(np.square(xc[i : i + step], dtype=np.float64).sum()) for i in range(0, n, step))
    return ss / max(1, n - 1)


def _gram_axes(xc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (singular values, right singular vectors) via eigh of the smaller Gram matrix."""
    n, d = xc.shape
    x64 = xc.astype(np.float64, copy=False)
    if n <= d:
        gram = x64 @ x64.T  # n x n
        vals, vecs = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1])
        vals, vecs = vals[::-1], vecs[:, ::-1]
        s = np.sqrt(np.clip(vals, 0.0, None))
        # Right singular vectors from the left ones: v = Xc^T u / s.
        safe = np.where(s > s[0] * 1e-10, s, np.inf) if len(s) else s
        vt = (vecs.T @ x64) / safe[:, None]
        return s, vt
    gram = x64.T @ x64  # d x d; only when the data have more rows than pixels
    vals, vecs = scipy.linalg.eigh(gram, subset_by_index=[d - k, d - 1])
    return np.sqrt(np.clip(vals[::-1], 0.0, None)), vecs[:, ::-1].T


def pca_decompose(
    X: np.ndarray, n_components: int, solver: str = "auto", random_state: Any = 0
) -> Decomposition:
    """Mean and top principal axes of the rows of X (float32 stays float32 until the axes)."""
    X = np.asarray(X)
    n, d = X.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got n_samples = {n}")
    k = min(int(n_components), max_components(n, d))
    mean = X.mean(axis=0, dtype=np.float64)
    xc = X - mean.astype(X.dtype)
    total = _total_variance(xc)
    if k == 0:
        return Decomposition(mean, np.zeros((0, d)), np.zeros(0), total, "none")
    used = choose_solver(n, d, k) if solver == "auto" else solver
    if used == "randomized" and k >= min(n, d):
        used = "full"  # a random sketch cannot beat an exact SVD at full rank
    if used == "full":
        _, s, vt = scipy.linalg.svd(xc, full_matrices=False, lapack_driver="gesdd")
        s, vt = s[:k], vt[:k]
    elif used == "gram":
        s, vt = _gram_axes(xc, k)
    elif used == "randomized":
        s, vt = block_krylov_svd(xc, k, random_state=random_state)
    else:
        raise ValueError(f"unknown svd_solver {solver!r}; choose one of {SOLVERS}")
    components = _flip_signs(np.asarray(vt, dtype=np.float64))
    variance = np.asarray(s, dtype=np.float64) ** 2 / (n - 1)
    return Decomposition(mean, components, variance, total, used)


# --- nearest neighbours in PCA space -----------------------------------------------------------


def _block_rows(n_cols: int) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, n_cols))


def nearest_neighbours(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest train row, Euclidean distance) for every test row.

    Chunked ||b||^2 - 2ab (the ||a||^2 term does not change the argmin); the returned
    distance is recomputed exactly from the difference, free of cancellation."""
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    sq_train = np.einsum("ij,ij->i", train, train)
    index = np.empty(len(test), dtype=np.int64)
    step = _block_rows(len(train))
    for s in range(0, len(test), step):
        block = sq_train[None, :] - 2.0 * (test[s : s + step] @ train.T)
        index[s : s + step] = block.argmin(axis=1)
    dist = np.sqrt(np.square(test - train[index]).sum(axis=1))
    return index, dist


def nearest_neighbour_sweep(train: np.ndarray, test: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Nearest train row using only the first k coordinates, for every k in ks: (len(ks), m).

    One pass over the coordinates: the squared distance on k+1 coordinates is the one on k
    plus (t_k - b_k)^2, so the block of partial distances is updated in place (a rank-1 BLAS
    update) and its argmin read off at each requested k. Cost ~ K * m * n, not K refits."""
    ks = [int(k) for k in ks]
    if not ks or ks[0] < 1 or any(b <= a for a, b in itertools.pairwise(ks)):
        raise ValueError("ks must be increasing positive integers")
    if ks[-1] > train.shape[1]:
        raise ValueError(f"k={ks[-1]} exceeds the {train.shape[1]} fitted components")
    train_t = np.ascontiguousarray(np.asarray(train, dtype=np.float64)[:, : ks[-1]].T)
    sq = np.square(train_t)
    test = np.asarray(test, dtype=np.float64)
    out = np.empty((len(ks), len(test)), dtype=np.int64)
    step = _block_rows(train_t.shape[1])
    for s in range(0, len(test), step):
        t = test[s : s + step]
        # partial[i, c] = sum_j<k (b_ij^2 - 2 b_ij t_cj) = ||t_c - b_i||^2 - ||t_c||^2 on k coords.
        partial = np.zeros((train_t.shape[1], len(t)), order="F")
        want = 0
        for j in range(ks[-1]):
            partial = dger(1.0, train_t[j], -2.0 * t[:, j], a=partial, overwrite_a=1)
            partial += sq[j][:, None]
            if j + 1 == ks[want]:
                out[want, s : s + len(t)] = partial.argmin(axis=0)
                want += 1
    return out


# --- class subspaces ---------------------------------------------------------------------------


def subspace_residuals(
    X: np.ndarray, means: np.ndarray, components: np.ndarray, k: int | None = None
) -> np.ndarray:
    """Squared reconstruction residuals (n, C, k): entry [:, c, j] uses class c's first j+1 axes.

    residual = ||x - m_c||^2 - sum_j (w_cj . (x - m_c))^2 for orthonormal rows w_cj; zero rows
    (a class with fewer axes than k) add nothing, i.e. that class uses all the axes it has."""
    k = components.shape[1] if k is None else k
    n = len(X)
    out = np.empty((n, len(means), max(1, k)), dtype=np.float64)
    step = _block_rows(X.shape[1])
    for s in range(0, n, step):
        x = np.asarray(X[s : s + step], dtype=np.float64)
        for c in range(len(means)):
            diff = x - means[c]
            norm = np.einsum("ij,ij->i", diff, diff)
            if k == 0:
                out[s : s + step, c, 0] = norm
                continue
            proj = diff @ components[c, :k].T
            out[s : s + step, c, :] = norm[:, None] - np.cumsum(np.square(proj), axis=1)
    return np.clip(out, 0.0, None)


# --- the estimator -----------------------------------------------------------------------------


class EigenImageClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Grayscale PCA ("eigen-image") classifier; see the module docstring.

    Parameters
    ----------
    n_components : number of principal components k (clamped to the data's rank).
    method : "global" (1-NN in one PCA space, the study's method) or "class-subspace".
    svd_solver : "auto", "full", "randomized" or "gram".
    random_state : seed of the randomized solver.

    Fitted attributes: mean_, components_ (k, d), explained_variance_,
    explained_variance_ratio_, n_components_, svd_solver_, classes_, train_projections_
    (n, k), train_labels_ (indices into classes_); for "class-subspace" also class_means_
    (C, d), class_components_ (C, k, d, zero rows where a class has fewer axes),
    class_explained_variance_ (C, k) and class_n_components_ (C,).
    """

    def __init__(
        self,
        n_components: int = 39,
        method: str = "global",
        svd_solver: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.method = method
        self.svd_solver = svd_solver
        self.random_state = random_state

    # -- fitting --

    def _check_params(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.svd_solver not in SOLVERS:
            raise ValueError(f"svd_solver must be one of {SOLVERS}, got {self.svd_solver!r}")
        if isinstance(self.n_components, bool) or not isinstance(
            self.n_components, int | np.integer
        ):
            raise TypeError(f"n_components must be an int, got {self.n_components!r}")
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")

    def fit(self, X: Any, y: Any) -> EigenImageClassifier:
        self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        dec = pca_decompose(X, self.n_components, self.svd_solver, self.random_state)
        if dec.components.shape[0] < self.n_components:
            log.info(
                "n_components=%d clamped to %d (rank of %d centred samples)",
                self.n_components,
                dec.components.shape[0],
                len(X),
            )
        self.mean_ = dec.mean
        self.components_ = dec.components
        self.explained_variance_ = dec.explained_variance
        self.total_variance_ = dec.total_variance
        self.explained_variance_ratio_ = dec.explained_variance / max(dec.total_variance, 1e-300)
        self.n_components_ = len(dec.components)
        self.svd_solver_ = dec.solver
        self.train_labels_ = labels.astype(np.int64)
        self.train_projections_ = self._project(X)
        if self.method == "class-subspace":
            self._fit_class_subspaces(X, labels)
        return self

    def _fit_class_subspaces(self, X: np.ndarray, labels: np.ndarray) -> None:
        k, d = self.n_components_, X.shape[1]
        n_classes = len(self.classes_)
        self.class_means_ = np.zeros((n_classes, d))
        self.class_components_ = np.zeros((n_classes, max(k, 1), d))
        self.class_explained_variance_ = np.zeros((n_classes, max(k, 1)))
        self.class_n_components_ = np.zeros(n_classes, dtype=np.int64)
        for c in range(n_classes):
            rows = X[labels == c]
            if len(rows) < 2:
                self.class_means_[c] = rows.mean(axis=0)
                continue
            dec = pca_decompose(rows, k, self.svd_solver, self.random_state)
            m = len(dec.components)
            self.class_means_[c] = dec.mean
            self.class_components_[c, :m] = dec.components
            self.class_explained_variance_[c, :m] = dec.explained_variance
            self.class_n_components_[c] = m
        self.class_components_ = self.class_components_[:, :k]
        self.class_explained_variance_ = self.class_explained_variance_[:, :k]

    # -- views for other k --

    def with_components(self, k: int) -> EigenImageClassifier:
        """This model cut to its first k components: no refit, arrays are shared views.

        Predictions equal those of a fresh fit with n_components=k for the exact solvers
        (up to rounding), since the top-k axes are the first k of the top-K axes."""
        check_is_fitted(self)
        k = self._check_k(k)
        view = copy.copy(self)
        view.n_components = k
        view.n_components_ = k
        view.components_ = self.components_[:k]
        view.explained_variance_ = self.explained_variance_[:k]
        view.explained_variance_ratio_ = self.explained_variance_ratio_[:k]
        view.train_projections_ = self.train_projections_[:, :k]
        if self.method == "class-subspace":
            view.class_components_ = self.class_components_[:, :k]
            view.class_explained_variance_ = self.class_explained_variance_[:, :k]
            view.class_n_components_ = np.minimum(self.class_n_components_, k)
        return view

    def _check_k(self, k: int) -> int:
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > self.n_components_:
            log.info("k=%d clamped to the %d fitted components", k, self.n_components_)
        return min(k, self.n_components_)

    # -- inference --

    def _validate(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def _project(self, X: np.ndarray) -> np.ndarray:
        # In X's dtype: float32 pixels project twice as fast, and 1e-7 relative error in a
        # coordinate is far below any distance the 1-NN rule compares.
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        mean = self.mean_.astype(dtype)
        comps = self.components_.T.astype(dtype)
        step = _block_rows(X.shape[1])
        out = np.empty((len(X), self.n_components_), dtype=np.float64)
        for s in range(0, len(X), step):
            out[s : s + step] = (X[s : s + step] - mean) @ comps
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Coordinates of X on the k principal axes: (n, k)."""
        return self._project(self._validate(X))

    def _residuals(self, X: np.ndarray) -> np.ndarray:
        return subspace_residuals(X, self.class_means_, self.class_components_, self.n_components_)

    def predict(self, X: Any) -> np.ndarray:
        X = self._validate(X)
        if self.method == "class-subspace":
            return self.classes_[self._residuals(X)[:, :, -1].argmin(axis=1)]
        index, _ = nearest_neighbours(self.train_projections_, self._project(X))
        return self.classes_[self.train_labels_[index]]

    def nearest_distances(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(Euclidean distance, predicted label) per sample: to the nearest training image in
        PCA space ("global"), or the residual norm to the closest class subspace."""
        X = self._validate(X)
        if self.method == "class-subspace":
            res = self._residuals(X)[:, :, -1]
            best = res.argmin(axis=1)
            return np.sqrt(res[np.arange(len(X)), best]), self.classes_[best]
        index, dist = nearest_neighbours(self.train_projections_, self._project(X))
        return dist, self.classes_[self.train_labels_[index]]

    def mean_distance_per_class(self, X: Any, y: Any = None) -> dict[str, float]:
        """The study's Fig. 8: mean nearest distance, grouped by true class (by predicted
        class when y is not given). Classes with no sample are left out."""
        dist, pred = self.nearest_distances(X)
        groups = np.asarray(pred if y is None else y)
        # Test classes the training data lack are kept: they have distances too.
        classes = np.union1d(self.classes_, groups)
        return {str(c): float(dist[groups == c].mean()) for c in classes if np.any(groups == c)}

    def predictions_for_components(self, X: Any, ks: Iterable[int] | None = None) -> np.ndarray:
        """Predicted labels for every k in ks (default 1..n_components_): (len(ks), n).

        Computed from the fitted top-K axes in one pass; no refit."""
        X = self._validate(X)
        ks = self._ks(ks)
        if self.method == "class-subspace":
            res = self._residuals(X)  # (n, C, K) cumulative over k
            best = res[:, :, [k - 1 for k in ks]].argmin(axis=1)  # (n, len(ks))
            return self.classes_[best.T]
        index = nearest_neighbour_sweep(self.train_projections_, self._project(X), ks)
        return self.classes_[self.train_labels_[index]]

    def accuracy_for_components(
        self, X: Any, y: Any, ks: Iterable[int] | None = None
    ) -> dict[int, float]:
        """{k: accuracy} for every k in ks (default 1..n_components_), from one fit."""
        ks = self._ks(ks)
        preds = self.predictions_for_components(X, ks)
        y = np.asarray(y)
        return {k: float(np.mean(preds[i] == y)) for i, k in enumerate(ks)}

    def _ks(self, ks: Iterable[int] | None) -> list[int]:
        check_is_fitted(self)
        if ks is None:
            return list(range(1, self.n_components_ + 1))
        out = sorted({self._check_k(k) for k in ks})
        if not out:
            raise ValueError("ks is empty")
        return out

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


def explained_variance_at(model: EigenImageClassifier, k: int) -> float:
    """Share of the pixel variance kept by the first k components."""
    return float(np.sum(model.explained_variance_ratio_[: max(0, int(k))]))


def eigen_images(model: EigenImageClassifier, n: int = 16) -> np.ndarray:
    """The first n principal axes as square images (n, s, s), each scaled to [0, 1]."""
    comps = model.components_[:n]
    side = math.isqrt(comps.shape[1])
    if side * side != comps.shape[1]:
        raise ValueError(f"{comps.shape[1]} pixels are not a square image")
    lo = comps.min(axis=1, keepdims=True)
    hi = comps.max(axis=1, keepdims=True)
    return ((comps - lo) / np.maximum(hi - lo, 1e-12)).reshape(-1, side, side)


# --- one fit, every k --------------------------------------------------------------------------


@dataclass
class ScoreAtK:
    """What one k answers on the test set, read from a `ComponentSweep` without a refit."""

    model: EigenImageClassifier  # the fitted model cut to k (a view, see with_components)
    predictions: np.ndarray  # (n_test,) predicted labels
    result: ClassificationResult
    mean_distance: dict[str, float]  # the study's Fig. 8, by true class
    seconds: float  # how long this answer took (the dashboard's "slider move")

    @property
    def k(self) -> int:
        """The k used: the one asked for, clamped to what the data allow."""
        return self.model.n_components_


@dataclass
class ComponentSweep:
    """A model fitted once with the most components asked for, and its test predictions at
    every k in `ks`, each read from prefixes of that one fit."""

    model: EigenImageClassifier  # fitted with n_components_ components (clamped to the rank)
    x_test: np.ndarray
    y_test: np.ndarray
    ks: list[int]  # increasing; empty when no sweep was asked for
    predictions: np.ndarray  # (len(ks), n_test): predicted labels at each k
    accuracy: dict[int, float]  # k -> test accuracy
    fit_seconds: float
    sweep_seconds: float
    n_skipped: int = 0  # files the decoder could not read after all (given a flat gray row)

    @property
    def class_names(self) -> list[str]:
        """Training and test classes together, sorted: the rows of every report."""
        return sorted({str(c) for c in self.model.classes_} | {str(c) for c in self.y_test})

    def results(self) -> dict[int, ClassificationResult]:
        """The full classification report at every swept k."""
        names = self.class_names
        return {
            k: classification_result(self.y_test, pred, names)
            for k, pred in zip(self.ks, self.predictions, strict=True)
        }

    def at(self, k: int) -> ScoreAtK:
        """Report and Fig. 8 distances at one k (clamped to the fitted count): predictions
        from the sweep when it holds k, else from the model cut to k."""
        start = time.perf_counter()
        view = self.model.with_components(k)
        k_used = view.n_components_
        if k_used in self.ks:
            pred = self.predictions[self.ks.index(k_used)]
        else:
            pred = view.predict(self.x_test)
        result = classification_result(self.y_test, pred, self.class_names)
        distance = view.mean_distance_per_class(self.x_test, self.y_test)
        return ScoreAtK(view, pred, result, distance, time.perf_counter() - start)


def fit_sweep(
    x_train: np.ndarray,
    y_train: Sequence[Any] | np.ndarray,
    x_test: np.ndarray,
    y_test: Sequence[Any] | np.ndarray,
    n_components: int,
    ks: Iterable[int] | None = None,
    *,
    method: str = "global",
    solver: str = "auto",
    step: Callable[[str], None] | None = None,
) -> ComponentSweep:
    """Fit `n_components` once and predict the test set at every k in `ks` (default 1..the
    fitted count; an empty `ks` for none) from prefixes of that fit, timing both.

    `step`, when given, is called with a short description before the fit and the sweep."""
    model = EigenImageClassifier(n_components=n_components, method=method, svd_solver=solver)
    if step:
        step(f"Fitting {n_components} components…")
    start = time.perf_counter()
    model.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - start
    wanted = None if ks is None else list(ks)
    swept = model._ks(wanted) if wanted is None or wanted else []  # []: no sweep
    if step and swept:
        step("Scoring every k…")
    start = time.perf_counter()
    y_test = np.asarray(y_test)
    if swept:
        preds = model.predictions_for_components(x_test, swept)
    else:
        preds = np.empty((0, len(y_test)), dtype=model.classes_.dtype)
    accuracy = {k: float(np.mean(p == y_test)) for k, p in zip(swept, preds, strict=True)}
    sweep_seconds = time.perf_counter() - start
    return ComponentSweep(
        model, np.asarray(x_test), y_test, swept, preds, accuracy, fit_seconds, sweep_seconds
    )


def fit_sweep_files(
    train: tuple[Sequence[str | Path], Sequence[str]],
    test: tuple[Sequence[str | Path], Sequence[str]],
    n_components: int,
    ks: Iterable[int] | None = None,
    *,
    image_size: int = 64,
    cache_dir: str | Path | None = None,
    method: str = "global",
    progress: Callable[[str, int, int], None] | None = None,
    step: Callable[[str], None] | None = None,
) -> ComponentSweep:
    """`fit_sweep` on (paths, labels) of training and test images, decoded to gray pixels
    through the cache (`core.vision.gray`); `progress(stage, done, total)` follows the
    decoding, and the result counts the files that could not be decoded."""

    def decode(paths: Sequence[str | Path], what: str) -> GrayImages:
        report = partial(progress, f"Decoding {what} images") if progress else None
        return load_gray_images(paths, image_size, cache_dir, progress=report)

    x_train, x_test = decode(train[0], "training"), decode(test[0], "test")
    sweep = fit_sweep(
        x_train.pixels, train[1], x_test.pixels, test[1], n_components, ks, method=method, step=step
    )
    sweep.n_skipped = x_train.n_skipped + x_test.n_skipped
    return sweep

"""Eigen-images: the grayscale PCA classifier, with a slider for the number of components.

One model with the most components the slider offers is fitted per (data, image size,
method, per-class cap) and kept in st.cache_resource; every k on the slider is read from
prefixes of it (`with_components`, and the one-pass accuracy sweep), so moving the slider
refits nothing."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.evaluate import classification_result
from core.vision.eigen import EigenImageClassifier, eigen_images, explained_variance_at
from core.vision.gray import load_gray_images
from dashboard import plots_eigen as plots
from dashboard.common import (
    cache_dir,
    current_data_dir,
    load_manifest,
    require_dataset,
    thumbnail,
)

K_MAX = 200
SIZES = [32, 48, 64]
METHODS = {"global": "global PCA, nearest training image", "class-subspace": "one PCA per class"}
GALLERY = 24
SCATTER_POINTS = 3000


@dataclass
class Fitted:
    model: EigenImageClassifier  # fitted with up to K_MAX components
    x_test: np.ndarray
    y_test: np.ndarray
    test_paths: list[str]
    train_labels: list[str]
    class_names: list[str]
    sweep_predictions: np.ndarray  # (n_components_, n_test): predictions for k = 1..K
    sweep_accuracy: dict[int, float]
    fit_seconds: float
    sweep_seconds: float
    skipped: int  # files the decoder could not read after all (given a flat gray row)


def cap_per_class(paths: list[Path], labels: list[str], cap: int) -> tuple[list[Path], list[str]]:
    """At most `cap` images per class, spread evenly over each class's sorted files."""
    if cap <= 0:
        return paths, labels
    by_class: dict[str, list[Path]] = {}
    for p, y in sorted(zip(paths, labels, strict=True)):
        by_class.setdefault(y, []).append(p)
    out_p: list[Path] = []
    out_y: list[str] = []
    for y, files in sorted(by_class.items()):
        step = max(1, len(files) // cap)
        chosen = files[::step][:cap]
        out_p += chosen
        out_y += [y] * len(chosen)
    return out_p, out_y


def fingerprint(*parts: list) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update("\n".join(map(str, part)).encode())
    return h.hexdigest()


@st.cache_resource(show_spinner=False, max_entries=4)
def fit_max_model(
    root: str,
    image_size: int,
    method: str,
    cap: int,
    key: str,
    _train: tuple[list[Path], list[str]],
    _test: tuple[list[Path], list[str]],
) -> Fitted:
    """Decode, fit K_MAX components once, and score every k; cached per (root, size,
    method, cap) and the content key of the file lists."""
    bar = st.progress(0.0, text="Decoding images…")

    def progress(what: str):
        def report(done: int, total: int) -> None:
            bar.progress(done / max(1, total), text=f"Decoding {what} images… {done}/{total}")

        return report

    train = load_gray_images(_train[0], image_size, cache_dir(), progress=progress("training"))
    test = load_gray_images(_test[0], image_size, cache_dir(), progress=progress("test"))
    bar.progress(1.0, text=f"Fitting {K_MAX} components…")
    start = time.perf_counter()
    model = EigenImageClassifier(n_components=K_MAX, method=method).fit(train.pixels, _train[1])
    fit_seconds = time.perf_counter() - start
    bar.progress(1.0, text="Scoring every k…")
    start = time.perf_counter()
    y_test = np.asarray(_test[1])
    preds = model.predictions_for_components(test.pixels)
    sweep_seconds = time.perf_counter() - start
    bar.empty()
    return Fitted(
        model=model,
        x_test=test.pixels,
        y_test=y_test,
        test_paths=[str(p) for p in _test[0]],
        train_labels=list(_train[1]),
        class_names=sorted(set(_train[1]) | set(_test[1])),
        sweep_predictions=preds,
        sweep_accuracy={k + 1: float(np.mean(p == y_test)) for k, p in enumerate(preds)},
        fit_seconds=fit_seconds,
        sweep_seconds=sweep_seconds,
        skipped=train.n_skipped + test.n_skipped,
    )


@st.cache_data(show_spinner="Computing t-SNE of the PCA space…", max_entries=8)
def pca_tsne(key: str, k: int, n: int, _coords: np.ndarray) -> np.ndarray:
    """t-SNE (core.vision.tsne) of training images' first k PCA coordinates, per model key."""
    from core.vision.tsne import tsne_2d

    return tsne_2d(_coords, seed=0)


def split_folder(paths: list[Path]) -> Path:
    """The folder holding the <class>/ sub-folders of these images."""
    return Path(paths[0]).parent.parent


# --- page ----------------------------------------------------------------------------------

st.title("🧮 Eigen-images")
st.caption(
    "Grayscale PCA: flatten each image, keep the top-k principal components, and predict the "
    "class of the nearest training image in that space (the study's method), or the class "
    "whose own PCA subspace reconstructs the image best."
)
ds = require_dataset()
root = current_data_dir()
manifest = load_manifest(root)
train_paths, train_labels = manifest.paths_labels("train")
test_paths, test_labels = manifest.paths_labels("test")
if not train_paths or not test_paths:
    st.error(
        f"`{ds.root}` needs labelled train and test images (seg_train/<class>/ and "
        "seg_test/<class>/); this page fits on one and scores on the other."
    )
    st.stop()

c1, c2, c3, c4 = st.columns([3, 1, 2, 2])
k = c1.slider("Principal components k", 1, K_MAX, 39, key="eigen_k")
image_size = c2.selectbox("Image size", SIZES, index=SIZES.index(64), key="eigen_size")
method = c3.selectbox(
    "Method",
    list(METHODS),
    key="eigen_method",
    help=" · ".join(f"{m}: {text}" for m, text in METHODS.items()),
)
cap = int(
    c4.number_input(
        "Max training images per class (0 = all)",
        0,
        100_000,
        0,
        step=100,
        key="eigen_cap",
        help="Fewer training images fit and score faster; the test set is always complete.",
    )
)
train_paths, train_labels = cap_per_class(train_paths, train_labels, cap)
key = fingerprint(
    train_paths, train_labels, test_paths, test_labels, manifest.usable()["size_ns"].tolist()
)
fitted = fit_max_model(
    str(root),
    int(image_size),
    method,
    cap,
    key,
    (train_paths, train_labels),
    (test_paths, test_labels),
)

# Everything below answers for this k from prefixes of the cached model.
start = time.perf_counter()
view = fitted.model.with_components(k)
k_used = view.n_components_
pred = fitted.sweep_predictions[k_used - 1]
result = classification_result(fitted.y_test, pred, fitted.class_names)
distances, _ = view.nearest_distances(fitted.x_test)
answer_ms = (time.perf_counter() - start) * 1000

m1, m2, m3, m4 = st.columns(4)
m1.metric("Accuracy", f"{result.accuracy:.1%}")
m2.metric("Macro F1", f"{result.macro_f1:.3f}")
m3.metric("Components k", k_used)
m4.metric("Variance kept", f"{explained_variance_at(fitted.model, k_used):.1%}")
note = f" (the data allow at most {fitted.model.n_components_})" if k_used < k else ""
st.caption(
    f"train {len(train_paths)} · test {len(fitted.y_test)} · {image_size}×{image_size} px · "
    f"fit of {fitted.model.n_components_} components {fitted.fit_seconds:.1f}s "
    f"({fitted.model.svd_solver_} solver), all k scored in {fitted.sweep_seconds:.1f}s · "
    f"this k answered in {answer_ms:.0f} ms{note}"
    + (f" · {fitted.skipped} unreadable files given a flat gray row" if fitted.skipped else "")
)
st.caption(
    f"Reproduce: `python -m core pca --train {split_folder(train_paths)} --test "
    f"{split_folder(test_paths)} --components {k_used} --image-size {image_size} "
    f"--method {method}`" + (" (the page caps training images per class)" if cap else "")
)

tab_eval, tab_k, tab_pca, tab_gallery = st.tabs(
    ["Confusion & report", "Accuracy vs k", "Eigen-images & projection", "Test images"]
)

with tab_eval:
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Confusion matrix** (rows: true class)")
        st.plotly_chart(
            plots.confusion_heatmap(result.confusion_matrix, result.class_names), width="stretch"
        )
    with right:
        st.markdown("**Classification report**")
        report = pd.DataFrame(
            [
                {
                    "class": name,
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "support": m.support,
                }
                for name, m in result.per_class.items()
            ]
        )
        st.dataframe(report.round(3), width="stretch", hide_index=True)
        st.markdown("**Mean distance to the nearest match, by true class** (study's Fig. 8)")
        per_class = {
            c: float(distances[fitted.y_test == c].mean())
            for c in fitted.class_names
            if np.any(fitted.y_test == c)
        }
        st.plotly_chart(plots.distance_bars(per_class), width="stretch")

with tab_k:
    best = max(fitted.sweep_accuracy, key=lambda i: fitted.sweep_accuracy[i])
    st.markdown(
        f"Test accuracy for every k from one fit (best: k={best}, "
        f"{fitted.sweep_accuracy[best]:.1%}). Choosing k on the test set flatters it; "
        "the curve shows how sensitive the method is to k."
    )
    st.plotly_chart(plots.accuracy_curve(fitted.sweep_accuracy, k_used), width="stretch")
    st.plotly_chart(
        plots.explained_variance_curve(fitted.model.explained_variance_ratio_, k_used),
        width="stretch",
    )

with tab_pca:
    st.markdown("**Mean image and the top eigen-images** (principal axes as pictures)")
    side = int(image_size)
    mean_img = fitted.model.mean_.reshape(side, side)
    faces = eigen_images(fitted.model, 16)
    ratio = fitted.model.explained_variance_ratio_
    images = [np.clip(mean_img, 0, 1), *faces]
    captions = ["mean", *(f"PC{i + 1} · {ratio[i]:.1%}" for i in range(len(faces)))]
    cols = st.columns(6)
    for i, (img, cap_text) in enumerate(zip(images, captions, strict=True)):
        cols[i % 6].image(img, caption=cap_text, width="stretch", clamp=True)
    st.markdown("**Training images on the first two components**")
    coords = fitted.model.train_projections_[:, :2]
    labels = fitted.train_labels
    if len(coords) > SCATTER_POINTS:
        pick = np.random.default_rng(0).choice(len(coords), SCATTER_POINTS, replace=False)
        coords, labels = coords[pick], [labels[i] for i in pick]
    if coords.shape[1] >= 2:
        st.plotly_chart(plots.projection_scatter(coords, labels), width="stretch")
    if method == "class-subspace":
        st.caption("Eigen-images and projection show the global PCA; each class has its own.")
    st.markdown(
        f"**t-SNE of the PCA space** (the study's map: training images' first {k_used} "
        "components, at most 3,000 images)"
    )
    if st.checkbox("Compute the t-SNE (10-60 s once, then cached)", key="eigen_tsne"):
        proj = fitted.model.train_projections_[:, :k_used]
        pick = np.random.default_rng(0).permutation(len(proj))[:SCATTER_POINTS]
        xy = pca_tsne(key, k_used, len(pick), proj[pick])
        fig = plots.projection_scatter(xy, [fitted.train_labels[i] for i in pick])
        st.plotly_chart(
            fig.update_layout(xaxis_title="t-SNE 1", yaxis_title="t-SNE 2"), width="stretch"
        )

with tab_gallery:
    wrong_first = st.checkbox("Misclassified first", value=True, key="eigen_wrong_first")
    correct = pred == fitted.y_test
    order = np.argsort(correct, kind="stable") if wrong_first else np.arange(len(pred))
    st.caption(f"{int((~correct).sum())} of {len(pred)} test images misclassified at k={k_used}")
    cols = st.columns(6)
    for i, j in enumerate(order[:GALLERY]):
        mark = "✅" if correct[j] else "❌"
        cols[i % 6].image(
            thumbnail(fitted.test_paths[j]),
            caption=f"{mark} true {fitted.y_test[j]} · pred {pred[j]}",
            width="stretch",
        )

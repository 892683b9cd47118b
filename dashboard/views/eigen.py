"""Eigen-images: the grayscale PCA classifier, with a slider for the number of components.

One model with the most components the slider offers is fitted per (data, image size,
method, per-class cap) by `core.vision.eigen.fit_sweep_files` and kept in st.cache_resource;
every k on the slider is read from prefixes of it (`ComponentSweep.at`), so moving the
slider refits nothing."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.vision.eigen import (
    ComponentSweep,
    EigenImageClassifier,
    explained_variance_at,
    fit_sweep_files,
)
from core.vision.gray import cap_per_class
from core.vision.tsne import tsne_2d
from dashboard import plots_eigen as plots
from dashboard.common import (
    cache_dir,
    current_data_dir,
    load_manifest,
    progress,
    require_dataset,
)
from dashboard.gallery import Tile, gallery

K_MAX = 200
SIZES = [32, 48, 64]
METHODS = {"global": "global PCA, nearest training image", "class-subspace": "one PCA per class"}
GALLERY = 24  # a page: four rows of six
SCATTER_POINTS = 3000
CAP_LABEL = "Max training images per class (0 = all)"


@st.cache_resource(show_spinner=False, max_entries=4)
def fit_max_model(
    root: str, image_size: int, method: str, cap: int, key: str, _train: tuple, _test: tuple
) -> ComponentSweep:
    """Decode, fit K_MAX components once and score every k; cached per (root, size, method,
    cap) and the content key of the (paths, labels) of both splits."""
    with progress("Decoding images") as bar:
        return fit_sweep_files(
            _train,
            _test,
            K_MAX,
            image_size=image_size,
            cache_dir=cache_dir(),
            method=method,
            progress=bar.stage,
            step=bar.note,
        )


@st.cache_data(show_spinner=False, max_entries=8)
def pca_tsne(
    key: str, image_size: int, k: int, _model: EigenImageClassifier
) -> tuple[np.ndarray, np.ndarray, float]:
    """(t-SNE map, rows, seconds it took) of at most SCATTER_POINTS training images' first k
    PCA coordinates (core.vision.tsne; a seeded pick of rows), per data key and image size."""
    proj = _model.train_projections_[:, :k]
    pick = np.random.default_rng(0).permutation(len(proj))[:SCATTER_POINTS]
    t0 = time.perf_counter()
    xy = tsne_2d(proj[pick], seed=0)
    return xy, pick, time.perf_counter() - t0


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
cap_help = "Fewer training images fit and score faster; the test set is always complete."
cap = c4.number_input(CAP_LABEL, 0, 100_000, 0, 100, key="eigen_cap", help=cap_help)
train = cap_per_class(train_paths, train_labels, cap)
train_paths, train_labels = train
test = (test_paths, test_labels)
key = hashlib.sha1(repr((train, test, manifest.usable()["size_ns"].tolist())).encode()).hexdigest()
# The fit after decoding has no count: the spinner's clock shows it is alive.
with st.spinner("Fitting the eigen-image model (once per setting, then cached)…", show_time=True):
    sweep = fit_max_model(str(root), int(image_size), method, cap, key, train, test)
model = sweep.model  # fitted with the most components the data allow, up to K_MAX

# Everything below answers for this k from prefixes of the cached model.
answer = sweep.at(k)
result, pred = answer.result, answer.predictions

m1, m2, m3, m4 = st.columns(4)
m1.metric("Accuracy", f"{result.accuracy:.1%}")
m2.metric("Macro F1", f"{result.macro_f1:.3f}")
m3.metric("Components k", answer.k)
m4.metric("Variance kept", f"{explained_variance_at(model, answer.k):.1%}")
note = f" (the data allow at most {model.n_components_})" if answer.k < k else ""
st.caption(
    f"train {len(train_paths)} · test {len(sweep.y_test)} · {image_size}×{image_size} px · "
    f"fit of {model.n_components_} components {sweep.fit_seconds:.1f}s "
    f"({model.svd_solver_} solver), all k scored in {sweep.sweep_seconds:.1f}s · "
    f"this k answered in {answer.seconds * 1000:.0f} ms{note}"
    + (f" · {sweep.n_skipped} unreadable files given a flat gray row" if sweep.n_skipped else "")
)
train_dir, test_dir = (Path(paths[0]).parent.parent for paths in (train_paths, test_paths))
st.caption(
    f"Reproduce: `python -m core pca --train {train_dir} --test {test_dir} --components "
    f"{answer.k} --image-size {image_size} --method {method}`"
    + (" (the page caps training images per class)" if cap else "")
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
        report = pd.DataFrame([{"class": c, **vars(m)} for c, m in result.per_class.items()])
        st.dataframe(report.round(3), width="stretch", hide_index=True)
        st.markdown("**Mean distance to the nearest match, by true class** (study's Fig. 8)")
        st.plotly_chart(plots.distance_bars(answer.mean_distance), width="stretch")

with tab_k:
    best = max(sweep.accuracy, key=lambda i: sweep.accuracy[i])
    st.markdown(
        f"Test accuracy for every k from one fit (best: k={best}, "
        f"{sweep.accuracy[best]:.1%}). Choosing k on the test set flatters it; "
        "the curve shows how sensitive the method is to k."
    )
    st.plotly_chart(plots.accuracy_curve(sweep.accuracy, answer.k), width="stretch")
    st.plotly_chart(
        plots.explained_variance_curve(model.explained_variance_ratio_, answer.k),
        width="stretch",
    )

with tab_pca:
    st.markdown("**Mean image and the top eigen-images** (principal axes as pictures)")
    cols = st.columns(6)
    for i, (img, caption) in enumerate(plots.eigen_tiles(model, int(image_size), 16)):
        cols[i % 6].image(img, caption=caption, width="stretch", clamp=True)
    st.markdown("**Training images on the first two components**")
    coords = model.train_projections_[:, :2]
    if coords.shape[1] >= 2:
        fig = plots.projection_scatter(coords, train_labels, max_points=SCATTER_POINTS)
        st.plotly_chart(fig, width="stretch")
    if method == "class-subspace":
        st.caption("Eigen-images and projection show the global PCA; each class has its own.")
    st.markdown(
        f"**t-SNE of the PCA space** (the study's map: training images' first {answer.k} "
        "components, at most 3,000 images)"
    )
    # No promised duration: it depends on the images, k and the CPU; the spinner counts the
    # seconds and the caption says what the computation took.
    if st.checkbox("Compute the t-SNE (once per k and size, then cached)", key="eigen_tsne"):
        with st.spinner("Computing t-SNE of the PCA space…", show_time=True):
            xy, pick, seconds = pca_tsne(key, int(image_size), answer.k, model)
        st.caption(f"t-SNE of {len(pick)} images took {seconds:.0f} s (cached now).")
        fig = plots.projection_scatter(xy, [train_labels[i] for i in pick])
        st.plotly_chart(
            fig.update_layout(xaxis_title="t-SNE 1", yaxis_title="t-SNE 2"), width="stretch"
        )

with tab_gallery:
    wrong_first = st.checkbox("Misclassified first", value=True, key="eigen_wrong_first")
    correct = pred == sweep.y_test
    order = np.argsort(correct, kind="stable") if wrong_first else np.arange(len(pred))
    st.caption(f"{int((~correct).sum())} of {len(pred)} test images misclassified at k={answer.k}")
    tiles = [
        Tile(
            path=str(test_paths[j]),
            caption=f"{'✅' if correct[j] else '❌'} true {sweep.y_test[j]} · pred {pred[j]}",
            label=str(sweep.y_test[j]),
            scores={"predicted": str(pred[j]), "k": answer.k},
        )
        for j in order
    ]
    gallery(tiles, "eigen-gallery", columns=6, page_size=GALLERY)

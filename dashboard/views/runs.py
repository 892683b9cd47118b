"""Runs & evaluation: curves, confusion matrix, report, misclassified gallery, t-SNE, run
comparison, the eigen-image comparison, and prediction of an uploaded image.

Trained models are loaded once per process (st.cache_resource keyed by run + checkpoint
mtime); nothing is retrained when the page reruns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.config import resolve_runs_dir
from core.data.images import check_image
from core.vision.predict import imagenet_reference, predict_images
from core.vision.runs import (
    RunInfo,
    TrainedModel,
    checkpoint_path,
    eval_artefacts,
    list_runs,
    load_trained,
    misclassified,
)
from core.vision.tsne import cached_tsne
from dashboard import plots_cnn as plots
from dashboard.common import cache_dir, current_data_dir, load_manifest
from dashboard.gallery import Tile, gallery

GALLERY = 12  # a page of the misclassified gallery
EIGEN_K = 100
EIGEN_SIZE = 64


@st.cache_resource(show_spinner=False, max_entries=4)
def _trained(run: str, which: str, mtime: float) -> tuple[TrainedModel, tuple]:
    trained = load_trained(run, which)
    return trained, imagenet_reference(trained)


@st.cache_data(show_spinner=False, max_entries=8)
def _tsne(run: str, epoch: int, n: int) -> tuple[np.ndarray, float]:
    """(the map, seconds it took: read from tsne.npz when the run has one)."""
    ev = eval_artefacts(run)
    t0 = time.perf_counter()
    xy = cached_tsne(run, ev["features"], epoch)
    return xy, time.perf_counter() - t0


@st.cache_resource(show_spinner=False, max_entries=2)
def _eigen_scores(root: str, k_max: int, size: int) -> dict[int, dict[str, float]]:
    """Accuracy, macro precision and recall per component count, from one fit."""
    from core.vision.eigen import fit_sweep_files

    manifest = load_manifest(root)
    train, test = manifest.paths_labels("train"), manifest.paths_labels("test")
    k_max = min(k_max, len(train[0]) - 1)
    ks = sorted({*range(1, min(k_max, 20) + 1), *range(20, k_max + 1, 5), k_max})
    sweep = fit_sweep_files(train, test, k_max, ks, image_size=size, cache_dir=cache_dir())
    keep = ("accuracy", "macro_precision", "macro_recall")
    return {k: {m: getattr(r, m) for m in keep} for k, r in sweep.results().items()}


def show_evaluation(run: RunInfo) -> None:
    res = run.scores
    if res is None:
        st.info("This run has no result yet (unfinished); resume it on **Train a CNN**.")
        return
    r = run.result
    if run.selected_by == "validation":
        val = r.get("val_accuracy")
        st.markdown(
            f"**Checkpoint of epoch {r.get('evaluated_epoch')}, chosen on validation** "
            f"(validation accuracy {val:.4f}; {r.get('validation') or 'held-out images'}"
            f"): test accuracy {res.accuracy:.4f}, macro F1 {res.macro_f1:.4f}. The test "
            "set only reports. "
            f"Backbone: {r.get('backbone_source', '')}."
        )
    else:
        st.markdown(
            f"**Last checkpoint (epoch {r.get('evaluated_epoch')})**: accuracy "
            f"{res.accuracy:.4f}, macro F1 {res.macro_f1:.4f}. Backbone: "
            f"{r.get('backbone_source', '')}."
        )
        st.warning(
            "Checkpoint selection: **unknown (old run)**. This run was trained before "
            "runs held out a validation set; its best checkpoint was chosen on the test "
            "set, so its figures are not clean test figures. Retrain it to get them."
        )
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.confusion_heatmap(res.confusion_matrix, res.class_names))
    c2.dataframe(pd.DataFrame({c: vars(m) for c, m in res.per_class.items()}).T.round(3))
    c2.code(res.report())

    st.subheader("Misclassified test images")
    try:
        wrong = misclassified(run.path, res.class_names, limit=int(np.sum(res.confusion_matrix)))
        ev = eval_artefacts(run.path)
    except ValueError as exc:  # a damaged eval.npz: named, the rest of the page still works
        st.warning(str(exc))
        return
    if not wrong:
        st.caption("None.")
    tiles = [
        Tile(
            path=w["path"],
            caption=f"true **{w['true']}** · " + ", ".join(f"{n} {p:.2f}" for n, p in w["top3"]),
            label=w["true"],
            scores={"predicted": w["predicted"], **{n: p for n, p in w["top3"]}},
        )
        for w in wrong
    ]
    gallery(tiles, f"runs-wrong-{run.name}", columns=4, page_size=GALLERY)  # all, paged

    st.subheader("t-SNE of penultimate features (test set)")
    have = (run.path / "tsne.npz").exists()
    # No promised duration (it depends on the test set and the CPU): the spinner counts the
    # seconds and the caption says what it took, as on the Eigen page.
    if ev is not None and (have or st.button("Compute t-SNE", help="Once per run, then saved.")):
        with st.spinner("Computing t-SNE of the penultimate features…", show_time=True):
            xy, seconds = _tsne(str(run.path), int(ev["epoch"]), len(ev["labels"]))
        took = "read from the run" if have else f"took {seconds:.0f} s (saved with the run now)"
        st.caption(f"t-SNE of {len(xy)} test images {took}.")
        labels = [res.class_names[int(i)] for i in ev["labels"]]
        names = [Path(str(p)).name for p in ev["paths"]]
        st.plotly_chart(plots.tsne_scatter(xy, labels, names))


def show_predict(run: RunInfo) -> None:
    st.subheader("Predict an uploaded image")
    up = st.file_uploader("Image", type=None, key=f"upload-{run.name}")
    if up is None:
        return
    check = check_image(up.getvalue())
    if not check.ok:
        st.error(
            f"`{up.name}` is not a readable image ({check.reason}"
            f"{': ' + check.note if check.note else ''}). Upload a JPEG or PNG photo."
        )
        return
    try:
        # The first load and prediction take tens of seconds on a CPU: counted, never silent.
        with st.spinner("Loading the trained model (once per run)…", show_time=True):
            mtime = checkpoint_path(run.path).stat().st_mtime
            trained, ref = _trained(str(run.path), "best", mtime)
    except (OSError, ValueError) as exc:  # a damaged or refused checkpoint: say so
        st.error(f"Cannot load this run's model: {exc}")
        return
    with st.spinner("Predicting…", show_time=True):
        pred = predict_images(trained, [check.image], ref)[0]
    c1, c2, c3 = st.columns([1, 2, 2])
    c1.image(check.image, caption=up.name)
    c2.plotly_chart(plots.probability_bars(pred.probabilities, f"predicted: {pred.label}"))
    if pred.imagenet_top5:
        c3.plotly_chart(
            plots.probability_bars(dict(pred.imagenet_top5[::-1]), "backbone's ImageNet top-5")
        )
    if pred.imagenet_note:
        c3.caption(pred.imagenet_note)


st.title("📈 Runs & evaluation")
runs_dir = Path(st.text_input("Runs folder", value=str(resolve_runs_dir())))
runs = list_runs(runs_dir)
if not runs:
    st.info(
        f"No runs in `{runs_dir}` yet. Train one on **Train a CNN** or with "
        "`python -m core train ... --out runs/NAME`."
    )
    st.stop()

labels = {r.label(): r for r in runs}
last = st.session_state.get("cnn_last_run")
index = next((i for i, r in enumerate(runs) if str(r.path) == last), 0)
run = labels[st.selectbox("Run", list(labels), index=index)]
st.plotly_chart(plots.training_curves(run.metrics, "per epoch"))
st.caption(
    f"Checkpoint chosen by: **{run.selected_by_text}**"
    + (f" — {run.config.get('validation')}" if run.config.get("validation") else "")
    + (
        "; predictions average each photo with its mirror image (validation chose it)"
        if (run.result or {}).get("tta") == "mirror"
        else ""
    )
)
with st.expander("Config"):
    st.json(run.config)

tab_eval, tab_compare, tab_eigen, tab_predict = st.tabs(
    ["Evaluation", "Compare runs", "Eigen-images vs CNN", "Predict"]
)
with tab_eval:
    show_evaluation(run)
with tab_compare:
    others = [k for k in labels if labels[k].path != run.path]
    chosen = st.multiselect("Compare with", others, default=others[:1])
    metric = st.selectbox("Metric", plots.METRICS)
    series = {r.name: r.metrics for r in [run, *(labels[k] for k in chosen)]}
    st.plotly_chart(plots.compare_runs(series, metric))
with tab_eigen:
    st.caption(
        "The study's comparison: the CNN's validation accuracy, precision and recall per epoch "
        f"beside the grayscale eigen-image model's per component count (1..{EIGEN_K}, "
        f"{EIGEN_SIZE} px, nearest training image), on the current data set."
    )
    if st.button("Fit the eigen-image model and compare"):
        st.session_state["cnn_eigen"] = True
    if st.session_state.get("cnn_eigen"):
        with st.spinner("Fitting the eigen-image model (once per data set)…", show_time=True):
            eigen = _eigen_scores(str(current_data_dir()), EIGEN_K, EIGEN_SIZE)
        st.plotly_chart(plots.eigen_vs_cnn(run.metrics, eigen, run.config.get("backbone")))
        best_k = max(eigen, key=lambda k: eigen[k]["accuracy"])
        cnn = run.accuracy if run.accuracy is not None else float("nan")
        st.caption(
            f"Best eigen-image accuracy {eigen[best_k]['accuracy']:.4f} at k={best_k} "
            "(chosen on the test set: the study's comparison); CNN test accuracy "
            f"{cnn:.4f} (checkpoint chosen by: {run.selected_by_text})."
        )
with tab_predict:
    show_predict(run)

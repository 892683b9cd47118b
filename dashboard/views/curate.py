"""Curate: likely label mistakes to review, near-duplicates and train/test leakage, a map of
the collection linked to an image grid, ImageNet-label groups, and export.

The audit (vectors, out-of-fold probabilities, the self-join) is computed by core.curate and
persisted under the cache with its key; this page keeps it in st.cache_resource per
(data folder, run, folder stamp). Review decisions go to a JSON sidecar in the cache on every
click; the user's files are never moved or rewritten."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.curate.audit import Audit, audit_at, run_audit
from core.curate.duplicates import DEFAULT_THRESHOLD
from core.curate.embedmap import METHODS, MapParams, cached_map
from core.curate.export import ExportError, ExportItem, export_folder, export_zip
from core.curate.imagenet_groups import (
    GroupsError,
    ImagenetGroups,
    class_aliases,
    load_groups,
    suggest_groups,
    user_groups_path,
)
from core.curate.labels import LabelAuditError
from core.curate.review import Review, ReviewError, load_review, review_file, save_review
from core.curate.vectors import imagenet_top1
from core.data.dataset import DatasetError
from core.vision.runs import list_runs, resolve_runs_dir
from dashboard import plots_curate as plots
from dashboard.common import cache_dir, current_data_dir, require_dataset, thumbnail

MAX_THRESHOLD = 0.15  # the self-join runs once at this distance; the slider filters below it
PAGE_SIZE = 12
GROUPS_SHOWN = 20
GRID_MAX = 48
ZIP_MAX = 3000  # larger selections: export to a folder instead
MAP_KEY = "curate_map"
SELECTION_KEY = "curate_selection"
GO_KEY = "curate_go"
OFFLINE = "offline backbone (efficientnet_lite0)"
DECISIONS = ("undecided", "relabel", "keep", "remove")


def folder_stamp(root: Path) -> str:
    parts = [root, *root.glob("*/*")]
    return str(max((p.stat().st_mtime for p in parts if p.exists()), default=0))


@st.cache_resource(show_spinner=False, max_entries=2)
def load_audit(root: str, run: str | None, stamp: str) -> Audit:
    bar = st.progress(0.0, text="Auditing…")

    def stage(name: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(1, total)), text=f"{name}… {done}/{total}")

    audit = run_audit(root, run, cache_dir(), threshold=MAX_THRESHOLD, stage=stage)
    bar.empty()
    return audit


@st.cache_data(
    show_spinner="Computing the map (once; then it is read from the cache)…", max_entries=4
)
def load_map(key: str, method: str, _vectors: np.ndarray) -> np.ndarray:
    xy, _ = cached_map(_vectors, key, cache_dir(), MapParams(method))
    return xy


@st.cache_data(show_spinner=False, max_entries=4)
def load_top1(key: str, _audit: Audit) -> list[str]:
    return imagenet_top1(_audit.source, _audit.vectors)


def short(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def image_grid(
    rows: list[int], audit: Audit, captions: dict[int, str] | None = None, columns: int = 6
) -> None:
    c = audit.collection
    cols = st.columns(columns)
    for k, i in enumerate(rows):
        label = c.labels[i] or "unlabelled"
        cap = (captions or {}).get(i, f"{c.splits[i]} · {label}")
        cols[k % columns].image(thumbnail(c.paths[i], 256), caption=cap, width="stretch")


# --- review ---------------------------------------------------------------------------------


def current_review(root: Path) -> tuple[Review, Path]:
    path = review_file(root, cache_dir())
    try:
        return load_review(path, root), path
    except ReviewError as exc:
        st.error(f"{exc}. Decisions made now start a new review file.")
        return Review(str(root)), path


def decide(path: str, key: str, given: str, suggested: str, root: Path) -> None:
    """on_change of a decision widget: record it in the sidecar at once (atomic write)."""
    review, file = current_review(root)
    action = st.session_state.get(key, "undecided")
    if action == "undecided":
        review.undo(path)
    else:
        label = st.session_state.get(f"{key}_label", suggested) if action == "relabel" else None
        review.decide(path, action, label, given, suggested)
    save_review(file, review)


def review_tab(audit: Audit, root: Path) -> None:
    c = audit.collection
    issues = audit.issues
    review, file = current_review(root)
    counts = review.counts()
    st.markdown(
        f"**{len(issues)}** of {len(audit.labelled)} labelled images are likely label mistakes "
        "(confident learning on out-of-fold probabilities of a 5-fold linear probe: no image is "
        "judged by a model that saw its label). Most likely first."
    )
    st.caption(
        f"Decisions: {counts['relabel']} relabel · {counts['keep']} keep · "
        f"{counts['remove']} remove — saved to `{file}`; apply with "
        f"`--apply-review {file}` on train, evaluate and index."
    )
    if not issues:
        return
    pairs = Counter((i.given, i.suggested) for i in issues)
    with st.expander("Given → suggested class of the flagged images"):
        st.plotly_chart(plots.issue_counts(dict(pairs)), width="stretch")
    hide = st.checkbox("Hide images already decided", value=False, key="curate_hide_decided")
    todo = [i for i in issues if not (hide and review.get(c.paths[i.index]))]
    pages = max(1, -(-len(todo) // PAGE_SIZE))
    page = st.number_input("Page", 1, pages, 1, key="curate_issue_page") - 1
    cols = st.columns(4)
    for k, issue in enumerate(todo[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]):
        path = c.paths[issue.index]
        key = f"rv_{issue.index}"
        prev = review.get(path)
        if key not in st.session_state:
            st.session_state[key] = prev["action"] if prev else "undecided"
        with cols[k % 4]:
            st.image(thumbnail(path, 256), width="stretch")
            st.markdown(
                f"given **{issue.given}** → suggested **{issue.suggested}** · "
                f"score {issue.score:.3f}"
            )
            st.caption(short(path, root))
            args = (path, key, issue.given, issue.suggested, root)
            st.radio(
                "Decision",
                DECISIONS,
                key=key,
                horizontal=True,
                on_change=decide,
                args=args,
                label_visibility="collapsed",
            )
            if st.session_state[key] == "relabel":
                names = c.class_names
                default = (prev or {}).get("label") or issue.suggested
                if f"{key}_label" not in st.session_state:
                    st.session_state[f"{key}_label"] = default
                st.selectbox("New label", names, key=f"{key}_label", on_change=decide, args=args)


# --- near-duplicates ------------------------------------------------------------------------


def duplicates_tab(audit: Audit) -> None:
    c = audit.collection
    t = st.slider(
        "Cosine distance threshold",
        0.0,
        MAX_THRESHOLD,
        DEFAULT_THRESHOLD,
        0.005,
        format="%.3f",
        key="curate_threshold",
        help=f"Default {DEFAULT_THRESHOLD}: every resized and re-encoded copy of a "
        "training image fell below it (benchmarks/curate.py).",
    )
    at = audit_at(audit, t).duplicates
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Groups", len(at.groups))
    m2.metric("Across classes", sum(g.cross_class for g in at.groups))
    m3.metric("Train/test pairs", len(at.cross_split_pairs))
    m4.metric("Search", f"{audit.duplicates.seconds:.1f} s ({audit.duplicates.search})")
    if audit.duplicates.pairs:
        st.plotly_chart(
            plots.distance_histogram([d for _, _, d in audit.duplicates.pairs], t), width="stretch"
        )
    st.caption(
        "Groups that cross classes, then groups with a train/test pair (leakage that "
        "inflates test accuracy), then the closest."
    )
    for n, g in enumerate(at.groups[:GROUPS_SHOWN]):
        flags = ", ".join(
            f for f, on in (("across classes", g.cross_class), ("train/test", g.cross_split)) if on
        )
        st.markdown(
            f"**Group {n + 1}** · {len(g.members)} images · distance ≤ "
            f"{g.max_distance:.4f}" + (f" · **{flags}**" if flags else "")
        )
        image_grid(g.members[:6], audit)
    if len(at.groups) > GROUPS_SHOWN:
        st.caption(f"… and {len(at.groups) - GROUPS_SHOWN} more (all in `python -m core audit`).")
    del c


# --- map ------------------------------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the search index…", max_entries=1)
def load_engine(index: str, version: str) -> object:
    from core.search.rank import SearchEngine

    return SearchEngine.load(index)


def search_index() -> Path:
    """The Search page's index folder: $SCENESEEK_INDEX, else <cache>/index."""
    env = os.environ.get("SCENESEEK_INDEX")
    return Path(env).expanduser() if env else cache_dir() / "index"


def search_scores(audit: Audit, query: str) -> np.ndarray | None:
    """Each image's semantic search score for `query` from the index, NaN where the index
    does not hold it; None when there is no index."""
    index = search_index()
    meta = index / "index.json"
    if not meta.exists():
        return None
    engine = load_engine(str(index), str(meta.stat().st_mtime_ns))
    resp = engine.search(query, "semantic", int(getattr(engine, "n", 100_000)))
    score = {os.path.realpath(r.path): r.score for r in resp.results}
    return np.array([score.get(os.path.realpath(p), np.nan) for p in audit.collection.paths])


def selected_rows(event: object, n: int) -> list[int]:
    """Collection positions of the points a lasso/box selection picked (from customdata)."""
    sel = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    points = (sel.get("points") if isinstance(sel, dict) else getattr(sel, "points", None)) or []
    rows = []
    for p in points:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if cd is not None:
            v = cd[0] if isinstance(cd, list | tuple) else cd
            if 0 <= int(v) < n:
                rows.append(int(v))
    return list(dict.fromkeys(rows))


def map_tab(audit: Audit, root: Path) -> None:
    c = audit.collection
    left, mid, right = st.columns([1, 1, 2])
    method = left.selectbox("Method", METHODS, key="curate_map_method")
    colour_by = mid.selectbox(
        "Colour by",
        ["class", "prediction", "label-issue score", "search score"],
        key="curate_colour",
    )
    xy = load_map(audit.key, method, audit.vectors)
    numeric = colour_by in ("label-issue score", "search score")
    if colour_by == "class":
        colour = [y or "unlabelled" for y in c.labels]
    elif colour_by == "prediction":
        colour = [y or "unlabelled" for y in audit.predicted()]
    elif colour_by == "label-issue score":
        colour = audit.label_score()
    else:
        query = right.text_input("Search query", "snow and ice on a glacier", key="curate_query")
        scores = search_scores(audit, query) if query.strip() else None
        if scores is None:
            right.caption("No search index yet (build one on the Search page): coloured by class.")
            colour, numeric = [y or "unlabelled" for y in c.labels], False
        else:
            colour = scores
    hover = [short(p, root) for p in c.paths]
    fig = plots.map_scatter(xy, colour, colour_by, hover, numeric)
    event = st.plotly_chart(
        fig,
        key=MAP_KEY,
        on_select="rerun",
        selection_mode=("lasso", "box", "points"),
        width="stretch",
    )
    picked = selected_rows(event, len(c))
    if picked:
        st.session_state[SELECTION_KEY] = picked
    rows = st.session_state.get(SELECTION_KEY, [])
    st.caption(
        f"{method} of {len(c)} images' backbone vectors (PCA to 50 first), cached under "
        f"the vectors' key. Draw a lasso or box to see those images."
    )
    if rows:
        st.markdown(
            f"**Selected: {len(rows)} images**"
            + (f" (first {GRID_MAX} shown)" if len(rows) > GRID_MAX else "")
        )
        image_grid(rows[:GRID_MAX], audit)
        if st.button("Clear selection", key="curate_clear"):
            st.session_state[SELECTION_KEY] = []
            st.rerun()


# --- ImageNet groups ------------------------------------------------------------------------


def groups_tab(audit: Audit) -> None:
    try:
        groups = load_groups()
    except GroupsError as exc:
        st.error(f"{exc}; showing the packaged default.")
        groups = ImagenetGroups.default()
    st.markdown(
        "ImageNet labels grouped into categories (the study's section 3.2). The keyword "
        f"search mode tags each image with the categories of its ImageNet labels. "
        f"Table: {groups.source}."
    )
    top1 = load_top1(audit.key, audit)
    pred = audit.predicted()
    alias = class_aliases(audit.collection.class_names, groups)
    sugg = suggest_groups(top1, pred, groups, category_of_class=alias)
    left, right = st.columns(2)
    with left:
        text = st.text_area(
            "Table (JSON)",
            json.dumps(groups.to_dict(), indent=1),
            height=420,
            key="curate_groups_text",
        )
        if st.button("Save table", key="curate_groups_save"):
            try:
                ImagenetGroups.from_json(text, "edited").save(user_groups_path())
                st.success(f"Saved to {user_groups_path()}")
            except GroupsError as exc:
                st.error(str(exc))
    with right:
        st.markdown(
            f"**Suggested additions** ({len(sugg)}): top-1 labels of at least 5 images, "
            "70% or more of them predicted as one class."
        )
        if sugg:
            st.dataframe(pd.DataFrame(sugg), hide_index=True, width="stretch", height=300)
            if st.button("Add all suggestions and save", key="curate_groups_add"):
                add: dict[str, list[str]] = {}
                for r in sugg:
                    add.setdefault(r["category"], []).append(r["label"])
                groups.with_labels(add).save(user_groups_path())
                st.success(f"Added {len(sugg)} labels; saved to {user_groups_path()}")
        counts = Counter(zip(pred, top1, strict=True))
        rows = [
            {"predicted": p, "top-1 ImageNet label": lab, "images": n}
            for (p, lab), n in counts.most_common(30)
            if p
        ]
        st.markdown("**Most frequent (predicted class, top-1 label) pairs**")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=300)


# --- export ---------------------------------------------------------------------------------


def export_items(audit: Audit, root: Path, what: str, category: str | None) -> list[ExportItem]:
    from core.curate.review import apply_review

    c = audit.collection
    score = audit.label_score()
    if what == "map selection":
        rows = st.session_state.get(SELECTION_KEY, [])
        return [ExportItem(c.paths[i], c.labels[i], _f(score[i])) for i in rows]
    if what == "likely label mistakes":
        return [ExportItem(c.paths[i.index], i.given, i.score) for i in audit.issues]
    review, _ = current_review(root)
    pairs, _ = apply_review(list(zip(c.paths, c.labels, strict=True)), review)
    pos = {p: k for k, p in enumerate(c.paths)}
    items = [ExportItem(p, y, _f(score[pos[p]])) for p, y in pairs]
    if what == "a category":
        items = [it for it in items if it.label == category]
    return items


def _f(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def export_tab(audit: Audit, root: Path) -> None:
    what = st.radio(
        "What",
        ["map selection", "a category", "reviewed data set", "likely label mistakes"],
        horizontal=True,
        key="curate_export_what",
    )
    category = None
    if what == "a category":
        category = st.selectbox("Category", audit.collection.class_names, key="curate_export_cat")
    items = export_items(audit, root, what, category)
    st.caption(
        f"{len(items)} images, into <label>/ folders with export.csv (file, source, "
        "label, score). Reviewed sets apply your decisions (removed images left out, "
        "relabelled ones filed under their new label)."
    )
    left, right = st.columns(2)
    with left:
        out = st.text_input("Folder (new or empty)", key="curate_export_dir")
        link = st.checkbox("Symbolic links instead of copies", key="curate_export_link")
        if st.button("Export to folder", key="curate_export_go", disabled=not out or not items):
            try:
                csv_path = export_folder(items, out, "link" if link else "copy")
                st.success(f"Exported {len(items)} images; list: {csv_path}")
            except (ExportError, OSError) as exc:
                st.error(str(exc))
    with right:
        if len(items) > ZIP_MAX:
            st.caption(f"More than {ZIP_MAX} images: export to a folder instead of a zip.")
        elif items and st.button("Prepare zip", key="curate_zip"):
            st.download_button(
                "Download zip",
                export_zip(items),
                file_name="sceneseek-export.zip",
                mime="application/zip",
                key="curate_zip_dl",
            )


# --- page -----------------------------------------------------------------------------------

st.title("Curate")
ds = require_dataset()
root = Path(current_data_dir())
runs = list_runs(resolve_runs_dir())
choices = {OFFLINE: None, **{r.label(): str(r.path) for r in runs}}
source = st.selectbox(
    "Features from",
    list(choices),
    key="curate_source",
    help="A trained run's network, or the offline ImageNet backbone.",
)
if not st.session_state.get(GO_KEY):
    st.markdown(
        "Find likely label mistakes, near-duplicates and train/test leakage, and map "
        "the collection. The first audit extracts backbone features for every image "
        "(cached afterwards)."
    )
    if st.button("Audit this collection", key="curate_start", type="primary"):
        st.session_state[GO_KEY] = True
        st.rerun()
    st.stop()
try:
    audit = load_audit(str(root), choices[source], folder_stamp(root))
except (DatasetError, LabelAuditError, ValueError) as exc:
    st.error(str(exc))
    st.stop()
c = audit.collection
st.caption(
    f"{len(c)} images ({len(audit.labelled)} labelled) · features: "
    f"{audit.source.description} · audit {audit.seconds:.1f} s · reproduce: "
    f"`python -m core audit --images {root}"
    + (f" --run {choices[source]}" if choices[source] else "")
    + " --json`"
)
tabs = st.tabs(["Label mistakes", "Near-duplicates", "Map", "ImageNet groups", "Export"])
with tabs[0]:
    review_tab(audit, root)
with tabs[1]:
    duplicates_tab(audit)
with tabs[2]:
    map_tab(audit, root)
with tabs[3]:
    groups_tab(audit)
with tabs[4]:
    export_tab(audit, root)

"""The Curate page's five tabs, one render function each; dashboard/views/curate.py lays
them out. What they show is computed by core.curate (core.curate.explore for the page's
choices), figures by dashboard.plots_curate. Review decisions go to the sidecar in the cache
on every click; the user's files are never moved or rewritten."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.config import resolve_index_dir
from core.curate import explore
from core.curate.audit import Audit, audit_at
from core.curate.duplicates import DEFAULT_THRESHOLD
from core.curate.embedmap import METHODS, MapParams, cached_map
from core.curate.export import ExportError, export_folder, export_zip
from core.curate.vectors import imagenet_top1
from core.search.store import meta_path
from core.text.imagenet_groups import (
    GroupsError,
    ImagenetGroups,
    add_suggestions,
    class_aliases,
    frequent_pairs,
    load_groups,
    suggest_groups,
    user_groups_path,
)
from dashboard import plots_curate as plots
from dashboard.common import cache_dir, load_engine
from dashboard.curate_review import current_review
from dashboard.gallery import Tile, gallery, page_bounds

MAX_THRESHOLD = 0.15  # the self-join runs once at this distance; the slider filters below it
GROUPS_PAGE, GRID_PAGE = 10, 24  # duplicate groups a page; images a page of a grid
ZIP_MAX = 3000  # larger selections: export to a folder instead
MAP_KEY, SELECTION_KEY = "curate_map", "curate_selection"


@st.cache_data(show_spinner=False, max_entries=4)
def load_map(key: str, method: str, _vectors: np.ndarray) -> np.ndarray:
    return cached_map(_vectors, key, cache_dir(), MapParams(method))[0]


@st.cache_data(show_spinner="Reading the ImageNet labels of every image…", max_entries=4)
def load_top1(key: str, _audit: Audit) -> list[str]:
    return imagenet_top1(_audit.source, _audit.vectors)


def image_grid(rows: list[int], audit: Audit, key: str, columns: int = 6) -> None:
    """The images at collection positions `rows` in the one gallery (paged)."""
    c = audit.collection
    tiles = [
        Tile(
            path=c.paths[i],
            caption=f"{c.splits[i]} · {c.labels[i] or explore.UNLABELLED}",
            label=c.labels[i] or explore.UNLABELLED,
            scores={"split": c.splits[i]},
        )
        for i in rows
    ]
    gallery(tiles, key, columns=columns, page_size=GRID_PAGE)


def duplicates_tab(audit: Audit) -> None:
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
    at, found = audit_at(audit, t).duplicates, audit.duplicates
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Groups", len(at.groups))
    m2.metric("Across classes", sum(g.cross_class for g in at.groups))
    m3.metric("Train/test pairs", len(at.cross_split_pairs))
    m4.metric("Search", f"{found.seconds:.1f} s ({found.search})")
    if found.pairs:
        distances = [d for _, _, d in found.pairs]
        st.plotly_chart(plots.distance_histogram(distances, t), width="stretch")
    st.caption(
        "Groups that cross classes, then groups with a train/test pair (leakage that "
        "inflates test accuracy), then the closest."
    )
    start, stop = page_bounds(len(at.groups), GROUPS_PAGE, "curate-dups")
    for n in range(start, stop):
        g = at.groups[n]
        flags = f" · **{', '.join(g.flags())}**" if g.flags() else ""
        st.markdown(
            f"**Group {n + 1}** · {len(g.members)} images · distance ≤ {g.max_distance:.4f}{flags}"
        )
        image_grid(g.members, audit, f"curate-dup-{n}")


def search_colours(audit: Audit, query: str) -> np.ndarray | None:
    """Each image's search score for `query` from the Search page's index; None without one."""
    index = resolve_index_dir()
    if not query.strip() or not meta_path(index).exists():
        return None
    return explore.search_scores(load_engine(index), query, audit.collection.paths)


def map_tab(audit: Audit, root: Path) -> None:
    c = audit.collection
    left, mid, right = st.columns([1, 1, 2])
    method = left.selectbox("Method", METHODS, key="curate_map_method")
    by = mid.selectbox("Colour by", explore.COLOUR_BY, key="curate_colour")
    scores = None
    if by == "search score":
        query = right.text_input("Search query", "snow and ice on a glacier", key="curate_query")
        if (scores := search_colours(audit, query)) is None:
            right.caption("No search index yet (build one on the Search page): coloured by class.")
    colour, numeric = explore.map_colours(audit, by, scores)
    hover = [explore.short_path(p, root) for p in c.paths]
    with st.spinner("Computing the map (once; then it is read from the cache)…", show_time=True):
        xy = load_map(audit.key, method, audit.vectors)
    fig = plots.map_scatter(xy, colour, by, hover, numeric)
    event = st.plotly_chart(
        fig,
        key=MAP_KEY,
        on_select="rerun",
        width="stretch",
        selection_mode=("lasso", "box", "points"),
    )
    if picked := plots.selected_rows(event, len(c)):
        st.session_state[SELECTION_KEY] = picked
    rows = st.session_state.get(SELECTION_KEY, [])
    st.caption(
        f"{method} of {len(c)} images' backbone vectors (PCA to 50 first), cached under "
        "the vectors' key. Draw a lasso or box to see those images."
    )
    if rows:
        st.markdown(f"**Selected: {len(rows)} images**")
        image_grid(rows, audit, "curate-map-grid")
        if st.button("Clear selection", key="curate_clear"):
            st.session_state[SELECTION_KEY] = []
            st.rerun()


def save_groups(make: Callable[[], ImagenetGroups], done: str) -> None:
    """Save the table `make` builds as the user's copy; `done` leads the success message."""
    try:
        make().save(user_groups_path())
        st.success(f"{done} {user_groups_path()}")
    except GroupsError as exc:
        st.error(str(exc))


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
    top1, pred = load_top1(audit.key, audit), audit.predicted()
    alias = class_aliases(audit.collection.class_names, groups)
    sugg = suggest_groups(top1, pred, groups, category_of_class=alias)
    left, right = st.columns(2)
    text = left.text_area(
        "Table (JSON)", json.dumps(groups.to_dict(), indent=1), height=420, key="curate_groups_text"
    )
    if left.button("Save table", key="curate_groups_save"):
        with left:
            save_groups(lambda: ImagenetGroups.from_json(text, "edited"), "Saved to")
    with right:
        st.markdown(
            f"**Suggested additions** ({len(sugg)}): top-1 labels of at least 5 images, "
            "70% or more of them predicted as one class."
        )
        if sugg:
            st.dataframe(pd.DataFrame(sugg), hide_index=True, width="stretch", height=300)
            if st.button("Add all suggestions and save", key="curate_groups_add"):
                save_groups(
                    lambda: add_suggestions(groups, sugg), f"Added {len(sugg)} labels; saved to"
                )
        st.markdown("**Most frequent (predicted class, top-1 label) pairs**")
        rows = pd.DataFrame(frequent_pairs(pred, top1))
        st.dataframe(rows, hide_index=True, width="stretch", height=300)


def export_tab(audit: Audit, root: Path) -> None:
    what = st.radio("What", explore.EXPORT_WHAT, horizontal=True, key="curate_export_what")
    category = None
    if what == "a category":
        category = st.selectbox("Category", audit.collection.class_names, key="curate_export_cat")
    selection = st.session_state.get(SELECTION_KEY, [])
    review = current_review(root)[0] if what in ("a category", "reviewed data set") else None
    items = explore.export_items(audit, what, selection, review, category)
    st.caption(
        f"{len(items)} images, into <label>/ folders with export.csv (file, source, label, "
        "score). Reviewed sets apply your decisions (removed images left out, relabelled ones "
        "filed under their new label)."
    )
    left, right = st.columns(2)
    out = left.text_input("Folder (new or empty)", key="curate_export_dir")
    link = left.checkbox("Symbolic links instead of copies", key="curate_export_link")
    if left.button("Export to folder", key="curate_export_go", disabled=not out or not items):
        try:
            csv_path = export_folder(items, out, "link" if link else "copy", roots=[root])
            left.success(f"Exported {len(items)} images; list: {csv_path}")
        except (ExportError, OSError) as exc:
            left.error(str(exc))
    if len(items) > ZIP_MAX:
        right.caption(f"More than {ZIP_MAX} images: export to a folder instead of a zip.")
    elif items and right.button("Prepare zip", key="curate_zip"):
        right.download_button(
            "Download zip",
            export_zip(items, roots=[root]),
            file_name="sceneseek-export.zip",
            mime="application/zip",
            key="curate_zip_dl",
        )

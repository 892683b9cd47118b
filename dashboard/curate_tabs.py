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
from core.curate.label_issues import LabelIssue
from core.curate.vectors import imagenet_top1
from core.data.review import (
    ACTIONS,
    UNDECIDED,
    Review,
    ReviewError,
    load_review,
    review_file,
    save_review,
)
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
from dashboard.common import cache_dir, load_engine, thumbnail

MAX_THRESHOLD = 0.15  # the self-join runs once at this distance; the slider filters below it
PAGE_SIZE, GROUPS_SHOWN, GRID_MAX = 12, 20, 48
ZIP_MAX = 3000  # larger selections: export to a folder instead
MAP_KEY, SELECTION_KEY = "curate_map", "curate_selection"


@st.cache_data(
    show_spinner="Computing the map (once; then it is read from the cache)…", max_entries=4
)
def load_map(key: str, method: str, _vectors: np.ndarray) -> np.ndarray:
    return cached_map(_vectors, key, cache_dir(), MapParams(method))[0]


@st.cache_data(show_spinner=False, max_entries=4)
def load_top1(key: str, _audit: Audit) -> list[str]:
    return imagenet_top1(_audit.source, _audit.vectors)


def image_grid(rows: list[int], audit: Audit, columns: int = 6) -> None:
    c, cols = audit.collection, st.columns(columns)
    for k, i in enumerate(rows):
        cap = f"{c.splits[i]} · {c.labels[i] or explore.UNLABELLED}"
        cols[k % columns].image(thumbnail(c.paths[i], 256), caption=cap, width="stretch")


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
    label = st.session_state.get(f"{key}_label", suggested)
    review.decide(path, st.session_state.get(key, UNDECIDED), label, given, suggested)
    save_review(file, review)


def review_card(issue: LabelIssue, audit: Audit, review: Review, root: Path) -> None:
    path, key = audit.collection.paths[issue.index], f"rv_{issue.index}"
    prev = review.get(path) or {}
    st.session_state.setdefault(key, prev.get("action", UNDECIDED))
    st.image(thumbnail(path, 256), width="stretch")
    st.markdown(
        f"given **{issue.given}** → suggested **{issue.suggested}** · score {issue.score:.3f}"
    )
    st.caption(explore.short_path(path, root))
    args = (path, key, issue.given, issue.suggested, root)
    st.radio(
        "Decision",
        (UNDECIDED, *ACTIONS),
        key=key,
        horizontal=True,
        on_change=decide,
        args=args,
        label_visibility="collapsed",
    )
    if st.session_state[key] == "relabel":
        st.session_state.setdefault(f"{key}_label", prev.get("label") or issue.suggested)
        names = audit.collection.class_names
        st.selectbox("New label", names, key=f"{key}_label", on_change=decide, args=args)


def review_tab(audit: Audit, root: Path) -> None:
    review, file = current_review(root)
    n = review.counts()
    st.markdown(
        f"**{len(audit.issues)}** of {len(audit.labelled)} labelled images are likely label "
        "mistakes (confident learning on out-of-fold probabilities of a 5-fold linear probe: no "
        "image is judged by a model that saw its label). Most likely first."
    )
    st.caption(
        f"Decisions: {n['relabel']} relabel · {n['keep']} keep · {n['remove']} remove — saved to "
        f"`{file}`; apply with `--apply-review {file}` on train, evaluate and index."
    )
    if not audit.issues:
        return
    with st.expander("Given → suggested class of the flagged images"):
        st.plotly_chart(plots.issue_counts(explore.issue_pairs(audit.issues)), width="stretch")
    hide = st.checkbox("Hide images already decided", value=False, key="curate_hide_decided")
    todo = explore.to_review(audit, review, hide)
    page = st.number_input(
        "Page", 1, max(1, -(-len(todo) // PAGE_SIZE)), 1, key="curate_issue_page"
    )
    cols = st.columns(4)
    for k, issue in enumerate(todo[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]):
        with cols[k % 4]:
            review_card(issue, audit, review, root)


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
    for n, g in enumerate(at.groups[:GROUPS_SHOWN]):
        flags = f" · **{', '.join(g.flags())}**" if g.flags() else ""
        st.markdown(
            f"**Group {n + 1}** · {len(g.members)} images · distance ≤ {g.max_distance:.4f}{flags}"
        )
        image_grid(g.members[:6], audit)
    if len(at.groups) > GROUPS_SHOWN:
        st.caption(f"… and {len(at.groups) - GROUPS_SHOWN} more (all in `python -m core audit`).")


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
    fig = plots.map_scatter(load_map(audit.key, method, audit.vectors), colour, by, hover, numeric)
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
        more = f" (first {GRID_MAX} shown)" if len(rows) > GRID_MAX else ""
        st.markdown(f"**Selected: {len(rows)} images**{more}")
        image_grid(rows[:GRID_MAX], audit)
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

"""The Curate page's "Label mistakes" tab: the flagged images in the one gallery, a decision
under each (with a relabel control that is always there, so every row of tiles stays
aligned), and bulk decisions: tick several, choose one action, apply. Every decision goes to
the review sidecar in the cache at once (atomic write); the user's files are never touched."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.curate import explore
from core.curate.audit import Audit
from core.curate.label_issues import LabelIssue
from core.data.review import ACTIONS, UNDECIDED, Review, ReviewError, load_review, review_file
from core.data.review import save_review as _save_review
from dashboard import plots_curate as plots
from dashboard.common import cache_dir
from dashboard.gallery import Tile, gallery

PAGE_SIZE, COLUMNS = 12, 4
GRID_KEY = "curate-review"
SUGGESTED = "(each image's suggested class)"


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
    _save_review(file, review)


def _selected(todo: list[LabelIssue]) -> list[LabelIssue]:
    return [i for i in todo if st.session_state.get(f"rvsel_{i.index}")]


def _select(issues: list[LabelIssue], value: bool) -> None:
    for issue in issues:
        st.session_state[f"rvsel_{issue.index}"] = value


def _apply_bulk(todo: list[LabelIssue], audit: Audit, root: Path) -> None:
    """on_click of "Apply": one action for every ticked image, one write of the sidecar, and
    the tiles' own controls set to match (allowed in a callback, before they are drawn)."""
    action, chosen = st.session_state["rv_bulk_action"], st.session_state["rv_bulk_label"]
    review, file = current_review(root)
    for issue in _selected(todo):
        path, key = audit.collection.paths[issue.index], f"rv_{issue.index}"
        label = issue.suggested if chosen == SUGGESTED else chosen
        review.decide(path, action, label, issue.given, issue.suggested)
        st.session_state[key] = action
        st.session_state[f"{key}_label"] = label
        st.session_state[f"rvsel_{issue.index}"] = False
    _save_review(file, review)


def bulk_bar(todo: list[LabelIssue], shown: list[LabelIssue], audit: Audit, root: Path) -> None:
    """Tick images under their tiles (or all on this page), then one action for all."""
    picked = _selected(todo)
    a, b, c, d, e = st.columns([1.2, 1, 1, 1.6, 1.4], vertical_alignment="bottom")
    a.button("Select this page", key="rv_sel_page", on_click=_select, args=(shown, True))
    b.button("Select none", key="rv_sel_none", on_click=_select, args=(todo, False))
    action = c.selectbox("Action", ACTIONS, key="rv_bulk_action")
    d.selectbox(
        "New label",
        [SUGGESTED, *audit.collection.class_names],
        key="rv_bulk_label",
        disabled=action != "relabel",
    )
    e.button(
        f"Apply to {len(picked)} selected",
        key="rv_bulk_apply",
        type="primary",
        disabled=not picked,
        on_click=_apply_bulk,
        args=(todo, audit, root),
    )


def review_controls(issue: LabelIssue, audit: Audit, review: Review, root: Path) -> None:
    """Under a tile: tick for bulk, the decision, and the new label (disabled unless relabel:
    drawn either way so that every tile of a row has the same height)."""
    path, key = audit.collection.paths[issue.index], f"rv_{issue.index}"
    prev = review.get(path) or {}
    st.session_state.setdefault(key, prev.get("action", UNDECIDED))
    st.session_state.setdefault(f"{key}_label", prev.get("label") or issue.suggested)
    args = (path, key, issue.given, issue.suggested, root)
    st.checkbox("select", key=f"rvsel_{issue.index}")
    st.radio(
        "Decision",
        (UNDECIDED, *ACTIONS),
        key=key,
        horizontal=True,
        on_change=decide,
        args=args,
        label_visibility="collapsed",
    )
    st.selectbox(
        "New label",
        audit.collection.class_names,
        key=f"{key}_label",
        on_change=decide,
        args=args,
        disabled=st.session_state[key] != "relabel",
        label_visibility="collapsed",
    )


def issue_tile(issue: LabelIssue, audit: Audit, root: Path) -> Tile:
    path = audit.collection.paths[issue.index]
    return Tile(
        path=path,
        caption=f"given **{issue.given}** → **{issue.suggested}** · {issue.score:.3f}",
        label=issue.given,
        scores={"suggested": issue.suggested, "label-issue score": float(issue.score)},
        why=[f"folder: {explore.short_path(path, root)}"],
    )


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
    page = min(int(st.session_state.get(f"{GRID_KEY}-page", 1)), max(1, -(-len(todo) // PAGE_SIZE)))
    bulk_bar(todo, todo[(page - 1) * PAGE_SIZE : page * PAGE_SIZE], audit, root)
    tiles = [issue_tile(i, audit, root) for i in todo]
    gallery(
        tiles,
        GRID_KEY,
        columns=COLUMNS,
        page_size=PAGE_SIZE,
        below=lambda i, _tile: review_controls(todo[i], audit, review, root),
    )

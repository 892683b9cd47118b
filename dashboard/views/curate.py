"""Curate: likely label mistakes to review, near-duplicates and train/test leakage, a map of
the collection linked to an image grid, ImageNet-label groups, and export.

The audit (vectors, out-of-fold probabilities, the self-join) is computed by core.curate and
persisted under the cache with its key; this page runs it as a background job (dashboard.jobs)
per (data folder, run, folder stamp), so it goes on while the user visits other pages, keeps
the finished audit in that job, and lays out the tabs of dashboard.curate_tabs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import resolve_runs_dir
from core.curate.audit import Audit, run_audit
from core.curate.explore import audit_command
from core.vision.runs import list_runs
from dashboard import curate_tabs as tabs
from dashboard.common import cache_dir, current_data_dir, folder_stamp, require_dataset
from dashboard.curate_review import review_tab
from dashboard.jobs import Job, job_panel, registry

GO_KEY = "curate_go"
OFFLINE = "offline backbone (efficientnet_lite0)"
# The steps of run_audit that report no count, named after the stage they follow.
AFTER = {
    "checking images": "Loading the backbone",
    "features": "Finding likely label mistakes (out-of-fold probabilities) and near-duplicates",
}


def audit_key(root: Path, run: str | None) -> str:
    return f"audit:{root.resolve()}|{run}|{folder_stamp(root)}"


def start_audit(root: Path, run: str | None) -> Job:
    """Start (or join) the audit of `root` with `run`'s features in a background job."""
    cache = cache_dir()

    def work(job: Job) -> Audit:  # the worker thread: no Streamlit calls here
        job.note("Listing the images")
        return run_audit(root, run, cache, threshold=tabs.MAX_THRESHOLD, stage=job.stage)

    return registry().start(audit_key(root, run), "Auditing", work, AFTER)


def finished_audit(root: Path, run: str | None) -> Audit:
    """The audit for this folder and run: started on the first click (or already there),
    its live progress while it runs (the page stops there), its one-line error if it failed."""
    job = registry().get(audit_key(root, run))
    if job is None:
        start_button()
        job = start_audit(root, run)
    if job.running:
        job_panel(job.key)
        st.stop()
    if job.status == "failed":
        st.error(f"The audit failed: {job.error}")
        if st.button("Try again", key="curate_retry"):
            start_audit(root, run)
            st.rerun()
        st.stop()
    return job.result


def features_from() -> str | None:
    """The run whose network gives the vectors (None: the offline backbone)."""
    choices = {OFFLINE: None, **{r.label(): str(r.path) for r in list_runs(resolve_runs_dir())}}
    source = st.selectbox(
        "Features from",
        list(choices),
        key="curate_source",
        help="A trained run's network, or the offline ImageNet backbone.",
    )
    return choices[source]


def start_button() -> None:
    """Before the first click: what the audit does, and a button to start it."""
    if st.session_state.get(GO_KEY):
        return
    st.markdown(
        "Find likely label mistakes, near-duplicates and train/test leakage, and map the "
        "collection. The first audit extracts backbone features for every image (cached "
        "afterwards)."
    )
    if st.button("Audit this collection", key="curate_start", type="primary"):
        st.session_state[GO_KEY] = True
        st.rerun()
    st.stop()


st.title("Curate")
require_dataset()
root = Path(current_data_dir())
run = features_from()
audit = finished_audit(root, run)
st.caption(
    f"{len(audit.collection)} images ({len(audit.labelled)} labelled) · features: "
    f"{audit.source.description} · audit {audit.seconds:.1f} s · reproduce: "
    f"`{audit_command(root, run)}`"
)
review, duplicates, mapped, groups, export = st.tabs(
    ["Label mistakes", "Near-duplicates", "Map", "ImageNet groups", "Export"]
)
with review:
    review_tab(audit, root)
with duplicates:
    tabs.duplicates_tab(audit)
with mapped:
    tabs.map_tab(audit, root)
with groups:
    tabs.groups_tab(audit)
with export:
    tabs.export_tab(audit, root)

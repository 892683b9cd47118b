"""Curate: likely label mistakes to review, near-duplicates and train/test leakage, a map of
the collection linked to an image grid, ImageNet-label groups, and export.

The audit (vectors, out-of-fold probabilities, the self-join) is computed by core.curate and
persisted under the cache with its key; this page keeps it in st.cache_resource per
(data folder, run, folder stamp) and lays out the tabs of dashboard.curate_tabs."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import resolve_runs_dir
from core.curate.audit import Audit, run_audit
from core.curate.explore import audit_command
from core.curate.label_issues import LabelAuditError
from core.data.dataset import DatasetError
from core.vision.runs import list_runs
from dashboard import curate_tabs as tabs
from dashboard.common import cache_dir, current_data_dir, folder_stamp, progress, require_dataset
from dashboard.curate_review import review_tab

GO_KEY = "curate_go"
OFFLINE = "offline backbone (efficientnet_lite0)"


@st.cache_resource(show_spinner=False, max_entries=2)
def load_audit(root: str, run: str | None, stamp: float) -> Audit:
    with progress("Auditing") as bar:
        return run_audit(root, run, cache_dir(), threshold=tabs.MAX_THRESHOLD, stage=bar.stage)


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
start_button()
try:
    audit = load_audit(str(root), run, folder_stamp(root))
except (DatasetError, LabelAuditError, ValueError) as exc:
    st.error(str(exc))
    st.stop()
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

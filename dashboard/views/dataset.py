"""Data set explorer: counts, image grid, sizes and modes, problems, duplicates."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.common import current_data_dir, load_manifest, require_dataset
from dashboard.gallery import Tile, gallery, page_bounds

PAGE_SIZE = 24
GROUPS_PAGE = 10  # duplicate groups a page

st.title("🗂️ Data set")
ds = require_dataset()
manifest = load_manifest(current_data_dir())
df = manifest.df
usable = manifest.usable()

st.caption(
    f"`{ds.root}` · {ds.layout} layout · {len(df)} files · {len(usable)} usable · "
    f"reproduce: `python -m core dataset --data {ds.root}`"
)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", len(usable))
c2.metric("Classes", len(ds.class_names))
c3.metric("Skipped files", len(manifest.skipped()) + len(ds.ignored))
c4.metric("Duplicate groups", manifest.duplicates()["sha256"].nunique())

tab_counts, tab_grid, tab_sizes, tab_problems, tab_dups = st.tabs(
    ["Class counts", "Images", "Sizes & modes", "Skipped & converted", "Duplicates"]
)

with tab_counts:
    counts = usable.groupby(["split", "class"], dropna=False).size().reset_index(name="images")
    counts["class"] = counts["class"].fillna("(unlabelled)")
    fig = px.bar(counts, x="class", y="images", color="split", barmode="group", text="images")
    fig.update_layout(height=380, margin=dict(t=20, b=20))
    st.plotly_chart(fig, width="stretch")
    st.dataframe(
        counts.pivot(index="class", columns="split", values="images").fillna(0).astype(int),
        width="stretch",
    )

with tab_grid:
    col_a, col_b = st.columns(2)
    split = col_a.selectbox("Split", ds.splits, key="grid_split")
    classes = sorted(usable.loc[usable["split"] == split, "class"].dropna().unique().tolist())
    label = col_b.selectbox("Class", classes or ["(unlabelled)"], key="grid_class")
    rows = usable[(usable["split"] == split) & (usable["class"].fillna("(unlabelled)") == label)]
    st.caption(f"{len(rows)} images")
    tiles = [
        Tile(
            path=r["path"],
            caption=f"{r['width']}x{r['height']}",
            label=label,
            scores={"size": f"{r['width']}x{r['height']}", "mode": r["mode"]},
        )
        for _, r in rows.iterrows()
    ]
    gallery(tiles, f"dataset-{split}-{label}", columns=6, page_size=PAGE_SIZE)

with tab_sizes:
    sizes = usable.assign(size=usable["width"].astype(str) + "x" + usable["height"].astype(str))
    size_counts = sizes["size"].value_counts().reset_index()
    size_counts.columns = ["size", "images"]
    left, right = st.columns(2)
    with left:
        st.markdown("**Image sizes**")
        st.dataframe(size_counts, width="stretch", hide_index=True)
    with right:
        st.markdown("**Modes and formats**")
        st.dataframe(
            usable.groupby(["mode", "format"]).size().reset_index(name="images"),
            width="stretch",
            hide_index=True,
        )
    odd = manifest.odd_sizes()
    if len(odd):
        st.markdown(f"**{len(odd)} images with an unusual size** (resized when loaded)")
        st.dataframe(odd[["path", "class", "width", "height"]], width="stretch")

with tab_problems:
    reasons = manifest.reason_counts()
    if not reasons and not ds.ignored:
        st.success("Every file decoded as an RGB image of the usual size.")
    if reasons:
        st.dataframe(
            pd.DataFrame({"reason": list(reasons), "files": list(reasons.values())}),
            width="stretch",
            hide_index=True,
        )
    skipped = manifest.skipped()
    if len(skipped):
        st.markdown("**Skipped files**")
        st.dataframe(skipped[["path", "split", "class", "reason", "note"]], width="stretch")
    converted = manifest.converted()
    if len(converted):
        st.markdown("**Converted files** (used after the fix in *note*)")
        st.dataframe(converted[["path", "class", "mode", "note"]], width="stretch")
    if ds.ignored:
        st.markdown("**Ignored files and folders** (not read; see *reason*)")
        st.dataframe(
            pd.DataFrame([(str(p), r) for p, r in ds.ignored], columns=["path", "reason"]),
            width="stretch",
        )

with tab_dups:
    dups = manifest.duplicates()
    cross = manifest.cross_class_duplicates()
    st.markdown(
        f"**{dups['sha256'].nunique()} groups** of byte-identical files "
        f"({len(dups)} files); **{cross['sha256'].nunique()} groups filed under more than "
        "one class** — their labels contradict each other."
    )
    groups = [group for _sha, group in cross.groupby("sha256", sort=False)]
    start, stop = page_bounds(len(groups), GROUPS_PAGE, "dataset-dups")
    for n in range(start, stop):
        tiles = [
            Tile(r["path"], caption=f"{r['split']}/{r['class']}", label=r["class"])
            for _, r in groups[n].iterrows()
        ]
        st.markdown(f"**Group {n + 1}** · {len(tiles)} identical files")
        gallery(tiles, f"dataset-dup-{n}", columns=6, page_size=12)
        st.divider()
    if len(dups):
        with st.expander("All duplicate groups"):
            st.dataframe(dups[["sha256", "path", "split", "class"]], width="stretch")

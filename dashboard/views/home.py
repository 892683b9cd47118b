"""Home: what is there (the data found and where, runs, the search index, the review of an
audit), each with a link to its page, and where a newcomer starts."""

from __future__ import annotations

import streamlit as st

from core.config import data_dir_source, resolve_index_dir, resolve_runs_dir
from core.data.dataset import DatasetError
from dashboard.common import DATA_KEY, cache_dir, current_data_dir, load_dataset, page_link
from dashboard.jobs import index_job_key, jobs_overview, registry

st.title("🏞️ SceneSeek")
st.markdown(
    "Classify landscape photos and find them by text. Every figure on these pages is computed "
    "from your data; each has a `python -m core …` command that reproduces it."
)


def data_status() -> bool:
    """The data folder, where it came from and what was found there; True when usable."""
    root = current_data_dir()
    where = f"`{root}` ({data_dir_source(st.session_state.get(DATA_KEY))})"
    try:
        ds = load_dataset(str(root))
    except DatasetError as exc:
        st.warning(f"**Data**: nothing usable at {where}: {exc} Change the folder in the sidebar.")
        return False
    counts = " · ".join(f"{s} {sum(c.values()):,}" for s, c in ds.counts().items())
    st.markdown(
        f"**Data**: {where} · {ds.layout} layout · {len(ds.class_names)} classes "
        f"({', '.join(ds.class_names)}) · {counts}"
    )
    page_link("views/dataset.py", "Look at the images, sizes and skipped files", "🗂️")
    return True


def runs_status() -> None:
    from core.vision.runs import list_runs

    runs_dir = resolve_runs_dir()
    runs = list_runs(runs_dir) if runs_dir.is_dir() else []
    if runs:
        st.markdown(f"**Runs**: {len(runs)} in `{runs_dir}` (for one: {runs[0].label()})")
        page_link("views/runs.py", "Compare runs and their evaluation", "📈")
    else:
        st.markdown(f"**Runs**: none yet in `{runs_dir}`")
        page_link("views/train.py", "Train a first CNN (a linear probe takes minutes)", "🧠")


def index_status() -> None:
    from core.search.store import SearchIndexError, describe_index, meta_path, read_meta

    index = resolve_index_dir()
    try:
        text = describe_index(read_meta(index)) if meta_path(index).exists() else None
    except (SearchIndexError, OSError, KeyError, ValueError) as exc:
        text = f"unreadable ({exc})"
    job = registry().get(index_job_key(index))
    if job is not None and job.running:
        st.markdown(f"**Search index**: being built at `{index}` (see Background work)")
        page_link("views/search.py", "Watch the build on the Search page", "🔎")
    elif text is None:
        st.markdown(f"**Search index**: none yet at `{index}`")
        page_link("views/search.py", "Build the index and search by a sentence", "🔎")
    else:
        st.markdown(f"**Search index**: `{index}`: {text}")
        page_link("views/search.py", "Search by a sentence or a photo", "🔎")


def audit_status() -> None:
    from core.data.review import ReviewError, load_review, review_file

    root = current_data_dir()
    file = review_file(root, cache_dir())
    try:
        n = load_review(file, root).counts() if file.exists() else None
    except ReviewError:
        n = None
    if n:
        done = " · ".join(f"{v} {k}" for k, v in n.items())
        st.markdown(f"**Audit**: review decisions so far: {done} (`{file}`)")
    else:
        st.markdown("**Audit**: no review decisions yet for this data folder")
    page_link("views/curate.py", "Find label mistakes, near-duplicates and leakage", "🧹")


start, status = st.columns([2, 3], gap="large")
with start:
    st.subheader("Start here")
    st.markdown(
        "1. **Check the data** the sidebar points at: class counts, a grid of the images "
        "and any file that was skipped, with the reason.\n"
        "2. **Search** it by a sentence (the page builds the index the first time).\n"
        "3. **Curate**: an audit lists likely label mistakes to keep, remove or relabel, "
        "near-duplicates and train/test leakage, and draws a map to lasso.\n"
        "4. **Compare classifiers**: the eigen-image baseline, then a CNN you train."
    )
    page_link("views/dataset.py", "Start: the data set", "🗂️")
    page_link("views/eigen.py", "Eigen-images: the PCA baseline, no training", "🧮")
    page_link("views/keywords.py", "Keywords of a caption file", "🔤")
with status:
    st.subheader("What is here")
    jobs_overview()  # index builds and audits started on other pages, live while they run
    if data_status():
        runs_status()
        index_status()
        audit_status()

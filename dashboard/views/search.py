"""Search: find images by a sentence (four ranking modes, side by side, with the why of every
result), more like this, search by an uploaded photo (optionally steered by words), and
retrieval quality per mode. Every query is served by the LanceDB index through
core.search.engine; the engine loads once per index version (dashboard.common.load_engine)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from core.config import INDEX_ENV, queries_file, resolve_index_dir
from core.search.engine import DEFAULT_MODE, MODE_HELP, MODES, SearchEngine, SearchResponse
from core.search.evaluate import EVALUATION_KINDS, available_evaluations, describe_evaluation
from core.search.query import EXAMPLES, QueryError
from core.search.store import SearchIndexError, describe_index, meta_path, read_meta
from dashboard.common import current_data_dir, index_stamp, load_engine, progress, thumbnail
from dashboard.gallery import Tile, gallery
from dashboard.jobs import format_seconds, index_job_key, job_panel, one_line, registry
from dashboard.plots_search import hybrid_differences

if TYPE_CHECKING:
    from core.search.engine import SearchResult

QUERY_KEY = "search_query"
LIKE_KEY = "search_like"
COLUMNS = 5
PAGE_SIZE = 20  # four rows of five


@st.cache_resource(show_spinner=False, max_entries=4)
def retrieval_quality(index: str, version: str, kind: str, source: str) -> dict:
    """core.search.evaluate.evaluate_retrieval over every mode, once per index version; the
    first time with a bar counting the (query, mode) pairs scored (captions take minutes on a
    CPU)."""
    from core.search.evaluate import evaluate_retrieval

    with progress(f"Evaluating every mode on the {EVALUATION_KINDS[kind]}") as bar:
        return evaluate_retrieval(load_engine(index), kind, source, MODES, bar)


def start_index_job(data: Path, index: Path) -> None:
    """Build or update `index` from `data` in a background job (dashboard.jobs): it goes on
    when the user switches pages, and this page and Home show its progress."""
    from core.search.store import build_index

    def work(job):  # the worker thread: no Streamlit calls here
        # every step the build takes is named as it starts, counted where it can be
        return build_index(data, index, stage=job.stage, note=job.note)

    registry().start(index_job_key(index), "Indexing", work)
    st.rerun()


def searchable(index: Path) -> bool:
    """An index queries can use: index.json readable and what queries read derived at least
    once (a first build commits rows before that: until it ends there is nothing to search)."""
    try:
        meta = read_meta(index)
    except SearchIndexError:
        return False
    return bool((meta.get("semantic") or {}).get("key"))


def index_job_status(index: Path) -> bool:
    """The running build of `index` (live, then the page reruns), or how the last one ended.
    True while a build runs; a first build (nothing searchable yet) stops the page, an update
    leaves the index as it stands to search below its progress."""
    job = registry().get(index_job_key(index))
    if job is None:
        return False
    if job.running:
        job_panel(job.key)
        if not searchable(index):
            st.stop()
        st.caption(
            "Meanwhile search the index as it stands: the photos this update adds become "
            "searchable when it ends."
        )
        return True
    if job.status == "failed":  # the index as it was is kept; the build can be retried
        st.error(f"Building the index failed: {job.error}")
    elif st.session_state.get("search_job_seen") != id(job):
        st.session_state["search_job_seen"] = id(job)  # said once per session
        stats = job.result
        st.success(
            f"Indexed {stats.encoded} images ({stats.images_per_second} per second) "
            f"in {format_seconds(job.elapsed())}."
        )
    return False


def build_panel(index: Path) -> None:
    data = current_data_dir()
    st.info(
        f"No search index at `{index}` yet. Build one here for `{data}`, or from a terminal:\n\n"
        f"`python -m core index --images {data} --index {index}`\n\n"
        f"(set `{INDEX_ENV}` to use another index folder)."
    )
    if st.button("Build the index", type="primary", disabled=not data.is_dir()):
        start_index_job(data, index)


def result_tile(r: SearchResult) -> Tile:
    """A result as a gallery tile: rank, score and category under it; the why in its popover
    and, with the top ImageNet labels and the caption, in its enlarged view."""
    below = " · *below the relevance floor*" if r.below_floor else ""
    missing = "  \n⚠️ file missing (moved or deleted since it was indexed)" if r.missing else ""
    labels = ", ".join(f"{n} {p:.2f}" for n, p in r.top_labels[:3])
    why = [
        *r.why,
        *([f"ImageNet: {labels}"] if labels else []),
        *([f"“{r.caption}”"] * bool(r.caption)),
    ]
    # beside a floor, the score the floor judges (hybrid's own score is another scale)
    shown = r.floor_score if r.floor_score is not None else r.score
    return Tile(
        path=str(r.path),
        caption=f"**{r.rank}.** {shown:.3f} · {r.category or '–'}{below}{missing}",
        label=r.category,
        scores={"rank": r.rank, "score": float(shown)},
        why=why,
    )


def show_response(resp: SearchResponse, key: str, columns: int = COLUMNS) -> None:
    st.caption(resp.summary())
    for note in resp.notes:
        st.info(note)

    def more_like_this(i: int, tile: Tile) -> None:
        rank = resp.results[i].rank
        if st.button("More like this", key=f"more-{key}-{rank}"):
            st.session_state[LIKE_KEY] = tile.path

    tiles = [result_tile(r) for r in resp.results]
    gallery(tiles, f"search-{key}", columns=columns, page_size=PAGE_SIZE, below=more_like_this)


def search_section(engine: SearchEngine) -> None:
    st.markdown("Try one of the study's sentences:")
    for i, (col, text) in enumerate(zip(st.columns(len(EXAMPLES)), EXAMPLES, strict=True)):
        if col.button(text, key=f"example-{i}"):
            st.session_state[QUERY_KEY] = text
    query = st.text_input(
        "Describe a scene",
        key=QUERY_KEY,
        placeholder="A serene lake surrounded by forest.",
        help="`-word` leaves out images that name it: beach -people",
    )
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    help_text = "; ".join(f"{m}: {h}" for m, h in MODE_HELP.items())
    mode = c1.selectbox("Mode", MODES, index=MODES.index(DEFAULT_MODE), help=help_text)
    compare = c2.selectbox("Compare with", ["(none)", *MODES], index=0)
    category = c3.selectbox("Category", ["(all)", *engine.classes])
    k = int(c4.number_input("Results", 1, 50, 10))
    cat = None if category == "(all)" else category
    if not query:
        return  # a query over MAX_QUERY_CHARS is cut by core, which says so in its notes
    try:
        if compare in ("(none)", mode):
            show_response(engine.search(query, mode, k, cat), "a")
            return
        for col, m, key in zip(st.columns(2), (mode, compare), "ab", strict=True):
            with col:
                st.subheader(m)
                show_response(engine.search(query, m, k, cat), key, columns=3)
    except (QueryError, SearchIndexError) as exc:
        st.error(str(exc))


def like_section(engine: SearchEngine) -> None:
    path = st.session_state.get(LIKE_KEY)
    if not path:
        return
    st.subheader("More like this")
    c1, c2 = st.columns([1, 4])
    c1.image(thumbnail(path), width="stretch")
    if c1.button("Clear", key="like-clear"):
        st.session_state.pop(LIKE_KEY, None)
        st.rerun()
    with c2:
        show_response(engine.similar(path=path, k=10), "like")


def upload_section(engine: SearchEngine) -> None:
    from core.data.images import check_image

    st.subheader("Search by image")
    up = st.file_uploader(
        "Upload a photo to classify it and find similar ones",
        type=["jpg", "jpeg", "png", "webp", "bmp"],
        key="image_upload",
    )
    if up is None:
        return
    check = check_image(up.getvalue())
    if check.image is None:
        st.error(f"{up.name}: cannot use this file ({check.reason}).")
        return
    info = engine.classify_image(check.image)
    c1, c2 = st.columns([1, 4])
    c1.image(check.image, width="stretch")
    c1.markdown("  \n".join(f"{c}: {p:.2f}" for c, p in info["categories"][:3]))
    c1.caption(", ".join(f"{n} {p:.2f}" for n, p in info["top_labels"]))
    words = c2.text_input(
        "Steer it with words (optional)",
        key="upload_words",
        placeholder="at sunset, with snow",
        help="The photo and the words together: images like the photo that also fit the words.",
    )
    with c2:
        if words.strip() and info.get("semantic") is not None:
            show_response(engine.search_image_text(info, words, k=10), "upload")
        else:
            show_response(engine.similar(feature=info["feature"], k=10), "upload")


def evaluation_section(index: Path, engine: SearchEngine) -> None:
    st.subheader("Retrieval quality per mode")
    st.caption(
        "Category queries: precision@10 and average precision on the test split (relevant = "
        "the image's class folder). Caption queries: each caption of a photo the text mapping "
        "never saw must find its photo among all indexed images (R@k, median rank, MRR; "
        "fitted_share_top10: the share of photos that fitted the mapping among the top 10). "
        f"Command: `python -m core evaluate-retrieval --index {index} --queries FILE --json`."
    )
    if not st.button("Run the evaluation", key="evaluate"):
        return
    for kind, source in available_evaluations(engine, queries_file()).items():
        try:
            out = retrieval_quality(str(index), index_stamp(index), kind, source)
        except ValueError as exc:
            st.warning(f"{EVALUATION_KINDS[kind].capitalize()} not evaluated: {exc}")
            continue
        st.markdown(f"**{out['kind'].capitalize()}** ({describe_evaluation(out)})")
        st.dataframe(pd.DataFrame(out["modes"]).T.round(3).assign(pool=out["pool"]))
        if out.get("hybrid_vs"):
            st.caption(
                "The hybrid against each mode, query by query: the difference and its 95% "
                "interval over resamples of these queries (a caption's photo resampled with all "
                "its captions). A bar across the dotted line is a difference these queries "
                "cannot tell from none."
            )
            st.plotly_chart(hybrid_differences(out["hybrid_vs"]), key=f"hybrid_vs_{kind}")


def maintenance_section(index: Path, busy: bool = False) -> None:
    """Remove the rows whose files are gone (`python -m core index --index DIR --prune`).
    `busy`: a build of the index runs (both buttons wait for it)."""
    from core.search.maintenance import IndexBusyError, prune

    with st.expander("Index maintenance"):
        st.caption(
            "Files deleted since they were indexed still have rows (results show them as "
            "missing). Moved files are followed by `index` (by content hash). Same as "
            f"`python -m core index --index {index} --prune`."
        )
        data = current_data_dir()
        if st.button(
            "Index new and changed files",
            key="index_update",
            disabled=busy or not data.is_dir(),
            help=f"Same as `python -m core index --images {data} --index {index}`; "
            "runs in the background.",
        ):
            start_index_job(data, index)
        if st.button("Remove missing files", key="prune", disabled=busy):
            try:
                res = prune(index)
            except (IndexBusyError, SearchIndexError) as exc:
                st.error(str(exc))
                return
            # prune rewrites index.json: the next run loads a fresh engine (a new stamp)
            st.success(f"Removed {len(res.removed)} of {res.checked} rows (file gone).")


st.title("🔎 Search")
index = resolve_index_dir()
busy = index_job_status(index)
if not meta_path(index).exists():
    build_panel(index)
    st.stop()
try:
    # mid-update the engine reads the table version index.json names (core.search.table)
    engine = load_engine(index)
except (SearchIndexError, OSError, ValueError) as exc:  # missing, half-written, older format
    st.error(one_line(exc))
    st.stop()
st.caption(f"Index `{index}`: {engine.n} images · categories from {engine.category_source}")
st.caption(describe_index(engine.meta))  # the meta the cached engine was loaded with
search_section(engine)
like_section(engine)
upload_section(engine)
evaluation_section(index, engine)
maintenance_section(index, busy)

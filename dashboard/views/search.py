"""Search: find images by a sentence, four ranking modes side by side with the why of every
result, "more like this", image upload (optionally steered by words), and retrieval quality
per mode.

Every query is served by the LanceDB index (core.search.engine): the page loads no vectors,
and says for each query whether the index answered exactly or approximately (ANN). The
engine loads once per process (st.cache_resource), keyed by the index's metadata stamp so a
re-indexed folder is picked up."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from core.search.engine import DEFAULT_MODE, MODES, SearchEngine, SearchResponse
from core.search.query import EXAMPLES, MAX_QUERY_CHARS, QueryError
from core.search.store import IndexError_, meta_path, meta_summary, read_meta
from dashboard.common import cache_dir, current_data_dir, thumbnail

INDEX_ENV = "SCENESEEK_INDEX"
QUERIES_ENV = "SCENESEEK_QUERIES"
QUERY_KEY = "search_query"
LIKE_KEY = "search_like"
COLUMNS = 5
MODE_HELP = {
    "keyword": "the study's method: query keywords matched as whole words against each "
    "image's top ImageNet label and predicted category",
    "category": "query → categories (mapping table + learned word weights) → images by the "
    "classifier's probability of those categories",
    "semantic": "the query's MiniLM embedding against each image's learned embedding and tags",
    "hybrid": "reciprocal-rank fusion of the three",
}
SEARCH_WORDS = {
    "exact": "exact search",
    "approximate": "approximate (ANN) search",
    "full-text": "full-text (BM25) search",
}


def index_dir() -> Path:
    env = os.environ.get(INDEX_ENV)
    return Path(env).expanduser() if env else cache_dir() / "index"


def default_queries() -> Path | None:
    env = os.environ.get(QUERIES_ENV)
    if env:
        return Path(env)
    shipped = Path(__file__).resolve().parents[2] / "tests" / "data" / "queries.csv"
    return shipped if shipped.exists() else None


def stamp(index: Path) -> str:
    """Changes whenever the index is rewritten; an argument of the cached loaders (no leading
    underscore: Streamlit does not hash those)."""
    meta = read_meta(index)
    return f"{meta_path(index).stat().st_mtime_ns}:{meta.get('table_version')}"


@st.cache_resource(show_spinner="Loading the index and models…", max_entries=2)
def load_engine(index: str, version: str) -> SearchEngine:
    return SearchEngine.load(index)


@st.cache_data(show_spinner="Evaluating every mode…", max_entries=4)
def evaluate(index: str, version: str, kind: str, source: str) -> dict:
    from core.search.evaluate import evaluate_captions, evaluate_queries

    engine = load_engine(index, version)
    if kind == "queries":
        return evaluate_queries(engine, source, MODES)
    return evaluate_captions(engine, source or None, MODES)


# --- building ---------------------------------------------------------------------------------


def build_panel(index: Path) -> None:
    from core.search.store import build_index

    data = current_data_dir()
    st.info(
        f"No search index at `{index}` yet. Build one here for `{data}`, or from a terminal:\n\n"
        f"`python -m core index --images {data} --index {index}`\n\n"
        f"(set `{INDEX_ENV}` to use another index folder)."
    )
    if st.button("Build the index", type="primary", disabled=not data.is_dir()):
        bar = st.progress(0.0, text="Indexing…")

        def progress(done: int, total: int) -> None:
            bar.progress(done / max(1, total), text=f"Indexing… {done}/{total}")

        try:
            stats = build_index(data, index, progress=progress)
        except (IndexError_, ValueError, RuntimeError) as exc:
            st.error(str(exc))
            return
        bar.empty()
        st.success(f"Indexed {stats.encoded} images ({stats.images_per_second} per second).")
        st.rerun()


# --- results ----------------------------------------------------------------------------------


def search_words(resp: SearchResponse) -> str:
    """How the index answered, truthfully (the engine reports it per query)."""
    text = SEARCH_WORDS.get(resp.search, resp.search)
    d = resp.search_detail
    if resp.search == "approximate" and d.get("nprobes"):
        text += f" (nprobes {d['nprobes']}, refine ×{d['refine_factor']})"
    return text


def show_response(resp: SearchResponse, key: str) -> None:
    floor = f" · relevance floor {resp.floor:.2f}" if resp.floor is not None else ""
    if resp.keywords or resp.categories:
        st.caption(
            f"keywords: {', '.join(resp.keywords) or '–'} · categories: "
            f"{', '.join(resp.categories) or '–'} · nearest by meaning: "
            + ", ".join(f"{c} {s:.2f}" for c, s in resp.nearest_categories)
            + f" · {len(resp.results)} of {resp.pool} · {resp.seconds * 1000:.0f} ms · "
            + search_words(resp)
            + floor
        )
    else:
        st.caption(
            f"{len(resp.results)} of {resp.pool} · {resp.seconds * 1000:.0f} ms · "
            f"{search_words(resp)}{floor}"
        )
    for note in resp.notes:
        st.info(note)
    cols = st.columns(COLUMNS)
    for r in resp.results:
        with cols[(r.rank - 1) % COLUMNS]:
            st.image(thumbnail(r.path), width="stretch")  # a grey tile when the file is gone
            if getattr(r, "missing", False):
                st.caption("⚠️ file missing (moved or deleted since it was indexed)")
            below = " · *below the relevance floor*" if r.below_floor else ""
            st.markdown(f"**{r.rank}.** {r.score:.3f} · {r.category or '–'}{below}")
            with st.expander("why"):
                for w in r.why:
                    st.markdown(f"- {w}")
                st.caption(", ".join(f"{n} {p:.2f}" for n, p in r.top_labels[:3]))
                if r.caption:
                    st.caption(f"“{r.caption}”")
            if st.button("More like this", key=f"more-{key}-{r.rank}"):
                st.session_state[LIKE_KEY] = r.path


def search_section(engine: SearchEngine) -> None:
    st.markdown("Try one of the study's sentences:")
    cols = st.columns(len(EXAMPLES))
    for i, (col, text) in enumerate(zip(cols, EXAMPLES, strict=True)):
        if col.button(text, key=f"example-{i}"):
            st.session_state[QUERY_KEY] = text
    query = st.text_input(
        "Describe a scene",
        key=QUERY_KEY,
        placeholder="A serene lake surrounded by forest.",
        help="`-word` leaves out images that name it: beach -people",
    )
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    mode = c1.selectbox(
        "Mode",
        MODES,
        index=MODES.index(DEFAULT_MODE),
        help="; ".join(f"{m}: {h}" for m, h in MODE_HELP.items()),
    )
    compare = c2.selectbox("Compare with", ["(none)", *MODES], index=0)
    category = c3.selectbox("Category", ["(all)", *engine.classes])
    k = c4.number_input("Results", 1, 50, 10)
    cat = None if category == "(all)" else category
    if not query:
        return
    if len(query) > MAX_QUERY_CHARS:
        st.warning(
            f"The query is {len(query):,} characters long: only its first "
            f"{MAX_QUERY_CHARS} are used."
        )
    try:
        if compare != "(none)" and compare != mode:
            left, right = st.columns(2)
            with left:
                st.subheader(mode)
                show_response(engine.search(query, mode, int(k), cat), "a")
            with right:
                st.subheader(compare)
                show_response(engine.search(query, compare, int(k), cat), "b")
        else:
            show_response(engine.search(query, mode, int(k), cat), "a")
    except (QueryError, IndexError_) as exc:
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
    queries = default_queries()
    has_captions = any(r.get("captions") for r in engine.meta.get("roots", {}).values())
    st.caption(
        "Category queries: precision@10 and average precision on the test split (relevant = "
        "the image's class folder). Caption queries: each caption of a photo the text mapping "
        "never saw must find its photo among all indexed images (R@k, median rank, MRR; "
        "fitted_share_top10: the share of photos that fitted the mapping among the top 10). "
        "Command: `python -m core "
        f"evaluate-retrieval --index {index} --queries FILE --json`."
    )
    if not st.button("Run the evaluation", key="evaluate"):
        return
    s = stamp(index)
    if queries is not None and "test" in (engine.meta.get("splits") or []):
        try:
            out = evaluate(str(index), s, "queries", str(queries))
            st.markdown(
                f"**Category queries** ({out['n_queries']} from `{queries.name}`, "
                f"pool {out['pool']} test images)"
            )
            st.dataframe(pd.DataFrame(out["modes"]).T.round(3).assign(pool=out["pool"]))
        except ValueError as exc:
            st.warning(f"Category queries not evaluated: {exc}")
    if has_captions:
        try:
            out = evaluate(str(index), s, "captions", "")
            st.markdown(
                f"**Caption queries** ({out['n_queries']} captions of {out['n_photos']} "
                f"photos the mapping never saw, pool {out['pool']} images: all "
                f"indexed; {(out.get('refused') or {}).get('fitted_captions', 0)} "
                "captions of photos that fitted the mapping refused)"
            )
            st.dataframe(pd.DataFrame(out["modes"]).T.round(3).assign(pool=out["pool"]))
        except ValueError as exc:
            st.warning(f"Caption queries not evaluated: {exc}")


def index_status(meta: dict) -> str:
    """The index's size, last build and whether its vector search is exact or approximate."""
    s = meta_summary(meta)
    text = f"{s['rows']:,} rows · last updated {s['updated']} · LanceDB vector index: "
    a = s["ann"]
    if not a:
        return text + (
            f"none, vector search is exact (an ANN index is built from {s['ann_min_rows']:,} rows)"
        )
    cols = ", ".join(a.get("columns") or {}) or "vector"
    return text + (
        f"approximate, {a['type']} on {cols} ({a['metric']}, {a['num_partitions']} partitions, "
        f"nprobes {a.get('nprobes')}, refine ×{a.get('refine_factor')}) built {a['built']} on "
        f"{a['rows_at_build']:,} rows in {a['seconds']} s; {s['rows_since_build']:,} rows "
        "added since"
    )


def maintenance_section(index: Path) -> None:
    """Remove the rows whose files are gone (`python -m core index --index DIR --prune`)."""
    from core.search.maintenance import IndexBusyError, prune

    with st.expander("Index maintenance"):
        st.caption(
            "Files deleted since they were indexed still have rows (results show them as "
            "missing). Moved files are followed by `index` (by content hash). Same as "
            f"`python -m core index --index {index} --prune`."
        )
        if st.button("Remove missing files", key="prune"):
            try:
                res = prune(index)
            except (IndexBusyError, IndexError_) as exc:
                st.error(str(exc))
                return
            st.success(f"Removed {len(res.removed)} of {res.checked} rows (file gone).")
            if res.removed:
                load_engine.clear()  # the cached engine still holds the removed rows


# --- page -------------------------------------------------------------------------------------

st.title("🔎 Search")
index = index_dir()
if not meta_path(index).exists():
    build_panel(index)
    st.stop()
try:
    engine = load_engine(str(index), stamp(index))
except (IndexError_, OSError, ValueError) as exc:  # missing, half-written, older format
    st.error(str(exc))
    st.stop()
st.caption(f"Index `{index}`: {engine.n} images · categories from {engine.category_source}")
st.caption(index_status(engine.meta))  # the meta the cached engine was loaded with
search_section(engine)
like_section(engine)
upload_section(engine)
evaluation_section(index, engine)
maintenance_section(index)

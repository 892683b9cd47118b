"""Caption keywords: TF-IDF, chi-square, PMI, the mapping table, the keyword HMM, categories.

A layout over `core.text.report_on_file` (the whole pipeline, measured; its `.model` is the
keyword model `core.text.fit_keyword_model` fits) and the tabs of dashboard.keywords_tabs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.captions import CaptionFileError, resolve_captions_path, upload_problem
from core.text import Mapping, MappingError, PipelineConfig, report_on_file
from dashboard import keywords_tabs as tabs
from dashboard.common import current_data_dir

CAPTIONS_KEY = "captions_path"


# --- cached computations (the only caching layer) ---------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4)
def analyze_file(path: str, stamp: float, mapping_json: str, sample: int, yake: bool) -> tuple:
    """(captions, report or None): `stamp` (the file's mtime) refreshes the cache."""
    cfg = PipelineConfig(eval_sample=sample, run_yake=yake)
    return report_on_file(path, Mapping.from_json(mapping_json), cfg)


@st.cache_resource(show_spinner=False, max_entries=4)
def analyze_upload(
    digest: str, name: str, _data: bytes, mapping_json: str, sample: int, yake: bool
) -> tuple:
    """(captions, report or None): `digest` (SHA-256 of `_data`) keys the cache."""
    cfg = PipelineConfig(eval_sample=sample, run_yake=yake)
    return report_on_file(_data, Mapping.from_json(mapping_json), cfg, name=name)


# --- inputs -----------------------------------------------------------------------------------


def max_upload_mb() -> int:
    """The one upload limit: the server's (.streamlit/config.toml `maxUploadSize`), which the
    widget enforces; the label and the size check say the same number."""
    return int(st.get_option("server.maxUploadSize"))


def _photos_for_upload() -> tuple[Path | None, str]:
    """An upload has no folder of its own: its photos are looked up next to the data set's
    captions file (Flickr8k's Images/), the file the other source would read."""
    path, why = resolve_captions_path(st.session_state.get(CAPTIONS_KEY), current_data_dir())
    if path is None or not path.is_file():
        return None, (
            "an uploaded file has no folder of its own, and no data set captions file was "
            "found whose Images/ folder could hold its photos (set SCENESEEK_CAPTIONS)"
        )
    return path, f"next to the data set's captions file `{path}` ({why})"


def _choose_source(mapping_json: str, sample: int, yake: bool) -> tuple:
    """(captions, report, (captions file whose Images/ holds the photos or None, why)) for
    the source picked; stops the page when there is nothing to analyse."""
    source = st.radio(
        "Captions", ["Data set's captions file", "Upload a file"], horizontal=True, key="source"
    )
    if source == "Upload a file":
        limit = max_upload_mb()
        up = st.file_uploader(
            f"Captions file (captions.txt, results.csv, Flickr8k.token.txt or one caption per "
            f"line; up to {limit} MB)",
            type=["txt", "csv", "tsv"],
            key="captions_upload",
        )
        if up is None:
            st.info("Upload a captions file to analyse it.")
            st.stop()
        problem = upload_problem(up.size, up.name, limit)
        if problem:
            st.error(problem)
            st.stop()
        data = up.getvalue()
        try:
            with st.spinner("Analysing the upload…", show_time=True):
                digest = hashlib.sha256(data).hexdigest()
                result = analyze_upload(digest, up.name, data, mapping_json, sample, yake)
            return (*result, _photos_for_upload())
        except (CaptionFileError, ValueError) as exc:
            st.error(f"Cannot analyse {up.name}: {exc}")
            st.stop()
    path, why = resolve_captions_path(st.session_state.get(CAPTIONS_KEY), current_data_dir())
    value = st.text_input(
        "Captions file",
        value=str(path or ""),
        help="Default: $SCENESEEK_CAPTIONS, then <data folder>/../flickr8k/captions.txt, "
        "then <data folder>/captions.txt.",
    )
    if value and value != str(path or ""):
        st.session_state[CAPTIONS_KEY] = value
        path, why = Path(value), "chosen here"
    if path is None:
        st.warning(
            "No captions file found. Set SCENESEEK_CAPTIONS, type a path above, or upload a file."
        )
        st.stop()
    st.caption(f"Using `{path}` ({why})")
    try:
        stamp = path.stat().st_mtime if path.exists() else 0.0
        with st.spinner("Analysing captions…", show_time=True):
            result = analyze_file(str(path), stamp, mapping_json, sample, yake)
        return (*result, (path, f"next to the captions file `{path}`"))
    except (CaptionFileError, ValueError) as exc:
        st.error(f"Cannot analyse `{path}`: {exc}")
        st.stop()


st.title("🔤 Caption keywords")
st.caption(
    "Which words matter in a caption file, which go together, which landscape category each "
    "caption is about, and how the keyword methods compare. Reproduce: "
    "`python -m core keywords --captions FILE --json`."
)

try:
    mapping = tabs.current_mapping()
except MappingError as exc:  # a broken saved or $SCENESEEK_MAPPING file: say so, go on
    st.error(f"{exc}. Using the packaged table until this one is mended.")
    st.session_state.pop(tabs.MAPPING_KEY, None)
    mapping = Mapping.default()

with st.expander("Captions source and settings", expanded=True):
    c1, c2 = st.columns(2)
    sample = int(
        c1.number_input("Held-out captions compared", 100, 10_000, 2000, step=100, key="sample")
    )
    use_yake = c2.checkbox("Include YAKE (slower)", value=True, key="use_yake")
    cs, report, photos = _choose_source(mapping.to_json(), sample, use_yake)

if report is None:
    st.error(
        f"No usable captions in this file ({len(cs.malformed)} malformed rows). "
        + " ".join(cs.notes)
    )
    if cs.malformed:
        st.dataframe(pd.DataFrame(cs.summary()["malformed"]), hide_index=True, width="stretch")
    st.stop()

s = report.summary
m1, m2, m3, m4 = st.columns(4)
m1.metric("Captions", s["n_captions"])
m2.metric("Images", s["n_images"])
m3.metric("Malformed rows", s["n_malformed"])
m4.metric("Seconds", f"{sum(report.seconds.values()):.1f}")
st.caption(
    f"Format **{s['format']}** ({s['format_reason']}) · encoding {s['encoding']} · "
    f"{report.preprocessing}"
)
for note in s["notes"]:
    st.warning(note)

overview, words, pmi, table, hmm, categories, classifier = st.tabs(tabs.TABS)
with overview:
    tabs.overview_tab(report)
with words:
    tabs.words_tab(report)
with pmi:
    tabs.pmi_tab(report)
with table:
    tabs.mapping_tab(report, mapping)
with hmm:
    tabs.hmm_tab(report, mapping, cs.texts)
with categories:
    tabs.categories_tab(report, cs, *photos)
with classifier:
    tabs.classifier_tab(report)

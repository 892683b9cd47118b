"""Caption keywords: TF-IDF, chi-square, PMI, the mapping table, the keyword HMM, categories."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.captions import (
    CaptionFileError,
    CaptionSet,
    photo_path,
    read_captions,
    resolve_captions_path,
    upload_problem,
)
from core.text import KeywordReport, Mapping, MappingError, PipelineConfig, analyze_text
from core.text.mapping import mapping_source, user_mapping_path
from core.text.pipeline import find_split_file, run_pipeline
from dashboard.common import current_data_dir, thumbnail
from dashboard.plots_text import category_bar, highlight, method_bar, stage_bar, wordcloud_array

MAX_UPLOAD_MB = 50
CAPTIONS_KEY = "captions_path"
MAPPING_KEY = "mapping_json"  # the table in use (JSON text), once edited in this session
EDITOR_KEY = "mapping_editor"
PER_PAGE = 12


# --- cached computations (the only caching layer) ---------------------------------------------


def _analyse(cs: CaptionSet, mapping_json: str, split: set[str] | None, cfg, read_s: float):
    """(captions, report); no report when the file holds no usable caption."""
    if not cs.captions:
        return cs, None
    return cs, run_pipeline(cs, Mapping.from_json(mapping_json), cfg, split, None, read_s)


@st.cache_resource(show_spinner=False, max_entries=4)
def analyse_file(path: str, stamp: float, mapping_json: str, sample: int, yake: bool) -> tuple:
    start = time.perf_counter()
    cs = read_captions(path)
    read_s = time.perf_counter() - start
    cfg = PipelineConfig(eval_sample=sample, run_yake=yake)
    return _analyse(cs, mapping_json, find_split_file(path), cfg, read_s)


@st.cache_resource(show_spinner=False, max_entries=4)
def analyse_upload(
    digest: str, name: str, _data: bytes, mapping_json: str, sample: int, yake: bool
) -> tuple:
    start = time.perf_counter()
    cs = read_captions(_data, name=name)
    read_s = time.perf_counter() - start
    cfg = PipelineConfig(eval_sample=sample, run_yake=yake)
    return _analyse(cs, mapping_json, None, cfg, read_s)


@st.cache_data(show_spinner=False, max_entries=16)
def cloud(freqs: tuple[tuple[str, float], ...]):
    return wordcloud_array(dict(freqs))


@st.cache_resource(show_spinner=False)
def char_demo(texts: tuple[str, ...]):
    from core.text.hmm import CharHMM

    return CharHMM.fit(list(texts), n_states=8, n_iter=10, max_chars=50_000)


# --- inputs -----------------------------------------------------------------------------------


def current_mapping() -> Mapping:
    text = st.session_state.get(MAPPING_KEY)
    if text:
        return Mapping.from_json(text, source="edited in this session")
    return Mapping.load()


st.title("🔤 Caption keywords")
st.caption(
    "Which words matter in a caption file, which go together, which landscape category each "
    "caption is about, and how the keyword methods compare. Reproduce: "
    "`python -m core keywords --captions FILE --json`."
)

try:
    mapping = current_mapping()
except MappingError as exc:
    st.error(f"Mapping table: {exc}")
    st.session_state.pop(MAPPING_KEY, None)
    mapping = Mapping.load()

with st.expander("Captions source and settings", expanded=True):
    source = st.radio(
        "Captions", ["Data set's captions file", "Upload a file"], horizontal=True, key="source"
    )
    c1, c2 = st.columns(2)
    sample = int(
        c1.number_input("Held-out captions compared", 100, 10_000, 2000, step=100, key="sample")
    )
    use_yake = c2.checkbox("Include YAKE (slower)", value=True, key="use_yake")
    cs: CaptionSet | None = None
    report: KeywordReport | None = None
    captions_file: Path | None = None
    if source == "Upload a file":
        up = st.file_uploader(
            f"Captions file (captions.txt, results.csv, Flickr8k.token.txt or one caption per "
            f"line; up to {MAX_UPLOAD_MB} MB)",
            type=["txt", "csv", "tsv"],
            key="captions_upload",
        )
        if up is None:
            st.info("Upload a captions file to analyse it.")
            st.stop()
        problem = upload_problem(up.size, up.name, MAX_UPLOAD_MB)
        if problem:
            st.error(problem)
            st.stop()
        data = up.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        try:
            with st.spinner("Analysing the upload…"):
                cs, report = analyse_upload(
                    digest, up.name, data, mapping.to_json(), sample, use_yake
                )
        except (CaptionFileError, ValueError) as exc:
            st.error(f"Cannot analyse {up.name}: {exc}")
            st.stop()
    else:
        default, why = resolve_captions_path(st.session_state.get(CAPTIONS_KEY), current_data_dir())
        value = st.text_input(
            "Captions file",
            value=str(default or ""),
            help="Default: $SCENESEEK_CAPTIONS, then <data folder>/../flickr8k/captions.txt, "
            "then <data folder>/captions.txt.",
        )
        if value and value != str(default or ""):
            st.session_state[CAPTIONS_KEY] = value
            default, why = Path(value), "chosen here"
        if default is None:
            st.warning(
                "No captions file found. Set SCENESEEK_CAPTIONS, type a path above, or upload "
                "a file."
            )
            st.stop()
        st.caption(f"Using `{default}` ({why})")
        captions_file = default
        try:
            stamp = default.stat().st_mtime if default.exists() else 0.0
            with st.spinner("Analysing captions… (the whole Flickr8k file takes a few seconds)"):
                cs, report = analyse_file(str(default), stamp, mapping.to_json(), sample, use_yake)
        except (CaptionFileError, ValueError) as exc:
            st.error(f"Cannot analyse `{default}`: {exc}")
            st.stop()

if report is None or not cs.captions:
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

tabs = st.tabs(
    ["Overview", "Words", "Word pairs (PMI)", "Mapping table", "HMM", "Categories", "Classifier"]
)

with tabs[0]:
    st.plotly_chart(category_bar(report.category_counts, report.n_uncategorised), width="stretch")
    left, right = st.columns(2)
    with left:
        st.markdown("**Seconds per stage**")
        st.plotly_chart(stage_bar(report.seconds), width="stretch")
    with right:
        st.markdown(f"**Split** — {report.split['how']}")
        st.write(
            f"{report.split['train_captions']} training captions, "
            f"{report.split['heldout_captions']} held out."
        )
        if report.split.get("note"):
            st.info(report.split["note"])
        if s["n_malformed"]:
            st.markdown(f"**Malformed rows** ({s['n_malformed']}, first 50)")
            st.dataframe(pd.DataFrame(s["malformed"]), hide_index=True, width="stretch")

with tabs[1]:
    left, right = st.columns(2)
    chi_top = report.chi2.top_overall[:50]
    with left:
        st.markdown("**Top 50 chi-square words** (word vs its strongest category)")
        if chi_top:
            st.image(cloud(tuple((r["word"], r["chi2"]) for r in chi_top)), width="stretch")
        else:
            st.info("No word is associated with a category in this file.")
    with right:
        st.markdown("**Top 50 TF-IDF words** (mean weight over captions)")
        st.image(cloud(tuple(report.top_tfidf[:50])), width="stretch")
    cat = st.selectbox("Chi-square ranking for category", report.categories, key="chi_cat")
    rows = report.chi2.top_per_category.get(cat, [])
    st.caption(
        "Labels come from the mapping table, so its own words (in_mapping) top their category "
        "by construction; the others are what the table does not yet know."
    )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

with tabs[2]:
    st.markdown("**Bigram collocations** (frequency floor 5; PMI in bits; NPMI in [-1, 1])")
    st.dataframe(pd.DataFrame([vars(b) for b in report.top_pmi]), hide_index=True, width="stretch")
    cat2 = st.selectbox("Word-category PMI for", report.categories, key="pmi_cat")
    st.dataframe(
        pd.DataFrame(report.word_category_pmi.get(cat2, [])), hide_index=True, width="stretch"
    )


def _apply_editor() -> None:
    try:
        m = Mapping.from_json(st.session_state[EDITOR_KEY])
    except MappingError as exc:
        st.session_state["mapping_error"] = str(exc)
        return
    st.session_state.pop("mapping_error", None)
    st.session_state[MAPPING_KEY] = m.to_json()


def _accept_suggestions() -> None:
    base = current_mapping()
    adds = {c: st.session_state.get(f"sugg_{c}", []) for c in base.names}
    new = base.with_words({c: ws for c, ws in adds.items() if ws})
    st.session_state[MAPPING_KEY] = new.to_json()
    st.session_state[EDITOR_KEY] = new.to_json()
    for c in base.names:
        st.session_state[f"sugg_{c}"] = []


def _reset_mapping() -> None:
    st.session_state[EDITOR_KEY] = Mapping.default().to_json()
    st.session_state[MAPPING_KEY] = Mapping.default().to_json()


with tabs[3]:
    st.caption(
        f"In use: {mapping.source} ({mapping_source()}). Words match with plural and singular "
        "forms (trees ↔ tree) except those under `exact`. Edit, apply (re-runs the analysis), "
        f"then save to `{user_mapping_path()}`, which later runs and the CLI pick up."
    )
    if EDITOR_KEY not in st.session_state:
        st.session_state[EDITOR_KEY] = mapping.to_json()
    st.text_area("Mapping table (JSON)", key=EDITOR_KEY, height=320)
    b1, b2, b3 = st.columns(3)
    b1.button("Apply", on_click=_apply_editor, key="apply_mapping")
    if b2.button("Save the applied table", key="save_mapping"):
        try:
            saved = mapping.save(user_mapping_path())
            st.success(f"Saved to `{saved}`.")
        except (MappingError, OSError) as exc:
            st.error(f"Not saved: {exc}")
    b3.button("Reset to the study's table", on_click=_reset_mapping, key="reset_mapping")
    if st.session_state.get("mapping_error"):
        st.error(f"Not applied: {st.session_state['mapping_error']}")
    st.markdown("**Suggested keywords** (from chi-square and PMI; pick and accept)")
    for c in mapping.names:
        sugg = report.suggestions.get(c, [])
        options = [r["word"] for r in sugg]
        st.multiselect(
            f"{c} (now: {', '.join(mapping.categories[c])})",
            options,
            key=f"sugg_{c}",
            help="; ".join(f"{r['word']}: {r['why']}" for r in sugg),
        )
    st.button("Accept selected suggestions", on_click=_accept_suggestions, key="accept_sugg")

with tabs[4]:
    st.markdown(
        "**Keyword HMM**: two hidden states (keyword / other) over words, seeded from the "
        "training split's table words and TF-IDF, trained with Baum-Welch, decoded with Viterbi."
    )
    sentence = st.text_input(
        "Type a sentence", "A serene lake surrounded by forest.", key="hmm_sentence"
    )
    a = analyze_text(sentence, mapping, report.model)
    st.markdown(highlight(sentence, set(a.tagged), set(mapping.forms())))
    st.caption("green: table word · orange: tagged by the HMM only")
    st.write(
        f"Keywords: {', '.join(a.keywords) or '(none)'} · categories: "
        f"{', '.join(a.categories) or '(none)'}"
    )
    for line in a.why:
        st.caption(line)
    comp = report.comparison
    if comp:
        st.markdown(
            f"**Measured on {comp['sample']}** ({comp['n_with_table_word']} contain a table "
            "word). Truth: the caption's table words (with inflections)."
        )
        methods = comp["methods"]
        st.plotly_chart(method_bar(methods), width="stretch")
        st.dataframe(pd.DataFrame(methods).T, width="stretch")
        unseen = comp.get("unseen_words") or {}
        if unseen:
            st.markdown(
                "**Harder test**: an HMM seeded with every other table word only, scored on the "
                f"hidden words ({', '.join(unseen['hidden_words'])}; "
                f"{unseen['n_hidden_in_sample']} occurrences in the sample)."
            )
            st.dataframe(pd.DataFrame(unseen["methods"]).T, width="stretch")
        st.caption(f"HMM details: {report.hmm}")
    else:
        st.info("Too few captions to hold some out; nothing measured.")
    st.markdown("**Demo: the study's character-level HMM** (ASCII codes in, text out)")
    st.caption("It generates caption-like character strings; it never found keywords.")
    if st.button("Generate text", key="char_demo"):
        demo = char_demo(tuple(cs.texts[:2000]))
        st.code(demo.generate(160, random_state=int(time.time()) % 1000))

with tabs[5]:
    cat3 = st.selectbox("Category", report.categories, key="cat_view")
    j = report.categories.index(cat3)
    only_photos = st.checkbox("Only captions whose photo is here", key="with_photo")
    idx = [i for i in range(len(cs.captions)) if report.labels[i, j]]
    if only_photos:
        idx = [i for i in idx if photo_path(captions_file, cs.captions[i].image)]
    n_pages = max(1, -(-len(idx) // PER_PAGE))
    page = st.number_input("Page", 1, n_pages, 1, key="cat_page")
    chunk = idx[(page - 1) * PER_PAGE : page * PER_PAGE]
    st.caption(f"{len(idx)} captions labelled {cat3} · page {page} of {n_pages}")
    cols = st.columns(4)
    for k, i in enumerate(chunk):
        c = cs.captions[i]
        with cols[k % 4]:
            photo = photo_path(captions_file, c.image)
            if photo is not None:
                st.image(thumbnail(photo), width="stretch")
            top = ", ".join(report.caption_keywords(i))
            st.caption(f"{c.text}  \nTF-IDF: *{top}* · `{c.image or f'line {c.line}'}`")

with tabs[6]:
    clf = report.classifier
    if clf and clf.get("n"):
        st.markdown(
            f"**Caption → categories** on {clf['n']} held-out captions whose category the table "
            "determines (exactly one)."
        )
        k1, k2, k3 = st.columns(3)
        k1.metric("With the table", f"{clf['with_table']:.1%}")
        k2.metric("Context only (table words removed)", f"{clf['context_only']:.1%}")
        k3.metric("Majority-class baseline", f"{clf['majority_baseline']:.1%}")
        st.dataframe(pd.DataFrame(clf["per_category"]).T, width="stretch")
        st.markdown("**Learned word weights** (context words, table words removed)")
        st.dataframe(
            pd.DataFrame(
                {c: [f"{w} ({v:.1f})" for w, v in ws] for c, ws in clf["word_weights"].items()}
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("Too few captions to train and measure the classifier.")

"""The Keywords page's seven tabs, one render function each; dashboard/views/keywords.py lays
them out. What they show is computed by core.text (`KeywordReport`, `analyze_text`), figures
and tables by dashboard.plots_text. The mapping table in use lives in the session state until
it is saved."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data.captions import CaptionSet, photo_path
from core.text import KeywordReport, Mapping, MappingError, analyze_text
from core.text.categories import mapping_source, user_mapping_path
from core.text.hmm import CharHMM
from dashboard import plots_text as pt
from dashboard.common import thumbnail

MAPPING_KEY = "mapping_json"  # the table in use (JSON text), once edited in this session
EDITOR_KEY = "mapping_editor"  # the editor widget
DRAFT_KEY = "mapping_draft"  # the editor's text, kept apart from the widget (see mapping_tab)
PER_PAGE = 12
WIDE = {"hide_index": True, "width": "stretch"}
TABS = ["Overview", "Words", "Word pairs (PMI)", "Mapping table", "HMM", "Categories", "Classifier"]


@st.cache_data(show_spinner=False, max_entries=16)
def cloud(freqs: tuple[tuple[str, float], ...]):
    return pt.wordcloud_array(dict(freqs))


@st.cache_resource(show_spinner=False)
def char_demo(texts: tuple[str, ...]) -> CharHMM:
    return CharHMM.fit(list(texts), n_states=8, n_iter=10, max_chars=50_000)


# --- the mapping table in use (session state) ---------------------------------------------------


def current_mapping() -> Mapping:
    text = st.session_state.get(MAPPING_KEY)
    if text:
        return Mapping.from_json(text, source="edited in this session")
    return Mapping.load()


def use_mapping(m: Mapping, editor: bool = False) -> None:
    """Make `m` the table in use (and the editor's text)."""
    st.session_state[MAPPING_KEY] = m.to_json()
    if editor:
        st.session_state[DRAFT_KEY] = m.to_json()


def _keep_draft() -> None:
    st.session_state[DRAFT_KEY] = st.session_state[EDITOR_KEY]


def _apply_editor() -> None:
    _keep_draft()
    try:
        m = Mapping.from_json(st.session_state[DRAFT_KEY], source="edited in this session")
    except MappingError as exc:
        st.session_state["mapping_error"] = str(exc)
        return
    st.session_state.pop("mapping_error", None)
    use_mapping(m)


def _accept_suggestions() -> None:
    base = current_mapping()
    adds = {c: st.session_state.get(f"sugg_{c}", []) for c in base.names}
    use_mapping(base.with_words({c: ws for c, ws in adds.items() if ws}), editor=True)
    for c in base.names:
        st.session_state[f"sugg_{c}"] = []


# --- tabs ---------------------------------------------------------------------------------------


def overview_tab(report: KeywordReport) -> None:
    s = report.summary
    st.plotly_chart(
        pt.category_bar(report.category_counts, report.n_uncategorised), width="stretch"
    )
    left, right = st.columns(2)
    with left:
        st.markdown("**Seconds per stage**")
        st.plotly_chart(pt.stage_bar(report.seconds), width="stretch")
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
            st.dataframe(pd.DataFrame(s["malformed"]), **WIDE)


def words_tab(report: KeywordReport) -> None:
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
    st.caption(
        "Labels come from the mapping table, so its own words (in_mapping) top their category "
        "by construction; the others are what the table does not yet know."
    )
    st.dataframe(
        pd.DataFrame(report.chi2.top_per_category.get(cat, [])),
        column_config=pt.P_VALUE_COLUMNS,
        **WIDE,
    )


def pmi_tab(report: KeywordReport) -> None:
    st.markdown("**Bigram collocations** (frequency floor 5; PMI in bits; NPMI in [-1, 1])")
    st.dataframe(pd.DataFrame([vars(b) for b in report.top_pmi]), **WIDE)
    cat = st.selectbox("Word-category PMI for", report.categories, key="pmi_cat")
    st.dataframe(pd.DataFrame(report.word_category_pmi.get(cat, [])), **WIDE)


def mapping_tab(report: KeywordReport, mapping: Mapping) -> None:
    st.caption(
        f"In use: {mapping.source} ({mapping_source()}). Words match with plural and singular "
        "forms (trees ↔ tree) except those under `exact`. Edit, apply (re-runs the analysis), "
        f"then save to `{user_mapping_path()}`, which later runs and the CLI pick up."
    )
    # The browser forgets a widget's text while the widget is not drawn (an upload run stops
    # before the tabs), and Streamlit resends only a value set through the session state: so
    # the text lives in DRAFT_KEY and is set on the widget on every run.
    st.session_state[EDITOR_KEY] = st.session_state.get(DRAFT_KEY) or mapping.to_json()
    st.text_area("Mapping table (JSON)", key=EDITOR_KEY, height=320, on_change=_keep_draft)
    b1, b2, b3 = st.columns(3)
    b1.button("Apply", on_click=_apply_editor, key="apply_mapping")
    if b2.button("Save the applied table", key="save_mapping"):
        try:
            saved = mapping.save(user_mapping_path())
            st.success(f"Saved to `{saved}`.")
        except (MappingError, OSError) as exc:
            st.error(f"Not saved: {exc}")
    b3.button(
        "Reset to the study's table",
        on_click=use_mapping,
        args=(Mapping.default(), True),
        key="reset_mapping",
    )
    if st.session_state.get("mapping_error"):
        st.error(f"Not applied: {st.session_state['mapping_error']}")
    st.markdown("**Suggested keywords** (from chi-square and PMI; pick and accept)")
    for c in mapping.names:
        sugg = report.suggestions.get(c, [])
        st.multiselect(
            f"{c} (now: {', '.join(mapping.categories[c])})",
            [r["word"] for r in sugg],
            key=f"sugg_{c}",
            help="; ".join(f"{r['word']}: {r['why']}" for r in sugg),
        )
    st.button("Accept selected suggestions", on_click=_accept_suggestions, key="accept_sugg")


def hmm_tab(report: KeywordReport, mapping: Mapping, texts: Sequence[str]) -> None:
    st.markdown(
        "**Keyword HMM**: two hidden states (keyword / other) over words, seeded from the "
        "training split's table words and TF-IDF, trained with Baum-Welch, decoded with Viterbi."
    )
    sentence = st.text_input(
        "Type a sentence", "A serene lake surrounded by forest.", key="hmm_sentence"
    )
    a = analyze_text(sentence, mapping, report.model)
    st.markdown(pt.highlight(sentence, set(a.tagged), set(mapping.forms())))
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
        st.plotly_chart(pt.method_bar(comp["methods"]), width="stretch")
        st.dataframe(pd.DataFrame(comp["methods"]).T, width="stretch")
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
        demo = char_demo(tuple(texts[:2000]))
        st.code(demo.generate(160, random_state=int(time.time()) % 1000))


def categories_tab(
    report: KeywordReport, cs: CaptionSet, captions_file: Path | None, photos_why: str
) -> None:
    """`captions_file`: the file whose `Images/` folder holds the photos (for an upload, the
    data set's captions file); `photos_why` says where that is, or why there is none."""
    cat = st.selectbox("Category", report.categories, key="cat_view")
    idx = report.captions_labelled(cat)
    folder = Path(captions_file).parent / "Images" if captions_file else None
    if folder is not None and folder.is_dir():
        st.caption(f"Photos are looked up in `{folder}`, {photos_why}.")
    else:
        st.caption(f"No photos to show: {photos_why if folder is None else f'no {folder}'}.")
    if st.checkbox("Only captions whose photo is here", key="with_photo"):
        n_all = len(idx)
        idx = [i for i in idx if photo_path(captions_file, cs.captions[i].image)]
        if n_all and not idx:
            st.info(
                f"None of the {n_all} captions labelled {cat} has its photo in "
                f"{f'`{folder}`' if folder else 'a photo folder'}."
            )
    n_pages = max(1, -(-len(idx) // PER_PAGE))
    page = st.number_input("Page", 1, n_pages, 1, key="cat_page")
    chunk = idx[(page - 1) * PER_PAGE : page * PER_PAGE]
    st.caption(f"{len(idx)} captions labelled {cat} · page {page} of {n_pages}")
    cols = st.columns(4)
    for k, i in enumerate(chunk):
        c = cs.captions[i]
        with cols[k % 4]:
            photo = photo_path(captions_file, c.image)
            if photo is not None:
                st.image(thumbnail(photo), width="stretch")
            top = ", ".join(report.caption_keywords(i))
            st.caption(f"{c.text}  \nTF-IDF: *{top}* · `{c.image or f'line {c.line}'}`")


def classifier_tab(report: KeywordReport) -> None:
    clf = report.classifier
    if not (clf and clf.get("n")):
        st.info("Too few captions to train and measure the classifier.")
        return
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
        **WIDE,
    )

"""The whole keyword pipeline on a caption set, with seconds per stage.

Stages: preprocess, tfidf, labels (mapping table), chi2, pmi, hmm_fit, hmm_decode (all
held-out captions), classifier, compare (HMM vs TF-IDF top-k vs YAKE on a fixed held-out
sample). Chi-square, PMI and corpus TF-IDF describe the whole file; everything that is
measured (HMM, classifier, comparison) is fitted on the training split and scored on the
held-out split, split by image so the five captions of one photo never straddle it.

The fit itself is core.text.model's (`fit_split`, the code `fit_keyword_model` runs), so
`KeywordReport.model` is the model the CLI and the search index fit; this module adds the
rankings and the measures. `report_on_file` reads a captions file and runs it all.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.captions import CaptionSet, read_captions
from core.metrics import StageTimer
from core.text.categories import Mapping
from core.text.chi2 import Chi2Result, rank_chi2
from core.text.classify import classifier_accuracy
from core.text.compare import prf, restrict, tagged_sets, yake_keywords
from core.text.hmm import HMMConfig, fit_keyword_hmm
from core.text.model import (
    HELDOUT_FRACTION,
    KeywordModel,
    SplitFit,
    find_split_file,
    fit_split,
    heldout_mask,
    tokenize_captions,
)
from core.text.pmi import BigramScore, bigram_pmi, word_category_pmi
from core.text.preprocess import Preprocessor
from core.text.tfidf import TfidfResult, fit_tfidf, top_k_per_row

log = logging.getLogger(__name__)

# Stage order in `KeywordReport.seconds` (the order the pipeline first ran them in).
STAGES = (
    "read",
    "preprocess",
    "tfidf",
    "labels",
    "chi2",
    "pmi",
    "hmm_fit",
    "hmm_decode",
    "compare",
    "classifier",
)


@dataclass
class PipelineConfig:
    top: int = 500  # chi-square / TF-IDF words kept overall
    top_n: int = 25  # chi-square words per category
    chi2_min_df: int = 2
    pmi_min_freq: int = 5
    pmi_top: int = 100
    heldout_fraction: float = HELDOUT_FRACTION  # used when no split file names the held-out images
    eval_sample: int = 2000  # held-out captions for the HMM / TF-IDF / YAKE comparison
    eval_k: tuple[int, ...] = (1, 2)  # TF-IDF and YAKE tag their top-k words
    run_yake: bool = True
    run_classifier: bool = True
    n_suggestions: int = 10
    seed: int = 0
    hmm: HMMConfig = field(default_factory=HMMConfig)


@dataclass
class KeywordReport:
    summary: dict  # reader facts (format, counts, malformed rows, notes)
    preprocessing: str
    categories: list[str]
    category_counts: dict[str, int]
    n_uncategorised: int
    top_tfidf: list[tuple[str, float]]
    chi2: Chi2Result
    top_pmi: list[BigramScore]
    word_category_pmi: dict[str, list[dict]]
    suggestions: dict[str, list[dict]]
    split: dict
    hmm: dict
    comparison: dict
    classifier: dict
    seconds: dict[str, float]
    # Per caption, for the app's views.
    tokens: list[list[str]] = field(default_factory=list, repr=False)
    captions_meta: list[dict] = field(default_factory=list, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    model: KeywordModel | None = field(default=None, repr=False)
    tfidf: TfidfResult | None = field(default=None, repr=False)

    def caption_keywords(self, i: int, k: int = 3) -> list[str]:
        """The k highest TF-IDF words of caption i (corpus-wide IDF)."""
        if self.tfidf is None:
            return []
        return top_k_per_row(self.tfidf.matrix[i], self.tfidf.vocabulary, k)[0]

    def captions_labelled(self, category: str) -> list[int]:
        """Indices of the captions the mapping table labels `category`."""
        if self.labels is None:
            return []
        return np.flatnonzero(self.labels[:, self.categories.index(category)]).tolist()

    def to_json(self) -> dict:
        """The CLI's --json object."""
        return {
            **{k: self.summary[k] for k in ("source", "format", "format_reason", "encoding")},
            "n_captions": self.summary["n_captions"],
            "n_images": self.summary["n_images"],
            "n_malformed": self.summary["n_malformed"],
            "malformed": self.summary["malformed"],
            "notes": self.summary["notes"],
            "preprocessing": self.preprocessing,
            "category_counts": self.category_counts,
            "n_uncategorised": self.n_uncategorised,
            "top_tfidf": [{"word": w, "score": s} for w, s in self.top_tfidf],
            "caption_examples": [
                {
                    "line": self.captions_meta[i]["line"],
                    "caption": self.captions_meta[i]["text"],
                    "top_tfidf": self.caption_keywords(i),
                    "categories": [
                        c
                        for j, c in enumerate(self.categories)
                        if self.labels is not None and self.labels[i, j]
                    ],
                }
                for i in range(min(5, len(self.captions_meta)))
            ],
            "top_chi2": self.chi2.top_per_category,
            "top_chi2_overall": self.chi2.top_overall,
            "top_pmi": [vars(b) for b in self.top_pmi],
            "word_category_pmi": self.word_category_pmi,
            "suggestions": self.suggestions,
            "split": self.split,
            "hmm": self.hmm,
            "comparison": self.comparison,
            "classifier": self.classifier,
            "seconds": self.seconds,
        }


def suggest_keywords(
    chi: Chi2Result,
    bigrams: Sequence[BigramScore],
    mapping: Mapping,
    n: int = 10,
    min_joint: int = 3,
) -> dict[str, list[dict]]:
    """New words per category: strongest chi-square association among words the table does
    not know, then PMI bigram partners of table words."""
    forms = mapping.forms()
    stop = set(forms)
    out: dict[str, list[dict]] = {}
    for j, cat in enumerate(chi.categories):
        rows: list[dict] = []
        order = np.argsort(-chi.chi2[:, j], kind="stable")
        for i in order:
            if len(rows) >= n or chi.chi2[i, j] <= 0:
                break
            w = str(chi.vocabulary[i])
            if w in stop or chi.joint[i, j] < min_joint:
                continue
            rows.append(
                {
                    "word": w,
                    "source": "chi2",
                    "score": float(chi.chi2[i, j]),
                    "why": f"in {int(chi.joint[i, j])} of {int(chi.doc_freq[i])} captions "
                    f"labelled {cat}",
                }
            )
        for b in bigrams:
            for kw, other in ((b.w1, b.w2), (b.w2, b.w1)):
                if (
                    cat in forms.get(kw, ())
                    and other not in stop
                    and other not in {r["word"] for r in rows}
                ):
                    rows.append(
                        {
                            "word": other,
                            "source": "pmi",
                            "score": b.pmi,
                            "why": f"bigram '{b.w1} {b.w2}' ({b.count}x, PMI {b.pmi:.2f})",
                        }
                    )
        out[cat] = rows
    return out


def run_pipeline(
    caption_set: CaptionSet,
    mapping: Mapping,
    config: PipelineConfig | None = None,
    heldout_images: set[str] | None = None,
    prep: Preprocessor | None = None,
    read_seconds: float | None = None,
) -> KeywordReport:
    """Rankings (TF-IDF, chi-square, PMI, suggestions), the keyword model fitted on the
    training split and its measures on the held-out one. ValueError when the captions hold
    no content word."""
    cfg = config or PipelineConfig()
    timer = StageTimer()
    if read_seconds is not None:
        timer.seconds["read"] = read_seconds
    with timer("preprocess"):
        prep = prep or Preprocessor.default()
        tokens = tokenize_captions(caption_set, prep)
    with timer("tfidf"):
        tfidf: TfidfResult = fit_tfidf(tokens, top=cfg.top)
    with timer("labels"):
        labels = mapping.label_matrix(tokens)
        cats = mapping.names
        counts = {c: int(labels[:, j].sum()) for j, c in enumerate(cats)}
    with timer("chi2"):
        forms = set(mapping.forms())
        chi = rank_chi2(tokens, labels, cats, forms, cfg.top, cfg.top_n, cfg.chi2_min_df)
    with timer("pmi"):
        bigrams = bigram_pmi(tokens, cfg.pmi_min_freq, cfg.pmi_top)
        wc = word_category_pmi(chi.joint, chi.doc_freq, labels)
        wc_top = _top_word_category(wc, chi, cats, cfg.top_n)
        suggestions = suggest_keywords(chi, bigrams, mapping, cfg.n_suggestions)

    held, how = heldout_mask(caption_set, heldout_images, cfg.heldout_fraction)
    fit = fit_split(tokens, held, prep, mapping, cfg.hmm, cfg.run_classifier, timer)
    model, hmm, test_idx, test_tok = fit.model, fit.model.hmm, fit.test_idx, fit.test_tokens
    split = {"how": how, "train_captions": len(fit.train_idx), "heldout_captions": len(test_idx)}
    if fit.note:
        split["note"] = fit.note
    hmm_out: dict = {}
    comparison: dict = {}
    classifier_out: dict = {}
    if hmm is not None:
        with timer("hmm_decode"):
            truth = [{t for t in toks if t in forms} for toks in test_tok]
            full = prf(truth, tagged_sets(test_tok, fit.test_tags))
        hmm_out = {**vars(full), "n_heldout": len(test_idx), **hmm.info}
        with timer("compare"):
            comparison = _compare(mapping, fit, caption_set, truth, cfg)
        if fit.classifier_note:
            classifier_out = {"n": 0, "note": fit.classifier_note}
        elif model.classifier is not None:
            with timer("classifier"):
                classifier_out = classifier_accuracy(model.classifier, test_tok)
                classifier_out["word_weights"] = model.classifier.word_weights(10)
    if not (len(fit.train_idx) and len(test_idx)):
        split["note"] = "too few captions for a training and a held-out split: nothing measured"
    return KeywordReport(
        summary=caption_set.summary(),
        preprocessing=prep.describe(),
        categories=cats,
        category_counts=counts,
        n_uncategorised=int((labels.sum(axis=1) == 0).sum()),
        top_tfidf=tfidf.top,
        chi2=chi,
        top_pmi=bigrams,
        word_category_pmi=wc_top,
        suggestions=suggestions,
        split=split,
        hmm=hmm_out,
        comparison=comparison,
        classifier=classifier_out,
        seconds={k: round(timer.seconds[k], 4) for k in STAGES if k in timer.seconds},
        tokens=tokens,
        captions_meta=[{"line": c.line, "text": c.text} for c in caption_set.captions[:5]],
        labels=labels,
        model=model,
        tfidf=tfidf,
    )


def report_on_file(
    source: str | Path | bytes,
    mapping: Mapping,
    config: PipelineConfig | None = None,
    name: str | None = None,
) -> tuple[CaptionSet, KeywordReport | None]:
    """Read a captions file (a path, or an upload's bytes and its `name`) and run the pipeline
    on it: the held-out images from the split file beside a path, the reading time as the
    `read` stage. No report when the file holds no usable caption (the caption set says why).
    Raises CaptionFileError for an unreadable file, ValueError for captions without content
    words."""
    start = time.perf_counter()
    cs = read_captions(source, name=name)
    read_s = time.perf_counter() - start
    if not cs.captions:
        return cs, None
    split = None if isinstance(source, bytes) else find_split_file(source)
    return cs, run_pipeline(cs, mapping, config, split, read_seconds=read_s)


def _top_word_category(
    wc: np.ndarray, chi: Chi2Result, cats: list[str], n: int
) -> dict[str, list[dict]]:
    out = {}
    for j, c in enumerate(cats):
        col = np.where(np.isnan(wc[:, j]), -np.inf, wc[:, j])
        order = np.argsort(-col, kind="stable")[:n]
        out[c] = [
            {
                "word": str(chi.vocabulary[i]),
                "pmi": float(wc[i, j]),
                "with_category": int(chi.joint[i, j]),
            }
            for i in order
            if np.isfinite(col[i])
        ]
    return out


def _compare(
    mapping: Mapping,
    fit: SplitFit,
    caption_set: CaptionSet,
    truth: list[set[str]],
    cfg: PipelineConfig,
) -> dict:
    """HMM (seeded only and after Baum-Welch) vs TF-IDF top-k vs YAKE top-k on one fixed
    random sample of held-out captions."""
    hmm, train_tfidf = fit.model.hmm, fit.train_tfidf
    test_idx, test_tok = fit.test_idx, fit.test_tokens
    rng = random.Random(cfg.seed)
    pick = sorted(rng.sample(range(len(test_idx)), min(cfg.eval_sample, len(test_idx))))
    toks = [test_tok[i] for i in pick]
    true = [truth[i] for i in pick]
    texts = [caption_set.captions[test_idx[i]].text for i in pick]
    methods: dict[str, dict] = {
        "hmm": vars(prf(true, tagged_sets(toks, hmm.tag_many(toks)))),
        "hmm_seeded_no_baum_welch": vars(
            prf(true, tagged_sets(toks, hmm.tag_many(toks, seeded=True)))
        ),
    }
    kmax = max(cfg.eval_k)
    x = train_tfidf.vectorizer.transform(toks).tocsr()
    tf_top = top_k_per_row(x, train_tfidf.vocabulary, kmax)
    yk = yake_keywords(texts, kmax) if cfg.run_yake else None
    for k in cfg.eval_k:
        methods[f"tfidf_top{k}"] = vars(prf(true, [set(t[:k]) for t in tf_top]))
        if yk is not None:
            methods[f"yake_top{k}"] = vars(prf(true, restrict(toks, [w[:k] for w in yk])))
    unseen = _unseen_words(mapping, fit.train_tokens, toks, true, train_tfidf, cfg, tf_top, yk)
    return {
        "n_captions": len(pick),
        "n_with_table_word": sum(1 for t in true if t),
        "sample": f"{len(pick)} held-out captions drawn with seed {cfg.seed}",
        "methods": methods,
        "unseen_words": unseen,
    }


def split_mapping(mapping: Mapping) -> tuple[set[str], set[str]]:
    """(seed forms, hidden forms): every other word of each category is hidden."""
    seed = Mapping({c: ws[0::2] for c, ws in mapping.categories.items()}, set(mapping.exact))
    hidden_words = {c: ws[1::2] for c, ws in mapping.categories.items() if ws[1::2]}
    hidden = Mapping(hidden_words, set(mapping.exact)) if hidden_words else None
    seed_forms = set(seed.forms())
    return seed_forms, (set(hidden.forms()) - seed_forms) if hidden else set()


def _unseen_words(
    mapping: Mapping,
    train_tok: list[list[str]],
    toks: list[list[str]],
    true: list[set[str]],
    train_tfidf: TfidfResult,
    cfg: PipelineConfig,
    tf_top: list[list[str]],
    yk: list[list[str]] | None,
) -> dict:
    """The non-trivial test: an HMM seeded with only half the table's words (every other word
    per category), scored on the hidden half it never saw as keywords. Recall on hidden words
    shows whether TF-IDF seeding and Baum-Welch find keywords beyond the seed list."""
    seed_forms, hidden_forms = split_mapping(mapping)
    if not hidden_forms:
        return {}
    half = fit_keyword_hmm(train_tok, seed_forms, train_tfidf.idf(), cfg.hmm)
    hidden_true = [{t for t in s if t in hidden_forms} for s in true]

    def score(pred: list[set[str]]) -> dict:
        full = prf(true, pred)
        hid = prf(hidden_true, pred)
        return {"precision": full.precision, "recall": full.recall, "recall_hidden": hid.recall}

    out = {
        "seed_forms": sorted(seed_forms),
        "hidden_words": sorted(hidden_forms),
        "n_hidden_in_sample": sum(len(h) for h in hidden_true),
        "methods": {
            "hmm_half_seed": score(tagged_sets(toks, half.tag_many(toks))),
            "hmm_half_seed_no_baum_welch": score(
                tagged_sets(toks, half.tag_many(toks, seeded=True))
            ),
        },
    }
    for k in cfg.eval_k:
        out["methods"][f"tfidf_top{k}"] = score([set(t[:k]) for t in tf_top])
        if yk is not None:
            out["methods"][f"yake_top{k}"] = score(restrict(toks, [w[:k] for w in yk]))
    return out

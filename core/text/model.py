"""The keyword model: what analysing new text needs, fitted on a caption file's training split.

    from core.text import Mapping, analyze_text, fit_keyword_model
    from core.text.model import find_split_file
    model = fit_keyword_model(read_captions(path), Mapping.load(), find_split_file(path))
    analyze_text("A lake in the woods", model=model)

`fit_split` is the one place the model is fitted. `fit_keyword_model` (data in, model out)
calls it for the CLI (`keywords --text --captions`) and the search index (core.search.derive);
`run_pipeline` calls it too, so `KeywordReport.model` (what the Keywords page uses) is the
same model, measured on the held-out split it was not fitted on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.captions import CaptionSet
from core.io import read_regular
from core.metrics import StageTimer
from core.text.categories import Mapping
from core.text.classify import CaptionClassifier, fit_classifier
from core.text.hmm import HMMConfig, KeywordHMM, fit_keyword_hmm
from core.text.preprocess import Preprocessor
from core.text.tfidf import TfidfResult, fit_tfidf

log = logging.getLogger(__name__)

SPLIT_FILE = "Flickr_8k.testImages.txt"
HELDOUT_FRACTION = 0.2  # used when no split file names the held-out images


@dataclass
class KeywordModel:
    """What analysing new text needs: fitted on the training split."""

    prep: Preprocessor
    mapping: Mapping
    idf: dict[str, float]
    hmm: KeywordHMM | None = None
    classifier: CaptionClassifier | None = None


@dataclass
class SplitFit:
    """`fit_split`'s result: the model, and what the report measures it with."""

    model: KeywordModel
    train_idx: np.ndarray
    test_idx: np.ndarray
    train_tfidf: TfidfResult | None = None  # TF-IDF of the training captions (None: not fitted)
    test_tags: list[list[bool]] | None = None  # the HMM's tags of held-out captions
    note: str | None = None  # why a part of the model is missing
    classifier_note: str | None = None
    train_tokens: list[list[str]] = field(default_factory=list, repr=False)
    test_tokens: list[list[str]] = field(default_factory=list, repr=False)


def heldout_mask(
    caption_set: CaptionSet, heldout_images: set[str] | None, fraction: float
) -> tuple[np.ndarray, str]:
    """Boolean mask of held-out captions and how it was chosen."""
    images = caption_set.images
    if heldout_images:
        mask = np.array([im in heldout_images for im in images], dtype=bool)
        if mask.any():
            return mask, f"images listed in the split file ({len(heldout_images)} images)"
    # Stable hash of the image id (or of the line for plain text): same split every run.
    keys = [
        im if im else f"line{c.line}" for im, c in zip(images, caption_set.captions, strict=True)
    ]
    bucket = np.array([int(hashlib.md5(k.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for k in keys])
    what = "image" if caption_set.n_images else "caption"
    return bucket < fraction, f"hash of the {what} id, {fraction:.0%} held out"


def find_split_file(captions_path: str | Path | None) -> set[str] | None:
    """Held-out image names from Flickr_8k.testImages.txt beside the captions file."""
    if captions_path is None:
        return None
    f = Path(captions_path).parent / SPLIT_FILE
    if not f.is_file():
        return None
    try:
        text = read_regular(f).decode("utf-8", errors="replace")
    except OSError:  # not a regular file: no held-out list
        return None
    return {ln.strip() for ln in text.splitlines() if ln.strip()}


def tokenize_captions(caption_set: CaptionSet, prep: Preprocessor) -> list[list[str]]:
    """Content-word tokens per caption; ValueError when there is nothing to fit on."""
    texts = caption_set.texts
    if not texts:
        raise ValueError("no captions to analyse")
    tokens = prep.tokenize_all(texts)
    if not any(tokens):
        raise ValueError("no content words in any caption (only stop words, digits, punctuation)")
    return tokens


def fit_split(
    tokens: Sequence[list[str]],
    held: np.ndarray,
    prep: Preprocessor,
    mapping: Mapping,
    hmm_config: HMMConfig | None = None,
    classifier: bool = True,
    timer: StageTimer | None = None,
) -> SplitFit:
    """Fit the keyword model on the captions not `held` out: TF-IDF weights, the keyword HMM
    (kept only if it can decode the held-out captions) and, with a usable HMM, the
    caption-to-categories classifier. Stages are timed into `timer` when one is given."""
    timer = timer or StageTimer()
    train_idx, test_idx = np.flatnonzero(~held), np.flatnonzero(held)
    fit = SplitFit(KeywordModel(prep, mapping, {}), train_idx, test_idx)
    if not (len(train_idx) and len(test_idx)):
        return fit
    model = fit.model
    forms = set(mapping.forms())
    fit.train_tokens = train_tok = [tokens[i] for i in train_idx]
    fit.test_tokens = test_tok = [tokens[i] for i in test_idx]
    try:
        with timer("hmm_fit"):
            fit.train_tfidf = fit_tfidf(train_tok, top=0)
            model.idf = fit.train_tfidf.idf()
            model.hmm = fit_keyword_hmm(train_tok, forms, model.idf, hmm_config)
    except ValueError as exc:  # e.g. every training caption is only stop words
        fit.note = f"keyword HMM not fitted: {exc}"
        log.warning(fit.note)
        return fit
    try:
        with timer("hmm_decode"):
            fit.test_tags = model.hmm.tag_many(test_tok)
    except ValueError as exc:  # fitted on too little text: transitions never observed
        fit.note = f"keyword HMM not usable ({len(train_idx)} training captions): {exc}"
        log.warning(fit.note)
        model.hmm = None
        return fit
    if classifier:
        with timer("classifier"):
            try:
                model.classifier = fit_classifier(train_tok, mapping)
            except ValueError as exc:  # no context words left once table words are masked
                fit.classifier_note = f"classifier not trained: {exc}"
    return fit


def fit_keyword_model(
    caption_set: CaptionSet,
    mapping: Mapping,
    heldout_images: set[str] | None = None,
    *,
    prep: Preprocessor | None = None,
    heldout_fraction: float = HELDOUT_FRACTION,
    hmm_config: HMMConfig | None = None,
    classifier: bool = True,
) -> KeywordModel:
    """The keyword model of a caption set, fitted on its training split (the captions of
    `heldout_images`, else a stable hash share of the images, are held out). ValueError when
    the captions hold no content word."""
    prep = prep or Preprocessor.default()
    tokens = tokenize_captions(caption_set, prep)
    held, _ = heldout_mask(caption_set, heldout_images, heldout_fraction)
    return fit_split(tokens, held, prep, mapping, hmm_config, classifier).model

"""Measuring keyword taggers against the mapping table on held-out captions.

Ground truth for one caption: the set of its tokens that are mapping-table words (with
inflections). A method's prediction: the set of tokens it tags. Precision and recall are
micro-averaged over captions (sums of set overlaps), so captions without any table word
count too: a method that always tags something loses precision on them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class PRF:
    precision: float
    recall: float
    f1: float
    tp: int
    n_pred: int
    n_true: int
    n_captions: int


def prf(true_sets: Sequence[set[str]], pred_sets: Sequence[set[str]]) -> PRF:
    if len(true_sets) != len(pred_sets):
        raise ValueError("true and predicted lists differ in length")
    tp = sum(len(t & p) for t, p in zip(true_sets, pred_sets, strict=True))
    n_pred = sum(len(p) for p in pred_sets)
    n_true = sum(len(t) for t in true_sets)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PRF(precision, recall, f1, tp, n_pred, n_true, len(true_sets))


def yake_keywords(texts: Sequence[str], k: int) -> list[list[str]]:
    """YAKE's top-k single words per text (lower case), best first."""
    import yake

    extractor = yake.KeywordExtractor(lan="en", n=1, top=k)
    out = []
    for text in texts:
        # YAKE returns (keyword, score), lower score = more relevant.
        kws = sorted(extractor.extract_keywords(text), key=lambda x: x[1])
        out.append([kw.lower() for kw, _ in kws][:k])
    return out


def tagged_sets(
    token_lists: Sequence[Sequence[str]], tags: Sequence[Sequence[bool]]
) -> list[set[str]]:
    return [
        {t for t, k in zip(toks, tg, strict=True) if k}
        for toks, tg in zip(token_lists, tags, strict=True)
    ]


def restrict(
    token_lists: Sequence[Sequence[str]], words: Sequence[Sequence[str]]
) -> list[set[str]]:
    """Keep only predicted words that are tokens of the caption (YAKE may return stop-word
    variants or words our tokeniser splits differently)."""
    return [set(w) & set(t) for t, w in zip(token_lists, words, strict=True)]

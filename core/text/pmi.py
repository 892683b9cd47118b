"""Pointwise mutual information: bigram collocations and word-category association.

Bigrams come from NLTK's BigramCollocationFinder over each caption separately (no pair spans
two captions), after stop-word removal, with a frequency floor. PMI is in bits:
PMI(x, y) = log2(P(x, y) / (P(x) P(y))) with P(x, y) = n_xy / N and P(x) = n_x / N, N the
number of tokens (NLTK's convention). NPMI = PMI / -log2 P(x, y), in [-1, 1].
Word-category PMI is over captions: log2(P(w, c) / (P(w) P(c))).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class BigramScore:
    w1: str
    w2: str
    count: int
    pmi: float
    npmi: float


def bigram_pmi(
    token_lists: Sequence[Sequence[str]], min_freq: int = 5, top: int = 100
) -> list[BigramScore]:
    """Bigrams seen at least `min_freq` times, ranked by PMI (ties by count)."""
    from nltk.collocations import BigramCollocationFinder

    finder = BigramCollocationFinder.from_documents(token_lists)
    finder.apply_freq_filter(min_freq)
    n = finder.word_fd.N()
    out = []
    for (w1, w2), n_xy in finder.ngram_fd.items():
        p_xy = n_xy / n
        pmi = math.log2(n_xy * n / (finder.word_fd[w1] * finder.word_fd[w2]))
        npmi = pmi / -math.log2(p_xy) if p_xy < 1 else 1.0
        out.append(BigramScore(w1, w2, int(n_xy), pmi, npmi))
    out.sort(key=lambda b: (-b.pmi, -b.count, b.w1, b.w2))
    return out[:top]


def word_category_pmi(
    joint: np.ndarray, doc_freq: np.ndarray, labels: np.ndarray, min_joint: int = 3
) -> np.ndarray:
    """(n words, n categories) PMI in bits from caption counts; NaN below the floor."""
    n = labels.shape[0]
    cat = labels.sum(axis=0).astype(np.float64)[None, :]
    df = doc_freq.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log2(joint * n / (df * cat))
    return np.where(joint >= min_joint, pmi, np.nan)

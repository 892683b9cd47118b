"""TF-IDF keyword ranking (scikit-learn) on pre-tokenised captions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer


def _identity(tokens: Sequence[str]) -> Sequence[str]:
    # Module-level (not a lambda) so fitted vectorisers pickle for the app's cache.
    return tokens


def make_vectorizer(min_df: int = 1) -> TfidfVectorizer:
    """TF-IDF over token lists (our Preprocessor already lower-cased and removed stop words).
    smooth_idf and l2 norm are scikit-learn's defaults."""
    return TfidfVectorizer(analyzer=_identity, min_df=min_df)


@dataclass
class TfidfResult:
    vectorizer: TfidfVectorizer
    matrix: sparse.csr_matrix  # (n captions, n words)
    vocabulary: np.ndarray  # word per column
    top: list[tuple[str, float]]  # corpus ranking: mean TF-IDF over captions

    def idf(self) -> dict[str, float]:
        return dict(zip(self.vocabulary.tolist(), self.vectorizer.idf_.tolist(), strict=True))


def fit_tfidf(token_lists: Sequence[Sequence[str]], top: int = 500, min_df: int = 1) -> TfidfResult:
    vec = make_vectorizer(min_df)
    matrix = vec.fit_transform(token_lists).tocsr()
    vocab = vec.get_feature_names_out()
    return TfidfResult(vec, matrix, vocab, corpus_ranking(matrix, vocab, top))


def corpus_ranking(matrix: sparse.spmatrix, vocab: np.ndarray, top: int) -> list[tuple[str, float]]:
    """Words ranked by their mean TF-IDF weight over all captions."""
    mean = np.asarray(matrix.mean(axis=0)).ravel()
    order = np.argsort(-mean, kind="stable")[:top]
    return [(str(vocab[i]), float(mean[i])) for i in order]


def top_k_per_row(matrix: sparse.csr_matrix, vocab: np.ndarray, k: int) -> list[list[str]]:
    """The k highest-weighted words of each caption (ties broken by column order)."""
    out: list[list[str]] = []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        cols, vals = matrix.indices[start:end], matrix.data[start:end]
        order = np.lexsort((cols, -vals))[:k]
        out.append([str(vocab[cols[i]]) for i in order])
    return out

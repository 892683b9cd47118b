"""Chi-square association between words and categories.

For each word w and category c, a 2x2 table over captions: A = captions with w and labelled
c, B = with w not c, C = c without w, D = neither. chi2 = N (AD - BC)^2 /
((A+B)(C+D)(A+C)(B+D)), one degree of freedom, no continuity correction (the same number as
scipy.stats.chi2_contingency(..., correction=False)). Only positively associated words
(AD > BC) rank for a category. Labels come from the mapping table, so the table's own words
rank at the top by construction; `in_mapping` marks them and suggestions skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.stats import chi2 as chi2_dist


@dataclass
class Chi2Result:
    categories: list[str]
    vocabulary: np.ndarray
    chi2: np.ndarray  # (n words, n categories), 0 where negatively associated
    p_value: np.ndarray
    doc_freq: np.ndarray  # captions containing the word
    joint: np.ndarray  # A: captions with word and category
    n_docs: int
    top_per_category: dict[str, list[dict]] = field(default_factory=dict)
    top_overall: list[dict] = field(default_factory=list)


def presence_matrix(
    token_lists: Sequence[Sequence[str]], vocab: dict[str, int]
) -> sparse.csr_matrix:
    """(n captions, n words) 0/1: does the caption contain the word."""
    rows, cols = [], []
    for r, toks in enumerate(token_lists):
        for c in {vocab[t] for t in toks if t in vocab}:
            rows.append(r)
            cols.append(c)
    data = np.ones(len(rows), dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(token_lists), len(vocab)))


def chi2_table(presence: sparse.spmatrix, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(chi2, p, A, doc_freq) arrays of shape (n words, n categories); chi2 signed >= 0 only
    for positive association (negative association is set to 0)."""
    n = presence.shape[0]
    y = labels.astype(np.float64)
    a = np.asarray(presence.T @ y)  # word & category
    df = np.asarray(presence.sum(axis=0)).ravel()[:, None]  # A + B
    cat = y.sum(axis=0)[None, :]  # A + C
    b = df - a
    c = cat - a
    d = n - a - b - c
    num = n * (a * d - b * c) ** 2
    den = df * (n - df) * cat * (n - cat)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = np.where(den > 0, num / den, 0.0)
    chi = np.where(a * d > b * c, chi, 0.0)
    p = chi2_dist.sf(chi, 1)
    return chi, p, a, df.ravel()


def rank_chi2(
    token_lists: Sequence[Sequence[str]],
    labels: np.ndarray,
    categories: Sequence[str],
    mapping_forms: set[str] | frozenset[str] = frozenset(),
    top_overall: int = 500,
    top_n: int = 25,
    min_df: int = 2,
) -> Chi2Result:
    counts: dict[str, int] = {}
    for toks in token_lists:
        for t in set(toks):
            counts[t] = counts.get(t, 0) + 1
    words = sorted(w for w, n in counts.items() if n >= min_df)
    vocab = {w: i for i, w in enumerate(words)}
    presence = presence_matrix(token_lists, vocab)
    chi, p, a, df = chi2_table(presence, labels)
    vocab_arr = np.array(words, dtype=object)
    res = Chi2Result(list(categories), vocab_arr, chi, p, df, a, len(token_lists))

    def row(i: int, j: int) -> dict:
        return {
            "word": str(vocab_arr[i]),
            "category": categories[j],
            "chi2": float(chi[i, j]),
            "p_value": float(p[i, j]),
            "captions": int(df[i]),
            "with_category": int(a[i, j]),
            "in_mapping": str(vocab_arr[i]) in mapping_forms,
        }

    for j, cat in enumerate(categories):
        order = np.argsort(-chi[:, j], kind="stable")
        res.top_per_category[cat] = [row(i, j) for i in order[:top_n] if chi[i, j] > 0]
    if len(words):
        best = chi.argmax(axis=1) if chi.shape[1] else np.zeros(len(words), dtype=int)
        score = chi[np.arange(len(words)), best] if chi.shape[1] else np.zeros(len(words))
        order = np.argsort(-score, kind="stable")[:top_overall]
        res.top_overall = [row(i, best[i]) for i in order if score[i] > 0]
    return res

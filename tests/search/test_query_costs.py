"""What a query reads at scale. The category prefilter (core.search.category_index): on
random class probabilities, the rows a plan keeps hold the exact top k whenever the plan says
so, and it says so for every one- and two-category query when no other filter applies. ANN
re-ranking: a bounded number of full-vector reads whatever k."""

from __future__ import annotations

import numpy as np
import pytest

from core.search import category_index as ci


def _probs(n: int, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, classes)) * 2.5 + rng.standard_normal((1, classes))
    p = np.exp(z - z.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def _serve(p: np.ndarray, w: np.ndarray, k: int, meta: dict) -> tuple[np.ndarray, ci.Plan | None]:
    """What the retriever does, with numpy for LanceDB: prefilter, dot product, top k."""
    plan = ci.plan(w, k, meta)
    if plan is None:
        return np.argsort(-(p @ w), kind="stable")[:k], None
    cols = ci.column_arrays(p)
    keep = np.flatnonzero(cols[plan.column] >= plan.threshold - ci.EPS)
    scores = p[keep] @ w
    order = np.argsort(-scores, kind="stable")[:k]
    if not plan.exact(scores[order].tolist(), k):
        return np.argsort(-(p @ w), kind="stable")[:k], None
    return keep[order], plan


@pytest.mark.parametrize("seed", range(3))
def test_a_plan_keeps_the_exact_top_k(seed: int) -> None:
    p = _probs(20_000, 6, seed)
    meta = ci.thresholds(ci.column_arrays(p), ranks=(50, 500))
    rng = np.random.default_rng(100 + seed)
    queries = [np.eye(6)[j] for j in range(6)]
    for _ in range(20):  # two categories, equal and unequal weights
        a, b = rng.choice(6, 2, replace=False)
        w = np.zeros(6)
        w[a], w[b] = rng.choice([0.5, rng.uniform(0.1, 0.9)]), 0
        w[b] = 1 - w[a]
        queries.append(w)
    for w in queries:
        for k in (10, 50, 200):
            got, plan = _serve(p, w, k, meta)
            exact = p @ w
            kth = np.sort(exact)[::-1][k - 1]
            # exact up to ties: every row returned scores at least the exact k-th best
            assert (exact[got] >= kth - 1e-6).all() and len(set(got.tolist())) == k
            if k <= 500:
                assert plan is not None, (w, k)  # served by the prefilter, not a scan
                kept = (ci.column_arrays(p)[plan.column] >= plan.threshold - ci.EPS).sum()
                assert kept < len(p) / 2, (w, k, kept)  # and the prefilter is selective


def test_no_plan_for_three_categories_or_a_k_past_the_ranks() -> None:
    p = _probs(2_000, 6, 7)
    meta = ci.thresholds(ci.column_arrays(p), ranks=(50,))
    assert ci.plan(np.array([0.4, 0.3, 0.3, 0, 0, 0]), 10, meta) is None
    assert ci.plan(np.eye(6)[0], 51, meta) is None
    assert ci.plan(np.eye(6)[0], 10, None) is None
    assert ci.plan(np.eye(6)[0], 50, meta) is not None


def test_thresholds_are_the_values_at_each_rank() -> None:
    p = _probs(1_000, 3, 1)
    meta = ci.thresholds(ci.column_arrays(p), ranks=(1, 10, 2_000))
    assert set(meta["columns"]) == {"cp_0", "cp_1", "cp_2", "cp_0_1", "cp_0_2", "cp_1_2"}
    assert meta["columns"]["cp_1"][:2] == [float(np.sort(p[:, 1])[::-1][r - 1]) for r in (1, 10)]
    pair = np.sort(p[:, 0] + p[:, 2])[::-1]
    assert meta["columns"]["cp_0_2"][1] == float(pair[9])
    assert meta["columns"]["cp_0"][2] is None  # fewer rows than the rank


def test_refine_rows_are_capped_whatever_k() -> None:
    """ANN queries re-rank at most REFINE_ROWS rows with full vectors: a top 10 keeps the
    index's factor, hybrid's 200 candidates get x2 (400 reads), not 200 x the factor."""
    from core.search.table import REFINE_ROWS, refine_factor

    assert REFINE_ROWS == 400
    assert refine_factor(10, 10) == 10
    assert refine_factor(10, 200) == 2
    assert refine_factor(10, 5000) == 1
    assert refine_factor(50, 10) == 40

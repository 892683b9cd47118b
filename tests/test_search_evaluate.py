"""Retrieval metrics on tiny hand-checkable cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.search.evaluate import (
    EvaluationError,
    average_precision,
    evaluate_queries,
    precision_at_k,
    rank_metrics,
    read_queries,
    tied_rank,
)


def test_tied_rank_shares_the_mean_rank_of_a_tie() -> None:
    s = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert tied_rank(s, 0) == 1
    assert tied_rank(s, 2) == 3  # ranks 2, 3, 4 -> mean 3
    assert tied_rank(s, 4) == 5
    assert tied_rank(np.zeros(10), 7) == 5.5  # a mode that scores all alike earns nothing


def test_rank_metrics_by_hand() -> None:
    m = rank_metrics([1, 2, 6, 20])
    assert m["R@1"] == 0.25 and m["R@5"] == 0.5 and m["R@10"] == 0.75
    assert m["median_rank"] == 4.0
    assert m["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 20) / 4)
    with pytest.raises(EvaluationError):
        rank_metrics([])


def test_precision_and_average_precision_by_hand() -> None:
    rel = [True, False, True, False, False]
    assert precision_at_k(rel, 2) == 0.5
    assert precision_at_k(rel, 10) == 0.2  # missing positions count as misses
    assert average_precision(rel) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert average_precision([False, False]) == 0.0
    assert average_precision([True, True]) == 1.0


class _Stub:
    """Six images (3 sea, 3 forest in the test split, 1 train image) with fixed scores."""

    def __init__(self) -> None:
        self.labels = np.array(["sea", "sea", "sea", "forest", "forest", "forest", "sea"])
        self.splits = np.array(["test"] * 6 + ["train"])
        self.tiebreak = np.arange(7)
        self.scores = {
            # sea query: order sea, forest, sea, sea, forest, forest -> AP (1 + 2/3 + 3/4)/3
            "water": np.array([0.9, 0.7, 0.6, 0.8, 0.2, 0.1, 1.0]),
            # forest query: perfect
            "trees": np.array([0.0, 0.1, 0.2, 0.9, 0.8, 0.7, 0.0]),
        }

    def mask(self, category=None, split=None, label=None) -> np.ndarray:
        return self.splits == split if split else np.ones(7, bool)

    def analyze(self, q: str) -> str:
        return q

    def prime(self, queries) -> None:
        pass

    def mode_scores(self, q: str, mode: str) -> np.ndarray:
        return self.scores[q]


def test_evaluate_queries_on_a_hand_checkable_case(tmp_path: Path) -> None:
    f = tmp_path / "q.csv"
    f.write_text("query,category\nwater,sea\ntrees,forest\n")
    out = evaluate_queries(_Stub(), f, ["m"], k=3)
    assert out["pool"] == 6 and out["split"] == "test" and out["n_queries"] == 2
    ap_sea = (1 + 2 / 3 + 3 / 4) / 3
    assert out["per_category"]["m"]["sea"] == pytest.approx(ap_sea)
    assert out["per_category"]["m"]["forest"] == 1.0
    assert out["modes"]["m"]["MAP"] == pytest.approx((ap_sea + 1) / 2)
    assert out["modes"]["m"]["P@3"] == pytest.approx((2 / 3 + 1) / 2)


def test_query_file_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("query,category\n")
    with pytest.raises(EvaluationError, match="no `query,category` rows"):
        read_queries(bad)
    unknown = tmp_path / "u.csv"
    unknown.write_text("sand dunes,desert\n")
    with pytest.raises(EvaluationError, match="desert"):
        evaluate_queries(_Stub(), unknown, ["m"])


def test_shipped_query_file_covers_every_class() -> None:
    rows = read_queries(Path(__file__).parent / "data" / "queries.csv")
    cats = {c for _, c in rows}
    assert cats == {"buildings", "forest", "glacier", "mountain", "sea", "street"}
    assert min(sum(c == k for _, c in rows) for k in cats) >= 5

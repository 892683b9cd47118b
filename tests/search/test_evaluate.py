"""Retrieval metrics on tiny hand-checkable cases."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.resources import queries_csv
from core.search.evaluate import (
    EvaluationError,
    average_precision,
    describe_evaluation,
    evaluate_queries,
    paired_difference,
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


def test_paired_difference_by_hand_and_by_photo() -> None:
    a = np.array([1, 1, 0, 1, 0, 1, 1, 0], float)
    b = np.array([1, 0, 0, 1, 0, 1, 0, 1], float)
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(0.125) and (d["better"], d["worse"]) == (2, 1)
    lo, hi = d["ci95"]
    assert lo < 0.125 < hi and lo < 0 < hi  # 2 against 1 of 8 queries: not a difference
    assert paired_difference(a, a)["ci95"] == [0.0, 0.0]
    # 40 queries, each photo's 5 captions moving together: resampled by photo the interval
    # is wider than the 40 queries taken one by one would say
    rng = np.random.default_rng(1)
    per_photo = rng.integers(-1, 2, 8).astype(float)
    x = np.repeat(per_photo, 5)
    alone = paired_difference(x, np.zeros(40))
    grouped = paired_difference(x, np.zeros(40), groups=np.repeat(np.arange(8), 5))
    assert grouped["difference"] == alone["difference"]
    assert grouped["resampled"] == "photos" and alone["resampled"] == "queries"
    width = {k: v["ci95"][1] - v["ci95"][0] for k, v in (("alone", alone), ("grouped", grouped))}
    assert width["grouped"] > 1.5 * width["alone"], width
    with pytest.raises(EvaluationError):
        paired_difference([], [])


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
    assert out["hybrid_vs"] == {}  # no hybrid to compare


def test_evaluation_compares_the_hybrid_with_each_mode(tmp_path: Path) -> None:
    stub = _Stub()
    real = stub.mode_scores
    # "hybrid" ranks the sea query perfectly and the forest one like "m"
    stub.mode_scores = lambda q, mode: (
        np.array([0.9, 0.85, 0.8, 0.7, 0.2, 0.0, 1.0])
        if (mode, q) == ("hybrid", "water")
        else real(q, mode)
    )
    f = tmp_path / "q.csv"
    f.write_text("query,category\nwater,sea\ntrees,forest\n")
    out = evaluate_queries(stub, f, ["m", "hybrid"], k=3)
    c = out["hybrid_vs"]["m"]
    assert c["metric"] == "P@3" and c["difference"] == pytest.approx((1 - 2 / 3) / 2, abs=1e-4)
    assert (c["better"], c["worse"]) == (1, 0) and c["ci95"][0] == 0.0


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
    rows = read_queries(queries_csv())
    cats = {c for _, c in rows}
    assert cats == {"buildings", "forest", "glacier", "mountain", "sea", "street"}
    assert sorted(Counter(c for _, c in rows).values()) == [5] * 6  # five sentences a class
    assert min(sum(c == k for _, c in rows) for k in cats) >= 5


# --- caption queries against the whole collection ---------------------------------------------


class _CaptionStub:
    """Five indexed photos with fixed semantic scores per caption (the old in-memory API)."""

    def __init__(self) -> None:
        self.paths = ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg", "/y/e.jpg"]
        self.tiebreak = np.arange(5)
        self.fitted_images = frozenset({"c.jpg", "d.jpg"})  # their captions fitted the mapping
        # each caption's scores over the 5 rows; its photo is the first word's letter
        self.scores = {
            "a dog": np.array([0.5, 0.1, 0.9, 0.8, 0.0]),  # a: rank 3 of all, 1 of {a, b}
            "a cat": np.array([0.9, 0.1, 0.2, 0.3, 0.0]),  # a: rank 1
            "b bird": np.array([0.1, 0.6, 0.7, 0.2, 0.0]),  # b: rank 2 of all, 1 of {a, b}
            "c car": np.array([0.1, 0.2, 0.3, 0.4, 0.0]),  # c (fitted): rank 2
        }

    def prime(self, texts) -> None:
        pass

    def analyze(self, q: str) -> str:
        return q

    def mode_scores(self, q: str, mode: str) -> np.ndarray:
        return self.scores[q]


def _captions(tmp_path: Path) -> Path:
    f = tmp_path / "captions.txt"
    f.write_text(
        "image,caption\na.jpg,a dog\na.jpg,a cat\nb.jpg,b bird\nc.jpg,c car\nzz.jpg,not indexed\n"
    )
    return f


def test_caption_queries_rank_against_all_images_and_refuse_fitted(tmp_path: Path) -> None:
    from core.search.evaluate import evaluate_captions

    out = evaluate_captions(_CaptionStub(), _captions(tmp_path), ["semantic"])
    assert out["pool"] == 5 and out["pool_kind"] == "all" and out["n_queries"] == 3
    assert out["refused"] == {"fitted_photos": 1, "fitted_captions": 1}
    assert out["matched_photos"] == 3 and out["unmatched_photos"] == 1
    m = out["modes"]["semantic"]
    assert m["R@1"] == pytest.approx(1 / 3) and m["median_rank"] == 2.0
    assert m["MRR"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    # the caption file's photos are a, b, c (c fitted); each query's top 10, its own photo
    # left out, holds two of them, one fitted
    assert m["fitted_share_top10"] == pytest.approx(0.5)
    assert out["fitted_share_pool"] == pytest.approx(1 / 3, abs=1e-4)


def test_heldout_pool_flatters_and_fitted_are_scored_apart(tmp_path: Path) -> None:
    from core.search.evaluate import evaluate_captions

    out = evaluate_captions(
        _CaptionStub(), _captions(tmp_path), ["semantic"], pool="heldout", fitted_apart=True
    )
    assert out["pool"] == 2 and out["pool_kind"] == "heldout"
    assert out["modes"]["semantic"]["R@1"] == 1.0  # the small pool makes every query a hit
    assert out["refused"] is None
    assert out["fitted"]["n_queries"] == 1 and out["fitted"]["pool"] == 1
    assert "pool 2 images: the held-out photos only" in describe_evaluation(out)
    all_pool = evaluate_captions(
        _CaptionStub(), _captions(tmp_path), ["semantic"], fitted_apart=True
    )
    assert all_pool["fitted"]["pool"] == 5
    assert "pool 5 images: all indexed" in describe_evaluation(all_pool)
    assert all_pool["fitted"]["modes"]["semantic"]["median_rank"] == 2.0
    assert (
        all_pool["modes"]
        == evaluate_captions(_CaptionStub(), _captions(tmp_path), ["semantic"])["modes"]
    )  # never mixed in


def test_other_caption_formats_are_matched(tmp_path: Path) -> None:
    from core.search.evaluate import evaluate_captions

    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("a.jpg#0\ta cat\nb.jpg#0\tb bird\n")
    pipe = tmp_path / "results.csv"
    pipe.write_text("image_name| comment_number| comment\na.jpg| 0| a cat\nb.jpg| 0| b bird\n")
    for f in (token, pipe):
        out = evaluate_captions(_CaptionStub(), f, ["semantic"])
        assert out["n_queries"] == 2 and out["modes"]["semantic"]["R@1"] == 0.5


def test_caption_file_problems(tmp_path: Path) -> None:
    from core.search.evaluate import evaluate_captions

    plain = tmp_path / "plain.txt"
    plain.write_text("a dog runs\na cat sleeps\n")
    with pytest.raises(EvaluationError, match="names a photo"):
        evaluate_captions(_CaptionStub(), plain, ["semantic"])
    other = tmp_path / "other.txt"
    other.write_text("image,caption\nq.jpg,a dog\n")
    with pytest.raises(EvaluationError, match="none of its 1 photos is in the index"):
        evaluate_captions(_CaptionStub(), other, ["semantic"])
    fitted = tmp_path / "fitted.txt"
    fitted.write_text("image,caption\nc.jpg,c car\n")
    with pytest.raises(EvaluationError, match="fitted the text mapping"):
        evaluate_captions(_CaptionStub(), fitted, ["semantic"])
    with pytest.raises(EvaluationError, match="unknown pool"):
        evaluate_captions(_CaptionStub(), _captions(tmp_path), ["semantic"], pool="some")


class _RankingStub(_CaptionStub):
    """The same engine behind the LanceDB-style API: ranked paths, possibly truncated."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth

    def ranking(self, text: str, mode: str, limit: int, where=None) -> list[str]:
        s = self.scores[text]
        order = np.lexsort((self.tiebreak, -s))
        return [self.paths[i] for i in order][: min(limit, self.depth)]


def test_ranking_api_gives_the_same_ranks_and_ties_the_unranked_rest(tmp_path: Path) -> None:
    from core.search.evaluate import evaluate_captions

    full = evaluate_captions(_RankingStub(depth=99), _captions(tmp_path), ["semantic"])
    legacy = evaluate_captions(_CaptionStub(), _captions(tmp_path), ["semantic"])
    assert full["modes"] == legacy["modes"]
    # candidates cut at 1: 'a dog' (rank 3) is unranked -> shares ranks 2..5 -> 3.5
    cut = evaluate_captions(_RankingStub(depth=1), _captions(tmp_path), ["semantic"])
    assert cut["modes"]["semantic"]["median_rank"] == 3.5


def test_without_a_file_the_index_captions_are_the_queries() -> None:
    from core.search.evaluate import evaluate_captions

    engine = _CaptionStub()
    engine.rows = {"captions": [["a dog", "a cat"], ["b bird"], ["c car"], [], []]}
    out = evaluate_captions(engine, None, ["semantic"])
    assert out["n_queries"] == 3 and out["refused"]["fitted_captions"] == 1
    engine.rows = {"captions": [[], [], [], [], []]}
    with pytest.raises(EvaluationError, match="holds no captions"):
        evaluate_captions(engine, None, ["semantic"])

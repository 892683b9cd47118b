"""Retrieval quality per ranking mode.

Caption queries: every caption of an indexed, held-out photo (not used to fit the text
mapping) is a query whose one relevant image is its photo; the pool is those photos. Metrics:
recall@1/5/10, median rank, mean reciprocal rank. Tied scores take the mean rank of their tie
group, so a mode that scores everything alike gets no credit for the folder order.

Category queries (CSV `query,category`): relevant images are those whose class folder is the
query's category, in the pool (the test split by default). Metrics: precision@10 and
average precision, with ties broken by a fixed pseudo-random order.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.search.rank import single_threaded


class EvaluationError(ValueError):
    """Nothing to evaluate (no queries, empty pool, unknown category)."""


# --- metrics (pure) -----------------------------------------------------------------------------


def tied_rank(scores: np.ndarray, target: int) -> float:
    """1-based rank of `target` in descending `scores`; ties share their mean rank."""
    s = scores[target]
    greater = int(np.sum(scores > s))
    equal = int(np.sum(scores == s))
    return greater + (equal + 1) / 2


def rank_metrics(ranks: Sequence[float], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    r = np.asarray(ranks, dtype=float)
    if r.size == 0:
        raise EvaluationError("no ranks to score")
    out = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["MRR"] = float(np.mean(1.0 / r))
    return out


def precision_at_k(relevant_sorted: Sequence[bool], k: int = 10) -> float:
    rel = np.asarray(relevant_sorted[:k], dtype=float)
    return float(rel.sum() / k)


def average_precision(relevant_sorted: Sequence[bool]) -> float:
    """Mean of precision@i over the positions i of the relevant items (all of them ranked)."""
    rel = np.asarray(relevant_sorted, dtype=bool)
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float(np.mean(hits[rel] / (np.flatnonzero(rel) + 1)))


# --- queries ------------------------------------------------------------------------------------


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """`query,category` rows (header optional)."""
    rows: list[tuple[str, str]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if len(row) < 2 or not row[0].strip():
                continue
            if i == 0 and row[0].strip().lower() == "query":
                continue
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise EvaluationError(f"{path}: no `query,category` rows")
    return rows


def evaluate_queries(
    engine: Any, path: str | Path, modes: Sequence[str], split: str | None = None, k: int = 10
) -> dict:
    """P@k and AP per mode for category queries, over the `split` pool (default test)."""
    queries = read_queries(path)
    if split is None:
        split = "test" if (engine.splits == "test").any() else ""
    pool = engine.mask(split=split or None) & (engine.labels != "")
    if not pool.any():
        raise EvaluationError(f"no labelled images in split {split!r} of the index")
    labels = set(engine.labels[pool])
    unknown = sorted({c for _, c in queries} - labels)
    if unknown:
        raise EvaluationError(
            f"categories {unknown} have no images in the pool; has {sorted(labels)}"
        )
    idx = np.flatnonzero(pool)
    out: dict[str, Any] = {"kind": "category queries", "source": str(path), "split": split,
                           "pool": int(pool.sum()), "n_queries": len(queries), "k": k,
                           "modes": {}, "per_category": {}}  # fmt: skip
    start = time.perf_counter()
    engine.prime([q for q, _ in queries])
    with single_threaded():
        analysed = [engine.analyze(q) for q, _ in queries]
        _score_queries(engine, analysed, queries, modes, idx, k, out)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def _score_queries(engine, analysed, queries, modes, idx, k, out) -> None:
    for mode in modes:
        p_at, aps, per_cat = [], [], {}
        for q, (_, cat) in zip(analysed, queries, strict=True):
            s = engine.mode_scores(q, mode)[idx]
            order = np.lexsort((engine.tiebreak[idx], -s))
            rel = engine.labels[idx][order] == cat
            p_at.append(precision_at_k(rel, k))
            aps.append(average_precision(rel))
            per_cat.setdefault(cat, []).append(aps[-1])
        out["modes"][mode] = {f"P@{k}": float(np.mean(p_at)), "MAP": float(np.mean(aps))}
        out["per_category"][mode] = {c: float(np.mean(v)) for c, v in sorted(per_cat.items())}


def caption_queries(engine: Any, captions_file: str | Path | None) -> tuple[np.ndarray, list]:
    """(pool rows, [(caption, pool position)]): captioned photos kept out of the mapping."""
    from core.search.store import captions_by_image

    by_name = captions_by_image(captions_file) if captions_file else {}
    held = set(engine.semantic.config.get("heldout_images", [])) if engine.semantic else None
    names = [Path(p).name for p in engine.paths]
    pool = [
        i for i, n in enumerate(names)
        if (by_name.get(n) or engine.rows["captions"][i]) and (held is None or n in held)
    ]  # fmt: skip
    queries = []
    for pos, i in enumerate(pool):
        for c in by_name.get(names[i]) or engine.rows["captions"][i] or []:
            queries.append((c, pos))
    return np.array(pool, dtype=int), queries


def evaluate_captions(
    engine: Any, captions_file: str | Path | None, modes: Sequence[str],
    max_queries: int | None = None,
) -> dict:  # fmt: skip
    pool, queries = caption_queries(engine, captions_file)
    if not queries:
        raise EvaluationError(
            "no caption of a held-out indexed photo: index the photos with --captions, and "
            "keep some out of the mapping's training (the Flickr8k dev/test lists do this)"
        )
    if max_queries:
        queries = queries[:max_queries]
    start = time.perf_counter()
    engine.prime([c for c, _ in queries])
    with single_threaded():
        analysed = [engine.analyze(c) for c, _ in queries]
    out: dict[str, Any] = {"kind": "caption queries", "source": str(captions_file),
                           "pool": len(pool), "n_queries": len(queries), "modes": {}}  # fmt: skip
    with single_threaded():
        for mode in modes:
            ranks = [tied_rank(engine.mode_scores(q, mode)[pool], pos)
                     for q, (_, pos) in zip(analysed, queries, strict=True)]  # fmt: skip
            out["modes"][mode] = rank_metrics(ranks)
    out["seconds"] = round(time.perf_counter() - start, 3)
    if engine.semantic is not None:
        out["mapping"] = {"path": str(engine.semantic.path),
                          "train_captioned_images": engine.semantic.config["train_captioned_images"]}  # fmt: skip
    return out

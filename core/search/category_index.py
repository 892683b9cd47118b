"""Exact category search that reads a few thousand rows, not the whole table.

The category mode ranks images by `w · p`: the query's category weights (summing to 1) times
each image's class probabilities. A flat scan of `class_probs` gives that ranking exactly but
costs O(N) per query (146 ms at 1M rows). Written at index time instead:

- one column per class (`cp_3` = p of class 3) and, up to `MAX_PAIR_CLASSES` classes, one per
  pair of classes (`cp_1_4` = p1 + p4), each with a BTREE index;
- in index.json, each column's value at a few ranks (`RANKS`): "at least 2,500 rows have
  cp_3 >= 0.97".

A query on one or two categories becomes a prefilter `column >= t` (a BTREE range read) and a
dot-product search over the rows it keeps. The result is exact, and checked to be at query
time: every row outside the filter scores below `bound(t)` (one class: p_c < t; a pair with
w_a >= w_b: w_a p_a + w_b p_b <= w_a (p_a + p_b) < w_a t), so when the k-th row found scores
at least `bound(t)`, no row outside can be in the top k. When the check fails (a `where`
that leaves too few rows, three or more categories, an index without these columns), the
caller scans `class_probs` exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

PREFIX = "cp_"
RANKS = (250, 2500, 25000)  # stored thresholds: a query with k up to 25,000 is served
MAX_PAIR_CLASSES = 12  # pair columns grow as C(C-1)/2: 66 at 12 classes
EPS = 1e-6  # float32 sums: a row on the threshold stays in


def column_of(classes: tuple[int, ...]) -> str:
    return PREFIX + "_".join(str(j) for j in sorted(classes))


def column_classes(n_classes: int) -> list[tuple[int, ...]]:
    """The class sets that get a column: each class, and each pair up to MAX_PAIR_CLASSES."""
    sets: list[tuple[int, ...]] = [(j,) for j in range(n_classes)]
    if 2 <= n_classes <= MAX_PAIR_CLASSES:
        sets += list(combinations(range(n_classes), 2))
    return sets


def column_names(n_classes: int) -> list[str]:
    return [column_of(c) for c in column_classes(n_classes)]


def column_arrays(probs: np.ndarray) -> dict[str, np.ndarray]:
    """The per-class and per-pair probability columns of an (N, C) probability array."""
    probs = np.asarray(probs, np.float32)
    n_classes = probs.shape[1] if probs.ndim == 2 else 0
    return {column_of(c): probs[:, list(c)].sum(1) for c in column_classes(n_classes)}


def thresholds(arrays: dict[str, np.ndarray], ranks: tuple[int, ...] | None = None) -> dict:
    """index.json's `category_index`: each column's value at each rank (None past the end)."""
    ranks = tuple(ranks or RANKS)
    cols = {}
    for name, v in arrays.items():
        top = -np.partition(-v, min(max(ranks), len(v)) - 1)[: max(ranks)] if len(v) else v
        top = np.sort(top)[::-1]
        cols[name] = [float(top[r - 1]) if r <= len(top) else None for r in ranks]
    return {"ranks": list(ranks), "columns": cols}


@dataclass(frozen=True)
class Plan:
    column: str
    threshold: float  # the prefilter: column >= threshold
    bound: float  # every row outside the filter scores below this

    def where(self, where: str | None) -> str:
        f = f"{self.column} >= {self.threshold - EPS!r}"
        return f"({where}) AND {f}" if where else f

    def exact(self, scores: list[float], k: int) -> bool:
        """True when the k rows found are the exact top k (see the module's docstring)."""
        return len(scores) >= k and min(scores[:k]) >= self.bound - EPS


def plan(weights: np.ndarray, k: int, meta: dict | None) -> Plan | None:
    """The prefilter for a query's category weights (summing to 1), or None: scan."""
    if not meta or k <= 0:
        return None
    ranks, cols = meta.get("ranks") or [], meta.get("columns") or {}
    r = next((i for i, rank in enumerate(ranks) if rank >= k), None)
    support = [int(j) for j in np.flatnonzero(np.asarray(weights) > 0)]
    if r is None or not 1 <= len(support) <= 2:
        return None

    def at(classes: tuple[int, ...]) -> float | None:
        values = cols.get(column_of(classes))
        return None if values is None else values[r]

    if len(support) == 1:
        t = at((support[0],))
        return None if t is None else Plan(column_of((support[0],)), t, t)
    a, b = sorted(support, key=lambda j: -weights[j])
    wa, wb = float(weights[a]), float(weights[b])
    pair, ta, tb = at((a, b)), at((a,)), at((b,))
    if pair is None or ta is None or tb is None:
        return None
    # At least `rank` rows score >= each of these, so the k-th best scores >= their max.
    low = max(wb * pair, wa * ta, wb * tb)
    return Plan(column_of((a, b)), low / wa, low)

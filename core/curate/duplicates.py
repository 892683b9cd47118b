"""Near-duplicates and train/test leakage from backbone vectors.

A vector self-join through LanceDB: the unit-length vectors go into a LanceDB table (cached
beside the other caches, keyed by the vectors' key) and every vector is a query for its k
nearest neighbours, in batches, through the table's ANN index (IVF_HNSW_SQ, cosine) once the
collection is large enough to need one, else LanceDB's exact scan. No N x N matrix is ever
formed. Candidate pairs are re-scored exactly (a dot product per pair), kept when their cosine
distance is at most the threshold, and joined into groups (union-find).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
# Cosine distance (1 - cosine similarity of the backbone vectors) at or below which two images
# are near-duplicates. Chosen on the Intel *training* split (benchmarks/curate.py --threshold):
# it lies below the 1st percentile (0.066) of ordinary nearest-neighbour distances there
# (median 0.20), and catches copies re-encoded at JPEG quality 90 (median 0.02) or enlarged 2x
# and re-encoded at 85 (max 0.023 over 40 images). Downscaled or strongly compressed copies
# drift further than ordinary neighbours (0.6x + q40: median 0.31) and are not caught at any
# useful threshold. The user moves it in the app and with --threshold.
DEFAULT_THRESHOLD = 0.05
DEFAULT_NEIGHBOURS = 10
# IVF partitions each query probes. Near-duplicates sit in their query's own partition: on the
# Intel data (9,828 vectors) 2 or 4 probes found the same pairs within 0.1 as LanceDB's default,
# 2-2.5x faster (benchmarks/curate.py --duplicates times the self-join).
NPROBES = 4
ANN_MIN_ROWS = 2_000  # below this LanceDB's exact scan of the whole table is fast enough
TABLE = "vectors"


@dataclass
class DuplicateGroup:
    members: list[int]  # positions in the collection
    max_distance: float  # the largest cosine distance among the pairs that link the group
    cross_class: bool
    cross_split: bool

    def to_dict(self, paths: Sequence[str], labels: Sequence, splits: Sequence[str]) -> dict:
        return {
            "paths": [paths[i] for i in self.members],
            "labels": [labels[i] for i in self.members],
            "splits": [splits[i] for i in self.members],
            "max_distance": round(float(self.max_distance), 6),
            "cross_class": self.cross_class,
            "cross_split": self.cross_split,
        }

    def flags(self) -> list[str]:
        """What makes the group worth a look: "across classes", "train/test"."""
        return [
            f
            for f, on in (("across classes", self.cross_class), ("train/test", self.cross_split))
            if on
        ]


@dataclass
class DuplicateReport:
    threshold: float
    groups: list[DuplicateGroup]  # cross-class and cross-split groups first
    pairs: list[tuple[int, int, float]]  # (i, j, distance), i < j, every pair within threshold
    cross_split_pairs: list[tuple[int, int, float]]
    search: str  # "ann" or "exact"
    seconds: float
    candidates: int = 0
    notes: list[str] = field(default_factory=list)


def normalize(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def vector_table(
    vectors: np.ndarray, folder: str | Path, ann_min_rows: int = ANN_MIN_ROWS
):  # -> lancedb.table.Table
    """The LanceDB table of unit vectors at `folder` (reused when it holds the same number of
    rows: the folder name is the vectors' key), with an ANN index from `ann_min_rows` rows."""
    import lancedb
    import pyarrow as pa

    folder = Path(folder)
    unit = normalize(vectors)
    n, d = unit.shape
    if folder.exists():
        try:
            tbl = lancedb.connect(str(folder)).open_table(TABLE)
            if tbl.count_rows() == n and (n < ann_min_rows or tbl.list_indices()):
                return tbl
        except Exception as exc:  # a damaged or half-built table is rebuilt
            log.warning("rebuilding self-join table %s: %s", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
    # Build in a temporary folder and rename: a crash never leaves a half-built table behind.
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    db = lancedb.connect(str(tmp))
    data = pa.table(
        {
            "row": pa.array(np.arange(n, dtype=np.int64)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(unit.reshape(-1)), d),
        }
    )
    tbl = db.create_table(TABLE, data)
    if n >= ann_min_rows:
        from lancedb.index import HnswSq

        t0 = time.perf_counter()
        tbl.create_index(
            "vector",
            config=HnswSq(
                distance_type="cosine",
                num_partitions=max(1, round(math.sqrt(n) / 4)),
                m=20,
                ef_construction=300,
            ),
        )
        log.info("self-join ANN index over %d vectors in %.1f s", n, time.perf_counter() - t0)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)
    return lancedb.connect(str(folder)).open_table(TABLE)


def self_join(
    tbl,
    vectors: np.ndarray,
    k: int = DEFAULT_NEIGHBOURS,
    threshold: float = DEFAULT_THRESHOLD,
    batch: int = 512,
    progress: Progress | None = None,
) -> tuple[list[tuple[int, int, float]], int]:
    """Pairs (i, j, cosine distance), i < j, within `threshold`: each vector's k nearest
    neighbours from the table (column `row` = position), re-scored exactly. Returns (pairs,
    number of candidate pairs looked at)."""
    unit = normalize(vectors)
    n = len(unit)
    best: dict[tuple[int, int], float] = {}
    candidates = 0
    for start in range(0, n, batch):
        q = unit[start : start + batch]
        query = tbl.search(q).metric("cosine").limit(min(k + 1, n)).nprobes(NPROBES)
        res = query.select(["row", "_distance"]).to_arrow()
        qi = res.column("query_index").to_numpy() + start
        rows = res.column("row").to_numpy()
        approx = res.column("_distance").to_numpy()
        # A generous pre-filter on the (quantised) ANN distance, then the exact distance.
        keep = (rows != qi) & (approx <= threshold + 0.05)
        qi, rows = qi[keep], rows[keep]
        candidates += len(qi)
        if len(qi):
            exact = 1.0 - np.einsum("ij,ij->i", unit[qi], unit[rows])
            for a, b, dist in zip(qi.tolist(), rows.tolist(), exact.tolist(), strict=True):
                if dist <= threshold:
                    best[(min(a, b), max(a, b))] = max(0.0, dist)
        if progress:
            progress(min(start + batch, n), n)
    pairs = sorted(((a, b, d) for (a, b), d in best.items()), key=lambda t: (t[2], t[0], t[1]))
    return pairs, candidates


def group_pairs(n: int, pairs: Sequence[tuple[int, int, float]]) -> list[tuple[list[int], float]]:
    """Connected components of the pair graph (union-find): (members, largest link distance)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    worst: dict[int, float] = {}
    for a, _, d in pairs:
        r = find(a)
        worst[r] = max(worst.get(r, 0.0), d)
    for a, _, _ in pairs:
        members.setdefault(find(a), [])
    for i in range(n):
        r = find(i)
        if r in members:
            members[r].append(i)
    return [(sorted(m), worst[r]) for r, m in members.items()]


def _crosses(values: Sequence, members: Sequence[int]) -> bool:
    return len({values[i] for i in members if values[i]}) > 1


def _grouped(
    pairs: list[tuple[int, int, float]],
    labels: Sequence[str | None],
    splits: Sequence[str],
    n: int,
) -> tuple[list[DuplicateGroup], list[tuple[int, int, float]]]:
    """(groups of the pairs, cross-class and cross-split groups first; the train/test pairs)."""
    groups = [
        DuplicateGroup(m, w, _crosses(labels, m), _crosses(splits, m))
        for m, w in group_pairs(n, pairs)
    ]
    groups.sort(key=lambda g: (not g.cross_class, not g.cross_split, g.max_distance, g.members))
    return groups, [p for p in pairs if splits[p[0]] != splits[p[1]]]


def find_near_duplicates(
    vectors: np.ndarray,
    labels: Sequence[str | None],
    splits: Sequence[str],
    table_dir: str | Path,
    threshold: float = DEFAULT_THRESHOLD,
    k: int = DEFAULT_NEIGHBOURS,
    ann_min_rows: int = ANN_MIN_ROWS,
    progress: Progress | None = None,
) -> DuplicateReport:
    """Groups of near-identical images; groups crossing classes or splits come first."""
    if not 0 <= threshold <= 2:
        raise ValueError(f"threshold is a cosine distance in [0, 2], not {threshold}")
    t0 = time.perf_counter()
    n = len(vectors)
    if n < 2:
        return DuplicateReport(threshold, [], [], [], "exact", 0.0)
    tbl = vector_table(vectors, table_dir, ann_min_rows)
    search = "ann" if n >= ann_min_rows else "exact"
    pairs, cand = self_join(tbl, vectors, k, threshold, progress=progress)
    groups, cross = _grouped(pairs, labels, splits, n)
    secs = time.perf_counter() - t0
    log.info(
        "near-duplicates: %d pairs, %d groups (%s, %.1f s)", len(pairs), len(groups), search, secs
    )
    return DuplicateReport(threshold, groups, pairs, cross, search, secs, cand)


def regroup(
    report: DuplicateReport,
    labels: Sequence[str | None],
    splits: Sequence[str],
    n: int,
    threshold: float,
) -> DuplicateReport:
    """The report at a lower threshold, from the pairs already found (no new search): what the
    app's slider does."""
    if threshold > report.threshold + 1e-12:
        raise ValueError(f"the search ran at {report.threshold}; search again for {threshold}")
    pairs = [p for p in report.pairs if p[2] <= threshold]
    groups, cross = _grouped(pairs, labels, splits, n)
    return DuplicateReport(
        threshold, groups, pairs, cross, report.search, report.seconds, report.candidates
    )

"""One audit of a collection: its vectors, likely label mistakes and near-duplicates.

The result is persisted under <cache>/curate/<key>/ (audit.json plus the out-of-fold
probabilities), keyed by the vectors' key and the settings, so the app and the CLI never
recompute what they have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.curate.duplicates import (
    ANN_MIN_ROWS,
    DEFAULT_NEIGHBOURS,
    DEFAULT_THRESHOLD,
    DuplicateReport,
    find_near_duplicates,
    regroup,
)
from core.curate.label_issues import (
    DEFAULT_C,
    DEFAULT_FOLDS,
    LabelIssue,
    find_label_issues,
    label_scores,
    out_of_fold_probs,
)
from core.curate.vectors import (
    Collection,
    VectorSource,
    collection_vectors,
    load_collection,
    vector_source,
    vectors_key,
)

log = logging.getLogger(__name__)

Stage = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class Audit:
    collection: Collection
    source: VectorSource
    vectors: np.ndarray
    key: str  # the vectors' key: derived caches (self-join table, map) live under it
    labelled: np.ndarray  # positions of images with a label (the label audit's images)
    label_ids: np.ndarray  # class index of each labelled image
    probs: np.ndarray | None  # out-of-fold probabilities of the labelled images
    issues: list[LabelIssue]  # `index` is a position in the collection
    duplicates: DuplicateReport
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def label_score(self) -> np.ndarray:
        """Per image: 1 - out-of-fold probability of its given label (NaN when unlabelled)."""
        out = np.full(len(self.collection), np.nan)
        if self.probs is not None:
            out[self.labelled] = label_scores(self.label_ids, self.probs)
        return out

    def predicted(self) -> list[str | None]:
        """The probe's out-of-fold class per image (None when unlabelled)."""
        out: list[str | None] = [None] * len(self.collection)
        if self.probs is not None:
            names = self.collection.class_names
            for pos, j in zip(self.labelled, self.probs.argmax(1), strict=True):
                out[int(pos)] = names[int(j)]
        return out

    def to_dict(self, max_issues: int | None = None) -> dict[str, Any]:
        c = self.collection
        issues = self.issues if max_issues is None else self.issues[:max_issues]
        dup = self.duplicates
        return {
            "root": str(c.root),
            "n_images": len(c),
            "n_labelled": len(self.labelled),
            "class_names": c.class_names,
            "features": self.source.description,
            "label_issues": [i.to_dict(c.paths[i.index]) for i in issues],
            "n_label_issues": len(self.issues),
            "near_duplicates": [g.to_dict(c.paths, c.labels, c.splits) for g in dup.groups],
            "n_duplicate_groups": len(dup.groups),
            "n_cross_class_groups": sum(g.cross_class for g in dup.groups),
            "cross_split_pairs": len(dup.cross_split_pairs),
            "cross_split": [
                {
                    "paths": [c.paths[a], c.paths[b]],
                    "splits": [c.splits[a], c.splits[b]],
                    "labels": [c.labels[a], c.labels[b]],
                    "distance": round(d, 6),
                }
                for a, b, d in dup.cross_split_pairs
            ],
            "threshold": dup.threshold,
            "duplicate_search": dup.search,
            "duplicate_seconds": round(dup.seconds, 3),
            "skipped": c.skipped,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "seconds": round(self.seconds, 3),
        }


def label_audit(
    collection: Collection, vectors: np.ndarray, n_folds: int = DEFAULT_FOLDS, c: float = DEFAULT_C
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[LabelIssue]]:
    """(labelled positions, their class ids, out-of-fold probs, issues) over labelled images."""
    names = collection.class_names
    index = {n: i for i, n in enumerate(names)}
    labelled = np.array([i for i, y in enumerate(collection.labels) if y in index], dtype=int)
    ids = np.array([index[collection.labels[i]] for i in labelled], dtype=int)
    probs = out_of_fold_probs(vectors[labelled], ids, n_folds, c)
    issues = find_label_issues(ids, probs, names)
    for issue in issues:
        issue.index = int(labelled[issue.index])
    return labelled, ids, probs, issues


def run_audit(
    images: str | Path,
    run: str | Path | None = None,
    cache_dir: str | Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    k: int = DEFAULT_NEIGHBOURS,
    device: str | None = None,
    stage: Stage | None = None,
    ann_min_rows: int = ANN_MIN_ROWS,
    collection: Collection | None = None,
) -> Audit:
    """Audit every usable image under `images`: vectors (cached), label issues over the
    labelled images, near-duplicates over all. Raises DatasetError / LabelAuditError."""
    from core.config import resolve_cache_dir

    t0 = time.perf_counter()
    cache = resolve_cache_dir(cache_dir)
    timings: dict[str, float] = {}

    def report(name: str) -> Callable[[int, int], None] | None:
        return (lambda d, t: stage(name, d, t)) if stage else None

    coll = collection or load_collection(images, cache, report("checking images"))
    timings["collection"] = time.perf_counter() - t0
    source = vector_source(run, device=device)
    t = time.perf_counter()
    vectors = collection_vectors(source, coll.paths, cache, device, report("features"))
    timings["features"] = time.perf_counter() - t
    key = vectors_key(source, coll.paths)
    stored = _audit_file(cache, key, coll, threshold, k)
    saved = _load_saved(stored, len(coll))
    t = time.perf_counter()
    if saved is not None:
        labelled, ids, probs, issues, base = saved
        dup = regroup(base, coll.labels, coll.splits, len(coll), base.threshold)
        timings["from_cache"] = 1.0
    else:
        labelled, ids, probs, issues = label_audit(coll, vectors)
        timings["label_issues"] = time.perf_counter() - t
        dup = find_near_duplicates(
            vectors,
            coll.labels,
            coll.splits,
            Path(cache) / "curate" / key / "selfjoin",
            threshold,
            k,
            ann_min_rows,
            report("near-duplicates"),
        )
        timings["near_duplicates"] = dup.seconds
        _save(stored, labelled, ids, probs, issues, dup)
    return Audit(
        coll,
        source,
        vectors,
        key,
        labelled,
        ids,
        probs,
        issues,
        dup,
        time.perf_counter() - t0,
        timings,
    )


AUDIT_VERSION = 2  # 2: PCA-128 probe


def _audit_file(cache: Path, key: str, coll: Collection, threshold: float, k: int) -> Path:
    """Where this audit is stored: the vectors' key plus the labels, splits and settings (a
    relabelled view of the same files shares the vectors, not the audit)."""
    import hashlib
    import json

    h = hashlib.sha256(
        json.dumps(
            [
                AUDIT_VERSION,
                coll.labels,
                coll.splits,
                coll.class_names,
                threshold,
                k,
                DEFAULT_FOLDS,
                DEFAULT_C,
            ]
        ).encode()
    )
    return Path(cache) / "curate" / key / f"audit-{h.hexdigest()[:16]}.npz"


def _save(path: Path, labelled, ids, probs, issues: list[LabelIssue], dup: DuplicateReport) -> None:
    from core.io import atomic_save_npz

    pairs = np.asarray([(a, b, d) for a, b, d in dup.pairs], np.float64).reshape(-1, 3)
    atomic_save_npz(
        path,
        labelled=labelled,
        ids=ids,
        probs=probs,
        issue_index=np.asarray([i.index for i in issues], np.int64),
        issue_given=np.asarray([i.given for i in issues], str),
        issue_suggested=np.asarray([i.suggested for i in issues], str),
        issue_score=np.asarray([i.score for i in issues], np.float64),
        pairs=pairs,
        threshold=np.asarray(dup.threshold),
        search=np.asarray(dup.search),
        seconds=np.asarray(dup.seconds),
        candidates=np.asarray(dup.candidates),
    )


def _load_saved(path: Path, n: int):
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            d = {f: z[f] for f in z.files}
    except (OSError, ValueError) as exc:
        log.warning("recomputing unreadable audit %s: %s", path, exc)
        return None
    issues = [
        LabelIssue(int(i), str(g), str(s), float(sc))
        for i, g, s, sc in zip(
            d["issue_index"], d["issue_given"], d["issue_suggested"], d["issue_score"], strict=True
        )
    ]
    pairs = [(int(a), int(b), float(dd)) for a, b, dd in d["pairs"]]
    base = DuplicateReport(
        float(d["threshold"]),
        [],
        pairs,
        [],
        str(d["search"]),
        float(d["seconds"]),
        int(d["candidates"]),
    )
    return d["labelled"], d["ids"], d["probs"], issues, base


def audit_at(audit: Audit, threshold: float) -> Audit:
    """The same audit with near-duplicates regrouped at a lower threshold (no new search)."""
    import dataclasses

    c = audit.collection
    return dataclasses.replace(
        audit, duplicates=regroup(audit.duplicates, c.labels, c.splits, len(c), threshold)
    )

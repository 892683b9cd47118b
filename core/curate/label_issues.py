"""Likely label mistakes: out-of-fold class probabilities from a cross-validated linear probe
on backbone vectors (no image is judged by a model that saw its label), then confident
learning (cleanlab) to find and rank images whose given label is probably wrong.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
# The probe: standardise, PCA to PROBE_DIMS (fitted once on every image: it never sees a
# label, so no image's own label leaks into its judgement), then a logistic regression per
# fold with inverse L2 strength C. Chosen on the Intel *training* split by out-of-fold log loss
# (benchmarks/curate.py --probe-c): C=0.01 0.239, 0.1 0.273, 1 0.339; the full 1280-d probe
# (no PCA) at C=0.1 was 0.352 and ~50x slower. Never tuned on a test split.
PROBE_DIMS = 128
DEFAULT_C = 0.01


class LabelAuditError(ValueError):
    """Too few labelled images or classes to cross-validate."""


@dataclass
class LabelIssue:
    index: int  # position in the audited arrays
    given: str
    suggested: str
    score: float  # 1 - cleanlab self-confidence: higher is more likely wrong

    def to_dict(self, path: str) -> dict:
        return {
            "path": path,
            "given": self.given,
            "suggested": self.suggested,
            "score": round(self.score, 6),
        }


def out_of_fold_probs(
    features: np.ndarray,
    labels: np.ndarray,
    n_folds: int = DEFAULT_FOLDS,
    c: float = DEFAULT_C,
    seed: int = 0,
) -> np.ndarray:
    """(n, k) class probabilities where each row comes from a probe trained on the other
    folds (stratified K-fold; logistic regression on standardised, PCA-reduced features)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    counts = np.bincount(labels, minlength=k)
    if k < 2 or (counts > 0).sum() < 2:
        raise LabelAuditError("label audit needs at least two classes with images")
    folds = int(min(n_folds, counts[counts > 0].min()))
    if folds < 2:
        raise LabelAuditError(
            f"label audit needs at least 2 images per class (smallest class has {counts.min()})"
        )
    x = StandardScaler().fit_transform(np.asarray(features, np.float64))
    dims = min(PROBE_DIMS, x.shape[1], len(x) - 1)
    x = PCA(dims, random_state=seed).fit_transform(x)  # label-free
    probs = np.zeros((len(labels), k), np.float64)
    skf = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in skf.split(x, labels):
        probe = LogisticRegression(C=c, max_iter=500)
        probe.fit(x[train_idx], labels[train_idx])
        probs[np.ix_(test_idx, probe.classes_)] = probe.predict_proba(x[test_idx])
    # A class absent from a training fold leaves zeros; keep rows summing to one.
    probs = np.clip(probs, 1e-9, None)
    return probs / probs.sum(axis=1, keepdims=True)


def find_label_issues(
    labels: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> list[LabelIssue]:
    """Images cleanlab's confident learning flags, most likely mistake first, each with the
    probe's suggested class and a score (1 - self-confidence)."""
    from cleanlab.filter import find_label_issues as cl_find
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels)
    if len(labels) == 0:
        return []
    # n_jobs=1: cleanlab otherwise forks a Pool, and a fork of a process running LanceDB or
    # ONNX Runtime threads (the app after a search) can hang for good (seen in the browser)
    ranked = cl_find(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    suggested = probs.argmax(1)
    return [
        LabelIssue(
            int(i),
            class_names[int(labels[i])],
            class_names[int(suggested[i])],
            float(1.0 - quality[i]),
        )
        for i in ranked
    ]


def label_scores(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-image label-issue score (1 - self-confidence) for every image (map colouring)."""
    return 1.0 - probs[np.arange(len(labels)), np.asarray(labels)]

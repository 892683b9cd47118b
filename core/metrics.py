"""Metrics shared by every model: accuracy, per-class precision/recall/F1, confusion
matrix, and a JSON-serialisable result with the timing of each stage."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


@dataclass
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationResult:
    """Everything a report, the CLI's --json and the dashboard need about one evaluation."""

    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_f1: float
    class_names: list[str]
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    n: int
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassificationResult:
        d = dict(d)
        d["per_class"] = {k: ClassMetrics(**v) for k, v in d["per_class"].items()}
        return cls(**d)

    def report(self) -> str:
        """A plain-text classification report (like sklearn's)."""
        width = max(12, *(len(c) for c in self.class_names))
        lines = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
        for name in self.class_names:
            m = self.per_class[name]
            lines.append(
                f"{name:>{width}}  {m.precision:9.3f} {m.recall:9.3f} {m.f1:9.3f} {m.support:9d}"
            )
        lines += [
            "",
            f"{'accuracy':>{width}}  {'':9} {'':9} {self.accuracy:9.3f} {self.n:9d}",
            f"{'macro avg':>{width}}  {self.macro_precision:9.3f} {self.macro_recall:9.3f}"
            f" {self.macro_f1:9.3f} {self.n:9d}",
        ]
        return "\n".join(lines)


def classification_result(
    y_true: Sequence[Any] | np.ndarray,
    y_pred: Sequence[Any] | np.ndarray,
    class_names: Sequence[str],
    timings: dict[str, float] | None = None,
) -> ClassificationResult:
    """Score predictions. Labels may be class names or integer indices into class_names."""
    names = list(class_names)
    y_true = _as_indices(y_true, names)
    y_pred = _as_indices(y_pred, names)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot evaluate zero predictions")
    labels = list(range(len(names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    _, _, wf, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    # Macro averages over classes present in y_true, as sklearn's report does.
    present = s > 0
    return ClassificationResult(
        accuracy=float(np.mean(y_true == y_pred)),
        macro_precision=float(np.mean(p[present])),
        macro_recall=float(np.mean(r[present])),
        macro_f1=float(np.mean(f[present])),
        weighted_f1=float(wf),
        class_names=names,
        per_class={
            n: ClassMetrics(float(p[i]), float(r[i]), float(f[i]), int(s[i]))
            for i, n in enumerate(names)
        },
        confusion_matrix=cm.astype(int).tolist(),
        n=len(y_true),
        timings=dict(timings or {}),
    )


def _as_indices(labels: Sequence[Any] | np.ndarray, names: list[str]) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= len(names)):
            raise ValueError(f"label index out of range for {len(names)} classes")
        return arr.astype(int)
    index = {n: i for i, n in enumerate(names)}
    try:
        return np.array([index[str(v)] for v in arr], dtype=int)
    except KeyError as exc:
        raise ValueError(f"unknown class label {exc.args[0]!r}; known: {names}") from None


class StageTimer:
    """Collects wall-clock seconds per named stage: `with timer("fit"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

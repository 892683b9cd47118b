"""Review decisions on a collection, kept in a JSON sidecar in the cache.

A user marks an image relabel (with the new label), keep or remove. Nothing moves or
rewrites the user's files: the decisions live in `<cache>/curate/reviews/<root key>.json`
(written atomically), and training, evaluation and the index apply them on request
(`--apply-review FILE`). Decisions are keyed by the image's real path (symlinks resolved).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.data.split import SplitData
from core.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

REVIEW_VERSION = 1
ACTIONS = ("relabel", "keep", "remove")
UNDECIDED = "undecided"  # no decision (yet): what the app offers beside ACTIONS


class ReviewError(ValueError):
    """The review file is missing, unreadable or holds an invalid decision."""


def real(path: str | Path) -> str:
    return os.path.realpath(str(path))


@dataclass
class Review:
    root: str
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # real path -> decision

    def decide(
        self,
        path: str | Path,
        action: str,
        label: str | None = None,
        given: str | None = None,
        suggested: str | None = None,
    ) -> None:
        if action == UNDECIDED:  # what the app's widget sets to take a decision back
            self.undo(path)
            return
        if action not in ACTIONS:
            raise ReviewError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        if action == "relabel" and not label:
            raise ReviewError("relabel needs the new label")
        self.decisions[real(path)] = {
            "action": action,
            "label": label if action == "relabel" else None,
            "given": given,
            "suggested": suggested,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def undo(self, path: str | Path) -> None:
        self.decisions.pop(real(path), None)

    def get(self, path: str | Path) -> dict[str, Any] | None:
        return self.decisions.get(real(path))

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(ACTIONS, 0)
        for d in self.decisions.values():
            out[d["action"]] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": REVIEW_VERSION, "root": self.root, "decisions": self.decisions}


def review_file(root: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the sidecar of the collection at `root` lives in the cache."""
    from core.config import resolve_cache_dir

    key = hashlib.sha1(real(root).encode()).hexdigest()[:16]
    return resolve_cache_dir(cache_dir) / "curate" / "reviews" / f"{key}.json"


def load_review(path: str | Path, root: str | Path | None = None) -> Review:
    """The sidecar at `path`; an absent file is an empty review of `root`."""
    path = Path(path)
    if not path.exists():
        if root is None:
            raise ReviewError(f"{path}: no such review file")
        return Review(real(root))
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise ReviewError(f"{path}: not a readable review file ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), dict):
        raise ReviewError(f"{path}: not a review file (no 'decisions' object)")
    root = data.get("root", "")
    if not isinstance(root, str):
        raise ReviewError(f"{path}: 'root' must be a folder name (text), not {_kind(root)}")
    for p, d in data["decisions"].items():
        _check_decision(path, p, d)
    return Review(root, dict(data["decisions"]))


def _kind(value: Any) -> str:
    """How a wrong JSON value is named in a message: its JSON type and a short repr."""
    names = {dict: "an object", list: "a list", bool: "true/false", int: "a number"}
    name = names.get(type(value), "a number" if isinstance(value, float) else type(value).__name__)
    return f"{name} ({str(value)[:40]})"


def _check_decision(path: Path, p: str, d: Any) -> None:
    """One decision of a review file, checked before any work: export, training and the index
    use labels as folder names and class names, so each is text (or null) or the file is
    refused whole."""
    if not isinstance(d, dict) or not isinstance(d.get("action"), str):
        raise ReviewError(f"{path}: invalid decision for {p} (not an object with an action)")
    if d["action"] not in ACTIONS:
        raise ReviewError(
            f"{path}: invalid decision for {p}: action {d['action'][:40]!r} is not one of "
            f"{', '.join(ACTIONS)}"
        )
    for key in ("label", "given", "suggested", "time"):
        value = d.get(key)
        if value is not None and not isinstance(value, str):
            raise ReviewError(f"{path}: '{key}' of {p} must be text, not {_kind(value)}")
    if d["action"] == "relabel" and not (d.get("label") or "").strip():
        raise ReviewError(f"{path}: relabel without a label for {p}")


def save_review(path: str | Path, review: Review) -> Path:
    return atomic_write_json(path, review.to_dict())


@dataclass
class Applied:
    """What applying a review changed."""

    removed: list[str] = field(default_factory=list)
    relabelled: list[tuple[str, str, str]] = field(default_factory=list)  # (path, old, new)
    kept: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"removed": len(self.removed), "relabelled": len(self.relabelled), "kept": self.kept}


def apply_review(
    items: Sequence[tuple[str, str | None]], review: Review | str | Path
) -> tuple[list[tuple[str, str | None]], Applied]:
    """(path, label) pairs with the review applied: removed images dropped, relabelled ones
    given their new label, the rest unchanged and in order."""
    if not isinstance(review, Review):
        review = load_review(review)
    out: list[tuple[str, str | None]] = []
    applied = Applied()
    for path, label in items:
        d = review.decisions.get(real(path))
        if d is None:
            out.append((path, label))
        elif d["action"] == "remove":
            applied.removed.append(str(path))
        elif d["action"] == "relabel":
            out.append((path, d["label"]))
            if d["label"] != label:
                applied.relabelled.append((str(path), str(label), d["label"]))
        else:
            out.append((path, label))
            applied.kept += 1
    if items and not out:  # scoring or exporting nothing is no result: say so before any work
        raise ReviewError(f"the review removes every one of the {len(items)} images given")
    log.info("review applied: %s", applied.to_dict())
    return out, applied


def apply_review_split(data: SplitData, review: Review | str | Path) -> tuple[SplitData, Applied]:
    """A SplitData with the review applied to every split it holds (train,
    test and a validation folder's images). A relabel to a class the training data does not
    have is an error (the head has no output for it)."""
    import dataclasses

    if not isinstance(review, Review):
        review = load_review(review)
    names = list(data.class_names)
    total = Applied()
    changes: dict[str, list] = {}
    for split in ("train", "test", "val"):
        paths = getattr(data, f"{split}_paths", None)
        if paths is None:
            continue
        labels = getattr(data, f"{split}_labels")
        items = [(p, names[y]) for p, y in zip(paths, labels, strict=True)]
        try:
            items, applied = apply_review(items, review)
        except ReviewError:
            raise ReviewError(f"the review removes every {split} image") from None
        unknown = sorted({str(lab) for _, lab in items if lab not in names})
        if unknown:
            raise ReviewError(f"review relabels images to classes not in the data: {unknown}")
        changes[f"{split}_paths"] = [p for p, _ in items]
        changes[f"{split}_labels"] = [names.index(lab) for _, lab in items]
        total.removed += applied.removed
        total.relabelled += applied.relabelled
        total.kept += applied.kept
    # A class with no training image left gets a head output never trained (recall 0): refused,
    # as a data set whose train/<class> folder is empty is.
    trained = set(changes["train_labels"])
    emptied = [c for i, c in enumerate(names) if i not in trained]
    if emptied:
        raise ReviewError(
            f"the review removes every training image of {', '.join(map(str, emptied))}; "
            "keep some, or train without that class"
        )
    return dataclasses.replace(data, **changes), total

"""ImageNet labels grouped into categories (the study's section 3.2: "house, cottage,
church" -> building): a JSON table like the keyword mapping, editable in the app.

Where the table lives: an explicit path, else $SCENESEEK_IMAGENET_GROUPS, else
`<cache>/imagenet_groups.json` when the user saved one from the app, else the packaged
default `core/resources/imagenet_groups.json`. Suggestions come from the data: which top-1
ImageNet labels co-occur with which predicted class.

The keyword search mode uses `ImagenetGroups.tags(top_labels)`: an image whose top label is
"church" also answers the keyword "building".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from core.config import GROUPS_ENV
from core.text.category_table import CategoryTable, TableError

USER_GROUPS_NAME = "imagenet_groups.json"


class GroupsError(TableError):
    """The table is not valid JSON, or names a label that is not an ImageNet class."""


def imagenet_names() -> list[str]:
    from core.resources import imagenet_classes  # not core.vision: a search never imports torch

    return imagenet_classes()


class ImagenetGroups(CategoryTable):
    """Top-1 ImageNet label -> category; an image carries the categories of its labels."""

    KIND = "ImageNet-label groups table"
    ITEM = "label"
    FILE_NAME = USER_GROUPS_NAME
    ENV = GROUPS_ENV
    ERROR = GroupsError

    def validate(self) -> None:
        super().validate()
        for cat in self.categories:
            if not cat:
                raise GroupsError("categories: a category name is empty")
        names = set(imagenet_names())
        for cat, labels in self.categories.items():
            unknown = [x for x in labels if x not in names]
            if unknown:
                raise GroupsError(f"categories.{cat}: not ImageNet class names: {unknown[:5]}")

    def tags(self, labels: Sequence[str]) -> list[str]:
        """The categories of an image's ImageNet labels (in label order, no repeats)."""
        idx = self.index()
        return list(dict.fromkeys(c for lab in labels for c in idx.get(lab, ())))

    def with_labels(self, additions: dict[str, Iterable[str]]) -> ImagenetGroups:
        return ImagenetGroups(self.added(additions), self.description, self.source)


def user_groups_path() -> Path:
    return ImagenetGroups.user_path()


def resolve_groups_path(explicit: str | Path | None = None) -> Path | None:
    """The table to load: explicit, $SCENESEEK_IMAGENET_GROUPS, the user's saved copy, or None
    (the packaged default)."""
    return ImagenetGroups.resolve_path(explicit)


def load_groups(path: str | Path | None = None) -> ImagenetGroups:
    return ImagenetGroups.load(path)


def cooccurrence(top1: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Counter]:
    """label -> Counter of predicted classes among images with that top-1 label."""
    out: dict[str, Counter] = {}
    for lab, cls in zip(top1, predicted, strict=True):
        if lab and cls:
            out.setdefault(lab, Counter())[cls] += 1
    return out


def suggest_groups(
    top1: Sequence[str],
    predicted: Sequence[str | None],
    groups: ImagenetGroups | None = None,
    min_count: int = 5,
    min_share: float = 0.7,
    category_of_class: dict[str, str] | None = None,
) -> list[dict]:
    """ImageNet labels not yet in the table that are the top-1 label of at least `min_count`
    images, of which at least `min_share` are predicted as one class: [{label, category,
    count, share}], most frequent first. `category_of_class` maps class names to table
    categories (e.g. "buildings" -> "building")."""
    listed = set(groups.index()) if groups is not None else set()
    alias = category_of_class or {}
    rows = []
    for lab, counts in cooccurrence(top1, predicted).items():
        n = sum(counts.values())
        cls, k = counts.most_common(1)[0]
        if lab in listed or n < min_count or k / n < min_share:
            continue
        rows.append(
            {"label": lab, "category": alias.get(cls, cls), "count": n, "share": round(k / n, 3)}
        )
    return sorted(rows, key=lambda r: (-r["count"], r["label"]))


def add_suggestions(groups: ImagenetGroups, suggestions: Sequence[dict]) -> ImagenetGroups:
    """The table with every suggested label (rows of `suggest_groups`) added to its category."""
    add: dict[str, list[str]] = {}
    for r in suggestions:
        add.setdefault(r["category"], []).append(r["label"])
    return groups.with_labels(add)


def frequent_pairs(predicted: Sequence[str | None], top1: Sequence[str], n: int = 30) -> list[dict]:
    """The `n` most frequent (predicted class, top-1 ImageNet label) pairs, less those of
    unlabelled images: [{predicted, top-1 ImageNet label, images}]."""
    counts = Counter(zip(predicted, top1, strict=True))
    return [
        {"predicted": p, "top-1 ImageNet label": lab, "images": k}
        for (p, lab), k in counts.most_common(n)
        if p
    ]


def class_aliases(class_names: Sequence[str], groups: ImagenetGroups) -> dict[str, str]:
    """Class folder name -> table category ('buildings' -> 'building') by plural forms."""
    from core.text.categories import plural_forms

    out = {}
    for c in class_names:
        for cat in groups.categories:
            if c == cat or c in plural_forms(cat) or cat in plural_forms(c):
                out[c] = cat
                break
    return out

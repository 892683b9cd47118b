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

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from core.config import GROUPS_ENV, resolve_cache_dir, resolve_table_path
from core.io import atomic_write_json

USER_GROUPS_NAME = "imagenet_groups.json"


class GroupsError(ValueError):
    """The table is not valid JSON, or names a label that is not an ImageNet class."""


def imagenet_names() -> list[str]:
    from core.resources import imagenet_classes  # not core.vision: a search never imports torch

    return imagenet_classes()


@dataclass
class ImagenetGroups:
    categories: dict[str, list[str]]
    description: str = ""
    source: str = "(in memory)"
    _index: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(
        cls, d: object, source: str = "(in memory)", known: Iterable[str] | None = None
    ) -> ImagenetGroups:
        """Validate and build; `known` (default: the 1000 ImageNet names) bounds the labels."""
        if not isinstance(d, dict) or not isinstance(d.get("categories"), dict):
            raise GroupsError('expected a JSON object with "categories": {category: [labels]}')
        names = set(known if known is not None else imagenet_names())
        cats: dict[str, list[str]] = {}
        for cat, labels in d["categories"].items():
            if not isinstance(cat, str) or not cat.strip():
                raise GroupsError("category names must be non-empty strings")
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise GroupsError(f"{cat}: expected a list of ImageNet label names")
            unknown = [x for x in labels if x not in names]
            if unknown:
                raise GroupsError(f"{cat}: not ImageNet class names: {unknown[:5]}")
            cats[cat.strip()] = list(dict.fromkeys(labels))
        return cls(cats, str(d.get("description", "")), source)

    @classmethod
    def from_json(cls, text: str, source: str = "(in memory)") -> ImagenetGroups:
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as exc:
            raise GroupsError(f"{source}: not valid JSON ({exc})") from exc

    @classmethod
    def default(cls) -> ImagenetGroups:
        text = resources.files("core.resources").joinpath(USER_GROUPS_NAME).read_text("utf-8")
        return cls.from_json(text, source="default (core/resources/imagenet_groups.json)")

    def to_dict(self) -> dict:
        return {"description": self.description, "categories": self.categories}

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    def index(self) -> dict[str, list[str]]:
        """label -> categories listing it."""
        if self._index is None:
            idx: dict[str, list[str]] = {}
            for cat, labels in self.categories.items():
                for lab in labels:
                    idx.setdefault(lab, []).append(cat)
            self._index = idx
        return self._index

    def tags(self, labels: Sequence[str]) -> list[str]:
        """The categories of an image's ImageNet labels (in label order, no repeats)."""
        idx = self.index()
        return list(dict.fromkeys(c for lab in labels for c in idx.get(lab, ())))

    def with_labels(self, additions: dict[str, Iterable[str]]) -> ImagenetGroups:
        cats = {c: list(v) for c, v in self.categories.items()}
        for cat, labels in additions.items():
            cats[cat] = list(dict.fromkeys([*cats.get(cat, []), *labels]))
        return ImagenetGroups(cats, self.description, self.source)


def user_groups_path() -> Path:
    return resolve_cache_dir() / USER_GROUPS_NAME


def resolve_groups_path(explicit: str | Path | None = None) -> Path | None:
    """The table to load: explicit, $SCENESEEK_IMAGENET_GROUPS, the user's saved copy, or None
    (the packaged default)."""
    return resolve_table_path(USER_GROUPS_NAME, GROUPS_ENV, explicit)


def load_groups(path: str | Path | None = None) -> ImagenetGroups:
    p = resolve_groups_path(path)
    if p is None:
        return ImagenetGroups.default()
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as exc:
        raise GroupsError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    return ImagenetGroups.from_json(text, source=str(p))


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

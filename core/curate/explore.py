"""What the Curate page shows of an audit, computed here so the page only lays it out (and
so the same choices hold wherever they are made): the flagged images still to review, the
given -> suggested counts, map colours, each image's search score, an export selection."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.curate.audit import Audit
from core.curate.export import UNLABELLED, ExportItem, of_labels, reviewed
from core.curate.label_issues import LabelIssue
from core.data.review import Review

COLOUR_BY = ("class", "prediction", "label-issue score", "search score")
EXPORT_WHAT = ("map selection", "a category", "reviewed data set", "likely label mistakes")


def short_path(path: str, root: str | Path) -> str:
    """`path` relative to the collection's root, else its file name."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


def audit_command(root: str | Path, run: str | None) -> str:
    """The CLI command that reproduces the page's audit."""
    return f"python -m core audit --images {root}" + (f" --run {run}" if run else "") + " --json"


def issue_pairs(issues: Sequence[LabelIssue]) -> dict[tuple[str, str], int]:
    """(given, suggested) -> number of flagged images."""
    return dict(Counter((i.given, i.suggested) for i in issues))


def to_review(audit: Audit, review: Review, hide_decided: bool) -> list[LabelIssue]:
    """The flagged images, most likely mistake first; without those decided when asked."""
    paths = audit.collection.paths
    return [i for i in audit.issues if not (hide_decided and review.get(paths[i.index]))]


def map_colours(
    audit: Audit, by: str, search: np.ndarray | None = None
) -> tuple[list | np.ndarray, bool]:
    """(colour of each image, numeric?) for the map's "Colour by" choice; the search score
    falls back to the class when there is none (`search` None: no index or no query)."""
    if by not in COLOUR_BY:
        raise ValueError(f"colour by one of {', '.join(COLOUR_BY)}, not {by!r}")
    if by == "prediction":
        return [y or UNLABELLED for y in audit.predicted()], False
    if by == "label-issue score":
        return audit.label_score(), True
    if by == "search score" and search is not None:
        return search, True
    return [y or UNLABELLED for y in audit.collection.labels], False


def search_scores(engine, query: str, paths: Sequence[str]) -> np.ndarray:
    """Each image's semantic search score for `query` (NaN where the index does not hold it);
    `engine` is a loaded core.search SearchEngine. Paths match with symlinks resolved."""
    resp = engine.search(query, "semantic", int(getattr(engine, "n", 100_000)))
    score = {os.path.realpath(r.path): r.score for r in resp.results}
    return np.array([score.get(os.path.realpath(p), np.nan) for p in paths])


def _score(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def export_items(
    audit: Audit,
    what: str,
    selection: Sequence[int] = (),
    review: Review | None = None,
    category: str | None = None,
) -> list[ExportItem]:
    """The images an export choice (EXPORT_WHAT) names, each with its label-issue score:
    the map selection (collection positions), the flagged images, or the whole collection
    with the review applied (only `category` for "a category")."""
    if what not in EXPORT_WHAT:
        raise ValueError(f"export one of {', '.join(EXPORT_WHAT)}, not {what!r}")
    c = audit.collection
    score = [_score(s) for s in audit.label_score()]
    if what == "map selection":
        return [ExportItem(c.paths[i], c.labels[i], score[i]) for i in selection]
    if what == "likely label mistakes":
        return [ExportItem(c.paths[i.index], i.given, i.score) for i in audit.issues]
    items = [ExportItem(p, y, s) for p, y, s in zip(c.paths, c.labels, score, strict=True)]
    items = reviewed(items, review or Review(str(c.root)))
    return of_labels(items, [category]) if what == "a category" else items

"""One class palette for every plot: a class name always gets the same colour, whichever page
or figure draws it and whichever other classes happen to be present."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# The Intel classes get fixed, well-separated colours (Tableau 10); any other name a stable
# pick from the rest, by a hash of the name (not by its position in one figure's legend).
KNOWN = {
    "buildings": "#b07aa1",
    "forest": "#59a14f",
    "glacier": "#17becf",
    "mountain": "#9c755f",
    "sea": "#1f5fa0",
    "street": "#f28e2b",
    "train": "#4e79a7",
    "test": "#e15759",
}
OTHERS = (
    "#edc948",
    "#ff9da7",
    "#bab0ac",
    "#8cd17d",
    "#86bcb6",
    "#d37295",
    "#fabfd2",
    "#a0cbe8",
    "#ffbe7d",
    "#499894",
)
UNKNOWN = "#9d9d9d"  # "(unlabelled)", "?" and the like


def class_colour(name: object) -> str:
    """The colour of one class name (case and surrounding spaces ignored)."""
    key = str(name).strip().lower()
    if key in KNOWN:
        return KNOWN[key]
    if not key or key.startswith("(") or key in {"?", "none", "nan"}:
        return UNKNOWN
    digest = hashlib.sha1(key.encode()).digest()
    return OTHERS[digest[0] % len(OTHERS)]


def colour_map(names: Iterable[object]) -> dict[str, str]:
    """{name: colour} for plotly express's color_discrete_map."""
    return {str(n): class_colour(n) for n in dict.fromkeys(names)}

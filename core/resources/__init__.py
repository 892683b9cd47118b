"""Data the app ships beside the code, installed with the package (pyproject's package-data):
mapping.json (keyword to category table), imagenet_groups.json (ImageNet label groups),
partial_search.json (partial fine-tuning settings chosen on validation), queries.csv (the
category query set), validation_queries.csv (category sentences of other words, for choosing settings and the relevance floor, never the figures), english_words.txt (the language note), imagenet_classes.json (the 1,000 ImageNet class names), int8_check.json (the int8
validation check that inference's precision "auto" reads: benchmarks/int8_check.py)."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path


def resource_path(name: str) -> Path:
    """A shipped file as a filesystem path (the package is installed as files, not zipped)."""
    return Path(str(resources.files(__name__).joinpath(name)))


def queries_csv() -> Path:
    """The category query set (`query,category` CSV; five sentences per Intel class): the
    Search page's evaluation, `evaluate-retrieval --queries`, the tests and the benchmarks
    score category retrieval on it."""
    return resource_path("queries.csv")


@functools.cache
def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names in torchvision's order (its weights' metadata), shipped
    as JSON so that a search process can name labels without importing torch."""
    return list(json.loads(resource_path("imagenet_classes.json").read_text("utf-8")))

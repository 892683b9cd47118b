"""Compatibility: the search engine moved into small modules (issue 10).

core.search.engine      SearchEngine, SearchResponse, SearchResult, MODES
core.search.query       query analysis (keywords, categories, embedding, excluded words)
core.search.retrievers  one retriever per mode over the LanceDB table
core.search.explain     the why of every result
core.search.table       the index's table opened for queries (read only)
"""

from core.search.engine import (
    DEFAULT_MODE,
    MODES,
    SearchEngine,
    SearchResponse,
    SearchResult,
    single_threaded,
)
from core.search.query import EXAMPLES, MAX_QUERY_CHARS, Query, category_alias
from core.search.retrievers import RRF_K

__all__ = [
    "DEFAULT_MODE",
    "EXAMPLES",
    "MAX_QUERY_CHARS",
    "MODES",
    "RRF_K",
    "Query",
    "SearchEngine",
    "SearchResponse",
    "SearchResult",
    "category_alias",
    "single_threaded",
]

"""Text-to-image search: a persisted LanceDB image index, ranking modes with explanations,
image similarity, and retrieval evaluation.

    from core.search import build_index, SearchEngine
    build_index("data/seg_test", "idx")                  # incremental, resumable
    engine = SearchEngine.load("idx")
    engine.search("A serene lake surrounded by forest.", mode="hybrid", k=10)

Modules: embed (images -> features, ImageNet top-5, run probabilities), store (the LanceDB
table and its metadata), textmap (MiniLM text encoder and the learned image -> text-space
mapping), rank (the search engine and its modes), evaluate (R@k, MRR, P@10, AP).
"""

from core.search.rank import MODES, SearchEngine, SearchResponse, SearchResult
from core.search.store import IndexStats, build_index

__all__ = ["MODES", "IndexStats", "SearchEngine", "SearchResponse", "SearchResult", "build_index"]

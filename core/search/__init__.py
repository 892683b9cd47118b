"""Text-to-image search: a persisted LanceDB image index that serves every query, ranking
modes with explanations, image similarity, and retrieval evaluation.

    from core.search import build_index, SearchEngine
    build_index("data/seg_test", "idx")                  # incremental, resumable
    engine = SearchEngine.load("idx")                    # or "s3://bucket/idx"
    engine.search("A serene lake surrounded by forest.", mode="hybrid", k=10)

Modules: backend (the encoder protocols both indexing engines use), embed (images ->
features, ImageNet top-5, run probabilities), index_format (the on-disk contract), files (the
images under a root), writer (build_index), ann (index upkeep), store (the index as the
library reads it), ray_engine (encoding on a Ray cluster), derive (what indexing computes for queries:
semantic column, categories, keyword model, relevance floors), image_to_text (MiniLM and
the image -> text-space mapping), textonnx (the query-side sentence encoder on ONNX Runtime),
table (the index opened read-only for queries), query (query analysis), retrievers (one per
mode), explain (the why of each result), engine (SearchEngine), evaluate (R@k, MRR, P@10,
AP).
"""

from core.search.engine import MODES, SearchEngine, SearchResponse, SearchResult
from core.search.writer import IndexConfig, IndexStats, build_index

__all__ = [
    "MODES",
    "IndexConfig",
    "IndexStats",
    "SearchEngine",
    "SearchResponse",
    "SearchResult",
    "build_index",
]

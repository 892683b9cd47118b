"""Text-to-image search: a persisted LanceDB image index that serves every query, ranking
modes with explanations, image similarity, and retrieval evaluation.

    from core.search import build_index, SearchEngine
    build_index("data/seg_test", "idx")                  # incremental, resumable
    engine = SearchEngine.load("idx")                    # or "s3://bucket/idx"
    engine.search("A serene lake surrounded by forest.", mode="hybrid", k=10)

Modules: backend (EncoderSpec, Encoded and the encoder protocols), encoders (the one encoder
factory: create_image_encoder, create_text_encoder), embed (backbone images -> features,
ImageNet top-5, run probabilities), clip (CLIP images and text), sentence (the MiniLM sentence
encoder, on torch or ONNX Runtime), semantic_map (each image's vector in the sentence space:
the fitted ridge map and label path), imagenet_labels (text of the ImageNet labels),
index_format (the on-disk contract), files (the images under a root), writer (build_index),
ann (index upkeep), store (the index as the library reads it), ray_engine (encoding on a Ray
cluster), derive (what indexing computes for queries: semantic column, categories, keyword
model, relevance floors), table (the index opened read-only for queries), query (query
analysis), retrievers (one per mode), explain (the why of each result), engine (SearchEngine,
the query server), evaluate (R@k, MRR, P@10, AP over the whole table).
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

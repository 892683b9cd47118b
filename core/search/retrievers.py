"""One small retriever per mode, each a search over the LanceDB table (core.search.table):

  keyword   BM25 full-text search over `text` (category, ImageNet labels, captions): the
            query's keywords as whole words (and their plural forms), each boosted by its
            weight from the analysis; excluded words are MUST_NOT clauses.
  category  dot-product search over `class_probs` with the query's category weights: the
            images ranked by the classifier's probability of the query's categories.
  semantic  vector search over `semantic` (the sentence space) with the query's embedding.
  image     vector search over `vector` (backbone features) with an image's features.
  hybrid    reciprocal-rank fusion of keyword, category and semantic over each one's top
            HYBRID_CANDIDATES rows, never over the whole table.

Every retriever returns `Hits`: rows with a score (higher is better) and how they were found
(exact, approximate or full-text).
"""

from __future__ import annotations

import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import core.search.category_index as category_index
from core.search.query import Query, word_forms
from core.search.table import RESULT_COLUMNS, ROWID, Hits, IndexTable

Columns = tuple[str, ...]

RRF_K = 60
HYBRID_CANDIDATES = 200  # per fused mode: "a few hundred", whatever the table's size
HYBRID_PARTS = ("keyword", "category", "semantic")


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(len(HYBRID_PARTS), thread_name_prefix="hybrid")


def tiebreak(path: str) -> int:
    """A fixed pseudo-random order for equal scores (never the folder order, which groups
    classes and would flatter tied modes)."""
    return int(hashlib.md5(path.encode()).hexdigest()[:8], 16)


def ordered(rows: list[dict]) -> list[dict]:
    """Best first; equal scores by path (rows a search returned as bare row ids: by id)."""
    return sorted(rows, key=lambda r: (-r["score"], tiebreak(str(r.get("path", r.get(ROWID))))))


class Retriever(Protocol):
    name: str

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits: ...


@dataclass
class KeywordRetriever:
    table: IndexTable
    name: str = "keyword"

    def fts_query(self, q: Query) -> Any:
        from lancedb.query import BooleanQuery, MatchQuery, Occur

        clauses = []
        for kw, w in q.keywords.items():
            for form in sorted(word_forms(kw)):
                clauses.append((Occur.SHOULD, MatchQuery(form, "text", boost=float(max(w, 0.05)))))
        if not clauses:
            return None
        for neg in q.negatives:
            for form in sorted(word_forms(neg)):
                clauses.append((Occur.MUST_NOT, MatchQuery(form, "text")))
        return BooleanQuery(clauses)

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        fq = self.fts_query(q)
        if fq is None or q.empty:
            return Hits([], "full-text")
        hits = self.table.text_search(fq, k, where, columns)
        hits.rows = ordered(hits.rows)
        return hits


@dataclass
class CategoryRetriever:
    table: IndexTable
    classes: list[str]
    name: str = "category"

    def weights(self, q: Query) -> np.ndarray:
        """The query's category weights; no category word: the nearest category by meaning."""
        w = np.asarray(q.class_weights, np.float64)
        if not w.any() and q.nearest:
            w = np.zeros(len(self.classes))
            w[self.classes.index(q.nearest[0][0])] = 1.0
        return w

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        w = self.weights(q)
        if q.empty or not self.classes or not w.any() or "class_probs" not in self.table.columns:
            return Hits([], "exact")
        w = w / w.sum()
        plan = category_index.plan(w, k, self.table.meta.get("category_index"))
        if plan is not None and plan.column in self.table.columns:
            hits = self.table.vector_search(
                "class_probs", w, k, plan.where(where), metric="dot", columns=columns
            )
            if plan.exact([r["score"] for r in hits.rows], k):
                hits.rows = ordered(hits.rows)
                hits.detail = {**hits.detail, "prefilter": plan.column}
                return hits
        hits = self.table.vector_search("class_probs", w, k, where, metric="dot", columns=columns)
        hits.rows = ordered(hits.rows)
        return hits


@dataclass
class VectorRetriever:
    """semantic (column `semantic`) or image (column `vector`): cosine similarity."""

    table: IndexTable
    column: str
    name: str

    def retrieve_vector(
        self, v: np.ndarray, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        v = np.asarray(v, np.float32)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        hits = self.table.vector_search(self.column, v, k, where, columns=columns)
        hits.rows = ordered(hits.rows)
        return hits

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        if q.empty or q.embedding is None:
            return Hits([], "exact")
        return self.retrieve_vector(q.embedding, k, where, columns)


@dataclass
class HybridRetriever:
    parts: dict[str, Any]  # name -> retriever
    candidates: int = HYBRID_CANDIDATES
    name: str = "hybrid"

    def fused(
        self, q: Query, where: str | None, candidates: int, key: str = "path"
    ) -> tuple[list[dict], set]:
        """Every row among the modes' top `candidates`, by fused score (RRF), and how each
        mode's search was answered. Candidates carry only their `key` (the path, or the
        table's row id, which a search returns without reading any column) and scores."""
        fused: dict[Any, float] = {}
        rows: dict[Any, dict] = {}
        ranks: dict[str, dict[Any, int]] = {}
        searches = set()
        # the three searches run at once: LanceDB releases the GIL while it searches
        futures = {
            name: _pool().submit(self.parts[name].retrieve, q, candidates, where, (key,))
            for name in HYBRID_PARTS
        }
        for name in HYBRID_PARTS:
            hits = futures[name].result()
            searches.add(hits.search)
            ranks[name] = {}
            for rank, r in enumerate(hits.rows, 1):
                fused[r[key]] = fused.get(r[key], 0.0) + 1.0 / (RRF_K + rank)
                ranks[name][r[key]] = rank
                rows.setdefault(r[key], {key: r[key]})[f"{name}_score"] = r["score"]
        out = []
        for ident, s in fused.items():
            row = rows[ident]
            row["score"] = s
            row["ranks"] = {m: ranks[m].get(ident) for m in HYBRID_PARTS}
            out.append(row)
        return ordered(out), searches

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        """The k best fused rows. The candidates are row ids (reading 600 rows' paths cost
        more than the three searches at 1M rows); the rows that can make the top k, those
        scoring at least the k-th, are then read whole in one take and ordered as always."""
        out, searches = self.fused(q, where, max(k, self.candidates), key=ROWID)
        if len(out) > k:
            out = [r for r in out if r["score"] >= out[k - 1]["score"]]
        table = self.parts["semantic"].table
        full = table.rows_by_rowid(
            [r[ROWID] for r in out], ("path", *(c for c in columns if c != "path"))
        )
        top = ordered([{**full[r[ROWID]], **r} for r in out if r[ROWID] in full])[:k]
        for r in top:
            r.pop(ROWID, None)
        search = "approximate" if "approximate" in searches else "exact"
        return Hits(top, search, {"candidates": self.candidates, "parts": sorted(searches)})

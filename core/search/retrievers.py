"""One small retriever per mode, each a search over the LanceDB table (core.search.table):

  keyword   the study's method: the classifier's probability of the query's mapping-table
            categories, plus BM25 over `text` (whole ImageNet labels, head nouns, the groups
            table's categories, captions); excluded words are MUST_NOT clauses.
  category  dot-product search over `class_probs` with the query's category weights: the
            images ranked by the classifier's probability of the query's categories.
  semantic  vector search over `semantic` (the sentence space) with the query's embedding.
  image     vector search over `vector` (backbone features) with an image's features.
  hybrid    a weighted sum of keyword, category and semantic scores over each one's top
            HYBRID_CANDIDATES rows, never over the whole table: a query about a category
            (CATEGORY_GATE) weighs the category FUSION_WEIGHTS["category"], any other query
            (a description) only CATEGORY_PRIOR.

Every retriever returns `Hits`: rows with a score (higher is better) and how they were found
(exact, approximate or full-text).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.search.category_index import plan as category_plan
from core.search.index_format import GROUP_TOKEN, HEAD_TOKEN, LABEL_TOKEN, token
from core.search.query import Query, word_forms
from core.search.table import RESULT_COLUMNS, ROWID, Hits, IndexTable

Columns = tuple[str, ...]

# Hybrid: semantic cosine + a category weight x the category probability (keyword 0), chosen
# on validation queries by benchmarks/answers_tuning.py: the setting most often at or above the
# best single mode on both caption R@10 and category P@10 over bootstrap resamples of 3,505
# validation captions (701 photos, resampled by photo) and 90 category sentences (pools the
# size of the figures'), never on queries.csv or the figures' captions.
# A query about a category (its embedding at least CATEGORY_GATE from a category's sentences:
# 13 of the 3,505 captions, 60 of the 90 sentences) weighs the category 0.1: the cosine still
# orders, the classifier settles what the cosine cannot tell apart. Any other query, a
# description, weighs it CATEGORY_PRIOR, which moves a score by at most 0.01. On captions every
# category weight lost photos on balance (the previous rule, 0.3 and 0.03 at gate 0.5: 55 lost,
# 31 found); the chosen one 14 lost, 11 found (R@10 0.3812 against 0.3820), P@10 0.925 against
# category's 0.921. No setting is at or above both parts in most resamples (this one in
# 24%): README, "Search answers".
FUSION_WEIGHTS = {"semantic": 1.0, "category": 0.1, "keyword": 0.0}
CATEGORY_GATE = 0.55
CATEGORY_PRIOR = 0.01
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


# The keyword mode's tiers: a query word as a whole ImageNet label, as a label's head noun,
# a query category through the groups table, a caption word (BM25 boosts); then the text part's
# share beside the category tier (the classifier's probability of the query's mapping-table
# categories). Chosen on validation queries (benchmarks/answers_tuning.py), never on queries.csv.
W_LABEL, W_HEAD, W_GROUP, W_CAPTION = 1.0, 0.5, 1.0, 0.3
KEYWORD_TEXT_SHARE = 0.25


def category_weights(q: Query, classes: list[str]) -> np.ndarray:
    """The query's category weights (mapping table, learned word weights); without a category
    word, the nearest category by meaning (the study's table cannot list every word)."""
    w = np.asarray(q.class_weights, np.float64)
    if not w.any() and q.nearest and q.nearest[0][0] in classes:
        w = np.zeros(len(classes))
        w[classes.index(q.nearest[0][0])] = 1.0
    return w


@dataclass
class KeywordRetriever:
    """The study's method: query keywords -> categories (mapping table; a query without a
    table word: its nearest category by meaning) -> images by their predicted category and
    the categories the groups table gives their ImageNet labels; then
    query words as whole labels or head nouns; then caption words."""

    table: IndexTable
    classes: list[str] = dataclasses.field(default_factory=list)
    name: str = "keyword"
    text_share: float = KEYWORD_TEXT_SHARE

    def fts_query(self, q: Query) -> Any:
        from lancedb.query import BooleanQuery, MatchQuery, Occur

        clauses = []

        def add(term: str, boost: float) -> None:
            clauses.append((Occur.SHOULD, MatchQuery(term, "text", boost=float(max(boost, 0.01)))))

        words = list(q.keywords.items())
        pairs = [(a + b, 1.0) for a, b in zip(q.tokens, q.tokens[1:], strict=False)]
        for kw, w in [*words, *pairs]:
            for form in sorted(word_forms(kw)):
                add(token(LABEL_TOKEN, form), W_LABEL * w)
                add(token(HEAD_TOKEN, form), W_HEAD * w)
        for kw, w in words:
            for form in sorted(word_forms(kw)):
                add(form, W_CAPTION * w)
        for cat, w in q.table_categories.items():
            add(token(GROUP_TOKEN, cat), W_GROUP * w)
        if not clauses:
            return None
        for neg in q.negatives:
            for form in sorted(word_forms(neg)):
                clauses.append((Occur.MUST_NOT, MatchQuery(form, "text")))
        return BooleanQuery(clauses)

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        if q.empty:
            return Hits([], "full-text")
        key = ROWID if ROWID in columns else "path"
        n = max(k, HYBRID_CANDIDATES)
        fq = self.fts_query(q)
        text = self.table.text_search(fq, n, where, columns).rows if fq is not None else []
        top = max((r["score"] for r in text), default=0.0)
        rows: dict[Any, dict] = {}
        for r in text:
            rows[r[key]] = {**r, "score": self.text_share * r["score"] / top}
        w = category_weights(q, self.classes)
        if w.any() and "class_probs" in self.table.columns:
            hits = self.table.vector_search(
                "class_probs", w / w.sum(), n, where, metric="dot", columns=columns
            )
            for r in hits.rows:
                got = rows.setdefault(r[key], {**r, "score": 0.0})
                got["score"] += r["score"]
        return Hits(ordered(list(rows.values()))[:k], "full-text")


@dataclass
class CategoryRetriever:
    table: IndexTable
    classes: list[str]
    name: str = "category"

    def weights(self, q: Query) -> np.ndarray:
        return category_weights(q, self.classes)

    def retrieve(
        self, q: Query, k: int, where: str | None, columns: Columns = RESULT_COLUMNS
    ) -> Hits:
        w = self.weights(q)
        if q.empty or not self.classes or not w.any() or "class_probs" not in self.table.columns:
            return Hits([], "exact")
        w = w / w.sum()
        plan = category_plan(w, k, self.table.meta.get("category_index"))
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
    weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(FUSION_WEIGHTS))
    gate: float = CATEGORY_GATE
    prior: float = CATEGORY_PRIOR
    name: str = "hybrid"

    def part_weights(self, q: Query) -> dict[str, float]:
        """Each part's weight for this query: the full category weight only for a query about
        a category; a description (a caption) weighs its category only as a light prior."""
        w = {name: self.weights.get(name, 0.0) for name in HYBRID_PARTS}
        if not self.about_category(q):
            w["category"] = min(w["category"], self.prior)
        return w

    def about_category(self, q: Query) -> bool:
        """Whether the query's embedding is close to one category's sentences."""
        return bool(q.nearest) and q.nearest[0][1] >= self.gate

    def fused(
        self, q: Query, where: str | None, candidates: int, key: str = "path"
    ) -> tuple[list[dict], set]:
        """Every row among the modes' top `candidates`, by fused score (the weighted sum of
        the modes' scores: semantic cosine, category probability, keyword score; a row missing
        from a mode's candidates counts 0 there), and how each
        mode's search was answered. Candidates carry only their `key` (the path, or the
        table's row id, which a search returns without reading any column) and scores."""
        fused: dict[Any, float] = {}
        rows: dict[Any, dict] = {}
        ranks: dict[str, dict[Any, int]] = {}
        searches = set()
        weights = self.part_weights(q)
        # a part weighing nothing is not searched (its matches would only crowd the why)
        used = [name for name in HYBRID_PARTS if weights[name] > 0]
        # the searches run at once: LanceDB releases the GIL while it searches
        futures = {
            name: _pool().submit(self.parts[name].retrieve, q, candidates, where, (key,))
            for name in used
        }
        for name in used:
            hits = futures[name].result()
            searches.add(hits.search)
            ranks[name] = {}
            for rank, r in enumerate(hits.rows, 1):
                fused[r[key]] = fused.get(r[key], 0.0) + weights[name] * r["score"]
                ranks[name][r[key]] = rank
                rows.setdefault(r[key], {key: r[key]})[f"{name}_score"] = r["score"]
        out = []
        for ident, s in fused.items():
            row = rows[ident]
            row["score"] = s
            row["ranks"] = {m: ranks.get(m, {}).get(ident) for m in HYBRID_PARTS}
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

"""The query server: every query served by the LanceDB index, for every mode.

    engine = SearchEngine.load("idx")          # opens the table; loads no vectors
    engine.search("A serene lake surrounded by forest.", mode="hybrid", k=10)
    engine.similar(path=...)                   # image to image
    engine.search_image_text(engine.classify_image(photo), "at sunset")

Loading reads index.json, opens the table and loads the query-side models (the text encoder
from core.search.encoders, the saved semantic map and keyword model); it never fits or writes
anything, so a read-only index folder (a shared disk, object storage) serves queries. A query
reads the rows it returns: memory does not grow with the collection. Whether each query used
an ANN index or an exact scan is in its response (`search`).

Text, image and image+text queries take one path: `_serving` (one thread; a damaged table is
one SearchIndexError naming the index), `_retrieve` (over-fetch when words are excluded, leave
them out) and `_result` (explanations). Whole-table scoring for evaluation lives in
core.search.evaluate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.search.backend import TextBackend
from core.search.derive import LABELS_FILE, SEMANTIC
from core.search.explain import Explainer, image_why
from core.search.maintenance import file_missing, table_reads
from core.search.query import (
    EXAMPLES,
    MAX_K,
    MAX_QUERY_CHARS,
    Analyzer,
    Query,
    QueryError,
    check_k,
    mentions,
)
from core.search.retrievers import (
    CategoryRetriever,
    HybridRetriever,
    KeywordRetriever,
    Retriever,
    VectorRetriever,
)
from core.search.store import SearchIndexError
from core.search.table import RESULT_COLUMNS, Hits, IndexTable, where_clause

if TYPE_CHECKING:
    from core.search.clip import ClipEncoder
    from core.search.embed import ImageEncoder
    from core.search.semantic_map import SemanticMap
    from core.text.categories import Mapping

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODE",
    "EXAMPLES",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MODES",
    "MODE_HELP",
    "SearchEngine",
    "SearchResponse",
    "SearchResult",
    "single_threaded",
]

MODES = ("keyword", "category", "semantic", "hybrid")
# The default is the mode that measured best over both evaluations (Flickr8k caption queries
# and Intel category queries, see the closing note of issue 5): semantic.
DEFAULT_MODE = "semantic"
MODE_HELP = {
    "keyword": "the study's method: query keywords → categories (mapping table) → images by "
    "predicted category and grouped ImageNet labels; then words as whole labels, then captions",
    "category": "query → categories (mapping table + learned word weights) → images by the "
    "classifier's probability of those categories",
    "semantic": "the query's MiniLM embedding against each image's learned embedding and tags",
    "hybrid": "a weighted sum of the three scores (weights chosen on validation queries)",
}
SEARCH_WORDS = {  # how the index answered a query, in words
    "exact": "exact search",
    "approximate": "approximate (ANN) search",
    "full-text": "full-text (BM25) search",
}
IMAGE_TEXT_WEIGHT = 0.5  # text + image query: the photo's share of the query vector
NEGATIVE_OVERFETCH = 3  # excluded words: fetch 3k (+20) rows, keep the first k without them


@dataclass
class SearchResult:
    rank: int
    path: str
    score: float
    category: str
    category_prob: float
    top_labels: list[tuple[str, float]]
    why: list[str]
    label: str = ""  # class folder, when the layout has one
    split: str = ""
    caption: str = ""
    below_floor: bool = False  # scored below the mode's relevance floor
    floor_score: float | None = None  # the score the floor judges, on the floor's scale
    missing: bool = False  # the file is gone since it was indexed (`index --prune` drops it)


@dataclass
class SearchResponse:
    query: str
    mode: str
    results: list[SearchResult]
    keywords: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # the query's, as index classes
    nearest_categories: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pool: int = 0
    seconds: float = 0.0
    search: str = "exact"  # how the index answered: exact, approximate (ANN) or full-text
    search_detail: dict = field(default_factory=dict)  # ANN settings used, hybrid parts
    floor: float | None = None  # the mode's relevance floor (None: the mode has none)
    no_good_match: bool = False  # results exist but none clears the floor
    negatives: list[str] = field(default_factory=list)  # excluded words

    def to_dict(self) -> dict:
        return asdict(self)

    def describe_search(self) -> str:
        """How the index answered, truthfully (the engine reports it per query)."""
        text = SEARCH_WORDS.get(self.search, self.search)
        d = self.search_detail
        if self.search == "approximate" and d.get("nprobes"):
            text += f" (nprobes {d['nprobes']}, refine ×{d['refine_factor']})"
        return text

    def summary(self) -> str:
        """One line: what the query was read as, results of pool, time, search, floor."""
        floor = f" · relevance floor {self.floor:.2f}" if self.floor is not None else ""
        tail = (
            f"{len(self.results)} of {self.pool} · {self.seconds * 1000:.0f} ms · "
            f"{self.describe_search()}{floor}"
        )
        if not (self.keywords or self.categories):
            return tail
        nearest = ", ".join(f"{c} {s:.2f}" for c, s in self.nearest_categories)
        return (
            f"keywords: {', '.join(self.keywords) or '–'} · categories: "
            f"{', '.join(self.categories) or '–'} · nearest by meaning: {nearest} · {tail}"
        )


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run one query's small tensor and matrix work on one thread: on a shared 2-core CPU,
    torch's and OpenBLAS's thread pools spin against each other (measured ~550 ms per query
    with their defaults against ~25 ms with one thread each). torch is only touched when
    something already imported it: a text query process never does."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        if torch is not None and n:
            torch.set_num_threads(n)


class SearchEngine:
    """Load once per process with `SearchEngine.load(index)`; then search many times."""

    def __init__(
        self,
        table: IndexTable,
        text: TextBackend,
        mapping: Mapping,
        keyword_model: Any = None,  # core.text's keyword model, as derive saved it
        semantic: SemanticMap | None = None,  # None: CLIP, or indexed without a mapping
        imagenet: list[str] | None = None,
    ) -> None:
        self.table = table
        self.meta = table.meta
        self.text = text
        self.mapping = mapping
        self.keyword_model = keyword_model
        self.semantic = semantic
        self.imagenet = imagenet or []
        self.classes: list[str] = list(self.meta.get("classes") or [])
        self.category_source: str = self.meta.get("category_source") or "none"
        self.floors: dict = self.meta.get("floor") or {}
        self._encoder: ImageEncoder | ClipEncoder | None = None
        self._pools: dict[str | None, int] = {}
        self.analyzer = Analyzer(
            text,
            mapping,
            keyword_model,
            self.classes,
            self._class_emb(),
            self._vocab(),
            self._stop_words(),
        )
        self.explainer = Explainer(self.classes, semantic)
        self.semantic_retriever = VectorRetriever(table, "semantic", "semantic")
        self.retrievers: dict[str, Retriever] = {
            "keyword": KeywordRetriever(table, self.classes),
            "category": CategoryRetriever(table, self.classes),
            "semantic": self.semantic_retriever,
        }
        self.hybrid_retriever = HybridRetriever(dict(self.retrievers))
        self.retrievers["hybrid"] = self.hybrid_retriever
        self.image_retriever = VectorRetriever(table, "vector", "image")

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        text: TextBackend | None = None,
        mapping: Mapping | None = None,
        keyword_model: Any = "auto",
    ) -> SearchEngine:
        from core.search.encoders import create_text_encoder
        from core.text.categories import Mapping

        table = IndexTable.open(index_dir)
        if table.n == 0:
            raise SearchIndexError(f"{index_dir}: the index holds no images")
        sem = table.meta.get("semantic") or {}
        semantic = None
        if sem.get("mapping"):
            folder = table.side_path(sem["mapping"])
            if folder is None:
                raise SearchIndexError(
                    f"{index_dir}: its text mapping {sem['mapping']} is missing; "
                    "re-run `python -m core index` to rebuild it"
                )
            from core.search.semantic_map import SemanticMap

            semantic = SemanticMap.load(folder)
        if keyword_model == "auto":
            keyword_model = _load_keyword_model(table)
        text = text or create_text_encoder(table.meta)
        labels = table.side_path(LABELS_FILE)
        imagenet = json.loads(labels.read_text()) if labels is not None else []
        return cls(table, text, mapping or Mapping.load(), keyword_model, semantic, imagenet)

    @property
    def index_dir(self) -> Path:
        return Path(self.table.location)

    @property
    def n(self) -> int:
        return self.table.n

    def _class_emb(self) -> np.ndarray:
        m = self.semantic
        if m is not None and m.class_emb is not None and list(m.tag_classes) == self.classes:
            return np.asarray(m.class_emb, np.float32)
        if not self.classes:
            return np.zeros((0, int(self.text.dim)), np.float32)
        from core.search.semantic_map import class_sentences, normalize

        return normalize(
            np.stack([self.text.encode(class_sentences(c)).mean(0) for c in self.classes])
        )

    def _vocab(self) -> set[str]:
        from core.search.query import WORD

        vocab: set[str] = set(self.classes)
        for lab in self.imagenet:
            vocab.update(WORD.findall(lab.lower()))
        for ws in self.mapping.categories.values():
            vocab.update(ws)
        vocab.update(getattr(self.keyword_model, "idf", {}) or {})
        return vocab

    def _stop_words(self) -> set[str]:
        prep = getattr(self.keyword_model, "prep", None)
        if prep is None:
            from core.text.preprocess import Preprocessor

            prep = Preprocessor.default()
        return set(prep.stop_words)

    # --- analysis (also used by evaluation) ---------------------------------------------------

    def analyze(self, query: str) -> Query:
        return self.analyzer.analyze(query)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.analyzer.embed(texts)

    def prime(self, queries: Sequence[str]) -> None:
        self.analyzer.prime(queries)

    # --- the one query path ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """Around every query: one thread, and a damaged table (an overwritten data file) is
        one SearchIndexError naming the index, not a Lance panic."""
        with single_threaded(), table_reads(self.index_dir):
            yield

    def check(self, mode: str, category: str | None = None) -> None:
        if mode not in MODES:
            raise QueryError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if category and category not in self.classes:
            raise QueryError(
                f"unknown category {category!r}; the index has {', '.join(self.classes) or 'none'}"
            )
        if mode in ("semantic", "hybrid") and not self.table.has_semantic():
            raise SearchIndexError(f"{self.table.location}: {self._why_not_derived()}")

    def _why_not_derived(self) -> str:
        if self.meta.get("no_mapping"):
            return (
                "the semantic column was not written (indexed with --no-mapping); "
                "re-run `python -m core index` without it"
            )
        if self.meta.get("derived") is False:
            return (
                "the index is incomplete: its last `index` run was interrupted, or is still "
                "running, before the semantic column was written; run `python -m core index` again"
            )
        return "the semantic column was never written; re-run `python -m core index`"

    @functools.cached_property
    def underived(self) -> int:
        """Rows committed whose derived columns were never written (an `index` run killed
        between the two, or still running): no mode can return them yet."""
        if self.meta.get("derived") is not False:
            return 0
        return int(self.table.tbl.count_rows(f"{SEMANTIC} IS NULL"))

    def _derived_only(self, where: str | None) -> str | None:
        """`where`, limited to derived rows when some are not (so pools count what a query can
        return)."""
        if not self.underived:
            return where
        return f"{SEMANTIC} IS NOT NULL" + (f" AND ({where})" if where else "")

    def pool(self, where: str | None) -> int:
        if where not in self._pools:
            self._pools[where] = int(self.table.tbl.count_rows(where) if where else self.n)
        return self._pools[where]

    def _retrieve(
        self, fetch: Callable[[int], Hits], k: int, negatives: Sequence[str]
    ) -> tuple[list[dict], Hits]:
        """The k best rows `fetch(n)` finds; with excluded words it fetches 3k (+20) rows and
        keeps the first k that do not mention them."""
        n = k * NEGATIVE_OVERFETCH + 20 if negatives else k
        hits = fetch(min(n, self.n))
        rows = hits.rows
        if negatives:
            # the captions too: a held-out photo's captions are not in its full-text column
            rows = [
                r
                for r in rows
                if not mentions(
                    " ".join([r.get("text", ""), *(r.get("captions") or [])]), negatives
                )
            ]
        return rows[:k], hits

    # --- text and image+text ------------------------------------------------------------------

    def search(
        self,
        query: str,
        mode: str = DEFAULT_MODE,
        k: int = 10,
        category: str | None = None,
        split: str | None = None,
        label: str | None = None,
    ) -> SearchResponse:
        """Rank the index for a text query in one mode, within an optional category (the
        predicted one), split or label (class folder)."""
        with self._serving():
            start = time.perf_counter()
            self.check(mode, category)
            k = check_k(k)
            q = self.analyze(query)
            where = where_clause(category=category, split=split, label=label)
            resp = self._answer(q, mode, k, where)
            resp.seconds = time.perf_counter() - start
            return resp

    def search_analyzed(
        self, q: Query, mode: str, k: int, where: str | None = None
    ) -> SearchResponse:
        """`search` for a query already analyzed (benchmarks time the search alone)."""
        with self._serving():
            return self._answer(q, mode, k, where)

    def search_image_text(
        self,
        info: dict,
        text: str,
        k: int = 10,
        category: str | None = None,
        weight: float = IMAGE_TEXT_WEIGHT,
    ) -> SearchResponse:
        """A photo steered by words: the photo's semantic vector (`classify_image(...)
        ["semantic"]`) blended with the text's embedding, searched on the semantic column."""
        with self._serving():
            start = time.perf_counter()
            k = check_k(k)
            self.check("semantic", category)
            if info.get("semantic") is None:
                raise QueryError("this index cannot place a photo in the sentence space")
            q = self.analyze(text)
            v = np.asarray(info["semantic"], np.float32)
            if q.embedding is not None:
                v = weight * v + (1 - weight) * q.embedding
            v = v / max(float(np.linalg.norm(v)), 1e-12)
            steered = dataclasses.replace(
                q, text=q.text or "(image)", embedding=v, empty=False, no_content=False
            )
            resp = self._answer(steered, "semantic", k, where_clause(category=category), weight)
            resp.query, resp.mode, resp.categories = q.text, "image+text", []
            resp.notes = [n for n in q.notes if not n.startswith("Empty query")]
            resp.seconds = time.perf_counter() - start
            return resp

    def _answer(
        self,
        q: Query,
        mode: str,
        k: int,
        where: str | None = None,
        photo: float | None = None,
    ) -> SearchResponse:
        """Everything after analysis: retrieve through the index, leave out excluded words,
        explain, mark the results below the relevance floor. `photo` (a photo steered by
        words, its share of `q.embedding`): that vector searched on the semantic column, no
        floor (the floors were chosen for text queries)."""
        start = time.perf_counter()
        resp = SearchResponse(
            query=q.text,
            mode=mode,
            results=[],
            keywords=list(q.keywords),
            categories=[c for c, w in zip(self.classes, q.class_weights, strict=True) if w > 0],
            nearest_categories=q.nearest,
            notes=list(q.notes),
            negatives=list(q.negatives),
        )
        resp.pool = self.pool(self._derived_only(where))
        if self.underived:
            resp.notes.append(
                f"{self.underived} of {self.n} images are not searchable yet: the last `index` "
                "run was interrupted, or is still running, before their semantic vectors and "
                "categories were written. Run `python -m core index` again."
            )
        if photo is None and (q.empty or q.no_content):
            resp.seconds = time.perf_counter() - start
            return resp
        # semantic explanations need the backbone vector; hybrid's floor the semantic one
        columns = RESULT_COLUMNS + {"semantic": ("vector",), "hybrid": ("vector", "semantic")}.get(
            mode, ()
        )
        if photo is None:
            retriever = self.retrievers[mode]
            rows, hits = self._retrieve(
                lambda n: retriever.retrieve(q, n, where, columns), k, q.negatives
            )
        else:
            v = q.embedding
            rows, hits = self._retrieve(
                lambda n: self.semantic_retriever.retrieve_vector(v, n, where, columns),
                k,
                q.negatives,
            )
        resp.search, resp.search_detail = hits.search, hits.detail
        if mode == "keyword" and not rows:
            near = ", ".join(f"{c} ({s:.2f})" for c, s in q.nearest)
            resp.notes.append(
                "No keyword of the query matches an image's labels, predicted category or "
                f"captions. Nearest categories by meaning: {near}. Try the semantic or hybrid "
                "mode."
            )
        if photo is None:
            for r in rows:
                if mode == "semantic":
                    r["semantic_score"] = r["score"]
                elif r.get("semantic") is not None:
                    r["semantic_score"] = float(
                        np.dot(np.asarray(r["semantic"], np.float32), q.embedding)
                    )
        resp.results = [
            self._result(i + 1, r, q, mode, r.get("vector")) for i, r in enumerate(rows)
        ]
        if photo is None:
            self._apply_floor(resp, rows, mode)
        else:
            for res, r in zip(resp.results, rows, strict=True):
                res.why.insert(
                    0, f"photo ({photo:.0%}) + words ({1 - photo:.0%}) ~ image: {r['score']:.2f}"
                )
        if mode in ("category", "keyword") and not np.any(q.class_weights) and q.nearest:
            resp.notes.append(
                f"No category word in the query; ranked by the nearest category by meaning, "
                f"{q.nearest[0][0]} ({q.nearest[0][1]:.2f})."
            )
        resp.seconds = time.perf_counter() - start
        return resp

    def floor(self, mode: str) -> float | None:
        """The relevance floor of a mode's scores (chosen at index time on training data)."""
        key = {"semantic": "semantic", "hybrid": "semantic", "category": "category"}.get(mode)
        f = self.floors.get(key) if key else None
        return float(f["value"]) if f else None

    def _apply_floor(self, resp: SearchResponse, rows: list[dict], mode: str) -> None:
        floor = self.floor(mode)
        resp.floor = floor
        if floor is None or not resp.results:
            return
        for res, r in zip(resp.results, rows, strict=True):
            s = r.get("semantic_score") if mode == "hybrid" else r["score"]
            res.floor_score = None if s is None else round(float(s), 4)
            res.below_floor = s is not None and s < floor
        if all(r.below_floor for r in resp.results):
            resp.no_good_match = True
            what = "semantic similarity" if mode in ("semantic", "hybrid") else "probability"
            resp.notes.append(
                f"No good match: no result reaches the relevance floor ({what} {floor:.2f}, "
                "chosen when the index was built); these are the closest there are."
            )

    # --- images -------------------------------------------------------------------------------

    def similar(
        self,
        path: str | None = None,
        feature: np.ndarray | None = None,
        k: int = 10,
        category: str | None = None,
        exclude_self: bool = True,
    ) -> SearchResponse:
        """Images like an indexed one (`path`) or a feature vector, ranked by backbone-feature
        cosine similarity (vector search on `vector`)."""
        with self._serving():
            start = time.perf_counter()
            k = check_k(k)
            self.check(DEFAULT_MODE if self.table.has_semantic() else "keyword", category)
            src = None
            if feature is None:
                got = self.table.rows_by_path(
                    [str(path)], ("path", "vector", "top_labels", "category")
                )
                if not got:
                    raise QueryError(f"{path}: not in the index")
                src = got[str(path)]
                feature = np.asarray(src["vector"], np.float32)
            where = where_clause(category=category)
            image = feature
            rows, hits = self._retrieve(
                lambda n: self.image_retriever.retrieve_vector(image, n, where),
                k + (1 if src else 0),
                (),
            )
            rows = [r for r in rows if not (exclude_self and src and r["path"] == path)][:k]
            results = []
            for i, r in enumerate(rows):
                res = self._result(i + 1, r, None, "image")
                res.why = image_why(r, src)
                results.append(res)
            return SearchResponse(
                query=path or "(image)",
                mode="image",
                results=results,
                pool=self.pool(where),
                seconds=time.perf_counter() - start,
                search=hits.search,
                search_detail=hits.detail,
            )

    def encoder(self) -> ImageEncoder | ClipEncoder:
        """The image encoder the index was built with (loaded on first use: an upload)."""
        if self._encoder is None:
            from core.search.encoders import create_image_encoder

            self._encoder = create_image_encoder(self.meta.get("encoder", {}))
        return self._encoder

    def classify_image(self, image: Any) -> dict:
        """An uploaded PIL image: its category probabilities, ImageNet top-5, backbone
        features and semantic vector (no fitting: the saved mapping embeds it)."""
        enc_model = self.encoder()
        enc = enc_model.encode_images([image])
        feat = enc.features[0]
        if enc.probs is not None:
            probs = enc.probs[0]
        elif self.semantic is not None and self.semantic.has_category_head:
            probs = self.semantic.category_proba(feat[None])[0]
        else:
            probs = np.zeros(0)
        if enc.semantic is not None:
            sem = enc.semantic[0]
        elif self.semantic is not None:
            sem = self.semantic.embed_encoded(enc)[0]
        else:
            sem = None
        names = self.imagenet or list(getattr(enc_model, "imagenet_classes", []))
        return {
            "feature": feat,
            "semantic": sem,
            "categories": sorted(
                ((c, float(p)) for c, p in zip(self.classes, probs, strict=False)),
                key=lambda t: -t[1],
            ),
            "top_labels": [
                (names[int(j)], float(p))
                for j, p in zip(enc.top_ids[0], enc.top_probs[0], strict=True)
            ],
        }

    # --- results ------------------------------------------------------------------------------

    def _result(
        self, rank: int, r: dict, q: Query | None, mode: str, feature: np.ndarray | None = None
    ) -> SearchResult:
        caps = r.get("captions") or []
        probs = r.get("probs") or []
        res = SearchResult(
            rank=rank,
            path=r["path"],
            score=round(float(r["score"]), 5),
            category=r.get("category") or "",
            category_prob=round(float(max(probs)) if probs else 0.0, 4),
            top_labels=[
                (lab, round(float(p), 4))
                for lab, p in zip(r.get("top_labels") or [], r.get("top_probs") or [], strict=False)
            ],
            why=[],
            label=r.get("label") or "",
            split=r.get("split") or "",
            caption=caps[0] if caps else "",
            missing=file_missing(r["path"], list(self.meta.get("roots") or {})),
        )
        if q is not None:
            res.why = self.explainer.explain(r, q, mode, feature)
        return res


def _load_keyword_model(table: IndexTable) -> Any:
    """The keyword model saved at index time (None when none or not signed by this user)."""
    entry = table.meta.get("keyword_model")
    if not entry:
        return None
    path = table.side_path(entry["file"])
    if path is None:
        return None
    from core.io import load_signed_pickle

    return load_signed_pickle(path)

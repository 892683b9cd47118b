"""The search engine: the whole index in memory as arrays, four text ranking modes and image
similarity, every result with a score and a why.

Modes (`MODES`):
  keyword   the study's method as a baseline, minus its fault: the query's keywords (mapping
            table, HMM, TF-IDF weights from core.text.analyze_text) matched as whole words
            (with plural forms) against each image's top ImageNet label and predicted category
            name; the study matched substrings of one label.
  category  query -> categories (mapping table + learned word weights), images ranked by the
            classifier's probability of those categories.
  semantic  the query's MiniLM embedding against each image's learned embedding (the ridge
            mapping from backbone features) blended with the embedding of its tag text.
  hybrid    reciprocal-rank fusion of the three.

At ~10k images an exact scan is a few matrix-vector products, faster than any ANN index; the
LanceDB table still answers vector, filter and full-text queries for larger collections.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.search import store
from core.search.textmap import (
    MapConfig,
    SemanticMap,
    TextEncoder,
    cached_text_embeddings,
    class_sentences,
    ensure_mapping,
    normalize,
)

log = logging.getLogger(__name__)

MODES = ("keyword", "category", "semantic", "hybrid")
# The default is the mode that measured best over both evaluations (Flickr8k caption queries
# and Intel category queries, see the closing note of issue 5): semantic. Hybrid (RRF) came
# close but below it on both, so it is not the default.
DEFAULT_MODE = "semantic"
MAX_QUERY_CHARS = 400
RRF_K = 60
SEMANTIC_IMAGE_WEIGHT = 0.75  # learned image embedding vs tag-text embedding
EXAMPLES = (
    "The bird flies in the forest.",
    "A serene lake surrounded by forest.",
    "The beach is full of tourists.",
    "The desert is vast and dry.",
    "A river flows through the valley.",
    "The sky is clear and blue.",
)
WORD = re.compile(r"[a-z]+")


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Query:
    """A query after analysis: what every mode needs."""

    text: str
    tokens: list[str]
    keywords: dict[str, float]  # keyword -> weight, best first
    class_weights: np.ndarray  # (C,) query -> index classes
    category_why: dict[str, str]  # class -> why
    embedding: np.ndarray | None  # (384,)
    word_embeddings: dict[str, np.ndarray]
    nearest: list[tuple[str, float]]
    notes: list[str]
    empty: bool = False


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run one query's small tensor and matrix work on one thread. On a shared 2-core CPU,
    torch's and OpenBLAS's thread pools spin against each other: measured ~550 ms per query
    with their defaults against ~25 ms with one thread each."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(n)


def category_alias(name: str, classes: Sequence[str]) -> str | None:
    """The index class a mapping-table category names ('building' -> 'buildings')."""
    from core.text.mapping import plural_forms

    forms = plural_forms(name)
    for c in classes:
        if c == name or c in forms or name in plural_forms(c):
            return c
    return None


def _stable_tiebreak(paths: Sequence[str]) -> np.ndarray:
    """A fixed pseudo-random order for equal scores (never the folder order, which groups
    classes and would flatter tied modes)."""
    return np.array([int(hashlib.md5(p.encode()).hexdigest()[:8], 16) for p in paths])


def fit_keyword_model(
    index_dir: Path, rows: dict[str, list], meta: dict, semantic: SemanticMap | None, mapping: Any
) -> Any:
    """The keyword capability's model (TF-IDF weights, HMM tagger, learned category word
    weights) fitted on the index's captions file without the held-out photos' captions;
    cached in the index folder. None when the index has no captions."""
    import dataclasses
    import pickle

    from core.data.captions import CaptionFileError, read_captions
    from core.io import atomic_write_bytes
    from core.text import PipelineConfig, run_pipeline

    held = set(semantic.config.get("heldout_images", [])) if semantic is not None else set()
    files = [r["captions"] for r in meta.get("roots", {}).values() if r.get("captions")]
    source = next((Path(f) for f in files if Path(f).is_file()), None)
    if source is None:
        return None
    st = source.stat()
    key = hashlib.sha256(
        repr((str(source), st.st_size, st.st_mtime_ns, sorted(held), mapping.to_json())).encode()
    ).hexdigest()[:16]
    path = index_dir / "keyword_models" / f"{key}.pkl"
    if path.exists():
        try:
            return pickle.loads(path.read_bytes())  # our own cache file, written below
        except Exception as exc:  # stale or damaged cache: refit
            log.warning("refitting keyword model %s: %s", path, exc)
    try:
        cs = read_captions(source)
        cs = dataclasses.replace(cs, captions=[c for c in cs.captions if c.image not in held])
        report = run_pipeline(cs, mapping, PipelineConfig(run_yake=False, eval_sample=200))
    except (CaptionFileError, ValueError) as exc:
        log.warning("no keyword model: %s", exc)
        return None
    atomic_write_bytes(path, pickle.dumps(report.model))
    return report.model


class SearchEngine:
    """Load once per process with `SearchEngine.load(index_dir)`; then search many times."""

    def __init__(
        self,
        index_dir: Path,
        meta: dict,
        rows: dict[str, list],
        feats: np.ndarray,
        text: TextEncoder,
        semantic: SemanticMap | None,
        mapping: Any,
        keyword_model: Any = None,
    ) -> None:
        self.index_dir = index_dir
        self.meta = meta
        self.rows = rows
        self.paths: list[str] = rows["path"]
        self.n = len(self.paths)
        self.feats = feats
        self.text = text
        self.semantic = semantic
        self.mapping = mapping
        self.keyword_model = keyword_model
        self._encoder = None
        self._primed: dict[str, np.ndarray] = {}
        self._setup_categories()
        self._setup_text_space()
        self._setup_keywords()
        self.tiebreak = _stable_tiebreak(self.paths)
        self.splits = np.array(rows["split"])
        self.labels = np.array(rows["label"])

    # --- loading ------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        index_dir: str | Path,
        text: TextEncoder | None = None,
        mapping: Any = None,
        keyword_model: Any = "auto",
        map_config: MapConfig | None = None,
    ) -> SearchEngine:
        from core.text.mapping import Mapping

        index_dir = Path(index_dir)
        meta = store.read_meta(index_dir)
        table = store.load_rows(index_dir)
        if table.num_rows == 0:
            raise store.IndexError_(f"{index_dir}: the index holds no images")
        d = table.schema.field("vector").type.list_size
        feats = table.column("vector").combine_chunks().values.to_numpy().reshape(-1, d)
        rows = table.drop_columns(["vector"]).to_pydict()
        text = text or TextEncoder.load()
        semantic = ensure_mapping(index_dir, feats, rows, meta, lambda: text, map_config)
        mapping = mapping or Mapping.load()
        if keyword_model == "auto":
            keyword_model = fit_keyword_model(index_dir, rows, meta, semantic, mapping)
        return cls(index_dir, meta, rows, np.ascontiguousarray(feats), text, semantic,
                   mapping, keyword_model)  # fmt: skip

    def _setup_categories(self) -> None:
        """Per-image category probabilities: the run's when indexed with one, else the
        category head fitted with the semantic mapping."""
        run_classes = self.meta.get("encoder", {}).get("class_names") or []
        probs = self.rows["probs"]
        if run_classes and all(len(p) == len(run_classes) for p in probs):
            self.classes = list(run_classes)
            self.probs = np.array(probs, dtype=np.float32)
            self.category_source = f"trained run {self.meta['encoder'].get('run')}"
        elif self.semantic is not None and self.semantic.has_category_head:
            self.classes = list(self.semantic.class_names)
            self.probs = self.semantic.category_proba(self.feats)
            self.category_source = "category head fitted on the index's labelled training images"
        else:
            self.classes, self.probs = [], np.zeros((self.n, 0), np.float32)
            self.category_source = "none (index a run or labelled training images)"
        self.pred = (
            np.array([self.classes[i] for i in self.probs.argmax(1)])
            if self.classes
            else np.array([""] * self.n)
        )
        self.pred_prob = self.probs.max(1) if self.classes else np.zeros(self.n, np.float32)

    def _setup_text_space(self) -> None:
        from core.vision.backbones import imagenet_classes

        self.imagenet = imagenet_classes()
        cache = self.index_dir / "text_cache"
        self.label_emb = cached_text_embeddings(self.text, self.imagenet, cache, "imagenet")
        self.class_emb = normalize(
            np.stack([self.text.encode(class_sentences(c)).mean(0) for c in self.classes])
        ) if self.classes else np.zeros((0, self.label_emb.shape[1]), np.float32)  # fmt: skip
        top_ids = np.array(self.rows["top_ids"], dtype=int)
        top_p = np.array(self.rows["top_probs"], dtype=np.float32)
        self.top_ids, self.top_p = top_ids, top_p
        tag = np.einsum("nk,nkd->nd", top_p, self.label_emb[top_ids])
        if self.classes:
            tag += self.probs @ self.class_emb
        self.tag_emb = normalize(tag)
        self.img_emb = self.semantic.image_embed(self.feats) if self.semantic is not None else None
        vocab: set[str] = set()
        for lab in self.imagenet:
            vocab.update(WORD.findall(lab.lower()))
        for caps in self.rows["captions"]:
            for c in caps or []:
                vocab.update(WORD.findall(c.lower()))
        for ws in self.mapping.categories.values():
            vocab.update(ws)
        self.vocab = vocab | set(self.classes)
        prep = getattr(self.keyword_model, "prep", None)
        if prep is None:
            from core.text.preprocess import Preprocessor

            prep = Preprocessor.default()
        self.stop_words = set(prep.stop_words)

    def _setup_keywords(self) -> None:
        """Inverted index: word form -> (rows, strength, what it matched)."""
        from core.text.mapping import plural_forms

        post: dict[str, list[tuple[int, float, str]]] = {}
        for i in range(self.n):
            top = self.imagenet[self.top_ids[i, 0]]
            for w in set(WORD.findall(top.lower())):
                for f in plural_forms(w):
                    post.setdefault(f, []).append(
                        (i, float(self.top_p[i, 0]), f"top ImageNet label '{top}'")
                    )
            if self.classes:
                c = str(self.pred[i])
                for f in plural_forms(c):
                    post.setdefault(f, []).append(
                        (i, float(self.pred_prob[i]), f"predicted category '{c}'")
                    )
        self.postings = {
            f: (np.array([r for r, _, _ in v]), np.array([s for _, s, _ in v], np.float32),
                [d for _, _, d in v])
            for f, v in post.items()
        }  # fmt: skip

    # --- queries ------------------------------------------------------------------------------

    def analyze(self, query: str) -> Query:
        from core.text import analyze_text

        notes: list[str] = []
        text = " ".join((query or "").split())
        if not text or not WORD.search(text.lower()):
            notes.append(
                f"Empty query: type a few words describing a scene, for example '{EXAMPLES[1]}'."
            )
            return Query(text, [], {}, np.zeros(len(self.classes)), {}, None, {}, [], notes, True)
        if len(text) > MAX_QUERY_CHARS:
            text = text[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
            notes.append(f"Long query: only its first {len(text)} characters were used.")
        a = analyze_text(text, self.mapping, self.keyword_model)
        weights = np.zeros(len(self.classes))
        why: dict[str, str] = {}
        for cat in a.categories:
            c = category_alias(cat, self.classes)
            if c is None:
                notes.append(f"'{cat}' is a category of the mapping table but not of this index.")
                continue
            weights[self.classes.index(c)] = max(weights[self.classes.index(c)], a.scores[cat])
            words = [w for w in a.tokens if cat in self.mapping.forms().get(w, ())]
            why[c] = (
                f"mapping-table word {', '.join(repr(w) for w in words)}"
                if words
                else f"learned word weights ({a.scores[cat]:.2f})"
            )
        keywords = {k: float(a.word_scores.get(k, 0.5)) for k in a.keywords}
        batch = self.embed([text, *list(keywords)[:6]])
        emb, word_emb = batch[0], dict(zip(list(keywords)[:6], batch[1:], strict=True))
        sims = self.class_emb @ emb if self.classes else np.zeros(0)
        nearest = [(self.classes[i], round(float(sims[i]), 3)) for i in np.argsort(-sims)[:3]]
        words = WORD.findall(text.lower())
        known = sum(w in self.vocab or w in self.stop_words for w in words)
        ascii_share = sum(ch.isascii() for ch in text) / len(text)
        if ascii_share < 0.8 or (len(words) >= 2 and known / max(1, len(words)) < 0.4):
            notes.append(
                "This query does not look like English: the keyword and category modes only "
                "know English words; the semantic mode matches by meaning but was trained on "
                "English."
            )
        if not a.tokens:
            notes.append("No content words (only stop words): keyword and category modes "
                         "have nothing to match.")  # fmt: skip
        return Query(text, a.tokens, keywords, weights, why, emb, word_emb, nearest, notes)

    def embed(self, texts: list[str]) -> np.ndarray:
        """MiniLM embeddings, from the primed cache where present."""
        cache = self._primed
        missing = [t for t in texts if t not in cache]
        fresh = dict(zip(missing, self.text.encode(missing), strict=True)) if missing else {}
        return np.stack([cache[t] if t in cache else fresh[t] for t in texts])

    def prime(self, queries: Sequence[str]) -> None:
        """Encode many queries (and their keywords) in large batches before scoring them one
        by one: an evaluation of a thousand captions needs a few batches, not 2,000 calls."""
        from core.text import analyze_text

        texts = set()
        for qtext in queries:
            text = " ".join(qtext.split())[:MAX_QUERY_CHARS]
            texts.add(text)
            texts.update(analyze_text(text, self.mapping, self.keyword_model).keywords[:6])
        todo = sorted(t for t in texts if t not in self._primed)
        self._primed.update(zip(todo, self.text.encode(todo), strict=True))

    def mode_scores(self, q: Query, mode: str) -> np.ndarray:
        """Scores of every image for one mode (higher is better); NaN-free."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if q.empty:
            return np.zeros(self.n, np.float32)
        if mode == "keyword":
            return self._keyword_scores(q)[0]
        if mode == "category":
            return self._category_scores(q)[0]
        if mode == "semantic":
            return self._semantic_scores(q)
        return self._hybrid_scores(q)

    def _keyword_scores(self, q: Query) -> tuple[np.ndarray, dict[int, list[str]]]:
        s = np.zeros(self.n, np.float32)
        for kw, w in q.keywords.items():
            hit = self.postings.get(kw)
            if hit is not None:
                rows, strength, _ = hit
                s[rows] += w * (1.0 + strength)  # a match counts; its confidence breaks ties
        return s, {}

    def _category_scores(self, q: Query) -> tuple[np.ndarray, np.ndarray]:
        w = q.class_weights
        if not w.any() and q.nearest:  # no category word: fall back to the nearest by meaning
            w = np.zeros(len(self.classes))
            w[self.classes.index(q.nearest[0][0])] = 1.0
        if not w.any():
            return np.zeros(self.n, np.float32), w
        return (self.probs @ (w / w.sum())).astype(np.float32), w

    def _semantic_scores(self, q: Query) -> np.ndarray:
        tag = self.tag_emb @ q.embedding
        if self.img_emb is None:
            return tag
        return (
            SEMANTIC_IMAGE_WEIGHT * (self.img_emb @ q.embedding) + (1 - SEMANTIC_IMAGE_WEIGHT) * tag
        )

    def _order(self, scores: np.ndarray) -> np.ndarray:
        return np.lexsort((self.tiebreak, -scores))

    def _hybrid_scores(self, q: Query) -> np.ndarray:
        fused = np.zeros(self.n)
        for mode in ("keyword", "category", "semantic"):
            s = self.mode_scores(q, mode)
            if not s.any():
                continue
            rank = np.empty(self.n)
            rank[self._order(s)] = np.arange(1, self.n + 1)
            contrib = 1.0 / (RRF_K + rank)
            if mode == "keyword":
                contrib[s <= 0] = 0.0  # unmatched images have no keyword rank
            fused += contrib
        return fused.astype(np.float32)

    # --- public API ---------------------------------------------------------------------------

    def mask(self, category: str | None = None, split: str | None = None,
             label: str | None = None) -> np.ndarray:  # fmt: skip
        m = np.ones(self.n, dtype=bool)
        if category:
            m &= self.pred == category
        if split:
            m &= self.splits == split
        if label:
            m &= self.labels == label
        return m

    def top_k(self, scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
        s = scores.astype(np.float64, copy=True)
        if mask is not None:
            s[~mask] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        if k <= 0:
            return np.zeros(0, dtype=int)
        cand = np.argpartition(-s, k - 1)[:k] if k < self.n else np.arange(self.n)
        # Include every candidate tied with the k-th score so the tie-break decides fairly.
        kth = s[cand].min()
        cand = np.flatnonzero(s >= kth) if np.sum(s >= kth) <= 4 * k + 64 else cand
        return cand[np.lexsort((self.tiebreak[cand], -s[cand]))][:k]

    def search(self, query: str, *args: Any, **kw: Any) -> SearchResponse:
        """Rank the index for a text query; see `_search` for the arguments."""
        with single_threaded():
            return self._search(query, *args, **kw)

    def _search(
        self,
        query: str,
        mode: str = DEFAULT_MODE,
        k: int = 10,
        category: str | None = None,
        split: str | None = None,
        label: str | None = None,
    ) -> SearchResponse:
        start = time.perf_counter()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if category and category not in self.classes:
            raise ValueError(f"unknown category {category!r}; the index has {self.classes}")
        q = self.analyze(query)
        resp = SearchResponse(
            query=q.text, mode=mode, results=[], keywords=list(q.keywords),
            categories=[c for c, w in zip(self.classes, q.class_weights, strict=True) if w > 0],
            nearest_categories=q.nearest, notes=list(q.notes),
        )  # fmt: skip
        m = self.mask(category, split, label)
        resp.pool = int(m.sum())
        if q.empty:
            resp.seconds = time.perf_counter() - start
            return resp
        scores = self.mode_scores(q, mode)
        if mode == "keyword" and not (scores[m] > 0).any():
            near = ", ".join(f"{c} ({s:.2f})" for c, s in q.nearest)
            resp.notes.append(
                "No keyword of the query matches an image's top ImageNet label or predicted "
                f"category. Nearest categories by meaning: {near}. Try the semantic or hybrid "
                "mode."
            )
            resp.seconds = time.perf_counter() - start
            return resp
        if mode == "category" and not q.class_weights.any() and q.nearest:
            resp.notes.append(
                f"No category word in the query; ranked by the nearest category by meaning, "
                f"{q.nearest[0][0]} ({q.nearest[0][1]:.2f})."
            )
        if mode == "keyword":
            m = m & (scores > 0)
        idx = self.top_k(scores, k, m)
        resp.results = [self._result(r + 1, int(i), float(scores[i]), q, mode)
                        for r, i in enumerate(idx)]  # fmt: skip
        resp.seconds = time.perf_counter() - start
        return resp

    def similar(self, *args: Any, **kw: Any) -> SearchResponse:
        """Images like an indexed one or a feature vector; see `_similar`."""
        with single_threaded():
            return self._similar(*args, **kw)

    def _similar(
        self,
        path: str | None = None,
        feature: np.ndarray | None = None,
        k: int = 10,
        category: str | None = None,
        exclude_self: bool = True,
    ) -> SearchResponse:
        """Images ranked by backbone-feature cosine similarity to an indexed image or a vector."""
        start = time.perf_counter()
        if feature is None:
            if path not in self._row_of:
                raise ValueError(f"{path}: not in the index")
            src = self._row_of[path]
            feature = self.feats[src]
        else:
            src = None
        f = normalize(np.asarray(feature, np.float32))
        scores = self.feats @ f
        m = self.mask(category)
        if exclude_self and src is not None:
            m[src] = False
        idx = self.top_k(scores, k, m)
        results = []
        for r, i in enumerate(idx):
            res = self._result(r + 1, int(i), float(scores[i]), None, "image")
            res.why = self._why_image(int(i), float(scores[i]), src)
            results.append(res)
        return SearchResponse(query=path or "(image)", mode="image", results=results,
                              pool=int(m.sum()), seconds=time.perf_counter() - start)  # fmt: skip

    @functools.cached_property
    def _row_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def encoder(self) -> Any:
        """The image encoder the index was built with (loaded on first use)."""
        if self._encoder is None:
            from core.search.embed import load_encoder

            e = self.meta.get("encoder", {})
            self._encoder = load_encoder(e.get("backbone", "efficientnet_lite0"), e.get("run"),
                                         e.get("image_size"))  # fmt: skip
        return self._encoder

    def classify_image(self, image: Any) -> dict:
        """An uploaded PIL image: its category probabilities, ImageNet top-5 and features."""
        enc = self.encoder().encode_images([image])
        feat = enc.features[0]
        if enc.probs is not None:
            probs = enc.probs[0]
        elif self.semantic is not None and self.semantic.has_category_head:
            probs = self.semantic.category_proba(feat[None])[0]
        else:
            probs = np.zeros(0)
        return {
            "feature": feat,
            "categories": sorted(
                ((c, float(p)) for c, p in zip(self.classes, probs, strict=False)),
                key=lambda t: -t[1],
            ),
            "top_labels": [(self.imagenet[int(j)], float(p))
                           for j, p in zip(enc.top_ids[0], enc.top_probs[0], strict=True)],
        }  # fmt: skip

    # --- explanations -------------------------------------------------------------------------

    def _result(self, rank: int, i: int, score: float, q: Query | None, mode: str) -> SearchResult:
        caps = self.rows["captions"][i] or []
        res = SearchResult(
            rank=rank, path=self.paths[i], score=round(score, 5), category=str(self.pred[i]),
            category_prob=round(float(self.pred_prob[i]), 4),
            top_labels=[(self.imagenet[int(j)], round(float(p), 4))
                        for j, p in zip(self.top_ids[i], self.top_p[i], strict=True)],
            why=[], label=str(self.labels[i]), split=str(self.splits[i]),
            caption=caps[0] if caps else "",
        )  # fmt: skip
        if q is not None:
            res.why = self.explain(i, q, mode)
        return res

    def explain(self, i: int, q: Query, mode: str) -> list[str]:
        """Which words matched what, for one image and mode."""
        if mode == "keyword":
            return self._why_keyword(i, q) or ["no keyword matched"]
        if mode == "category":
            return self._why_category(i, q)
        if mode == "semantic":
            return self._why_semantic(i, q)
        out = []
        for sub in ("keyword", "category", "semantic"):
            why = self.explain(i, q, sub)
            if why and why != ["no keyword matched"]:
                out += [f"{sub}: {w}" for w in why]
        return out

    def _why_keyword(self, i: int, q: Query) -> list[str]:
        out = []
        for kw in q.keywords:
            hit = self.postings.get(kw)
            if hit is None:
                continue
            rows, strength, desc = hit
            where = np.flatnonzero(rows == i)
            for j in where:
                out.append(f"'{kw}' = {desc[j]} ({strength[j]:.2f})")
        return out

    def _why_category(self, i: int, q: Query) -> list[str]:
        w = q.class_weights
        if not w.any():
            if not q.nearest:
                return []
            c = q.nearest[0][0]
            p = self.probs[i, self.classes.index(c)]
            return [f"query nearest category by meaning: {c} ({q.nearest[0][1]:.2f}); "
                    f"P({c}) = {p:.2f}"]  # fmt: skip
        return [
            f"query → {c} ({q.category_why.get(c, '')}); P({c}) = {self.probs[i, j]:.2f}"
            for j, c in enumerate(self.classes)
            if w[j] > 0
        ]

    def _why_semantic(self, i: int, q: Query) -> list[str]:
        out = []
        if self.img_emb is not None:
            out.append(
                f"learned image embedding ~ query: {float(self.img_emb[i] @ q.embedding):.2f}"
            )
        out.append(f"tag text ~ query: {float(self.tag_emb[i] @ q.embedding):.2f}")
        tags = [(self.imagenet[int(j)], self.label_emb[int(j)]) for j in self.top_ids[i]]
        if self.classes:
            tags.append((str(self.pred[i]), self.class_emb[self.classes.index(str(self.pred[i]))]))
        for word, e in q.word_embeddings.items():
            sims = [(float(v @ e), t) for t, v in tags]
            s, t = max(sims)
            if s >= 0.35:
                out.append(f"'{word}' ~ tag '{t}' ({s:.2f})")
        return out

    def _why_image(self, i: int, score: float, src: int | None) -> list[str]:
        out = [f"backbone feature cosine {score:.2f}"]
        if src is not None:
            shared = set(self.top_ids[i]) & set(self.top_ids[src])
            if shared:
                out.append("shared ImageNet labels: " +
                           ", ".join(self.imagenet[int(j)] for j in shared))  # fmt: skip
            if self.classes and self.pred[i] == self.pred[src]:
                out.append(f"same predicted category: {self.pred[i]}")
        return out

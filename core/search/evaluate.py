"""Retrieval quality per ranking mode.

Caption queries (any caption format core.data.captions reads; photos matched to indexed
images by file name): every caption of an indexed photo the text mapping never saw is a
query whose one relevant image is its photo. The pool is every indexed image (`pool="all"`,
the default) or only those never-seen photos (`"heldout"`, which flatters: a small pool makes
any ranking look good). Captions of photos the mapping was fitted on are refused as queries,
or scored apart. Metrics: recall@1/5/10, median rank, mean reciprocal rank, and the share of
fitted photos among the caption file's photos in the top 10, the query's own photo left out
(against their share of those photos in the pool: a mapping biased toward its own training
photos shows here). Tied scores take the mean rank of their tie group, so a mode
that scores everything alike gets no credit for the folder order.

Category queries (CSV `query,category`): relevant images are those whose class folder is the
query's category, in the pool (the test split by default). Metrics: precision@10 and
average precision, with ties broken by a fixed pseudo-random order.
"""

from __future__ import annotations

import csv
import functools
import io
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.io import read_regular
from core.search.engine import SearchEngine, single_threaded
from core.search.query import Query
from core.search.retrievers import tiebreak
from core.search.table import Hits

Progress = Callable[[int, int], None]  # (queries scored, of all): modes x queries
QUERIES_MAX_BYTES = 16 * 1024 * 1024  # a category-query file is a few kilobytes
EVALUATION_KINDS = {"queries": "category queries", "captions": "caption queries"}


class EvaluationError(ValueError):
    """Nothing to evaluate (no queries, empty pool, unknown category)."""


# --- the whole table, scored through the query path's retrievers -------------------------------


class WholeTable:
    """What evaluation needs beyond a query: path, split, label, captions and predicted
    category of every row, and every row's score for a mode, from the same retrievers a
    query uses asked for the whole table. Memory grows with the table, so a query never
    touches this; `whole_table` keeps one per engine."""

    def __init__(self, engine: SearchEngine) -> None:
        self.engine = engine
        self.meta = engine.meta
        self.semantic = engine.semantic
        self.analyze = engine.analyze
        self.prime = engine.prime

    @functools.cached_property
    def rows(self) -> dict[str, list]:
        t = self.engine.table.columns_table(["path", "split", "label", "captions", "category"])
        return t.to_pydict()

    @property
    def paths(self) -> list[str]:
        return self.rows["path"]

    @functools.cached_property
    def labels(self) -> np.ndarray:
        return np.array(self.rows["label"])

    @functools.cached_property
    def splits(self) -> np.ndarray:
        return np.array(self.rows["split"])

    @functools.cached_property
    def pred(self) -> np.ndarray:
        return np.array(self.rows["category"])

    @functools.cached_property
    def tiebreak(self) -> np.ndarray:
        return np.array([tiebreak(p) for p in self.paths])

    @functools.cached_property
    def _row_of(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def mask(
        self, category: str | None = None, split: str | None = None, label: str | None = None
    ) -> np.ndarray:
        m = np.ones(len(self.paths), dtype=bool)
        if category:
            m &= self.pred == category
        if split:
            m &= self.splits == split
        if label:
            m &= self.labels == label
        return m

    def mode_scores(self, q: Query, mode: str) -> np.ndarray:
        """Every row's score for one mode (aligned with `paths`; rows a mode did not return
        score 0): the pool's ranks need every row."""
        e = self.engine
        e.check(mode)
        s = np.zeros(len(self.paths), np.float32)
        if q.empty:
            return s
        if mode == "hybrid":  # fused over the same top-200 lists a query fuses
            rows, _ = e.hybrid_retriever.fused(q, None, e.hybrid_retriever.candidates)
            hits = Hits(rows, "")
        else:
            hits = e.retrievers[mode].retrieve(q, len(self.paths), None, ("path",))
        for r in hits.rows:
            s[self._row_of[r["path"]]] = r["score"]
        return s  # unreturned rows score 0: below every returned one (BM25, RRF, P, cos>0)

    def semantic_vectors(self) -> np.ndarray:
        """(N, D) semantic column aligned with `paths`."""
        t = self.engine.table.columns_table(["path", "semantic"])
        where = {p: i for i, p in enumerate(t.column("path").to_pylist())}
        vec = np.array(t.column("semantic").to_pylist(), np.float32)
        return vec[[where[p] for p in self.paths]]


_WHOLE: weakref.WeakKeyDictionary[SearchEngine, WholeTable] = weakref.WeakKeyDictionary()


def whole_table(engine: Any) -> Any:
    """A SearchEngine's WholeTable (one per engine: its columns are read once); anything
    else (an engine offering `ranking`, a test's stand-in) as it is."""
    if not isinstance(engine, SearchEngine):
        return engine
    if engine not in _WHOLE:
        _WHOLE[engine] = WholeTable(engine)
    return _WHOLE[engine]


# --- metrics (pure) -----------------------------------------------------------------------------


def tied_rank(scores: np.ndarray, target: int) -> float:
    """1-based rank of `target` in descending `scores`; ties share their mean rank."""
    s = scores[target]
    greater = int(np.sum(scores > s))
    equal = int(np.sum(scores == s))
    return greater + (equal + 1) / 2


def rank_metrics(ranks: Sequence[float], ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    r = np.asarray(ranks, dtype=float)
    if r.size == 0:
        raise EvaluationError("no ranks to score")
    out = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["median_rank"] = float(np.median(r))
    out["MRR"] = float(np.mean(1.0 / r))
    return out


def precision_at_k(relevant_sorted: Sequence[bool], k: int = 10) -> float:
    rel = np.asarray(relevant_sorted[:k], dtype=float)
    return float(rel.sum() / k)


def average_precision(relevant_sorted: Sequence[bool]) -> float:
    """Mean of precision@i over the positions i of the relevant items (all of them ranked)."""
    rel = np.asarray(relevant_sorted, dtype=bool)
    if not rel.any():
        return 0.0
    hits = np.cumsum(rel)
    return float(np.mean(hits[rel] / (np.flatnonzero(rel) + 1)))


PAIRED_RESAMPLES = 2000


def paired_difference(
    a: Sequence[float], b: Sequence[float], groups: Sequence[Any] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Mean of a - b over paired per-query values, with a 95% bootstrap interval. Queries of
    one group (the captions of one photo) are resampled together: they are not independent,
    and resampling them one by one would make the interval too narrow."""
    x = np.asarray(a, float) - np.asarray(b, float)
    if x.size == 0:
        raise EvaluationError("no queries to compare")
    keys = np.arange(x.size) if groups is None else np.unique(groups, return_inverse=True)[1]
    sums = np.bincount(keys, weights=x)
    sizes = np.bincount(keys).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), (PAIRED_RESAMPLES, len(sums)))
    means = sums[picks].sum(1) / sizes[picks].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "difference": round(float(x.mean()), 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
        "better": int((x > 0).sum()),
        "worse": int((x < 0).sum()),
        "resampled": "photos" if groups is not None else "queries",
    }


def compare_to_hybrid(
    per_query: dict[str, np.ndarray], metric: str, groups: Sequence[Any] | None = None
) -> dict[str, dict]:
    """The hybrid against each other mode on one per-query metric: is it ahead, and by more
    than the queries' own spread?"""
    if "hybrid" not in per_query:
        return {}
    return {
        mode: {"metric": metric, **paired_difference(per_query["hybrid"], v, groups)}
        for mode, v in per_query.items()
        if mode != "hybrid"
    }


# --- queries ------------------------------------------------------------------------------------


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """`query,category` rows (header optional)."""
    rows: list[tuple[str, str]] = []
    try:  # a FIFO or /dev/zero is refused unread; a queries file is small
        text = read_regular(path, limit=QUERIES_MAX_BYTES).decode("utf-8")
    except OSError as exc:
        raise EvaluationError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise EvaluationError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    with io.StringIO(text, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if len(row) < 2 or not row[0].strip():
                continue
            if i == 0 and row[0].strip().lower() == "query":
                continue
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise EvaluationError(f"{path}: no `query,category` rows")
    return rows


def evaluate_queries(
    engine: Any,
    path: str | Path,
    modes: Sequence[str],
    split: str | None = None,
    k: int = 10,
    progress: Progress | None = None,
) -> dict:
    """P@k and AP per mode for category queries, over the `split` pool (default test)."""
    engine = whole_table(engine)
    queries = read_queries(path)
    if split is None:
        split = "test" if (engine.splits == "test").any() else ""
    pool = engine.mask(split=split or None) & (engine.labels != "")
    if not pool.any():
        raise EvaluationError(f"no labelled images in split {split!r} of the index")
    labels = {str(c) for c in engine.labels[pool]}  # plain str: the message names them
    unknown = sorted({c for _, c in queries} - labels)
    if unknown:
        raise EvaluationError(
            f"categories {unknown} have no images in the pool; it has {', '.join(sorted(labels))}"
        )
    idx = np.flatnonzero(pool)
    out: dict[str, Any] = {
        "kind": EVALUATION_KINDS["queries"],
        "source": str(path),
        "split": split,
        "pool": int(pool.sum()),
        "n_queries": len(queries),
        "k": k,
        "modes": {},
        "per_category": {},
    }
    start = time.perf_counter()
    engine.prime([q for q, _ in queries])
    with single_threaded():
        analyzed = [engine.analyze(q) for q, _ in queries]
        out["no_content_queries"] = sum(bool(getattr(a, "no_content", False)) for a in analyzed)
        _score_queries(engine, analyzed, queries, modes, idx, k, out, progress)
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


def _counter(progress: Progress | None, total: int) -> Callable[[], None]:
    """A tick to call before each (query, mode) pair: reports how many were scored before."""
    done = 0

    def tick() -> None:
        nonlocal done
        if progress is not None:
            progress(done, total)
        done += 1

    return tick


def _score_queries(engine, analyzed, queries, modes, idx, k, out, progress=None) -> None:
    per_query: dict[str, np.ndarray] = {}
    tick = _counter(progress, len(modes) * len(queries))
    for mode in modes:
        p_at, aps, per_cat = [], [], {}
        for q, (_, cat) in zip(analyzed, queries, strict=True):
            tick()
            s = engine.mode_scores(q, mode)[idx]
            order = np.lexsort((engine.tiebreak[idx], -s))
            rel = engine.labels[idx][order] == cat
            p_at.append(precision_at_k(rel, k))
            aps.append(average_precision(rel))
            per_cat.setdefault(cat, []).append(aps[-1])
        out["modes"][mode] = {f"P@{k}": float(np.mean(p_at)), "MAP": float(np.mean(aps))}
        out["per_category"][mode] = {c: float(np.mean(v)) for c, v in sorted(per_cat.items())}
        per_query[mode] = np.asarray(p_at)
    out["hybrid_vs"] = compare_to_hybrid(per_query, f"P@{k}")


# --- caption queries ----------------------------------------------------------------------------

POOLS = ("all", "heldout")


def _names(paths: Sequence[str]) -> list[str]:
    return [Path(p).name for p in paths]


def _engine_paths(engine: Any) -> list[str]:
    if hasattr(engine, "row_paths"):
        return list(engine.row_paths())
    return list(engine.paths)


def fitted_images(engine: Any) -> frozenset[str]:
    """File names whose captions fitted the index's text mapping (and keyword model)."""
    got = getattr(engine, "fitted_images", None)
    if got is not None:
        return frozenset(got)
    sem = getattr(engine, "semantic", None)
    return frozenset(sem.config.get("train_images", [])) if sem is not None else frozenset()


def caption_file_map(captions_file: str | Path) -> dict[str, list[str]]:
    """{photo file name: [captions]} from any format core.data.captions reads."""
    from core.data.captions import CaptionFileError
    from core.search.store import captions_by_image

    try:
        by_name = captions_by_image(captions_file)
    except (CaptionFileError, OSError) as exc:
        raise EvaluationError(f"{captions_file}: {exc}") from exc
    if not by_name:
        raise EvaluationError(
            f"{captions_file}: no caption names a photo (a plain one-caption-per-line file "
            "cannot be matched to images)"
        )
    return by_name


def _index_captions(engine: Any, paths: Sequence[str]) -> dict[str, list[str]]:
    """{photo file name: [captions]} of the captions stored in the index itself."""
    caps = engine.rows["captions"]
    out = {Path(p).name: list(c) for p, c in zip(paths, caps, strict=True) if c}
    if not out:
        raise EvaluationError("the index holds no captions: index photos with --captions FILE")
    return out


@dataclass
class CaptionQueries:
    """Queries (caption, target row), split into never-fitted and fitted photos."""

    queries: list[tuple[str, int]]  # captions of photos the mapping never saw
    fitted: list[tuple[str, int]]  # captions of photos the mapping was fitted on
    pool_rows: np.ndarray  # rows ranked (all, or the never-fitted captioned photos)
    matched_photos: int
    unmatched_photos: int


def caption_queries(
    paths: Sequence[str], by_name: dict[str, list[str]], fitted: frozenset[str], pool: str
) -> CaptionQueries:
    """Match caption file photos to indexed rows by file name; fitted photos kept apart."""
    if pool not in POOLS:
        raise EvaluationError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}")
    names = _names(paths)
    row_of: dict[str, int] = {}
    for i, n in enumerate(names):
        row_of.setdefault(n, i)
    queries, fit_q = [], []
    matched = 0
    for name, caps in by_name.items():
        i = row_of.get(name)
        if i is None:
            continue
        matched += 1
        (fit_q if name in fitted else queries).extend((c, i) for c in caps)
    if pool == "all":
        rows = np.arange(len(paths))
    else:
        rows = np.array(sorted({i for _, i in queries}), dtype=int)
    return CaptionQueries(queries, fit_q, rows, matched, len(by_name) - matched)


class _Ranker:
    """Ranks of target rows among pool rows for one mode, from whichever search API the
    engine offers: `ranking(text, mode, limit)` (paths best first, rows it does not return
    share the remaining ranks) or the in-memory `mode_scores` (every row scored)."""

    def __init__(self, engine: Any, paths: Sequence[str]) -> None:
        self.engine = engine
        self.row_of = {p: i for i, p in enumerate(paths)}
        self.n = len(paths)

    def rank(
        self,
        text: str,
        analyzed: Any,
        mode: str,
        target: int,
        pool: np.ndarray,
        in_pool: np.ndarray,
    ) -> float:
        if analyzed is not None:
            return tied_rank(
                self.engine.mode_scores(analyzed, mode)[pool], int(np.searchsorted(pool, target))
            )
        ranked = self.engine.ranking(text, mode, self.n)
        pos = 0
        for p in ranked:
            i = self.row_of.get(p)
            if i is None or not in_pool[i]:
                continue
            pos += 1
            if i == target:
                return float(pos)
        rest = len(pool) - pos  # unranked pool rows share the remaining ranks
        return pos + (rest + 1) / 2

    def top(self, text: str, analyzed: Any, mode: str, pool: np.ndarray, k: int) -> np.ndarray:
        """The k best pool rows, best first."""
        if analyzed is not None:
            s = self.engine.mode_scores(analyzed, mode)[pool]
            order = np.lexsort((self.engine.tiebreak[pool], -s))[:k]
            return pool[order]
        in_pool = set(pool.tolist())
        rows = [
            self.row_of[p]
            for p in self.engine.ranking(text, mode, k + self.n - len(pool))
            if p in self.row_of
        ]
        return np.array([i for i in rows if i in in_pool][:k], dtype=int)


def _score(
    engine: Any,
    ranker: _Ranker,
    queries: list[tuple[str, int]],
    modes: Sequence[str],
    pool: np.ndarray,
    fitted_mask: np.ndarray,
    photo_mask: np.ndarray,
    progress: Progress | None = None,
) -> dict:
    """Per mode: R@1/5/10, median rank, MRR, and `fitted_share_top10`: among the caption
    file's photos in the top 10 (the query's own photo left out), the share that fitted the
    mapping (with no bias it matches their share of those photos in the pool)."""
    legacy = not hasattr(engine, "ranking")
    engine.prime([c for c, _ in queries]) if hasattr(engine, "prime") else None
    in_pool = np.zeros(ranker.n, bool)
    in_pool[pool] = True
    out: dict[str, Any] = {}
    hits: dict[str, np.ndarray] = {}
    with single_threaded():
        analyzed = [engine.analyze(c) if legacy else None for c, _ in queries]
        # scored as every query is (their ranks are the pool's middle), but counted
        out["no_content_queries"] = sum(bool(getattr(a, "no_content", False)) for a in analyzed)
        tick = _counter(progress, len(modes) * len(queries))
        for mode in modes:
            ranks, shares = [], []
            for (c, target), a in zip(queries, analyzed, strict=True):
                tick()
                ranks.append(ranker.rank(c, a, mode, target, pool, in_pool))
                top = [i for i in ranker.top(c, a, mode, pool, 11) if i != target][:10]
                shares += [bool(fitted_mask[i]) for i in top if photo_mask[i]]
            out.setdefault("modes", {})[mode] = {
                **rank_metrics(ranks),
                "fitted_share_top10": round(float(np.mean(shares)), 4) if shares else None,
            }
            hits[mode] = np.asarray(ranks) <= 10
    out["hybrid_vs"] = compare_to_hybrid(hits, "R@10", [t for _, t in queries])
    return out


def evaluate_captions(
    engine: Any,
    captions_file: str | Path | None,
    modes: Sequence[str],
    max_queries: int | None = None,
    pool: str = "all",
    fitted_apart: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Caption queries against the index: each caption's one relevant image is its photo.
    pool="all" ranks every indexed image; "heldout" only the captioned photos the mapping
    never saw. Captions of photos the mapping was fitted on are never mixed in: they are
    counted as refused, or scored apart under "fitted" with `fitted_apart`."""
    engine = whole_table(engine)
    paths = _engine_paths(engine)
    by_name = caption_file_map(captions_file) if captions_file else _index_captions(engine, paths)
    fitted = fitted_images(engine)
    cq = caption_queries(paths, by_name, fitted, pool)
    if not cq.matched_photos:
        raise EvaluationError(
            f"{captions_file}: none of its {len(by_name)} photos is in the index (photos are "
            "matched by file name)"
        )
    if not cq.queries and not (fitted_apart and cq.fitted):
        raise EvaluationError(
            f"all {cq.matched_photos} indexed photos of {captions_file} fitted the text "
            "mapping, so none can be a fair query; index with a held-out share (the Flickr8k "
            "dev/test lists beside the captions file, else a quarter of the photos) or use "
            "--fitted-apart"
        )
    queries = cq.queries[:max_queries] if max_queries else cq.queries
    names = _names(paths)
    fitted_mask = np.array([n in fitted for n in names], dtype=bool)
    photo_mask = np.array([n in by_name for n in names], dtype=bool)
    pool_photos = cq.pool_rows[photo_mask[cq.pool_rows]]
    ranker = _Ranker(engine, paths)
    start = time.perf_counter()
    out: dict[str, Any] = {
        "kind": EVALUATION_KINDS["captions"],
        "source": str(captions_file or "the index's captions"),
        "pool": len(cq.pool_rows),
        "pool_kind": pool,
        "index_rows": len(paths),
        "n_queries": len(queries),
        "n_photos": len({i for _, i in queries}),
        "matched_photos": cq.matched_photos,
        "unmatched_photos": cq.unmatched_photos,
        "refused": {
            "fitted_photos": len({i for _, i in cq.fitted}),
            "fitted_captions": len(cq.fitted),
        }
        if not fitted_apart
        else None,
        "fitted_share_pool": round(float(fitted_mask[pool_photos].mean()), 4)
        if len(pool_photos)
        else None,
        "modes": {},
    }
    if queries:
        got = _score(
            engine, ranker, queries, modes, cq.pool_rows, fitted_mask, photo_mask, progress
        )
        out["modes"], out["no_content_queries"] = got["modes"], got["no_content_queries"]
        out["hybrid_vs"] = got["hybrid_vs"]
    if fitted_apart and cq.fitted:
        fq = cq.fitted[:max_queries] if max_queries else cq.fitted
        fpool = cq.pool_rows if pool == "all" else np.array(sorted({i for _, i in fq}), dtype=int)
        out["fitted"] = {
            "note": "captions that fitted the mapping: not a fair measure of unseen photos",
            "pool": len(fpool),
            "n_queries": len(fq),
            "modes": _score(engine, ranker, fq, modes, fpool, fitted_mask, photo_mask)["modes"],
        }
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


# --- both kinds ---------------------------------------------------------------------------------


def available_evaluations(engine: Any, queries: str | Path | None) -> dict[str, str]:
    """What an index can be evaluated on, kind -> source: category queries need a query file
    and a test split; caption queries need captions indexed with the images (source "": the
    index's own)."""
    out: dict[str, str] = {}
    if queries is not None and "test" in (engine.meta.get("splits") or []):
        out["queries"] = str(queries)
    if any(r.get("captions") for r in (engine.meta.get("roots") or {}).values()):
        out["captions"] = ""
    return out


def describe_evaluation(out: dict) -> str:
    """What an evaluation's numbers are over, in words: its queries and pool (and how many
    queries had no content word: they rank nothing, yet are scored)."""
    empty = out.get("no_content_queries") or 0
    tail = f"; {empty} of them had no content word (only stop words)" if empty else ""
    return _describe(out) + tail


def _describe(out: dict) -> str:
    if out["kind"] == EVALUATION_KINDS["queries"]:
        return (
            f"{out['n_queries']} from `{Path(out['source']).name}`, pool {out['pool']} test images"
        )
    refused = (out.get("refused") or {}).get("fitted_captions", 0)
    pool = "all indexed" if out.get("pool_kind", "all") == "all" else "the held-out photos only"
    return (
        f"{out['n_queries']} captions of {out['n_photos']} photos the mapping never saw, pool "
        f"{out['pool']} images: {pool}; {refused} captions of photos that fitted the "
        "mapping refused"
    )


def evaluate_retrieval(
    engine: Any,
    kind: str,
    source: str | Path | None,
    modes: Sequence[str],
    progress: Progress | None = None,
) -> dict:
    """One evaluation by kind: "queries" (`evaluate_queries` on the CSV `source`, test pool)
    or "captions" (`evaluate_captions`; `source` a captions file, empty: the index's own)."""
    if kind not in EVALUATION_KINDS:
        raise ValueError(f"unknown evaluation {kind!r}; choose one of {list(EVALUATION_KINDS)}")
    if kind == "queries":
        return evaluate_queries(engine, source, modes, progress=progress)
    return evaluate_captions(engine, source or None, modes, progress=progress)

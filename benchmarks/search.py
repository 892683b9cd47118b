"""Search at scale: a synthetic index of N rows with the real column layout, every mode served
by the index, each mode's results against exact search on the same data.

    .venv/bin/python benchmarks/search.py --rows 1000000 --json

1. Build (this process): N rows in chunks -- backbone vectors (1280-d) and semantic vectors
   (384-d), both unit length around 1,000 cluster centres; six-class probabilities and the
   predicted category; ImageNet top-5 ids, labels and probabilities; a caption for one row in
   five; the `text` column -- written as one LanceDB table, then indexed exactly as
   `python -m core index` does (core.search.ann.maintain: full-text, bitmap, and IVF_PQ
   on both vector columns once N >= --ann-min-rows). While generating, the exact answers of
   every benchmark query are kept: top-200 by cosine (semantic, image), by probability
   (category) and by BM25 computed here from the token counts (keyword); hybrid's reference is
   reciprocal-rank fusion over those exact lists.
2. Serve (a fresh process, so its memory is the serving process's alone): SearchEngine.load
   (the real one: ONNX sentence encoder, table opened, no vectors loaded), then each mode's
   retriever answers the queries through the index; p50/p95 latency (retrieval plus building
   the results with their explanations) and recall@10 against the exact answers (a returned
   row counts when its exact score reaches the exact 10th best: ties are not misses).
   Query analysis (keywords, categories, the MiniLM embedding) is timed apart with real
   sentences (`analysis`): it does not depend on N. rss_mb is the serving process's peak
   resident memory (VmHWM), models included, after every mode with the index's own query
   settings; rss_after_sweep_mb after the category scan baseline and the ANN sweep too.

Prints one JSON object: {"rows", "modes": {MODE: {"p50_ms", "p95_ms", "recall@10"}},
"rss_mb", "build_s", "ann", ...}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONE_DIM, SEMANTIC_DIM = 1280, 384
CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
CENTRES = 1000
CHUNK = 50_000
REF_K = 200  # exact candidates kept per query (hybrid fuses top-200 lists)
WORDS = [
    "people",
    "dog",
    "water",
    "snow",
    "grass",
    "city",
    "road",
    "beach",
    "tree",
    "sky",
    "child",
    "man",
    "woman",
    "red",
    "blue",
    "running",
    "sitting",
    "standing",
    "mountain",
    "lake",
    "river",
    "sand",
    "rock",
    "building",
    "street",
    "car",
]
K1, B = 1.2, 0.75  # BM25 (Lance's defaults)
TEXT_QUERIES = (
    "A serene lake surrounded by forest.",
    "The beach is full of tourists.",
    "snowy peaks above a valley",
    "a busy street with cars",
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class TopK:
    """Streaming exact top-k per query: scores (Q, n) chunk by chunk."""

    def __init__(self, q: int, k: int) -> None:
        self.k = k
        self.scores = np.full((q, 0), -np.inf, np.float32)
        self.ids = np.zeros((q, 0), np.int64)

    def add(self, scores: np.ndarray, offset: int) -> None:
        s = np.concatenate([self.scores, scores], 1)
        ids = np.concatenate(
            [self.ids, np.broadcast_to(np.arange(scores.shape[1]) + offset, scores.shape)], 1
        )
        keep = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(s, keep, 1)
        self.ids = np.take_along_axis(ids, keep, 1)


def synth(n: int, seed: int, labels: list[str]):
    """Generator of (Arrow record batch, token lists, arrays) chunk by chunk."""
    import pyarrow as pa

    from core.search import category_index
    from core.search.store import tag_text

    rng = np.random.default_rng(seed)
    c_back = rng.standard_normal((CENTRES, BACKBONE_DIM)).astype(np.float32)
    c_sem = rng.standard_normal((CENTRES, SEMANTIC_DIM)).astype(np.float32)
    c_logit = rng.standard_normal((CENTRES, len(CLASSES))).astype(np.float32) * 2.5
    c_labels = rng.integers(0, len(labels), (CENTRES, 8))
    for a in range(0, n, CHUNK):
        m = min(CHUNK, n - a)
        c = rng.integers(0, CENTRES, m)
        back = unit(c_back[c] + 0.6 * rng.standard_normal((m, BACKBONE_DIM), np.float32))
        sem = unit(c_sem[c] + 0.6 * rng.standard_normal((m, SEMANTIC_DIM), np.float32))
        z = c_logit[c] + rng.standard_normal((m, len(CLASSES)), np.float32)
        probs = np.exp(z - z.max(1, keepdims=True))
        probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
        cat = [CLASSES[i] for i in probs.argmax(1)]
        pick = np.sort(rng.permuted(np.tile(np.arange(8), (m, 1)), axis=1)[:, :5], axis=1)
        top_ids = np.take_along_axis(c_labels[c], pick, 1).astype(np.int32)
        tp = np.sort(rng.dirichlet(np.ones(5) * 0.7, m).astype(np.float32), axis=1)[:, ::-1]
        has_cap = rng.random(m) < 0.2
        caps = [[" ".join(rng.choice(WORDS, 6))] if h else [] for h in has_cap]
        top_labels = [[labels[j] for j in row] for row in top_ids]
        text = [tag_text(cat[i], top_labels[i], caps[i]) for i in range(m)]
        split = np.where(rng.random(m) < 0.8, "train", "test")
        paths = [f"/synthetic/{a + i:08d}.jpg" for i in range(m)]
        batch = pa.RecordBatch.from_pydict(
            {
                "path": paths,
                "root": ["/synthetic"] * m,
                "sha256": [f"{a + i:064x}" for i in range(m)],
                "split": split.tolist(),
                "label": cat,
                "category": cat,
                "probs": pa.array(probs.tolist(), pa.list_(pa.float32())),
                "top_ids": pa.array(top_ids.tolist(), pa.list_(pa.int32())),
                "top_labels": top_labels,
                "top_probs": pa.array(tp.tolist(), pa.list_(pa.float32())),
                "captions": pa.array(caps, pa.list_(pa.string())),
                "text": text,
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(back.reshape(-1)), BACKBONE_DIM
                ),
                "semantic": pa.FixedSizeListArray.from_arrays(
                    pa.array(sem.reshape(-1)), SEMANTIC_DIM
                ),
                "class_probs": pa.FixedSizeListArray.from_arrays(
                    pa.array(probs.reshape(-1)), len(CLASSES)
                ),
                **category_index.column_arrays(probs),  # the category mode's range prefilters
            }
        )
        tokens = [_tokens(t) for t in text]
        yield a, batch, tokens, back, sem, probs


def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9]+", text.lower())


def make_queries(q: int, seed: int):
    """Query vectors drawn like new images of the collection, class weights, keyword sets."""
    rng = np.random.default_rng(seed)
    src = np.random.default_rng(0)  # the build's centres (same seed, same draws)
    c_back = src.standard_normal((CENTRES, BACKBONE_DIM)).astype(np.float32)
    c_sem = src.standard_normal((CENTRES, SEMANTIC_DIM)).astype(np.float32)
    c = rng.integers(0, CENTRES, q)
    image = unit(c_back[c] + 0.6 * rng.standard_normal((q, BACKBONE_DIM), np.float32))
    sem = unit(c_sem[c] + 0.6 * rng.standard_normal((q, SEMANTIC_DIM), np.float32))
    cls = np.zeros((q, len(CLASSES)), np.float32)
    for i in range(q):
        cls[i, rng.choice(len(CLASSES), 1 + (i % 2), replace=False)] = 1.0
    kw = [list(rng.choice(WORDS, 2, replace=False)) for _ in range(q)]
    return image, sem, cls, kw


def build(folder: Path, n: int, n_queries: int, ann_min_rows: int) -> dict:
    import lancedb
    import pyarrow as pa
    from scipy import sparse

    from core.io import atomic_write_json
    from core.resources import imagenet_classes
    from core.search import category_index
    from core.search.ann import maintain as _maintain
    from core.search.index_format import INDEX_VERSION, TABLE

    labels = imagenet_classes()
    from core.search.sentence import ensure_export

    ensure_export()  # the query-side sentence encoder, as `python -m core index` exports it
    image_q, sem_q, cls_q, kw_q = make_queries(n_queries, 1)
    refs = {m: TopK(n_queries, REF_K) for m in ("image", "semantic", "category")}
    vocab: dict[str, int] = {}
    # token counts as compact arrays: 1M rows hold ~15M (row, term, count) entries
    rows_idx, cols_idx, vals, lengths = (array("i"), array("i"), array("f"), array("i"))
    all_probs: list[np.ndarray] = []
    gen = synth(n, 0, labels)
    first = next(gen)
    schema = first[1].schema
    t0 = time.perf_counter()

    def batches():
        for a, batch, tokens, back, sem, probs in itertools.chain([first], gen):
            refs["image"].add(image_q @ back.T, a)
            refs["semantic"].add(sem_q @ sem.T, a)
            refs["category"].add((cls_q / cls_q.sum(1, keepdims=True)) @ probs.T, a)
            all_probs.append(probs)
            for i, toks in enumerate(tokens):
                lengths.append(len(toks))
                counts: dict[int, int] = {}
                for t in toks:
                    j = vocab.setdefault(t, len(vocab))
                    counts[j] = counts.get(j, 0) + 1
                rows_idx.extend([a + i] * len(counts))
                cols_idx.extend(counts)
                vals.extend(counts.values())
            print(f"  generated {a + len(tokens):,} rows", file=sys.stderr, flush=True)
            yield batch

    db = lancedb.connect(str(folder))
    tbl = db.create_table(
        TABLE, data=pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite"
    )
    write_s = time.perf_counter() - t0
    meta = {
        "version": INDEX_VERSION,
        "rows": n,
        "classes": CLASSES,
        "category_source": "synthetic",
        "splits": ["test", "train"],
        "semantic": {"key": "synthetic", "dim": SEMANTIC_DIM, "source": "mapping"},
        "encoder": {"backbone": "synthetic", "feature_dim": BACKBONE_DIM},
        "category_index": category_index.thresholds(
            category_index.column_arrays(np.concatenate(all_probs))
        ),
    }
    t1 = time.perf_counter()
    _maintain(tbl, n, meta, ann_min_rows)
    index_s = time.perf_counter() - t1
    meta["table_version"] = tbl.version
    atomic_write_json(folder / "index.json", meta)
    # exact BM25 reference for the keyword queries
    tf = sparse.csc_matrix(
        (
            np.frombuffer(vals, np.float32),
            (np.frombuffer(rows_idx, np.int32), np.frombuffer(cols_idx, np.int32)),
        ),
        shape=(n, len(vocab)),
    )
    dl = np.array(lengths, np.float32)
    avgdl = float(dl.mean())
    df = np.diff(tf.indptr)
    kw_ids, kw_scores = [], []
    for words in kw_q:
        s = np.zeros(n, np.float32)
        for w in words:
            j = vocab.get(w)
            if j is None:
                continue
            idf = math.log(1 + (n - df[j] + 0.5) / (df[j] + 0.5))
            col = tf[:, j]
            r, f = col.indices, col.data
            s[r] += idf * f * (K1 + 1) / (f + K1 * (1 - B + B * dl[r] / avgdl))
        top = np.argsort(-s, kind="stable")[:REF_K]
        kw_ids.append(top)
        kw_scores.append(s[top])
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    np.savez(
        folder / "bench_queries.npz",
        image=image_q,
        semantic=sem_q,
        category=cls_q,
        keyword=np.array([" ".join(w) for w in kw_q]),
        **{f"ref_{m}_ids": refs[m].ids for m in ("image", "semantic", "category")},
        **{f"ref_{m}_scores": refs[m].scores for m in ("image", "semantic", "category")},
        ref_keyword_ids=np.stack(kw_ids),
        ref_keyword_scores=np.stack(kw_scores),
    )
    return {
        "write_s": round(write_s, 1),
        "index_s": round(index_s, 1),
        "build_s": round(write_s + index_s, 1),
        "disk_gb": round(size / 1e9, 2),
        "ann": bool(meta.get("ann")),
        "ann_params": meta.get("ann"),
    }


# --- serving (a fresh process) ------------------------------------------------------------------


def rrf(lists: list[np.ndarray], k: int) -> list[int]:
    fused: dict[int, float] = {}
    for ids in lists:
        for rank, i in enumerate(ids, 1):
            fused[int(i)] = fused.get(int(i), 0.0) + 1.0 / (60 + rank)
    return [i for i, _ in sorted(fused.items(), key=lambda t: -t[1])[:k]]


def serve(folder: Path, repeats: int, sweep: bool = True) -> dict:
    from core.search.engine import SearchEngine
    from core.search.query import Query

    z = np.load(folder / "bench_queries.npz")
    t0 = time.perf_counter()
    engine = SearchEngine.load(folder)
    load_s = time.perf_counter() - t0
    n_q = len(z["semantic"])
    classes = engine.classes

    def query(i: int) -> Query:
        kws = {w: 1.0 for w in str(z["keyword"][i]).split()}
        return Query(
            "",
            list(kws),
            kws,
            z["category"][i].astype(float),
            {},
            z["semantic"][i],
            {},
            [(classes[0], 0.5)],
            [],
        )

    def answer(i: int, mode: str) -> list[int]:
        """The served path after analysis: retrieval, exclusion, explanations, floor."""
        if mode == "image":
            resp = engine.similar(feature=z["image"][i], k=10)
        else:
            resp = engine.search_analyzed(query(i), mode.removesuffix("_scan"), 10)
        answer.search = resp.search  # type: ignore[attr-defined]
        return [int(Path(r.path).stem) for r in resp.results]

    def recall(i: int, mode: str, got: list[int]) -> int:
        if mode == "hybrid":
            truth = rrf([z[f"ref_{m}_ids"][i] for m in ("keyword", "category", "semantic")], 10)
            return len(set(truth) & set(got))
        mode = mode.removesuffix("_scan")
        ids, sc = z[f"ref_{mode}_ids"][i], z[f"ref_{mode}_scores"][i]
        score_of = dict(zip(ids.tolist(), sc.tolist(), strict=True))
        return sum(score_of.get(g, -np.inf) >= sc[9] - 1e-5 for g in got)

    def measure(mode: str) -> dict:
        times, hits = [], 0
        for rep in range(repeats):
            for i in range(n_q):
                t = time.perf_counter()
                got = answer(i, mode)
                times.append(time.perf_counter() - t)
                if rep == 0:
                    hits += recall(i, mode, got)
        ms = np.array(times) * 1000
        return {
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "recall@10": round(hits / (10 * n_q), 4),
            "search": answer.search,
        }

    with single_threaded_blas():
        out: dict = {
            "modes": {m: measure(m) for m in ("keyword", "category", "semantic", "hybrid", "image")}
        }
        # the serving process's peak with the index's own settings, before the baseline and
        # the sweep below (a flat scan, more partitions visited: what serving does not do)
        out["rss_mb"] = peak_rss_mb()
        # the baseline in the same run: category as a flat scan of class_probs (no prefilter)
        thresholds = engine.table.meta.pop("category_index", None)
        out["modes"]["category_scan"] = measure("category_scan")
        engine.table.meta["category_index"] = thresholds
        if sweep and engine.table.is_ann("semantic"):
            # the ANN query settings around the recorded ones: what recall costs in latency
            ann = engine.meta["ann"]
            rows = []
            for nprobes, refine in (
                (ann["nprobes"], ann["refine_factor"]),
                (2 * ann["nprobes"], ann["refine_factor"]),
                (2 * ann["nprobes"], 2 * ann["refine_factor"]),
                (4 * ann["nprobes"], 2 * ann["refine_factor"]),
            ):
                for col in engine.meta["ann"]["columns"].values():
                    col.update(nprobes=nprobes, refine_factor=refine)
                row = {"nprobes": nprobes, "refine_factor": refine}
                for mode in ("semantic", "image"):
                    m = measure(mode)
                    row[mode] = {k: m[k] for k in ("p50_ms", "recall@10")}
                rows.append(row)
            out["ann_sweep"] = rows
        times = []
        for _ in range(repeats):
            for text in TEXT_QUERIES:
                t = time.perf_counter()
                engine.analyze(text)
                times.append(time.perf_counter() - t)
    out["analysis"] = {
        "p50_ms": round(float(np.percentile(np.array(times) * 1000, 50)), 2),
        "text_encoder": type(engine.text).__name__,
    }
    out["load_s"] = round(load_s, 2)
    out["rss_after_sweep_mb"] = peak_rss_mb()
    out["torch_imported"] = "torch" in sys.modules
    return out


def single_threaded_blas():
    from core.search.engine import single_threaded

    return single_threaded()


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss
    over fork + exec, so a child would report its parent's (the builder's) peak."""
    import re

    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    if found:
        return round(int(found.group(1)) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ann-min-rows",
        type=int,
        default=None,
        help="ANN from this many rows (default: the index's, 100000).",
    )
    ap.add_argument("--folder", type=Path, help="Where to build (default: a temp folder).")
    ap.add_argument("--keep", action="store_true", help="Keep the built index.")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the serving subprocess
    ap.add_argument("--serve-only", type=Path, help="Serve a kept index again (no build).")
    ap.add_argument("--json", action="store_true", help="Print one JSON object only.")
    args = ap.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve, args.repeats)))
        return
    from core.search.store import ANN_MIN_ROWS

    folder = args.serve_only or args.folder or Path(tempfile.mkdtemp(prefix="bench_search_"))
    try:
        if args.serve_only:
            b = json.loads((folder / "bench_build.json").read_text())
            args.rows, args.queries = b["rows"], b["queries"]
        else:
            b = build(folder, args.rows, args.queries, args.ann_min_rows or ANN_MIN_ROWS)
            b.update(rows=args.rows, queries=args.queries)
            (folder / "bench_build.json").write_text(json.dumps(b))
        r = subprocess.run(
            [sys.executable, __file__, "--serve", str(folder), "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            sys.exit(f"serving process failed: {r.stderr.strip().splitlines()[-1:]}")
        s = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep and not args.folder and not args.serve_only:
            shutil.rmtree(folder, ignore_errors=True)
    out = {
        "rows": args.rows,
        "modes": s["modes"],
        "rss_mb": s["rss_mb"],
        "rss_after_sweep_mb": s["rss_after_sweep_mb"],
        "build_s": b["build_s"],
        "ann": b["ann"],
        "write_s": b["write_s"],
        "index_s": b["index_s"],
        "disk_gb": b["disk_gb"],
        "ann_params": b["ann_params"],
        "analysis": s["analysis"],
        "load_s": s["load_s"],
        "ann_sweep": s.get("ann_sweep"),
        "serving_imports_torch": s["torch_imported"],
        "queries": args.queries,
        "repeats": args.repeats,
    }
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

"""Search speed, each figure against a baseline timed in the same run.

1. Query latency after load on a real index (about 10k images), per mode; baseline: the
   study's linear scan, substring-matching query words against each image's top label.
2. An ANN index (LanceDB IVF_HNSW_SQ) on a synthetic set of clustered vectors: p50 latency and
   recall@10 against exact search; baseline: an exact scan (numpy) of the same vectors.
3. Indexing throughput in images per second; baseline: the study's way, one image at a time
   in float32 without decoding workers.

    .venv/bin/python benchmarks/search.py --index INDEX_DIR [--ann-size 1000000] [--skip-ann]

The index is built with `python -m core index --images DIR --index INDEX_DIR`. Shared data
come from $SCENESEEK_SHARED_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def query_set() -> list[str]:
    from core.search.evaluate import read_queries
    from core.search.rank import EXAMPLES

    return [*EXAMPLES, *[q for q, _ in read_queries(ROOT / "tests" / "data" / "queries.csv")]]


def study_scan(engine, query: str) -> list[int]:
    """The study's matching, restated: query words as substrings of each image's top label."""
    words = [w for w in query.lower().replace(".", " ").split() if len(w) > 2]
    labels = [engine.imagenet[int(i)] for i in engine.top_ids[:, 0]]
    return [i for i, lab in enumerate(labels) if any(w in lab for w in words)]


def bench_queries(index: Path, repeats: int) -> dict:
    from core.search.rank import MODES, SearchEngine

    t0 = time.perf_counter()
    engine = SearchEngine.load(index)
    load_s = time.perf_counter() - t0
    queries = query_set()
    out: dict = {"index_rows": engine.n, "load_seconds": round(load_s, 2),
                 "queries": len(queries), "repeats": repeats, "modes": {}}  # fmt: skip
    for mode in MODES:
        engine.search(queries[0], mode)  # warm
        times = []
        for _ in range(repeats):
            for q in queries:
                t = time.perf_counter()
                engine.search(q, mode, k=10)
                times.append(time.perf_counter() - t)
        out["modes"][mode] = {
            "p50_ms": round(pct(times, 50), 2),
            "p95_ms": round(pct(times, 95), 2),
        }
    base = []
    for _ in range(repeats):
        for q in queries:
            t = time.perf_counter()
            study_scan(engine, q)
            base.append(time.perf_counter() - t)
    out["baseline_study_scan"] = {
        "p50_ms": round(pct(base, 50), 2),
        "p95_ms": round(pct(base, 95), 2),
    }
    return out


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 1,000 centres: closer to real embeddings than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = centres[rng.integers(0, 1000, b - a)] + 0.6 * rng.standard_normal((b - a, dim))
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def bench_ann(n: int, dim: int, n_queries: int, folder: Path) -> dict:
    import lancedb
    import pyarrow as pa

    vecs = clustered(n, dim)
    rng = np.random.default_rng(1)
    queries = vecs[rng.integers(0, n, n_queries)] + 0.05 * rng.standard_normal((n_queries, dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    t = time.perf_counter()
    db = lancedb.connect(str(folder))
    table = pa.table({"id": np.arange(n),
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), dim)})  # fmt: skip
    tbl = db.create_table("ann", data=table, mode="overwrite")
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    parts = max(1, int(np.sqrt(n)))
    tbl.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ",
                     num_partitions=parts)  # fmt: skip
    build_s = time.perf_counter() - t
    exact, exact_t = [], []
    for q in queries:
        t = time.perf_counter()
        s = vecs @ q
        top = np.argpartition(-s, 10)[:10]
        exact_t.append(time.perf_counter() - t)
        exact.append(set(top.tolist()))
    res: dict = {"vectors": n, "dim": dim, "partitions": parts, "write_seconds": round(write_s, 1),
                 "index_build_seconds": round(build_s, 1),
                 "baseline_exact_numpy": {"p50_ms": round(pct(exact_t, 50), 2)}, "settings": []}  # fmt: skip
    # nprobes: partitions visited; ef: HNSW candidate list; refine_factor: re-rank that many
    # times k candidates with the full-precision vectors (undoes the SQ quantisation error).
    for nprobes, ef, refine in ((20, 100, None), (20, 200, 5), (40, 400, 10)):
        hits, times = 0, []
        for q, truth in zip(queries, exact, strict=True):
            t = time.perf_counter()
            query = tbl.search(q).metric("cosine").nprobes(nprobes).ef(ef)
            if refine:
                query = query.refine_factor(refine)
            got = query.limit(10).select(["id"]).to_arrow()["id"].to_pylist()
            times.append(time.perf_counter() - t)
            hits += len(truth & set(got))
        res["settings"].append({"nprobes": nprobes, "ef": ef, "refine_factor": refine,
                                "p50_ms": round(pct(times, 50), 2),
                                "p95_ms": round(pct(times, 95), 2),
                                "recall@10": round(hits / (10 * len(queries)), 4)})  # fmt: skip
    return res


def bench_indexing(n: int) -> dict:
    import torch

    from core.search import build_index
    from core.search.embed import load_encoder
    from core.vision.features import pick_device

    shared = Path(os.environ.get("SCENESEEK_SHARED_DATA", ROOT.parent / "shared" / "data"))
    files = sorted((shared / "intel" / "seg_test").rglob("*.jpg"))[::4][:n]
    tmp = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        for f in files:
            (tmp / "imgs" / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, tmp / "imgs" / f.parent.name / f.name)
        enc = load_encoder()
        t = time.perf_counter()
        stats = build_index(tmp / "imgs", tmp / "idx", encoder=enc, workers=2)
        ours = stats.encoded / (time.perf_counter() - t)
        # The study's way: one image at a time, float32, decoding in the main process.
        from core.data.images import load_rgb

        dev = pick_device("cpu")
        model = enc.backbone.model.float().to(dev, memory_format=torch.contiguous_format)
        tf = enc.transform()
        sample = files[: min(64, len(files))]
        t = time.perf_counter()
        with torch.inference_mode():
            for f in sample:
                x = tf(load_rgb(f))[None]
                model.imagenet_head(model(x)).softmax(1)
        base = len(sample) / (time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"images": stats.encoded, "images_per_second": round(ours, 1),
            "baseline_one_by_one_fp32_per_second": round(base, 1), "speedup": round(ours / base, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", type=Path, help="A built index (about 10k images).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ann-size", type=int, default=1_000_000)
    ap.add_argument("--ann-dim", type=int, default=384)
    ap.add_argument("--ann-queries", type=int, default=100)
    ap.add_argument("--skip-ann", action="store_true")
    ap.add_argument(
        "--index-images", type=int, default=256, help="Images for throughput (0: skip)."
    )
    args = ap.parse_args()
    out: dict = {}
    if args.index:
        out["query_latency"] = bench_queries(args.index, args.repeats)
        print(json.dumps(out["query_latency"], indent=2), flush=True)
    if not args.skip_ann:
        folder = Path(tempfile.mkdtemp(prefix="bench_ann_"))
        try:
            out["ann"] = bench_ann(args.ann_size, args.ann_dim, args.ann_queries, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(json.dumps(out["ann"], indent=2), flush=True)
    if args.index_images:
        out["indexing"] = bench_indexing(args.index_images)
        print(json.dumps(out["indexing"], indent=2), flush=True)


if __name__ == "__main__":
    main()

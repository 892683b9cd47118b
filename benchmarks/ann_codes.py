"""Which ANN codes for the vector columns: recall@10 and latency of each LanceDB index type on
one synthetic column whose neighbourhoods are as tight as benchmarks/search.py's at 1M rows
(1,000 rows around each centre, unit vectors, noise 0.6 a dimension), at a fraction of its
build time. Exact top 10 by brute force on the same vectors.

    .venv/bin/python benchmarks/ann_codes.py --rows 300000 --dim 1280 --json
    .venv/bin/python benchmarks/ann_codes.py --rows 300000 --dim 384 --codes pq8,rq4,sq

Codes: pq16 / pq8 (IVF_PQ, 16 or 8 dimensions a sub-vector, 8-bit), sq (IVF_SQ, a byte a
dimension), rq1 / rq2 / rq4 (IVF_RQ, RaBitQ with 1, 2 or 4 bits a dimension). Partitions and
nprobes as core.search.store.ann_params gives them for the row count; refine x10 and x50.
Prints {"rows", "dim", "partitions", "nprobes", "results": {CODE_xREFINE: {"build_s",
"p50_ms", "recall@10"}}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS_PER_CENTRE = 1000
NOISE = 0.6
CHUNK = 50_000


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def index_config(code: str, dim: int, parts: int):
    from lancedb.index import IvfPq, IvfRq, IvfSq

    if code.startswith("pq"):
        return IvfPq(
            distance_type="cosine",
            num_partitions=parts,
            num_sub_vectors=dim // int(code[2:]),
            num_bits=8,
        )
    if code == "sq":
        return IvfSq(distance_type="cosine", num_partitions=parts)
    if code.startswith("rq"):
        return IvfRq(distance_type="cosine", num_partitions=parts, num_bits=int(code[2:]))
    raise SystemExit(f"unknown code {code!r}: pq16, pq8, sq, rq1, rq2, rq4")


def run(rows: int, dim: int, codes: list[str], queries: int, folder: Path) -> dict:
    import lancedb
    import pyarrow as pa

    from core.search.store import ann_params

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(1, rows // ROWS_PER_CENTRE), dim)).astype(np.float32)
    q = unit(
        centres[rng.integers(0, len(centres), queries)]
        + NOISE * rng.standard_normal((queries, dim), np.float32)
    )
    sims = []

    def batches():
        for a in range(0, rows, CHUNK):
            m = min(CHUNK, rows - a)
            c = rng.integers(0, len(centres), m)
            v = unit(centres[c] + NOISE * rng.standard_normal((m, dim), np.float32))
            sims.append(q @ v.T)
            yield pa.RecordBatch.from_pydict(
                {
                    "id": np.arange(a, a + m),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
                }
            )

    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    tbl = lancedb.connect(str(folder)).create_table(
        "v", data=pa.RecordBatchReader.from_batches(schema, batches()), mode="overwrite"
    )
    s = np.concatenate(sims, axis=1)
    kth = -np.sort(-s, axis=1)[:, 9]
    p = ann_params(rows, dim)
    out: dict = {}
    for code in codes:
        t0 = time.perf_counter()
        tbl.create_index(
            "vector", config=index_config(code, dim, p["num_partitions"]), replace=True
        )
        build = time.perf_counter() - t0
        for refine in (10, 50):
            lat, hits = [], 0
            for rep in range(2):
                for i in range(queries):
                    t = time.perf_counter()
                    r = (
                        tbl.search(q[i], vector_column_name="vector")
                        .distance_type("cosine")
                        .nprobes(p["nprobes"])
                        .refine_factor(refine)
                        .limit(10)
                        .select(["id", "_distance"])
                        .to_arrow()
                    )
                    lat.append(time.perf_counter() - t)
                    if rep == 0:
                        ids = r.column("id").to_numpy()
                        hits += int((s[i, ids] >= kth[i] - 1e-5).sum())
            out[f"{code}_x{refine}"] = {
                "build_s": round(build, 1),
                "p50_ms": round(1000 * float(np.median(lat)), 1),
                "recall@10": round(hits / (10 * queries), 3),
            }
            print(code, refine, out[f"{code}_x{refine}"], file=sys.stderr, flush=True)
    return {
        "rows": rows,
        "dim": dim,
        "partitions": p["num_partitions"],
        "nprobes": p["nprobes"],
        "results": out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--codes", default="pq16,pq8,sq,rq1,rq2,rq4")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--json", action="store_true", help="Print one JSON object only.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_ann_") as tmp:
        out = run(args.rows, args.dim, args.codes.split(","), args.queries, Path(tmp))
    print(json.dumps(out, indent=None if args.json else 2))


if __name__ == "__main__":
    main()

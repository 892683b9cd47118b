"""Issue 20's settings, chosen on validation queries only: the hybrid mode's fusion weights and
the keyword mode's text share. Validation: the category sentences of
core/resources/validation_queries.csv (pool: the index's labelled training images) and the
captions of half of the photos the index held out (a hash of the file name picks the half;
pool: every indexed image). The other half's captions are written to FIGURES_CAPTIONS for the
figures (`evaluate-retrieval --captions`), with core/resources/queries.csv, which nothing here
reads. Each part's scores are computed once per query; the fusion is replayed in numpy over
each part's top HYBRID_CANDIDATES, as the engine fuses.

    python benchmarks/answers_tuning.py --index IDX --captions CAPTIONS --figures-captions OUT
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.resources import resource_path
from core.search import SearchEngine
from core.search.evaluate import (
    average_precision,
    caption_file_map,
    fitted_images,
    precision_at_k,
    tied_rank,
    whole_table,
)
from core.search.retrievers import HYBRID_CANDIDATES

CATEGORY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
KEYWORD_WEIGHTS = (0.0, 0.1, 0.25)


def validation_half(name: str) -> bool:
    return int(hashlib.sha1(("val:" + name).encode()).hexdigest(), 16) % 2 == 0


def part_scores(wt, q) -> dict[str, np.ndarray]:
    """Each part's scores over the table, zero outside its top HYBRID_CANDIDATES (as fused)."""
    out = {}
    for mode in ("semantic", "category", "keyword"):
        s = wt.mode_scores(q, mode)
        if mode == "category" and not np.any(q.class_weights):
            s = np.zeros_like(s)
        top = np.argsort(-s)[:HYBRID_CANDIDATES]
        kept = np.zeros_like(s)
        kept[top] = s[top]
        out[mode] = kept
    return out


def fuse(parts: dict[str, np.ndarray], wc: float, wk: float) -> np.ndarray:
    return parts["semantic"] + wc * parts["category"] + wk * parts["keyword"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--figures-captions", required=True)
    args = ap.parse_args()
    engine = SearchEngine.load(args.index)
    wt = whole_table(engine)
    names = [Path(p).name for p in wt.paths]
    row_of = {n: i for i, n in enumerate(names)}
    fitted = fitted_images(wt)
    by_name = caption_file_map(args.captions)
    held = [n for n in by_name if n in row_of and n not in fitted]
    val = [n for n in held if validation_half(n)]
    fig = [n for n in held if not validation_half(n)]
    with open(args.figures_captions, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "caption"])
        w.writerows((n, c) for n in fig for c in by_name[n])
    caps = [(c, row_of[n]) for n in val for c in by_name[n]]
    with open(resource_path("validation_queries.csv"), newline="", encoding="utf-8") as fh:
        sentences = [(r["query"], r["category"]) for r in csv.DictReader(fh)]
    pool = np.flatnonzero((wt.splits == "train") & (wt.labels != ""))
    wt.prime([c for c, _ in caps] + [s for s, _ in sentences])
    cap_parts = [(part_scores(wt, wt.analyze(c)), i) for c, i in caps]
    sen_parts = [(part_scores(wt, wt.analyze(s)), c) for s, c in sentences]
    rows = []
    for wc in CATEGORY_WEIGHTS:
        for wk in KEYWORD_WEIGHTS:
            r10 = np.mean([tied_rank(fuse(p, wc, wk), i) <= 10 for p, i in cap_parts])
            p10, ap_ = [], []
            for p, c in sen_parts:
                s = fuse(p, wc, wk)[pool]
                rel = wt.labels[pool][np.lexsort((wt.tiebreak[pool], -s))] == c
                p10.append(precision_at_k(rel))
                ap_.append(average_precision(rel))
            rows.append(
                {
                    "category": wc,
                    "keyword": wk,
                    "R@10": round(float(r10), 4),
                    "P@10": round(float(np.mean(p10)), 4),
                    "MAP": round(float(np.mean(ap_)), 4),
                }
            )
    single = {}
    for mode in ("semantic", "category", "keyword"):
        r10 = np.mean([tied_rank(p[mode], i) <= 10 for p, i in cap_parts])
        p10 = np.mean(
            [
                precision_at_k(
                    wt.labels[pool][np.lexsort((wt.tiebreak[pool], -p[mode][pool]))] == c
                )
                for p, c in sen_parts
            ]
        )
        single[mode] = {"R@10": round(float(r10), 4), "P@10": round(float(p10), 4)}
    best_r = max(v["R@10"] for v in single.values())
    best_p = max(v["P@10"] for v in single.values())
    ok = [r for r in rows if r["R@10"] >= best_r and r["P@10"] >= best_p] or rows
    chosen = max(ok, key=lambda r: (r["R@10"] + r["P@10"], r["MAP"]))
    print(
        json.dumps(
            {
                "validation_captions": len(caps),
                "validation_photos": len(val),
                "figures_photos": len(fig),
                "validation_sentences": len(sentences),
                "sentence_pool": len(pool),
                "single": single,
                "grid": rows,
                "chosen": chosen,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

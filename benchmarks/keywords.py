"""Benchmark: the caption-keyword pipeline against the study's script, same captions, same run.

    python benchmarks/keywords.py [CAPTIONS] [--json] [--out FILE]

CAPTIONS defaults to $SCENESEEK_SHARED_DATA/flickr8k/captions.txt, else
../shared/data/flickr8k/captions.txt beside the repo.

Ours: read (format detection, malformed-row accounting) + preprocess + TF-IDF + mapping
labels + chi-square per category + PMI + keyword HMM fit (training split) and Viterbi decode
(held-out split) + the HMM/TF-IDF/YAKE comparison + the classifier, seconds per stage.

The study's way, restated from its section 3.3: TF-IDF over all captions (scikit-learn,
English stop words), chi-square (SelectKBest) against the label "caption contains landscape
or scenery", top 500 words, those words mapped to categories with the table, and an HMM
trained on the ASCII codes of all captions (two states, hmmlearn's default 10 iterations;
CategoricalHMM, which is what MultinomialHMM meant before hmmlearn 0.3). Its HMM output was
never evaluated, so it has no precision/recall to print.

Goal (PASS/FAIL): the whole corpus through our pipeline (read .. hmm_decode) under 15 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.config import shared_data_dir  # noqa: E402
from core.io import atomic_write_json, dumps_json  # noqa: E402
from core.text import Mapping, PipelineConfig, report_on_file  # noqa: E402

GOAL_SECONDS = 15.0
CORE_STAGES = ("read", "preprocess", "tfidf", "labels", "chi2", "pmi", "hmm_fit", "hmm_decode")


def default_captions() -> Path:
    return shared_data_dir() / "flickr8k" / "captions.txt"


def study_way(path: Path, mapping: Mapping) -> dict:
    """The study's script, restated; seconds per stage and what it produced."""
    import pandas as pd
    from hmmlearn.hmm import CategoricalHMM
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.feature_selection import SelectKBest, chi2

    seconds: dict[str, float] = {}
    t = time.perf_counter()
    df = pd.read_csv(path)  # the study read the CSV with pandas; bad rows would stop it
    captions = df["caption"].astype(str).str.lower().tolist()
    seconds["read"] = time.perf_counter() - t

    t = time.perf_counter()
    vec = TfidfVectorizer(stop_words="english")
    x = vec.fit_transform(captions)
    seconds["tfidf"] = time.perf_counter() - t

    t = time.perf_counter()
    label = np.array([("landscape" in c or "scenery" in c) for c in captions], dtype=int)
    selector = SelectKBest(chi2, k=min(500, x.shape[1])).fit(x, label)
    top = vec.get_feature_names_out()[selector.get_support()]
    seconds["chi2"] = time.perf_counter() - t

    t = time.perf_counter()
    forms = mapping.forms()
    mapped = {w: forms[w] for w in top if w in forms}
    seconds["mapping"] = time.perf_counter() - t

    t = time.perf_counter()
    codes = np.array([min(ord(ch), 127) for c in captions for ch in c]).reshape(-1, 1)
    hmm = CategoricalHMM(n_components=2, n_iter=10, n_features=128, random_state=0)
    hmm.fit(codes)
    sample, _ = hmm.sample(80, random_state=0)
    seconds["hmm_ascii"] = time.perf_counter() - t
    return {
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "total": round(sum(seconds.values()), 3),
        "n_captions": len(captions),
        "n_labelled_landscape_or_scenery": int(label.sum()),
        "top_chi2_first_20": top[np.argsort(-selector.scores_[selector.get_support()])][
            :20
        ].tolist(),
        "mapped_keywords": mapped,
        "hmm_chars": len(codes),
        "hmm_sample": "".join(chr(int(c)) for c in sample.ravel()),
    }


def ours(path: Path, mapping: Mapping) -> dict:
    _, report = report_on_file(path, mapping, PipelineConfig())
    d = report.to_json()
    core_total = sum(d["seconds"].get(s, 0.0) for s in CORE_STAGES)
    return {
        "seconds": d["seconds"],
        "core_total": round(core_total, 3),
        "total": round(sum(d["seconds"].values()), 3),
        "n_captions": d["n_captions"],
        "n_malformed": d["n_malformed"],
        "category_counts": d["category_counts"],
        "split": d["split"],
        "hmm": {k: d["hmm"][k] for k in ("precision", "recall", "f1", "n_heldout")},
        "comparison": d["comparison"],
        "classifier": {k: v for k, v in d["classifier"].items() if k != "word_weights"},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("captions", nargs="?", type=Path, default=default_captions())
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    args = ap.parse_args()
    if not args.captions.is_file():
        print(f"error: no captions file at {args.captions}", file=sys.stderr)
        return 2
    mapping = Mapping.default()
    ours_res = ours(args.captions, mapping)
    study_res = study_way(args.captions, mapping)
    result = {
        "captions": str(args.captions),
        "cpus": os.cpu_count(),
        "ours": ours_res,
        "study": study_res,
        "ratio_study_over_ours_total": round(study_res["total"] / ours_res["total"], 2),
        "goal": {
            "core_seconds_under": GOAL_SECONDS,
            "core_seconds": ours_res["core_total"],
            "pass": ours_res["core_total"] < GOAL_SECONDS,
        },
    }
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(dumps_json(result))
        return 0
    print(f"{args.captions}: {ours_res['n_captions']} captions, {os.cpu_count()} CPUs")
    print("\nours (seconds per stage):")
    for k, v in ours_res["seconds"].items():
        print(f"  {k:12s} {v:7.3f}")
    print(f"  {'core total':12s} {ours_res['core_total']:7.3f}   (read .. hmm_decode)")
    print(f"  {'all':12s} {ours_res['total']:7.3f}   (+ compare, classifier)")
    print("\nstudy's way (seconds per stage):")
    for k, v in study_res["seconds"].items():
        print(f"  {k:12s} {v:7.3f}")
    print(f"  {'total':12s} {study_res['total']:7.3f}")
    print(f"\nratio study / ours (all stages): {result['ratio_study_over_ours_total']}x")
    print(
        f"study's label 'landscape or scenery': {study_res['n_labelled_landscape_or_scenery']} "
        f"of {study_res['n_captions']} captions; our table labels: {ours_res['category_counts']}"
    )
    print(f"study's chi-square top 20: {', '.join(study_res['top_chi2_first_20'])}")
    print(f"study's ASCII HMM sample: {study_res['hmm_sample']!r}")
    print(
        f"\nHMM on {ours_res['hmm']['n_heldout']} held-out captions: precision "
        f"{ours_res['hmm']['precision']:.3f}, recall {ours_res['hmm']['recall']:.3f}"
    )
    comp = ours_res["comparison"]
    print(f"comparison on {comp['sample']}:")
    for name, m in comp["methods"].items():
        print(f"  {name:28s} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f}")
    unseen = comp.get("unseen_words") or {}
    if unseen:
        print(f"seeded with half the table; hidden: {', '.join(unseen['hidden_words'])}")
        for name, m in unseen["methods"].items():
            print(
                f"  {name:28s} P={m['precision']:.3f} R={m['recall']:.3f} "
                f"R(hidden)={m['recall_hidden']:.3f}"
            )
    c = ours_res["classifier"]
    if c.get("n"):
        print(
            f"classifier on {c['n']} single-category held-out captions: with table "
            f"{c['with_table']:.3f}, context only {c['context_only']:.3f}, majority "
            f"{c['majority_baseline']:.3f}"
        )
    goal = result["goal"]
    print(
        f"\n{'PASS' if goal['pass'] else 'FAIL'}: whole corpus read .. hmm_decode in "
        f"{goal['core_seconds']:.2f} s (goal < {GOAL_SECONDS:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

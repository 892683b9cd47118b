"""Curation figures on the shared Intel data (issue 13), each printed with how it was made.

  --noise      flip the labels of a seeded 5% of the training images (a copy made of symbolic
               links in a temporary folder), audit it, and report the fraction of flipped
               images among the top-ranked 2 x (number flipped); the goal is >= 70%.
  --threshold  choose the near-duplicate threshold on the *training* split: cosine distance
               between 40 images and copies of them resized and re-encoded (DEGRADATIONS:
               2x q85, 1x q90, 1x q60, 0.9x q85, 0.6x q40), against the distance of
               ordinary nearest neighbours.
  --duplicates near-duplicate groups, cross-class groups and train/test pairs of the whole
               data at the default threshold, the 9 byte-identical pairs among them, and the
               time the self-join took (ANN against LanceDB's exact scan, same run).
  --probe-c    out-of-fold log loss of the probe for C in 0.01, 0.1, 1 (training split).

Usage: .venv/bin/python benchmarks/curate.py --noise --threshold --duplicates
Reads $SCENESEEK_SHARED_DATA (default ../shared/data); caches in $SCENESEEK_CACHE.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import resolve_cache_dir, shared_data_dir  # noqa: E402


def noisy_copy(src: Path, dest: Path, fraction: float, seed: int) -> set[str]:
    """Symbolic links to every training image, a seeded `fraction` filed under another class.
    Returns the link paths of the flipped images."""
    rng = random.Random(seed)
    classes = sorted(p.name for p in src.iterdir() if p.is_dir())
    files = [(c, f) for c in classes for f in sorted((src / c).glob("*.jpg"))]
    flip = set(rng.sample(range(len(files)), round(fraction * len(files))))
    flipped = set()
    for i, (c, f) in enumerate(files):
        label = rng.choice([x for x in classes if x != c]) if i in flip else c
        link = dest / "train" / label / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(f, link)
        if i in flip:
            flipped.add(str(link))
    return flipped


def noise(args: argparse.Namespace) -> None:
    from core.curate.audit import run_audit

    src = shared_data_dir() / "intel" / "seg_train"
    with tempfile.TemporaryDirectory(prefix="noisy-intel-") as tmp:
        flipped = noisy_copy(src, Path(tmp), 0.05, args.seed)
        t0 = time.perf_counter()
        audit = run_audit(tmp, cache_dir=resolve_cache_dir())
        secs = time.perf_counter() - t0
        c = audit.collection
        n = len(flipped)
        top = [c.paths[i.index] for i in audit.issues[: 2 * n]]
        hit = sum(p in flipped for p in top)
        found_all = sum(c.paths[i.index] in flipped for i in audit.issues)
        print(
            f"noise: {len(c)} training images, {n} labels flipped (seed {args.seed}); "
            f"cleanlab flagged {len(audit.issues)}, of which {found_all} flipped"
        )
        print(
            f"noise: flipped among the top {2 * n}: {hit}/{n} = {hit / n:.1%} "
            f"(goal >= 70%); precision of the top {2 * n}: {hit / (2 * n):.1%}; "
            f"audit {secs:.1f} s (features from cache: {audit.timings})"
        )
        print("noise: top 30 (flipped? score given -> suggested, real file):")
        for i in audit.issues[:30]:
            p = c.paths[i.index]
            mark = "FLIP" if p in flipped else "data"
            print(f"  {mark} {i.score:.3f} {i.given:9s} -> {i.suggested:9s} {os.path.realpath(p)}")
        unflipped = [i for i in audit.issues[: 2 * n] if c.paths[i.index] not in flipped]
        print(
            f"noise: {len(unflipped)} of the top {2 * n} are not flipped (the data's own "
            "mistakes or ambiguous images); their given -> suggested:"
        )
        from collections import Counter

        for (g, s), k in Counter((i.given, i.suggested) for i in unflipped).most_common(8):
            print(f"  {g} -> {s}: {k}")


DEGRADATIONS = ((2.0, 85), (1.0, 90), (1.0, 60), (0.9, 85), (0.6, 40))  # (scale, JPEG quality)


def _degrade(src: Path, dest: Path, scale: float, quality: int) -> None:
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        size = (max(8, round(im.width * scale)), max(8, round(im.height * scale)))
        im.resize(size, Image.Resampling.BICUBIC).save(dest, "JPEG", quality=quality)


def threshold(args: argparse.Namespace) -> None:
    from core.curate.duplicates import DEFAULT_THRESHOLD, normalize, self_join, vector_table
    from core.curate.vectors import collection_vectors, load_collection, vector_source

    cache = resolve_cache_dir()
    coll = load_collection(shared_data_dir() / "intel" / "seg_train", cache)
    src = vector_source()
    vec = normalize(collection_vectors(src, coll.paths, cache))
    with tempfile.TemporaryDirectory(prefix="nn-") as tmp:
        tbl = vector_table(vec, Path(tmp) / "t")
        pairs, _ = self_join(tbl, vec, k=1, threshold=1.0)
    nn = np.full(len(vec), np.inf)
    for a, b, d in pairs:
        nn[a], nn[b] = min(nn[a], d), min(nn[b], d)
    nn = nn[np.isfinite(nn)]
    print(
        f"threshold: nearest-neighbour cosine distance among {len(vec)} training images: p1 "
        f"{np.percentile(nn, 1):.4f}, p5 {np.percentile(nn, 5):.4f}, median "
        f"{np.median(nn):.4f}; images with a neighbour within {DEFAULT_THRESHOLD}: "
        f"{(nn <= DEFAULT_THRESHOLD).mean():.2%}"
    )
    pick = np.random.default_rng(args.seed).choice(len(coll), 40, replace=False)
    for scale, quality in DEGRADATIONS:
        with tempfile.TemporaryDirectory(prefix="degraded-") as tmp:
            copies = []
            for j, i in enumerate(pick):
                dest = Path(tmp) / f"{j:04d}.jpg"
                _degrade(Path(coll.paths[i]), dest, scale, quality)
                copies.append(str(dest))
            cv = normalize(collection_vectors(src, copies, Path(tmp) / "cache"))
        d = 1.0 - np.einsum("ij,ij->i", vec[pick], cv)
        print(
            f"threshold: copy resized {scale}x + JPEG q={quality} (40 training images, seed "
            f"{args.seed}): distance to its original median {np.median(d):.4f}, p90 "
            f"{np.percentile(d, 90):.4f}, max {d.max():.4f}; caught at "
            f"{DEFAULT_THRESHOLD}: {(d <= DEFAULT_THRESHOLD).mean():.0%}"
        )


def duplicates(args: argparse.Namespace) -> None:
    from core.curate.audit import run_audit
    from core.curate.duplicates import find_near_duplicates
    from core.data.dataset import find_dataset
    from core.data.manifest import build_manifest

    cache = resolve_cache_dir()
    root = shared_data_dir() / "intel"
    audit = run_audit(root, cache_dir=cache)
    c, dup = audit.collection, audit.duplicates
    print(
        f"duplicates: {len(c)} images, threshold {dup.threshold}: {len(dup.groups)} groups, "
        f"{sum(g.cross_class for g in dup.groups)} across classes, "
        f"{sum(g.cross_split for g in dup.groups)} with a train/test pair, "
        f"{len(dup.cross_split_pairs)} train/test pairs"
    )
    man = build_manifest(find_dataset(root), cache)
    d = man.duplicates()
    pos = {p: i for i, p in enumerate(c.paths)}
    pairs = {(a, b) for a, b, _ in dup.pairs}
    known = []
    for _, g in d.groupby("sha256"):
        ps = sorted(pos[p] for p in g["path"])
        known += [(ps[i], ps[j]) for i in range(len(ps)) for j in range(i + 1, len(ps))]
    got = sum(p in pairs for p in known)
    print(
        f"duplicates: byte-identical pairs (manifest sha256): {len(known)}, found among the "
        f"near-duplicate pairs: {got}"
    )
    # Same self-join, ANN against LanceDB's exact scan, fresh tables in a temporary folder.
    for name, min_rows in (("ann", 0), ("exact", 10**9)):
        with tempfile.TemporaryDirectory(prefix="selfjoin-") as tmp:
            t0 = time.perf_counter()
            rep = find_near_duplicates(
                audit.vectors,
                c.labels,
                c.splits,
                Path(tmp) / "t",
                dup.threshold,
                ann_min_rows=min_rows,
            )
            print(
                f"duplicates: self-join {name}: {time.perf_counter() - t0:.1f} s including "
                f"the table{' and its ANN index' if name == 'ann' else ''}; "
                f"{len(rep.pairs)} pairs, {len(rep.groups)} groups"
            )


def probe_c(args: argparse.Namespace) -> None:
    from sklearn.metrics import log_loss

    from core.curate.label_issues import out_of_fold_probs
    from core.curate.vectors import collection_vectors, load_collection, vector_source

    cache = resolve_cache_dir()
    coll = load_collection(shared_data_dir() / "intel" / "seg_train", cache)
    vec = collection_vectors(vector_source(), coll.paths, cache)
    names = coll.class_names
    y = np.array([names.index(v) for v in coll.labels])
    for c in (0.01, 0.1, 1.0):
        t0 = time.perf_counter()
        p = out_of_fold_probs(vec, y, c=c)
        print(
            f"probe C={c}: out-of-fold log loss {log_loss(y, p):.4f}, accuracy "
            f"{(p.argmax(1) == y).mean():.4f} ({time.perf_counter() - t0:.1f} s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", action="store_true")
    ap.add_argument("--threshold", action="store_true")
    ap.add_argument("--duplicates", action="store_true")
    ap.add_argument("--probe-c", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not shared_data_dir().exists():
        sys.exit(f"shared data not found: {shared_data_dir()}")
    for flag, fn in (
        ("threshold", threshold),
        ("probe_c", probe_c),
        ("duplicates", duplicates),
        ("noise", noise),
    ):
        if getattr(args, flag):
            fn(args)


if __name__ == "__main__":
    main()

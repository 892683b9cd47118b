"""The semantic map: its category head, out-of-fold vectors, saving and loading."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from core.search.semantic_map import (
    MapConfig,
    SemanticMap,
    category_head,
    fit_semantic_map,
    mapping_dir,
)
from core.search.sentence import TEXT_DIM, TextEncoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load("cpu")


@pytest.mark.parametrize("classes", [["forest", "sea"], ["forest", "glacier", "sea"]])
def test_category_head_matches_logistic_regression(classes) -> None:
    """Two classes are the edge case: scikit-learn then keeps one coefficient row."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(classes), 16))
    labels = [c for c in classes for _ in range(10)]
    feats = np.concatenate([centres[i] + rng.normal(size=(10, 16)) for i in range(len(classes))])
    feats = feats.astype(np.float32)
    cfg = MapConfig()
    coef, bias = category_head(feats, labels, sorted(classes), cfg.category_c)
    no_ridge = np.zeros((0, TEXT_DIM), np.float32), np.zeros(TEXT_DIM, np.float32)
    sm = SemanticMap(*no_ridge, sorted(classes), coef, bias)
    want = LogisticRegression(C=cfg.category_c, max_iter=2000).fit(feats, labels)
    got = sm.category_proba(feats)
    assert got.shape == (len(labels), len(classes))
    np.testing.assert_allclose(got, want.predict_proba(feats), atol=1e-4)
    assert [sm.class_names[j] for j in got.argmax(1)] == list(want.predict(feats))


# --- out-of-fold semantic vectors on real images ------------------------------------------------

SEA_CAPTIONS = [
    "waves roll onto a sandy beach",
    "the blue ocean under a bright sky",
    "a calm sea stretching to the horizon",
    "surf breaking on the shore",
    "boats far out on the water",
    "a rocky coast with foam from the waves",
    "the tide coming in over the sand",
    "a seaside view with clear water",
]


@pytest.fixture(scope="module")
def intel_encoded(intel_small):
    """The small real Intel subset encoded once: (rows as the index holds them, features)."""
    import hashlib

    from core.search.embed import encode_loader
    from core.search.encoders import create_image_encoder
    from core.search.store import list_images

    files = list_images(intel_small)
    enc = create_image_encoder(device="cpu")
    e = encode_loader(enc, enc.loader([f.path for f in files], 32, 0))
    rows = {
        "path": [f.path for f in files],
        # Keyed by the path inside the data set, not the temporary folder: folds stay put.
        "sha256": [
            hashlib.sha256(Path(f.path).relative_to(intel_small).as_posix().encode()).hexdigest()
            for f in files
        ],
        "split": [f.split for f in files],
        "label": [f.label for f in files],
        "captions": [[] for _ in files],
        "top_ids": e.top_ids.tolist(),
        "top_probs": e.top_probs.tolist(),
        "probs": [[] for _ in files],
    }
    return rows, e.features


def _half_captioned_sea(rows: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every sea photo unlabelled; half of them (every other one) captioned."""
    rows = {k: list(v) for k, v in rows.items()}
    sea = [i for i, lab in enumerate(rows["label"]) if lab == "sea"]
    for j, i in enumerate(sea):
        rows["label"][i], rows["split"][i] = "", ""
        if j % 2 == 0:
            rows["captions"][i] = [SEA_CAPTIONS[(j + k) % len(SEA_CAPTIONS)] for k in range(5)]
    sea = np.array(sea)
    return rows, sea, sea[::2]


def _captioned_share_of_sea_top10(vectors, queries, sea, captioned) -> float:
    """Among the sea photos in each sea query's top 10: the share that has captions."""
    shares = []
    for q in queries:
        top = np.argsort(-(vectors @ q))[:10]
        top_sea = [i for i in top if i in set(sea.tolist())]
        shares += [i in set(captioned.tolist()) for i in top_sea]
    return float(np.mean(shares))


@pytest.mark.slow
def test_out_of_fold_vectors_give_captioned_photos_no_head_start(
    encoder: TextEncoder, intel_encoded, tmp_path: Path
) -> None:
    """Half the sea photos have captions: in-fold, the mapping pulls its own training photos
    toward every sea query; out-of-fold, their share of the top 10 matches their share.
    With 14 captioned sea photos one fold assignment is a small sample (one assignment alone
    varies by about 0.1), so the out-of-fold share is averaged over five assignments."""
    import hashlib

    from core.search.evaluate import read_queries

    rows, feats = intel_encoded
    rows, sea, captioned = _half_captioned_sea(rows)
    queries = [q for q, c in read_queries("core/resources/queries.csv") if c == "sea"]
    qv = encoder.encode(queries)
    meta = {"roots": {}, "encoder": {"backbone": "efficientnet_lite0"}}
    base = MapConfig(heldout_fraction=0.0, image_weight=0.9)  # lean on the mapping: worst case
    share_pool = len(captioned) / len(sea)
    in_fold = dataclasses.replace(base, folds=1)
    inf = fit_semantic_map(feats, rows, meta, lambda: encoder, in_fold, cache_dir=tmp_path)
    share_in = _captioned_share_of_sea_top10(inf.vectors, qv, sea, captioned)
    shares_oof = []
    for seed in range(5):
        salted = dict(
            rows,
            sha256=[hashlib.sha256(f"{seed}:{h}".encode()).hexdigest() for h in rows["sha256"]],
        )
        oof = fit_semantic_map(feats, salted, meta, lambda: encoder, base, cache_dir=tmp_path)
        assert oof.fitted_images == {Path(rows["path"][i]).name for i in captioned}
        shares_oof.append(_captioned_share_of_sea_top10(oof.vectors, qv, sea, captioned))
    share_oof = float(np.mean(shares_oof))
    print(
        f"captioned share of sea top-10: out-of-fold {share_oof:.2f} "
        f"({', '.join(f'{s:.2f}' for s in shares_oof)}), in-fold {share_in:.2f}, "
        f"pool {share_pool:.2f}"
    )
    assert share_in > share_pool + 0.1  # the bias is real
    assert abs(share_oof - share_pool) <= 0.08
    assert abs(share_oof - share_pool) < (share_in - share_pool) / 2  # out-of-fold removes most


@pytest.mark.slow
def test_saved_fit_embeds_like_the_fit_and_a_new_image_without_fitting(
    encoder: TextEncoder, intel_encoded, tmp_path: Path
) -> None:
    from core.search.backend import Encoded

    rows, feats = intel_encoded
    rows, _, captioned = _half_captioned_sea(rows)
    meta = {"roots": {}, "encoder": {"backbone": "efficientnet_lite0"}}
    cfg = MapConfig(heldout_fraction=0.0)
    fit = fit_semantic_map(feats, rows, meta, lambda: encoder, cfg, tmp_path)
    assert fit.vectors.shape == (len(feats), TEXT_DIM)
    np.testing.assert_allclose(np.linalg.norm(fit.vectors, axis=1), 1, atol=1e-5)

    def boom():
        raise AssertionError("a saved fit must not be refitted")

    again = fit_semantic_map(feats, rows, meta, boom, cfg, tmp_path)
    np.testing.assert_allclose(again.vectors, fit.vectors, atol=1e-6)
    model = SemanticMap.load(mapping_dir(tmp_path, fit.key))
    ids, tp = np.array(rows["top_ids"]), np.array(rows["top_probs"], np.float32)
    # an image the mapping never saw (not captioned): the model embeds it like the fit did
    plain = [
        i for i in range(len(feats)) if i not in set(captioned.tolist()) and not rows["label"][i]
    ]
    i = plain[0]
    enc = Encoded(feats[i : i + 1], ids[i : i + 1], tp[i : i + 1], None, np.ones(1, bool))
    np.testing.assert_allclose(model.embed_encoded(enc)[0], fit.vectors[i], atol=1e-5)
    # a captioned photo's stored vector is out-of-fold: not what the full mapping gives it
    c = int(captioned[0])
    full = model.embed(feats[c : c + 1], ids[c : c + 1], tp[c : c + 1])[0]
    assert not np.allclose(full, fit.vectors[c], atol=1e-3)
    other = dataclasses.replace(cfg, label_k=3)
    assert fit_semantic_map(feats, rows, meta, lambda: encoder, other, tmp_path).key != fit.key

"""The category head of the image-to-text mapping agrees with the classifier it comes from."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from core.search.textmap import MapConfig, TextEncoder, TrainingSet, fit_semantic_map


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.load("cpu")


@pytest.mark.parametrize("classes", [["forest", "sea"], ["forest", "glacier", "sea"]])
def test_category_head_matches_logistic_regression(encoder: TextEncoder, classes) -> None:
    """Two classes are the edge case: scikit-learn then keeps one coefficient row."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(classes), 16))
    labels = [c for c in classes for _ in range(10)]
    feats = np.concatenate([centres[i] + rng.normal(size=(10, 16)) for i in range(len(classes))])
    feats = feats.astype(np.float32)
    rows = {"label": labels, "captions": [[] for _ in labels]}
    ts = TrainingSet(np.array([], int), np.arange(len(labels)), [], sorted(classes), "k")
    cfg = MapConfig()
    sm = fit_semantic_map(feats, rows, ts, encoder, cfg)
    want = LogisticRegression(C=cfg.category_c, max_iter=2000).fit(feats, labels)
    got = sm.category_proba(feats)
    assert got.shape == (len(labels), len(classes))
    np.testing.assert_allclose(got, want.predict_proba(feats), atol=1e-4)
    assert [sm.class_names[j] for j in got.argmax(1)] == list(want.predict(feats))

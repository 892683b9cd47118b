"""Caption-to-categories classifier: the mapping table plus learned word weights.

Table hits decide first (a caption that says "beach" is about sea). Learned weights add
categories the table misses: one logistic regression per category on TF-IDF features of the
caption with the table's own words removed, so the model has to learn from context ("waves",
"surfer", "sand") instead of re-learning the table. Labels come from the table on training
captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.text.categories import Mapping
from core.text.tfidf import make_vectorizer


@dataclass
class CaptionClassifier:
    mapping: Mapping
    vectorizer: object
    coef: np.ndarray  # (n categories, n words)
    intercept: np.ndarray
    threshold: float = 0.5
    info: dict = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return self.mapping.names

    def mask(self, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
        forms = self.mapping.forms()
        return [[t for t in toks if t not in forms] for toks in token_lists]

    def learned_proba(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(n, n categories) probabilities from context words only (table words removed)."""
        x = self.vectorizer.transform(self.mask(token_lists))
        z = np.asarray(x @ self.coef.T) + self.intercept
        return 1 / (1 + np.exp(-z))

    def scores(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Table hit = 1.0, else the learned probability."""
        y = self.mapping.label_matrix(token_lists).astype(np.float64)
        return np.maximum(y, self.learned_proba(token_lists))

    def predict(self, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
        s = self.scores(token_lists)
        return [
            [c for c, v in zip(self.categories, row, strict=True) if v >= self.threshold]
            for row in s
        ]

    def word_weights(self, n: int = 15) -> dict[str, list[tuple[str, float]]]:
        vocab = self.vectorizer.get_feature_names_out()
        return {
            c: [(str(vocab[i]), float(self.coef[j, i])) for i in np.argsort(-self.coef[j])[:n]]
            for j, c in enumerate(self.categories)
        }


def fit_classifier(
    train_tokens: Sequence[Sequence[str]], mapping: Mapping, c: float = 4.0, threshold: float = 0.5
) -> CaptionClassifier:
    from sklearn.linear_model import LogisticRegression

    y = mapping.label_matrix(train_tokens)
    forms = mapping.forms()
    masked = [[t for t in toks if t not in forms] for toks in train_tokens]
    vec = make_vectorizer(min_df=2)
    x = vec.fit_transform(masked)
    coef = np.zeros((y.shape[1], x.shape[1]))
    intercept = np.full(y.shape[1], -10.0)  # no positive examples: never fires
    for j in range(y.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            lr = LogisticRegression(C=c, solver="liblinear", max_iter=200)
            lr.fit(x, y[:, j])
            coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]
    return CaptionClassifier(
        mapping, vec, coef, intercept, threshold, {"train_captions": len(train_tokens)}
    )


def classifier_accuracy(clf: CaptionClassifier, test_tokens: Sequence[Sequence[str]]) -> dict:
    """Accuracy on held-out captions whose category the table determines (exactly one).

    - `with_table`: the full classifier's predicted set equals the table's one category.
      Table words are present, so this mostly checks that learned weights do not add wrong
      categories.
    - `context_only`: table words removed, argmax of the learned weights = the category.
      The honest measure of what the learned weights know.
    - `majority_baseline`: always the most common category, for scale.
    """
    y = clf.mapping.label_matrix(test_tokens)
    single = np.flatnonzero(y.sum(axis=1) == 1)
    if len(single) == 0:
        return {"n": 0}
    toks = [test_tokens[i] for i in single]
    truth = y[single].argmax(axis=1)
    pred_sets = clf.predict(toks)
    cats = clf.categories
    with_table = np.mean([ps == [cats[t]] for ps, t in zip(pred_sets, truth, strict=True)])
    ctx = clf.learned_proba(toks).argmax(axis=1)
    per_cat = {
        c: {
            "n": int((truth == j).sum()),
            "context_only_recall": float((ctx[truth == j] == j).mean())
            if (truth == j).any()
            else None,
        }
        for j, c in enumerate(cats)
    }
    return {
        "n": len(single),
        "with_table": float(with_table),
        "context_only": float((ctx == truth).mean()),
        "majority_baseline": float(np.bincount(truth, minlength=len(cats)).max() / len(truth)),
        "per_category": per_cat,
    }

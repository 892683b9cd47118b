"""Why a result was returned, per mode, in words: which query words matched what.

Computed for the k results only, from the columns each result row carries (and, for the
semantic mode, the row's backbone vector and the saved text mapping)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.search.query import Query, word_forms

if TYPE_CHECKING:
    from core.search.semantic_map import SemanticMap

WORD_TAG_MIN = 0.35  # a query word is said to match a tag from this cosine on
NO_KEYWORD = "no keyword matched"


@dataclass
class Explainer:
    classes: list[str]
    model: SemanticMap | None = None  # None: CLIP or no mapping

    def explain(
        self, row: dict, q: Query, mode: str, feature: np.ndarray | None = None
    ) -> list[str]:
        if mode == "keyword":
            return keyword_why(row, q, self.classes) or [NO_KEYWORD]
        if mode == "category":
            return self.category_why(row, q)
        if mode == "semantic":
            return self.semantic_why(row, q, feature)
        out = []
        ranks = row.get("ranks") or {}
        for sub in ("keyword", "category", "semantic"):
            if ranks and not ranks.get(sub):
                continue  # not among that mode's candidates
            why = self.explain(row, q, sub, feature)
            if why and why != [NO_KEYWORD]:
                out += [f"{sub}: {w}" for w in why]
        return out

    def category_why(self, row: dict, q: Query) -> list[str]:
        probs = row.get("probs") or []
        if not self.classes or len(probs) != len(self.classes):
            return []
        w = q.class_weights
        if not np.any(w):
            if not q.nearest:
                return []
            c = q.nearest[0][0]
            p = probs[self.classes.index(c)]
            return [
                f"query nearest category by meaning: {c} ({q.nearest[0][1]:.2f}); P({c}) = {p:.2f}"
            ]
        return [
            f"query → {c} ({q.category_why.get(c, '')}); P({c}) = {probs[j]:.2f}"
            for j, c in enumerate(self.classes)
            if w[j] > 0
        ]

    def semantic_why(self, row: dict, q: Query, feature: np.ndarray | None) -> list[str]:
        if q.embedding is None:
            return []
        out = []
        if "semantic_score" in row:
            out.append(f"semantic vector ~ query: {row['semantic_score']:.2f}")
        m = self.model
        if m is None or getattr(m, "label_emb", None) is None:
            return out or [f"semantic vector ~ query: {row['score']:.2f}"]
        top_ids = np.asarray([row["top_ids"]], int)
        top_p = np.asarray([row["top_probs"]], np.float32)
        probs = row.get("probs") or None
        probs_arr = (
            np.asarray([probs], np.float32) if probs and len(probs) == len(m.tag_classes) else None
        )
        if feature is not None and m.has_ridge:
            img = m.image_embed(np.asarray(feature, np.float32)[None])[0]
            out.append(f"learned image embedding ~ query: {float(img @ q.embedding):.2f}")
        feats = None if feature is None else np.asarray(feature, np.float32)[None]
        tag = m.tag_embed(top_ids, top_p, probs_arr, feats)[0]
        out.append(f"tag text ~ query: {float(tag @ q.embedding):.2f}")
        tags = [
            (lab, m.label_emb[int(j)])
            for lab, j in zip(row["top_labels"], row["top_ids"], strict=True)
        ]
        if row.get("category") and row["category"] in m.tag_classes and m.class_emb is not None:
            tags.append((row["category"], m.class_emb[m.tag_classes.index(row["category"])]))
        for word, e in q.word_embeddings.items():
            s, t = max((float(v @ e), name) for name, v in tags)
            if s >= WORD_TAG_MIN:
                out.append(f"'{word}' ~ tag '{t}' ({s:.2f})")
        return out


@functools.lru_cache(maxsize=1)
def _groups() -> Any:
    """The ImageNet-label groups table, as the index's full-text column has it."""
    from core.text.imagenet_groups import GroupsError, ImagenetGroups, load_groups

    try:
        return load_groups()
    except GroupsError:
        return ImagenetGroups.default()


def _label_groups(label: str) -> list[str]:
    """The category words ("building") the groups table gives an ImageNet label ("church")."""
    return _groups().tags([label])


def keyword_why(row: dict, q: Query, classes: Sequence[str] = ()) -> list[str]:
    """The matches the keyword mode counted, each one a person would accept: a query category
    and the image's probability of it, a word as a whole ImageNet label or its head noun, a
    category the groups table gives a label, a word of a caption."""
    from core.search.query import WORD

    out = []
    probs = row.get("probs") or []
    for cat, w in zip(classes, q.class_weights, strict=False):
        if w > 0 and len(probs) == len(classes):
            p = probs[list(classes).index(cat)]
            out.append(f"query → {cat} ({q.category_why.get(cat, '')}); P({cat}) = {p:.2f}")
    if not np.any(q.class_weights) and q.nearest and q.nearest[0][0] in classes:
        cat, sim = q.nearest[0]
        if len(probs) == len(classes):
            p = probs[list(classes).index(cat)]
            out.append(
                f"no mapping-table word; nearest category {cat} ({sim:.2f}); P({cat}) = {p:.2f}"
            )
    labels = list(zip(row.get("top_labels") or [], row.get("top_probs") or [], strict=False))
    for kw in q.keywords:
        forms = word_forms(kw)
        for lab, p in labels:
            words = WORD.findall(lab.lower())
            if "".join(words) in forms:
                out.append(f"'{kw}' = ImageNet label '{lab}' ({p:.2f})")
            elif words and words[-1] in forms:
                out.append(f"'{kw}' = head noun of ImageNet label '{lab}' ({p:.2f})")
    for cat in q.table_categories:
        for lab, p in labels:
            if cat in _label_groups(lab):
                out.append(f"query → {cat}: ImageNet label '{lab}' is in its group ({p:.2f})")
                break
    for kw in q.keywords:
        for cap in row.get("captions") or []:
            if word_forms(kw) & set(WORD.findall(cap.lower())):
                out.append(f"'{kw}' in caption “{cap}”")
                break
    return out


def image_why(row: dict, src: dict | None) -> list[str]:
    out = [f"backbone feature cosine {row['score']:.2f}"]
    if src is not None:
        shared = [
            lab for lab in row.get("top_labels") or [] if lab in (src.get("top_labels") or [])
        ]
        if shared:
            out.append("shared ImageNet labels: " + ", ".join(shared))
        if row.get("category") and row.get("category") == src.get("category"):
            out.append(f"same predicted category: {row['category']}")
    return out

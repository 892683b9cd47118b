"""The semantic map: each image's vector in the sentence space (the MiniLM encoder itself is
core.search.sentence).

An image's semantic vector (what the index stores in its semantic column and a query's
MiniLM embedding is compared with) blends two embeddings in the sentence space:
  - the label path: the sentence embeddings of its top ImageNet labels (core.search.imagenet_labels),
    weighted by their probabilities (top `label_k`, temperature), plus the sentences of its
    predicted category; nothing learned, so it treats every photo alike;
  - the mapped image embedding: a weighted ridge regression from backbone features, fitted
    on captioned photos (the mean embedding of a photo's captions) and labelled training
    images (sentences about their class).
Both are linear in the query, so the blend is one stored vector and a query stays one
vector search. Photos the ridge map was fitted on would sit closer to every caption than
photos without captions, so each training photo is embedded by a mapping fitted without its
fold (out-of-fold). `SemanticMap` also carries a logistic-regression category head, used
when the index was built without a trained run.

Fitting happens at index time only (`fit_semantic_map`); with an index folder the fit is saved
like a run: a folder `mappings/<key>/` holding config.json and weights.npz (with the
out-of-fold vectors), written to a temporary folder and renamed, keyed by everything it
depends on, and found again instead of refitted. Queries only load it (`SemanticMap.load`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_save_npz, atomic_write_json, read_json
from core.search.backend import Encoded, TextBackend
from core.search.sentence import TEXT_DIM, TEXT_MODEL

log = logging.getLogger(__name__)

MAPPING_VERSION = 2
# Sentences about each Intel class: the text targets of labelled training images. Kept apart
# from core/resources/queries.csv so category queries are not scored on their own training text.
CLASS_SENTENCES: dict[str, list[str]] = {
    "buildings": [
        "a photo of buildings",
        "tall buildings and houses in a city",
        "the facade of an old building",
        "a city skyline with skyscrapers",
    ],
    "forest": [
        "a photo of a forest",
        "tall trees in the woods",
        "a path through a green forest",
        "sunlight falling through the trees",
    ],
    "glacier": [
        "a photo of a glacier",
        "snow and ice on a glacier",
        "an icy arctic landscape",
        "frozen blue ice under a cold sky",
    ],
    "mountain": [
        "a photo of mountains",
        "a rocky mountain peak",
        "a mountain range above a valley",
        "hills and summits in the distance",
    ],
    "sea": [
        "a photo of the sea",
        "waves on the ocean",
        "a sandy beach by the sea",
        "the shore and the blue water",
    ],
    "street": [
        "a photo of a street",
        "cars on a road between buildings",
        "people walking down a city street",
        "an urban street with shops",
    ],
}


def class_sentences(name: str) -> list[str]:
    return CLASS_SENTENCES.get(name, [f"a photo of {name}", f"a picture of a {name} scene"])


def normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def cached_text_embeddings(
    encoder: TextBackend, texts: Sequence[str], cache_dir: Path | None, name: str
) -> np.ndarray:
    """Embeddings of a fixed list of texts (ImageNet labels), cached by content."""
    key = hashlib.sha256(json.dumps([TEXT_MODEL, *texts]).encode()).hexdigest()[:16]
    path = cache_dir / f"{name}-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        try:
            arr = np.load(path)
            if arr.shape == (len(texts), TEXT_DIM):
                return arr
        except (OSError, ValueError):
            pass
    arr = encoder.encode(texts)
    if path is not None:
        from core.io import atomic_write

        atomic_write(path, lambda fh: np.save(fh, arr))
    return arr


# --- the image -> text-space mapping ------------------------------------------------------------


@dataclass
class MapConfig:
    """Everything the semantic vectors depend on besides the data (part of the fit's key).
    The label-path and blend settings were chosen on a validation split of the shared
    Flickr8k photos by benchmarks/semantic_tuning.py (README, "Semantic search")."""

    alpha: float = 0.3  # ridge penalty
    caption_share: float = 0.5  # share of the total sample weight given to captioned photos
    category_c: float = 1.0  # inverse regularisation of the category head
    heldout_fraction: float = 0.25  # photos kept out of training when no split file says
    folds: int = 5  # out-of-fold embeddings of the training photos (1: no out-of-fold)
    image_weight: float = 0.6  # blend: mapped image embedding vs label-path embedding
    label_k: int = 5  # ImageNet labels per image in the label path (at most those stored)
    temperature: float = 1.0  # label weights p^(1/T), renormalised over the top label_k
    label_text: str = "gloss"  # core.search.imagenet_labels.VARIANTS
    class_weight: float = 1.0  # weight of the predicted-category sentences in the label path


@dataclass
class SemanticMap:
    """Embeds an image (features, ImageNet top labels, category probabilities) into the
    sentence space: a blend of the ridge-mapped features and the label path. Nothing is fitted
    when embedding, so a query process only loads it."""

    weights: np.ndarray  # (d, 384) ridge map; (0, 384) when nothing to learn from
    bias: np.ndarray  # (384,)
    class_names: list[str]  # the category head's classes
    cat_coef: np.ndarray  # (C, d); empty when no labelled images
    cat_bias: np.ndarray  # (C,)
    config: dict = field(default_factory=dict)
    path: Path | None = None
    label_emb: np.ndarray | None = None  # (1000, 384) ImageNet label texts
    tag_classes: list[str] = field(default_factory=list)  # classes of the category sentences
    class_emb: np.ndarray | None = None  # (len(tag_classes), 384)

    @property
    def key(self) -> str:
        return str(self.config.get("key", ""))

    @property
    def params(self) -> MapConfig:
        known = {f for f in MapConfig.__dataclass_fields__}
        return MapConfig(**{k: v for k, v in self.config.get("params", {}).items() if k in known})

    @property
    def has_ridge(self) -> bool:
        return self.weights.size > 0

    def image_embed(self, feats: np.ndarray) -> np.ndarray:
        return normalize(feats @ self.weights + self.bias)

    @property
    def has_category_head(self) -> bool:
        return self.cat_coef.size > 0

    def category_proba(self, feats: np.ndarray) -> np.ndarray:
        z = feats @ self.cat_coef.T + self.cat_bias
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def label_weights(self, top_probs: np.ndarray) -> np.ndarray:
        """(n, k) weights of the top label_k labels: p^(1/T), summing to one per image."""
        p = self.params
        tp = np.clip(np.asarray(top_probs, np.float64)[:, : p.label_k], 1e-12, None)
        w = np.exp(np.log(tp) / p.temperature)
        return (w / w.sum(1, keepdims=True)).astype(np.float32)

    def tag_embed(
        self,
        top_ids: np.ndarray,
        top_probs: np.ndarray,
        probs: np.ndarray | None = None,
        feats: np.ndarray | None = None,
    ) -> np.ndarray:
        """The label path: weighted ImageNet label texts plus the category sentences weighted
        by the category probabilities (`probs` in `tag_classes` order; None: the head's)."""
        k = self.params.label_k
        ids = np.asarray(top_ids, dtype=int)[:, :k]
        w = self.label_weights(top_probs)
        tag = np.einsum("nk,nkd->nd", w, self.label_emb[ids])
        cw = self.params.class_weight
        if cw and self.class_emb is not None and len(self.tag_classes):
            if probs is None and feats is not None and self.has_category_head:
                probs = self.category_proba(feats)
            if probs is not None and probs.shape[1] == len(self.tag_classes):
                tag = tag + cw * (probs @ self.class_emb)
        return normalize(tag)

    def embed(
        self,
        feats: np.ndarray,
        top_ids: np.ndarray,
        top_probs: np.ndarray,
        probs: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n, 384) unit vectors: what the index stores per image and a query is matched to."""
        tag = self.tag_embed(top_ids, top_probs, probs, feats)
        a = self.params.image_weight if self.has_ridge else 0.0
        if a <= 0:
            return tag
        return normalize(a * self.image_embed(feats) + (1 - a) * tag)

    def embed_encoded(self, enc: Encoded) -> np.ndarray:
        """`embed` of an Encoded batch (an uploaded photo): (n, 384)."""
        probs = enc.probs if enc.probs is not None and len(self.tag_classes) else None
        if probs is not None and probs.shape[1] != len(self.tag_classes):
            probs = None
        return self.embed(enc.features, enc.top_ids, enc.top_probs, probs)

    def save(self, folder: Path, extra: dict[str, np.ndarray] | None = None) -> Path:
        """Write into a temporary sibling folder, then rename: all or nothing."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        empty = np.zeros((0, TEXT_DIM), np.float32)
        try:
            atomic_save_npz(
                tmp / "weights.npz",
                weights=self.weights,
                bias=self.bias,
                cat_coef=self.cat_coef,
                cat_bias=self.cat_bias,
                label_emb=self.label_emb if self.label_emb is not None else empty,
                class_emb=self.class_emb if self.class_emb is not None else empty,
                **(extra or {}),
            )
            atomic_write_json(
                tmp / "config.json",
                {**self.config, "class_names": self.class_names, "tag_classes": self.tag_classes},
            )
            try:
                os.replace(tmp, folder)
            except OSError:  # another process saved the same key first: keep theirs
                if not (folder / "config.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SemanticMap:
        folder = Path(folder)
        cfg = read_json(folder / "config.json")
        with np.load(folder / "weights.npz") as z:
            arrays = {k: z[k] for k in z.files}
        if cfg.get("version") != MAPPING_VERSION:
            raise ValueError(
                f"{folder}: mapping version {cfg.get('version')}, not {MAPPING_VERSION}"
            )
        return cls(
            arrays["weights"],
            arrays["bias"],
            list(cfg.get("class_names", [])),
            arrays["cat_coef"],
            arrays["cat_bias"],
            cfg,
            folder,
            arrays["label_emb"],
            list(cfg.get("tag_classes", [])),
            arrays["class_emb"],
        )


def weighted_ridge(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float):
    """argmin sum_i w_i |y_i - x_i W - b|^2 + alpha |W|^2 (bias unpenalised), closed form."""
    w = w / w.sum()
    xm, ym = w @ x, w @ y
    xc, yc = x - xm, y - ym
    xw = xc * w[:, None]
    gram = xc.T @ xw + (alpha / len(x)) * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, xw.T @ yc)
    return weights.astype(np.float32), (ym - xm @ weights).astype(np.float32)


def heldout_images(
    captions_file: str | Path | None, names: Sequence[str], fraction: float
) -> set[str]:
    """Photos kept out of training for evaluation: the official Flickr8k dev + test lists
    beside the captions file when they exist, else a fixed hash-based share."""
    if captions_file:
        folder = Path(captions_file).parent
        lists = [folder / "Flickr_8k.devImages.txt", folder / "Flickr_8k.testImages.txt"]
        found = [p for p in lists if p.exists()]
        if found:
            listed = {ln.strip() for p in found for ln in p.read_text().splitlines() if ln.strip()}
            return {n for n in names if n in listed}
    cut = int(fraction * 1000)
    return {n for n in names if int(hashlib.sha1(n.encode()).hexdigest(), 16) % 1000 < cut}


@dataclass
class TrainingSet:
    """Rows of the index used to fit the mapping, and the photos kept out for evaluation."""

    caption_rows: np.ndarray  # row indices of captioned photos used for training
    label_rows: np.ndarray  # row indices of labelled training images
    heldout_names: list[str]
    class_names: list[str]
    key: str


def run_classes(rows: dict[str, Any], meta: dict) -> list[str]:
    """The trained run's classes when every row carries its probabilities, else []."""
    names = meta.get("encoder", {}).get("class_names") or []
    probs = rows.get("probs") or []
    return list(names) if names and probs and all(len(p) == len(names) for p in probs) else []


def training_set(rows: dict[str, Any], meta: dict, cfg: MapConfig) -> TrainingSet:
    """Which rows train the mapping. `rows` holds the table's columns as Python lists."""
    names = [Path(p).name for p in rows["path"]]
    captioned = [i for i, c in enumerate(rows["captions"]) if c]
    captions_files = [
        r.get("captions") for r in meta.get("roots", {}).values() if r.get("captions")
    ]
    held = heldout_images(
        captions_files[0] if captions_files else None,
        [names[i] for i in captioned],
        cfg.heldout_fraction,
    )
    cap_rows = np.array([i for i in captioned if names[i] not in held], dtype=int)
    lab_rows = np.array(
        [
            i
            for i, (lab, sp, c) in enumerate(
                zip(rows["label"], rows["split"], rows["captions"], strict=True)
            )
            if lab and sp in ("train", "") and not c
        ],
        dtype=int,
    )
    class_names = sorted({rows["label"][i] for i in lab_rows})
    from core.search.imagenet_labels import resolve_variant

    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                MAPPING_VERSION,
                TEXT_MODEL,
                vars(cfg),
                meta.get("encoder", {}),
                class_names,
                run_classes(rows, meta),
                resolve_variant(cfg.label_text),
            ]
        ).encode()
    )
    for i in cap_rows:
        h.update(f"c:{rows['sha256'][i]}:{len(rows['captions'][i])}".encode())
    for i in lab_rows:
        h.update(f"l:{rows['sha256'][i]}:{rows['label'][i]}".encode())
    return TrainingSet(cap_rows, lab_rows, sorted(held), class_names, h.hexdigest()[:16])


@dataclass
class _Targets:
    """Training rows (captioned first, then labelled), their text targets and weights."""

    rows: np.ndarray
    y: np.ndarray  # (n, 384)
    w: np.ndarray  # (n,)
    labels: list[str]  # class of each row ("" for captioned photos)


def _targets(rows: dict[str, Any], ts: TrainingSet, encoder: TextBackend, cfg: MapConfig):
    n_cap, n_lab = len(ts.caption_rows), len(ts.label_rows)
    share = cfg.caption_share if n_cap and n_lab else (1.0 if n_cap else 0.0)
    ys, ws, labels = [], [], []
    if n_cap:
        caps = [rows["captions"][i] for i in ts.caption_rows]
        flat = encoder.encode([c for cs in caps for c in cs])
        bounds = np.cumsum([0] + [len(cs) for cs in caps])
        ys.append(np.stack([flat[a:b].mean(0) for a, b in itertools.pairwise(bounds)]))
        ws.append(np.full(n_cap, share / n_cap))
        labels += [""] * n_cap
    if n_lab:
        class_vec = {c: encoder.encode(class_sentences(c)).mean(0) for c in ts.class_names}
        ys.append(np.stack([class_vec[rows["label"][i]] for i in ts.label_rows]))
        ws.append(np.full(n_lab, (1 - share) / n_lab))
        labels += [rows["label"][i] for i in ts.label_rows]
    all_rows = np.concatenate([ts.caption_rows, ts.label_rows]).astype(int)
    y = np.concatenate(ys) if ys else np.zeros((0, TEXT_DIM), np.float32)
    w = np.concatenate(ws) if ws else np.zeros(0)
    return _Targets(all_rows, y.astype(np.float32), w, labels)


def category_head(x: np.ndarray, y: Sequence[str], classes: list[str], c: float):
    """Logistic-regression head as (coef (C, d), bias (C,)) in `classes` order."""
    from sklearn.linear_model import LogisticRegression

    d = x.shape[1]
    if len(classes) < 2 or len(set(y)) < 2:
        return np.zeros((0, d), np.float32), np.zeros(0, np.float32)
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit(x, list(y))
    coef, intercept = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # two classes: one row scores classes_[1]; a softmax over
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])  # -z/2, +z/2 equals its sigmoid
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    known = list(lr.classes_)
    if set(known) != set(classes):  # a fold without some class: those classes never win
        full_c = np.zeros((len(classes), d))
        full_b = np.full(len(classes), -30.0)
        for j, cl in enumerate(known):
            full_c[classes.index(cl)], full_b[classes.index(cl)] = coef[j], intercept[j]
        return full_c.astype(np.float32), full_b.astype(np.float32)
    order = [known.index(cl) for cl in classes]
    return coef[order].astype(np.float32), intercept[order].astype(np.float32)


def _fit_parts(
    feats: np.ndarray,
    t: _Targets,
    keep: np.ndarray,
    classes: list[str],
    cfg: MapConfig,
    head: bool = True,
):
    """Ridge map and category head (unless not `head`) fitted on the training rows `keep`."""
    d = feats.shape[1]
    x = feats[t.rows[keep]]
    if keep.any():
        weights, bias = weighted_ridge(x, t.y[keep], t.w[keep], cfg.alpha)
    else:
        weights, bias = np.zeros((0, TEXT_DIM), np.float32), np.zeros(TEXT_DIM, np.float32)
    lab = keep & np.array([bool(lb) for lb in t.labels], dtype=bool)
    if not head:
        lab = np.zeros_like(lab)  # category_head gives the empty head: nothing to fit on
    cat_coef, cat_bias = category_head(
        feats[t.rows[lab]], [t.labels[i] for i in np.flatnonzero(lab)], classes, cfg.category_c
    )
    if weights.shape[0] not in (0, d):
        raise ValueError("feature dimension changed")
    return weights, bias, cat_coef, cat_bias


def fold_of(sha: str, folds: int) -> int:
    """A training row's fold, fixed by its content hash."""
    return int(hashlib.sha1(sha.encode()).hexdigest(), 16) % folds


@dataclass
class SemanticFit:
    """What indexing stores: per-row semantic vectors (training photos embedded out of fold)
    and the mapping that embeds any new image the same way."""

    vectors: np.ndarray  # (N, 384) float32, unit length, aligned with the rows given
    model: SemanticMap
    key: str
    fitted_images: frozenset[str]  # file names whose captions fitted the mapping
    heldout_images: list[str]


def _label_embeddings(encoder: TextBackend, variant: str, cache_dir: Path | None):
    from core.resources import imagenet_classes
    from core.search.imagenet_labels import label_texts

    texts, used = label_texts(imagenet_classes(), variant)
    return cached_text_embeddings(encoder, texts, cache_dir, f"imagenet-{used}"), used


def _row_arrays(rows: dict[str, Any], meta: dict):
    top_ids = np.array(rows["top_ids"], dtype=int)
    top_probs = np.array(rows["top_probs"], dtype=np.float32)
    rc = run_classes(rows, meta)
    probs = np.array(rows["probs"], dtype=np.float32) if rc else None
    return top_ids, top_probs, probs, rc


def _fit(
    feats: np.ndarray,
    rows: dict[str, Any],
    meta: dict,
    encoder: TextBackend,
    cfg: MapConfig,
    ts: TrainingSet,
    cache_dir: Path | None,
) -> SemanticFit:
    """Fit the mapping on the training rows `ts` selects and embed every row (out of fold)."""
    t = _targets(rows, ts, encoder, cfg)
    top_ids, top_probs, probs, rc = _row_arrays(rows, meta)
    label_emb, used = _label_embeddings(encoder, cfg.label_text, cache_dir)
    tag_classes = rc or ts.class_names
    class_emb = (
        normalize(np.stack([encoder.encode(class_sentences(c)).mean(0) for c in tag_classes]))
        if tag_classes
        else np.zeros((0, TEXT_DIM), np.float32)
    )
    fitted = frozenset(Path(rows["path"][i]).name for i in ts.caption_rows)
    config = {
        "version": MAPPING_VERSION,
        "key": ts.key,
        "text_model": TEXT_MODEL,
        "feature_dim": int(feats.shape[1]),
        "params": vars(cfg),
        "label_source": used,
        "train_captioned_images": len(ts.caption_rows),
        "train_labelled_images": len(ts.label_rows),
        "heldout_images": ts.heldout_names,
        "train_images": sorted(fitted),
    }

    def model_from(keep: np.ndarray, head: bool = True) -> SemanticMap:
        w, b, cc, cb = _fit_parts(feats, t, keep, ts.class_names, cfg, head)
        return SemanticMap(
            w, b, ts.class_names, cc, cb, config, None, label_emb, list(tag_classes), class_emb
        )

    model = model_from(np.ones(len(t.rows), bool))
    folds = np.array([fold_of(rows["sha256"][i], cfg.folds) for i in t.rows], dtype=int)
    subs = []
    if cfg.folds > 1 and len(np.unique(folds)) > 1:
        for f in range(cfg.folds):
            out = folds == f
            if out.any():
                # A fold map's category head only serves rows without the run's class
                # probabilities; with a run every row has them, so none is fitted.
                subs.append((out, model_from(~out, head=probs is None)))
        # Every other image is embedded by the mean of the fold maps: fitted on as much data
        # as each fold map, so a training photo's out-of-fold vector and an unseen photo's
        # vector come from equally strong maps (the full-data map would favour unseen ones).
        model.weights = np.mean([m.weights for _, m in subs], axis=0).astype(np.float32)
        model.bias = np.mean([m.bias for _, m in subs], axis=0).astype(np.float32)
    vectors = model.embed(feats, top_ids, top_probs, probs)
    for out, sub in subs:
        r = t.rows[out]
        vectors[r] = sub.embed(
            feats[r], top_ids[r], top_probs[r], None if probs is None else probs[r]
        )
    return SemanticFit(vectors, model, ts.key, fitted, ts.heldout_names)


def mapping_dir(index_dir: str | Path, key: str) -> Path:
    return Path(index_dir) / "mappings" / key


def _saved_fit(folder: Path, feats, rows, meta) -> SemanticFit | None:
    """A saved fit rebuilt without refitting: the model embeds every row, then the saved
    out-of-fold vectors replace the training rows'."""
    model = SemanticMap.load(folder)
    top_ids, top_probs, probs, _ = _row_arrays(rows, meta)
    vectors = model.embed(feats, top_ids, top_probs, probs)
    with np.load(folder / "weights.npz") as z:
        oof_sha, oof = list(z["oof_sha"]), z["oof_vectors"]
    where = {s: j for j, s in enumerate(oof_sha)}
    for i, s in enumerate(rows["sha256"]):
        j = where.get(s)
        if j is not None:
            vectors[i] = oof[j]
    cfg = model.config
    return SemanticFit(
        vectors,
        model,
        cfg["key"],
        frozenset(cfg.get("train_images", [])),
        list(cfg.get("heldout_images", [])),
    )


def fit_semantic_map(
    feats: np.ndarray,
    rows: dict[str, Any],
    meta: dict,
    text: Callable[[], TextBackend],
    cfg: MapConfig | None = None,
    index_dir: str | Path | None = None,
    cache_dir: Path | None = None,
) -> SemanticFit | None:
    """Fit the semantic map on the index's training rows and embed every row; None when
    there are no rows. Each training row (captioned photo or labelled image) is embedded by a
    mapping fitted without its fold, so having captions gives a photo no head start over one
    without (`cfg.folds` = 1: in-fold). `rows`: the table's columns as lists (path, sha256,
    split, label, captions, top_ids, top_probs, probs); `feats` the stored backbone vectors in
    the same order; `text` makes the sentence encoder (called only when fitting).

    With `index_dir` (index time) the fit is saved under `mappings/<key>/` and a saved one is
    loaded instead of refitted; label embeddings are then cached in its text_cache."""
    cfg = cfg or MapConfig()
    if not rows.get("path"):
        return None
    ts = training_set(rows, meta, cfg)
    if index_dir is None:
        return _fit(feats, rows, meta, text(), cfg, ts, cache_dir)
    folder = mapping_dir(index_dir, ts.key)
    if (folder / "config.json").exists():
        try:
            return _saved_fit(folder, feats, rows, meta)
        except (OSError, ValueError, KeyError) as exc:  # damaged: refit
            log.warning("refitting unreadable mapping %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    log.info("fitting the image-to-text mapping %s", ts.key)
    cache_dir = cache_dir or Path(index_dir) / "text_cache"
    fit = _fit(feats, rows, meta, text(), cfg, ts, cache_dir)
    train = np.concatenate([ts.caption_rows, ts.label_rows]).astype(int)
    fit.model.save(
        folder,
        {
            "oof_sha": np.array([rows["sha256"][i] for i in train], dtype=str),
            "oof_vectors": fit.vectors[train],
        },
    )
    return fit

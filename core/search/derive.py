"""Index time, after the images are encoded: everything a query needs that has to be fitted
or computed from the whole collection, so that a query only reads.

- the `semantic` column: each image's vector in the sentence space (core.search.semantic_map's
  fit; its key goes to index.json, and when the key changes every row is rewritten in one
  LanceDB commit, so an index never mixes vectors of two mappings). Encoders with their own
  image-text space (CLIP) wrote the column while encoding; nothing is fitted then.
- `category`, `probs` and `class_probs`: the predicted category and class probabilities
  (the trained run's, else the category head fitted with the mapping); `class_probs` is a
  fixed-size vector column so that the category mode is a dot-product search.
- `text`: category, ImageNet labels and captions, for full-text search.
- the keyword model (TF-IDF weights, HMM tagger) fitted on the index's captions.
- the relevance floor per mode, chosen on the index's own training photos (never on the
  held-out ones): the score that 95% of captions reach against their own photo.
- the ONNX export of the sentence encoder that query processes use (core.search.sentence).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import core.search.category_index as category_index
from core.search.index_format import TEXT_FORMAT, tag_text

log = logging.getLogger(__name__)

CLASS_PROBS = "class_probs"
LABELS_FILE = "imagenet_labels.json"  # ImageNet class names (query side: no torchvision)
SEMANTIC = "semantic"
WRITE_BATCH = 4096  # rows per record batch when rewriting columns (bounded memory per batch)
FLOOR_MAX_QUERIES = 400
FLOOR_NEGATIVES = 8  # other photos scored per caption


@dataclasses.dataclass
class Derived:
    """What `write_derived` computed for every row (aligned with `paths`)."""

    paths: list[str]
    semantic: np.ndarray  # (N, D)
    classes: list[str]
    probs: np.ndarray  # (N, C)
    category: list[str]
    text: list[str]
    key: str


def _columns(tbl: Any, names: Sequence[str]) -> dict[str, list]:
    return tbl.to_arrow().select(list(names)).to_pydict()


def _fixed(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def semantic_source(encoder: Any) -> str:
    return "encoder" if getattr(encoder, "semantic_dim", None) else "mapping"


def text_backend_for(meta: dict) -> Callable[[], Any]:
    """Index time: the text encoder of the index's semantic space (loaded when called): the
    ONNX export of MiniLM, the one its queries use (core.search.sentence.index_text_encoder),
    or CLIP's text tower."""

    def load() -> Any:
        from core.search.encoders import create_text_encoder
        from core.search.sentence import index_text_encoder

        if (meta.get("semantic") or {}).get("source") == "encoder":
            return create_text_encoder(meta, light=False)
        return index_text_encoder()

    return load


def _imagenet_groups() -> Any:
    """The user's ImageNet-label groups table (the Curate page edits it), else the packaged one."""
    from core.text.imagenet_groups import GroupsError, ImagenetGroups, load_groups

    try:
        return load_groups()
    except GroupsError as e:
        log.warning("ImageNet-label groups table unusable (%s); using the packaged one", e)
        return ImagenetGroups.default()


def write_derived(
    index_dir: Path,
    tbl: Any,
    meta: dict,
    encoder: Any,
    map_config: Any = None,
    text_factory: Callable[[], Any] | None = None,
) -> bool:
    """Fit and write what queries read from the whole collection (the module's list): the
    derived columns, the side files and index.json's `semantic`, `classes`, `floor`... True
    when every row was rewritten (their vector and full-text indexes must then be rebuilt)."""
    meta.setdefault("semantic", {})["source"] = semantic_source(encoder)
    text = _once(text_factory or text_backend_for(meta))
    rows = _columns(tbl, ROW_COLUMNS)
    d = tbl.schema.field("vector").type.list_size
    feats = tbl.to_arrow().column("vector").combine_chunks().values.to_numpy().reshape(-1, d)
    sem = _semantic(index_dir, encoder, feats, rows, meta, text, map_config)
    if sem is None:
        return False
    vectors, key, model, fit = sem
    classes, probs, source = _categories(encoder, rows, feats, model)
    category = [classes[int(i)] for i in probs.argmax(1)] if classes else [""] * len(vectors)
    held = set(fit.heldout_images) if fit is not None else set()
    texts = _full_text(rows, category, held)
    derived = Derived(rows["path"], vectors, classes, probs, category, texts, key)
    full = _full_rewrite(tbl, meta, key, classes)
    todo = np.arange(len(vectors)) if full else _stale(rows, category, texts)
    if len(todo):
        _write(tbl, derived, todo, len(classes))
    meta["semantic"] = {
        "key": key,
        "dim": int(vectors.shape[1]),
        "source": meta["semantic"]["source"],
        "text_model": getattr(model, "config", {}).get("text_model") if model else None,
        "mapping": str(Path("mappings") / key) if model is not None else None,
        "fitted_images": len(fit.fitted_images) if fit else 0,
        "heldout_images": len(fit.heldout_images) if fit else 0,
    }
    meta["classes"] = classes
    meta["text_format"] = TEXT_FORMAT
    meta["splits"] = sorted({s for s in rows["split"] if s})
    meta["category_source"] = source
    # Thresholds over all rows (not only those rewritten): the category mode's prefilters.
    meta["category_index"] = (
        category_index.thresholds(category_index.column_arrays(probs)) if classes else None
    )
    if meta["semantic"]["source"] == "mapping":
        meta["keyword_model"] = ensure_keyword_model(index_dir, meta, fit)
        meta["text_export"] = _export_text_model(text)
    meta["floor"] = calibrate_floor(derived, rows, fit, text, feats)
    if encoder.imagenet_classes:
        from core.io import atomic_write_json

        atomic_write_json(Path(index_dir) / LABELS_FILE, list(encoder.imagenet_classes))
    log.info("derived columns written for %d of %d rows (key %s)", len(todo), len(vectors), key)
    return bool(full and len(todo))


ROW_COLUMNS = (
    "path",
    "sha256",
    "split",
    "label",
    "captions",
    "top_ids",
    "top_labels",
    "top_probs",
    "probs",
    "category",
    "text",
    SEMANTIC,
)


def _once(factory: Callable[[], Any]) -> Callable[[], Any]:
    """`factory` called at most once, and only when needed (the sentence encoder is large);
    what it gives is wrapped in a MemoText, so no text is encoded twice in one derive."""
    cache: dict[str, Any] = {}

    def get() -> Any:
        if "t" not in cache:
            cache["t"] = MemoText(factory())
        return cache["t"]

    return get


class MemoText:
    """A text encoder that encodes each distinct text once: the class sentences serve the
    mapping's targets and its label path, and the floor's validation queries repeat a few
    dozen sentences hundreds of times."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self._seen: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        new = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if new:
            self._seen.update(zip(new, self.encoder.encode(new), strict=True))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._seen[t] for t in texts]).astype(np.float32, copy=False)


def _semantic(
    index_dir: Path,
    encoder: Any,
    feats: np.ndarray,
    rows: dict,
    meta: dict,
    text: Callable[[], Any],
    map_config: Any,
) -> tuple[np.ndarray, str, Any, Any] | None:
    """(semantic vectors, their key, the mapping model or None, the fit or None); None when
    there is nothing to fit a mapping on. An encoder with its own image-text space (CLIP)
    wrote the vectors while encoding."""
    if meta["semantic"]["source"] == "encoder":
        ident = repr(sorted(encoder.identity().items())).encode()
        key = "encoder:" + hashlib.sha256(ident).hexdigest()[:16]
        return np.array(rows[SEMANTIC], np.float32), key, None, None
    fit = _fit_mapping(index_dir, feats, rows, meta, text, map_config)
    if fit is None:
        return None
    return fit.vectors, fit.key, fit.model, fit


def _fit_mapping(
    index_dir: Path, feats: np.ndarray, rows: dict, meta: dict, text: Any, map_config: Any
) -> Any:
    """The one call into the semantic map's fitting (loaded instead when saved)."""
    from core.search.semantic_map import fit_semantic_map

    return fit_semantic_map(feats, rows, meta, text, map_config, index_dir)


GROUP_MIN_PROB = 0.1  # a top-5 label below this probability gives its image no category


def _full_text(rows: dict, category: list[str], held: set[str]) -> list[str]:
    """The `text` column (index_format.tag_text). Captions of the photos held out for
    evaluation stay out of it: a caption query must not find its photo by its own words
    (evaluate-retrieval's pool). The ImageNet-label groups ("church" -> buildings) add their
    categories for the image's top label and any label it is at least GROUP_MIN_PROB sure of,
    so a keyword query for "building" finds an image whose top label is "church"."""
    groups = _imagenet_groups()
    out = []
    for c, labels, probs, caps, p in zip(
        category, rows["top_labels"], rows["top_probs"], rows["captions"], rows["path"], strict=True
    ):
        sure = [
            lab
            for i, (lab, q) in enumerate(zip(labels, probs, strict=False))
            if i == 0 or q >= GROUP_MIN_PROB
        ]
        own = [] if Path(p).name in held else caps or []
        out.append(tag_text(c, labels, own, groups.tags(sure)))
    return out


def _full_rewrite(tbl: Any, meta: dict, key: str, classes: list[str]) -> bool:
    """Every row is rewritten when the mapping or the class list changed (an index never
    mixes vectors of two mappings), or a class column is missing."""
    return (
        meta.get("text_format") != TEXT_FORMAT
        or (meta.get("semantic") or {}).get("key") != key
        or meta.get("classes") != classes
        or (bool(classes) and not _has(tbl, CLASS_PROBS))
        or (bool(classes) and not _has(tbl, category_index.column_of((0,))))
    )


def _stale(rows: dict, category: list[str], texts: list[str]) -> np.ndarray:
    """The rows whose derived values are missing or changed."""
    stale = {int(i) for i, v in enumerate(rows[SEMANTIC]) if v is None}
    stale |= {
        i
        for i, (a, b, t, u) in enumerate(
            zip(rows["category"], category, rows["text"], texts, strict=True)
        )
        if a != b or t != u
    }
    return np.array(sorted(stale), dtype=int)


def _has(tbl: Any, name: str) -> bool:
    return name in tbl.schema.names


def _categories(encoder: Any, rows: dict, feats: np.ndarray, model: Any):
    """(classes, (N, C) probabilities, where they come from)."""
    run_classes = list(encoder.class_names)
    if run_classes and all(len(p or []) == len(run_classes) for p in rows["probs"]):
        return run_classes, np.array(rows["probs"], np.float32), f"trained run {_run(encoder)}"
    if model is not None and model.has_category_head:
        return (
            list(model.class_names),
            model.category_proba(feats),
            "category head fitted on the index's labelled training images",
        )
    return [], np.zeros((len(feats), 0), np.float32), "none (index a run or labelled images)"


def _run(encoder: Any) -> str | None:
    return encoder.identity().get("run")


def _write(tbl: Any, d: Derived, todo: np.ndarray, n_classes: int) -> None:
    """One merge_insert (one atomic commit) of the derived columns of rows `todo`."""
    if n_classes and (
        not _has(tbl, CLASS_PROBS) or tbl.schema.field(CLASS_PROBS).type.list_size != n_classes
    ):
        if _has(tbl, CLASS_PROBS):
            tbl.drop_columns([CLASS_PROBS])
        tbl.add_columns(pa.field(CLASS_PROBS, pa.list_(pa.float32(), n_classes)))
    cp_names = category_index.column_names(n_classes)
    stale = [c for c in tbl.schema.names if c.startswith(category_index.PREFIX)]
    if stale and set(stale) != set(cp_names):  # the class list changed
        tbl.drop_columns(stale)
    missing = [c for c in cp_names if c not in tbl.schema.names]
    if missing:
        tbl.add_columns([pa.field(c, pa.float32()) for c in missing])
    schema_fields = [
        pa.field("path", pa.string()),
        pa.field(SEMANTIC, tbl.schema.field(SEMANTIC).type),
        pa.field("category", pa.string()),
        pa.field("probs", pa.list_(pa.float32())),
        pa.field("text", pa.string()),
    ]
    if n_classes:
        schema_fields.append(pa.field(CLASS_PROBS, pa.list_(pa.float32(), n_classes)))
    schema_fields += [pa.field(c, pa.float32()) for c in cp_names]
    schema = pa.schema(schema_fields)

    def batches() -> Iterator[pa.RecordBatch]:
        for a in range(0, len(todo), WRITE_BATCH):
            idx = todo[a : a + WRITE_BATCH]
            cols = [
                pa.array([d.paths[i] for i in idx]),
                _fixed(d.semantic[idx]),
                pa.array([d.category[i] for i in idx]),
                pa.array([d.probs[i].tolist() for i in idx], pa.list_(pa.float32())),
                pa.array([d.text[i] for i in idx]),
            ]
            if n_classes:
                cols.append(_fixed(d.probs[idx]))
            cp = category_index.column_arrays(d.probs[idx])
            cols += [pa.array(cp[c], pa.float32()) for c in cp_names]
            yield pa.RecordBatch.from_arrays(cols, schema=schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    tbl.merge_insert("path").when_matched_update_all().execute(reader)


def _export_text_model(text: Callable[[], Any]) -> dict | None:
    """The ONNX sentence encoder for query processes (see core.search.sentence), checked
    against the sentence encoder this process fitted with (`text`), not a second one."""
    from core.search.sentence import ensure_export

    def reference() -> Any:
        t = text()
        return getattr(t, "encoder", t)  # the one inside a MemoText

    try:
        return {"onnx": str(ensure_export(reference=reference))}
    except Exception as exc:  # queries fall back to sentence-transformers
        log.warning("sentence encoder not exported to ONNX: %s", exc)
        return None


# --- keyword model ------------------------------------------------------------------------------


def keyword_model_path(index_dir: Path, key: str) -> Path:
    return Path(index_dir) / "keyword_models" / f"{key}.pkl"


def ensure_keyword_model(index_dir: Path, meta: dict, fit: Any) -> dict | None:
    """The keyword capability's model (TF-IDF weights, HMM tagger, learned category word
    weights, core.text.fit_keyword_model) fitted on the index's captions file without the
    held-out photos' captions; saved (signed) in the index folder and found again while the
    captions, the held-out photos and the mapping table are unchanged. None when the index
    has no captions."""
    from core.data.captions import CaptionFileError, read_captions
    from core.io import load_signed_pickle, save_signed_pickle
    from core.text import fit_keyword_model
    from core.text.categories import Mapping

    held = set(fit.heldout_images) if fit is not None else set()
    files = [r["captions"] for r in meta.get("roots", {}).values() if r.get("captions")]
    source = next((Path(f) for f in files if Path(f).is_file()), None)
    if source is None:
        return None
    mapping = Mapping.load()
    st = source.stat()
    key = hashlib.sha256(
        repr((str(source), st.st_size, st.st_mtime_ns, sorted(held), mapping.to_json())).encode()
    ).hexdigest()[:16]
    path = keyword_model_path(index_dir, key)
    entry = {"key": key, "file": str(path.relative_to(index_dir)), "captions": str(source)}
    if path.exists() and load_signed_pickle(path) is not None:
        return entry
    try:
        cs = read_captions(source)
        cs = dataclasses.replace(cs, captions=[c for c in cs.captions if c.image not in held])
        model = fit_keyword_model(cs, mapping)
    except (CaptionFileError, ValueError) as exc:
        log.warning("no keyword model: %s", exc)
        return None
    if not save_signed_pickle(path, model):
        return None
    return entry


# --- relevance floor ----------------------------------------------------------------------------


FLOOR_RECALL = 0.95  # the floor keeps this share of relevant pairs above it


def recall_floor(pos: np.ndarray, neg: np.ndarray, recall: float = FLOOR_RECALL) -> dict:
    """The score that `recall` of the relevant pairs (`pos`) reach: below it a result is
    unlikely to be a match. Also how many unrelated pairs (`neg`) still clear it (fpr)."""
    value = float(np.quantile(pos, 1 - recall))
    return {
        "value": round(value, 4),
        "tpr": round(float(np.mean(pos >= value)), 3),
        "fpr": round(float(np.mean(neg >= value)), 3),
        "positives": len(pos),
        "negatives": len(neg),
    }


def calibrate_floor(
    d: Derived, rows: dict, fit: Any, text: Callable[[], Any], feats: np.ndarray
) -> dict:
    """Floors for the semantic score (query · semantic vector) and the category probability,
    chosen on the index's training data, never on its held-out photos, with the queries people
    type: each training photo's first caption against its own photo (the photos' vectors are
    out-of-fold, so a caption never scores against a mapping fitted on it), and the category
    sentences of core/resources/validation_queries.csv (other sentences than the figures')
    against the labelled training images of their class. The floor is the score FLOOR_RECALL
    of those pairs reach; the share of unrelated pairs (FLOOR_NEGATIVES random other photos per
    caption, images of other classes per sentence) that still clear it is recorded (fpr)."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    parts = [
        p
        for p in (_caption_pairs(d, rows, fit, text, rng), _sentence_pairs(d, rows, text, rng))
        if p
    ]
    if parts:
        pos = np.concatenate([p[0] for p in parts])
        neg = np.concatenate([p[1] for p in parts])
        source = " and ".join(p[2] for p in parts)
        out["semantic"] = {**recall_floor(pos, neg), "source": source}
    if d.classes:
        lab = [
            i
            for i, (lab, sp) in enumerate(zip(rows["label"], rows["split"], strict=True))
            if lab in d.classes and sp in ("train", "")
        ]
        if len(lab) >= 10:
            j = np.array([d.classes.index(rows["label"][i]) for i in lab])
            p = d.probs[lab]
            pos_c = p[np.arange(len(lab)), j]
            neg_c = p[np.arange(p.shape[1])[None, :] != j[:, None]]
            out["category"] = {
                **recall_floor(pos_c, neg_c),
                "source": "labelled training images: P(own class) vs P(other classes)",
            }
    return out


def _caption_pairs(d: Derived, rows: dict, fit: Any, text: Callable[[], Any], rng: Any):
    """(positive, negative scores, source) of training photos' first captions, or None."""
    n = len(d.paths)
    fitted = fit.fitted_images if fit is not None else frozenset()
    names = [Path(p).name for p in d.paths]
    cap_rows = [
        i for i, c in enumerate(rows["captions"]) if c and (names[i] in fitted or fit is None)
    ]
    if n < 2 or len(cap_rows) < 10:
        return None
    pick = rng.permutation(cap_rows)[:FLOOR_MAX_QUERIES]
    q = text().encode([rows["captions"][i][0] for i in pick])
    pos = np.einsum("nd,nd->n", q, d.semantic[pick])
    others = rng.integers(0, n, (len(pick), FLOOR_NEGATIVES))
    same = others == np.asarray(pick)[:, None]
    others[same] = (others[same] + 1) % n
    neg = np.einsum("nd,nkd->nk", q, d.semantic[others]).reshape(-1)
    return pos, neg, "first caption of each training photo (out-of-fold vectors) vs other photos"


def _sentence_pairs(d: Derived, rows: dict, text: Callable[[], Any], rng: Any):
    """(positive, negative scores, source) of the validation category sentences against the
    labelled training images of their class and of the other classes, or None."""
    sentences = validation_sentences()
    labels = np.array([lab or "" for lab in rows["label"]])
    train = np.array([sp in ("train", "") for sp in rows["split"]])
    lab = [i for i in np.flatnonzero(train) if labels[i] in sentences]
    if len(lab) < 10 or len({labels[i] for i in lab}) < 2:
        return None
    pick = rng.permutation(lab)[:FLOOR_MAX_QUERIES]
    texts = [sentences[labels[i]][k % len(sentences[labels[i]])] for k, i in enumerate(pick)]
    q = text().encode(texts)
    pos = np.einsum("nd,nd->n", q, d.semantic[pick])
    others = rng.choice(np.asarray(lab), (len(pick), FLOOR_NEGATIVES))
    keep = labels[others] != labels[pick][:, None]  # images of other classes only
    neg = np.einsum("nd,nkd->nk", q, d.semantic[others])[keep]
    return pos, neg, "validation category sentences vs labelled training images"


def validation_sentences() -> dict[str, list[str]]:
    """class -> the category sentences of core/resources/validation_queries.csv."""
    import csv

    from core.resources import resource_path

    out: dict[str, list[str]] = {}
    with open(resource_path("validation_queries.csv"), newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["category"], []).append(row["query"])
    return out

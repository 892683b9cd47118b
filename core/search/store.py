"""The image index: one LanceDB table (a folder, no server) plus `index.json` beside it.

Row per image file: path, content hash, split and class-folder label (when the layout has
them), the run's predicted category and probabilities (when indexed with a run), ImageNet
top-5 ids/labels/probabilities, captions, a `text` column (tags + captions, full-text
indexed) and the backbone feature vector (`vector`, unit length).

Incremental and resumable: files whose path and content hash are already in the table are
skipped; new or changed files are encoded in chunks, and every chunk is committed with
`merge_insert` on `path` (a LanceDB commit is atomic, so an interrupted run keeps the finished
chunks and never leaves a half-written table). Rows under the indexed folder whose file is
gone are deleted. `index.json` is written atomically after every commit.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

TABLE = "images"
META_FILE = "index.json"
INDEX_VERSION = 1
ANN_MIN_ROWS = 100_000  # below this an exact scan is faster than any ANN index
Progress = Callable[[int, int], None]


class IndexError_(ValueError):
    """The index folder is missing, empty or was built with different settings."""


@dataclass
class IndexStats:
    root: str
    found: int = 0  # image files under the folder
    unchanged: int = 0
    encoded: int = 0  # new or changed files encoded in this run
    skipped: list[dict] = field(default_factory=list)  # undecodable files with reasons
    deleted: int = 0
    rows: int = 0  # rows in the table afterwards
    seconds: float = 0.0
    images_per_second: float = 0.0
    chunks: int = 0

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


# --- files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    path: str  # resolved, absolute
    split: str
    label: str


def list_images(folder: str | Path) -> list[ImageFile]:
    """Every image under `folder`; class folders (and Intel-style split folders) become labels."""
    from core.data.dataset import DatasetError, find_dataset

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise IndexError_(f"{folder}: no such folder")
    try:
        ds = find_dataset(root)
        if ds.layout != "class-folders":
            return [ImageFile(str(r.path.resolve()), r.split, r.label or "") for r in ds.records]
        return [ImageFile(str(r.path.resolve()), "", r.label or "") for r in ds.records]
    except DatasetError:
        pass
    from core.data.dataset import IMAGE_EXTENSIONS

    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [ImageFile(str(p.resolve()), "", "") for p in files if p.is_file()]


def file_sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def hash_files(paths: Sequence[str], workers: int = 4) -> list[str]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(file_sha256, paths))


def captions_by_image(captions_file: str | Path | None) -> dict[str, list[str]]:
    """{image file name: [captions]} from any caption format core.data.captions reads."""
    if not captions_file:
        return {}
    from core.data.captions import read_captions

    out: dict[str, list[str]] = {}
    for c in read_captions(captions_file).captions:
        if c.image:
            out.setdefault(Path(c.image).name, []).append(c.text)
    return out


# --- schema -------------------------------------------------------------------------------------


def schema(feature_dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("path", pa.string()),
            ("root", pa.string()),
            ("sha256", pa.string()),
            ("split", pa.string()),
            ("label", pa.string()),
            ("category", pa.string()),
            ("probs", pa.list_(pa.float32())),
            ("top_ids", pa.list_(pa.int32())),
            ("top_labels", pa.list_(pa.string())),
            ("top_probs", pa.list_(pa.float32())),
            ("captions", pa.list_(pa.string())),
            ("text", pa.string()),
            ("vector", pa.list_(pa.float32(), feature_dim)),
        ]
    )


def tag_text(category: str, labels: Sequence[str], captions: Sequence[str]) -> str:
    """What full-text search sees: category, ImageNet labels, captions."""
    return " | ".join(x for x in [category, ", ".join(labels), *captions] if x)


def _rows(
    files: Sequence[ImageFile],
    shas: Sequence[str],
    root: str,
    enc: Any,  # embed.Encoded
    class_names: list[str],
    imagenet: list[str],
    caps: dict[str, list[str]],
    feature_dim: int,
) -> pa.Table:
    keep = np.flatnonzero(enc.ok)
    cols: dict[str, list] = {k: [] for k in schema(feature_dim).names}
    for i in keep:
        f = files[i]
        probs = enc.probs[i] if enc.probs is not None else None
        category = class_names[int(np.argmax(probs))] if probs is not None else ""
        labels = [imagenet[int(j)] for j in enc.top_ids[i]]
        captions = caps.get(Path(f.path).name, [])
        cols["path"].append(f.path)
        cols["root"].append(root)
        cols["sha256"].append(shas[i])
        cols["split"].append(f.split)
        cols["label"].append(f.label)
        cols["category"].append(category)
        cols["probs"].append([] if probs is None else probs.tolist())
        cols["top_ids"].append(enc.top_ids[i].tolist())
        cols["top_labels"].append(labels)
        cols["top_probs"].append(enc.top_probs[i].tolist())
        cols["captions"].append(captions)
        cols["text"].append(tag_text(category, labels, captions))
    vec = enc.features[keep].astype(np.float32).reshape(-1)
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vec), feature_dim)
    return pa.table(cols, schema=schema(feature_dim))


# --- metadata -----------------------------------------------------------------------------------


def meta_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / META_FILE


def read_meta(index_dir: str | Path) -> dict:
    path = meta_path(index_dir)
    if not path.exists():
        raise IndexError_(
            f"{index_dir}: not an index (no {META_FILE}); build one with "
            "`python -m core index --images DIR --index INDEX_DIR`"
        )
    return read_json(path)


def open_table(index_dir: str | Path):
    import lancedb

    read_meta(index_dir)
    db = lancedb.connect(str(index_dir))
    if not _has_table(db):
        raise IndexError_(f"{index_dir}: the index holds no images yet")
    return db.open_table(TABLE)


def _has_table(db) -> bool:
    return TABLE in db.list_tables().tables


def _existing(tbl) -> dict[str, tuple[str, str, list[str]]]:
    """{path: (sha256, root, captions)} of the rows already in the table."""
    if tbl is None:
        return {}
    t = tbl.to_arrow().select(["path", "sha256", "root", "captions"]).to_pydict()
    return {
        p: (s, r, list(c or []))
        for p, s, r, c in zip(t["path"], t["sha256"], t["root"], t["captions"], strict=True)
    }


def _check_compatible(meta: dict, identity: dict) -> None:
    old = meta.get("encoder", {})
    for key in ("backbone", "weights", "image_size", "run"):
        if key in old and old[key] != identity[key]:
            raise IndexError_(
                f"the index was built with {key}={old[key]!r}, not {identity[key]!r}; "
                "use another --index folder or the same settings"
            )


# --- build --------------------------------------------------------------------------------------


def build_index(
    images: str | Path,
    index_dir: str | Path,
    run_dir: str | Path | None = None,
    captions_file: str | Path | None = None,
    backbone: str | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    chunk: int = 512,
    device: str | None = None,
    progress: Progress | None = None,
    encoder: Any = None,
) -> IndexStats:
    """Index (or update the index of) every image under `images` into `index_dir`."""
    import lancedb

    from core.search.embed import DEFAULT_BACKBONE, concat, iter_encoded, load_encoder

    start = time.perf_counter()
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    root = str(Path(images).expanduser().resolve())
    files = list_images(images)
    stats = IndexStats(root=root, found=len(files))
    meta = read_meta(index_dir) if meta_path(index_dir).exists() else {}
    if encoder is None:
        name = backbone or meta.get("encoder", {}).get("backbone") or DEFAULT_BACKBONE
        size = image_size or meta.get("encoder", {}).get("image_size")
        run_dir = run_dir or meta.get("encoder", {}).get("run")  # an update keeps the run
        encoder = load_encoder(name, run_dir, size, device)
    identity = encoder.identity()
    if captions_file is None:  # keep the captions a previous run of this folder attached
        captions_file = meta.get("roots", {}).get(root, {}).get("captions")
    if meta:
        _check_compatible(meta, identity)
    db = lancedb.connect(str(index_dir))
    tbl = db.open_table(TABLE) if _has_table(db) else None
    existing = _existing(tbl)
    caps = captions_by_image(captions_file)
    shas = hash_files([f.path for f in files])

    todo: list[int] = []
    for i, f in enumerate(files):
        old = existing.get(f.path)
        want_caps = caps.get(Path(f.path).name, []) if captions_file else None
        if old and old[0] == shas[i] and (want_caps is None or want_caps == old[2]):
            stats.unchanged += 1
        elif shas[i]:
            todo.append(i)
        else:
            stats.skipped.append({"path": f.path, "reason": "unreadable"})
    gone = sorted(set(p for p, v in existing.items() if v[1] == root) - {f.path for f in files})
    if gone and tbl is not None:
        for k in range(0, len(gone), 500):  # keep the filter expression small
            quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in gone[k : k + 500])
            tbl.delete(f"path IN ({quoted})")
        stats.deleted = len(gone)

    if progress:
        progress(0, len(todo))
    n_workers = workers if workers is not None else min(4, _cpus())
    loader = encoder.loader([files[i].path for i in todo], batch_size, n_workers)
    pending: list = []  # encoded batches not yet committed
    done = 0

    def commit() -> None:
        nonlocal tbl, done
        enc = concat(pending)
        idx = todo[done : done + len(enc.ok)]
        part = [files[i] for i in idx]
        for j in np.flatnonzero(~enc.ok):
            stats.skipped.append({"path": part[j].path, "reason": enc.reasons[j]})
        table = _rows(part, [shas[i] for i in idx], root, enc, encoder.class_names,
                      encoder.imagenet_classes, caps, encoder.feature_dim)  # fmt: skip
        if table.num_rows and tbl is None:
            tbl = db.create_table(TABLE, data=table)
        elif table.num_rows:
            (
                tbl.merge_insert("path")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table)
            )
        stats.encoded += table.num_rows
        stats.chunks += 1
        done += len(enc.ok)
        pending.clear()
        _write_meta(index_dir, meta, encoder, tbl, root, captions_file, stats)
        if progress:
            progress(done, len(todo))

    for batch in iter_encoded(encoder, loader) if todo else []:
        pending.append(batch)
        if sum(len(b.ok) for b in pending) >= chunk:
            commit()
    if pending:
        commit()
    stats.rows = tbl.count_rows() if tbl is not None else 0
    if tbl is not None and (todo or gone):
        _maintain(tbl, stats.rows)
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.images_per_second = round(stats.encoded / stats.seconds, 2) if stats.encoded else 0.0
    _write_meta(index_dir, meta, encoder, tbl, root, captions_file, stats)
    log.info("indexed %s: %s", root, stats)
    return stats


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _maintain(tbl, rows: int) -> None:
    """Full-text index on tags + captions; an ANN index only where it beats an exact scan."""
    try:
        from lancedb.index import FTS

        tbl.create_index("text", config=FTS(), replace=True)
    except Exception as exc:  # FTS is an extra; the index works without it
        log.warning("full-text index not built: %s", exc)
    if rows >= ANN_MIN_ROWS:
        tbl.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ")


def _write_meta(index_dir: Path, meta: dict, encoder: Any, tbl, root: str, captions, stats) -> None:
    meta.setdefault("version", INDEX_VERSION)
    meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    meta["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["encoder"] = {
        **encoder.identity(),
        "feature_dim": encoder.feature_dim,
        "imagenet_note": encoder.imagenet_note,
    }
    meta["rows"] = tbl.count_rows() if tbl is not None else 0
    meta["table_version"] = tbl.version if tbl is not None else None
    roots = meta.setdefault("roots", {})
    roots[root] = {
        "captions": str(Path(captions).resolve())
        if captions
        else roots.get(root, {}).get("captions"),
        "last_run": stats.to_dict(),
    }
    atomic_write_json(meta_path(index_dir), meta)


def load_rows(index_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table (or some columns) as Arrow; 10k rows load in well under a second."""
    tbl = open_table(index_dir)
    t = tbl.to_arrow()
    return t.select(list(columns)) if columns else t


def text_search(index_dir: str | Path, query: str, k: int = 10) -> list[dict]:
    """LanceDB full-text search over tags and captions (path, text, score)."""
    tbl = open_table(index_dir)
    try:
        df = tbl.search(query, query_type="fts").limit(k).to_arrow().to_pylist()
    except Exception as exc:  # no FTS index yet, or an FTS syntax error in the query
        log.warning("full-text search failed: %s", exc)
        return []
    return [{"path": r["path"], "text": r["text"], "score": r.get("_score")} for r in df]


def vector_search(
    index_dir: str | Path, vector: np.ndarray, k: int = 10, where: str | None = None
) -> list[dict]:
    """LanceDB vector search on the backbone features, with an optional SQL filter such as
    "label = 'sea'" or "split = 'test'" (ANN when the table has a vector index, else exact)."""
    q = open_table(index_dir).search(np.asarray(vector, np.float32)).metric("cosine")
    if where:
        q = q.where(where, prefilter=True)
    rows = q.limit(k).select(["path", "label", "split", "category"]).to_arrow().to_pylist()
    return [{**r, "score": 1 - float(r.pop("_distance"))} for r in rows]

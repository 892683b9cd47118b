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

Two engines share everything but the encoding: `plan` decides which files need work (content
hash against the table) and `_Writer.commit` turns an encoded batch into rows and commits
them. The local engine encodes with a DataLoader in this process; the Ray engine
(core.search.ray_engine) encodes on a Ray cluster and streams the batches back here, so both
write the same table, the same way. The images may be a local folder or a URI that pyarrow's
filesystems read (s3://, gs://, file://; core.search.uri).

Vector search is exact until the table reaches `ann_min_rows`; then an ANN index
(IVF_HNSW_SQ, cosine) is built, and rebuilt once the table has grown by `ANN_REBUILD_GROWTH`
since; its parameters and build time go to `index.json` under "ann".
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.io import MetadataError, atomic_write_json, read_json
from core.search.category_index import PREFIX as CATEGORY_PREFIX
from core.search.maintenance import (
    apply_moves,
    holds_index_lock,
    keep_with_table,
    read_arrow,
    read_meta_for_update,
)

log = logging.getLogger(__name__)

TABLE = "images"
META_FILE = "index.json"
INDEX_VERSION = 2  # 2: semantic, class_probs and derived columns written at index time
ANN_MIN_ROWS = 100_000  # below this an exact scan is faster than any ANN index
ANN_COLUMNS = ("vector", "semantic")  # vector columns that get an ANN index above the threshold
SCALAR_COLUMNS = ("category", "split", "label")  # prefilters, each backed by a bitmap index
ANN_REBUILD_GROWTH = 0.5  # rebuild the ANN index once the table is 1.5x its size at the build
ENGINES = ("local", "ray")
Progress = Callable[[int, int], None]


class SearchIndexError(ValueError):
    """The index folder is missing, empty or was built with different settings."""


@dataclass
class IndexStats:
    root: str
    found: int = 0  # image files under the folder
    unchanged: int = 0
    encoded: int = 0  # new or changed files encoded in this run
    skipped: list[dict] = field(default_factory=list)  # undecodable files with reasons
    ignored: list[dict] = field(default_factory=list)  # folders not read (extra/ beside train/)
    deleted: int = 0
    moved: int = 0  # files found under a new path by content hash: row updated, not re-encoded
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


def root_of(images: str | Path) -> str:
    """How the index names an image root: a resolved local path, or the URI as given."""
    from core.search.uri import is_uri

    if is_uri(images):
        return str(images).rstrip("/")
    return str(Path(images).expanduser().resolve())


def list_images(folder: str | Path, ignored: list[dict] | None = None) -> list[ImageFile]:
    """Every image under `folder` (a local folder or a URI); class folders (and Intel-style
    split folders) become labels. Folders a split layout does not read (extra/ beside train/
    and test/) are appended to `ignored` as {"path", "reason"}: listed, never silent."""
    from core.data.dataset import IMAGE_EXTENSIONS, DatasetError, find_dataset
    from core.search.uri import is_uri, list_uri_images

    if is_uri(folder):
        try:
            return [ImageFile(f.path, f.split, f.label) for f in list_uri_images(str(folder))]
        except (FileNotFoundError, OSError) as exc:
            raise SearchIndexError(f"{folder}: {exc}") from exc
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise SearchIndexError(f"{folder}: no such folder")
    from core.data.dataset import safe_resolve

    # A symlink loop cannot be resolved: it keeps its own path and is skipped as unreadable.
    def resolved(p: Path) -> str:
        return str(safe_resolve(p) or p)

    try:
        ds = find_dataset(root)
        if ignored is not None:  # folders, and images outside a class folder
            ignored += [
                {"path": str(p), "reason": why}
                for p, why in ds.ignored
                if p.is_dir() or p.suffix.lower() in IMAGE_EXTENSIONS
            ]
        if ds.layout != "class-folders":
            return [ImageFile(resolved(r.path), r.split, r.label or "") for r in ds.records]
        return [ImageFile(resolved(r.path), "", r.label or "") for r in ds.records]
    except DatasetError:
        pass
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [ImageFile(resolved(p), "", "") for p in files if p.is_file() or p.is_symlink()]


def read_bytes(path: str) -> bytes:
    """A file's bytes, from a local path or a URI."""
    from core.search.uri import read_path_bytes

    return read_path_bytes(path)


def file_sha256(path: str) -> str:
    """Content hash ("" when the file cannot be read: it is then skipped as unreadable)."""
    from core.search.uri import file_sha256 as sha

    return sha(path)


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


def schema(feature_dim: int, semantic_dim: int | None = None) -> pa.Schema:
    """The columns a commit writes. `semantic` only when the encoder has its own image-text
    space (CLIP); otherwise the table gains it empty (`_upgrade`) and `derive.finalize` fills
    it, as it adds `class_probs`."""
    sem = [("semantic", pa.list_(pa.float32(), semantic_dim))] if semantic_dim else []
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
            *sem,
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
    semantic_dim: int = 384,
) -> pa.Table:
    keep = np.flatnonzero(enc.ok)
    own = semantic_dim if enc.semantic is not None else None
    cols: dict[str, list] = {k: [] for k in schema(feature_dim, own).names}
    for i in keep:
        f = files[i]
        probs = enc.probs[i] if enc.probs is not None else None
        category = class_names[int(np.argmax(probs))] if probs is not None else ""
        labels = [imagenet[int(j)] for j in enc.top_ids[i]]
        captions = caps.get(_name(f.path), [])
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
    if own:  # an encoder with its own image-text space (CLIP)
        sem = enc.semantic[keep].astype(np.float32).reshape(-1)
        cols["semantic"] = pa.FixedSizeListArray.from_arrays(pa.array(sem), semantic_dim)
    return pa.table(cols, schema=schema(feature_dim, own))


def semantic_dim_of(encoder: Any) -> int:
    """The semantic column's dimension: the encoder's own space, else the sentence space."""
    from core.search.sentence import TEXT_DIM

    return int(getattr(encoder, "semantic_dim", None) or TEXT_DIM)


# --- metadata -----------------------------------------------------------------------------------


def meta_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / META_FILE


def read_meta(index_dir: str | Path) -> dict:
    path = meta_path(index_dir)
    if not path.exists():
        raise SearchIndexError(
            f"{index_dir}: not an index (no {META_FILE}); build one with "
            "`python -m core index --images DIR --index INDEX_DIR`"
        )
    try:
        meta = read_json(path)
    except MetadataError as exc:
        raise SearchIndexError(
            f"{exc}; run `python -m core index --images DIR --index {index_dir}` to rebuild it "
            "from the table"
        ) from None
    if not isinstance(meta, dict):
        raise SearchIndexError(
            f"{path} is not an index description (a JSON object); run `index` "
            "again to rebuild it from the table"
        )
    return meta


def open_table(index_dir: str | Path):
    import lancedb

    read_meta(index_dir)
    db = lancedb.connect(str(index_dir))
    if not _has_table(db):
        raise SearchIndexError(f"{index_dir}: the index holds no images yet")
    return db.open_table(TABLE)


def _has_table(db) -> bool:
    return TABLE in db.list_tables().tables


def _existing(tbl) -> dict[str, tuple[str, str, list[str]]]:
    """{path: (sha256, root, captions)} of the rows already in the table."""
    if tbl is None:
        return {}
    t = read_arrow(tbl).select(["path", "sha256", "root", "captions"]).to_pydict()
    return {
        p: (s, r, list(c or []))
        for p, s, r, c in zip(t["path"], t["sha256"], t["root"], t["captions"], strict=True)
    }


def _check_compatible(meta: dict, identity: dict) -> None:
    old = meta.get("encoder", {})
    for key in ("backbone", "weights", "image_size", "run"):
        if key in old and old[key] != identity[key]:
            raise SearchIndexError(
                f"the index was built with {key}={old[key]!r}, not {identity[key]!r}; "
                "use another --index folder or the same settings"
            )


# --- build --------------------------------------------------------------------------------------

EncodedBatches = Iterator[tuple[list[int], Any]]  # (indices into the file list, embed.Encoded)


@dataclass
class Plan:
    """What a run has to do: encode `todo` (indices into the file list), delete `gone`."""

    todo: list[int]
    gone: list[str]


def plan(
    files: Sequence[ImageFile],
    shas: Sequence[str],
    existing: dict[str, tuple[str, str, list[str]]],
    caps: dict[str, list[str]],
    captions_file: str | Path | None,
    root: str,
    stats: IndexStats,
) -> Plan:
    """Which files need work, by content hash (shared by both engines); counts the unchanged
    and unreadable files into `stats`."""
    todo: list[int] = []
    for i, f in enumerate(files):
        old = existing.get(f.path)
        want_caps = caps.get(_name(f.path), []) if captions_file else None
        if old and old[0] == shas[i] and (want_caps is None or want_caps == old[2]):
            stats.unchanged += 1
        elif shas[i]:
            todo.append(i)
        else:
            stats.skipped.append({"path": f.path, "reason": "unreadable"})
    gone = sorted(set(p for p, v in existing.items() if v[1] == root) - {f.path for f in files})
    return Plan(todo, gone)


def _name(path: str) -> str:
    """A file's name, for a local path or a URI (captions are keyed by file name)."""
    return path.rstrip("/").rsplit("/", 1)[-1] if "://" in path else Path(path).name


@dataclass
class _Writer:
    """Encoded batch -> rows -> one atomic LanceDB commit + index.json (shared by engines)."""

    index_dir: Path
    meta: dict
    encoder: Any
    db: Any
    tbl: Any
    root: str
    captions_file: str | Path | None
    caps: dict[str, list[str]]
    files: Sequence[ImageFile]
    shas: Sequence[str]
    stats: IndexStats
    progress: Progress | None
    total: int
    done: int = 0

    def commit(self, idx: Sequence[int], enc: Any) -> None:
        part = [self.files[i] for i in idx]
        for j in np.flatnonzero(~enc.ok):
            self.stats.skipped.append({"path": part[j].path, "reason": enc.reasons[j]})
        e = self.encoder
        table = _rows(
            part,
            [self.shas[i] for i in idx],
            self.root,
            enc,
            e.class_names,
            e.imagenet_classes,
            self.caps,
            e.feature_dim,
            semantic_dim_of(e),
        )
        if table.num_rows and self.tbl is None:
            self.tbl = self.db.create_table(TABLE, data=table)
            _upgrade(self.tbl, semantic_dim_of(e))
        elif table.num_rows:
            (
                self.tbl.merge_insert("path")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table)
            )
        self.stats.encoded += table.num_rows
        self.stats.chunks += 1
        self.done += len(idx)
        self.write_meta()
        if self.progress:
            self.progress(self.done, self.total)

    def write_meta(self) -> None:
        _write_meta(
            self.index_dir,
            self.meta,
            self.encoder,
            self.tbl,
            self.root,
            self.captions_file,
            self.stats,
        )


def _local_batches(
    encoder: Any, files: Sequence[ImageFile], todo: Sequence[int], batch_size: int, workers: int
) -> EncodedBatches:
    """The embedded engine: DataLoader workers decode, this process encodes, in file order."""
    from core.search.embed import iter_encoded

    loader = encoder.loader([files[i].path for i in todo], batch_size, workers)
    pos = 0
    for enc in iter_encoded(encoder, loader):
        n = len(enc.ok)
        yield list(todo[pos : pos + n]), enc
        pos += n


@holds_index_lock  # one writer per index folder (core.search.maintenance)
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
    engine: str = "local",
    ray_options: Any = None,  # core.search.ray_engine.RayOptions
    ann_min_rows: int = ANN_MIN_ROWS,
    derive: bool = True,
    map_config: Any = None,  # core.search.semantic_map.MapConfig
) -> IndexStats:
    """Index (or update the index of) every image under `images` (a folder or a URI) into
    `index_dir`. `derive` (default) then writes what queries read: the semantic column,
    categories, full-text text, keyword model, relevance floors (core.search.derive).
    engine="local" encodes in this process (and never imports Ray);
    engine="ray" encodes on a Ray cluster (`ray_options`: address, workers, GPUs)."""
    import lancedb

    from core.search.embed import DEFAULT_BACKBONE, concat
    from core.search.encoders import create_image_encoder

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    start = time.perf_counter()
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    root = root_of(images)
    not_read: list[dict] = []
    files = list_images(images, not_read)
    stats = IndexStats(root=root, found=len(files), ignored=not_read)
    meta = read_meta_for_update(index_dir)  # {} when missing; rebuilt when unreadable
    if encoder is None:
        name = backbone or meta.get("encoder", {}).get("backbone") or DEFAULT_BACKBONE
        size = image_size or meta.get("encoder", {}).get("image_size")
        run_dir = run_dir or meta.get("encoder", {}).get("run")  # an update keeps the run
        # The Ray driver only needs the encoder's identity and label names: keep it on CPU.
        encoder = create_image_encoder(
            backbone=name, run=run_dir, image_size=size, device="cpu" if engine == "ray" else device
        )
    identity = encoder.identity()
    if captions_file is None:  # keep the captions a previous run of this folder attached
        captions_file = meta.get("roots", {}).get(root, {}).get("captions")
    if meta:
        _check_compatible(meta, identity)
    db = lancedb.connect(str(index_dir))
    tbl = db.open_table(TABLE) if _has_table(db) else None
    if tbl is not None:
        _upgrade(tbl, semantic_dim_of(encoder))
    existing = _existing(tbl)
    caps = captions_by_image(captions_file)

    with contextlib.ExitStack() as stack:
        if engine == "ray":
            from core.search import ray_engine

            opts = ray_options or ray_engine.RayOptions()
            stack.enter_context(ray_engine.session(opts))
            shas = ray_engine.hash_paths([f.path for f in files], opts)
        else:
            shas = hash_files([f.path for f in files])
        work = plan(files, shas, existing, caps, captions_file, root, stats)
        stats.moved = apply_moves(
            tbl,
            files,
            work.todo,
            work.gone,
            shas,
            existing,
            root,
            lambda p, old: caps.get(_name(p), []) if captions_file else old,
            lambda row, c: tag_text(row["category"], row["top_labels"], c),
        )
        if work.gone and tbl is not None:
            for k in range(0, len(work.gone), 500):  # keep the filter expression small
                quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in work.gone[k : k + 500])
                tbl.delete(f"path IN ({quoted})")
            stats.deleted = len(work.gone)
        writer = _Writer(
            index_dir,
            meta,
            encoder,
            db,
            tbl,
            root,
            captions_file,
            caps,
            files,
            shas,
            stats,
            progress,
            len(work.todo),
        )
        if progress:
            progress(0, len(work.todo))
        if not work.todo:
            batches: EncodedBatches = iter(())
        elif engine == "ray":
            batches = ray_engine.encode_batches(
                encoder.spec("cuda" if opts.gpus_per_worker > 0 else "cpu"),
                [files[i].path for i in work.todo],
                work.todo,
                opts,
                batch_size,
                encoder.transform(),
            )
        else:
            n_workers = workers if workers is not None else min(4, _cpus())
            batches = _local_batches(encoder, files, work.todo, batch_size, n_workers)
        pending_idx: list[int] = []
        pending: list = []  # encoded batches not yet committed
        for idx, enc in batches:
            pending_idx += idx
            pending.append(enc)
            if len(pending_idx) >= chunk:
                writer.commit(pending_idx, concat(pending))
                pending_idx, pending = [], []
        if pending:
            writer.commit(pending_idx, concat(pending))
    tbl = writer.tbl
    stats.rows = tbl.count_rows() if tbl is not None else 0
    rewritten = False
    if tbl is not None and derive:
        from core.search.derive import finalize

        rewritten = finalize(index_dir, tbl, meta, encoder, map_config)
    changed = bool(work.todo or work.gone or stats.moved or rewritten)
    if tbl is not None and (changed or _ann_due(meta, stats.rows, ann_min_rows)):
        _maintain(tbl, stats.rows, meta, ann_min_rows, rebuild=rewritten)
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.images_per_second = round(stats.encoded / stats.seconds, 2) if stats.encoded else 0.0
    writer.write_meta()
    log.info("indexed %s: %s", root, stats)
    return stats


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def _ann_due(meta: dict, rows: int, ann_min_rows: int) -> bool:
    """An ANN index is due when the table reached the threshold and has none yet, or has
    grown by ANN_REBUILD_GROWTH since the last build (new rows are only scanned exactly)."""
    if rows < ann_min_rows:
        return False
    ann = meta.get("ann")
    return not ann or rows >= ann["rows_at_build"] * (1 + ANN_REBUILD_GROWTH)


def ann_params(rows: int, dim: int = 1280) -> dict:
    """IVF_RQ settings for `rows` vectors of `dim` dimensions, and the query settings that go
    with them (recorded in index.json, read by every query):
    - partitions: about 4,096 rows each (k-means on 2 cores stays minutes at 1M rows);
    - RaBitQ codes of 4 bits a dimension (640 bytes a 1280-d vector), no codebook to train;
    - nprobes: the partitions a query visits, about 6% of them and at least 8;
    - refine_factor: the candidates re-ranked with the full vectors, 10x k (capped at
      table.REFINE_ROWS rows), so the quantisation error is undone for the final order.
    Measured on 300k synthetic rows with the 1M benchmark's neighbourhoods (1,000 rows around
    each centre), nprobes 8: recall@10 of IVF_PQ (16 dims a sub-vector) 0.23 at x10 and 0.75
    at x50, build 155 s; IVF_RQ 4-bit 1.00 at x10 (9 ms), build 34 s; 384-d: IVF_PQ (8 dims a
    sub-vector) 0.58 at x10, IVF_RQ 4-bit 1.00, build 69 s against 10 s
    (benchmarks/ann_codes.py; at 1M rows, benchmarks/search.py: recall@10 1.00 for both).
    IVF rather than HNSW: its codes are read per partition (LanceDB's index cache is bounded,
    core.config.index_cache_mb) where an HNSW graph must be held whole."""
    parts = max(1, rows // 4096)
    return {
        "type": "IVF_RQ",
        "metric": "cosine",
        "num_partitions": parts,
        "num_bits": 4,
        "nprobes": max(8, math.ceil(0.06 * parts)),
        "refine_factor": 10,
    }


def _maintain(
    tbl, rows: int, meta: dict, ann_min_rows: int = ANN_MIN_ROWS, rebuild: bool = False
) -> None:
    """Full-text index on `text`, bitmap indexes on the prefilter columns, and ANN indexes on
    the vector columns where they beat an exact scan: (re)built per `_ann_due`, or after the
    derived columns were rewritten (`rebuild`), recorded in meta["ann"]."""
    from lancedb.index import FTS, Bitmap, BTree

    try:  # whole words, lower case, no stemming: the study's keyword semantics
        tbl.create_index(
            "text",
            config=FTS(with_position=False, stem=False, remove_stop_words=False, lower_case=True),
            replace=True,
        )
    except Exception as exc:  # the keyword mode then says it has no full-text index
        log.warning("full-text index not built: %s", exc)
    for col in SCALAR_COLUMNS:
        tbl.create_index(col, config=Bitmap(), replace=True)
    tbl.create_index("path", config=BTree(), replace=True)  # result rows read back by path
    for col in tbl.schema.names:  # the category mode's range prefilters (category_index)
        if col.startswith(CATEGORY_PREFIX):
            tbl.create_index(col, config=BTree(), replace=True)
    meta["ann_min_rows"] = ann_min_rows
    if not (_ann_due(meta, rows, ann_min_rows) or (rebuild and rows >= ann_min_rows)):
        return
    from lancedb.index import IvfRq

    t0 = time.perf_counter()
    columns = {}
    for col in ANN_COLUMNS:
        if col not in tbl.schema.names or tbl.count_rows(f"{col} IS NULL"):
            continue  # a semantic column not written yet (index --no-mapping)
        p = ann_params(rows, tbl.schema.field(col).type.list_size)
        tbl.create_index(
            col,
            config=IvfRq(
                distance_type=p["metric"],
                num_partitions=p["num_partitions"],
                num_bits=p["num_bits"],
            ),
            replace=True,
        )
        columns[col] = p
    meta["ann"] = {
        **ann_params(rows),
        "columns": columns,
        "rows_at_build": rows,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info("ANN indexes built: %s", meta["ann"])


def index_summary(index_dir: str | Path) -> dict:
    """What the app shows about an index: size, last update, exact or approximate search."""
    return meta_summary(read_meta(index_dir))


def meta_summary(meta: dict) -> dict:
    """`index_summary` of an index.json already read."""
    ann = meta.get("ann")
    threshold = meta.get("ann_min_rows", ANN_MIN_ROWS)
    return {
        "rows": meta.get("rows", 0),
        "updated": meta.get("updated"),
        "search": "approximate" if ann else "exact",
        "ann": ann,
        "ann_min_rows": threshold,
        "rows_since_build": meta.get("rows", 0) - ann["rows_at_build"] if ann else None,
    }


def describe_index(meta: dict) -> str:
    """The index's size, last build and whether its vector search is exact or approximate."""
    s = meta_summary(meta)
    text = f"{s['rows']:,} rows · last updated {s['updated']} · LanceDB vector index: "
    a = s["ann"]
    if not a:
        return text + (
            f"none, vector search is exact (an ANN index is built from {s['ann_min_rows']:,} rows)"
        )
    cols = ", ".join(a.get("columns") or {}) or "vector"
    return text + (
        f"approximate, {a['type']} on {cols} ({a['metric']}, {a['num_partitions']} partitions, "
        f"nprobes {a.get('nprobes')}, refine ×{a.get('refine_factor')}) built {a['built']} on "
        f"{a['rows_at_build']:,} rows in {a['seconds']} s; {s['rows_since_build']:,} rows "
        "added since"
    )


def _write_meta(index_dir: Path, meta: dict, encoder: Any, tbl, root: str, captions, stats) -> None:
    meta["version"] = INDEX_VERSION  # the table has this version's columns (_upgrade)
    meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
    meta["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["encoder"] = {
        **encoder.identity(),
        "feature_dim": encoder.feature_dim,
        "imagenet_note": encoder.imagenet_note,
    }
    roots = meta.setdefault("roots", {})
    roots[root] = {
        "captions": str(Path(captions).resolve())
        if captions
        else roots.get(root, {}).get("captions"),
        "last_run": stats.to_dict(),
    }
    keep_with_table(tbl, meta)  # the encoder and roots outlive an unreadable index.json
    meta["rows"] = tbl.count_rows() if tbl is not None else 0
    meta["table_version"] = tbl.version if tbl is not None else None
    atomic_write_json(meta_path(index_dir), meta)


def load_rows(index_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table (or some columns) as Arrow; 10k rows load in well under a second."""
    tbl = open_table(index_dir)
    t = read_arrow(tbl, index_dir)
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
    index_dir: str | Path,
    vector: np.ndarray,
    k: int = 10,
    where: str | None = None,
    column: str = "vector",
) -> list[dict]:
    """LanceDB vector search (cosine) on the backbone features (`column="vector"`) or the
    semantic column, with an optional SQL prefilter such as "label = 'sea'" or
    "split = 'test'"; ANN with the index's recorded query settings when the column has a
    vector index, else exact. Rows: path, label, split, category, score (cosine)."""
    from core.search.table import IndexTable

    hits = IndexTable.open(index_dir).vector_search(column, vector, k, where)
    return [
        {key: h[key] for key in ("path", "label", "split", "category", "score")} for h in hits.rows
    ]


def _upgrade(tbl: Any, semantic_dim: int) -> None:
    """An index of an older format gains the columns of this one (filled by finalize)."""
    if "semantic" not in tbl.schema.names:
        log.info("upgrading the index: adding the semantic column")
        tbl.add_columns(pa.field("semantic", pa.list_(pa.float32(), semantic_dim)))

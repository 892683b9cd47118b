"""Writing the image index: one row per image file (path, content hash, split, label, the
run's category and probabilities when indexed with a run, ImageNet top-5, captions, `text`
and the backbone feature vector), then what queries need derived from the whole collection
(core.search.derive) and the indexes kept up (core.search.ann).

Incremental and resumable: files whose path and content hash are already in the table are
skipped; new or changed files are encoded in chunks, and every chunk is committed with
`merge_insert` on `path` (a LanceDB commit is atomic, so an interrupted run keeps the finished
chunks and never leaves a half-written table). Rows under the indexed folder whose file is
gone are deleted. `index.json` is written atomically after every commit.

A review (core.data.review) is applied to the (path, label) list before anything is written
or derived: removed images get no row (an existing one is deleted), relabelled ones carry
their new label, so the semantic map, the category head and the floors learn the labels the
user accepted.

Two engines share everything but the encoding: `plan` decides which files need work (content
hash against the table) and `_Writer.commit` turns an encoded batch into rows and commits
them. The local engine encodes with a DataLoader in this process; the Ray engine
(core.search.ray_engine) encodes on a Ray cluster and streams the batches back here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from core.io import atomic_write_json
from core.search.ann import ANN_MIN_ROWS, ann_due, maintain
from core.search.files import (
    ImageFile,
    captions_by_image,
    file_name,
    hash_files,
    list_images,
    root_of,
)
from core.search.index_format import (
    INDEX_VERSION,
    TABLE,
    SearchIndexError,
    delete_paths,
    has_table,
    meta_path,
    schema,
    tag_text,
    upgrade,
)
from core.search.maintenance import (
    apply_moves,
    holds_index_lock,
    keep_with_table,
    read_arrow,
    read_meta_for_update,
)

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
Progress = Callable[[int, int], None]
Stage = Callable[[str, int, int], None]  # (step, done, total): a step with a count
Note = Callable[[str], None]  # a step with no count
EncodedBatches = Iterator[tuple[list[int], Any]]  # (indices into the file list, embed.Encoded)
Existing = dict[str, tuple[str, str, list[str]]]  # path -> (sha256, root, captions)


@dataclass
class IndexConfig:
    """How `build_index` runs (every field has a default; an update keeps the index's run,
    backbone, image size and captions when they are not given)."""

    run_dir: str | Path | None = None  # a trained run: category probabilities
    captions_file: str | Path | None = None
    backbone: str | None = None
    image_size: int | None = None
    batch_size: int = 64
    workers: int | None = None  # local: decoding processes (None: threads sized from the cores)
    chunk: int = 512  # images per committed chunk (the resume unit)
    device: str | None = None
    engine: str = "local"  # "local" (this process, never imports Ray) or "ray"
    ray_options: Any = None  # core.search.ray_engine.RayOptions
    ann_min_rows: int = ANN_MIN_ROWS
    derive: bool = True  # write what queries read (core.search.derive)
    map_config: Any = None  # core.search.semantic_map.MapConfig
    review: Any = None  # core.data.review.Review, or its file: applied before anything
    cache_dir: str | Path | None = None  # the encoding store's cache (default: resolved)


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
    relabelled: int = 0  # rows whose label changed (a review), not re-encoded
    rows: int = 0  # rows in the table afterwards
    seconds: float = 0.0
    images_per_second: float = 0.0
    chunks: int = 0
    review: dict | None = None  # what the review changed: removed, relabelled, kept

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- rows ---------------------------------------------------------------------------------------


def semantic_dim_of(encoder: Any) -> int:
    """The semantic column's dimension: the encoder's own space, else the sentence space."""
    from core.search.sentence import TEXT_DIM

    return int(getattr(encoder, "semantic_dim", None) or TEXT_DIM)


def _rows(
    files: Sequence[ImageFile],
    shas: Sequence[str],
    root: str,
    enc: Any,  # embed.Encoded
    encoder: Any,
    caps: dict[str, list[str]],
) -> pa.Table:
    keep = np.flatnonzero(enc.ok)
    feature_dim, semantic_dim = encoder.feature_dim, semantic_dim_of(encoder)
    own = semantic_dim if enc.semantic is not None else None
    cols: dict[str, list] = {k: [] for k in schema(feature_dim, own).names}
    for i in keep:
        f = files[i]
        probs = enc.probs[i] if enc.probs is not None else None
        category = encoder.class_names[int(np.argmax(probs))] if probs is not None else ""
        labels = [encoder.imagenet_classes[int(j)] for j in enc.top_ids[i]]
        captions = caps.get(file_name(f.path), [])
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


def _existing(tbl: Any) -> tuple[Existing, dict[str, str]]:
    """({path: (sha256, root, captions)}, {path: label}) of the rows already in the table."""
    if tbl is None:
        return {}, {}
    t = read_arrow(tbl).select(["path", "sha256", "root", "captions", "label"]).to_pydict()
    rows = {
        p: (s, r, list(c or []))
        for p, s, r, c in zip(t["path"], t["sha256"], t["root"], t["captions"], strict=True)
    }
    return rows, dict(zip(t["path"], t["label"], strict=True))


def _check_compatible(meta: dict, identity: dict) -> None:
    old = meta.get("encoder", {})
    for key in ("backbone", "weights", "image_size", "run"):
        if key in old and old[key] != identity[key]:
            raise SearchIndexError(
                f"the index was built with {key}={old[key]!r}, not {identity[key]!r}; "
                "use another --index folder or the same settings"
            )


# --- what a person waiting sees ------------------------------------------------------------------

# The steps `build_index` reports, in the order they run: `note` for those with no count,
# `stage(name, done, total)` for the counted ones.
READING_FOLDER = "Reading the folder"
LOADING_MODEL = "Loading the image model"
READING_INDEX = "Reading the index"
CHECKING_FILES = "Checking files"  # counted: content hashes
READING_STORED = "Reading photos encoded before"  # counted: from the encoding store
ENCODING = "Encoding photos"  # counted: the stored ones count as done
DERIVING = "Writing what queries read (text mapping, categories)"
INDEXING = "Updating the search indexes (full text, ANN)"


@dataclass
class Steps:
    """A build's `stage` and `note` callbacks (either may be None): every wait a person would
    notice names its step, with a count where there is one."""

    stage: Stage | None = None
    note: Note | None = None

    def say(self, text: str) -> None:
        if self.note:
            self.note(text)

    def count(self, name: str, done: int, total: int) -> None:
        if self.stage:
            self.stage(name, done, total)

    def counter(self, name: str, total: int) -> Progress | None:
        """A `progress(done, total)` callback for step `name`, which is shown at 0 now."""
        if not self.stage:
            return None
        self.stage(name, 0, total)
        return lambda done, n: self.count(name, done, n)

    def encoding(self, batches: EncodedBatches, total: int) -> EncodedBatches:
        """`batches`, counted as each arrives (commits come only every chunk): the photos
        read from the encoding store under their own step, so the rate and time left of
        ENCODING measure decoding alone; both count towards `total`."""
        done = 0
        for idx, enc in batches:
            done += len(idx)
            self.count(READING_STORED if getattr(enc, "stored", False) else ENCODING, done, total)
            yield idx, enc


# --- plan ---------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What a run has to do: encode `todo` (indices into the file list), delete `gone`."""

    todo: list[int]
    gone: list[str]


def plan(
    files: Sequence[ImageFile],
    shas: Sequence[str],
    existing: Existing,
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
        want_caps = caps.get(file_name(f.path), []) if captions_file else None
        if old and old[0] == shas[i] and (want_caps is None or want_caps == old[2]):
            stats.unchanged += 1
        elif shas[i]:
            todo.append(i)
        else:
            stats.skipped.append({"path": f.path, "reason": "unreadable"})
    gone = sorted(set(p for p, v in existing.items() if v[1] == root) - {f.path for f in files})
    return Plan(todo, gone)


def _reviewed(files: list[ImageFile], review: Any, stats: IndexStats) -> list[ImageFile]:
    """The files with the review applied (core.data.review): removed ones dropped (their rows
    then count as gone), relabelled ones carrying their new label."""
    if review is None:
        return files
    from core.data.review import apply_review

    kept, applied = apply_review([(f.path, f.label) for f in files], review)
    stats.review = applied.to_dict()
    by_path = {f.path: f for f in files}
    return [dataclasses.replace(by_path[p], label=label or "") for p, label in kept]


def _sync_labels(tbl: Any, files: Sequence[ImageFile], todo: Sequence[int], labels: dict) -> int:
    """Give unchanged rows the label of this run's listing (a review relabels, or a later run
    without it gives the folder's label back) in one commit; nothing is re-encoded."""
    skip = {files[i].path for i in todo}
    changed = [f for f in files if f.path in labels and f.path not in skip]
    changed = [f for f in changed if labels[f.path] != f.label]
    if tbl is None or not changed:
        return 0
    table = pa.table({"path": [f.path for f in changed], "label": [f.label for f in changed]})
    tbl.merge_insert("path").when_matched_update_all().execute(table)
    return len(changed)


# --- commits ------------------------------------------------------------------------------------


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
        shas = [self.shas[i] for i in idx]
        table = _rows(part, shas, self.root, enc, self.encoder, self.caps)
        if table.num_rows and self.tbl is None:
            self.tbl = self.db.create_table(TABLE, data=table)
            upgrade(self.tbl, semantic_dim_of(self.encoder))
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
        meta, tbl = self.meta, self.tbl
        meta["version"] = INDEX_VERSION  # the table has this version's columns (upgrade)
        meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        meta["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
        meta["encoder"] = encoder_meta(self.encoder)
        roots = meta.setdefault("roots", {})
        captions = self.captions_file
        roots[self.root] = {
            "captions": str(Path(captions).resolve())
            if captions
            else roots.get(self.root, {}).get("captions"),
            "last_run": self.stats.to_dict(),
        }
        write_meta(self.index_dir, meta, tbl)


def encoder_meta(encoder: Any) -> dict:
    """index.json's `encoder`: what the vectors were made with."""
    return {
        **encoder.identity(),
        "feature_dim": encoder.feature_dim,
        "imagenet_note": encoder.imagenet_note,
    }


def write_meta(index_dir: str | Path, meta: dict, tbl: Any) -> None:
    """index.json, atomically, with the table's row count and version (and the part of it the
    table keeps, core.search.maintenance.keep_with_table)."""
    keep_with_table(tbl, meta)  # the encoder and roots outlive an unreadable index.json
    meta["rows"] = tbl.count_rows() if tbl is not None else 0
    meta["table_version"] = tbl.version if tbl is not None else None
    atomic_write_json(meta_path(index_dir), meta)


# --- encoding -----------------------------------------------------------------------------------


def _local_batches(
    encoder: Any,
    files: Sequence[ImageFile],
    todo: Sequence[int],
    batch_size: int,
    workers: int | None,
) -> EncodedBatches:
    """The embedded engine: decode threads (or `workers` processes) ahead of this process's
    encoder, in file order (core.vision.features.make_loader)."""
    from core.search.embed import iter_encoded

    loader = encoder.loader([files[i].path for i in todo], batch_size, workers)
    pos = 0
    for enc in iter_encoded(encoder, loader):
        n = len(enc.ok)
        yield list(todo[pos : pos + n]), enc
        pos += n


def _batches(
    cfg: IndexConfig,
    encoder: Any,
    files: Sequence[ImageFile],
    todo: list[int],
    opts: Any,
    shas: Sequence[str] | None = None,
) -> EncodedBatches:
    """Encoded batches of `todo`: first what the encoding store (core.vision.encodings)
    holds for a backbone, linear-probe or partial-run encoder (read, not decoded), then the
    rest, encoded by the engine; both add what they encode to the store (the Ray engine's
    actors return the pretrained outputs, written here; a partial run's activations are
    stored by the local engine only)."""
    if not todo:
        return iter(())
    stored: EncodedBatches = iter(())
    if shas is not None and hasattr(encoder, "outputs_inference"):
        from core.config import resolve_cache_dir
        from core.search.embed import stored_batches
        from core.search.partial_rows import activation_batches, is_partial

        read = activation_batches if is_partial(encoder) else stored_batches
        found, rest = read(
            encoder,
            resolve_cache_dir(cfg.cache_dir),
            [files[i].path for i in todo],
            [shas[i] for i in todo],
            cfg.batch_size,
            cfg.workers,
            encode_missing=cfg.engine != "ray",
            chunk=cfg.batch_size,  # stored rows come in batches too: chunks commit as before
        )
        asked = list(todo)  # the generator runs later, after `todo` is narrowed
        stored = (([asked[j] for j in pos], enc) for pos, enc in found)
        todo = [asked[j] for j in rest]
    if not todo:
        return stored
    if cfg.engine == "ray":
        from core.search.ray_engine import encode_batches

        sink = None  # the pretrained outputs the actors encode go into the store too
        if shas is not None and hasattr(encoder, "outputs_inference"):
            from core.config import resolve_cache_dir
            from core.search.store_sink import StoreSink

            sink = StoreSink(encoder, resolve_cache_dir(cfg.cache_dir), {i: shas[i] for i in todo})
        encoded = encode_batches(
            encoder.spec("cuda" if opts.gpus_per_worker > 0 else "cpu"),
            [files[i].path for i in todo],
            todo,
            opts,
            cfg.batch_size,
            encoder.transform(),
            keep=sink,
        )
        return itertools.chain(stored, sink.wrap(encoded) if sink is not None else encoded)
    return itertools.chain(
        stored, _local_batches(encoder, files, todo, cfg.batch_size, cfg.workers)
    )


def _commit_in_chunks(writer: _Writer, batches: EncodedBatches, chunk: int) -> None:
    from core.search.embed import concat

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


def load_index_encoder(meta: dict, cfg: IndexConfig | None = None) -> Any:
    """The encoder an index was built with (an update keeps its CLIP model, backbone, input
    size and run), or the one `cfg` asks for on a new index."""
    from core.search.embed import DEFAULT_BACKBONE
    from core.search.encoders import create_image_encoder, spec_for_index

    cfg = cfg or IndexConfig(device="cpu")
    old = meta.get("encoder", {})
    # The Ray driver only needs the encoder's identity and label names: keep it on CPU.
    device = "cpu" if cfg.engine == "ray" else cfg.device
    if cfg.backbone is None and cfg.run_dir is None:
        clip = spec_for_index(None, None, None, meta)
        if clip is not None:
            return create_image_encoder(clip, device=device)
    name = cfg.backbone or old.get("backbone") or DEFAULT_BACKBONE
    size = cfg.image_size or old.get("image_size")
    run_dir = cfg.run_dir or old.get("run")
    return create_image_encoder(backbone=name, run=run_dir, image_size=size, device=device)


def _hashes(
    cfg: IndexConfig, paths: list[str], stack: contextlib.ExitStack, steps: Steps
) -> tuple[list[str], Any]:
    """(content hashes of `paths`, the Ray options or None), counted as CHECKING_FILES; the
    Ray engine's session opens here and stays open on `stack` for the encoding."""
    counter = steps.counter(CHECKING_FILES, len(paths))
    if cfg.engine != "ray":
        return hash_files(paths, progress=counter), None
    import core.search.ray_engine as ray_engine

    opts = cfg.ray_options or ray_engine.RayOptions()
    stack.enter_context(ray_engine.session(opts))
    return ray_engine.hash_paths(paths, opts, counter), opts


# --- build --------------------------------------------------------------------------------------


@holds_index_lock  # one writer per index folder (core.search.maintenance)
def build_index(
    images: str | Path,
    index_dir: str | Path,
    config: IndexConfig | None = None,
    *,
    encoder: Any = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
    note: Note | None = None,
    **settings: Any,
) -> IndexStats:
    """Index (or update the index of) every image under `images` (a folder or a URI) into
    `index_dir`, as `config` (or the IndexConfig fields given as keywords) says. With
    `derive` (default) it then writes what queries read (core.search.derive).

    `progress(done, total)`: the photos to encode, after each committed chunk (the CLI's
    bar). `stage(step, done, total)` and `note(step)`: every step as it starts (the module's
    READING_FOLDER ... INDEXING), counted where there is a count (a page's job panel)."""
    import lancedb

    cfg = dataclasses.replace(config or IndexConfig(), **settings)
    if cfg.engine not in ENGINES:
        raise ValueError(f"unknown engine {cfg.engine!r}; choose one of {', '.join(ENGINES)}")
    start = time.perf_counter()
    steps = Steps(stage, note)
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    root = root_of(images)
    steps.say(READING_FOLDER)
    not_read: list[dict] = []
    files = list_images(images, not_read)
    stats = IndexStats(root=root, found=len(files), ignored=not_read)
    files = _reviewed(files, cfg.review, stats)
    meta = read_meta_for_update(index_dir)  # {} when missing; rebuilt when unreadable
    if encoder is None:  # loading (a first time: exporting) the model takes a while
        steps.say(LOADING_MODEL)
        encoder = load_index_encoder(meta, cfg)
    captions_file = cfg.captions_file
    if captions_file is None:  # keep the captions a previous run of this folder attached
        captions_file = meta.get("roots", {}).get(root, {}).get("captions")
    if meta:
        _check_compatible(meta, encoder.identity())
    db = lancedb.connect(str(index_dir))
    tbl = db.open_table(TABLE) if has_table(db) else None
    if tbl is not None:
        steps.say(READING_INDEX)
        upgrade(tbl, semantic_dim_of(encoder))
    existing, labels = _existing(tbl)
    caps = captions_by_image(captions_file)

    with contextlib.ExitStack() as stack:
        shas, opts = _hashes(cfg, [f.path for f in files], stack, steps)
        work = plan(files, shas, existing, caps, captions_file, root, stats)
        stats.moved = apply_moves(
            tbl,
            files,
            work.todo,
            work.gone,
            shas,
            existing,
            root,
            lambda p, old: caps.get(file_name(p), []) if captions_file else old,
            lambda row, c: tag_text(row["category"], row["top_labels"], c),
        )
        stats.relabelled = _sync_labels(tbl, files, work.todo, labels)
        if work.gone and tbl is not None:
            delete_paths(tbl, work.gone)
            stats.deleted = len(work.gone)
        writer = _Writer(
            index_dir, meta, encoder, db, tbl, root, captions_file, caps, files, shas, stats,
            progress, len(work.todo),
        )  # fmt: skip
        if progress:
            progress(0, len(work.todo))
        if work.todo:
            # New rows are committed before what queries read is derived from them: until
            # refresh() ends, index.json says so (a kill in between leaves an index that
            # tells its queries it is incomplete instead of hiding rows from them).
            meta["derived"] = False
            steps.count(ENCODING, 0, len(work.todo))  # the store is looked up first
        batches = _batches(cfg, encoder, files, work.todo, opts, shas)
        _commit_in_chunks(writer, steps.encoding(batches, len(work.todo)), cfg.chunk)
    changed = bool(work.todo or work.gone or stats.moved or stats.relabelled)
    refresh(writer.tbl, meta, encoder, cfg, stats, changed, index_dir, steps.say)
    stats.seconds = round(time.perf_counter() - start, 3)
    stats.images_per_second = round(stats.encoded / stats.seconds, 2) if stats.encoded else 0.0
    writer.write_meta()
    log.info("indexed %s: %s", root, stats)
    return stats


def refresh(
    tbl: Any,
    meta: dict,
    encoder: Any,
    cfg: IndexConfig,
    stats: IndexStats | None,
    changed: bool,
    index_dir: Path,
    note: Note | None = None,
) -> None:
    """After the rows are written: derive what queries read from them (cfg.derive), then keep
    the full-text, prefilter and ANN indexes up (core.search.ann); `note` names each step."""
    say = note or (lambda _text: None)
    rows = tbl.count_rows() if tbl is not None else 0
    if stats is not None:
        stats.rows = rows
    if tbl is None:
        return
    rewritten = False
    meta["no_mapping"] = not cfg.derive
    if cfg.derive:
        from core.search.derive import write_derived

        say(DERIVING)
        rewritten = write_derived(index_dir, tbl, meta, encoder, cfg.map_config)
        meta["derived"] = True
    if changed or rewritten or ann_due(meta, rows, cfg.ann_min_rows):
        say(INDEXING)
        maintain(tbl, rows, meta, cfg.ann_min_rows, rebuild=rewritten)

"""The registry of caches: every kind of artefact SceneSeek recomputes when it is missing,
where it lives, and how to list or clear it (`python -m core cache list|clear`).

Each kind is a glob under the cache folder (or the index folder) owned by one module; the
encoding store (core.vision.encodings) is listed per encoder identity with its entries.
Nothing here is user data: reviews and edited tables (a mapping the app saved) are not
listed, so `clear` can never delete a decision someone made.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.vision.encodings import ACTIVATIONS, OUTPUTS, EncodingStore, folder_bytes


@dataclass(frozen=True)
class CacheKind:
    name: str
    base: str  # "cache" | "index": which folder `pattern` is under
    pattern: str  # glob of its entries
    owner: str  # the module that writes and reads it
    what: str


CACHE_KINDS: tuple[CacheKind, ...] = (
    CacheKind(
        "encodings",
        "cache",
        "encodings/outputs/*",
        "core.vision.encodings",
        "backbone outputs per encoder identity and photo content (train, index, audit, map)",
    ),
    CacheKind(
        "activations",
        "cache",
        "encodings/activations/*",
        "core.vision.activations",
        "frozen-trunk activations (photo + mirror) per split point and photo content (partial)",
    ),
    CacheKind(
        "content-hashes",
        "cache",
        "encodings/hashes.json",
        "core.vision.encodings",
        "sha256 of each file, memoised by path, size and mtime",
    ),
    CacheKind(
        "activations-legacy",
        "cache",
        "activations/*.npy",
        "core.vision.activations (before the encoding store)",
        "whole-list activation files no longer read",
    ),
    CacheKind(
        "features-legacy",
        "cache",
        "features/*.npy",
        "core.vision.features (before the encoding store)",
        "whole-list feature files no longer read",
    ),
    CacheKind("manifests", "cache", "manifests/*", "core.data.manifest", "checked image lists"),
    CacheKind(
        "maps", "cache", "curate/*/map-*.npz", "core.curate.embedmap", "2-D maps of collections"
    ),
    CacheKind(
        "audits", "cache", "curate/*/audit-*.npz", "core.curate.audit", "label audits of folders"
    ),
    CacheKind(
        "self-joins", "cache", "curate/*/selfjoin", "core.curate.audit", "near-duplicate tables"
    ),
    CacheKind("exports", "cache", "onnx/*", "core.vision.inference", "ONNX / OpenVINO exports"),
    CacheKind("gray", "cache", "gray/*", "core.vision.gray", "grey-level pixel arrays"),
    CacheKind("text-models", "cache", "models/*", "core.search.sentence", "MiniLM ONNX export"),
    CacheKind("clip-labels", "cache", "clip/*", "core.search.clip", "CLIP label embeddings"),
    CacheKind(
        "keyword-models",
        "index",
        "keyword_models/*.pkl",
        "core.search.derive",
        "per-index keyword models (signed pickles)",
    ),
    CacheKind(
        "text-cache", "index", "text_cache/*", "core.search.semantic_map", "embedded label texts"
    ),
)
KIND_NAMES = tuple(k.name for k in CACHE_KINDS)
STORE_KINDS = {"encodings": OUTPUTS, "activations": ACTIVATIONS}  # registry name -> store kind


def _entries(kind: CacheKind, cache_dir: Path, index_dir: Path) -> list[Path]:
    base = cache_dir if kind.base == "cache" else index_dir
    if kind.name == "maps" or kind.name == "audits" or kind.name == "self-joins":
        # curate/reviews holds people's decisions, never a cache
        return [p for p in sorted(base.glob(kind.pattern)) if p.parent.name != "reviews"]
    return sorted(base.glob(kind.pattern))


def list_caches(cache_dir: str | Path, index_dir: str | Path) -> list[dict[str, Any]]:
    """One row per kind: entries, bytes and, for the encoding store, one row per identity."""
    cache_dir, index_dir = Path(cache_dir), Path(index_dir)
    rows: list[dict[str, Any]] = []
    for kind in CACHE_KINDS:
        entries = _entries(kind, cache_dir, index_dir)
        row: dict[str, Any] = {
            "kind": kind.name,
            "entries": len(entries),
            "bytes": sum(folder_bytes(p) for p in entries),
            "where": str((cache_dir if kind.base == "cache" else index_dir) / kind.pattern),
            "owner": kind.owner,
            "what": kind.what,
        }
        if kind.name in STORE_KINDS:  # the encoding store: one row per identity
            idents = EncodingStore.at(cache_dir).describe()
            row["identities"] = [i for i in idents if i["kind"] == STORE_KINDS[kind.name]]
            row["entries"] = sum(i["entries"] for i in row["identities"])
        rows.append(row)
    return rows


def clear_caches(
    cache_dir: str | Path, index_dir: str | Path, kinds: list[str] | None = None
) -> dict[str, int]:
    """Delete every entry of `kinds` (all when None); {kind: entries removed}."""
    unknown = sorted(set(kinds or []) - set(KIND_NAMES))
    if unknown:
        raise ValueError(f"unknown cache kind {unknown[0]!r}; choose from {', '.join(KIND_NAMES)}")
    removed: dict[str, int] = {}
    for kind in CACHE_KINDS:
        if kinds and kind.name not in kinds:
            continue
        entries = _entries(kind, Path(cache_dir), Path(index_dir))
        for p in entries:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        removed[kind.name] = len(entries)
    return removed

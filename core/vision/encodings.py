"""One encoding per photo: the store of backbone outputs every command reads first.

An entry is what one encoder made of one file's content: pooled penultimate features and
ImageNet logits (one pass gives both; kind "outputs"), or the activations of a backbone's
frozen part at a split point, for the photo and its mirror image (kind "activations": what a
partial run trains its tail on, core.vision.activations). It is keyed by the encoder's identity
(`encoder_identity`: backbone, weights stamp, preprocessing, input size, numerics) and the
file's content hash (sha256 of its bytes, memoised by path + size + mtime + ctime so a second look at
a folder reads no bytes). Training a linear probe, indexing, the audit and its map all ask
the store first and encode only what it lacks, so a folder is encoded once per encoder.

Layout under `<cache>/encodings/`:

    hashes.json                       path -> [size, mtime_ns, ctime_ns, sha256] (the memo)
    <kind>/<backbone>-<size>[-<split>]-<numerics>-<key>/
        identity.json                 what the entries depend on
        shard-<id>/hashes.npy         (n,) content hashes
        shard-<id>/<output>.npy       (n, ...) float32, one file per output
        log.jsonl                     one line per write: rows encoded (the store's counter)

Append-only: new photos add a shard, nothing already there is rewritten. A shard is written
as a hidden temporary folder and renamed into place, so a reader sees a whole shard or none,
and one writer per identity holds a file lock while it checks what is missing and writes
(two commands on the same folder never both encode it). A shard that cannot be read is
ignored with a warning (its photos count as missing and are encoded again); shards are
memory-mapped, so reading a collection never holds the store twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from core.io import append_jsonl, atomic_write_json, open_regular, read_jsonl

log = logging.getLogger(__name__)

STORE_VERSION = 1
OUTPUTS = "outputs"  # pooled features + ImageNet logits of a pretrained backbone
ACTIVATIONS = "activations"  # a frozen part's output at a split point (photo, mirror image)
KINDS = (OUTPUTS, ACTIVATIONS)
READ_ROWS = 256  # rows copied per step when reading: a big shard is never copied whole
SHARD_PREFIX = "shard-"
HASH_DTYPE = "<U64"  # a sha256 hex digest
Progress = Callable[[int, int], None]


def encoder_identity(
    backbone: Any, image_size: int, numerics: str, amp: bool = False, **extra: Any
) -> dict[str, Any]:
    """What an encoding depends on besides the file: the backbone, its weights file, the whole
    preprocessing and the numerics of the backend. amp only matters on PyTorch (ONNX Runtime
    and OpenVINO ignore it), so train (amp off on a CPU) and index (amp on) share entries."""
    from core.vision.backbones import weights_stamp

    ident: dict[str, Any] = {
        "version": STORE_VERSION,
        "backbone": backbone.name,
        "weights": weights_stamp(backbone.weights),
        "image_size": int(image_size),
        "mean": [float(v) for v in backbone.mean],
        "std": [float(v) for v in backbone.std],
        "interpolation": str(backbone.interpolation),
        "crop_pct": float(backbone.crop_pct),
        "numerics": numerics,
    }
    if numerics.startswith("torch-"):
        ident["amp"] = bool(amp)
    ident.update(extra)
    return ident


def identity_key(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """sha256 of a regular file's bytes: a device or a FIFO is refused (OSError) unread."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Shard:
    path: Path
    hashes: np.ndarray


class EncodingStore:
    """The encoding store under `root` (`EncodingStore.at(cache_dir)`: <cache>/encodings)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._shards: dict[Path, dict[str, _Shard]] = {}  # identity folder -> name -> shard
        # identity folder -> (shard names, hash -> (shard, row)): rebuilt when shards change
        self._maps: dict[Path, tuple[tuple[str, ...], dict[str, tuple[_Shard, int]]]] = {}

    @classmethod
    def at(cls, cache_dir: str | Path) -> EncodingStore:
        return cls(Path(cache_dir) / "encodings")

    # --- content hashes -------------------------------------------------------------------

    def hashes(self, paths: Sequence[str | Path], workers: int = 4) -> list[str]:
        """sha256 of each file's bytes, from the memo when its size and mtime are unchanged.
        A file that cannot be read raises OSError (callers read files the manifest checked)."""
        memo_file = self.root / "hashes.json"
        memo = _read_memo(memo_file)
        out: list[str | None] = []
        todo: list[int] = []
        stamps: list[list[int]] = []
        for p in paths:
            st = os.stat(p)
            # ctime too: a copy that keeps the mtime (cp -p, copy2) still changes the ctime
            stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            stamps.append(stamp)
            old = memo.get(str(p))
            if old and old[:3] == stamp and len(old) == 4:
                out.append(old[3])
            else:
                out.append(None)
                todo.append(len(out) - 1)
        if todo:
            with ThreadPoolExecutor(workers) as pool:  # I/O bound: threads overlap the reads
                got = list(pool.map(file_sha256, [paths[i] for i in todo]))
            new = {str(paths[i]): [*stamps[i], h] for i, h in zip(todo, got, strict=True)}
            for i, h in zip(todo, got, strict=True):
                out[i] = h
            self.root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.root / ".hashes.lock")):
                merged = _read_memo(memo_file)  # another process may have added entries
                merged.update(new)
                atomic_write_json(memo_file, merged)
        return [str(h) for h in out]

    # --- entries --------------------------------------------------------------------------

    def folder(self, ident: dict[str, Any], kind: str = OUTPUTS) -> Path:
        name = f"{ident.get('backbone', 'x')}-{ident.get('image_size', 0)}"
        if ident.get("split"):  # activations: the split point names the entry
            name += f"-{ident['split']}"
        name += f"-{ident.get('numerics', '')}-{identity_key(ident)}"
        return self.root / kind / name

    def _index(self, folder: Path) -> dict[str, tuple[_Shard, int]]:
        """hash -> (shard, row) of every readable shard (hashes of new shards read once)."""
        known = self._shards.setdefault(folder, {})
        names = sorted(p.name for p in folder.glob(SHARD_PREFIX + "*")) if folder.is_dir() else []
        for gone in set(known) - set(names):
            del known[gone]
        for name in names:
            if name in known:
                continue
            try:
                hashes = np.load(folder / name / "hashes.npy")
            except (OSError, ValueError, EOFError) as exc:
                _set_aside(folder / name, exc)
                continue
            known[name] = _Shard(folder / name, hashes)
        cached = self._maps.get(folder)
        if cached is not None and cached[0] == tuple(names):
            return cached[1]
        out: dict[str, tuple[_Shard, int]] = {}
        for name in names:
            if name in known:
                shard = known[name]
                out.update((str(h), (shard, r)) for r, h in enumerate(shard.hashes))
        self._maps[folder] = (tuple(names), out)
        return out

    def missing(
        self, ident: dict[str, Any], hashes: Sequence[str], kind: str = OUTPUTS
    ) -> list[int]:
        """Positions of `hashes` with no entry for this identity."""
        have = self._index(self.folder(ident, kind))
        return [i for i, h in enumerate(hashes) if h not in have]

    def read(
        self, ident: dict[str, Any], hashes: Sequence[str], name: str, kind: str = OUTPUTS
    ) -> np.ndarray:
        """(len(hashes), ...) float32 rows of output `name`, in the order given; every hash
        must be present (`missing` is empty). A shard found damaged here is set aside and
        KeyError names it: the caller encodes again."""
        shape = self.row_shape(ident, hashes, name, kind)
        if shape is None:
            return np.zeros((0, 0), np.float32)
        out = np.empty((len(hashes), *shape), np.float32)
        self.read_into(ident, hashes, name, out, kind)
        return out

    def row_shape(
        self, ident: dict[str, Any], hashes: Sequence[str], name: str, kind: str = OUTPUTS
    ) -> tuple[int, ...] | None:
        """The shape of one row of output `name` (None: no hashes); KeyError as `read`."""
        if not len(hashes):
            return None
        folder = self.folder(ident, kind)
        shard, _ = self._index(folder)[hashes[0]]
        try:
            return tuple(np.load(shard.path / f"{name}.npy", mmap_mode="r").shape[1:])
        except (OSError, ValueError, EOFError) as exc:
            self._drop(folder, shard.path, exc)
            raise KeyError(f"damaged shard {shard.path}") from exc

    def read_into(
        self,
        ident: dict[str, Any],
        hashes: Sequence[str],
        name: str,
        out: np.ndarray,
        kind: str = OUTPUTS,
    ) -> None:
        """Fill out[i] with the row of hashes[i], READ_ROWS rows at a time from memory-mapped
        shards: reading a collection (into RAM or into a memory-mapped file) never holds it
        twice. KeyError as `read`."""
        folder = self.folder(ident, kind)
        have = self._index(folder)
        by_shard: dict[Path, tuple[list[int], list[int]]] = {}
        for i, h in enumerate(hashes):
            shard, row = have[h]
            pos, rows = by_shard.setdefault(shard.path, ([], []))
            pos.append(i)
            rows.append(row)
        for path, (pos, rows) in by_shard.items():
            try:
                arr = np.load(path / f"{name}.npy", mmap_mode="r")
                if len(arr) != len(self._shards[folder][path.name].hashes):
                    raise ValueError(f"{len(arr)} rows for {len(rows)} hashes")
                if arr.shape[1:] != out.shape[1:]:
                    raise ValueError(f"rows of shape {arr.shape[1:]}, not {out.shape[1:]}")
                for k in range(0, len(rows), READ_ROWS):
                    r = np.asarray(rows[k : k + READ_ROWS])
                    out[np.asarray(pos[k : k + READ_ROWS])] = arr[r]
            except (OSError, ValueError, EOFError) as exc:
                self._drop(folder, path, exc)
                raise KeyError(f"damaged shard {path}") from exc

    def _drop(self, folder: Path, shard: Path, exc: BaseException) -> None:
        _set_aside(shard, exc)
        self._shards.get(folder, {}).pop(shard.name, None)

    def put(
        self,
        ident: dict[str, Any],
        hashes: Sequence[str],
        arrays: dict[str, np.ndarray],
        kind: str = OUTPUTS,
    ) -> int:
        """Add the entries not there yet as one shard (atomically, under the identity's lock);
        returns how many rows were written."""
        folder = self.folder(ident, kind)
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            if not (folder / "identity.json").exists():
                atomic_write_json(folder / "identity.json", {"kind": kind, **ident})
            _remove_orphans(folder)
            have = self._index(folder)
            seen: set[str] = set()
            keep = []
            for i, h in enumerate(hashes):
                if h not in have and h not in seen:
                    seen.add(h)
                    keep.append(i)
            if not keep:
                return 0
            name = f"{SHARD_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
            tmp = folder / f".tmp-{os.getpid()}-{name}"
            tmp.mkdir()
            try:
                idx = np.asarray(keep)
                _save(tmp / "hashes.npy", np.asarray([hashes[i] for i in keep], HASH_DTYPE))
                for out_name, arr in arrays.items():
                    _save(tmp / f"{out_name}.npy", np.asarray(arr, np.float32)[idx])
                os.rename(tmp, folder / name)  # the shard appears whole or not at all
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            append_jsonl(folder / "log.jsonl", {"rows": len(keep), "pid": os.getpid()})
        return len(keep)

    # --- counters and listing -------------------------------------------------------------

    def encoded(self, kind: str = OUTPUTS) -> int:
        """Rows ever encoded into this store (every identity of `kind`): the store's counter."""
        return sum(
            int(r.get("rows", 0))
            for folder in self.identity_folders(kind)
            for r in read_jsonl(folder / "log.jsonl")
        )

    def passes(self, kind: str = OUTPUTS, backbone: str | None = None) -> dict[str, Any]:
        """How many times each photo (content hash) was encoded, over every identity of
        `kind` (of `backbone`): {"photos", "encodings", "max", "mean"}."""
        counts: dict[str, int] = {}
        for folder in self.identity_folders(kind):
            if backbone is not None and not folder.name.startswith(backbone + "-"):
                continue
            for h in self._index(folder):
                counts[h] = counts.get(h, 0) + 1
        total = sum(counts.values())
        return {
            "photos": len(counts),
            "encodings": total,
            "max": max(counts.values(), default=0),
            "mean": round(total / len(counts), 3) if counts else 0.0,
        }

    def identity_folders(self, kind: str = OUTPUTS) -> list[Path]:
        base = self.root / kind
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def describe(self) -> list[dict[str, Any]]:
        """One row per identity: its entries, shards and bytes on disk."""
        rows = []
        for kind in KINDS:
            for folder in self.identity_folders(kind):
                try:
                    ident = json.loads((folder / "identity.json").read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    ident = {}
                have = self._index(folder)
                rows.append(
                    {
                        "kind": kind,
                        "identity": folder.name,
                        "backbone": ident.get("backbone"),
                        "image_size": ident.get("image_size"),
                        "numerics": ident.get("numerics"),
                        "split": ident.get("split"),
                        "entries": len(have),
                        "shards": len(self._shards.get(folder, {})),
                        "bytes": folder_bytes(folder),
                    }
                )
        return rows


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)
        fh.flush()
        os.fsync(fh.fileno())


def _read_memo(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: hashes are computed again


def _set_aside(shard: Path, exc: BaseException) -> None:
    """A damaged shard is renamed out of the listing, so its photos are encoded again."""
    log.warning("ignoring damaged encoding shard %s (%s); its photos are encoded again", shard, exc)
    with contextlib.suppress(OSError):
        shard.rename(shard.with_name(f".damaged-{shard.name}"))


def _remove_orphans(folder: Path) -> None:
    """Temporary shards of killed writers (their process is gone) would fill the disk."""
    for tmp in folder.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)  # raises when no such process
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue

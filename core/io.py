"""Atomic persistence helpers: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and a crash mid-write leaves the old file intact.
JSON written here is strict (NaN and infinities become null), so any parser reads it.
Pickled caches are signed with a per-user key kept outside every shared folder: a cache
file someone else wrote is refitted, never unpickled (`save_signed_pickle`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import math
import os
import pickle
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.config import key_file

log = logging.getLogger(__name__)

SIGNATURE_MAGIC = b"SCENESEEK-HMAC-SHA256\n"


class MetadataError(ValueError):
    """A metadata file (JSON) is unreadable: not UTF-8, not JSON, or truncated."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Call `writer(fileobj)` on a temp file, fsync, then rename over `path`."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and dataclasses into JSON-friendly values."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None  # strict JSON has no NaN/Infinity
    if isinstance(obj, np.bool_):
        return bool(obj)
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    pd = sys.modules.get("pandas")  # pandas NA/NaT (only possible when pandas is loaded)
    if pd is not None and (obj is pd.NA or obj is pd.NaT):
        return None
    return str(obj)  # anything else (timestamps, enums) as its text, never a crash


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): NaN and infinities are written as null, never bare NaN."""
    return json.dumps(to_jsonable(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj) + "\n")


def read_json(path: str | Path, rebuild_hint: str = "") -> Any:
    """Parse a JSON file; a file that is not UTF-8 JSON raises MetadataError naming it (with
    `rebuild_hint`, how to recreate it). A missing file raises FileNotFoundError as usual."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not valid JSON ({exc})"
        if isinstance(exc, RecursionError):
            why = "nested too deeply"
        if not data.strip():
            why = "empty"
        hint = f"; {rebuild_hint}" if rebuild_hint else ""
        raise MetadataError(f"{path} is unreadable: {why}{hint}") from None


def file_stamp(path: str | Path) -> list[Any]:
    """[path, bytes, mtime in ns] of a file, the part of a cache key that changes when the
    file does; [path, -1, -1] for a missing file (the reader reports it)."""
    try:
        st = os.stat(path)
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one JSON line and fsync (a line is either fully there or absent on replay)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(dumps_json(record, indent=None) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[Any]:
    """Read JSON lines, ignoring a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


# --- signed pickles -------------------------------------------------------------------------------


def _signing_key(create: bool) -> bytes | None:
    path = key_file()
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    if not create:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        # O_EXCL: two processes creating it at once agree on the first one written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except FileExistsError:
        return _signing_key(create=False)
    except OSError as exc:
        log.warning("cannot create the cache signing key %s: %s", path, exc)
        return None


def save_signed_pickle(path: str | Path, obj: Any) -> bool:
    """Pickle `obj` to `path` (atomically) with an HMAC-SHA256 of the user's key in front.
    False (nothing written) when no key can be created: the caller recomputes next time."""
    key = _signing_key(create=True)
    if key is None:
        return False
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    tag = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    atomic_write_bytes(path, SIGNATURE_MAGIC + tag + b"\n" + body)
    return True


# Modules renamed since a cache file may have been written: its classes load from here.
MOVED_MODULES = {
    "core.text.mapping": "core.text.categories",
    "core.search.textmap": "core.search.semantic_map",
    "core.search.rank": "core.search.engine",
    # issue 21: modules named for what they hold
    "core.search.image_to_text": "core.search.semantic_map",
    "core.search.textonnx": "core.search.sentence",
    "core.search.labels": "core.search.imagenet_labels",
}


class _MovedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED_MODULES.get(module, module), name)


def loads_trusted(body: bytes) -> Any:
    """Unpickle bytes this user's SceneSeek wrote (signature checked by the caller), with
    classes of renamed modules found at their new place."""
    return _MovedUnpickler(io.BytesIO(body)).load()


def load_signed_pickle(path: str | Path) -> Any | None:
    """The object `save_signed_pickle` wrote, or None when the file is missing, unsigned,
    signed with another key or altered: such bytes are never unpickled."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    key = _signing_key(create=False)
    head = len(SIGNATURE_MAGIC)
    if key is None or not data.startswith(SIGNATURE_MAGIC) or len(data) < head + 65:
        log.warning("ignoring unsigned cache file %s", path)
        return None
    tag, body = data[head : head + 64], data[head + 65 :]
    if not hmac.compare_digest(tag, hmac.new(key, body, hashlib.sha256).hexdigest().encode()):
        log.warning("ignoring cache file %s: not signed by this user's key", path)
        return None
    try:
        return loads_trusted(body)  # verified: written by this user's SceneSeek
    except Exception as exc:  # an old class layout: recompute
        log.warning("ignoring stale cache file %s: %s", path, exc)
        return None

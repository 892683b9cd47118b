"""Atomic persistence helpers: write to a temporary file in the same folder, then rename.

A reader never sees a half-written file, and a crash mid-write leaves the old file intact.
JSON written here is strict (NaN and infinities become null), so any parser reads it.
Pickled caches are signed with a per-user key kept outside every shared folder: a cache
file someone else wrote is refitted, never unpickled (`save_signed_pickle`).

Guards for data from elsewhere: `read_regular` reads only regular files, up to a size
(a `/dev/zero` link named z.jpg never fills memory); `confine` follows a path an index or a
review names only inside the roots it belongs to; `refuse_inside` keeps an output folder out
of every input; `writer_lock` lets one process at a time write a folder.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import json
import logging
import math
import os
import pickle
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from core.config import key_file

log = logging.getLogger(__name__)

SIGNATURE_MAGIC = b"SCENESEEK-HMAC-SHA256\n"


class MetadataError(ValueError):
    """A metadata file (JSON) is unreadable: not UTF-8, not JSON, or truncated."""


# The largest file read whole (an image, a review, a key): a 50 MP uncompressed TIFF is 150 MB.
MAX_READ_BYTES = 256 * 1024 * 1024


class OutsideRootsError(ValueError):
    """A path named by data (an index row, a review) lies outside the folders it belongs to."""


class InsideInputError(ValueError):
    """An output folder lies inside one of the command's inputs."""


class FolderBusyError(RuntimeError):
    """Another process is writing this folder."""


class SigningKeyError(RuntimeError):
    """The cache signing key file is unusable (damaged, a folder, or inside a shared folder)."""


def open_regular(path: str | Path, limit: int = MAX_READ_BYTES) -> IO[bytes]:
    """`path` opened for reading in binary when it is a regular file of at most `limit` bytes;
    OSError otherwise. A device, a FIFO or a folder (even behind a symlink) is refused before
    anything is read: O_NONBLOCK keeps opening a FIFO from waiting for a writer, fstat says
    what was opened."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, pipe or folder)", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (`open_regular`); OSError
    otherwise."""
    with open_regular(path, limit) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise OSError(errno.EFBIG, f"larger than {limit:,} bytes", str(path))
    return data


def _forms(path: str | Path) -> set[str]:
    """The absolute path as written (`..` folded) and with symlinks resolved."""
    text = os.path.expanduser(str(path))
    return {os.path.normpath(os.path.abspath(text)), os.path.realpath(text)}


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def is_within(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """Whether `path` lies in (or is) one of `roots`, written or resolved: a `..` cannot
    climb out, and neither can a symlink the path goes through (its target must be inside too,
    unless the path as written already is)."""
    outer = [form for root in roots for form in _forms(root)]
    return any(_within(p, r) for p in _forms(path) for r in outer)


def confine(path: str | Path, roots: Iterable[str | Path], what: str = "the index") -> Path:
    """`path` (a string from data: an index row, a review) when it lies inside one of `roots`;
    OutsideRootsError otherwise. Data from elsewhere must not make a command read, copy or
    link /etc/shadow."""
    roots = [r for r in roots if str(r)]
    if not roots or not is_within(path, roots):
        raise OutsideRootsError(
            f"{path}: outside the folders {what} was built from "
            f"({', '.join(str(r) for r in roots) or 'none recorded'}); not followed"
        )
    return Path(path)


def refuse_inside(out: str | Path, inputs: Iterable[str | Path | None], option: str) -> None:
    """InsideInputError when the folder `out` (given as `option`) lies inside an input folder:
    written there, it would become part of that input (a seventh class, an indexed index)."""
    for src in inputs:
        if src is None or "://" in str(src) or not os.path.isdir(os.path.expanduser(str(src))):
            continue
        if is_within(out, [src]):
            raise InsideInputError(
                f"{option} {out} is inside the input {src}; write it somewhere else, or it "
                "becomes part of what it was made from"
            )


@contextlib.contextmanager
def writer_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold `folder`'s one-writer lock (an OS file lock the kernel drops when the holder dies)
    for the block; FolderBusyError naming the holder's PID when another process has it."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderBusyError(f"{folder} is a file, not a {what} folder")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    pid_file, lock_name = folder / ".writer.pid", ".writer.lock"
    lock = FileLock(str(folder / lock_name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            pid = pid_file.read_text(encoding="utf-8").strip() or "?"
        except OSError:
            pid = "?"
        raise FolderBusyError(
            f"{what} {folder} is being written by PID {pid}; wait for it to finish and run again"
        ) from None
    try:
        atomic_write_text(pid_file, f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
        # A command that failed before writing leaves no folder it made only to lock it.
        if created and [p.name for p in folder.iterdir()] == [lock_name]:
            with contextlib.suppress(OSError):
                (folder / lock_name).unlink()
                folder.rmdir()


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
    data = read_regular(path)  # a review named /dev/zero must not fill memory
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


def _check_key_place(path: Path) -> None:
    """A key inside an index or run folder travels with it when the folder is shared (and
    a folder from elsewhere may bring its own key): refuse it."""
    for folder in path.parents:
        for marker, kind in (("index.json", "an index"), ("checkpoint_last.pt", "a run")):
            if (folder / marker).exists():
                raise SigningKeyError(
                    f"the cache signing key {path} is inside {kind} folder ({folder}), which "
                    "may be shared; set SCENESEEK_KEY_FILE to a file outside it"
                )


def _signing_key(create: bool) -> bytes | None:
    """The user's key; None when there is none (and `create` is False or it cannot be made).
    A key file that exists but is unusable is a SigningKeyError, never a silent "no key":
    the caches it signs (the keyword model) would be dropped without a word."""
    path = key_file()
    _check_key_place(path)
    if os.path.lexists(path):
        try:
            key = read_regular(path, 4096)
        except OSError as exc:
            raise SigningKeyError(
                f"the cache signing key {path} is unreadable ({exc.strerror or exc}); "
                "delete it (a new one is made) or set SCENESEEK_KEY_FILE"
            ) from None
        if len(key) < 32:
            raise SigningKeyError(
                f"the cache signing key {path} is damaged ({len(key)} bytes, at least 32 "
                "needed); delete it (a new one is made) or set SCENESEEK_KEY_FILE"
            )
        return key
    if not create:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        # Written whole beside it, then linked in: link() fails when the name exists, so two
        # processes creating it at once agree on the first, and no one reads a half key.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
            os.chmod(tmp, 0o600)
            os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return key
    except FileExistsError:
        return _signing_key(create=False)
    except OSError as exc:
        log.warning("cannot create the cache signing key %s: %s", path, exc)
        return None


def check_signing_key(shared: Iterable[str | Path] = ()) -> None:
    """SigningKeyError, before any work, when the key file is damaged or lies inside an index
    or run folder or one of `shared` (the folder a command is about to write)."""
    path = key_file()
    for folder in shared:
        if "://" not in str(folder) and is_within(path, [folder]):
            raise SigningKeyError(
                f"the cache signing key {path} is inside {folder}, which may be shared; set "
                "SCENESEEK_KEY_FILE to a file outside it"
            )
    _signing_key(create=False)


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

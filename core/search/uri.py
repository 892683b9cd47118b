"""Image sources that are not local folders: any URI pyarrow's filesystems understand
(s3://, gs://, hdfs://, file://).

A URI root is listed with `pyarrow.fs` (no local mount needed), and its files keep their
full URIs as paths, so the index records where each image really lives. Split and class
labels follow the local layout rules (core.data.dataset): `<split>/<class>/file`, Kaggle's
doubled `seg_train/seg_train/<class>/file`, or `<class>/file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from core.data.dataset import IGNORED_NAMES, IMAGE_EXTENSIONS, SPLIT_ALIASES


def is_uri(source: object) -> bool:
    return "://" in str(source)


_FILESYSTEMS: dict[str, tuple[object, int]] = {}


def _split_uri(uri: str) -> tuple[object, str]:
    """(filesystem, path inside it); one filesystem per scheme + host, since connecting to
    an object store for every file would dominate the cost of reading it."""
    from pyarrow import fs

    scheme, _, rest = uri.partition("://")
    key = f"{scheme}://{rest.split('/', 1)[0]}"
    if key not in _FILESYSTEMS:
        filesystem, path = fs.FileSystem.from_uri(uri)
        _FILESYSTEMS[key] = (filesystem, len(rest) - len(path))  # s3: bucket/key; hdfs: /key
    filesystem, offset = _FILESYSTEMS[key]
    return filesystem, rest[offset:]


def read_path_bytes(path: str) -> bytes:
    """A file's bytes, from a local path or a URI."""
    from core.io import read_regular  # regular files only, bounded: never /dev/zero

    return read_bytes(path) if is_uri(path) else read_regular(path)


def file_sha256(path: str) -> str:
    """Content hash of a local file or URI ("" when it cannot be read: then skipped as
    unreadable). Both indexing engines hash with this."""
    import hashlib

    try:
        return hashlib.sha256(read_path_bytes(path)).hexdigest()
    except OSError:
        return ""


def read_bytes(uri: str) -> bytes:
    """The bytes of one file given by URI (raises OSError when it cannot be read)."""
    filesystem, path = _split_uri(uri)
    try:
        with filesystem.open_input_stream(path) as fh:
            return fh.read()
    except FileNotFoundError:
        raise
    except Exception as exc:  # pyarrow raises its own error types for remote failures
        raise OSError(str(exc)) from exc


@dataclass(frozen=True)
class UriFile:
    path: str  # full URI
    split: str
    label: str


def _alias_to_split() -> dict[str, str]:
    return {alias: split for split, aliases in SPLIT_ALIASES.items() for alias in aliases}


def list_uri_images(root: str) -> list[UriFile]:
    """Every image under a URI root, with split and class labels from the folder layout."""
    from pyarrow import fs

    root = root.rstrip("/")
    filesystem, base = fs.FileSystem.from_uri(root)
    info = filesystem.get_file_info(base)
    if info.type != fs.FileType.Directory:
        raise FileNotFoundError(f"{root}: no such folder")
    selector = fs.FileSelector(base, recursive=True)
    rels = []
    for f in filesystem.get_file_info(selector):
        if f.type != fs.FileType.File:
            continue
        rel = PurePosixPath(f.path).relative_to(PurePosixPath(base))
        if rel.name in IGNORED_NAMES or rel.name.startswith("."):
            continue
        if rel.suffix.lower() in IMAGE_EXTENSIONS:
            rels.append(rel)
    splits = _alias_to_split()
    has_splits = any(len(r.parts) > 1 and r.parts[0].lower() in splits for r in rels)
    out = []
    for rel in sorted(rels):
        dirs = list(rel.parts[:-1])
        split, label = "", dirs[0] if dirs else ""
        if has_splits:  # as find_dataset: only files under split folders count
            if not dirs or dirs[0].lower() not in splits:
                continue
            alias, split = dirs[0].lower(), splits[dirs[0].lower()]
            dirs = dirs[1:]
            if dirs and dirs[0].lower() == alias:  # Kaggle's doubled folder
                dirs = dirs[1:]
            if split == "pred":
                label = ""
            elif not dirs:  # a file outside a class folder: ignored locally too
                continue
            else:
                label = dirs[0]
        out.append(UriFile(f"{root}/{rel.as_posix()}", split, label))
    return out

"""The files an index is made of: every image under a root (a local folder or a URI), its
content hash, and the captions that go with it by file name.

Class folders (and Intel-style split folders) become each file's label and split, by the
layout rules of core.data.dataset (core.search.uri for object storage)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.search.index_format import SearchIndexError


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


HASH_REPORT_EVERY = 64  # files between two progress reports while hashing


def hash_files(
    paths: Sequence[str],
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Content hashes of `paths` in order ("" = unreadable), `progress(done, total)` as they
    come (hashing a large folder on a slow disk takes minutes: it is counted, not silent)."""
    out: list[str] = []
    with ThreadPoolExecutor(workers) as pool:
        for sha in pool.map(file_sha256, paths):
            out.append(sha)
            if progress and (len(out) % HASH_REPORT_EVERY == 0 or len(out) == len(paths)):
                progress(len(out), len(paths))
    return out


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


def file_name(path: str) -> str:
    """A file's name, for a local path or a URI (captions are keyed by file name)."""
    return path.rstrip("/").rsplit("/", 1)[-1] if "://" in path else Path(path).name

"""The image index's on-disk contract, in one place: a LanceDB table named `TABLE` in the
index folder (or object-store URI) and `index.json` (`META_FILE`) beside it, of format
`INDEX_VERSION`; the columns a commit writes (`schema`), what full-text search sees
(`tag_text`), and the one reader of index.json (`read_meta`, local folder or URI).

Writers (core.search.writer, maintenance, review_index) and the query side (table, store)
import this module; it imports nothing of core.search but `uri`, so no circle runs through it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.search.uri import is_uri

log = logging.getLogger(__name__)

TABLE = "images"
META_FILE = "index.json"
INDEX_VERSION = 2  # 2: semantic, class_probs and derived columns written at index time
BUILD_HINT = "build one with `python -m core index --images DIR --index INDEX_DIR`"
REBUILD = "re-run `python -m core index --images DIR --index {index}` to rebuild it"


class SearchIndexError(ValueError):
    """The index folder is missing, empty or was built with different settings."""


def meta_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / META_FILE


def read_meta(location: str | Path) -> dict:
    """index.json of the index at `location` (a local folder or a URI), checked to be a JSON
    object; every failure is one SearchIndexError that says what to do."""
    location = str(location)
    if is_uri(location):
        from core.search.uri import read_bytes

        where = f"{location.rstrip('/')}/{META_FILE}"
        try:
            raw = read_bytes(where)
        except (FileNotFoundError, OSError) as exc:
            raise SearchIndexError(f"{location}: not an index (no {META_FILE}: {exc})") from exc
    else:
        if not Path(location).is_dir():
            raise SearchIndexError(f"{location}: not an index (no such folder)")
        where = str(meta_path(location))
        if not Path(where).exists():
            raise SearchIndexError(f"{location}: not an index (no {META_FILE}); {BUILD_HINT}")
        raw = Path(where).read_bytes()
    rebuild = REBUILD.format(index=location)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        why = "empty" if not raw.strip() else why
        raise SearchIndexError(f"{where} is unreadable ({why}); {rebuild}") from None
    if not isinstance(meta, dict):
        raise SearchIndexError(f"{where} is not an index description (a JSON object); {rebuild}")
    return meta


def has_table(db: Any) -> bool:
    return TABLE in db.list_tables().tables


def open_table(index_dir: str | Path) -> Any:
    """The index's table, opened for writing (index.json checked first)."""
    import lancedb

    read_meta(index_dir)
    db = lancedb.connect(str(index_dir))
    if not has_table(db):
        raise SearchIndexError(f"{index_dir}: the index holds no images yet")
    return db.open_table(TABLE)


def schema(feature_dim: int, semantic_dim: int | None = None) -> pa.Schema:
    """The columns a commit writes. `semantic` only when the encoder has its own image-text
    space (CLIP); otherwise the table gains it empty (`upgrade`) and derive fills it, as it
    adds `class_probs` and the category columns."""
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


def upgrade(tbl: Any, semantic_dim: int) -> None:
    """An index of an older format gains the columns of this one (filled by derive)."""
    if "semantic" not in tbl.schema.names:
        log.info("upgrading the index: adding the semantic column")
        tbl.add_columns(pa.field("semantic", pa.list_(pa.float32(), semantic_dim)))


# The full-text column's tokens (letters only, so the tokenizer keeps each one whole): a query
# word matches an ImageNet label only as the whole label or its head noun (never `beach` in
# `beach wagon`), and a category only through the ImageNet-groups table.
LABEL_TOKEN = "xlab"  # + the whole label's letters: "xlabbeachwagon"
HEAD_TOKEN = "xhead"  # + the label's head noun (its last word): "xheadwagon"
GROUP_TOKEN = "xgrp"  # + a category the groups table gives the label: "xgrpsea"
TEXT_FORMAT = 2  # index.json's `text_format`: a change rewrites the column


def token(prefix: str, text: str) -> str:
    """One full-text token for a label, head noun or category ('beach wagon' -> 'xlabbeachwagon')."""
    return prefix + "".join(re.findall(r"[^\W\d_]+", text.lower()))


def tag_text(
    category: str,
    labels: Sequence[str],
    captions: Sequence[str],
    groups: Sequence[str] = (),
) -> str:
    """What full-text search sees: each ImageNet label as a whole-label and a head-noun token,
    the categories of the labels the groups table places, then the captions' words. The
    predicted category is not here: the keyword mode reads it from `class_probs`."""
    del category  # kept in the signature: every writer passes it
    tags = [t for lab in labels for t in (token(LABEL_TOKEN, lab), head_token(lab)) if t]
    tags += [token(GROUP_TOKEN, g) for g in groups]
    return " | ".join(x for x in [" ".join(dict.fromkeys(tags)), *captions] if x)


def head_token(label: str) -> str:
    words = re.findall(r"[^\W\d_]+", label.lower())
    return HEAD_TOKEN + words[-1] if words else ""


def quoted(paths: Sequence[str]) -> str:
    """`'a', 'b'` for a SQL `IN (...)` filter."""
    return ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)


def delete_paths(tbl: Any, paths: Sequence[str]) -> None:
    """Delete the rows of `paths` (a few filter expressions, each kept small)."""
    for k in range(0, len(paths), 500):
        tbl.delete(f"path IN ({quoted(paths[k : k + 500])})")

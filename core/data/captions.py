"""Reading caption files: format auto-detected, malformed rows counted with line numbers.

Formats understood (`CaptionSet.format`):
  flickr8k-csv     Flickr8k/Kaggle `captions.txt`: `image,caption` CSV with a header
  flickr30k-pipe   Kaggle Flickr30k `results.csv`: `image_name| comment_number| comment`
  flickr8k-token   `Flickr8k.token.txt`: `<image>#<n><TAB><caption>`
  plain            one caption per line, no image ids

The file is streamed line by line (a 100 MB file never sits in memory as one string). Bad
rows are kept in `CaptionSet.malformed` with their line number and reason; they never stop
the read. Empty and binary files raise `CaptionFileError` with a clear message; text that is
not UTF-8 is re-read with a fallback encoding and `CaptionSet.notes` says so.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.config import CAPTIONS_ENV, captions_env
from core.io import open_regular

log = logging.getLogger(__name__)

FALLBACK_ENCODING = "cp1252"  # what Windows editors save; bytes it lacks fall back to latin-1
SNIFF_BYTES = 64 * 1024
TOKEN_RE = re.compile(r"^(?P<image>[^\s#]+)#(?P<n>\d+)\t(?P<caption>.*)$")
IMAGE_NAME_RE = re.compile(r"^[^\s,|]+\.(jpe?g|png|gif|bmp|webp)$", re.IGNORECASE)
FORMATS = ("flickr8k-csv", "flickr30k-pipe", "flickr8k-token", "plain")
EXPECTED_FORMATS = (
    "expected a Flickr8k captions.txt (header `image,caption`), a Flickr30k results.csv "
    "(header `image_name| comment_number| comment`), Flickr8k.token.txt "
    "(`<image>#<n><TAB><caption>`) or one caption per line"
)
FIELD_SPLIT_RE = re.compile(r"[,|\t;#]")
HEADER_SAMPLE_ROWS = 20


class CaptionFileError(ValueError):
    """The file cannot be read as captions at all (missing, empty, binary)."""


@dataclass(frozen=True)
class Caption:
    image: str | None  # None for plain text
    text: str
    line: int  # 1-based line number in the file


@dataclass(frozen=True)
class MalformedRow:
    line: int
    reason: str
    text: str  # the raw row, shortened


@dataclass
class CaptionSet:
    source: str
    format: str
    format_reason: str
    encoding: str
    captions: list[Caption]
    malformed: list[MalformedRow] = field(default_factory=list)
    n_lines: int = 0
    n_blank: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.captions]

    @property
    def images(self) -> list[str | None]:
        return [c.image for c in self.captions]

    @property
    def n_images(self) -> int:
        return len({c.image for c in self.captions if c.image})

    def summary(self) -> dict:
        """Plain facts for the CLI's JSON and the dashboard."""
        return {
            "source": self.source,
            "format": self.format,
            "format_reason": self.format_reason,
            "encoding": self.encoding,
            "n_lines": self.n_lines,
            "n_captions": len(self.captions),
            "n_images": self.n_images,
            "n_blank": self.n_blank,
            "n_malformed": len(self.malformed),
            "malformed": [
                {"line": m.line, "reason": m.reason, "text": m.text} for m in self.malformed[:50]
            ],
            "notes": list(self.notes),
        }


def resolve_captions_path(
    explicit: str | Path | None, data_dir: str | Path | None
) -> tuple[Path | None, str]:
    """(captions file, why): explicit choice, else $SCENESEEK_CAPTIONS, else
    <data folder>/../flickr8k/captions.txt, else <data folder>/captions.txt; None if none
    of those exists."""
    if explicit:
        return Path(explicit).expanduser(), "chosen explicitly"
    env = captions_env()
    if env:
        return env, f"from ${CAPTIONS_ENV}"
    if data_dir is not None:
        for cand in (
            Path(data_dir).parent / "flickr8k" / "captions.txt",
            Path(data_dir) / "captions.txt",
        ):
            if cand.is_file():
                return cand, "found beside the data folder"
    return None, "no captions file found"


def photo_path(captions_file: str | Path | None, image: str | None) -> Path | None:
    """`<captions file folder>/Images/<image>` when that photo exists."""
    if not captions_file or not image:
        return None
    p = Path(captions_file).parent / "Images" / image
    return p if p.is_file() else None


def upload_problem(size: int, name: str, max_mb: int) -> str | None:
    """Why an upload of `size` bytes is refused (too large, empty), or None."""
    if size > max_mb * 1024 * 1024:
        return (
            f"{name} is {size / 1024 / 1024:.0f} MB; the limit here is {max_mb} MB. "
            f"Run `python -m core keywords --captions {name} --json` on it instead (the CLI "
            "streams files of any size)."
        )
    if size == 0:
        return f"{name} is empty: no captions to read."
    return None


# --- detection -------------------------------------------------------------------------------


def detect_format(first_line: str) -> tuple[str, str, bool]:
    """(format, reason, first line is a header) from the first non-blank line."""
    head = first_line.strip().lstrip("\ufeff")
    low = head.lower().replace(" ", "")
    if low.startswith("image,caption"):
        return "flickr8k-csv", "header `image,caption`", True
    if low.startswith("image_name|"):
        return "flickr30k-pipe", "header `image_name| comment_number| comment`", True
    if TOKEN_RE.match(head):
        return "flickr8k-token", "rows look like `<image>#<n><TAB><caption>`", False
    image, sep, _ = head.partition(",")
    if sep and IMAGE_NAME_RE.match(image):
        return "flickr8k-csv", "rows look like `<image>.jpg,<caption>` (no header)", False
    image, sep, _ = head.partition("|")
    if sep and IMAGE_NAME_RE.match(image.strip()):
        return "flickr30k-pipe", "rows look like `<image>.jpg| <n>| <caption>` (no header)", False
    return "plain", "no image ids found: one caption per line", False


# --- row parsers: (image, caption) or a reason string -----------------------------------------


def _parse_csv(line: str) -> tuple[str | None, str] | str:
    image, sep, rest = line.partition(",")
    if not sep:
        return "no comma: expected `image,caption`"
    image = image.strip()
    if not IMAGE_NAME_RE.match(image):
        return f"first field {image[:40]!r} is not an image file name"
    rest = rest.strip()
    if rest.startswith('"'):
        # A quoted caption may itself hold commas or doubled quotes.
        try:
            rest = next(csv.reader([rest]))[0]
        except (csv.Error, StopIteration):
            return "unbalanced quotes"
    if not rest.strip():
        return "empty caption"
    return image, rest.strip()


def _parse_pipe(line: str) -> tuple[str | None, str] | str:
    parts = line.split("|", 2)
    if len(parts) < 3:
        return f"{len(parts)} field(s); expected `image_name| comment_number| comment`"
    image, number, caption = (p.strip() for p in parts)
    if not IMAGE_NAME_RE.match(image):
        return f"first field {image[:40]!r} is not an image file name"
    if not number.isdigit():
        return f"comment_number {number[:20]!r} is not a number"
    if not caption:
        return "empty caption"
    return image, caption


def _parse_token(line: str) -> tuple[str | None, str] | str:
    m = TOKEN_RE.match(line)
    if not m:
        return "expected `<image>#<n><TAB><caption>`"
    if not m["caption"].strip():
        return "empty caption"
    return m["image"], m["caption"].strip()


def _parse_plain(line: str) -> tuple[str | None, str] | str:
    return None, line.strip()


PARSERS = {
    "flickr8k-csv": _parse_csv,
    "flickr30k-pipe": _parse_pipe,
    "flickr8k-token": _parse_token,
    "plain": _parse_plain,
}


# --- reading ---------------------------------------------------------------------------------


def _check_header(head: bytes) -> None:
    """Refuse a table whose header SceneSeek does not know (`filename,text`): its rows
    start with image file names, and reading it as plain captions would analyse the file
    names as text."""
    lines = [ln for ln in head.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    if len(head) >= SNIFF_BYTES:
        lines = lines[:-1]  # the last sniffed line may be cut at the sniff limit
    if len(lines) < 2 or detect_format(lines[0])[0] != "plain":
        return
    rows = lines[1 : 1 + HEADER_SAMPLE_ROWS]
    with_names = sum(
        any(IMAGE_NAME_RE.match(f.strip()) for f in FIELD_SPLIT_RE.split(row)) for row in rows
    )
    if with_names * 2 > len(rows):
        header = lines[0].strip().lstrip("\ufeff")[:60]
        raise CaptionFileError(
            f"line 1 `{header}` is not a header SceneSeek knows, yet the rows hold image file "
            f"names; {EXPECTED_FORMATS}"
        )


def _check_binary(head: bytes) -> None:
    if not head:
        raise CaptionFileError("the file is empty: no captions to read")
    nul = head.find(b"\x00")
    if nul >= 0:
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise CaptionFileError(
                "the file is UTF-16 text; save it as UTF-8 (one caption per line or a "
                "captions.txt CSV) and try again"
            )
        raise CaptionFileError(
            f"the file looks binary (a NUL byte at byte {nul}), not text; expected a captions "
            "text file (captions.txt, results.csv, Flickr8k.token.txt or one caption per line)"
        )


def _lines(fh: IO[bytes], encoding: str) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without newline); raises UnicodeDecodeError for utf-8."""
    errors = "strict" if encoding.startswith("utf") else "replace"
    for i, raw in enumerate(fh, start=1):
        text = raw.decode(encoding, errors=errors)
        yield i, text.rstrip("\r\n")


def read_captions(
    source: str | Path | bytes | IO[bytes],
    name: str | None = None,
    max_captions: int | None = None,
) -> CaptionSet:
    """Read a caption file in any supported format. `source` is a path, bytes or a binary
    file object (e.g. a Streamlit upload); `name` labels it in messages."""
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            if path.is_symlink():
                raise CaptionFileError(f"{path}: a broken symlink or symlink loop, not a file")
            raise CaptionFileError(f"no such file: {path}")
        if path.is_dir():
            raise CaptionFileError(f"{path} is a folder; expected a captions file")
        try:
            fh = open_regular(path)  # never a FIFO that blocks or a device that never ends
        except OSError as exc:
            raise CaptionFileError(f"{path}: {exc.strerror or exc}") from None
        with fh:
            return _read_stream(fh, name or str(path), max_captions)
    if isinstance(source, bytes | bytearray):
        return _read_stream(io.BytesIO(bytes(source)), name or "<bytes>", max_captions)
    return _read_stream(source, name or getattr(source, "name", "<upload>"), max_captions)


def _read_stream(fh: IO[bytes], name: str, max_captions: int | None) -> CaptionSet:
    head = fh.read(SNIFF_BYTES)
    _check_binary(head)
    _check_header(head)
    notes: list[str] = []
    encoding = "utf-8-sig"
    try:
        fh.seek(0)
        return _parse(fh, name, encoding, notes, max_captions)
    except UnicodeDecodeError as exc:
        bad_line = _line_of_bad_byte(fh, exc)
        notes.append(
            f"not valid UTF-8 (first bad byte on line {bad_line}); read as {FALLBACK_ENCODING} "
            "instead — check accented letters"
        )
        log.warning("%s: %s", name, notes[-1])
        fh.seek(0)
        return _parse(fh, name, FALLBACK_ENCODING, notes, max_captions)


def _line_of_bad_byte(fh: IO[bytes], exc: UnicodeDecodeError) -> int:
    fh.seek(0)
    for i, raw in enumerate(fh, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return -1


def _parse(
    fh: IO[bytes], name: str, encoding: str, notes: list[str], max_captions: int | None
) -> CaptionSet:
    captions: list[Caption] = []
    malformed: list[MalformedRow] = []
    fmt = reason = ""
    parser = None
    n_lines = n_blank = 0
    for lineno, line in _lines(fh, encoding):
        n_lines = lineno
        if not line.strip():
            n_blank += 1
            continue
        if parser is None:
            fmt, reason, has_header = detect_format(line)
            parser = PARSERS[fmt]
            if has_header:
                continue
            line = line.lstrip("\ufeff")
        if max_captions is not None and len(captions) >= max_captions:
            notes.append(f"stopped after {max_captions} captions (line {lineno})")
            break
        parsed = parser(line)
        if isinstance(parsed, str):
            malformed.append(MalformedRow(lineno, parsed, line[:200]))
        else:
            captions.append(Caption(parsed[0], parsed[1], lineno))
    if parser is None:
        raise CaptionFileError("the file holds only blank lines: no captions to read")
    if malformed:
        log.warning(
            "%s: %d malformed rows (first on line %d)", name, len(malformed), malformed[0].line
        )
    if not captions:
        notes.append("no usable captions: every row was malformed or a header")
    return CaptionSet(
        source=name,
        format=fmt,
        format_reason=reason,
        encoding="utf-8" if encoding == "utf-8-sig" else encoding,
        captions=captions,
        malformed=malformed,
        n_lines=n_lines,
        n_blank=n_blank,
        notes=notes,
    )

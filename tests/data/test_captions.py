"""Caption readers: every format, malformed rows with line numbers, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.captions import CaptionFileError, detect_format, read_captions
from tests.helpers import require_shared


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_flickr8k_csv_with_quotes_and_malformed_rows(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "captions.txt",
        "image,caption\n"
        "1000_a.jpg,A dog runs on the beach .\n"
        '1000_a.jpg,"A dog , wet , runs by the ""sea"" ."\n'
        "no comma on this line\n"
        "\n"
        "1001_b.jpg,\n"
        "1001_b.jpg,Two children climb a snowy hill .\n",
    )
    cs = read_captions(f)
    assert cs.format == "flickr8k-csv" and cs.encoding == "utf-8"
    assert cs.texts == [
        "A dog runs on the beach .",
        'A dog , wet , runs by the "sea" .',
        "Two children climb a snowy hill .",
    ]
    assert cs.images == ["1000_a.jpg", "1000_a.jpg", "1001_b.jpg"]
    assert [(m.line, m.reason) for m in cs.malformed] == [
        (4, "no comma: expected `image,caption`"),
        (6, "empty caption"),
    ]
    assert cs.n_blank == 1 and cs.n_lines == 7 and cs.n_images == 2
    assert [c.line for c in cs.captions] == [2, 3, 7]
    s = cs.summary()
    assert s["n_captions"] == 3 and s["n_malformed"] == 2 and s["malformed"][0]["line"] == 4


def test_flickr30k_pipe(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "results.csv",
        "image_name| comment_number| comment\n"
        "1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n"
        "1000092795.jpg| 1| Two young , White males are outside near many bushes .\n"
        "1000092795.jpg| x| bad number\n"
        "1000092795.jpg  4 A row without separators\n"
        "10002456.jpg| 0| Several men in hard hats are operating a giant pulley system .\n",
    )
    cs = read_captions(f)
    assert cs.format == "flickr30k-pipe"
    assert len(cs.captions) == 3
    assert cs.captions[1].text == "Two young , White males are outside near many bushes ."
    assert [m.line for m in cs.malformed] == [4, 5]
    assert "comment_number" in cs.malformed[0].reason
    assert "1 field(s)" in cs.malformed[1].reason


def test_flickr8k_token(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "Flickr8k.token.txt",
        "1000268201_693b08cb0e.jpg#0\tA child in a pink dress is climbing up stairs .\n"
        "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
        "broken line without tab\n",
    )
    cs = read_captions(f)
    assert cs.format == "flickr8k-token"
    assert cs.images == ["1000268201_693b08cb0e.jpg"] * 2
    assert cs.captions[1].text == "A girl going into a wooden building ."
    assert [m.line for m in cs.malformed] == [3]


def test_plain_text_and_bom(tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_bytes("\ufeffA lighthouse on a rocky shore\n\n  Snow on the peaks  \r\n".encode())
    cs = read_captions(f)
    assert cs.format == "plain" and cs.images == [None, None]
    assert cs.texts == ["A lighthouse on a rocky shore", "Snow on the peaks"]
    assert cs.n_blank == 1 and not cs.malformed


def test_csv_without_header_detected() -> None:
    fmt, reason, header = detect_format("1000_a.jpg,A dog runs .")
    assert (fmt, header) == ("flickr8k-csv", False) and "no header" in reason


def test_empty_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "empty.txt", "")
    with pytest.raises(CaptionFileError, match="empty"):
        read_captions(f)


def test_blank_lines_only(tmp_path: Path) -> None:
    with pytest.raises(CaptionFileError, match="only blank lines"):
        read_captions(_write(tmp_path / "b.txt", "\n  \n\n"))


def test_binary_file(tmp_path: Path) -> None:
    f = tmp_path / "photo.txt"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(CaptionFileError, match="binary"):
        read_captions(f)


def test_utf16_file_is_explained(tmp_path: Path) -> None:
    f = tmp_path / "u16.txt"
    f.write_bytes("A dog on the beach\n".encode("utf-16"))
    with pytest.raises(CaptionFileError, match="UTF-16"):
        read_captions(f)


def test_latin1_falls_back_with_a_note(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "latin.txt",
        "image,caption\n1_a.jpg,A dog runs .\n1_a.jpg,A café by the street .\n",
        encoding="latin-1",
    )
    cs = read_captions(f)
    assert cs.encoding == "cp1252"
    assert cs.texts[1] == "A café by the street ."
    assert len(cs.notes) == 1 and "line 3" in cs.notes[0] and "UTF-8" in cs.notes[0]


def test_header_only_is_reported(tmp_path: Path) -> None:
    cs = read_captions(_write(tmp_path / "h.txt", "image,caption\n"))
    assert cs.captions == [] and "no usable captions" in cs.notes[0]


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CaptionFileError, match="no such file"):
        read_captions(tmp_path / "nope.txt")
    with pytest.raises(CaptionFileError, match="folder"):
        read_captions(tmp_path)


def test_bytes_upload_and_cap(tmp_path: Path) -> None:
    data = b"image,caption\n" + b"".join(b"%d.jpg,caption %d\n" % (i, i) for i in range(100))
    cs = read_captions(data, name="upload.csv", max_captions=10)
    assert cs.source == "upload.csv" and len(cs.captions) == 10
    assert "stopped after 10 captions" in cs.notes[0]


def test_real_flickr8k_subset(tmp_path: Path) -> None:
    src = require_shared("flickr8k", "captions.txt")
    with open(src, encoding="utf-8") as fh:
        lines = [next(fh) for _ in range(2001)]
    f = tmp_path / "captions.txt"
    f.write_text("".join(lines), encoding="utf-8")
    cs = read_captions(f)
    assert cs.format == "flickr8k-csv" and len(cs.captions) == 2000 and not cs.malformed
    assert all(im and im.endswith(".jpg") for im in cs.images)

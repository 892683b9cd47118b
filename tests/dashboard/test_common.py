"""dashboard.common: the app's one progress bar and the folder stamp its loaders key on."""

from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest


def _progress_script() -> None:
    from dashboard.common import progress

    progress("Checking images")(3, 4)
    progress("Auditing").stage("Features", 2, 8)
    progress("Decoding").labelled("Decoding test images")(9, 9)
    progress("Fitting").note("Fitting 200 components…", 0.5)
    with progress("Indexing") as bar:  # cleared on leaving the block
        bar(1, 2)


def test_progress_bar_text_and_fraction_for_each_callback_shape() -> None:
    at = AppTest.from_function(_progress_script).run()
    assert not at.exception
    shown = [(e.proto.value, e.proto.text) for e in at.get("progress")]
    assert shown == [
        (75, "Checking images… 3/4"),
        (25, "Features… 2/8"),
        (100, "Decoding test images… 9/9"),
        (50, "Fitting 200 components…"),
    ]


def test_folder_stamp_follows_the_newest_class_folder(tmp_path: Path) -> None:
    from dashboard.common import folder_stamp

    for i, sub in enumerate(("train/sea", "train/forest", "test/sea")):
        (tmp_path / sub).mkdir(parents=True)
        os.utime(tmp_path / sub, (1_000 + i, 1_000 + i))
    for split in ("train", "test"):
        os.utime(tmp_path / split, (900, 900))
    os.utime(tmp_path, (900, 900))
    assert folder_stamp(tmp_path) == 1_002
    assert folder_stamp(tmp_path / "absent") == 0

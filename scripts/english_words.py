"""Write core/resources/english_words.txt: the words of the Flickr8k captions of the official
training images (two uses at least), the English vocabulary the query language note reads.
The development and test images' captions are left out so that tests can check the note on
captions whose words were not collected. Run: python scripts/english_words.py DATA_DIR."""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

WORD = re.compile(r"[^\W\d_]+")


def main(data: Path) -> None:
    train = set((data / "flickr8k" / "Flickr_8k.trainImages.txt").read_text().split())
    counts: Counter[str] = Counter()
    with open(data / "flickr8k" / "captions.txt", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["image"] in train:
                counts.update(WORD.findall(row["caption"].lower()))
    words = sorted(w for w, n in counts.items() if n >= 2 and len(w) > 1)
    out = Path(__file__).resolve().parents[1] / "core" / "resources" / "english_words.txt"
    out.write_text("\n".join(words) + "\n", encoding="utf-8")
    sys.stdout.write(f"{len(words)} words -> {out}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Query analysis without an index: the language note on real captions and other languages."""

from __future__ import annotations

import csv

import pytest

from core.config import shared_data_dir
from core.search.query import looks_foreign
from core.text.preprocess import words

OTHER_LANGUAGES = (
    "Una playa llena de turistas y sombrillas",  # Spanish
    "La plage au coucher du soleil",  # French
    "Der Wald am See im Winter",  # German
    "Il lago tra le montagne",  # Italian
    "Een huis aan de zee",  # Dutch
    "Uma praia com muitas pessoas",  # Portuguese
    "Schneebedeckte Berggipfel",  # German, no function word
    "森の中の湖",  # Japanese
    "Лес у озера",  # Russian
)


def test_the_language_note_never_fires_on_a_thousand_english_captions() -> None:
    # captions of the Flickr8k test images: the English word list was collected from the
    # training images' captions only (scripts/english_words.py)
    data = shared_data_dir() / "flickr8k"
    test = set((data / "Flickr_8k.testImages.txt").read_text().split())
    with open(data / "captions.txt", newline="", encoding="utf-8") as fh:
        caps = [r["caption"] for r in csv.DictReader(fh) if r["image"] in test][:1000]
    assert len(caps) == 1000
    flagged = [c for c in caps if looks_foreign(c, words(c))]
    assert flagged == []


@pytest.mark.parametrize("text", OTHER_LANGUAGES)
def test_the_language_note_fires_on_other_languages(text: str) -> None:
    assert looks_foreign(text, words(text))


@pytest.mark.parametrize("text", ["snowy mountain peaks", "sunset skyline", "waves on a beach"])
def test_short_english_queries_without_function_words_are_english(text: str) -> None:
    assert not looks_foreign(text, words(text))

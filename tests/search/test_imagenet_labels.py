"""Label texts of the semantic mode's label path: names, prompts, WordNet glosses and parents."""

from __future__ import annotations

import pytest

from core.search import imagenet_labels as labels
from core.vision.backbones import imagenet_classes


def test_glosses_ship_with_timm_and_follow_model_order() -> None:
    names = imagenet_classes()
    texts, used = labels.label_texts(names, "gloss")
    assert used == "gloss" and len(texts) == 1000
    assert texts[0].startswith("tench: ") and "fish" in texts[0]
    assert texts[978].startswith("seashore: ") and "sea" in texts[978].split(":", 1)[1]
    assert labels.label_texts(names, "name") == (names, "name")
    assert labels.label_texts(names, "prompt")[0][0] == "a photo of a tench"
    with pytest.raises(ValueError, match="unknown label text"):
        labels.label_texts(names, "poetry")


def test_hypernyms_need_wordnet_and_fall_back_to_glosses(monkeypatch) -> None:
    names = imagenet_classes()
    monkeypatch.setattr(labels, "wordnet_reader", lambda: None)
    texts, used = labels.label_texts(names, "hypernym")
    assert used == "gloss" and labels.resolve_variant("hypernym") == "gloss"
    assert texts == labels.label_texts(names, "gloss")[0]


@pytest.mark.slow
def test_hypernyms_where_wordnet_is_installed() -> None:
    if labels.wordnet_reader() is None:
        pytest.skip("WordNet not installed (Debian wordnet-base or NLTK data)")
    texts, used = labels.label_texts(imagenet_classes(), "hypernym")
    assert used == "hypernym" and texts[978].endswith("a kind of shore")

"""Hardening of text handling: Unicode words are words everywhere text is tokenised, and a
captions table with a header SceneSeek does not know is refused (issue 14)."""

from __future__ import annotations

import pytest

from core.data.captions import CaptionFileError, read_captions
from core.text import Mapping, PipelineConfig, analyze_text, run_pipeline
from core.text.preprocess import Preprocessor, has_words, words


def test_unicode_words_stay_whole() -> None:
    assert words("Le Château d'Yquem, São Paulo") == ["le", "château", "d", "yquem", "são", "paulo"]
    # The same word typed with a combining accent (e + U+0301) is the same token.
    assert words("cafe\u0301") == words("café") == ["café"]
    assert words("森の中の湖") == ["森の中の湖"]
    assert words("42 -- !!") == [] and not has_words("42 -- !!") and has_words("湖")
    prep = Preprocessor.default(use_nltk=False)
    assert prep.tokens("A château near the lake") == ["château", "near", "lake"]


def test_downstream_models_see_whole_accented_words() -> None:
    """TF-IDF vocabulary and keyword analysis use the same tokeniser."""
    texts = [f"A château beside the lake number {i}." for i in range(12)] + [
        f"A dog runs on the beach {i}." for i in range(12)
    ]
    cs = read_captions("\n".join(texts).encode("utf-8"))
    report = run_pipeline(cs, Mapping.load(), PipelineConfig(run_yake=False, eval_sample=5))
    vocab = {w for w, _ in report.top_tfidf}
    assert "château" in vocab and "ch" not in vocab and "teau" not in vocab
    a = analyze_text("Un château près du lac", Mapping.load())
    assert "château" in a.tokens and "ch" not in a.tokens


@pytest.mark.parametrize(
    "text",
    [
        "filename,text\n" + "".join(f"img{i}.jpg,a dog on a beach\n" for i in range(6)),
        "caption|file\n" + "".join(f"a dog on a beach|{i}.png\n" for i in range(6)),
        "id\tphoto\tcaption\n" + "".join(f"{i}\t{i}.jpeg\ta dog\n" for i in range(6)),
    ],
)
def test_unknown_csv_headers_are_refused(text: str) -> None:
    with pytest.raises(CaptionFileError, match="not a header SceneSeek knows") as info:
        read_captions(text.encode("utf-8"))
    assert "image,caption" in str(info.value)  # says which formats it expects


def test_known_formats_and_plain_text_still_read() -> None:
    assert read_captions(b"image,caption\n1.jpg,A dog.\n2.jpg,A cat.\n").format == "flickr8k-csv"
    plain = read_captions(b"A dog runs.\nA photo named beach.jpg of a dog.\nA cat.\nA lake.\n")
    assert plain.format == "plain" and len(plain.captions) == 4


def test_query_side_keeps_accented_words_whole() -> None:
    """Search's query analysis tokenises like the captions do: an accented word is one word
    when it is excluded (`-château`) and when a text is checked for mentions of it."""
    from core.search.query import WORD, mentions, split_negatives

    assert split_negatives("a lake -château -naïve") == ("a lake", ["château", "naïve"])
    assert mentions("Un château près du lac", ["château", "lac", "sea"]) == ["château", "lac"]
    assert mentions("Un chateau", ["château"]) == []  # whole words, not pieces
    assert WORD.findall("são paulo 森の湖") == ["são", "paulo", "森の湖"]

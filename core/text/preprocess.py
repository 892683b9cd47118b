"""Caption preprocessing without any NLTK download: lower case, strip punctuation, tokenise,
remove stop words.

NLTK's English stop-word list and WordNet lemmatiser are used when their data is installed;
otherwise scikit-learn's built-in stop-word list and no lemmatiser. `Preprocessor.describe()`
says which was used, so the choice is visible in the CLI and the app.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# A word is a run of Unicode letters (no digits, no underscore): `château` stays one word,
# `naïve`, `São` and `森の湖` too. Text is NFC-normalised first, so a letter written as base +
# combining accent is one letter.
WORD_RE = re.compile(r"[^\W\d_]+")
MIN_TOKEN_LEN = 2  # single letters ("a", "s" from "dog's") carry nothing


def words(text: str) -> list[str]:
    """Lower-case Unicode word tokens of `text` (stop words kept): the one tokeniser the
    captions, TF-IDF, the keyword models and query analysis share."""
    return WORD_RE.findall(unicodedata.normalize("NFC", text).lower())


def has_words(text: str) -> bool:
    return WORD_RE.search(unicodedata.normalize("NFC", text)) is not None


def is_ascii_word(word: str) -> bool:
    """True for words in the a-z alphabet (what the English models and the mapping know)."""
    return word.isascii()


def _nltk_stopwords() -> frozenset[str] | None:
    try:
        from nltk.corpus import stopwords

        return frozenset(stopwords.words("english"))
    except (LookupError, ImportError, OSError):
        return None


def _nltk_lemmatizer():  # -> WordNetLemmatizer | None
    try:
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer

        wordnet.ensure_loaded()
        return WordNetLemmatizer()
    except (LookupError, ImportError, OSError, AttributeError):
        return None


@dataclass
class Preprocessor:
    """Tokeniser with a fixed stop-word list. Build it with `Preprocessor.default()`."""

    stop_words: frozenset[str]
    stopword_source: str
    lemmatizer_name: str = "none"
    _lemmatizer: object | None = field(default=None, repr=False)

    @classmethod
    def default(cls, use_nltk: bool = True) -> Preprocessor:
        nltk_stops = _nltk_stopwords() if use_nltk else None
        if nltk_stops is not None:
            stops, source = nltk_stops, "nltk"
        else:
            from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

            stops, source = frozenset(ENGLISH_STOP_WORDS), "sklearn"
        lem = _nltk_lemmatizer() if use_nltk else None
        return cls(stops, source, "nltk-wordnet" if lem else "none", lem)

    def describe(self) -> str:
        why = "" if self.stopword_source == "nltk" else " (NLTK stop-word data not installed)"
        return (
            f"stop words: {self.stopword_source} ({len(self.stop_words)} words){why}; "
            f"lemmatiser: {self.lemmatizer_name}"
        )

    def words(self, text: str) -> list[str]:
        """All lower-case word tokens, punctuation and digits stripped (stop words kept)."""
        return words(text)

    def tokens(self, text: str) -> list[str]:
        """Content tokens: words minus stop words and single letters, lemmatised if possible."""
        out = [w for w in words(text) if len(w) >= MIN_TOKEN_LEN]
        out = [w for w in out if w not in self.stop_words]
        if self._lemmatizer is not None:
            out = [self._lemmatizer.lemmatize(w) for w in out]  # type: ignore[attr-defined]
        return out

    def tokenize_all(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.tokens(t) for t in texts]

"""Query analysis: what every mode needs from the words a person typed.

A query is cleaned (whitespace, a length cap), split into the words it wants and the words it
excludes (`beach -people`), and analysed once: keywords with weights (mapping table, HMM,
TF-IDF: core.text.analyze_text), the index categories it names, its sentence embedding (the
excluded words' embedding subtracted: it steers away from them), and the categories nearest
in meaning. Bad input is answered with a note, never an exception.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_QUERY_CHARS = 400
MAX_K = 1000
EXAMPLES = (
    "The bird flies in the forest.",
    "A serene lake surrounded by forest.",
    "The beach is full of tourists.",
    "The desert is vast and dry.",
    "A river flows through the valley.",
    "The sky is clear and blue.",
)
# A word is a run of Unicode letters (`château`, `森の湖`): core.text.preprocess.WORD_RE, the one
# tokeniser, repeated here so that serving imports no core.text until a query is analysed.
WORD = re.compile(r"[^\W\d_]+")
NEGATIVE = re.compile(r"(?:^|\s)-([^\s\-][^\s]*)")
# How far an excluded word's embedding pushes the query away (q - w * mean(excluded)), chosen
# so that "beach -people" keeps beaches first while people-heavy photos sink (README).
NEGATIVE_WEIGHT = 0.5


class QueryError(ValueError):
    """A query the engine cannot answer (k out of range, unknown mode or category)."""


@dataclass
class Query:
    """A query after analysis."""

    text: str
    tokens: list[str]
    keywords: dict[str, float]  # keyword -> weight, best first
    class_weights: np.ndarray  # (C,) query -> index classes
    category_why: dict[str, str]  # class -> why
    embedding: np.ndarray | None  # unit vector in the semantic space (None: empty query)
    word_embeddings: dict[str, np.ndarray]
    nearest: list[tuple[str, float]]
    notes: list[str]
    empty: bool = False
    negatives: list[str] = field(default_factory=list)
    no_content: bool = False  # only stop words
    table_categories: dict[str, float] = field(default_factory=dict)  # mapping-table categories


def check_k(k: int) -> int:
    if not isinstance(k, int | np.integer) or k < 1 or k > MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, not {k!r}")
    return int(k)


def split_negatives(text: str) -> tuple[str, list[str]]:
    """('beach', ['people']) for 'beach -people': a word after a leading minus is excluded."""
    negs = [w.lower().strip(".,;:!?") for w in NEGATIVE.findall(text)]
    rest = NEGATIVE.sub(" ", text)
    return " ".join(rest.split()), [w for w in dict.fromkeys(negs) if WORD.fullmatch(w)]


def clean(query: str | None) -> tuple[str, list[str]]:
    """(text, notes): whitespace collapsed, capped at MAX_QUERY_CHARS."""
    notes: list[str] = []
    text = " ".join((query or "").split())
    if len(text) > MAX_QUERY_CHARS:
        text = text[:MAX_QUERY_CHARS].rsplit(" ", 1)[0]
        notes.append(f"Long query: only its first {len(text)} characters were used.")
    return text, notes


@dataclass
class Analyzer:
    """Everything query analysis needs; built once per engine."""

    text: Any  # TextBackend
    mapping: Any  # core.text.categories.Mapping
    keyword_model: Any  # core.text KeywordModel or None
    classes: list[str]
    class_emb: np.ndarray  # (C, D)
    vocab: set[str]
    stop_words: set[str]
    primed: dict[str, np.ndarray] = field(default_factory=dict)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings, from the primed cache where present."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.primed]
        fresh = dict(zip(missing, self.text.encode(missing), strict=True)) if missing else {}
        return np.stack([self.primed[t] if t in self.primed else fresh[t] for t in texts])

    def prime(self, queries: Sequence[str]) -> None:
        """Encode many queries (and their keywords) in large batches first: an evaluation of
        a thousand captions needs a few batches, not 2,000 calls."""
        from core.text import analyze_text

        texts: set[str] = set()
        for qtext in queries:
            text, negs = split_negatives(clean(qtext)[0])
            texts.add(text)
            texts.update(negs)
            texts.update(analyze_text(text, self.mapping, self.keyword_model).keywords[:6])
        todo = sorted(t for t in texts if t and t not in self.primed)
        if todo:
            self.primed.update(zip(todo, self.text.encode(todo), strict=True))

    def analyze(self, query: str | None) -> Query:
        from core.text import analyze_text
        from core.text.preprocess import has_words

        text, notes = clean(query)
        text, negatives = split_negatives(text)
        n_classes = len(self.classes)
        if not text or not has_words(text):  # Unicode letters: 森の湖 is words, not empty
            notes.append(
                f"Empty query: type a few words describing a scene, for example '{EXAMPLES[1]}'."
            )
            return Query(
                text, [], {}, np.zeros(n_classes), {}, None, {}, [], notes, True, negatives
            )
        if negatives:
            notes.append(
                "Excluded: " + ", ".join(negatives) + " (results whose labels, "
                "category or captions name them are left out)."
            )
        a = analyze_text(text, self.mapping, self.keyword_model)
        weights = np.zeros(n_classes)
        why: dict[str, str] = {}
        for cat in a.categories:
            c = category_alias(cat, self.classes)
            if c is None:
                notes.append(f"'{cat}' is a category of the mapping table but not of this index.")
                continue
            j = self.classes.index(c)
            weights[j] = max(weights[j], a.scores[cat])
            words = [w for w in a.tokens if cat in self.mapping.forms().get(w, ())]
            why[c] = (
                f"mapping-table word {', '.join(repr(w) for w in words)}"
                if words
                else f"learned word weights ({a.scores[cat]:.2f})"
            )
        keywords = {k: float(a.word_scores.get(k, 0.5)) for k in a.keywords}
        heads = list(keywords)[:6]
        batch = self.embed([text, *heads, *negatives])
        emb = batch[0]
        word_emb = dict(zip(heads, batch[1 : 1 + len(heads)], strict=True))
        if negatives:
            emb = emb - NEGATIVE_WEIGHT * batch[1 + len(heads) :].mean(0)
            emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        sims = self.class_emb @ batch[0] if n_classes else np.zeros(0)
        nearest = [(self.classes[i], round(float(sims[i]), 3)) for i in np.argsort(-sims)[:3]]
        from core.text.preprocess import words as tokenise

        words = tokenise(text)
        if looks_foreign(text, words, self.vocab):
            notes.append(
                "This query does not look like English: the keyword and category modes only "
                "know English words; the semantic mode matches by meaning but was trained on "
                "English."
            )
        no_content = not a.tokens
        if no_content:
            notes.append(
                "No content words (only stop words): nothing to search for; add a "
                "word that describes the scene."
            )
        return Query(
            text,
            a.tokens,
            keywords,
            weights,
            why,
            emb.astype(np.float32),
            word_emb,
            nearest,
            notes,
            False,
            negatives,
            no_content,
            {c: float(a.scores[c]) for c in a.categories},
        )


def category_alias(name: str, classes: Sequence[str]) -> str | None:
    """The index class a mapping-table category names ('building' -> 'buildings')."""
    from core.text.categories import plural_forms

    forms = plural_forms(name)
    for c in classes:
        if c == name or c in forms or name in plural_forms(c):
            return c
    return None


def word_forms(word: str) -> set[str]:
    """A word and its plural/singular forms (whole words only: 'sea' never 'seashore')."""
    from core.text.categories import plural_forms

    return set(plural_forms(word)) | {word}


def mentions(text: str, words: Sequence[str]) -> list[str]:
    """The words (any of their forms) that occur as whole words in `text`."""
    from core.text.preprocess import words as tokenise

    present = set(tokenise(text or ""))
    return [w for w in words if word_forms(w) & present]


# Function words of the languages a landscape query is most often typed in besides English,
# less those that are English words too ("die", "an", "am", "van", "son", "me").
_FOREIGN = (
    "le les la des du au aux une et sur dans avec est pour sous",  # French
    "der das und ein eine einer mit auf im dem den ist nicht zu vom beim",  # German
    "el los las del y con una junto sobre entre muy",  # Spanish
    "il della nel sulla gli delle degli che sono",  # Italian
    "os uma com não em nas nos",  # Portuguese
    "het een en op bij naar zijn",  # Dutch
)
FOREIGN_WORDS = frozenset(w for line in _FOREIGN for w in line.split())
ENGLISH_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "for",
        "from",
        "over",
        "under",
        "near",
        "into",
        "onto",
        "through",
        "his",
        "her",
        "their",
        "there",
        "some",
        "two",
        "three",
    ]
)
NON_LATIN_SHARE = 0.3  # letters beyond Latin script (森, лес) above this share: not English
KNOWN_SHARE = 0.4  # known English words below this share of a 2+ word query: not English


@functools.cache
def english_words() -> frozenset[str]:
    """English vocabulary (core/resources/english_words.txt: Flickr8k training captions)."""
    from core.resources import resource_path

    return frozenset(resource_path("english_words.txt").read_text("utf-8").split())


def looks_foreign(
    text: str, words: Sequence[str], vocab: set[str] | frozenset = frozenset()
) -> bool:
    """Whether a query looks like another language than English: mostly letters of another
    script, more foreign than English function words, or (two words or more) few words that
    are English (or in `vocab`, the index's own words: labels, classes, captions)."""
    letters = [ch for ch in text if ch.isalpha()]
    if letters and sum(ord(ch) > 0x24F for ch in letters) / len(letters) > NON_LATIN_SHARE:
        return True
    foreign = sum(w in FOREIGN_WORDS for w in words)
    english = sum(w in ENGLISH_WORDS for w in words)
    if foreign > english:
        return True
    english_vocab = english_words()
    known = sum(w in english_vocab or w in ENGLISH_WORDS or w in vocab for w in words)
    return len(words) >= 2 and known / len(words) < KNOWN_SHARE

"""The category mapping table: data (JSON), not code.

A caption carries every category one of whose words it contains. Words match with simple
inflection: a listed word also matches its plural and, when it looks plural, its singular
(`trees` matches `tree`; `mountain` matches `mountains`; `beach` matches `beaches`). Words in
`exact` match only as written (`woods` must not match `wood`, as in "a wood floor").

Where the table lives: an explicit path, else $SCENESEEK_MAPPING, else `<cache>/mapping.json`
when the user has saved one from the app, else the packaged default
`core/resources/mapping.json`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from core.config import MAPPING_ENV, mapping_env
from core.text.category_table import CategoryTable, TableError

USER_MAPPING_NAME = "mapping.json"
WORD_OK = re.compile(r"^[a-z]+$")


class MappingError(TableError):
    """The mapping table is not valid JSON or breaks a rule (see `Mapping.validate`)."""


def plural_forms(word: str) -> set[str]:
    """`word`, its regular plural, and its singular when it looks like a plural."""
    forms = {word}
    singular = singular_forms(word)
    if singular:  # already plural ("trees"): add "tree", not "treeses"
        return forms | singular
    if re.search(r"(s|x|z|ch|sh)$", word):
        forms.add(word + "es")
    elif re.search(r"[^aeiou]y$", word):
        forms.add(word[:-1] + "ies")
    else:
        forms.add(word + "s")
    return forms


def singular_forms(word: str) -> set[str]:
    """Candidate singulars of a plural-looking word (empty when it does not look plural)."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return set()
    if word.endswith("ies"):
        return {word[:-3] + "y"}
    if re.search(r"(s|x|z|ch|sh)es$", word):
        return {word[:-2]}
    if word.endswith("s"):
        return {word[:-1]}
    return set()


class Mapping(CategoryTable):
    """Caption word -> category (the study's Table 1); `exact` words match only as written."""

    KIND = "mapping table"
    ITEM = "word"
    FILE_NAME = USER_MAPPING_NAME
    ENV = MAPPING_ENV
    ERROR = MappingError
    FIELDS: ClassVar[dict[str, str]] = {**CategoryTable.FIELDS, "exact": "items"}

    def __init__(
        self,
        categories: dict[str, list[str]],
        exact: Iterable[str] | None = None,
        description: str = "",
        source: str = "(in memory)",
    ) -> None:
        super().__init__(categories, description, source)
        self.exact = set(exact or ())
        self._forms: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def build(cls, d: dict, source: str) -> Mapping:
        # Case and spaces are forgiven; everything else is checked by validate().
        cats = {
            c.strip().lower(): list(dict.fromkeys(w.strip().lower() for w in ws if w.strip()))
            for c, ws in d["categories"].items()
        }
        exact = {w.strip().lower() for w in d.get("exact", [])}
        return cls(cats, exact, d.get("description", ""), source)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "exact": sorted(self.exact)}

    def validate(self) -> None:
        super().validate()
        seen: dict[str, str] = {}
        for cat, words in self.categories.items():
            if not WORD_OK.match(cat):
                raise MappingError(f"category name {cat!r}: use lower-case letters only")
            for i, w in enumerate(words):
                if not WORD_OK.match(w):
                    raise MappingError(
                        f"categories.{cat}[{i}]: word {w!r} — use single lower-case words a-z"
                    )
                if w in seen and seen[w] != cat:
                    raise MappingError(f"word {w!r} is listed under both {seen[w]} and {cat}")
                seen[w] = cat
        for w in sorted(self.exact):
            if not WORD_OK.match(w):
                raise MappingError(f"exact: {w!r} — use single lower-case words a-z")

    # --- matching ----------------------------------------------------------------------------

    def forms(self) -> dict[str, tuple[str, ...]]:
        """{word form: categories it signals}, inflections included."""
        if self._forms is None:
            out: dict[str, set[str]] = {}
            for cat, words in self.categories.items():
                for w in words:
                    for f in {w} if w in self.exact else plural_forms(w):
                        out.setdefault(f, set()).add(cat)
            self._forms = {f: tuple(sorted(c)) for f, c in out.items()}
        return self._forms

    def is_keyword(self, token: str) -> bool:
        return token in self.forms()

    def match(self, tokens: Iterable[str]) -> dict[str, list[str]]:
        """{category: [matched tokens]} for one tokenised caption."""
        forms = self.forms()
        out: dict[str, list[str]] = {}
        for t in tokens:
            for cat in forms.get(t, ()):
                out.setdefault(cat, []).append(t)
        return out

    def categories_of(self, tokens: Iterable[str]) -> list[str]:
        hits = self.match(tokens)
        return [c for c in self.categories if c in hits]

    def label_matrix(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(n captions, n categories) 0/1 matrix; a caption may carry several categories."""
        index = {c: i for i, c in enumerate(self.categories)}
        forms = self.forms()
        y = np.zeros((len(token_lists), len(index)), dtype=np.int8)
        for r, toks in enumerate(token_lists):
            for t in toks:
                for cat in forms.get(t, ()):
                    y[r, index[cat]] = 1
        return y

    def with_words(self, additions: dict[str, Iterable[str]]) -> Mapping:
        """A copy with accepted suggestions added (duplicates ignored)."""
        m = Mapping(self.added(additions), set(self.exact), self.description, self.source)
        m.validate()
        return m


def user_mapping_path() -> Path:
    """Where the app saves the user's edited table."""
    return Mapping.user_path()


def resolve_mapping_path(explicit: str | Path | None = None) -> Path | None:
    """Explicit path, else $SCENESEEK_MAPPING, else a saved user table, else None (default)."""
    return Mapping.resolve_path(explicit)


def load_mapping(path: str | Path | None = None) -> Mapping:
    """The mapping table in use (`Mapping.load`)."""
    return Mapping.load(path)


def mapping_source(explicit: str | Path | None = None) -> str:
    if explicit:
        return "chosen explicitly"
    if mapping_env():
        return f"from ${MAPPING_ENV}"
    if user_mapping_path().exists():
        return f"saved table {user_mapping_path()}"
    return "packaged default"

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

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from core.config import MAPPING_ENV, mapping_env, resolve_cache_dir, resolve_table_path
from core.io import atomic_write_json

USER_MAPPING_NAME = "mapping.json"
WORD_OK = re.compile(r"^[a-z]+$")


class MappingError(ValueError):
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


@dataclass
class Mapping:
    categories: dict[str, list[str]]
    exact: set[str] = field(default_factory=set)
    description: str = ""
    source: str = "(in memory)"
    _forms: dict[str, tuple[str, ...]] | None = field(default=None, repr=False, compare=False)

    # --- loading and saving ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: dict, source: str = "(in memory)") -> Mapping:
        if not isinstance(d, dict) or not isinstance(d.get("categories"), dict):
            raise MappingError('expected a JSON object with "categories": {category: [words]}')
        cats: dict[str, list[str]] = {}
        for cat, words in d["categories"].items():
            if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
                raise MappingError(f"category {cat!r}: expected a list of words")
            cats[str(cat).strip().lower()] = [w.strip().lower() for w in words if w.strip()]
        m = cls(
            categories=cats,
            exact={str(w).strip().lower() for w in d.get("exact", [])},
            description=str(d.get("description", "")),
            source=source,
        )
        m.validate()
        return m

    @classmethod
    def from_json(cls, text: str, source: str = "(in memory)") -> Mapping:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise MappingError(f"not valid JSON: {exc}") from None
        return cls.from_dict(d, source)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Mapping:
        """The mapping at `path`, or the one `resolve_mapping_path` finds."""
        if path is None:
            path = resolve_mapping_path()
        if path is None:
            return cls.default()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"mapping table {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise MappingError(
                f"mapping table {path} is not UTF-8 text; save it as UTF-8 JSON"
            ) from None
        try:
            return cls.from_json(text, source=str(path))
        except MappingError as exc:
            raise MappingError(f"mapping table {path}: {exc}") from None

    @classmethod
    def default(cls) -> Mapping:
        """The packaged table (core/resources/mapping.json)."""
        text = resources.files("core.resources").joinpath("mapping.json").read_text("utf-8")
        return cls.from_json(text, source="default (core/resources/mapping.json)")

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "categories": {c: list(ws) for c, ws in self.categories.items()},
            "exact": sorted(self.exact),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        """Validate, then write atomically (a crash never leaves half a table)."""
        self.validate()
        return atomic_write_json(path, self.to_dict())

    def validate(self) -> None:
        if not self.categories:
            raise MappingError("the table has no categories")
        seen: dict[str, str] = {}
        for cat, words in self.categories.items():
            if not WORD_OK.match(cat):
                raise MappingError(f"category name {cat!r}: use lower-case letters only")
            if not words:
                raise MappingError(f"category {cat!r} has no words")
            for w in words:
                if not WORD_OK.match(w):
                    raise MappingError(f"{cat}: word {w!r} — use single lower-case words a-z")
                if w in seen and seen[w] != cat:
                    raise MappingError(f"word {w!r} is listed under both {seen[w]} and {cat}")
                seen[w] = cat

    # --- matching ----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.categories)

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
        cats = {c: list(ws) for c, ws in self.categories.items()}
        for cat, words in additions.items():
            for w in words:
                if w not in cats.setdefault(cat, []):
                    cats[cat].append(w)
        m = Mapping(cats, set(self.exact), self.description, self.source)
        m.validate()
        return m


def user_mapping_path() -> Path:
    """Where the app saves the user's edited table."""
    return resolve_cache_dir() / USER_MAPPING_NAME


def resolve_mapping_path(explicit: str | Path | None = None) -> Path | None:
    """Explicit path, else $SCENESEEK_MAPPING, else a saved user table, else None (default)."""
    return resolve_table_path(USER_MAPPING_NAME, MAPPING_ENV, explicit)


def mapping_source(explicit: str | Path | None = None) -> str:
    if explicit:
        return "chosen explicitly"
    if mapping_env():
        return f"from ${MAPPING_ENV}"
    if user_mapping_path().exists():
        return f"saved table {user_mapping_path()}"
    return "packaged default"

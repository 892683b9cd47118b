"""One class for the editable JSON category tables: {category: [items]} plus a description.

Two tables use it: the keyword mapping (`core.text.categories.Mapping`, caption word ->
category, the study's Table 1) and the ImageNet-label groups
(`core.text.imagenet_groups.ImagenetGroups`, top-1 ImageNet label -> category). Both are
checked against one schema (`check_schema`) that names the field at fault
(`categories.sea[2]: expected a word, got a number (5)`), then against the subclass's own
rules (`validate`); both load, save and resolve the same way.

Where a table lives: an explicit path, else its environment variable, else
`<cache>/<FILE_NAME>` when the user saved one from the app, else the packaged default
`core/resources/<FILE_NAME>`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from core.config import resolve_cache_dir, resolve_table_path
from core.io import atomic_write_json, read_regular

# A category table is a few kilobytes; anything past this is not one.
TABLE_MAX_BYTES = 4 * 1024 * 1024

T = TypeVar("T", bound="CategoryTable")


class TableError(ValueError):
    """A category table is not valid JSON, breaks the schema or a rule of its kind."""


def describe(value: object) -> str:
    """A JSON value as a reader would name it ("a string ('beach')", "null", "NaN")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _list_of_text(value: object, where: str, item: str) -> None:
    if not isinstance(value, list):
        raise TableError(f"{where}: expected a list of {item}s, got {describe(value)}")
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise TableError(f"{where}[{i}]: expected a {item} (text), got {describe(x)}")


def _groups(value: object, where: str, item: str) -> None:
    if not isinstance(value, dict):
        raise TableError(
            f"{where}: expected an object {{category: [{item}s]}}, got {describe(value)}"
        )
    for cat, items in value.items():
        _list_of_text(items, f"{where}.{cat}", item)


def _text(value: object, where: str, item: str) -> None:
    if not isinstance(value, str):
        raise TableError(f"{where}: expected text, got {describe(value)}")


# The schema: field -> check. Subclasses add their own fields (the mapping's `exact`).
CHECKS = {"text": _text, "groups": _groups, "items": _list_of_text}


@dataclass(eq=False)
class CategoryTable:
    """{category: [items]}: the items (caption words, ImageNet labels) that signal a category."""

    categories: dict[str, list[str]]
    description: str = ""
    source: str = "(in memory)"
    _index: dict[str, tuple[str, ...]] | None = field(default=None, repr=False)

    KIND: ClassVar[str] = "category table"  # how messages name the table
    ITEM: ClassVar[str] = "item"  # how messages name an entry
    FILE_NAME: ClassVar[str] = ""  # packaged default and the app's saved copy
    ENV: ClassVar[str] = ""  # the environment variable that points at a table
    ERROR: ClassVar[type[TableError]] = TableError
    FIELDS: ClassVar[dict[str, str]] = {"description": "text", "categories": "groups"}

    # --- schema and rules --------------------------------------------------------------------

    @classmethod
    def check_schema(cls, d: object) -> None:
        """Raise `ERROR` naming the field at fault when `d` does not have the table's shape."""
        names = ", ".join(cls.FIELDS)
        if not isinstance(d, dict):
            raise cls.ERROR(f"expected a JSON object with the fields {names}, got {describe(d)}")
        unknown = [k for k in d if k not in cls.FIELDS]
        if unknown:
            raise cls.ERROR(f"unknown field {unknown[0]!r} (the {cls.KIND} has: {names})")
        if "categories" not in d:
            raise cls.ERROR(f'missing field "categories": {{category: [{cls.ITEM}s]}}')
        try:
            for name, kind in cls.FIELDS.items():
                if name in d:
                    CHECKS[kind](d[name], name, cls.ITEM)
        except TableError as exc:
            raise cls.ERROR(str(exc)) from None

    def validate(self) -> None:
        """The rules beyond the schema (every subclass adds its own)."""
        if not self.categories:
            raise self.ERROR("categories: the table has none")
        for cat, items in self.categories.items():
            if not items:
                raise self.ERROR(f"categories.{cat}: has no {self.ITEM}s")

    # --- loading and saving ------------------------------------------------------------------

    @classmethod
    def build(cls: type[T], d: dict[str, Any], source: str) -> T:
        """The table from a dict that passed `check_schema` (subclasses normalise here)."""
        cats = {c.strip(): list(dict.fromkeys(v)) for c, v in d["categories"].items()}
        return cls(cats, d.get("description", ""), source)

    @classmethod
    def from_dict(cls: type[T], d: object, source: str = "(in memory)") -> T:
        cls.check_schema(d)
        assert isinstance(d, dict)  # check_schema refused everything else
        table = cls.build(d, source)
        table.validate()
        return table

    @classmethod
    def from_json(cls: type[T], text: str, source: str = "(in memory)") -> T:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise cls.ERROR(f"not valid JSON: {exc}") from None
        return cls.from_dict(d, source)

    @classmethod
    def default(cls: type[T]) -> T:
        """The packaged table (core/resources/<FILE_NAME>)."""
        text = resources.files("core.resources").joinpath(cls.FILE_NAME).read_text("utf-8")
        return cls.from_json(text, source=f"default (core/resources/{cls.FILE_NAME})")

    @classmethod
    def user_path(cls) -> Path:
        """Where the app saves the user's edited table."""
        return resolve_cache_dir() / cls.FILE_NAME

    @classmethod
    def resolve_path(cls, explicit: str | Path | None = None) -> Path | None:
        """Explicit path, else $ENV, else the saved user table, else None (the default)."""
        return resolve_table_path(cls.FILE_NAME, cls.ENV, explicit)

    @classmethod
    def load(cls: type[T], path: str | Path | None = None) -> T:
        """The table at `path`, or the one `resolve_path` finds, or the packaged default."""
        found = cls.resolve_path(path)
        if found is None:
            return cls.default()
        try:
            # A table is small: a FIFO, a device or a huge file is refused unread.
            text = read_regular(found, limit=TABLE_MAX_BYTES).decode("utf-8")
        except OSError as exc:
            raise cls.ERROR(f"{cls.KIND} {found}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise cls.ERROR(
                f"{cls.KIND} {found} is not UTF-8 text; save it as UTF-8 JSON"
            ) from None
        try:
            return cls.from_json(text, source=str(found))
        except TableError as exc:
            raise cls.ERROR(f"{cls.KIND} {found}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "categories": {c: list(v) for c, v in self.categories.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        """Validate, then write atomically (a crash never leaves half a table)."""
        self.validate()
        return atomic_write_json(path, self.to_dict())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    # --- lookups -----------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.categories)

    def index(self) -> dict[str, tuple[str, ...]]:
        """item -> the categories listing it (in table order)."""
        if self._index is None:
            idx: dict[str, list[str]] = {}
            for cat, items in self.categories.items():
                for x in items:
                    idx.setdefault(x, []).append(cat)
            self._index = {x: tuple(cs) for x, cs in idx.items()}
        return self._index

    def added(self, additions: dict[str, Iterable[str]]) -> dict[str, list[str]]:
        """The categories with `additions` appended (repeats dropped, new categories made)."""
        cats = {c: list(v) for c, v in self.categories.items()}
        for cat, items in additions.items():
            cats[cat] = list(dict.fromkeys([*cats.get(cat, []), *items]))
        return cats

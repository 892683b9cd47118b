"""The two category tables (keyword mapping, ImageNet-label groups) are one table class with
one schema check that names the field at fault (issues 21 and 22 item 8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.text.categories import Mapping, MappingError
from core.text.category_table import CategoryTable, TableError
from core.text.imagenet_groups import GroupsError, ImagenetGroups, load_groups
from tests.helpers import run_cli

TABLES = [Mapping, ImagenetGroups]

# (table text, the message's start): each names the field at fault, for both tables.
BROKEN = [
    ("5", "expected a JSON object with the fields description, categories"),
    ("null", "expected a JSON object with the fields description, categories"),
    ("NaN", "expected a JSON object with the fields description, categories"),
    ("[]", "expected a JSON object with the fields description, categories"),
    ('{"a": 1}', "unknown field 'a'"),
    ('{"description": "x"}', 'missing field "categories"'),
    ('{"categories": []}', "categories: expected an object {category: ["),
    ('{"categories": {"sea": null}}', "categories.sea: expected a list of "),
    ('{"categories": {"sea": "beach"}}', "categories.sea: expected a list of "),
    ('{"categories": {"sea": ["sea", 5]}}', "categories.sea[1]: expected a "),
    ('{"categories": {"sea": [NaN]}}', "categories.sea[0]: expected a "),
    ('{"categories": {"sea": ["sea"]}, "description": 5}', "description: expected text, got"),
    ('{"categories": {}}', "categories: the table has none"),
    ('{"categories": {"sea": []}}', "categories.sea: has no "),
]


@pytest.mark.parametrize("table", TABLES)
def test_one_class_for_both_tables(table: type[CategoryTable]) -> None:
    assert issubclass(table, CategoryTable) and issubclass(table.ERROR, TableError)
    assert issubclass(table.ERROR, ValueError)
    t = table.default()
    assert t == table.from_json(t.to_json()) and t.names


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_schema_names_the_field_at_fault(
    table: type[CategoryTable], text: str, message: str
) -> None:
    with pytest.raises(table.ERROR) as info:
        table.from_json(text)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_mapping_exact_field_is_a_list_of_words() -> None:
    """`"exact": "beach"` used to be read as the letters a, b, c, e, h."""
    base = {"categories": {"sea": ["sea", "beach"]}}
    for value, got in [
        ('"beach"', "got a string ('beach')"),
        ("5", "got a number (5)"),
        ("null", "got null"),
        ("NaN", "got NaN"),
        ('{"a": 1}', "got an object"),
    ]:
        text = json.dumps(base)[:-1] + f', "exact": {value}}}'
        with pytest.raises(MappingError, match=r"^exact: expected a list of words, ") as info:
            Mapping.from_json(text)
        assert str(info.value).endswith(got)
    with pytest.raises(MappingError, match=r"^exact\[0\]: expected a word \(text\), got null"):
        Mapping.from_dict({**base, "exact": [None]})
    with pytest.raises(MappingError, match=r"^exact: 'two words'"):
        Mapping.from_dict({**base, "exact": ["two words"]})
    m = Mapping.from_dict({**base, "exact": ["beach"]})
    # "beach" now matches only as written: "Two beaches" carries no category.
    assert m.categories_of(["two", "beaches"]) == [] and m.categories_of(["beach"]) == ["sea"]
    with pytest.raises(GroupsError, match=r"^unknown field 'exact'"):
        ImagenetGroups.from_dict({"categories": {"sea": ["seashore"]}, "exact": []})


def test_rules_of_each_kind() -> None:
    with pytest.raises(MappingError, match=r"^categories\.sea\[1\]: word 'two words'"):
        Mapping.from_dict({"categories": {"sea": ["sea", "two words"]}})
    with pytest.raises(GroupsError, match=r"^categories\.sea: not ImageNet class names"):
        ImagenetGroups.from_dict({"categories": {"sea": ["seashore", "ocean view"]}})
    # Saving validates too: an edited table in memory never reaches the disk broken.
    with pytest.raises(GroupsError, match="not ImageNet class names"):
        ImagenetGroups({"sea": ["ocean view"]}).save("/nonexistent/never-written.json")


@pytest.mark.parametrize("table", TABLES)
def test_file_errors_name_the_table_the_file_and_the_field(
    table: type[CategoryTable], tmp_path: Path
) -> None:
    path = tmp_path / table.FILE_NAME
    path.write_text('{"categories": {"sea": "beach"}}', encoding="utf-8")
    with pytest.raises(table.ERROR) as info:
        table.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{table.KIND} {path}: categories.sea: expected a list of "), msg
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(table.ERROR, match="not UTF-8"):
        table.load(path)
    with pytest.raises(table.ERROR, match="No such file"):
        table.load(tmp_path / "absent.json")


def test_save_load_resolve_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCENESEEK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCENESEEK_IMAGENET_GROUPS", raising=False)
    monkeypatch.delenv("SCENESEEK_MAPPING", raising=False)
    for table in TABLES:
        assert table.resolve_path() is None  # nothing saved: the packaged default
        assert table.load().source.startswith("default")
    groups = load_groups().with_labels({"mountain": ["valley", "alp"]})
    groups.save(ImagenetGroups.user_path())
    back = load_groups()
    assert back == groups and back.tags(["alp"]) == ["glacier", "mountain"]
    assert back.source == str(tmp_path / "cache" / "imagenet_groups.json")


def test_cli_names_the_field_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.json"
    bad.write_text('{"categories": {"sea": ["sea"]}, "exact": "beach"}', encoding="utf-8")
    res = run_cli("keywords", "--text", "Two beaches", "--mapping", bad)
    assert res.exit_code != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert f"mapping table {bad}: exact: expected a list of words" in lines[0]
    assert "TypeError" not in res.output


@pytest.mark.parametrize("table", [Mapping, ImagenetGroups])
def test_special_files_are_refused_unread(table: type[CategoryTable], tmp_path: Path) -> None:
    """A FIFO would block forever and /dev/zero would be read until memory runs out: both are
    refused before any byte is read, naming the file."""
    fifo = tmp_path / "table.json"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(TableError, match="not a regular file"):
            table.load(path)

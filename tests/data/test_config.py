"""core.config: the one module that reads SCENESEEK_* variables, at call time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core import config
from tests.helpers import REPO


def test_every_variable_in_the_readme_table_and_only_those() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(SCENESEEK_[A-Z_]+)` \|", readme, flags=re.MULTILINE)
    assert sorted(rows) == sorted(config.ENV_VARS)
    assert len(set(config.ENV_VARS)) == len(config.ENV_VARS) == 15


def _variable_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(REPO)}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"SCENESEEK_[A-Z_]+", node.value)
    ]


def test_no_module_but_config_names_a_variable() -> None:
    """A bare "SCENESEEK_X" string outside core/config.py is a second place reading it."""
    files = [
        p
        for folder in ("core", "dashboard", "benchmarks")
        for p in sorted((REPO / folder).rglob("*.py"))
        if p != REPO / "core" / "config.py"
    ]
    assert len(files) > 50
    assert [hit for p in files for hit in _variable_literals(p)] == []
    assert len(_variable_literals(REPO / "core" / "config.py")) == 15


def test_folders_follow_explicit_then_variable_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (config.DATA_ENV, config.RUNS_ENV, config.INDEX_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path / "c"))
    assert config.resolve_data_dir() == Path("data")
    assert config.data_dir_source() == "default ./data"
    assert config.resolve_runs_dir() == Path("runs")
    assert config.resolve_index_dir() == tmp_path / "c" / "index"  # follows the cache

    monkeypatch.setenv(config.DATA_ENV, "~/d")
    monkeypatch.setenv(config.RUNS_ENV, str(tmp_path / "r"))
    monkeypatch.setenv(config.INDEX_ENV, str(tmp_path / "i"))
    assert config.resolve_data_dir() == Path.home() / "d"
    assert config.data_dir_source() == "from $SCENESEEK_DATA"
    assert config.resolve_runs_dir() == tmp_path / "r"
    assert config.resolve_index_dir() == tmp_path / "i"

    assert config.resolve_data_dir("x") == Path("x")
    assert config.data_dir_source("x") == "chosen explicitly"
    assert config.resolve_index_dir(tmp_path / "e") == tmp_path / "e"

    monkeypatch.setenv(config.DATA_ENV, "")  # empty counts as unset
    assert config.resolve_data_dir() == Path("data")


def test_settings_are_typed_and_read_at_call_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (config.INDEX_CACHE_ENV, config.RAY_DELAY_ENV, config.DEBUG_ENV):
        monkeypatch.delenv(name, raising=False)
    assert (config.index_cache_mb(), config.ray_batch_delay(), config.debug_enabled()) == (
        256,
        0.0,
        False,
    )
    monkeypatch.setenv(config.INDEX_CACHE_ENV, "64")
    monkeypatch.setenv(config.RAY_DELAY_ENV, "0.25")
    monkeypatch.setenv(config.DEBUG_ENV, "1")
    assert (config.index_cache_mb(), config.ray_batch_delay(), config.debug_enabled()) == (
        64,
        0.25,
        True,
    )
    monkeypatch.setenv(config.DEBUG_ENV, "0")
    assert config.debug_enabled() is False

    monkeypatch.delenv(config.KEY_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config.key_file() == tmp_path / "sceneseek" / "cache.key"
    monkeypatch.setenv(config.KEY_ENV, str(tmp_path / "k"))
    assert config.key_file() == tmp_path / "k"

    monkeypatch.setenv(config.BACKEND_ENV, "torch")
    monkeypatch.delenv(config.PRECISION_ENV, raising=False)
    assert (config.inference_backend(), config.inference_precision()) == ("torch", "")


def test_queries_file_defaults_to_the_packaged_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(config.QUERIES_ENV, raising=False)
    shipped = config.queries_file()
    assert shipped == REPO / "core" / "resources" / "queries.csv"
    assert shipped.read_text(encoding="utf-8").splitlines()[0] == "query,category"
    monkeypatch.setenv(config.QUERIES_ENV, str(tmp_path / "q.csv"))
    assert config.queries_file() == tmp_path / "q.csv"
    assert config.queries_file(tmp_path / "e.csv") == tmp_path / "e.csv"


def test_tables_resolve_explicit_then_variable_then_saved_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(config.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(config.MAPPING_ENV, raising=False)
    assert config.resolve_table_path("t.json", config.MAPPING_ENV) is None  # packaged default
    (tmp_path / "t.json").write_text("{}", encoding="utf-8")
    assert config.resolve_table_path("t.json", config.MAPPING_ENV) == tmp_path / "t.json"
    monkeypatch.setenv(config.MAPPING_ENV, str(tmp_path / "env.json"))
    assert config.resolve_table_path("t.json", config.MAPPING_ENV) == tmp_path / "env.json"
    assert config.resolve_table_path("t.json", config.MAPPING_ENV, "x.json") == Path("x.json")

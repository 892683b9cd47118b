"""Configuration in one place: every `SCENESEEK_*` environment variable and the folders and
defaults they choose. Other modules call these functions; none reads the environment itself.

Each value is read when asked for, never at import, so a test that sets a variable (pytest's
monkeypatch) or a user who exports one before a call sees it take effect. An unset or empty
variable means "not set". Paths expand `~`. The README's configuration table lists `ENV_VARS`.

Resolution order for a folder: an explicit value (CLI option or the app's sidebar), then the
variable, then the default."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DATA_ENV = "SCENESEEK_DATA"
CACHE_ENV = "SCENESEEK_CACHE"
RUNS_ENV = "SCENESEEK_RUNS"
INDEX_ENV = "SCENESEEK_INDEX"
QUERIES_ENV = "SCENESEEK_QUERIES"
CAPTIONS_ENV = "SCENESEEK_CAPTIONS"
MAPPING_ENV = "SCENESEEK_MAPPING"
GROUPS_ENV = "SCENESEEK_IMAGENET_GROUPS"
KEY_ENV = "SCENESEEK_KEY_FILE"
BACKEND_ENV = "SCENESEEK_BACKEND"
PRECISION_ENV = "SCENESEEK_PRECISION"
INDEX_CACHE_ENV = "SCENESEEK_INDEX_CACHE_MB"
RAY_DELAY_ENV = "SCENESEEK_RAY_BATCH_DELAY"
DEBUG_ENV = "SCENESEEK_DEBUG"
SHARED_DATA_ENV = "SCENESEEK_SHARED_DATA"

DEFAULT_DATA_DIR = Path("data")
DEFAULT_CACHE_DIR = Path(".sceneseek")
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_INDEX_CACHE_MB = 256  # LanceDB's index cache per query process

# Every variable above; the README's configuration table documents each (a test checks).
ENV_VARS: tuple[str, ...] = (
    DATA_ENV,
    CACHE_ENV,
    RUNS_ENV,
    INDEX_ENV,
    QUERIES_ENV,
    CAPTIONS_ENV,
    MAPPING_ENV,
    GROUPS_ENV,
    KEY_ENV,
    BACKEND_ENV,
    PRECISION_ENV,
    INDEX_CACHE_ENV,
    RAY_DELAY_ENV,
    DEBUG_ENV,
    SHARED_DATA_ENV,
)


def env_str(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    return os.environ.get(name) or None


def env_path(name: str) -> Path | None:
    """The variable as a path (`~` expanded), or None when unset or empty."""
    value = env_str(name)
    return Path(value).expanduser() if value else None


def _first_path(explicit: str | Path | None, name: str, default: Path) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    return env_path(name) or default


# --- folders ------------------------------------------------------------------------------


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder to use: explicit value, then $SCENESEEK_DATA, then ./data."""
    return _first_path(explicit, DATA_ENV, DEFAULT_DATA_DIR)


def data_dir_source(explicit: str | Path | None = None) -> str:
    """Human-readable reason for the choice made by `resolve_data_dir`."""
    if explicit:
        return "chosen explicitly"
    if env_str(DATA_ENV):
        return f"from ${DATA_ENV}"
    return "default ./data"


def resolve_cache_dir(explicit: str | Path | None = None) -> Path:
    """Cache folder: explicit value, then $SCENESEEK_CACHE, then ./.sceneseek."""
    return _first_path(explicit, CACHE_ENV, DEFAULT_CACHE_DIR)


def resolve_runs_dir(explicit: str | Path | None = None) -> Path:
    """Runs folder: explicit value, then $SCENESEEK_RUNS, then ./runs."""
    return _first_path(explicit, RUNS_ENV, DEFAULT_RUNS_DIR)


def resolve_index_dir(explicit: str | Path | None = None) -> Path:
    """Search index folder: explicit value, then $SCENESEEK_INDEX, then <cache>/index."""
    return _first_path(explicit, INDEX_ENV, resolve_cache_dir() / "index")


def shared_data_dir() -> Path:
    """Shared real data (tests, benchmarks): $SCENESEEK_SHARED_DATA, else ../shared/data
    beside the repository."""
    return env_path(SHARED_DATA_ENV) or REPO_ROOT.parent / "shared" / "data"


# --- files: an override of a default that its own module resolves --------------------------


def queries_file(explicit: str | Path | None = None) -> Path | None:
    """Labelled queries CSV: explicit value, then $SCENESEEK_QUERIES, then the packaged file
    (None when that is absent)."""
    if explicit:
        return Path(explicit).expanduser()
    env = env_path(QUERIES_ENV)
    if env:
        return env
    from core.resources import queries_csv

    shipped = queries_csv()
    return shipped if shipped.exists() else None


def resolve_table_path(
    saved_name: str, env: str, explicit: str | Path | None = None
) -> Path | None:
    """A table the user can edit (keyword mapping, ImageNet groups): explicit path, else the
    variable `env`, else the copy the app saved as `<cache>/<saved_name>` when it exists,
    else None (the packaged default)."""
    if explicit:
        return Path(explicit).expanduser()
    chosen = env_path(env)
    if chosen:
        return chosen
    saved = resolve_cache_dir() / saved_name
    return saved if saved.exists() else None


def captions_env() -> Path | None:
    """$SCENESEEK_CAPTIONS (core.data.captions.resolve_captions_path falls back further)."""
    return env_path(CAPTIONS_ENV)


def mapping_env() -> Path | None:
    """$SCENESEEK_MAPPING (core.text.categories.resolve_mapping_path falls back further)."""
    return env_path(MAPPING_ENV)


def key_file() -> Path:
    """The per-user signing key: $SCENESEEK_KEY_FILE, else ~/.config/sceneseek/cache.key.
    It lives outside caches and indexes, so copying a folder from someone else never copies
    a key that would make their pickles trusted."""
    env = env_path(KEY_ENV)
    if env:
        return env
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "sceneseek" / "cache.key"


# --- settings -----------------------------------------------------------------------------


def inference_backend() -> str:
    """What backend "auto" means ($SCENESEEK_BACKEND), "" when unset."""
    return env_str(BACKEND_ENV) or ""


def inference_precision() -> str:
    """What precision "auto" means ($SCENESEEK_PRECISION), "" when unset."""
    return env_str(PRECISION_ENV) or ""


def index_cache_mb() -> int:
    """LanceDB's index cache for a query process in MB ($SCENESEEK_INDEX_CACHE_MB)."""
    value = env_str(INDEX_CACHE_ENV)
    return int(value) if value else DEFAULT_INDEX_CACHE_MB


def ray_batch_delay() -> float:
    """Seconds a Ray encoder actor sleeps per batch ($SCENESEEK_RAY_BATCH_DELAY), default 0."""
    value = env_str(RAY_DELAY_ENV)
    return float(value) if value else 0.0


def debug_enabled() -> bool:
    """$SCENESEEK_DEBUG set to anything but 0."""
    return (env_str(DEBUG_ENV) or "0") != "0"

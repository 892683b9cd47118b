"""Where data and caches live. Resolution order for the data folder: an explicit value
(CLI option or the app's sidebar), then $SCENESEEK_DATA, then ./data."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SCENESEEK_DATA"
CACHE_ENV = "SCENESEEK_CACHE"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_CACHE_DIR = Path(".sceneseek")


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder to use: explicit value, then $SCENESEEK_DATA, then ./data."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR


def data_dir_source(explicit: str | Path | None = None) -> str:
    """Human-readable reason for the choice made by `resolve_data_dir`."""
    if explicit:
        return "chosen explicitly"
    if os.environ.get(DATA_ENV):
        return f"from ${DATA_ENV}"
    return "default ./data"


def resolve_cache_dir(explicit: str | Path | None = None) -> Path:
    """Cache folder: explicit value, then $SCENESEEK_CACHE, then ./.sceneseek."""
    if explicit:
        path = Path(explicit).expanduser()
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        path = DEFAULT_CACHE_DIR
    return path

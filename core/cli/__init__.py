"""`python -m core`: the command-line interface. Each module registers its commands."""

from __future__ import annotations

import importlib

from core.cli._app import app

# Command modules; each adds @app.command()s. Heavy libraries are imported inside commands.
_COMMAND_MODULES = ["data", "pca", "keywords", "train", "search", "curate", "cache"]
for _name in _COMMAND_MODULES:
    importlib.import_module(f"core.cli.{_name}")


def main() -> None:
    app()


__all__ = ["app", "main"]

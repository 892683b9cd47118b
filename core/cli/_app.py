"""The typer application object and helpers shared by every command module."""

from __future__ import annotations

import logging
import sys
from typing import Any, NoReturn

import typer

from core.io import dumps_json

app = typer.Typer(
    name="sceneseek",
    help="SceneSeek: classify landscape photos and find them by text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit non-zero with one clear line on stderr."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def emit_json(obj: Any) -> None:
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _root() -> None:
    """SceneSeek: classify landscape photos and find them by text."""

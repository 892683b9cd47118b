"""The typer application object and helpers shared by every command module."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def progress_bar(
    desc: str, quiet: bool = False, leave: bool = True
) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar driven by core's `progress(done, total)` callbacks. It opens on the first
    report, so an error before any work stays one line on stderr; it closes on exit."""
    from tqdm import tqdm

    bars: list[Any] = []

    def report(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit="img", disable=quiet, leave=leave))
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _root() -> None:
    """SceneSeek: classify landscape photos and find them by text."""

"""The typer application object and helpers shared by every command module.

Every way a command can end badly ends the same way: non-zero exit and one line on stderr.
Commands turn the faults they expect into clear messages (`fail`); the application's group
(`SafeGroup`) is the safety net for the rest: a usage error (`--k 0`) becomes one line instead
of a usage box, an error raised by core (its message is written for users) is printed as it
is, and anything unexpected becomes one line with a hint; `--debug` (anywhere on the command
line, or SCENESEEK_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 vendors click
    from typer._click import exceptions as cx
    from typer._click.globals import get_current_context
except ImportError:  # older typer runs on click itself
    from click import exceptions as cx  # type: ignore[no-redef]
    from click.globals import get_current_context  # type: ignore[no-redef]

from core.config import debug_enabled
from core.io import dumps_json

# click >= 8.2 raises this after printing the help for a bare `python -m core`.
_NO_ARGS_HELP: type[Exception] = getattr(cx, "NoArgsIsHelpError", type("_Never", (Exception,), {}))
DEBUG_FLAG = "--debug"
MAX_ERROR_CHARS = 600

# Options the commands share, defined once (each is a parameter's default: `cache: Path | None
# = CACHE_OPTION`); the folders resolve in core.config.
DATA_OPTION = typer.Option(
    None, "--data", help="Data folder (default: $SCENESEEK_DATA, then ./data)."
)
CACHE_OPTION = typer.Option(
    None, "--cache", help="Cache folder (default: $SCENESEEK_CACHE, then ./.sceneseek)."
)
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object.")
VERBOSE_OPTION = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Collapse whitespace (a message may hold newlines) and cap the length."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_error(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception that escaped a command."""
    if isinstance(exc, cx.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "python -m core"
        return f"{one_line(exc.format_message())} (see `{where} --help`)", exc.exit_code
    if isinstance(exc, cx.ClickException):
        return one_line(exc.format_message()), exc.exit_code
    if isinstance(exc, MemoryError):
        return "out of memory (try smaller inputs, --batch-size or --workers)", 1
    if "lance error" in str(exc).lower():  # read from a damaged index table (any read site)
        return (
            one_line(
                f"the index table is damaged or unreadable ({str(exc).splitlines()[0]})",
                MAX_ERROR_CHARS - 80,
            )
            + "; delete the index folder and run `python -m core index` again",
            2,
        )
    if isinstance(exc, OSError) and exc.strerror:
        name = f"{exc.filename}: " if exc.filename else ""
        return one_line(f"{name}{exc.strerror}"), 1
    if type(exc).__module__.split(".")[0] == "core":
        # core's own exceptions (DatasetError, MappingError, SearchIndexError...) carry messages
        # written for users.
        return one_line(str(exc) or type(exc).__name__), 2
    detail = f": {exc}" if str(exc) else ""
    return (
        one_line(f"unexpected {type(exc).__name__}{detail}", MAX_ERROR_CHARS - 60)
        + f" (run again with {DEBUG_FLAG} for the traceback)",
        1,
    )


class SafeGroup(TyperGroup):
    """The CLI group: one stderr line per failure (see the module docstring)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = DEBUG_FLAG in args or debug_enabled()
        if not debug:  # torch says this before a refused pickled weights file's one line
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
        args = [a for a in args if a != DEBUG_FLAG]
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.Exit as exc:
            code = exc.exit_code
        except _NO_ARGS_HELP:
            code = 0  # the help was shown: asking for it by giving nothing is no error
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        except Exception as exc:
            if debug:
                raise
            message, code = describe_error(exc)
            typer.echo(f"error: {message}", err=True)
        if not standalone_mode:
            return code
        sys.exit(code)


app = typer.Typer(
    name="sceneseek",
    help="SceneSeek: classify landscape photos and find them by text. Add --debug to any "
    "command to see the traceback of an unexpected error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SafeGroup,
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit non-zero with one clear line on stderr."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def refuse_inside_inputs(out: Any, option: str, *inputs: Any) -> None:
    """Exit with one line when the folder `out` (given as `option`) is inside an input folder:
    written there it would become part of the input (an export as a seventh class)."""
    if out is None:
        return
    from core.io import InsideInputError, refuse_inside

    try:
        refuse_inside(out, inputs, option)
    except InsideInputError as exc:
        fail(str(exc))


def hold_writer_lock(folder: Any, what: str) -> None:
    """Take `folder`'s one-writer lock (core.io.writer_lock) until the command returns (the
    click context releases it), or exit with one line naming the PID that holds it."""
    from core.io import FolderBusyError, writer_lock

    try:
        get_current_context().with_resource(writer_lock(folder, what))
    except FolderBusyError as exc:
        fail(str(exc))


def check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    """Exit with one line when `value` given to `option` (e.g. "--mode") is not a choice."""
    if value not in choices:
        name = option.lstrip("-")
        fail(f"unknown {name} {value!r}: {option} must be one of {', '.join(choices)}")


def emit_json(obj: Any) -> None:
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def progress_bar(
    desc: str, quiet: bool = False, leave: bool = True, unit: str = "img"
) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar driven by core's `progress(done, total)` callbacks. It opens on the first
    report, so an error before any work stays one line on stderr; it closes on exit."""
    from tqdm import tqdm

    bars: list[Any] = []

    def report(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit=unit, disable=quiet, leave=leave))
        bars[0].total = total
        bars[0].update(done - bars[0].n)

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


class StageBars:
    """A `stage(name, done, total)` callback: one `progress_bar` per stage (e.g. checking
    images, features, near-duplicates), each closed when the next stage begins, on `close()`
    or on leaving the `with` block."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._stack = contextlib.ExitStack()
        self._name: str | None = None
        self._report: Callable[[int, int], None] | None = None

    def __call__(self, name: str, done: int, total: int) -> None:
        if self._report is None or name != self._name:
            self.close()
            self._report = self._stack.enter_context(progress_bar(name, self.quiet, leave=False))
            self._name = name
        self._report(done, total)

    def close(self) -> None:
        self._stack.close()
        self._name, self._report = None, None

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.callback()
def _root() -> None:
    """SceneSeek: classify landscape photos and find them by text."""

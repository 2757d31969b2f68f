"""What both command lines (``firesim``, ``firerun``) share: one-line errors, tables that fit the terminal,
and option parsers that refuse bad values while the command line is parsed, before any work starts.

- Errors: ``handle_error`` turns bad input (``UserError``, a usage error of the parser) into one line on
  stderr and exit code 2. User text is never read as rich markup (``--model '[/x]'`` is printed as typed).
- Tables: ``print_table`` renders records as a rich table whose cells are plain ``Text`` (never markup).
  Numbers never wrap, shrink or get an ellipsis: names wrap, and columns marked ``optional`` are left out
  (named in a caption) when the table would not fit the terminal; ``--wide`` prints every column.
- Options: ``output_file`` checks a path can be written before the run (``firesim.io.check_writable``);
  numeric options declare ``min``/``max`` on the option itself (``typer.Option(min=, max=)``), which the
  property test of both CLIs reads to generate out-of-range values.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import typer.main
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from firesim.errors import UserError, one_line
from firesim.io import check_writable

__all__ = ["Column", "command", "handle_error", "output_dir", "output_file", "print_error", "print_table", "run_app", "safe_name"]


# ------------------------------------------------------------------------------------------------ errors
def print_error(prog: str, message: object) -> None:
    """``prog: error: message`` as one line on stderr; the message is plain text, never markup."""
    console = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)
    console.print(Text.assemble((f"{prog}: error:", "red"), " ", one_line(message)))


def handle_error(err: BaseException, prog: str, *, quiet: bool = False) -> int | None:
    """The exit code for ``err`` after printing its one line (unless ``quiet``): 2 for bad input (a
    UserError or the parser's usage error), 130 for Ctrl-C; None for anything else (a bug: let it raise)."""
    if isinstance(err, (KeyboardInterrupt, typer.Abort)):
        return 130
    if isinstance(err, UserError):
        message = str(err)
    elif isinstance(err, typer.TyperException) and getattr(err, "exit_code", None) == 2:  # the parser's
        if type(err).__name__ == "NoArgsIsHelpError":  # the help is already printed
            return 2
        message = err.format_message()
        param = getattr(err, "param", None)
        low, high = getattr(param, "min", None), getattr(param, "max", None)
        if low is not None and high is not None and type(err).__name__ == "BadParameter":
            # pydantic says "less than or equal to 10" even for nan: state the whole range instead
            kind = "an integer" if isinstance(low, int) and isinstance(high, int) else "a number"
            message = f"Invalid value for {param.opts[0]!r}: must be {kind} in {low:,}..{high:,}"
    else:
        return None
    if not quiet:
        print_error(prog, message)
    return 2


@functools.cache
def command(app: typer.Typer):
    """The click command of a typer app, built once per process (typer rebuilds it on every call, ~50 ms
    for these CLIs: `firerun run` parses its command line twice, the property tests thousands of times)."""
    return typer.main.get_command(app)


def run_app(app: typer.Typer, prog: str, argv: Sequence[str] | None = None, **extra) -> int:
    """Run a typer app and return its exit code, bad input mapped to one line and exit 2 (``handle_error``)."""
    try:
        code = command(app)(args=list(sys.argv[1:] if argv is None else argv), standalone_mode=False,
                            prog_name=prog, **extra)
    except (Exception, KeyboardInterrupt) as err:
        code = handle_error(err, prog)
        if code is None:
            raise
    return code if isinstance(code, int) else 0


# ----------------------------------------------------------------------------------------------- options
def output_file(*suffixes: str) -> Callable[[Any], Path]:
    """A ``typer.Option(parser=...)`` for a file the command will write: refused while parsing (before the
    run) if it cannot be written or, given ``suffixes``, does not end in one of them."""

    def parse(value: Any) -> Path:
        path = Path(value)
        if suffixes and path.suffix.lower() not in suffixes:
            raise typer.BadParameter(f"must end in {' or '.join(suffixes)}, got {str(path)!r}")
        try:
            return check_writable(path, "output")
        except UserError as err:
            raise typer.BadParameter(str(err)) from None

    parse.output = True  # type: ignore[attr-defined]  # the property test finds output paths by this mark
    return parse


def output_dir(value: Any) -> Path:
    """A ``typer.Option(parser=...)`` for a directory the command will write into (created if missing):
    refused while parsing if it is a file or cannot be created or written."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{str(path)!r} is not a directory")
    try:
        check_writable(path / "probe", "output directory")
    except UserError as err:
        raise typer.BadParameter(str(err)) from None
    return path


output_dir.output = True  # type: ignore[attr-defined]


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def safe_name(value: str | None, what: str) -> str | None:
    """A name that may reach a file name, a script or a scheduler: letters, digits and ``._+-``, starting
    with a letter or digit, at most 128 characters (so nothing a shell, Slurm or a path would interpret)."""
    if value is None:
        return None
    if not _SAFE_NAME.fullmatch(value):
        raise UserError(f"{what}: {value!r} is not a plain name (letters, digits and ._+-, at most 128, starting "
                        "with a letter or digit)")
    return value


# ------------------------------------------------------------------------------------------------ tables
@dataclass(frozen=True)
class Column:
    """One table column: ``records[key]`` shown through ``fmt``. ``text`` columns (names) are left-aligned
    and may wrap; number columns never wrap or shrink. ``optional`` > 0: the column is left out, highest
    first, when the table does not fit the terminal (``--wide`` keeps it)."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    text: bool = False
    optional: int = 0


def _min_width(column: Column, cells: list[str]) -> int:
    if column.text:  # wraps at spaces (folds words over 24 characters): keep its words whole
        words = [len(w) for text in [column.header, *cells] for w in text.split()]
        return min(max(words, default=4), 24)
    return max(len(column.header), *(len(c) for c in cells))


def print_table(console: Console, title: str, records: Iterable[dict], columns: Sequence[Column], *,
                wide: bool = False, section: str | None = None) -> None:
    """Print ``records`` as a table that never truncates a number (see the module doc); a rule separates
    rows whose ``section`` key differs."""
    records = list(records)
    cells = {c.key: [c.fmt(r[c.key]) for r in records] for c in columns}
    shown = list(columns)

    def needed(cols: Sequence[Column]) -> int:
        return sum(_min_width(c, cells[c.key]) for c in cols) + 2 * len(cols)

    if not wide:
        for column in sorted((c for c in columns if c.optional), key=lambda c: -c.optional):
            if needed(shown) <= console.width:
                break
            shown.remove(column)
    hidden = [c.header for c in columns if c not in shown]
    caption = Text(f"(not shown: {', '.join(hidden)}; --wide or --json shows them)") if hidden else None
    table = Table(title=Text(title), caption=caption, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for c in shown:
        if c.text:
            table.add_column(Text(c.header), justify="left", overflow="fold")
        else:
            table.add_column(Text(c.header), justify="right", no_wrap=True, min_width=_min_width(c, cells[c.key]))
    for i, record in enumerate(records):
        if section is not None and i and record[section] != records[i - 1][section]:
            table.add_section()
        table.add_row(*(Text(cells[c.key][i]) for c in shown))
    width = needed(shown)
    if width <= console.width:
        console.print(table)
        return
    previous = console.width  # even --wide at 80 columns: print wider lines rather than cut a number
    console.width = width
    try:
        console.print(table)
    finally:
        console.width = previous

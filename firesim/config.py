"""Reading user YAML files, with every failure as one line that names the file and the place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from firesim.errors import UserError
from firesim.io import MAX_INPUT_BYTES, read_text
from firesim.limits import MAX_YAML_ITEMS
from firesim.units import format_count

# libyaml when the wheel has it: a 100,000-line topology parses in seconds instead of minutes.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | Path, what: str = "file", max_bytes: int = MAX_INPUT_BYTES,
              max_items: int = MAX_YAML_ITEMS) -> Any:
    """Parse ``path``; a missing, unreadable, oversized or non-UTF-8 file or a YAML syntax error becomes a
    one-line UserError. Parsing costs ~10 s per 100,000 items even with libyaml, so a file of more than
    ``max_items`` items (estimated, before parsing, as its lines plus commas) is refused."""
    path = Path(path)
    text = read_text(path, what, max_bytes)
    items = text.count("\n") + text.count(",")
    if items > max_items:
        raise UserError(f"{what} {str(path)!r}: ~{format_count(items)} YAML items (lines and commas) is more "
                        f"than the limit of {format_count(max_items)}; raise it deliberately with max_nodes "
                        "(--max-nodes), or describe a big network with a spec such as fat-tree:k=64")
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    except RecursionError:
        raise UserError(f"{path}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None

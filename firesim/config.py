"""Reading user YAML files, with every failure as one line that names the file and the place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from firesim.errors import UserError


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse ``path``; a missing file, an unreadable one or a YAML syntax error becomes a one-line UserError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None

"""Files in and out. Out: atomically (a reader never sees half a file) and as strict JSON (no NaN or
Infinity). In: every user file through ``read_text`` / ``read_json``, so a missing file, a directory, a
file too big to be what it claims, bytes that are not UTF-8 or JSON that is not strict all end as one line.

Every file the product writes goes through ``write_text_atomic``; every JSON document, to a file or to
stdout, through ``dumps`` so that any strict parser reads it: numpy scalars and arrays become plain numbers
and lists, non-finite floats become ``null``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from firesim.errors import UserError

__all__ = ["MAX_INPUT_BYTES", "check_writable", "dumps", "jsonable", "read_json", "read_text", "write_bytes_atomic",
           "write_csv_atomic", "write_json_atomic", "write_text_atomic"]

# Hand-written inputs (topologies, hardware catalogs, model profiles) are kilobytes; 64 MiB already holds a
# 100,000-host topology. Plans and traces are bigger and pass their own limit.
MAX_INPUT_BYTES = 64 * 2**20


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_INPUT_BYTES) -> str:
    """A user's input file as text. One-line UserError (naming ``what`` and the path) for a missing file, a
    directory, an unreadable or oversized one, or bytes that are not UTF-8."""
    path = Path(path)
    label = f"{what} {str(path)!r}"
    try:
        if path.is_dir():
            raise UserError(f"{label}: is a directory, not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{label}: {size:,} bytes is more than the {max_bytes:,} a {what} may have")
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)  # a pipe or /proc file reports size 0
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except OSError as err:
        raise UserError(f"{label}: cannot read ({err.strerror or err})") from None
    if len(raw) > max_bytes:
        raise UserError(f"{label}: more than the {max_bytes:,} bytes a {what} may have")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{label}: not UTF-8 text (byte {err.start})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_INPUT_BYTES) -> Any:
    """A user's strict-JSON file (``read_text`` rules; NaN/Infinity, bad syntax, deep nesting: one line)."""
    text = read_text(path, what, max_bytes)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise UserError(f"{what} {str(path)!r}: not JSON ({err.msg} at line {err.lineno})") from None
    except ValueError as err:
        raise UserError(f"{what} {str(path)!r}: not strict JSON ({err})") from None
    except RecursionError:
        raise UserError(f"{what} {str(path)!r}: JSON nested too deeply") from None


def jsonable(value: Any) -> Any:
    """``value`` with numpy types made plain and NaN/inf replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (see ``jsonable``)."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(jsonable(value), indent=indent, separators=separators, allow_nan=False)


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work is done, a path that cannot be written: a directory, a missing or read-only
    parent, a pseudo file system. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what}: {str(path)!r} is a directory, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what}: {str(parent)!r} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot write into {str(probe)!r} (permission denied)")
    resolved = probe.resolve()
    if resolved.parts[:2] in (("/", "proc"), ("/", "sys")) or resolved == Path("/dev"):
        raise UserError(f"{what}: cannot write files under {str(probe)!r}")
    return path


def _umask() -> int:
    """The process umask, read without changing it (Linux reports it in /proc; elsewhere assume 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk and rename it into place, with
    the permissions a plain ``open`` would give (a temporary file is private: 0600)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise UserError(f"output: cannot write {str(path)!r} ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise UserError(f"output: cannot write {str(path)!r} ({err.strerror or err})") from None
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8, written atomically (``write_bytes_atomic``)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = None) -> Path:
    """``data`` as strict JSON (``dumps``), written atomically."""
    return write_text_atomic(path, dumps(data, indent=indent) + "\n")


def write_csv_atomic(path: str | os.PathLike, records: Iterable[Mapping[str, Any]],
                     fieldnames: list[str] | None = None) -> Path:
    """Records as CSV (one header line, then a row each), written atomically."""
    records = list(records)
    buffer = io.StringIO()
    names = fieldnames or (list(records[0]) if records else [])
    writer = csv.DictWriter(buffer, fieldnames=names)
    writer.writeheader()
    writer.writerows({k: jsonable(v) for k, v in r.items()} for r in records)
    return write_text_atomic(path, buffer.getvalue())

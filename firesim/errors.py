"""One exception type for bad user input, so every front end can print one line and exit 2."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class UserError(ValueError):
    """Bad input from a user (file, flag, value). The message is one line naming the field and the reason."""


def one_line(text: object) -> str:
    """Collapse whitespace (newlines included) so a message stays on one line."""
    return " ".join(str(text).split())


def error_reason(err: Mapping[str, Any]) -> str:
    """A pydantic error dict as a short reason: 'must be >= 1, got 0', 'unknown field', ..."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = f", got {value!r}" if isinstance(value, (str, int, float, bool, type(None))) else ""
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}{got}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}{got}"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')}{got}"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    return f"{err['msg']}{got}"


def error_location(loc: tuple) -> str:
    """('links', 3, 'rate') -> 'links[3].rate'."""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_line(exc: ValidationError) -> str:
    """The first error of a pydantic ValidationError as 'field.path: reason (and N more)'."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    where = error_location(tuple(err["loc"]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"{where}: {error_reason(err)}{more}" if where else f"{error_reason(err)}{more}")


def validated(model: type[ModelT], data: Any, what: str) -> ModelT:
    """``model.model_validate(data)``, or a one-line ``UserError`` '<what>: field.path: reason'."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(f"{what}: {validation_line(err)}") from None

"""Read and write quantities the way people write them: sizes, rates and durations ("16MiB", "25GB/s",
"1gbit", "5us"), lists and ranges ("1,32,128", "1:128", "1KiB:64MiB"), key=value options; and the reverse,
the most readable unit string for a rate or a duration (``format_rate``, ``format_seconds``, exact, for files)
and the one display format of durations, sizes and counts in tables (``format_duration``, ``format_bytes``,
``format_count``), which both command lines use.

Every parser refuses what no quantity can be: NaN, infinity, a negative number, an empty list item, a size
beyond ``MAX_BYTES``. Errors are one-line ``UserError``s that quote the value with ``repr`` (a value holding a
newline or markup stays one harmless line).

Decimal prefixes are powers of 1000 and binary ones (Ki, Mi, Gi, Ti) powers of 1024, as nccl-tests and tc do.
A bare number is taken in the base unit (bytes, bytes/s, seconds).
"""

from __future__ import annotations

import math
import re
from typing import Any

from firesim.errors import UserError

_PREFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15,
           "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_SIZE_RE = re.compile(rf"^{_NUMBER}\s*([kmgtp]i?)?(b|bytes?)?$", re.IGNORECASE)
_RATE_RE = re.compile(rf"^{_NUMBER}\s*([kmgtp]i?)?(b|bit|bits|bps|b/s|bit/s|bytes?/s)?$", re.IGNORECASE)
_TIME_RE = re.compile(rf"^{_NUMBER}\s*(s|ms|us|µs|ns|min|h)?$")
# (multiply, divide): dividing by 1e6 gives 4e-05 exactly where multiplying by 1e-6 does not
_TIME_UNIT = {"s": (1, 1), "ms": (1, 1e3), "us": (1, 1e6), "µs": (1, 1e6), "ns": (1, 1e9), "min": (60, 1),
              "h": (3600, 1), None: (1, 1)}


# Larger sizes are typos (1 PiB is far beyond any buffer a collective moves) and would overflow int64 byte
# arithmetic downstream: refused, with the limit in the message.
MAX_BYTES = 2**50
# Rank, GPU and node counts: int32 columns index ranks in plans and traces.
MAX_COUNT = 2**31 - 1
# Values a range such as 1:1PiB with a small factor may expand to (each is a separate prediction or run).
MAX_LIST_ITEMS = 4096


def _finite(value: float, what: str, original) -> float:
    if not math.isfinite(value):
        raise UserError(f"{what}: must be a finite number, got {original!r}")
    return value


def _number(value, what: str):
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number or a string with units, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float):
            _finite(value, what, value)
        if value < 0:
            raise UserError(f"{what}: must not be negative, got {value!r}")
        return value
    return None


def parse_bytes(value: str | int | float, what: str = "size") -> int:
    """'16MiB' -> 16777216; '1GB' -> 10**9; 4096 -> 4096. Fractions of a byte are rounded down."""
    n = _number(value, what)
    if n is None:
        m = _SIZE_RE.match(str(value).strip())
        if not m:
            raise UserError(f"{what}: cannot parse {value!r} as a size (e.g. 4096, 16MiB, 1GB)")
        unit = m.group(3) or ""
        if unit == "b":  # lower-case b alone means bits, which is a rate unit, not a size
            raise UserError(f"{what}: {value!r} is in bits; write sizes in bytes (e.g. 16MiB)")
        n = _finite(float(m.group(1)) * _PREFIX[(m.group(2) or "").lower()], what, value)
    if n > MAX_BYTES:
        raise UserError(f"{what}: {value!r} is more than the largest size, {format_bytes(MAX_BYTES)}")
    return int(n)


def parse_rate(value: str | int | float, what: str = "rate") -> float:
    """Bytes per second. '1gbit' and '1Gbps' are bits (tc's convention); '25GB/s' and '25GBps' are bytes."""
    n = _number(value, what)
    if n is not None:
        return float(n)
    text = str(value).strip().replace(" ", "")
    m = _RATE_RE.match(text)
    if not m:
        raise UserError(f"{what}: cannot parse {value!r} as a rate (e.g. 1gbit, 25GB/s, 12.5e9)")
    number, prefix, unit = float(m.group(1)), (m.group(2) or "").lower(), m.group(3) or ""
    unit_l = unit.lower()
    is_bits = unit_l in ("bit", "bits", "bit/s") or (unit_l in ("b", "bps", "b/s") and unit[0] == "b")
    if unit_l.startswith("byte") or unit in ("B", "B/s", "Bps"):
        is_bits = False
    rate = _finite(number * _PREFIX[prefix], what, value)
    return rate / 8 if is_bits else rate


def parse_seconds(value: str | int | float, what: str = "time") -> float:
    """'5us' -> 5e-6; '1.5ms' -> 0.0015; 2 -> 2.0."""
    n = _number(value, what)
    if n is not None:
        return float(n)
    m = _TIME_RE.match(str(value).strip())
    if not m:
        raise UserError(f"{what}: cannot parse {value!r} as a duration (e.g. 5us, 1.5ms, 2s)")
    mul, div = _TIME_UNIT[m.group(2)]
    return _finite(float(m.group(1)) * mul / div, what, value)


def format_bytes(nbytes: float) -> str:
    """Binary-prefixed size for tables: 16777216 -> '16MiB'."""
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:,.0f}{unit}" if value == int(value) or value >= 1000 else f"{value:.2f}{unit}"
    return f"{int(nbytes)}B"


# Durations in tables: (unit, seconds, used from); hours up to 4 days (``26.1h`` reads better than ``1.09d``).
_DURATION_UNITS = (("ns", 1e-9, 0.0), ("us", 1e-6, 1e-6), ("ms", 1e-3, 1e-3), ("s", 1.0, 1.0), ("min", 60.0, 60.0),
                   ("h", 3600.0, 3600.0), ("d", 86400.0, 4 * 86400.0))


def format_duration(seconds: float) -> str:
    """The one display format of a duration (every table of both CLIs): 775ms, 8.78s, 24.2min, 26.1h, 17.5d.

    Three significant digits in the largest unit that keeps the number >= 1, never an exponent, so a column
    never mixes ``1.6h`` with ``1.45e+03s``; zero is ``0``, what is not finite ``-``.
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds == 0:
        return "0"
    sign, x = ("-" if seconds < 0 else ""), abs(float(seconds))
    first = max(i for i, (_, _, start) in enumerate(_DURATION_UNITS) if x >= start)
    for unit, scale, _ in _DURATION_UNITS[first:]:
        text = f"{x / scale:.3g}"
        if "e" not in text:  # 999.7ms rounds to 1e+03: the next unit says 1s
            return f"{sign}{text}{unit}"
    return f"{sign}{x / 86400.0:,.0f}d"  # thousands of days


def format_count(n: float) -> str:
    """A count for tables and messages: 4,190,208; 1.6e+14 becomes 160,000,000,000,000 (never truncated)."""
    return f"{int(n):,}" if math.isfinite(n) else "-"


def parse_size_list(spec: str, factor: float = 2.0, what: str = "sizes") -> list[int]:
    """'1KiB:64MiB' -> 1KiB, 2KiB, ... 64MiB (times ``factor``, like nccl-tests -b/-e/-f); '4KiB,1MiB' -> both."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 < factor <= 1024:
        raise UserError(f"factor: must be a number in (1, 1024], got {factor!r}")
    sizes: list[int] = []
    for part in split_list(spec, what):
        lo_s, colon, hi_s = part.partition(":")
        lo = parse_bytes(lo_s, what)
        if not colon:
            if lo < 1:
                raise UserError(f"{what}: sizes must be >= 1 byte, got {part!r}")
            sizes.append(lo)
            continue
        hi = parse_bytes(hi_s, what)
        if lo < 1 or hi < lo:
            raise UserError(f"{what}: range {part!r} must go from >= 1 byte up to a larger size")
        size = lo
        while size <= hi:
            sizes.append(int(size))
            size = max(int(size * factor), size + 1)
            if len(sizes) > MAX_LIST_ITEMS:
                raise UserError(f"{what}: {spec!r} makes more than {MAX_LIST_ITEMS} sizes; use a larger "
                                "factor or a shorter range")
    if not sizes:
        raise UserError(f"{what}: no sizes in {spec!r}")
    return sizes


def plain_number(x: float) -> str:
    """12.0 -> '12', 0.1 -> '0.1': the shortest plain text of a number, for unit strings and names."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:.12g}"


def _pick_unit(value: float, candidates: list[tuple[float, str, int]], parse: Any, exact: bool) -> str | None:
    """The most readable of ``(mantissa, text, preference)`` that parses back to ``value``.

    Mantissas in [1, 1000) first, then fewest significant digits (200mbit over 25MB/s, 6.4GB/s over
    51.2gbit), then preference. ``exact``: the float must round-trip (files); else 4 significant digits
    (tables).
    """
    scored = []
    for mantissa, text, preference in candidates:
        if not exact:
            number = f"{mantissa:.4g}"
            text, mantissa = number + text[len(plain_number(mantissa)) :], float(number)
        back = parse(text)
        if back == value or not exact and math.isclose(back, value, rel_tol=1e-3):
            digits = len(plain_number(mantissa).replace(".", "").lstrip("0").rstrip("0"))
            scored.append((not 1 <= mantissa < 1000, digits, preference, len(text), text))
    best = min(scored, default=None)
    return best[4] if best is not None else None


def format_rate(bandwidth_Bps: float, exact: bool = True) -> str:
    """Unit string for a rate: 1.25e8 -> '1gbit', 2.5e7 -> '200mbit', 3e11 -> '300GB/s'.

    Ties go to bits up to 1 Tbit/s (tc's convention for network links) and to bytes above (GPU links).
    """
    bits_first = bandwidth_Bps * 8 <= 1e12
    candidates = []
    for prefix, scale in (("t", 1e12), ("g", 1e9), ("m", 1e6), ("k", 1e3), ("", 1.0)):
        bits, byts = bandwidth_Bps * 8 / scale, bandwidth_Bps / scale
        candidates.append((bits, f"{plain_number(bits)}{prefix}bit", 0 if bits_first else 1))
        candidates.append(
            (byts, f"{plain_number(byts)}{prefix.upper() if prefix != 'k' else 'k'}B/s", 1 if bits_first else 0)
        )
    text = _pick_unit(bandwidth_Bps, candidates, parse_rate, exact)
    return text or (repr(float(bandwidth_Bps)) if exact else f"{bandwidth_Bps:.4g}B/s")


def format_seconds(seconds: float, exact: bool = True) -> str:
    """Unit string for a duration: 0.0015 -> '1.5ms', 5e-07 -> '0.5us' (500*1e-9 is not exactly 5e-07)."""
    if seconds == 0:
        return "0s"
    candidates = [
        (seconds / scale, f"{plain_number(seconds / scale)}{unit}", 0)
        for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))
    ]
    text = _pick_unit(seconds, candidates, parse_seconds, exact)
    return text or (repr(float(seconds)) if exact else f"{seconds:.4g}s")


def split_list(text: str, what: str = "list") -> list[str]:
    """'tree, ps,ring' -> ['tree', 'ps', 'ring']. An empty item ('1,,2', a trailing comma) is an error, not
    silently dropped: it is usually a typo."""
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise UserError(f"{what}: empty, expected a comma-separated list")
    if not all(items):
        raise UserError(f"{what}: empty item in {text!r}")
    return items


def parse_int(text: str, what: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """One integer in [minimum, maximum], from a string or a number."""
    raw = str(text).strip()
    if not re.fullmatch(r"[-+]?[0-9]{1,30}", raw):
        raise UserError(f"{what}: expected an integer, got {text!r}")
    value = int(raw)
    if value < minimum or value > maximum:
        raise UserError(f"{what}: must be in {minimum}..{maximum}, got {value}")
    return value


def parse_fraction(text: str | float, what: str) -> float:
    """'0.5' -> 0.5: a number strictly between 0 and 1 (NaN and infinities are not)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise UserError(f"{what}: expected a fraction like 0.5, got {text!r}") from None
    if not 0 < value < 1:
        raise UserError(f"{what}: must be a fraction in (0, 1), got {text!r}")
    return value


def parse_int_list(text: str, what: str, minimum: int = 1, maximum: int = MAX_COUNT) -> list[int]:
    """'1,32,128' -> [1, 32, 128]; '1:128' -> [1, 2, 4, ..., 128] (doubling, as nccl-tests -b/-e -f 2)."""
    values: list[int] = []
    for part in split_list(text, what):
        lo, colon, hi = part.partition(":")
        if not colon:
            values.append(parse_int(part, what, minimum, maximum))
            continue
        start, stop = parse_int(lo, what, minimum, maximum), parse_int(hi, what, minimum, maximum)
        if stop < start:
            raise UserError(f"{what}: range {part!r} must go up, e.g. 1:128")
        while start <= stop:
            values.append(start)
            start *= 2
    return values


def parse_options(text: str, what: str) -> dict[str, str]:
    """'servers=4, colocated=false' -> {'servers': '4', 'colocated': 'false'}: values stay strings, for a
    pydantic model (or the caller) to type and bound. A missing '=', an empty key or a repeated key is an
    error."""
    options: dict[str, str] = {}
    for item in (x.strip() for x in str(text).split(",")):
        if not item:
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key or not value:
            raise UserError(f"{what}: expected key=value, got {item!r}")
        if key in options:
            raise UserError(f"{what}: {key!r} given twice")
        options[key] = value
    return options

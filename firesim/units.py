"""Parse sizes, rates and durations written the way people write them ("16MiB", "25GB/s", "1gbit", "5us").

Decimal prefixes are powers of 1000 and binary ones (Ki, Mi, Gi, Ti) powers of 1024, as nccl-tests and tc do.
A bare number is taken in the base unit (bytes, bytes/s, seconds).
"""

from __future__ import annotations

import re

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


def _number(value, what: str):
    if isinstance(value, bool):
        raise UserError(f"{what}: expected a number or a string with units, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise UserError(f"{what}: must not be negative, got {value!r}")
        return value
    return None


def parse_bytes(value: str | int | float, what: str = "size") -> int:
    """'16MiB' -> 16777216; '1GB' -> 10**9; 4096 -> 4096. Fractions of a byte are rounded down."""
    n = _number(value, what)
    if n is not None:
        return int(n)
    m = _SIZE_RE.match(str(value).strip())
    if not m:
        raise UserError(f"{what}: cannot parse {value!r} as a size (e.g. 4096, 16MiB, 1GB)")
    unit = m.group(3) or ""
    if unit == "b":  # lower-case b alone means bits, which is a rate unit, not a size
        raise UserError(f"{what}: {value!r} is in bits; write sizes in bytes (e.g. 16MiB)")
    return int(float(m.group(1)) * _PREFIX[(m.group(2) or "").lower()])


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
    rate = number * _PREFIX[prefix]
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
    return float(m.group(1)) * mul / div


def format_bytes(nbytes: float) -> str:
    """Binary-prefixed size for tables: 16777216 -> '16MiB'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.2f}{unit}"
    return f"{int(nbytes)}B"


def parse_size_list(spec: str, factor: float = 2.0, what: str = "sizes") -> list[int]:
    """'1KiB:64MiB' -> 1KiB, 2KiB, ... 64MiB (times ``factor``, like nccl-tests -b/-e/-f); '4KiB,1MiB' -> both."""
    if factor <= 1:
        raise UserError(f"factor: must be > 1, got {factor}")
    sizes: list[int] = []
    for part in filter(None, (x.strip() for x in str(spec).split(","))):
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
    if not sizes:
        raise UserError(f"{what}: no sizes in {spec!r}")
    return sizes

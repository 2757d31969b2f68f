"""Names a firerun command line uses, known without importing torch: `firerun run` checks a whole command
line before it starts any rank, and importing torch there would cost seconds per launch.
"""

from __future__ import annotations

from firesim.errors import UserError

BUILTIN = "builtin"  # the backend's own all-reduce, measured beside the plans by `firerun bench`
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")  # torch dtypes of the same names
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                 "fp64": "float64", "double": "float64"}


def dtype_name(text: str) -> str:
    """'fp16' -> 'float16'; a one-line UserError for a name firerun does not move."""
    key = str(text).strip().lower()
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_NAMES:
        raise UserError(f"dtype: unknown {text!r}; choose from {', '.join(DTYPE_NAMES)}")
    return key

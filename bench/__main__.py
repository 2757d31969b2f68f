"""Run every benchmark module in this folder (or the ones named: `python -m bench engine analytic`)."""

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    found = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))
    chosen = names or found
    unknown = sorted(set(chosen) - set(found))
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(found)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"\n=== bench.{name}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"bench.{name}").main()
        print(f"(bench.{name}: {time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

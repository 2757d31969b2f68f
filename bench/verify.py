"""Plan verification speed: the vectorised ``verify`` against the event loop (``verify_reference``) side by side,
and ``verify`` alone on the 1024-rank ring (~4 M ops). Target: the 1024-rank ring in <= 2 s.

The event loop needs minutes for the 1024-rank ring, so the ratio is measured on a 128-rank ring (and a
halving-doubling plan, which the vectorised proof runs on bitsets). Wall time, CPU time of this process (the
machine is shared) and, in a second run, peak memory (tracemalloc, which numpy reports to, slows it) are shown
with the load average.
"""

import os
import time
import tracemalloc

from rich.console import Console
from rich.table import Table

from firesim.plans import build, verify
from firesim.plans.verify import verify_reference

TARGET_s = 2.0
SIDE_BY_SIDE = [("ring", 128), ("halving_doubling", 256)]
ALONE = [("ring", 1024, TARGET_s), ("halving_doubling", 1024, None), ("double_binary_tree", 4096, None),
         ("hierarchical:ranks_per_node=8", 1024, None)]


def _timed(fn) -> tuple[float, float, int]:
    """Wall s and CPU s of one call, and the peak traced bytes of another."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return wall, cpu, peak


def main() -> None:
    console = Console(width=160)
    load = os.getloadavg()[0]
    table = Table(title=f"verify: vectorised vs event loop, same plans, one run each (load {load:.1f})")
    for col in ("plan", "ranks", "ops", "event loop s", "vectorised s", "speed-up", "ops/s", "peak MiB"):
        table.add_column(col, justify="right")
    for spec, ranks in SIDE_BY_SIDE:
        plan = build(spec, ranks, 1 << 20)
        slow = time.perf_counter()
        verify_reference(plan)
        slow = time.perf_counter() - slow
        fast, _, peak = _timed(lambda p=plan: verify(p))
        table.add_row(spec, f"{ranks}", f"{plan.n_ops:,}", f"{slow:.2f}", f"{fast:.2f}", f"{slow / fast:.0f}x",
                      f"{plan.n_ops / fast:,.0f}", f"{peak / 2**20:.0f}")
    console.print(table)
    table = Table(title=f"verify alone (load {load:.1f})")
    for col in ("plan", "ranks", "ops", "wall s", "cpu s", "ops/s", "peak MiB", "target"):
        table.add_column(col, justify="right")
    for spec, ranks, target_s in ALONE:
        plan = build(spec, ranks, 64 << 20)
        wall, cpu, peak = _timed(lambda p=plan: verify(p))
        verdict = "-" if target_s is None else f"{'ok' if wall <= target_s else 'SLOW'} (<= {target_s:g} s)"
        table.add_row(spec, f"{ranks}", f"{plan.n_ops:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{plan.n_ops / wall:,.0f}",
                      f"{peak / 2**20:.0f}", verdict)
    console.print(table)


if __name__ == "__main__":
    main()

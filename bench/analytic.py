"""Analytic-sweep throughput: configurations (algorithm x ranks x size) priced per second, and the
end-to-end `predict` rate. Target: >= 1e5 configurations/s."""

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from firesim.errors import UserError
from firesim.hardware import resolve_cluster
from firesim.plans import algorithms, allreduce_time, resolve
from firesim.training import predict
from firesim.workload import load_workload

TARGET_PER_S = 1e5


def _rate(fn, configs: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return configs / best


def _plain_closed_forms() -> list[str]:
    """Registered algorithms that have a closed form and need no options."""
    names = []
    for algorithm in algorithms():
        try:
            if resolve(algorithm.name).has_closed_form:
                names.append(algorithm.name)
        except UserError:
            continue
    return names


def main() -> None:
    rng = np.random.default_rng(0)
    configs = 1_000_000
    ranks = rng.integers(2, 4097, configs)
    nbytes = rng.integers(1, 2**31, configs).astype(np.float64)
    table = Table(title=f"analytic all-reduce sweep, {configs:,} random (ranks <= 4096, size <= 2 GiB) configs")
    for col in ("algorithm", "configs/s", f"vs target {TARGET_PER_S:.0e}"):
        table.add_column(col, justify="right")
    for algo in _plain_closed_forms():
        rate = _rate(lambda a=algo: allreduce_time(a, ranks, nbytes, 5e-6, 1e-10, 1e-11), configs)
        table.add_row(algo, f"{rate:,.0f}", f"{rate / TARGET_PER_S:.1f}x")
    profile, cluster = load_workload("googlenet"), resolve_cluster("dgx-a100")
    grid = [(g, a) for g in (1, 2, 4, 8, 16, 32, 64, 128) for a in ("tree", "ps", "ring", "hierarchical")]
    rate = _rate(lambda: [predict(profile, cluster, g, a, batch=1024) for g, a in grid], len(grid))
    table.add_row("predict() rows", f"{rate:,.0f}", "(full training model, per row)")
    Console().print(table)

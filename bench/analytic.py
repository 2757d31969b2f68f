"""Analytic-sweep throughput: configurations (algorithm x ranks x size) priced per second, and the
end-to-end `predict` rate. Target: >= 1e5 configurations/s."""

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from firesim import analytic
from firesim.hardware import resolve_cluster
from firesim.training import predict
from models.catalog import load_profile

TARGET_PER_S = 1e5


def _rate(fn, configs: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return configs / best


def main() -> None:
    rng = np.random.default_rng(0)
    configs = 1_000_000
    ranks = rng.integers(2, 4097, configs)
    nbytes = rng.integers(1, 2**31, configs).astype(np.float64)
    table = Table(title=f"analytic all-reduce sweep, {configs:,} random (ranks <= 4096, size <= 2 GiB) configs")
    for col in ("algorithm", "configs/s", f"vs target {TARGET_PER_S:.0e}"):
        table.add_column(col, justify="right")
    for algo in analytic.FORMULAS:
        rate = _rate(lambda a=algo: analytic.allreduce_time(a, ranks, nbytes, 5e-6, 1e-10, 1e-11), configs)
        table.add_row(algo, f"{rate:,.0f}", f"{rate / TARGET_PER_S:.1f}x")
    profile, cluster = load_profile("googlenet"), resolve_cluster("dgx-a100")
    grid = [(g, a) for g in (1, 2, 4, 8, 16, 32, 64, 128) for a in ("tree", "ps", "ring", "hierarchical")]
    rate = _rate(lambda: [predict(profile, cluster, g, a, batch=1024) for g, a in grid], len(grid))
    table.add_row("predict() rows", f"{rate:,.0f}", "(full training model, per row)")
    Console().print(table)

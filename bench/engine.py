"""Engine throughput: wall time, CPU time, events/s and peak memory of ``firesim.engine.simulate`` on large
plans, against the targets of issue 12, and one training iteration played on the engine.

Targets (issue 12): ring all-reduce of 64 MiB on 1024 ranks of a k=16 fat tree <= 1 s; binomial tree on 4096
ranks <= 0.5 s; SimGrid on this machine took 11.4 s (LV08) / 16.5 s (CM02) for that ring and 0.44 s for that
tree. Events are what a one-event-per-thing simulator processes: one per op plus a start and an end per flow.
Wall time counts building the topology, routing and plan preprocessing but not building the plan (shown
apart; a 16-rank warm-up runs first); the cases with a target show the best of 3 runs. The machine is
shared, so the table shows the load average and this process's CPU time beside wall time, and every case
is also run with ``fifo_pairs=False`` (every message its own flow: no connection is
private, so everything goes through the windowed network) as a baseline measured in the same run. Peak
memory is the largest traced allocation (``tracemalloc``) of a second run of the case.

Regenerate on a quiet machine with ``make bench`` (or ``python -m bench engine``).
"""

import os
import time
import tracemalloc

from rich.console import Console
from rich.table import Table

from firesim import topology as topo
from firesim.engine import Transport, simulate
from firesim.hardware import resolve_cluster
from firesim.plans import build
from firesim.training import simulate_iteration
from firesim.workload import load_workload

ALPHA_s, BETA_s_per_byte, GAMMA_s_per_byte = 5e-6, 1 / 12.5e9, 1 / 50e9
NBYTES = 64 * 2**20
SIMGRID = {"ring": "11.4 s LV08 / 16.5 s CM02", "tree": "0.44 s"}  # issue 12, measured on this machine
COLLECTIVES = [  # label, algorithm, ranks, topology spec (None: non-blocking star), target seconds
    ("ring, fat-tree k=16", "ring", 1024, "fat-tree:k=16", 1.0),
    ("tree, fat-tree k=26", "tree", 4096, "fat-tree", 0.5),
    ("ring, star", "ring", 1024, None, None),
    ("dbt, fat-tree k=16", "double_binary_tree", 1024, "fat-tree:k=16", None),
    ("ps, fat-tree k=16", "ps", 1024, "fat-tree:k=16", None),
    ("halving-doubling, fat-tree k=16", "halving_doubling", 1024, "fat-tree:k=16", None),
]
BASELINE = Transport(fifo_pairs=False)
REPEAT = 3
ITERATIONS = [  # cluster, algorithm: GoogLeNet, 128 GPUs, batch 8 per GPU (FireCaffe's 1024), 25 MB buckets
    ("titan", "tree"), ("titan", "ring"), ("dgx-a100", "ring"), ("dgx-a100", "hierarchical")]
ITERATION_TARGET_s = 2.0


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _verdict(wall_s: float, target_s: float | None) -> str:
    if target_s is None:
        return "-"
    return f"{wall_s / target_s:.2f} x target ({'ok' if wall_s <= target_s else 'SLOW'}, <= {target_s:g} s)"


def main() -> None:
    console = Console(width=220)  # a full table also when the output is not a terminal
    # one small run first, so that the first case does not pay this process's one-time imports
    simulate(build("ring", 16, 2**20), "fat-tree:k=4", alpha_s=ALPHA_s, gamma_s_per_byte=GAMMA_s_per_byte)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table(title=f"engine: 64 MiB all-reduce (alpha 5 us, 12.5 GB/s links, gamma 1/50 GB/s); "
                        f"load {load:.1f} on {os.cpu_count()} cores")
    for col in ("case", "ranks", "ops", "flows", "private", "events", "passes", "windows", "plan build s",
                "wall s", "cpu s", "events/s", "peak MiB", "simulated", "target", "baseline wall s", "SimGrid"):
        table.add_column(col, justify="right")
    for label, algo, ranks, spec, target_s in COLLECTIVES:
        plan, build_s, _ = _timed(lambda a=algo, r=ranks: build(a, r, NBYTES))

        def run(transport=None, p=plan, s=spec, r=ranks):
            G = None if s is None else topo.from_spec(s, r)
            return simulate(p, G, alpha_s=ALPHA_s, beta_s_per_byte=BETA_s_per_byte, gamma_s_per_byte=GAMMA_s_per_byte,
                            transport=transport)

        runs = [_timed(run) for _ in range(REPEAT if target_s else 1)]  # targets: best of REPEAT
        trace, wall_s, cpu_s = runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs)
        baseline, base_s, _ = _timed(lambda: run(BASELINE))
        peak = _peak_mib(run)
        extra = trace.header.extra
        flows = (extra["events"] - plan.n_ops) // 2
        table.add_row(label, f"{ranks}", f"{plan.n_ops:,}", f"{flows:,}", f"{extra['private_messages']:,}",
                      f"{extra['events']:,}", f"{extra['dataflow_passes']:,}", f"{extra['windows']:,}",
                      f"{build_s:.2f}", f"{wall_s:.2f}", f"{cpu_s:.2f}", f"{extra['events'] / wall_s:,.0f}",
                      f"{peak:,.0f}", f"{trace.duration_s * 1e3:.2f} ms", _verdict(wall_s, target_s),
                      f"{base_s:.2f} ({base_s / wall_s:.1f}x)", SIMGRID.get(algo, "-") if target_s else "-")
    console.print(table)
    console.print("baseline: the same plan with Transport(fifo_pairs=False) in the same run (its simulated times "
                  "differ where messages of one pair overlap)")

    profile = load_workload("googlenet")
    table = Table(title="engine: one GoogLeNet iteration, 128 GPUs, batch 8/GPU, DDP buckets (25 MB, first 1 MB)")
    for col in ("cluster", "algorithm", "ops", "events", "wall s", "cpu s", "events/s", "iteration",
                "exposed comm", "target"):
        table.add_column(col, justify="right")
    for cluster_name, algo in ITERATIONS:
        cluster = resolve_cluster(cluster_name)
        it, wall_s, cpu_s = _timed(lambda c=cluster, a=algo: simulate_iteration(profile, c, 128, a, batch_per_gpu=8))
        events = it.trace.header.extra["events"]
        table.add_row(cluster_name, algo, f"{len(it.trace):,}", f"{events:,}", f"{wall_s:.2f}", f"{cpu_s:.2f}",
                      f"{events / wall_s:,.0f}", f"{it.iteration_s * 1e3:.2f} ms", f"{it.exposed_comm_s * 1e3:.2f} ms",
                      _verdict(wall_s, ITERATION_TARGET_s))
    console.print(table)


if __name__ == "__main__":
    main()

"""nccl-tests-style all-reduce benchmark of any plans beside the backend's own all_reduce.

Measurement protocol (so that ratios between algorithms mean something on a noisy, shared machine):

* every algorithm is warmed up, then measured in ``reps`` rounds that interleave the algorithms (round 1:
  builtin, ring, tree ...; round 2: the same ...), so a burst of load elsewhere hits them all alike;
* a round times ``iters`` back-to-back runs between two barriers; its time is the mean per run on the
  slowest rank (a collective is not done until every rank is); the reported time is the median over rounds;
* buffers hold zeros while timed (sums stay zero: no overflow to inf, no denormals) and are checked once
  afterwards with integer data whose sum is exact in the dtype: ``wrong`` counts elements that differ from
  the exact sum, summed over ranks, like nccl-tests' #wrong.

algbw = bytes / time; busbw = algbw * 2 (p - 1) / p with p the ranks holding data (nccl-tests' all-reduce
definition), so the bus bandwidth of every algorithm compares with the link speed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from firerun.executor import Executor, dtype_name
from firerun.names import BUILTIN
from firesim.analytic import allreduce_bandwidths_GBps
from firesim.errors import UserError
from firesim.plans import Plan, resolve, verify


@dataclass(frozen=True)
class BenchRecord:
    """One row of the table. Times in microseconds, bandwidths in GB/s (10^9 bytes/s, as nccl-tests)."""

    algo: str
    size_bytes: int
    count: int
    dtype: str
    ranks: int
    workers: int
    backend: str
    time_us: float
    algbw_GBps: float
    busbw_GBps: float
    vs_builtin: float | None  # builtin time / this time: > 1 means faster than the built-in all_reduce
    wrong: int
    iters: int
    reps: int
    time_us_reps: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def plan_for(algo: str, world: int, nbytes: int) -> Plan:
    """The plan ``algo`` over this job's ``world`` ranks. Dedicated PS servers come out of the world:
    ps:servers=2,colocated=false on 6 ranks is 4 workers and 2 servers."""
    choice = resolve(algo)
    return choice.build(choice.workers(world), nbytes)


# Largest value + 1 per dtype so that a sum over 64 ranks stays an exactly representable integer:
# float32 2^24, float16 2^11, bfloat16 2^8.
_MODULUS = {torch.float32: 65521, torch.float64: 65521, torch.float16: 31, torch.bfloat16: 5}


def _check_ints(rank: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    i = torch.arange(numel, dtype=torch.int64)
    return (i * (2 * rank + 3) + 7 * rank + 1) % _MODULUS[dtype]


def check_data(rank: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer data, different on every rank and element, whose sum over <= 64 ranks is exact in ``dtype``."""
    return _check_ints(rank, numel, dtype).to(dtype)


def expected_sum(workers: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    total = torch.zeros(numel, dtype=torch.int64)
    for q in range(workers):
        total += _check_ints(q, numel, dtype)
    return total.to(dtype)


def count_wrong(result: torch.Tensor, workers: int) -> int:
    expected = expected_sum(workers, result.numel(), result.dtype).to(result.device)
    return int((result.view(-1) != expected).sum().item())


class _Case:
    """One algorithm at one size: its plan (None for the builtin) and buffer."""

    def __init__(self, ex: Executor, algo: str, nbytes: int, dtype: torch.dtype):
        self.algo = algo
        self.plan = None if algo == BUILTIN else plan_for(algo, ex.size, nbytes)
        self.workers = ex.size if self.plan is None else self.plan.workers
        self.is_worker = ex.rank < self.workers
        numel = nbytes // torch.empty(0, dtype=dtype).element_size()
        self.buf = torch.zeros(numel, dtype=dtype, device=ex.device) if self.is_worker else None
        self.dtype = dtype

    def run(self, ex: Executor) -> None:
        if self.plan is None:
            ex.allreduce_builtin(self.buf)
        else:
            ex.run(self.plan, self.buf, trace=False, dtype=self.dtype)


def run_bench(ex: Executor, algos: list[str], sizes: list[int], *, dtype: torch.dtype = torch.float32,
              iters: int = 20, warmup: int = 5, reps: int = 3, check: bool = True,
              on_record=None) -> list[BenchRecord]:
    """Measure every algorithm at every size (see the module docstring). Every rank returns the records."""
    if iters < 1 or warmup < 0 or reps < 1:
        raise UserError("iters and reps must be >= 1 and warmup >= 0")
    algos = [BUILTIN] + [a for a in algos if a != BUILTIN]
    itemsize = torch.empty(0, dtype=dtype).element_size()
    for algo in algos[1:]:
        verify(plan_for(algo, ex.size, 0))  # proven once per algorithm: the plan does not depend on size
    records: list[BenchRecord] = []
    for size in sizes:
        nbytes = max(itemsize, size - size % itemsize)
        cases = [_Case(ex, algo, nbytes, dtype) for algo in algos]
        for case in cases:
            for _ in range(warmup):
                case.run(ex)
        times: dict[str, list[float]] = {c.algo: [] for c in cases}
        for _ in range(reps):
            for case in cases:
                ex.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    case.run(ex)
                ex.transport.synchronize()
                times[case.algo].append(ex.reduce_max((time.perf_counter() - t0) / iters))
        wrong = {c.algo: 0 for c in cases}
        if check:
            for case in cases:
                if case.is_worker:
                    case.buf.copy_(check_data(ex.rank, case.buf.numel(), dtype).to(case.buf.device))
                case.run(ex)
                mine = count_wrong(case.buf, case.workers) if case.is_worker else 0
                wrong[case.algo] = int(ex.reduce_sum(np.array([mine]))[0])
        builtin_s = statistics.median(times[BUILTIN])
        for case in cases:
            t_s = statistics.median(times[case.algo])
            p = case.workers
            algbw, busbw = allreduce_bandwidths_GBps(nbytes, t_s, p)
            record = BenchRecord(
                algo=case.algo, size_bytes=nbytes, count=nbytes // itemsize, dtype=dtype_name(dtype),
                ranks=ex.size, workers=p, backend=ex.transport.name, time_us=t_s * 1e6, algbw_GBps=algbw,
                busbw_GBps=busbw, vs_builtin=builtin_s / t_s,
                wrong=wrong[case.algo] if check else -1, iters=iters, reps=reps,
                time_us_reps=[t * 1e6 for t in times[case.algo]])
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


@dataclass(frozen=True)
class Overhead:
    """Ping-pong between ranks 0 and 1: raw backend calls vs the same exchange as a plan."""

    nbytes: int
    raw_one_way_us: float
    plan_one_way_us: float
    per_op_us: float  # extra time per plan op (a send or a recv at one end)
    backend: str
    ranks: int


def _raw_pingpong(ex: Executor, buf: torch.Tensor, round_trips: int) -> None:
    """The same exchange written directly against the backend: the floor the executor is measured against."""
    if ex.rank > 1:
        return
    peer = 1 - ex.rank
    if ex.backend == "mpi":
        from firerun.transport import mpi_buffer

        tr = ex.transport
        spec = mpi_buffer(buf, tr._types)
        for _ in range(round_trips):
            if ex.rank == 0:
                tr.comm.Send(spec, peer, 0)
                tr.comm.Recv(spec, peer, 0)
            else:
                tr.comm.Recv(spec, peer, 0)
                tr.comm.Send(spec, peer, 0)
        return
    import torch.distributed as dist

    group = ex.transport.group
    for _ in range(round_trips):
        if ex.rank == 0:
            dist.isend(buf, group=group, group_dst=peer).wait()
            dist.irecv(buf, group=group, group_src=peer).wait()
        else:
            dist.irecv(buf, group=group, group_src=peer).wait()
            dist.isend(buf, group=group, group_dst=peer).wait()


def measure_overhead(ex: Executor, nbytes: int = 1024, round_trips: int = 100, reps: int = 5) -> Overhead:
    """The interpreter's cost per op: (plan - raw) ping-pong time / ops, each the fastest of ``reps`` interleaved
    rounds (on a shared machine a round's latency is the cost plus whatever else ran; the minimum is the cost)."""
    from firerun.calibrate import pingpong_plan

    if ex.size < 2:
        raise UserError("overhead: needs at least 2 ranks")
    plan = pingpong_plan(ex.size, 0, 1, nbytes, round_trips)
    buf = torch.zeros(nbytes // 4, dtype=torch.float32, device=ex.device)
    raw, planned = [], []
    for rep in range(reps + 1):
        for kind in ("raw", "plan"):
            ex.barrier()
            t0 = time.perf_counter()
            if kind == "raw":
                _raw_pingpong(ex, buf, round_trips)
            else:
                ex.run(plan, buf, trace=False)
            t = ex.reduce_max((time.perf_counter() - t0) / (2 * round_trips) if ex.rank == 0 else 0.0)
            if rep:  # the first round warms up connections and buffers
                (raw if kind == "raw" else planned).append(t)
    raw_s, plan_s = min(raw), min(planned)  # latency: the least-disturbed round is the cost itself
    # per one-way message the plan runs one op at each end (send here, recv there)
    return Overhead(nbytes=nbytes, raw_one_way_us=raw_s * 1e6, plan_one_way_us=plan_s * 1e6,
                    per_op_us=(plan_s - raw_s) / 2 * 1e6, backend=ex.transport.name, ranks=ex.size)

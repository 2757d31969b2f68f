"""Prove the executor right on this job: every algorithm, awkward sizes, every dtype, exact sums.

``firerun check`` is what to run first on a new cluster (and what the tests run on loopback): for each
builder configuration that fits the world size, buffers that do not divide evenly into chunks (including
ones with fewer elements than chunks, so some messages are empty), integer data whose sum is exact in the
dtype, the result compared element by element with the exact sum on every worker rank; the backend's own
all_reduce checked the same way. Traced runs also check that the gathered Trace matches the plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from firerun.bench import BUILTIN, check_data, count_wrong, plan_for
from firerun.executor import DTYPES, Executor, dtype_name
from firesim.errors import UserError
from firesim.plans import algorithms, resolve, verify


@dataclass(frozen=True)
class CheckRecord:
    algo: str
    numel: int
    dtype: str
    ranks: int
    workers: int
    ops: int
    wrong_by_rank: list[int]  # elements differing from the exact sum, per rank (servers: 0)
    trace_ok: bool | None  # rank 0's Trace has one well-formed record per plan op (None: not traced)

    @property
    def wrong(self) -> int:
        return sum(self.wrong_by_rank)

    def to_dict(self) -> dict:
        return {**asdict(self), "wrong": self.wrong}


def standard_algos(world: int) -> list[str]:
    """Every registered algorithm, plain and with the options that change its structure, that fits ``world``
    ranks."""
    specs = []
    for algorithm in algorithms():
        for spec in (algorithm.name, *algorithm.examples):
            try:
                choice = resolve(spec)
                choice.check(choice.workers(world))
            except UserError:
                continue  # needs options (hierarchical) or more ranks than the job has
            specs.append(spec)
    return specs


def standard_numels(world: int) -> list[int]:
    """Sizes that do not divide into the chunk counts: below the chunk count (empty chunks), odd, larger."""
    return [max(1, world - 1), 1031, 40_009]


def _trace_ok(trace, plan) -> bool:
    if trace is None or len(trace) != plan.n_ops:
        return False
    if not np.array_equal(trace.rank, plan.op_rank()) or not np.array_equal(trace.op, plan.op):
        return False
    return bool(np.all(trace.t_end >= trace.t_start - 1e-9) and np.all(np.isfinite(trace.t_end)))


def run_check(ex: Executor, algos: list[str], numels: list[int], dtypes: list[str], *,
              traced: bool = True, on_record=None) -> list[CheckRecord]:
    """Run every (algorithm, numel, dtype); every rank returns the records (wrong counts gathered)."""
    records: list[CheckRecord] = []
    for index, dtype_s in enumerate(dtypes):
        dtype = DTYPES[dtype_s] if dtype_s in DTYPES else dtype_s
        traced_now = traced and index == 0  # the trace does not depend on the dtype: check it once
        itemsize = torch.empty(0, dtype=dtype).element_size()
        for algo in [BUILTIN, *algos]:
            plan0 = None if algo == BUILTIN else plan_for(algo, ex.size, 0)
            if plan0 is not None:
                verify(plan0)
            for numel in numels:
                plan = None if plan0 is None else plan0.with_nbytes(numel * itemsize)
                workers = ex.size if plan is None else plan.workers
                buf = check_data(ex.rank, numel, dtype).to(ex.device) if ex.rank < workers else None
                trace = None
                if plan is None:
                    ex.allreduce_builtin(buf)
                else:
                    trace = ex.run(plan, buf, trace=traced_now, dtype=dtype)
                mine = count_wrong(buf, workers) if buf is not None else 0
                parts = ex.gather(np.array([mine]), [1] * ex.size, "check gather")
                by_rank = [int(a[0]) for a in parts] if parts is not None else []
                ok = None if plan is None or not traced_now else (_trace_ok(trace, plan) if ex.rank == 0 else True)
                record = CheckRecord(algo=algo, numel=numel, dtype=dtype_name(dtype), ranks=ex.size,
                                     workers=workers, ops=0 if plan is None else plan.n_ops,
                                     wrong_by_rank=by_rank, trace_ok=ok)
                records.append(record)
                if on_record is not None:
                    on_record(record)
    return records

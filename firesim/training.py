"""How long one synchronous data-parallel SGD iteration takes, and how long training takes, on a cluster.

compute: per-layer roofline (``firesim.compute``): forward and backward time of every layer from its FLOPs and
the bytes it moves, at the GPU's achieved rates for the dtype, plus the optimizer step (a memory-bound pass).
communication: gradients leave backward layer by layer, last layer first, in buckets (DDP: 25 MB, the first
1 MB); a bucket is ready when backward has run the layers it holds (their roofline backward time); one
communication stream all-reduces bucket after bucket with the chosen plan's cost, starting each as soon as it
is ready, so only the part that outlasts backward is exposed. ``overlap=False`` gives FireCaffe's schedule: the
whole gradient is exchanged after backward.
overheads (``firesim.compute.Overheads``): compute slowed while a bucket is on the wire, every step waiting for
the slowest of N GPUs, the optimizer step, and a per-node input-pipeline ceiling.
``iteration_s = compute_s + sync_s + interference_s + exposed_comm_s + input_wait_s``.
This module is the fast closed-form path; ``simulate_iteration`` plays the same schedule on the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import networkx as nx
import numpy as np

from firesim.cluster import allreduce_seconds, bucket_plan, cluster_topology, resolve_for
from firesim.compute import (
    DEFAULT_OVERHEADS,
    Overheads,
    Precision,
    StepTime,
    gpu_spread_factor,
    overlap_schedule,
    precision,
    rank_spread_factors,
    resolve_optimizer,
    step_time,
)
from firesim.engine import Transport, simulate
from firesim.errors import UserError
from firesim.hardware import Cluster, comm_params, price_per_gpu_hour, resolve_cluster
from firesim.limits import MAX_OPS, check_ops
from firesim.memory import memory_per_gpu
from firesim.plans import Op, Plan
from firesim.trace import Trace
from firesim.whatif import WhatIf, iteration_kwargs
from firesim.workload import ModelProfile, load_workload

DDP_BUCKET_NBYTES = 25 * 2**20
DDP_FIRST_BUCKET_NBYTES = 1 * 2**20


@dataclass(frozen=True)
class Bucket:
    """Gradients all-reduced together; ``ready_fraction`` of backward has run when the last of them is ready."""

    nbytes: int
    ready_fraction: float
    layers: tuple[str, ...]


def gradient_buckets(profile: ModelProfile, bucket_nbytes: int = DDP_BUCKET_NBYTES,
                     first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES, grad_nbytes_per_param: int = 4,
                     backward_layers_s: np.ndarray | None = None) -> list[Bucket]:
    """Split the gradients into buckets in backward order (last layer first), as DDP does.

    A bucket closes once it holds at least its size. Backward progress is measured in ``backward_layers_s``
    (per layer, forward order: the roofline's backward time), or in backward FLOPs when not given.
    """
    if bucket_nbytes <= 0 or first_bucket_nbytes <= 0:
        raise UserError("bucket size: must be > 0")
    layers = list(reversed(profile.layers))
    if backward_layers_s is None:
        work = np.array([layer.backward_flops for layer in layers], dtype=np.float64)
    else:
        work = np.asarray(backward_layers_s, np.float64)[::-1]
    done = np.cumsum(work) / max(work.sum(), 1e-300)
    buckets, names, nbytes, limit = [], [], 0, first_bucket_nbytes
    for i, layer in enumerate(layers):
        if layer.params == 0:
            continue
        names.append(layer.name)
        nbytes += layer.params * grad_nbytes_per_param
        if nbytes >= limit:
            buckets.append(Bucket(nbytes, float(done[i]), tuple(names)))
            names, nbytes, limit = [], 0, bucket_nbytes
    if nbytes:
        buckets.append(Bucket(nbytes, 1.0, tuple(names)))
    return buckets


@dataclass(frozen=True)
class Iteration:
    """One optimizer step on ``gpus`` GPUs: where the time goes.

    iteration_s = compute_s + sync_s + interference_s + exposed_comm_s + input_wait_s.
    """

    gpus: int
    algo: str
    batch_per_gpu: float
    accumulation: int  # micro-batches of batch_per_gpu per optimizer step
    compute_s: float  # one GPU's own work at nominal speed: accumulation x (forward + backward) + optimizer
    optimizer_s: float  # of which the optimizer step
    sync_s: float  # waiting for the slowest of the GPUs (speed spread)
    interference_s: float  # backward slowed while buckets were on the wire
    comm_s: float  # all-reduce time of every bucket, back to back, as if nothing overlapped
    exposed_comm_s: float  # communication not hidden behind backward
    input_wait_s: float  # waiting for the node's input pipeline
    iteration_s: float

    @property
    def samples_per_s(self) -> float:
        return self.gpus * self.batch_per_gpu * self.accumulation / self.iteration_s


@dataclass(frozen=True)
class _Setup:
    """Everything an iteration needs before its schedule: validated inputs and one GPU's nominal step."""

    prec: Precision
    optimizer: str
    step: StepTime
    buckets: list[Bucket]
    spread: float  # slowest GPU's time factor


def _setup(profile: ModelProfile, cluster: Cluster, gpus: int, batch_per_gpu: float, algo: str, dtype: str,
           grad_dtype: str | None, optimizer: str | None, overheads: Overheads, accumulation: int, overlap: bool,
           bucket_nbytes: int, first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES) -> _Setup:
    """Validate the inputs; one GPU's roofline step and the gradient buckets it emits."""
    if gpus < 1:
        raise UserError(f"gpus: must be >= 1, got {gpus}")
    if not batch_per_gpu >= 1:
        raise UserError(f"batch: {batch_per_gpu:g} samples per GPU on {gpus} GPUs; need at least 1")
    if not (isinstance(accumulation, int) and accumulation >= 1):
        raise UserError(f"accumulation: must be an integer >= 1, got {accumulation!r}")
    resolve_for(cluster, gpus, algo)
    if gpus > 1:
        comm_params(cluster, "inter")  # a compute-only profile cannot predict several GPUs
    prec = precision(dtype, grad_dtype)
    optimizer = resolve_optimizer(optimizer, profile)
    step = step_time(profile, cluster, batch_per_gpu, prec, optimizer, with_optimizer=overheads.optimizer)
    if overlap:
        buckets = gradient_buckets(profile, bucket_nbytes, first_bucket_nbytes, prec.grad_nbytes,
                                   step.backward_layers_s)
    else:
        buckets = [Bucket(profile.params * prec.grad_nbytes, 1.0, ())]
    return _Setup(prec, optimizer, step, buckets, gpu_spread_factor(gpus, overheads.gpu_spread))


def _input_floor_s(profile: ModelProfile, cluster: Cluster, gpus: int, samples_per_gpu: float,
                   overheads: Overheads) -> float:
    """Shortest step the node's input pipeline allows (0: not limiting)."""
    rate = overheads.input_samples_per_s(cluster, profile)
    return 0.0 if rate is None else samples_per_gpu * min(gpus, cluster.gpus_per_node) / rate


def iteration(profile: ModelProfile, cluster: Cluster, gpus: int, batch_per_gpu: float, algo: str, *,
              dtype: str = "fp32", grad_dtype: str | None = None, optimizer: str | None = None,
              overheads: Overheads = DEFAULT_OVERHEADS, accumulation: int = 1, overlap: bool = True,
              bucket_nbytes: int = DDP_BUCKET_NBYTES) -> Iteration:
    """Closed-form time of one synchronous data-parallel optimizer step (``accumulation`` micro-batches, one
    all-reduce overlapping the last backward), on the slowest of the GPUs."""
    s = _setup(profile, cluster, gpus, batch_per_gpu, algo, dtype, grad_dtype, optimizer, overheads, accumulation,
               overlap, bucket_nbytes)
    backward_s = s.step.backward_s * s.spread
    times = np.atleast_1d(allreduce_seconds(cluster, gpus, np.array([b.nbytes for b in s.buckets], np.float64),
                                            algo)).astype(np.float64)
    ready = np.array([b.ready_fraction for b in s.buckets]) * backward_s
    if overlap:
        _, done, backward_end = overlap_schedule(ready, times, backward_s, overheads.interference if gpus > 1 else 0.0)
        comm_end = float(done[-1])
    else:
        backward_end, comm_end = backward_s, backward_s + float(times.sum())
    compute_s = accumulation * (s.step.forward_s + s.step.backward_s) + s.step.optimizer_s
    exposed = max(0.0, comm_end - backward_end)
    busy_s = compute_s * s.spread + (backward_end - backward_s) + exposed
    floor_s = _input_floor_s(profile, cluster, gpus, batch_per_gpu * accumulation, overheads)
    return Iteration(gpus=gpus, algo=algo, batch_per_gpu=float(batch_per_gpu), accumulation=accumulation,
                     compute_s=compute_s, optimizer_s=s.step.optimizer_s, sync_s=compute_s * (s.spread - 1.0),
                     interference_s=backward_end - backward_s, comm_s=float(times.sum()), exposed_comm_s=exposed,
                     input_wait_s=max(0.0, floor_s - busy_s), iteration_s=max(busy_s, floor_s))


@dataclass(frozen=True)
class Prediction:
    """One row of ``firesim predict``."""

    model: str
    hardware: str
    gpus: int
    algo: str
    dtype: str
    grad_dtype: str
    optimizer: str
    batch: int
    batch_per_gpu: float
    accumulation: int
    compute_s: float
    optimizer_s: float
    sync_s: float
    interference_s: float
    comm_s: float
    exposed_comm_s: float
    input_wait_s: float
    iteration_s: float
    samples_per_s: float
    iterations: float
    speedup: float
    efficiency: float
    time_to_train_s: float
    cost: float | None  # USD for the whole training run, None where the price is unknown
    memory_GiB: float  # estimated per GPU (firesim.memory)
    memory_capacity_GiB: float | None
    fits: bool | None  # None where the GPU's memory size is unknown

    def record(self) -> dict:
        return asdict(self)


def predict(profile: ModelProfile | str, cluster: Cluster | str, gpus: int, algo: str, *, batch: int | None = None,
            batch_per_gpu: int | None = None, epochs: float = 90.0, baseline_batch: int = 32,
            dtype: str = "fp32", grad_dtype: str | None = None, optimizer: str | None = None,
            overheads: Overheads = DEFAULT_OVERHEADS, accumulation: int = 1, overlap: bool = True,
            bucket_nbytes: int = DDP_BUCKET_NBYTES, engine: str = "analytic",
            whatif: WhatIf | None = None, max_ops: int = MAX_OPS) -> Prediction:
    """Iteration time, time to train ``epochs`` epochs, speedup and efficiency against one GPU training
    the same epochs with its own batch (``baseline_batch``, FireCaffe's single-GPU GoogLeNet used 32), cost,
    and memory per GPU (does the configuration fit?).

    ``batch`` is the global batch per optimizer step (split over GPUs and ``accumulation`` micro-batches).
    engine="des" plays the iteration on the simulator (``simulate_iteration``: the cluster's topology, link
    contention between buckets and ranks); "analytic" (default) is the closed form. comm_s is the closed-form
    all-reduce time of the buckets either way; exposed_comm_s and iteration_s come from the chosen engine,
    which refuses an iteration of more than ``max_ops`` plan ops (``firesim.limits``). ``profile`` and
    ``cluster`` may be names (``"googlenet"``, ``"titan"``) or files, as on the command line.
    ``whatif`` (stragglers, per-rank speeds, per-link figures; ``firesim.whatif``) needs engine="des".
    """
    profile = load_workload(profile) if isinstance(profile, str) else profile
    cluster = resolve_cluster(cluster) if isinstance(cluster, str) else cluster
    if engine not in ("analytic", "des"):
        raise UserError(f"engine: must be 'analytic' or 'des', got {engine!r}")
    if whatif is not None and whatif.active and engine != "des":
        raise UserError("stragglers, rank speeds and link overrides are played by the simulator: use --engine des")
    if (batch is None) == (batch_per_gpu is None):
        raise UserError("batch: give exactly one of the global batch and the batch per GPU")
    if not epochs > 0:
        raise UserError(f"epochs: must be > 0, got {epochs}")
    if not (isinstance(accumulation, int) and accumulation >= 1):
        raise UserError(f"accumulation: must be an integer >= 1, got {accumulation!r}")
    global_batch = int(batch) if batch is not None else int(batch_per_gpu) * gpus * accumulation
    if global_batch < 1:
        raise UserError(f"batch: must be >= 1, got {global_batch}")
    micro = global_batch / max(gpus, 1) / accumulation
    options = dict(dtype=dtype, grad_dtype=grad_dtype, optimizer=optimizer, overheads=overheads,
                   accumulation=accumulation, overlap=overlap, bucket_nbytes=bucket_nbytes)
    it = iteration(profile, cluster, gpus, micro, algo, **options)
    if engine == "des" and (gpus > 1 or whatif is not None and whatif.active):
        sim = simulate_iteration(profile, cluster, gpus, algo, batch_per_gpu=micro, max_ops=max_ops, **options,
                                 **iteration_kwargs(whatif, cluster, gpus, algo))
        it = replace(it, exposed_comm_s=sim.exposed_comm_s, input_wait_s=sim.input_wait_s,
                     iteration_s=sim.iteration_s)
    base = iteration(profile, cluster, 1, baseline_batch, algo, **{**options, "accumulation": 1})
    iterations = epochs * profile.train_samples / global_batch
    time_s = iterations * it.iteration_s
    base_s = epochs * profile.train_samples / baseline_batch * base.iteration_s
    price = price_per_gpu_hour(cluster)
    prec = precision(dtype, grad_dtype)
    mem = memory_per_gpu(profile, micro, prec, resolve_optimizer(optimizer, profile), gpus,
                         cluster.gpu.memory_GiB)
    return Prediction(
        model=profile.name, hardware=cluster.name, gpus=gpus, algo=algo, dtype=prec.dtype,
        grad_dtype=prec.grad_dtype, optimizer=resolve_optimizer(optimizer, profile), batch=global_batch,
        batch_per_gpu=it.batch_per_gpu, accumulation=accumulation, compute_s=it.compute_s,
        optimizer_s=it.optimizer_s, sync_s=it.sync_s, interference_s=it.interference_s, comm_s=it.comm_s,
        exposed_comm_s=it.exposed_comm_s, input_wait_s=it.input_wait_s, iteration_s=it.iteration_s,
        samples_per_s=global_batch / it.iteration_s, iterations=iterations, speedup=base_s / time_s,
        efficiency=base_s / time_s / gpus, time_to_train_s=time_s,
        cost=None if price is None else price * gpus * time_s / 3600.0,
        memory_GiB=mem.total_nbytes / 2**30, memory_capacity_GiB=mem.capacity_GiB, fits=mem.fits,
    )


# ---------------------------------------------------------------------------------------------------------
# The same iteration played on the engine: backward emits the buckets rank by rank, each bucket's plan runs
# on the cluster's topology while backward goes on, ranks may differ in speed, links may be overridden.


@dataclass(frozen=True)
class Stragglers:
    """Seeded random compute slowdowns: each rank is a straggler with ``probability`` (its compute takes
    ``slowdown`` times longer), and every rank's speed is further multiplied by exp(N(0, ``jitter``))."""

    probability: float = 0.0
    slowdown: float = 2.0
    jitter: float = 0.0

    def speeds(self, gpus: int, seed: int) -> np.ndarray:
        """Per-rank speed factors (1 = nominal) drawn from ``seed``."""
        if not 0 <= self.probability <= 1:
            raise UserError(f"stragglers: probability must be in [0, 1], got {self.probability!r}")
        if not self.slowdown >= 1:
            raise UserError(f"stragglers: slowdown must be >= 1, got {self.slowdown!r}")
        if not self.jitter >= 0:
            raise UserError(f"stragglers: jitter must be >= 0, got {self.jitter!r}")
        rng = np.random.default_rng(seed)
        slow = rng.random(gpus) < self.probability
        return np.where(slow, 1.0 / self.slowdown, 1.0) * np.exp(rng.normal(0.0, self.jitter, gpus))


@dataclass(frozen=True)
class SimulatedIteration:
    """One iteration played on the engine; times from the start of the step, per rank where it matters."""

    gpus: int
    algo: str
    batch_per_gpu: float
    compute_s: float  # one GPU's own work at nominal speed (as Iteration.compute_s)
    iteration_s: float  # until the last rank finished its optimizer step (or the input pipeline allows)
    exposed_comm_s: float  # iteration_s minus the slowest rank's own busy time (compute, interference, input)
    input_wait_s: float
    rank_speed: np.ndarray  # the compute speed factors used (speed spread, stragglers, rank_speed)
    rank_end_s: np.ndarray  # when each rank (workers, then any dedicated servers) finished its last step
    bucket_nbytes: tuple[int, ...]
    bucket_ready_s: np.ndarray  # [bucket, rank]: backward has produced the bucket (dedicated servers: 0)
    bucket_done_s: np.ndarray  # [bucket, rank]: its all-reduce has finished at the rank
    trace: Trace
    backward_start_s: np.ndarray | None = None  # per worker: forward (and earlier micro-batches) done
    backward_end_s: np.ndarray | None = None  # per worker: its last backward done (timelines draw these)


@dataclass(frozen=True)
class MeasuredCompute:
    """One rank's step as measured (``firerun train --nproc`` takes it from a one-rank run on the same machine),
    for ``simulate_iteration`` to use instead of the roofline: forward, backward and optimizer seconds, and the
    gradient buckets as DDP formed them, in the order they were exchanged, each with the seconds from the start
    of backward until backward had produced it."""

    forward_s: float
    backward_s: float
    bucket_nbytes: tuple[int, ...]
    bucket_ready_s: tuple[float, ...]
    optimizer_s: float = 0.0

    def step(self) -> StepTime:
        return StepTime(np.array([self.forward_s]), np.array([self.backward_s]), self.optimizer_s)

    def buckets(self) -> list[Bucket]:
        if not (self.forward_s >= 0 and self.backward_s > 0 and self.optimizer_s >= 0 and self.bucket_nbytes
                and len(self.bucket_nbytes) == len(self.bucket_ready_s)):
            raise UserError("measured compute: needs forward_s, optimizer_s >= 0, backward_s > 0 and a ready time "
                            "per bucket")
        return [Bucket(int(n), min(max(t / self.backward_s, 0.0), 1.0), ())
                for n, t in zip(self.bucket_nbytes, self.bucket_ready_s)]


def _iteration_plan(base: Plan, bucket_nbytes: list[int], ready_s: np.ndarray, backward_end_s: np.ndarray,
                    optimizer_s: float, itemsize: int, name: str):
    """Every rank's program for one iteration, with its per-op bytes, release times and bucket of every op.

    For each bucket: a gate (a zero-second compute released when backward produced the bucket on this rank
    and naming the previous bucket's chunks, so buckets run one after another as on one NCCL stream), then
    the bucket's plan on chunks of its own. Last the optimizer step, after every chunk and after backward.
    """
    K, p, C, n0 = len(bucket_nbytes), base.ranks, base.chunks, base.n_ops
    rank0 = base.op_rank().astype(np.int64)
    bucket_of = np.repeat(np.arange(K), n0)
    gate_bucket = np.repeat(np.arange(K), p)
    rows_rank = np.concatenate([np.tile(rank0, K), np.tile(np.arange(p), K), np.arange(p)])
    rows_bucket = np.concatenate([bucket_of, gate_bucket, np.full(p, K)])
    rows_pos = np.concatenate([np.tile(np.arange(n0) - base.offsets[rank0], K), np.full(K * p + p, -1)])
    comm = np.full(K * n0, True)
    cols = {
        "op": np.concatenate([np.tile(base.op, K), np.full(K * p + p, Op.COMPUTE, np.int8)]),
        "chunk": np.concatenate([np.tile(base.chunk, K) + bucket_of * C,
                                 np.where(gate_bucket == 0, -1, (gate_bucket - 1) * C), np.zeros(p, np.int64)]),
        "span": np.concatenate([np.tile(base.span, K), np.where(gate_bucket == 0, 1, C), np.full(p, K * C)]),
        "peer": np.concatenate([np.tile(base.peer, K), np.full(K * p + p, -1)]),
        "seconds": np.concatenate([np.zeros(K * n0 + K * p), np.full(p, float(optimizer_s))]),
    }
    nbytes = np.concatenate([*(base.with_nbytes(nb).op_nbytes(itemsize) for nb in bucket_nbytes),
                             np.zeros(K * p + p, np.int64)])
    release = np.concatenate([np.full(K * n0, np.nan), ready_s.reshape(-1), backward_end_s])
    order = np.lexsort((rows_pos, rows_bucket, rows_rank))
    counts = np.bincount(rows_rank, minlength=p)
    plan = Plan(name=name, ranks=p, workers=base.workers, nbytes=int(sum(bucket_nbytes)), chunks=max(K * C, 1),
                offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                op=cols["op"][order], chunk=cols["chunk"][order].astype(np.int32),
                span=cols["span"][order].astype(np.int32), peer=cols["peer"][order].astype(np.int32),
                seconds=cols["seconds"][order], params={"base": base.name, "buckets": list(map(int, bucket_nbytes))})
    is_comm = np.concatenate([comm, np.zeros(K * p + p, bool)])[order]
    return plan, nbytes[order], release[order], rows_bucket[order], is_comm


def simulate_iteration(profile: ModelProfile, cluster: Cluster, gpus: int, algo: str, *, batch_per_gpu: float,
                       topology: nx.Graph | str | None = None, dtype: str = "fp32", grad_dtype: str | None = None,
                       optimizer: str | None = None, overheads: Overheads = DEFAULT_OVERHEADS, accumulation: int = 1,
                       overlap: bool = True, bucket_nbytes: int = DDP_BUCKET_NBYTES,
                       first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES, rank_speed=None,
                       stragglers: Stragglers | None = None, link_overrides: Mapping | None = None,
                       eager: bool = False, transport: Transport | None = None, seed: int = 0,
                       measured: MeasuredCompute | None = None, max_ops: int = MAX_OPS) -> SimulatedIteration:
    """Play one synchronous data-parallel iteration on the engine (``iteration`` is its closed form).

    Forward (and the first accumulation - 1 micro-batches), then backward emitting the buckets (reverse layer
    order, DDP sizes) as its layers' roofline backward time is done; each bucket's all-reduce (``algo``'s plan)
    starts on a rank once backward produced it there and the previous bucket is done there, and runs on
    ``topology`` (default ``cluster_topology``) while backward continues; the optimizer step follows the last
    bucket and backward. Each rank's compute is scaled by its speed: the overheads' GPU speed spread (normal
    scores in an order drawn from ``seed``, the slowest exactly the closed form's), ``rank_speed`` and
    ``stragglers``. ``transport`` and ``eager`` as in ``firesim.engine.simulate``. Overlap interference slows each rank's backward while a bucket is on the wire; the wire
    times it uses are the closed form's (the engine's own contention does not feed back into compute). The
    seed also salts ECMP. ``link_overrides`` as in ``firesim.engine.simulate``. ``measured`` replaces the
    roofline step and the profile's buckets by measured ones (``MeasuredCompute``). An iteration of more than
    ``max_ops`` ops (every bucket's plan, plus a gate per bucket and rank) is refused before anything per rank
    is computed.
    """
    st = _setup(profile, cluster, gpus, batch_per_gpu, algo, dtype, grad_dtype, optimizer, overheads, accumulation,
                overlap, bucket_nbytes, first_bucket_nbytes)
    if measured is not None:
        st = replace(st, step=measured.step(), buckets=measured.buckets())
    choice = resolve_for(cluster, gpus, algo)
    ranks = choice.ranks(gpus)
    check_ops(len(st.buckets) * (choice.ops(gpus) + ranks) + ranks,
              f"{profile.name} iteration, {algo} on {gpus} GPUs ({len(st.buckets)} buckets)", max_ops)
    speed = np.ones(gpus) if rank_speed is None else np.asarray(rank_speed, np.float64)
    if speed.shape != (gpus,) or not np.all(speed > 0):
        raise UserError(f"rank_speed: needs {gpus} positive factors")
    speed = speed / rank_spread_factors(gpus, overheads.gpu_spread, seed)
    if stragglers is not None:
        speed = speed * stragglers.speeds(gpus, seed)
    fwd, bwd, opt = st.step.forward_s, st.step.backward_s, st.step.optimizer_s
    compute_s = accumulation * (fwd + bwd) + opt
    nbytes = [b.nbytes for b in st.buckets]
    wire = np.atleast_1d(allreduce_seconds(cluster, gpus, np.array(nbytes, np.float64), algo)).astype(np.float64)
    interference = overheads.interference if (overlap and gpus > 1) else 0.0
    ready = np.empty((len(nbytes), gpus))
    backward_start, backward_end = np.empty(gpus), np.empty(gpus)
    for r in range(gpus):  # each rank's backward, at its speed, slowed while its buckets are on the wire
        slow = 1.0 / speed[r]
        before = ((accumulation - 1) * (fwd + bwd) + fwd) * slow
        marks = np.array([b.ready_fraction for b in st.buckets]) * bwd * slow
        r_ready, _, r_end = overlap_schedule(marks, wire, bwd * slow, interference)
        ready[:, r], backward_start[r], backward_end[r] = before + r_ready, before, before + r_end
    base = bucket_plan(cluster, gpus, algo, max_ops=max_ops)
    servers = base.ranks - gpus  # dedicated parameter servers compute nothing: their gates open at once
    ready = np.pad(ready, ((0, 0), (0, servers)))
    plan, op_nbytes, release, bucket_of, is_comm = _iteration_plan(
        base, nbytes, ready, np.pad(backward_end, (0, servers)), opt, st.prec.grad_nbytes,
        f"{profile.name}-iteration-{algo}")
    G = cluster_topology(cluster, base.ranks) if topology is None else topology
    params = comm_params(cluster, "inter")
    trace = simulate(plan, G, alpha_s=cluster.software_latency_s, gamma_s_per_byte=params.gamma_s_per_byte,
                     eager=eager, transport=transport, itemsize=st.prec.grad_nbytes,
                     rank_speed=np.pad(speed, (0, servers), constant_values=1.0), link_overrides=link_overrides,
                     seed=seed, op_nbytes=op_nbytes, release_s=release, max_ops=max_ops)
    done = ready.copy()
    np.maximum.at(done, (bucket_of[is_comm], trace.rank[is_comm]), trace.t_end[is_comm])
    rank_end = trace.t_end[bucket_of == len(nbytes)]
    own = float(np.max(backward_end + opt / speed))  # the slowest rank's compute, interference included
    floor_s = _input_floor_s(profile, cluster, gpus, batch_per_gpu * accumulation, overheads)
    iteration_s = max(float(rank_end.max()), floor_s)
    busy = max(own, float(rank_end.max()))
    return SimulatedIteration(gpus=gpus, algo=algo, batch_per_gpu=float(batch_per_gpu), compute_s=compute_s,
                              iteration_s=iteration_s, exposed_comm_s=max(0.0, float(rank_end.max()) - own),
                              input_wait_s=max(0.0, floor_s - busy), rank_speed=speed, rank_end_s=rank_end,
                              bucket_nbytes=tuple(nbytes), bucket_ready_s=ready, bucket_done_s=done, trace=trace,
                              backward_start_s=backward_start, backward_end_s=backward_end)

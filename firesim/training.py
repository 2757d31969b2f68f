"""How long one synchronous data-parallel SGD iteration takes, and how long training takes, on a cluster.

compute: per-layer FLOPs from the model profile (training = forward + backward = 3 x forward), at the GPU's
achieved FLOP/s for its per-GPU batch (efficiency rises with batch; ``firesim.hardware``).
communication: gradients leave backward layer by layer, last layer first, in buckets (DDP: 25 MB, the first
1 MB); one communication stream all-reduces bucket after bucket with the chosen plan's cost, starting each
as soon as backward has produced it, so only the part that outlasts backward is exposed. ``overlap=False``
gives FireCaffe's schedule: the whole gradient is exchanged after backward.
This module is the fast closed-form path; ``simulate_iteration`` plays the same schedule on the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import networkx as nx
import numpy as np

from firesim.cluster import allreduce_seconds, bucket_plan, cluster_topology, resolve_for
from firesim.engine import simulate
from firesim.errors import UserError
from firesim.hardware import Cluster, comm_params, compute_flops, price_per_gpu_hour, resolve_cluster
from firesim.limits import MAX_OPS, check_ops
from firesim.plans import Op, Plan
from firesim.trace import Trace
from firesim.workload import ModelProfile, load_workload

DDP_BUCKET_NBYTES = 25 * 2**20
DDP_FIRST_BUCKET_NBYTES = 1 * 2**20
_DTYPE_NBYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp64": 8, "fp8": 1}


@dataclass(frozen=True)
class Bucket:
    """Gradients all-reduced together; ``ready_fraction`` of backward has run when the last of them is ready."""

    nbytes: int
    ready_fraction: float
    layers: tuple[str, ...]


def gradient_buckets(profile: ModelProfile, bucket_nbytes: int = DDP_BUCKET_NBYTES,
                     first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES, grad_nbytes_per_param: int = 4) -> list[Bucket]:
    """Split the gradients into buckets in backward order (last layer first), as DDP does.

    A bucket closes once it holds at least its size; backward time per layer is taken proportional to the
    layer's forward FLOPs (backward ~ 2 x forward, layer by layer).
    """
    if bucket_nbytes <= 0 or first_bucket_nbytes <= 0:
        raise UserError("bucket size: must be > 0")
    layers = list(reversed(profile.layers))
    flops = np.array([layer.fwd_flops for layer in layers], dtype=np.float64)
    done = np.cumsum(flops) / max(flops.sum(), 1.0)
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
    """One iteration on ``gpus`` GPUs: where the time goes."""

    gpus: int
    algo: str
    batch_per_gpu: float
    compute_s: float  # forward + backward on one GPU
    comm_s: float  # all-reduce time of every bucket, back to back, as if nothing overlapped
    exposed_comm_s: float  # communication not hidden behind backward
    iteration_s: float


def _compute_seconds(profile: ModelProfile, cluster: Cluster, gpus: int, batch_per_gpu: float, algo: str,
                     dtype: str) -> float:
    """Forward + backward of one GPU's batch (3 x forward FLOPs); validates the inputs on the way."""
    if gpus < 1:
        raise UserError(f"gpus: must be >= 1, got {gpus}")
    if not batch_per_gpu >= 1:
        raise UserError(f"batch: {batch_per_gpu:g} samples per GPU on {gpus} GPUs; need at least 1")
    resolve_for(cluster, gpus, algo)
    flops_per_s = compute_flops(cluster, dtype, batch_per_gpu)
    if not flops_per_s > 0:
        raise UserError(f"dtype: {cluster.gpu.name} has no {dtype} throughput")
    return float(3 * profile.fwd_flops * batch_per_gpu / flops_per_s)


def _buckets(profile: ModelProfile, dtype: str, overlap: bool, bucket_nbytes: int,
             first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES) -> list[Bucket]:
    """DDP buckets when overlapping; else the whole gradient as one exchange after backward."""
    grad_nbytes = _DTYPE_NBYTES.get(dtype, 4)
    if overlap:
        return gradient_buckets(profile, bucket_nbytes, first_bucket_nbytes, grad_nbytes_per_param=grad_nbytes)
    return [Bucket(profile.params * grad_nbytes, 1.0, ())]


def iteration(profile: ModelProfile, cluster: Cluster, gpus: int, batch_per_gpu: float, algo: str, *,
              dtype: str = "fp32", overlap: bool = True, bucket_nbytes: int = DDP_BUCKET_NBYTES) -> Iteration:
    """Closed-form iteration time of synchronous data-parallel SGD."""
    compute_s = _compute_seconds(profile, cluster, gpus, batch_per_gpu, algo, dtype)
    backward_s = compute_s * 2 / 3
    buckets = _buckets(profile, dtype, overlap, bucket_nbytes)
    times = allreduce_seconds(cluster, gpus, np.array([b.nbytes for b in buckets], np.float64), algo)
    comm_done = 0.0
    for bucket, t in zip(buckets, np.atleast_1d(times)):
        comm_done = max(comm_done, bucket.ready_fraction * backward_s) + float(t)
    exposed = max(0.0, comm_done - backward_s)
    return Iteration(gpus=gpus, algo=algo, batch_per_gpu=float(batch_per_gpu), compute_s=compute_s,
                     comm_s=float(np.sum(times)), exposed_comm_s=exposed, iteration_s=compute_s + exposed)


@dataclass(frozen=True)
class Prediction:
    """One row of ``firesim predict``."""

    model: str
    hardware: str
    gpus: int
    algo: str
    batch: int
    batch_per_gpu: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    iteration_s: float
    iterations: float
    speedup: float
    efficiency: float
    time_to_train_s: float
    cost: float | None  # USD for the whole training run, None where the price is unknown

    def record(self) -> dict:
        return asdict(self)


def predict(profile: ModelProfile | str, cluster: Cluster | str, gpus: int, algo: str, *, batch: int | None = None,
            batch_per_gpu: int | None = None, epochs: float = 90.0, baseline_batch: int = 32,
            dtype: str = "fp32", overlap: bool = True, bucket_nbytes: int = DDP_BUCKET_NBYTES,
            engine: str = "analytic", max_ops: int = MAX_OPS) -> Prediction:
    """Iteration time, time to train ``epochs`` epochs, speedup and efficiency against one GPU training
    the same epochs with its own batch (``baseline_batch``, FireCaffe's single-GPU GoogLeNet used 32), cost.

    engine="des" plays the iteration on the simulator (``simulate_iteration``: the cluster's topology, link
    contention between buckets and ranks); "analytic" (default) is the closed form. comm_s is the closed-form
    all-reduce time of the buckets either way; exposed_comm_s and iteration_s come from the chosen engine,
    which refuses an iteration of more than ``max_ops`` plan ops (``firesim.limits``). ``profile`` and ``cluster`` may be names (``"googlenet"``, ``"titan"``) or files, as on the command line.
    """
    profile = load_workload(profile) if isinstance(profile, str) else profile
    cluster = resolve_cluster(cluster) if isinstance(cluster, str) else cluster
    if engine not in ("analytic", "des"):
        raise UserError(f"engine: must be 'analytic' or 'des', got {engine!r}")
    if (batch is None) == (batch_per_gpu is None):
        raise UserError("batch: give exactly one of the global batch and the batch per GPU")
    if not epochs > 0:
        raise UserError(f"epochs: must be > 0, got {epochs}")
    global_batch = int(batch) if batch is not None else int(batch_per_gpu) * gpus
    if global_batch < 1:
        raise UserError(f"batch: must be >= 1, got {global_batch}")
    it = iteration(profile, cluster, gpus, global_batch / gpus, algo, dtype=dtype, overlap=overlap,
                   bucket_nbytes=bucket_nbytes)
    if engine == "des" and gpus > 1:
        sim = simulate_iteration(profile, cluster, gpus, algo, batch_per_gpu=global_batch / gpus, dtype=dtype,
                                 overlap=overlap, bucket_nbytes=bucket_nbytes, max_ops=max_ops)
        it = replace(it, exposed_comm_s=sim.exposed_comm_s, iteration_s=sim.iteration_s)
    base = iteration(profile, cluster, 1, baseline_batch, algo, dtype=dtype, overlap=overlap)
    iterations = epochs * profile.train_samples / global_batch
    time_s = iterations * it.iteration_s
    base_s = epochs * profile.train_samples / baseline_batch * base.iteration_s
    price = price_per_gpu_hour(cluster)
    return Prediction(
        model=profile.name, hardware=cluster.name, gpus=gpus, algo=algo, batch=global_batch,
        batch_per_gpu=it.batch_per_gpu, compute_s=it.compute_s, comm_s=it.comm_s, exposed_comm_s=it.exposed_comm_s,
        iteration_s=it.iteration_s, iterations=iterations, speedup=base_s / time_s, efficiency=base_s / time_s / gpus,
        time_to_train_s=time_s, cost=None if price is None else price * gpus * time_s / 3600.0,
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
    """One iteration played on the engine; times from the start of forward, per rank where it matters."""

    gpus: int
    algo: str
    batch_per_gpu: float
    compute_s: float  # forward + backward on one GPU at nominal speed
    iteration_s: float  # until the last rank finished its optimizer step
    exposed_comm_s: float  # iteration_s minus the slowest rank's own compute (forward, backward, optimizer)
    rank_speed: np.ndarray  # the compute speed factors used (stragglers included)
    rank_end_s: np.ndarray  # when each rank (workers, then any dedicated servers) finished its last step
    bucket_nbytes: tuple[int, ...]
    bucket_ready_s: np.ndarray  # [bucket, rank]: backward has produced the bucket (dedicated servers: 0)
    bucket_done_s: np.ndarray  # [bucket, rank]: its all-reduce has finished at the rank
    trace: Trace


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
                       topology: nx.Graph | str | None = None, dtype: str = "fp32", overlap: bool = True,
                       bucket_nbytes: int = DDP_BUCKET_NBYTES, first_bucket_nbytes: int = DDP_FIRST_BUCKET_NBYTES,
                       rank_speed=None, stragglers: Stragglers | None = None,
                       link_overrides: Mapping | None = None, optimizer_s: float = 0.0, eager: bool = False,
                       seed: int = 0, max_ops: int = MAX_OPS) -> SimulatedIteration:
    """Play one synchronous data-parallel iteration on the engine (``iteration`` is its closed form).

    Forward, then backward emitting the buckets (reverse layer order, DDP sizes) at the fraction of backward
    FLOPs done; each bucket's all-reduce (``algo``'s plan) starts on a rank once backward produced it there
    and the previous bucket is done there, and runs on ``topology`` (default ``cluster_topology``) while
    backward continues; the optimizer step (``optimizer_s`` at nominal speed) follows the last bucket and
    backward. ``rank_speed`` and ``stragglers`` (drawn from ``seed``) scale each rank's compute; the seed
    also salts ECMP. ``link_overrides`` as in ``firesim.engine.simulate``. An iteration of more than
    ``max_ops`` ops (every bucket's plan, plus a gate per bucket and rank) is refused before it is built.
    """
    if not optimizer_s >= 0:
        raise UserError(f"optimizer_s: must be >= 0, got {optimizer_s!r}")
    compute_s = _compute_seconds(profile, cluster, gpus, batch_per_gpu, algo, dtype)
    forward_s, backward_s = compute_s / 3, compute_s * 2 / 3
    speed = np.ones(gpus) if rank_speed is None else np.asarray(rank_speed, np.float64)
    if speed.shape != (gpus,) or not np.all(speed > 0):
        raise UserError(f"rank_speed: needs {gpus} positive factors")
    if stragglers is not None:
        speed = speed * stragglers.speeds(gpus, seed)
    itemsize = _DTYPE_NBYTES.get(dtype, 4)
    buckets = _buckets(profile, dtype, overlap, bucket_nbytes, first_bucket_nbytes)
    base = bucket_plan(cluster, gpus, algo, max_ops=max_ops)
    check_ops(len(buckets) * (base.n_ops + base.ranks) + base.ranks,
              f"{profile.name} iteration, {algo} on {gpus} GPUs ({len(buckets)} buckets)", max_ops)
    servers = base.ranks - gpus  # dedicated parameter servers compute nothing: their gates open at once
    ready = np.array([[(forward_s + b.ready_fraction * backward_s) for b in buckets]]).T / speed  # [bucket, rank]
    ready = np.pad(ready, ((0, 0), (0, servers)))
    backward_end = np.pad(compute_s / speed, (0, servers))
    plan, nbytes, release, bucket_of, is_comm = _iteration_plan(
        base, [b.nbytes for b in buckets], ready, backward_end, optimizer_s, itemsize,
        f"{profile.name}-iteration-{algo}")
    G = cluster_topology(cluster, base.ranks) if topology is None else topology
    params = comm_params(cluster, "inter")
    trace = simulate(plan, G, alpha_s=cluster.software_latency_s, gamma_s_per_byte=params.gamma_s_per_byte,
                     eager=eager, itemsize=itemsize, rank_speed=np.pad(speed, (0, servers), constant_values=1.0),
                     link_overrides=link_overrides, seed=seed, op_nbytes=nbytes, release_s=release, max_ops=max_ops)
    done = ready.copy()
    np.maximum.at(done, (bucket_of[is_comm], trace.rank[is_comm]), trace.t_end[is_comm])
    rank_end = trace.t_end[bucket_of == len(buckets)]
    iteration_s = float(rank_end.max())
    own = float(np.max((compute_s + optimizer_s) / speed))
    return SimulatedIteration(gpus=gpus, algo=algo, batch_per_gpu=float(batch_per_gpu), compute_s=compute_s,
                              iteration_s=iteration_s, exposed_comm_s=max(0.0, iteration_s - own), rank_speed=speed,
                              rank_end_s=rank_end, bucket_nbytes=tuple(b.nbytes for b in buckets),
                              bucket_ready_s=ready, bucket_done_s=done, trace=trace)

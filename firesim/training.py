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

from dataclasses import asdict, dataclass

import numpy as np

from firesim import analytic
from firesim.errors import UserError
from firesim.hardware import Cluster, comm_params, compute_flops, price_per_gpu_hour
from firesim.plans import canonical_name, parse_algo
from models.catalog import ModelProfile

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


def allreduce_seconds(cluster: Cluster, gpus: int, nbytes, algo: str):
    """Closed-form all-reduce time of ``nbytes`` over ``gpus`` GPUs of ``cluster``.

    Inside one node the intra-node link sets the cost; across nodes the inter-node one. ``hierarchical``
    uses both, and falls back to its ``inter`` algorithm where there is only one level.
    """
    if gpus == 1:
        return np.zeros_like(np.asarray(nbytes, dtype=np.float64))
    name, options = parse_algo(algo)
    level = "intra" if gpus <= cluster.gpus_per_node else "inter"
    if name == "hierarchical":
        if cluster.gpus_per_node == 1 or gpus <= cluster.gpus_per_node:
            name, inner = parse_algo(options.pop("inter", "ring"))
            options = {**options, **inner}
        else:
            intra = comm_params(cluster, "intra")
            options.setdefault("ranks_per_node", cluster.gpus_per_node)
            options["intra_params"] = (intra.alpha_s, intra.beta_s_per_byte, intra.gamma_s_per_byte)
    params = comm_params(cluster, level)
    return analytic.allreduce_time(name, gpus, nbytes, params.alpha_s, params.beta_s_per_byte,
                                   params.gamma_s_per_byte, **options)


def iteration(profile: ModelProfile, cluster: Cluster, gpus: int, batch_per_gpu: float, algo: str, *,
              dtype: str = "fp32", overlap: bool = True, bucket_nbytes: int = DDP_BUCKET_NBYTES) -> Iteration:
    """Closed-form iteration time of synchronous data-parallel SGD."""
    if gpus < 1:
        raise UserError(f"gpus: must be >= 1, got {gpus}")
    if not batch_per_gpu >= 1:
        raise UserError(f"batch: {batch_per_gpu:g} samples per GPU on {gpus} GPUs; need at least 1")
    canonical_name(parse_algo(algo)[0])
    flops_per_s = compute_flops(cluster, dtype, batch_per_gpu)
    if not flops_per_s > 0:
        raise UserError(f"dtype: {cluster.gpu.name} has no {dtype} throughput")
    compute_s = float(3 * profile.fwd_flops * batch_per_gpu / flops_per_s)
    backward_s = compute_s * 2 / 3
    grad_nbytes = _DTYPE_NBYTES.get(dtype, 4)
    if overlap:
        buckets = gradient_buckets(profile, bucket_nbytes, grad_nbytes_per_param=grad_nbytes)
    else:
        buckets = [Bucket(profile.params * grad_nbytes, 1.0, ())]
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


def predict(profile: ModelProfile, cluster: Cluster, gpus: int, algo: str, *, batch: int | None = None,
            batch_per_gpu: int | None = None, epochs: float = 90.0, baseline_batch: int = 32,
            dtype: str = "fp32", overlap: bool = True, bucket_nbytes: int = DDP_BUCKET_NBYTES) -> Prediction:
    """Iteration time, time to train ``epochs`` epochs, speedup and efficiency against one GPU training
    the same epochs with its own batch (``baseline_batch``, FireCaffe's single-GPU GoogLeNet used 32), cost."""
    if (batch is None) == (batch_per_gpu is None):
        raise UserError("batch: give exactly one of the global batch and the batch per GPU")
    if not epochs > 0:
        raise UserError(f"epochs: must be > 0, got {epochs}")
    global_batch = int(batch) if batch is not None else int(batch_per_gpu) * gpus
    if global_batch < 1:
        raise UserError(f"batch: must be >= 1, got {global_batch}")
    it = iteration(profile, cluster, gpus, global_batch / gpus, algo, dtype=dtype, overlap=overlap,
                   bucket_nbytes=bucket_nbytes)
    base = iteration(profile, cluster, 1, baseline_batch, algo, dtype=dtype, overlap=overlap)
    iterations = epochs * profile.train_images / global_batch
    time_s = iterations * it.iteration_s
    base_s = epochs * profile.train_images / baseline_batch * base.iteration_s
    price = price_per_gpu_hour(cluster)
    return Prediction(
        model=profile.name, hardware=cluster.name, gpus=gpus, algo=algo, batch=global_batch,
        batch_per_gpu=it.batch_per_gpu, compute_s=it.compute_s, comm_s=it.comm_s, exposed_comm_s=it.exposed_comm_s,
        iteration_s=it.iteration_s, iterations=iterations, speedup=base_s / time_s, efficiency=base_s / time_s / gpus,
        time_to_train_s=time_s, cost=None if price is None else price * gpus * time_s / 3600.0,
    )

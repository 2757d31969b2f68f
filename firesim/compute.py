"""Compute time of one GPU's training step from a per-layer roofline, and what makes N GPUs slower than N x one.

Per layer of the profile (``firesim.workload``), forward and backward separately:

    time = max(FLOPs x batch / achieved FLOP/s,  bytes moved / achieved memory bandwidth) + kernels x overhead

* achieved FLOP/s = peak[dtype] x efficiency[dtype]: ``conv_efficiency`` for convolutions (cuDNN implicit GEMM,
  Winograd), ``matmul_efficiency`` for the matmul-class FLOPs of every other layer (linear layers, attention,
  batched matmuls); elementwise FLOPs, where the profile separates them, at the CUDA-core fp32 peak. The
  efficiencies are catalog parameters fitted to single-GPU throughput (``firesim.throughput``); a calibrated
  profile measures the rates instead.
* bytes: the elements the layer's kernels read and write (per sample, times the batch) at the activation
  dtype, plus per call the weights (compute dtype) forward and the weights and weight gradients (gradient
  dtype) backward. Profiles without these counts fall back to: forward reads its input and writes its output;
  backward reads the output gradient and the input and writes the input gradient (2 x in + out).
* kernels: the profile's kernel counts (else one forward; backward two for a layer with parameters, input and
  weight gradients, else one). ``layer_overhead_s`` is the GPU time per kernel beyond its roofline (launch,
  ramp-up, tail). Host-side dispatch is taken as hidden behind GPU work (asynchronous launch), which holds at
  training batch sizes, not at batch 1.

Precision: ``dtype`` is the compute type (fp32 and tf32 keep fp32 activations and weights; fp16, bf16 and fp8 are
mixed precision: low-precision activations and weight copies, fp32 master weights); ``grad_dtype`` is what
backward writes and the all-reduce moves (mixed precision keeps fp32 gradients unless told otherwise).

The optimizer step is one memory-bound pass over the parameters: it reads the gradient, reads and writes the
fp32 master weight and each fp32 state tensor, and (mixed precision) writes the low-precision weight copy.

``Overheads`` are the mechanisms beyond wire time that make N GPUs slower than N x one GPU; each is a named
parameter with a default and its source, switched on the command line with ``--overheads``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Literal

import numpy as np

from firesim.errors import UserError
from firesim.hardware import Cluster
from firesim.units import parse_options, parse_rate
from firesim.workload import ModelProfile

__all__ = ["DEFAULT_OVERHEADS", "DTYPE_NBYTES", "MIXED_PRECISION", "NO_OVERHEADS", "OPTIMIZERS", "Overheads",
           "Precision", "Rates", "StepTime", "achieved_rates", "fit_efficiency", "gpu_spread_factor",
           "has_convolutions", "layer_seconds", "optimizer_seconds", "overlap_schedule", "parse_overheads",
           "precision", "rank_spread_factors", "resolve_optimizer", "step_time"]

DTYPE_NBYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
MIXED_PRECISION = ("fp16", "bf16", "fp8")
GRAD_DTYPES = ("fp64", "fp32", "fp16", "bf16")
MASTER_NBYTES = 4  # mixed precision keeps fp32 master weights
_CONV = re.compile(r"^Conv(Transpose)?[123]d$")  # torch.nn convolutions run at conv_efficiency
OPTIMIZERS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "lamb": 2}  # fp32 state tensors per parameter


# ---------------------------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class Precision:
    """Bytes per element of what the step touches, from the compute dtype and the gradient dtype."""

    dtype: str
    grad_dtype: str
    activation_nbytes: int  # activations and the weight copy the kernels read
    grad_nbytes: int  # gradients written by backward and exchanged

    @property
    def mixed(self) -> bool:
        return self.dtype in MIXED_PRECISION

    @property
    def weight_nbytes(self) -> int:
        """Bytes per parameter of weights kept on the GPU: fp32 (master) plus the low-precision copy."""
        return (MASTER_NBYTES + self.activation_nbytes) if self.mixed else self.activation_nbytes


def precision(dtype: str, grad_dtype: str | None = None) -> Precision:
    """``grad_dtype`` None: fp64 for fp64, else fp32 (mixed precision keeps fp32 gradients, as torch.autocast)."""
    if dtype not in DTYPE_NBYTES:
        raise UserError(f"dtype: must be one of {', '.join(DTYPE_NBYTES)}, got {dtype!r}")
    grad = ("fp64" if dtype == "fp64" else "fp32") if grad_dtype is None else grad_dtype
    if grad not in GRAD_DTYPES:
        raise UserError(f"grad-dtype: must be one of {', '.join(GRAD_DTYPES)}, got {grad!r}")
    return Precision(dtype, grad, DTYPE_NBYTES[dtype], DTYPE_NBYTES[grad])


def resolve_optimizer(name: str | None, profile: ModelProfile) -> str:
    """None or 'auto': SGD with momentum for convolutional networks (their recipes: most forward FLOPs in
    convolutions), AdamW for everything else (transformers, ViT included)."""
    if name in (None, "auto"):
        conv = sum(layer.fwd_flops for layer in profile.layers if _CONV.match(layer.type))
        return "momentum" if 2 * conv >= profile.fwd_flops > 0 else "adamw"
    if name not in OPTIMIZERS:
        raise UserError(f"optimizer: must be auto or one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return name


# -------------------------------------------------------------------------------------------------- rates
@dataclass(frozen=True)
class Rates:
    """What one GPU achieves in one dtype: the roofline's parameters. ``vector_flops`` runs elementwise FLOPs
    (where the profile separates them): the CUDA-core fp32 peak, not fitted, as that work is memory bound."""

    conv_flops: float
    matmul_flops: float
    memory_Bps: float
    layer_overhead_s: float
    vector_flops: float | None = None  # None: the matmul rate


def achieved_rates(cluster: Cluster, dtype: str) -> Rates:
    """The cluster's GPU in ``dtype``: catalog peaks x efficiencies, or a calibrated profile's measured rates."""
    profile = cluster.profile
    if profile is not None:
        if dtype != profile.dtype:
            raise UserError(f"dtype: profile {cluster.name!r} was measured in {profile.dtype}, not {dtype!r}")
        c = profile.compute
        if c is not None:
            return Rates(c.conv_flops, c.matmul_flops, c.memory_Bps, c.layer_overhead_s)
        return Rates(profile.compute_flops, profile.compute_flops, 3.0 / profile.gamma_s_per_byte, 0.0)
    gpu = cluster.gpu
    if dtype not in gpu.peak_flops:
        raise UserError(f"dtype: {gpu.name} has no {dtype} figures (has: {', '.join(gpu.peak_flops)})")
    peak = gpu.peak_flops[dtype]
    return Rates(peak * gpu.conv_efficiency[dtype], peak * gpu.matmul_efficiency[dtype],
                 gpu.memory_bandwidth_Bps * gpu.memory_efficiency, gpu.layer_overhead_s,
                 gpu.peak_flops.get("fp32", peak))


# ----------------------------------------------------------------------------------------------- roofline
def _layer_arrays(profile: ModelProfile) -> dict[str, np.ndarray]:
    """Per-layer columns: FLOPs (matmul-class and elementwise) and activation elements per sample, weight
    elements and kernels per call.

    Profiles that count what each layer's aten ops read and write (and how many kernels they launch) are used
    as they are. Older ones (version 1, or no counts) fall back to: forward reads its input and writes its
    output, the input taken equal to the output shape; backward reads the output gradient and the input and
    writes the input gradient (2 x in + out); weights read once forward, read and their gradient written
    backward; one kernel forward, two backward for a layer with parameters (input and weight gradient).
    """
    rows = []
    split = any(layer.fwd_matmul_flops for layer in profile.layers)  # else all FLOPs are matmul-class work
    for layer in profile.layers:
        fwd_mm = layer.fwd_matmul_flops if split else layer.fwd_flops
        bwd_mm = layer.bwd_matmul_flops if split else layer.backward_flops
        out = layer.output_elements
        inp = layer.input_elements
        if inp == 0 and out == 0:
            out = inp = math.prod(layer.output_shape) if layer.output_shape else 0
        bwd_act = layer.bwd_input_elements + layer.bwd_output_elements or 2 * inp + out
        work = layer.fwd_flops > 0 or inp + out > 0 or layer.params > 0
        rows.append((
            layer.params, fwd_mm, bwd_mm, layer.fwd_flops - fwd_mm, layer.backward_flops - bwd_mm, inp + out, bwd_act,
            layer.weight_elements or layer.params, layer.bwd_weight_elements or 2 * layer.params,
            layer.fwd_ops or int(work), layer.bwd_ops or (2 if layer.params else int(work)),
            _CONV.match(layer.type) is not None,
        ))
    cols = np.array(rows, dtype=np.float64).T
    names = ("params", "fwd_flops", "bwd_flops", "fwd_vector_flops", "bwd_vector_flops", "fwd_act", "bwd_act",
             "fwd_weight", "bwd_weight", "fwd_kernels", "bwd_kernels", "conv")
    arrays = dict(zip(names, cols))
    arrays["conv"] = arrays["conv"].astype(bool)
    return arrays


def has_convolutions(profile: ModelProfile) -> bool:
    """Does any layer run at the convolution rate?"""
    return any(_CONV.match(layer.type) for layer in profile.layers)


def layer_seconds(profile: ModelProfile, rates: Rates, batch_per_gpu: float,
                  prec: Precision) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward seconds of every layer (forward order) for one GPU's batch.

    Bytes: activation elements at the activation dtype; forward weights at the compute dtype (mixed
    precision reads the low-precision copy); backward weight traffic (weights read, weight gradients written)
    at the gradient dtype.
    """
    a = _layer_arrays(profile)
    flops_per_s = np.where(a["conv"], rates.conv_flops, rates.matmul_flops)
    act = prec.activation_nbytes
    fwd_bytes = a["fwd_act"] * act * batch_per_gpu + a["fwd_weight"] * act
    bwd_bytes = a["bwd_act"] * act * batch_per_gpu + a["bwd_weight"] * prec.grad_nbytes
    vector = rates.vector_flops or rates.matmul_flops
    fwd_compute = (a["fwd_flops"] / flops_per_s + a["fwd_vector_flops"] / vector) * batch_per_gpu
    bwd_compute = (a["bwd_flops"] / flops_per_s + a["bwd_vector_flops"] / vector) * batch_per_gpu
    fwd = np.maximum(fwd_compute, fwd_bytes / rates.memory_Bps)
    bwd = np.maximum(bwd_compute, bwd_bytes / rates.memory_Bps)
    return (fwd + a["fwd_kernels"] * rates.layer_overhead_s, bwd + a["bwd_kernels"] * rates.layer_overhead_s)


def optimizer_seconds(params: int, optimizer: str, prec: Precision, rates: Rates) -> float:
    """One memory-bound pass: read the gradient, read+write the fp32 master weight and each fp32 state tensor,
    and under mixed precision write the low-precision weight copy."""
    state_tensors = OPTIMIZERS[optimizer]
    per_param = (prec.grad_nbytes + 2 * MASTER_NBYTES * (1 + state_tensors)
                 + (prec.activation_nbytes if prec.mixed else 0))
    return params * per_param / rates.memory_Bps


@dataclass(frozen=True)
class StepTime:
    """One GPU's step at nominal speed: per-layer forward and backward seconds (forward order), optimizer."""

    forward_layers_s: np.ndarray
    backward_layers_s: np.ndarray
    optimizer_s: float

    @property
    def forward_s(self) -> float:
        return float(self.forward_layers_s.sum())

    @property
    def backward_s(self) -> float:
        return float(self.backward_layers_s.sum())


def step_time(profile: ModelProfile, cluster: Cluster, batch_per_gpu: float, prec: Precision, optimizer: str,
              with_optimizer: bool = True) -> StepTime:
    """Forward, backward and optimizer time of one GPU's batch on ``cluster``'s GPU."""
    rates = achieved_rates(cluster, prec.dtype)
    fwd, bwd = layer_seconds(profile, rates, batch_per_gpu, prec)
    opt = optimizer_seconds(profile.params, optimizer, prec, rates) if with_optimizer else 0.0
    return StepTime(fwd, bwd, opt)


# ---------------------------------------------------------------------------------------------- overheads
INTERFERENCE = 0.189
GPU_SPREAD = 0.01


@dataclass(frozen=True)
class Overheads:
    """What makes N GPUs slower than N x one GPU besides wire time (``--overheads``; ``none`` switches all off).

    interference: fractional slowdown of compute while communication kernels run beside it (NCCL kernels take
    SMs and memory bandwidth). Default 0.189: the average compute slowdown under overlapped communication
    measured by Lee et al., "Characterizing Compute-Communication Overlap in GPU-Accelerated Distributed Deep
    Learning: Performance and Power Implications" (arXiv 2507.03114, 2025; GPT and LLaMA on 4 x A100, H100,
    MI250, MI210; max 40 %).
    gpu_spread: standard deviation of speed between identical GPUs (power management, manufacturing). A
    synchronous step waits for the slowest of N: factor 1 + spread x E[max of N standard normals]. Default 0.01:
    Sinha et al., "Not All GPUs Are Created Equal" (SC22) measured an 8 % average spread (max - min relative to
    the median) across thousands of identical V100/MI60 GPUs, about 8-9 standard deviations of a normal sample
    that size, so sigma ~ 1 %.
    optimizer: include the optimizer step (a memory-bound pass over parameters and state).
    input_rate: samples/s one node's data loading delivers ("catalog": the cluster preset's figure; None: not
    limiting). Applies to image models only (sequence models read pre-tokenised data).
    """

    interference: float = INTERFERENCE
    gpu_spread: float = GPU_SPREAD
    optimizer: bool = True
    input_rate: float | Literal["catalog"] | None = "catalog"

    def input_samples_per_s(self, cluster: Cluster, profile: ModelProfile) -> float | None:
        if profile.sample != "image":
            return None
        return cluster.input_samples_per_s_per_node if self.input_rate == "catalog" else self.input_rate


DEFAULT_OVERHEADS = Overheads()
NO_OVERHEADS = Overheads(interference=0.0, gpu_spread=0.0, optimizer=False, input_rate=None)


def parse_overheads(text: str | None) -> Overheads:
    """'default', 'none', or key=value: interference=0.189, spread=0.01, optimizer=on|off,
    input=catalog|none|<samples/s per node>; keys not given keep their defaults."""
    text = "default" if text is None else text.strip()
    if not text:
        raise UserError("overheads: empty; give default, none or key=value items such as interference=0.2")
    if text == "default":
        return Overheads()
    if text == "none":
        return NO_OVERHEADS
    out = Overheads()
    for key, value in parse_options(text, "overheads").items():
        if key in ("interference", "spread"):
            try:
                number = float(value)
            except ValueError:
                raise UserError(f"overheads: {key} must be a number, got {value!r}") from None
            if not 0 <= number <= 10:
                raise UserError(f"overheads: {key} must be in [0, 10], got {value}")
            out = replace(out, **{"interference" if key == "interference" else "gpu_spread": number})
        elif key == "optimizer":
            if value not in ("on", "off"):
                raise UserError(f"overheads: optimizer must be on or off, got {value!r}")
            out = replace(out, optimizer=value == "on")
        elif key == "input":
            rate = value if value == "catalog" else None if value == "none" else parse_rate(value, "overheads: input")
            if rate is not None and rate != "catalog" and not rate > 0:
                raise UserError(f"overheads: input must be > 0 samples/s, got {value!r}")
            out = replace(out, input_rate=rate)
        else:
            raise UserError(f"overheads: unknown key {key!r} (interference, spread, optimizer, input)")
    return out


def _normal_scores(n: int) -> np.ndarray:
    """Expected order statistics of n standard normals, ascending (Blom's approximation)."""
    dist = NormalDist()
    return np.array([dist.inv_cdf((i + 1 - 0.375) / (n + 0.25)) for i in range(n)])


def gpu_spread_factor(gpus: int, spread: float) -> float:
    """How much longer the slowest of ``gpus`` GPUs takes than a nominal one (the largest of ``_normal_scores``,
    computed alone: a prediction for 2**31 GPUs must not list them)."""
    return 1.0 + spread * NormalDist().inv_cdf((gpus - 0.375) / (gpus + 0.25)) if gpus > 1 else 1.0


def rank_spread_factors(gpus: int, spread: float, seed: int = 0) -> np.ndarray:
    """Per-rank slowdown factors whose slowest is exactly ``gpu_spread_factor`` (the engine's ranks)."""
    if gpus == 1:
        return np.ones(1)
    return 1.0 + spread * np.random.default_rng(seed).permutation(_normal_scores(gpus))


def overlap_schedule(ready_s: np.ndarray, comm_s: np.ndarray, backward_s: float,
                     interference: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Backward producing buckets while one stream all-reduces them in order, compute slowed by
    (1 + interference) whenever a bucket is on the wire.

    ``ready_s[k]``: nominal backward seconds done when bucket k is complete (ascending); ``comm_s[k]``: its
    all-reduce time. Returns (wall time each bucket became ready, wall time each finished, when backward ended),
    from the start of backward.
    """
    slow = 1.0 + interference
    ready = np.empty(len(ready_s))
    done = np.empty(len(ready_s))
    wall, work, free = 0.0, 0.0, 0.0  # wall clock, nominal backward done, comm stream busy until

    def advance(target: float) -> None:
        nonlocal wall, work
        if wall < free and work < target:  # slowed while the stream is busy
            step = min(target - work, (free - wall) / slow)
            wall, work = wall + step * slow, work + step
        if work < target:
            wall, work = wall + (target - work), target

    for k, (target, t) in enumerate(zip(ready_s, comm_s)):
        advance(float(target))
        ready[k] = wall
        free = max(free, wall) + float(t)
        done[k] = free
    advance(float(backward_s))
    return ready, done, wall


# ------------------------------------------------------------------------------------------------ fitting
def fit_efficiency(predict_samples_per_s, published: float, lo: float = 1e-4, hi: float = 1.0) -> float:
    """The efficiency in [lo, hi] at which ``predict_samples_per_s(efficiency)`` (increasing) equals
    ``published``, by bisection on a log scale; ``hi`` if even that is too slow (memory-bound: a larger
    efficiency would change nothing)."""
    if predict_samples_per_s(hi) < published:
        return hi
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if predict_samples_per_s(mid) < published else (lo, mid)
    return math.sqrt(lo * hi)

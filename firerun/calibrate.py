"""Measure the cost-model constants the simulator needs, with the executor itself, and write a profile.

* alpha (s) and beta (s/byte): ping-pong *plans* run by the executor between two ranks over a size sweep,
  fitted as one-way time = alpha + beta * bytes. Running plans (not raw sends) puts the executor's own
  per-message cost into alpha, so the simulator predicts what the executor will measure. With a rank->node
  map (``ranks_per_node``) the intra-node pair (0, 1) and the inter-node pair (0, ranks_per_node) are fitted
  separately.
* gamma (s/byte): in-place adds of a received buffer into a chunk (what a reduce op does), on every rank at
  once, as in a collective where all ranks reduce together.
* compute (FLOP/s): a square matmul on every rank at once (ranks sharing a host share its cores).
* ``--compute``: the roofline rates of ``firesim.compute`` measured on the local device, every rank at once:
  matmul FLOP/s (the matmul above), memory bandwidth (a large copy: bytes read + written per second), the
  overhead of one tiny kernel launched back to back, and the forward and backward time of zoo models' training
  steps; the convolution rate is fitted so that the roofline reproduces those steps (the matmul rate when no
  model has convolutions). The profile keeps both the rates (what ``firesim predict --hardware`` uses) and the
  measured steps with what the fitted roofline predicts for them. One rank measures compute only.

The fit minimises *relative* error, so small-message latency is not drowned by large-message time.
"""

from __future__ import annotations

import platform
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from firerun.executor import Executor, dtype_name
from firesim.errors import UserError
from firesim.plans import Plan


@dataclass(frozen=True)
class LinkFit:
    """alpha + beta * n fitted to one-way times of a ping-pong between ``pair``."""

    level: str
    pair: tuple[int, int]
    alpha_s: float
    beta_s_per_byte: float
    sizes: list[int]
    one_way_s: list[float]

    @property
    def bandwidth_Bps(self) -> float:
        return 1.0 / self.beta_s_per_byte if self.beta_s_per_byte > 0 else float("inf")

    def predict(self, nbytes) -> np.ndarray:
        return self.alpha_s + self.beta_s_per_byte * np.asarray(nbytes, float)


@dataclass(frozen=True)
class StepMeasurement:
    """A zoo model's training step on this device: fastest forward and backward of ``reps``."""

    model: str
    batch: int
    forward_s: float
    backward_s: float


@dataclass(frozen=True)
class ComputeCalibration:
    """Roofline rates of this device (firesim.compute.Rates fields) and the steps they were fitted to."""

    conv_flops: float
    matmul_flops: float
    memory_Bps: float
    layer_overhead_s: float
    steps: list[StepMeasurement]
    predicted: list[tuple[float, float]]  # the fitted roofline's (forward_s, backward_s) per step


@dataclass(frozen=True)
class Calibration:
    links: list[LinkFit]
    gamma_s_per_byte: float | None
    compute_flops: float
    dtype: str
    backend: str
    ranks: int
    hosts: list[str] = field(default_factory=list)
    compute: ComputeCalibration | None = None


def fit_alpha_beta(sizes, times) -> tuple[float, float]:
    """Least squares for t = alpha + beta n weighted by 1/t (relative error); alpha, beta clipped at >= 0."""
    n = np.asarray(sizes, float)
    t = np.asarray(times, float)
    if n.size < 2 or np.any(t <= 0):
        raise UserError("calibrate: need at least two sizes with positive times to fit alpha and beta")
    w = 1.0 / t
    design = np.stack([w, n * w], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, t * w, rcond=None)
    if beta <= 0:  # latency-bound sweep: the slope is noise; fall back to the large-size end
        beta = max(float((t[-1] - t[0]) / max(n[-1] - n[0], 1.0)), 1e-15)
    if alpha < 0:
        alpha = 0.0
        beta = float(np.sum(n * t * w * w) / np.sum(n * n * w * w))
    return float(alpha), float(beta)


def fit_slope(sizes, times) -> float:
    """Time per byte of an operation with negligible fixed cost (least squares through the origin)."""
    n = np.asarray(sizes, float)
    t = np.asarray(times, float)
    return float(np.sum(n * t) / np.sum(n * n))


def pingpong_plan(ranks: int, a: int, b: int, nbytes: int, round_trips: int) -> Plan:
    """``round_trips`` messages a -> b -> a of one chunk; every other rank idles."""
    programs: list[list] = [[] for _ in range(ranks)]
    programs[a] = [("send", 0, b), ("recv", 0, b)] * round_trips
    programs[b] = [("recv", 0, a), ("send", 0, a)] * round_trips
    return Plan.from_programs(f"pingpong_{a}_{b}", nbytes, 1, programs)


def measure_pingpong(ex: Executor, a: int, b: int, sizes: list[int], *, dtype: torch.dtype,
                     round_trips: int = 30, reps: int = 3) -> list[float]:
    """One-way time per message (fastest of ``reps`` rounds), the same on every rank."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    out = []
    for size in sizes:
        nbytes = max(itemsize, size - size % itemsize)
        plan = pingpong_plan(ex.size, a, b, nbytes, round_trips)
        buf = torch.zeros(nbytes // itemsize, dtype=dtype, device=ex.device)
        ex.run(plan, buf, trace=False)  # warm-up: connections, buffers
        samples = []
        for _ in range(reps):
            ex.barrier()
            t0 = time.perf_counter()
            ex.run(plan, buf, trace=False)
            samples.append((time.perf_counter() - t0) / (2 * round_trips))
        mine = min(samples) if ex.rank == a else 0.0  # latency: the least-disturbed round is the cost
        out.append(ex.reduce_max(mine))
    return out


def measure_gamma(ex: Executor, sizes: list[int], dtype: torch.dtype, reps: int = 5) -> float:
    """Seconds per byte of ``chunk += received`` on every rank at once (mean over ranks)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    times = []
    for size in sizes:
        numel = max(1, size // itemsize)
        x = torch.zeros(numel, dtype=dtype, device=ex.device)
        y = torch.ones(numel, dtype=dtype, device=ex.device)
        x.add_(y)
        ex.barrier()
        ex.transport.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            x.add_(y)
        ex.transport.synchronize()
        t = (time.perf_counter() - t0) / reps
        times.append(float(ex.reduce_sum(np.array([t]))[0]) / ex.size)
    return fit_slope([max(1, s // itemsize) * itemsize for s in sizes], times)


def measure_compute(ex: Executor, dtype: torch.dtype, n: int | None = None, reps: int = 10) -> float:
    """Achieved FLOP/s of an n x n matmul on every rank at once (the slowest rank's)."""
    n = n or (4096 if ex.device.type == "cuda" else 512)
    a = torch.randn(n, n, device=ex.device).to(dtype)
    b = torch.randn(n, n, device=ex.device).to(dtype)
    a @ b
    ex.barrier()
    ex.transport.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    ex.transport.synchronize()
    t = ex.reduce_max((time.perf_counter() - t0) / reps)
    return 2.0 * n**3 / t


def _fastest(ex: Executor, run, rounds: int) -> float:
    """Seconds of the least-disturbed of ``rounds`` timed calls of ``run`` (every rank at once), the slowest
    rank's: the device's rate, not the machine's other load."""
    best = float("inf")
    for _ in range(rounds):
        ex.barrier()
        ex.transport.synchronize()
        t0 = time.perf_counter()
        run()
        ex.transport.synchronize()
        best = min(best, time.perf_counter() - t0)
    return ex.reduce_max(best)


def measure_memory_bandwidth(ex: Executor, nbytes: int | None = None, rounds: int = 5) -> float:
    """Bytes per second a large copy moves (read + written)."""
    nbytes = nbytes or (1 << 30 if ex.device.type == "cuda" else 64 << 20)
    src = torch.ones(nbytes // 4, device=ex.device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2.0 * src.numel() * 4 / _fastest(ex, lambda: dst.copy_(src), rounds)


def measure_kernel_overhead(ex: Executor, launches: int = 200, rounds: int = 10) -> float:
    """Seconds per tiny kernel launched back to back (a one-element add)."""
    x = torch.zeros(1, device=ex.device)
    x.add_(1.0)

    def run() -> None:
        for _ in range(launches):
            x.add_(1.0)

    return _fastest(ex, run, rounds) / launches


def measure_step(ex: Executor, name: str, batch: int, dtype: torch.dtype, reps: int = 3) -> StepMeasurement:
    """Forward and backward seconds of one training step of zoo model ``name`` (random data, cross-entropy
    over the last dimension), fastest of ``reps``, the slowest rank's. Mixed precision runs under autocast."""
    from firesim.workload import load_workload
    from models import zoo

    profile = load_workload(name)
    torch.manual_seed(0)
    model = zoo.build(name).to(ex.device)
    if profile.sample == "sequence":
        x = torch.randint(0, profile.num_classes or 2, (batch, *profile.input_shape), device=ex.device)
    else:
        x = torch.randn(batch, *profile.input_shape, device=ex.device)
    mixed = dtype in (torch.float16, torch.bfloat16)
    if not mixed:
        model = model.to(dtype)
        x = x if profile.sample == "sequence" else x.to(dtype)

    def step() -> tuple[float, float]:
        ex.transport.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(ex.device.type, dtype=dtype, enabled=mixed):
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            logits = out.reshape(-1, out.shape[-1]).float()
            loss = torch.nn.functional.cross_entropy(
                logits, torch.zeros(logits.shape[0], dtype=torch.long, device=ex.device))
        ex.transport.synchronize()
        t1 = time.perf_counter()
        loss.backward()
        ex.transport.synchronize()
        model.zero_grad(set_to_none=True)
        return t1 - t0, time.perf_counter() - t1

    step()  # warm-up: allocator, kernel selection
    ex.barrier()
    times = [step() for _ in range(reps)]
    forward = ex.reduce_max(min(t[0] for t in times))
    backward = ex.reduce_max(min(t[1] for t in times))
    return StepMeasurement(name, batch, forward, backward)


def fit_compute(steps: list[StepMeasurement], matmul_flops: float, memory_Bps: float, overhead_s: float,
                dtype: str) -> ComputeCalibration:
    """The convolution rate at which firesim's roofline reproduces the measured steps of the models with
    convolutions (total time over them); the matmul rate where none has any. firesim's own roofline, so what
    ``firesim predict`` says for these models is what was measured."""
    from firesim.compute import Rates, fit_efficiency, has_convolutions, layer_seconds, precision
    from firesim.workload import load_workload

    prec = precision(dtype)
    profiles = {m.model: load_workload(m.model) for m in steps}

    def seconds(conv_flops: float, m: StepMeasurement) -> tuple[float, float]:
        fwd, bwd = layer_seconds(profiles[m.model], Rates(conv_flops, matmul_flops, memory_Bps, overhead_s),
                                 m.batch, prec)
        return float(fwd.sum()), float(bwd.sum())

    conv_steps = [m for m in steps if has_convolutions(profiles[m.model])]
    conv = matmul_flops
    if conv_steps:
        measured = sum(m.forward_s + m.backward_s for m in conv_steps)
        scale = fit_efficiency(lambda k: 1.0 / sum(sum(seconds(k * matmul_flops, m)) for m in conv_steps),
                               1.0 / measured, lo=1e-3, hi=1e3)
        conv = scale * matmul_flops
    return ComputeCalibration(conv_flops=conv, matmul_flops=matmul_flops, memory_Bps=memory_Bps,
                              layer_overhead_s=overhead_s, steps=steps,
                              predicted=[seconds(conv, m) for m in steps])


def calibrate_compute(ex: Executor, models: list[str], batch: int, dtype: torch.dtype,
                      progress=None) -> ComputeCalibration:
    """Measure the roofline rates and the models' steps on this device (every rank at once) and fit."""
    name = _FIRESIM_DTYPE.get(dtype_name(dtype))
    if name is None:
        raise UserError(f"calibrate --compute: dtype {dtype_name(dtype)} has no firesim name (float32, float16, "
                        "bfloat16, float64)")
    matmul = measure_compute(ex, dtype)
    memory = measure_memory_bandwidth(ex)
    overhead = measure_kernel_overhead(ex)
    steps = []
    for model in models:
        steps.append(measure_step(ex, model, batch, dtype))
        if progress is not None:
            progress(model)
    return fit_compute(steps, matmul, memory, overhead, name)


def calibrate(ex: Executor, sizes: list[int], *, dtype: torch.dtype = torch.float32,
              ranks_per_node: int | None = None, round_trips: int = 30, reps: int = 3,
              compute_models: list[str] | None = None, compute_batch: int = 8, progress=None) -> Calibration:
    """Network fits (two ranks or more) and, with ``compute_models``, the compute roofline."""
    if ex.size < 2 and not compute_models:
        raise UserError("calibrate: needs at least 2 ranks (firerun run --nproc 2 calibrate ...), or --compute "
                        "to measure this device's compute alone")
    pairs = [("inter", (0, 1))] if ex.size >= 2 else []
    if ranks_per_node is not None and ex.size >= 2:
        if ranks_per_node < 1:
            raise UserError(f"ranks_per_node: must be >= 1, got {ranks_per_node}")
        pairs = []
        if ranks_per_node >= 2:
            pairs.append(("intra", (0, 1)))
        if ranks_per_node < ex.size:
            pairs.append(("inter", (0, ranks_per_node)))
    links = []
    for level, (a, b) in pairs:
        times = measure_pingpong(ex, a, b, sizes, dtype=dtype, round_trips=round_trips, reps=reps)
        alpha, beta = fit_alpha_beta(sizes, times)
        links.append(LinkFit(level=level, pair=(a, b), alpha_s=alpha, beta_s_per_byte=beta, sizes=list(sizes),
                             one_way_s=times))
    gamma = measure_gamma(ex, [s for s in sizes if s >= 1 << 16] or [1 << 20, 1 << 22], dtype) if links else None
    compute = calibrate_compute(ex, compute_models, compute_batch, dtype, progress) if compute_models else None
    flops = compute.matmul_flops if compute else measure_compute(ex, dtype)
    return Calibration(links=links, gamma_s_per_byte=gamma, compute_flops=flops, dtype=dtype_name(dtype),
                       backend=ex.transport.name, ranks=ex.size, hosts=[socket.gethostname()], compute=compute)


_FIRESIM_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def to_profile(cal: Calibration, name: str, ranks_per_node: int | None = None):
    """A ``firesim.hardware.HardwareProfile``: the inter-node fit is the default, the intra-node one an
    override (the simulator picks by level); the compute section when measured. One rank: compute only."""
    from firesim.hardware import ComputeProfile, HardwareProfile, LevelOverride, StepTime

    dtype = _FIRESIM_DTYPE.get(cal.dtype, "fp32")
    compute = None
    if cal.compute is not None:
        c = cal.compute
        compute = ComputeProfile(
            dtype=dtype, conv_flops=c.conv_flops, matmul_flops=c.matmul_flops, memory_Bps=c.memory_Bps,
            layer_overhead_s=c.layer_overhead_s,
            step_times=[StepTime(model=m.model, batch=m.batch, forward_s=m.forward_s, backward_s=m.backward_s,
                                 predicted_forward_s=f, predicted_backward_s=b)
                        for m, (f, b) in zip(c.steps, c.predicted)])
    by_level = {fit.level: fit for fit in cal.links}
    main = by_level.get("inter") or by_level.get("intra")
    overrides = {}
    if "intra" in by_level and "inter" in by_level:
        intra = by_level["intra"]
        overrides["intra"] = LevelOverride(alpha_s=intra.alpha_s, beta_s_per_byte=intra.beta_s_per_byte)
    return HardwareProfile(
        name=name, alpha_s=main.alpha_s if main else None, beta_s_per_byte=main.beta_s_per_byte if main else None,
        gamma_s_per_byte=cal.gamma_s_per_byte if main else None, compute_flops=cal.compute_flops, compute=compute,
        dtype=dtype, gpus_per_node=ranks_per_node if overrides else 1, overrides=overrides,
        source=f"firerun calibrate ({cal.backend}, {cal.ranks} ranks, {cal.dtype}"
               f"{', compute' if compute else ''})",
        measured_on=f"{', '.join(sorted(set(cal.hosts)))} ({platform.machine()}, {platform.processor() or 'cpu'})",
    )

"""Measure the cost-model constants the simulator needs, with the executor itself, and write a profile.

* alpha (s) and beta (s/byte): ping-pong *plans* run by the executor between two ranks over a size sweep,
  fitted as one-way time = alpha + beta * bytes. Running plans (not raw sends) puts the executor's own
  per-message cost into alpha, so the simulator predicts what the executor will measure. With a rank->node
  map (``ranks_per_node``) the intra-node pair (0, 1) and the inter-node pair (0, ranks_per_node) are fitted
  separately.
* gamma (s/byte): in-place adds of a received buffer into a chunk (what a reduce op does), on every rank at
  once, as in a collective where all ranks reduce together.
* compute (FLOP/s): a square matmul on every rank at once (ranks sharing a host share its cores).

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
class Calibration:
    links: list[LinkFit]
    gamma_s_per_byte: float
    compute_flops: float
    dtype: str
    backend: str
    ranks: int
    hosts: list[str] = field(default_factory=list)


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


def calibrate(ex: Executor, sizes: list[int], *, dtype: torch.dtype = torch.float32,
              ranks_per_node: int | None = None, round_trips: int = 30, reps: int = 3) -> Calibration:
    if ex.size < 2:
        raise UserError("calibrate: needs at least 2 ranks (firerun run --nproc 2 calibrate ...)")
    pairs = [("inter", (0, 1))]
    if ranks_per_node is not None:
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
    gamma = measure_gamma(ex, [s for s in sizes if s >= 1 << 16] or [1 << 20, 1 << 22], dtype)
    flops = measure_compute(ex, dtype)
    return Calibration(links=links, gamma_s_per_byte=gamma, compute_flops=flops, dtype=dtype_name(dtype),
                       backend=ex.transport.name, ranks=ex.size, hosts=[socket.gethostname()])


_FIRESIM_DTYPE = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


def to_profile(cal: Calibration, name: str, ranks_per_node: int | None = None):
    """A ``firesim.hardware.HardwareProfile``: the inter-node fit is the default, the intra-node one an
    override (the simulator picks by level)."""
    from firesim.hardware import HardwareProfile, LevelOverride

    by_level = {fit.level: fit for fit in cal.links}
    main = by_level.get("inter") or by_level["intra"]
    overrides = {}
    if "intra" in by_level and "inter" in by_level:
        intra = by_level["intra"]
        overrides["intra"] = LevelOverride(alpha_s=intra.alpha_s, beta_s_per_byte=intra.beta_s_per_byte)
    return HardwareProfile(
        name=name, alpha_s=main.alpha_s, beta_s_per_byte=main.beta_s_per_byte,
        gamma_s_per_byte=cal.gamma_s_per_byte, compute_flops=cal.compute_flops,
        dtype=_FIRESIM_DTYPE.get(cal.dtype, "fp32"),
        gpus_per_node=ranks_per_node if overrides else 1,
        overrides=overrides,
        source=f"firerun calibrate ({cal.backend}, {cal.ranks} ranks, {cal.dtype})",
        measured_on=f"{', '.join(sorted(set(cal.hosts)))} ({platform.machine()}, {platform.processor() or 'cpu'})",
    )

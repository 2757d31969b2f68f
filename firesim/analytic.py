"""Closed-form alpha-beta-gamma cost of every plan builder, vectorised with numpy for sweeps.

alpha_s: latency per message (software + hops), beta_s_per_byte: 1 / link bandwidth, gamma_s_per_byte:
reduction cost per byte at the receiver. Each formula is the time the plan *as our builder writes it*
takes on a network without contention (a non-blocking switch) under the semantics of
``firesim.plans.ir``, so the engine must agree with it; Thakur, Rabenseifner and Gropp (2005) give the
textbook forms, and the docstrings say where ours differ (e.g. a parameter server whose replies leave one
after another, as MPICH's sends do). Every argument broadcasts: pass arrays to sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from firesim.errors import UserError


@dataclass(frozen=True)
class CommParams:
    """Cost of one message of n bytes: alpha_s + n * beta_s_per_byte; reducing it at the receiver: n * gamma."""

    alpha_s: float
    beta_s_per_byte: float
    gamma_s_per_byte: float

    def __post_init__(self):
        # A negative or NaN figure would give negative or NaN times without any error: refuse it here, where
        # every closed form (and firesim.plans.allreduce_time) gets its figures from.
        for name in ("alpha_s", "beta_s_per_byte", "gamma_s_per_byte"):
            value = getattr(self, name)
            try:
                ok = bool(np.all(np.isfinite(value) & (np.asarray(value) >= 0)))
            except TypeError:
                ok = False
            if not ok or isinstance(value, bool):
                raise UserError(f"{name}: must be finite and >= 0, got {value!r}")

    def astuple(self) -> tuple[float, float, float]:
        return self.alpha_s, self.beta_s_per_byte, self.gamma_s_per_byte


@dataclass(frozen=True)
class Levels:
    """What a message costs at each level of a cluster: between nodes (``inter``) and, where nodes hold
    several GPUs, inside one (``intra``, with ``ranks_per_node`` ranks a node)."""

    inter: CommParams
    intra: CommParams | None = None
    ranks_per_node: int = 1

    def __post_init__(self):
        if not isinstance(self.inter, CommParams) or not isinstance(self.intra, (CommParams, type(None))):
            raise UserError("levels: inter (and intra, if given) must be CommParams")
        if isinstance(self.ranks_per_node, bool) or not isinstance(self.ranks_per_node, (int, np.integer)) \
                or self.ranks_per_node < 1:
            raise UserError(f"ranks_per_node: must be an integer >= 1, got {self.ranks_per_node!r}")

    def flat(self, ranks) -> CommParams:
        """The level a one-level algorithm over ``ranks`` ranks runs at: intra while they fit one node."""
        if self.intra is None:
            return self.inter
        inside = np.asarray(ranks) <= self.ranks_per_node
        if inside.ndim == 0:
            return self.intra if bool(inside) else self.inter
        return CommParams(*(np.where(inside, a, b) for a, b in zip(self.intra.astuple(), self.inter.astuple())))


def _ceil_log2(p):
    p = np.asarray(p)
    return np.where(p > 1, np.ceil(np.log2(np.maximum(p, 1))), 0)


def ring_time(ranks, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte):
    """2(p-1)(alpha + n/p beta) + (p-1) n/p gamma: p-1 reduce-scatter steps then p-1 all-gather steps."""
    p = np.asarray(ranks, np.float64)
    m = np.asarray(nbytes, np.float64) / p
    return 2 * (p - 1) * (alpha_s + m * beta_s_per_byte) + (p - 1) * m * gamma_s_per_byte


def fair_share_finish(start_s: np.ndarray, work_s: np.ndarray) -> np.ndarray:
    """Completion times of equal-size flows that share one link max-min fairly (processor sharing).

    start_s: (rows, flows) start times; work_s: (rows,) seconds one flow needs alone. Each round of the
    loop starts or finishes at least one flow, so 2 x flows rounds suffice. Vectorised over rows.
    """
    start_s = np.asarray(start_s, np.float64)
    work_s = np.asarray(work_s, np.float64)
    remaining = np.repeat(work_s[:, None], start_s.shape[1], axis=1)
    done = np.full(start_s.shape, np.inf)
    t = start_s.min(axis=1)
    with np.errstate(invalid="ignore"):
        for _ in range(2 * start_s.shape[1]):
            active = (start_s <= t[:, None]) & np.isinf(done)
            n = active.sum(axis=1)
            first_out = t + np.where(active, remaining, np.inf).min(axis=1) * n
            next_in = np.where(start_s > t[:, None], start_s, np.inf).min(axis=1)
            t_next = np.minimum(np.where(n > 0, first_out, np.inf), next_in)
            share = np.where(n > 0, (t_next - t) / np.maximum(n, 1), 0.0)
            remaining = np.where(active, remaining - share[:, None], remaining)
            t = np.where(np.isfinite(t_next), t_next, t)
            done = np.where(active & (remaining <= 1e-9 * work_s[:, None]), t[:, None], done)
    return done


_WINDOW = 2  # full children that may share the link with the smaller subtree's flow; rows that need more are solved whole


def _last_child_arrivals(full_start: np.ndarray, last_start: np.ndarray, work: np.ndarray,
                         arrived: np.ndarray) -> np.ndarray:
    """Share the link between the smaller subtree's flow and the full children's flows it meets.

    Full children start a whole stage apart (longer than one transfer), so alone they never overlap; only
    the few around ``last_start`` can meet the last flow. Those are solved with ``fair_share_finish``
    (``arrived`` updated in place); rows whose shared period reaches past the window are solved whole.
    Returns the last flow's arrival.
    """
    rows, full = full_start.shape
    first = (full_start + work[:, None] <= last_start[:, None]).sum(axis=1)  # flows already over
    cols = first[:, None] + np.arange(_WINDOW)[None, :]
    inside = cols < full
    starts = np.where(inside, np.take_along_axis(full_start, np.minimum(cols, full - 1), axis=1), np.inf)
    done = fair_share_finish(np.append(starts, last_start[:, None], axis=1), work)
    after = np.where(cols[:, -1] + 1 < full,
                     np.take_along_axis(full_start, np.minimum(cols[:, -1:] + 1, full - 1), axis=1)[:, 0], np.inf)
    spill = np.where(np.isfinite(done), done, -np.inf).max(axis=1) > after
    mask = inside & ~spill[:, None]
    arrived[np.nonzero(mask)[0], cols[mask]] = done[:, :_WINDOW][mask]
    last = done[:, -1].copy()
    if spill.any():
        whole = fair_share_finish(np.append(full_start[spill], last_start[spill, None], axis=1), work[spill])
        arrived[spill, :full] = whole[:, :full]
        last[spill] = whole[:, -1]
    return last


def binomial_reduce_time(size, alpha_s, transfer_s, add_s):
    """Time until the root of a binomial tree of ``size`` ranks holds the sum, exactly.

    The root's children are full trees of 2^j ranks (done at j stages, a stage = alpha + transfer + add)
    and, if size is not a power of two, one smaller tree for the rest. Each child sends as soon as its
    subtree is summed; transfers that overlap share the root's link (``fair_share_finish``); the root adds
    them in child order. Built bit by bit from the lowest set bit of size, vectorised over sizes.
    """
    size, alpha_s, transfer_s, add_s = np.broadcast_arrays(
        np.asarray(size, np.int64), np.asarray(alpha_s, np.float64), np.asarray(transfer_s, np.float64),
        np.asarray(add_s, np.float64))
    stage = alpha_s + transfer_s + add_s
    t = np.zeros(size.shape)
    seen = np.zeros(size.shape, bool)
    for bit in range(int(size.max(initial=1)).bit_length()):
        has = (size >> bit) & 1 == 1
        first = has & ~seen
        t = np.where(first, bit * stage, t)
        grow = has & seen
        if grow.any():
            a, w, g = alpha_s[grow], transfer_s[grow], add_s[grow]
            full_start = np.arange(bit)[None, :] * stage[grow][:, None] + a[:, None]
            arrived = np.append(full_start + w[:, None], np.zeros((a.size, 1)), axis=1)
            arrived[:, -1] = _last_child_arrivals(full_start, t[grow] + a, w, arrived)
            chain = np.zeros(a.shape)
            for j in range(bit + 1):
                chain = np.maximum(chain, arrived[:, j]) + g
            t[grow] = chain
        seen |= has
    return t


def tree_time(ranks, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, chunks: int = 1):
    """Binomial reduce then broadcast (the paper's reduction tree): ceil(lg p)(2 alpha + 2 n beta + n gamma)
    for p a power of two.

    The reduce is computed exactly for any p (``binomial_reduce_time``: where p is not a power of two some
    children finish together and share their parent's link); the broadcast is ceil(lg p) sequential sends. With chunks > 1 the pipelined estimate
    (depth + chunks - 1) stages of n/chunks is used.
    """
    p = np.asarray(ranks, np.int64)
    m = np.asarray(nbytes, np.float64) / chunks
    depth = _ceil_log2(p)
    if chunks == 1:
        reduce = binomial_reduce_time(p, alpha_s, m * beta_s_per_byte, m * gamma_s_per_byte)
        return reduce + depth * (alpha_s + m * beta_s_per_byte)
    return np.where(p > 1, (depth + chunks - 1) * (2 * alpha_s + 2 * m * beta_s_per_byte + m * gamma_s_per_byte), 0.0)


def ps_time(ranks, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, servers: int = 1, colocated: bool = True):
    """Parameter server with ``servers`` shards of n/s bytes (chunks = servers).

    Push: every worker sends each shard at once, so a server's link carries p-1 (co-located) or p
    (dedicated) flows and a worker's carries up to s: alpha + max(in, out) n/s beta. The server then adds the
    shards one by one ((p-1) n/s gamma) and sends the sum back to each worker in turn (each worker hears
    from one server at a time): (p-1) or p times (alpha + n/s beta).
    """
    p = np.asarray(ranks, np.float64)
    s = float(servers)
    m = np.asarray(nbytes, np.float64) / s
    if colocated:
        incast = p - 1
        out_flows = np.where(p > s, s, s - 1)
        replies = p - 1
    else:
        incast = p
        out_flows = np.full_like(p, s)
        replies = p
    push = alpha_s + np.maximum(incast, out_flows) * m * beta_s_per_byte
    t = push + (p - 1) * m * gamma_s_per_byte + replies * (alpha_s + m * beta_s_per_byte)
    return np.where(p > 1, t, 0.0) if colocated else t


def halving_doubling_time(ranks, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte):
    """Rabenseifner: 2 lg p' alpha + 2 (p'-1)/p' n beta + (p'-1)/p' n gamma with p' = 2^floor(lg p);
    for p != p' add the pre-step (alpha + n beta + n gamma) and the post-step (alpha + n beta)."""
    p = np.asarray(ranks, np.int64)
    pow2 = np.left_shift(1, np.floor(np.log2(np.maximum(p, 1))).astype(np.int64)).astype(np.float64)
    steps = np.log2(pow2)
    n = np.asarray(nbytes, np.float64)
    frac = (pow2 - 1) / pow2
    core = 2 * steps * alpha_s + 2 * frac * n * beta_s_per_byte + frac * n * gamma_s_per_byte
    extra = np.where(p != pow2, 2 * alpha_s + 2 * n * beta_s_per_byte + n * gamma_s_per_byte, 0.0)
    return core + extra


def double_binary_tree_time(ranks, nbytes, alpha_s, beta_s_per_byte, gamma_s_per_byte, chunks_per_tree: int = 1):
    """Two binary trees on m = n/2 each (NCCL), both D = ceil(lg p) deep.

    For p = 2^D and one chunk per tree this is exact: the reduce takes D-1 stages in which two children
    share a parent's link (alpha + 2m beta + 2m gamma) and one into the single-child root (alpha + m beta +
    m gamma); the broadcast sends to the root's child, then to two children in turn per level:
    (3D-1) alpha + (4D-2) m beta + (2D-1) m gamma. Other p, and pipelining over chunks, use the same
    expression with D = ceil(lg p) and D + chunks - 1 stages: estimates.
    """
    p = np.asarray(ranks, np.int64)
    depth = _ceil_log2(p) + chunks_per_tree - 1
    m = np.asarray(nbytes, np.float64) / (2 * chunks_per_tree)
    t = (3 * depth - 1) * alpha_s + (4 * depth - 2) * m * beta_s_per_byte + (2 * depth - 1) * m * gamma_s_per_byte
    return np.where(p > 1, t, 0.0)


def hierarchical_time(ranks, nbytes, levels: Levels, *, ranks_per_node: int, inter_time: Callable,
                      intra: str = "tree"):
    """Reduce inside each node to its leader, all-reduce across the leaders (``inter_time(nodes, nbytes)``),
    broadcast inside each node. The node level costs ``levels.intra`` (``levels.inter`` where there is none).
    Assumes full nodes."""
    a_in, b_in, g_in = (levels.intra or levels.inter).astuple()
    g = int(ranks_per_node)
    nodes = np.ceil(np.asarray(ranks, np.float64) / g)
    n = np.asarray(nbytes, np.float64)
    if g == 1:
        local = 0.0
    elif intra == "tree":
        depth = float(np.ceil(np.log2(g)))
        local = binomial_reduce_time(g, a_in, n * b_in, n * g_in) + depth * (a_in + n * b_in)
    else:
        local = a_in + (g - 1) * n * b_in + (g - 1) * n * g_in + a_in + (g - 1) * n * b_in
    return local + np.where(nodes > 1, inter_time(nodes, n), 0.0)


def allreduce_bandwidths_GBps(nbytes: float, time_s: float, ranks: int) -> tuple[float, float]:
    """nccl-tests' all-reduce figures: algbw = bytes / time, busbw = algbw x 2(p-1)/p (0 for one rank)."""
    algbw = nbytes / time_s / 1e9 if time_s > 0 else float("inf")
    return algbw, (algbw * 2 * (ranks - 1) / ranks if ranks > 1 else 0.0)


# ---- bytes each rank sends, as the builders write the plans (tests check them against every plan) ----------
def ring_bytes_sent(ranks: int, nbytes: float) -> np.ndarray:
    p = int(ranks)
    return np.full(p, 2 * (p - 1) * float(nbytes) / p)


def tree_bytes_sent(ranks: int, nbytes: float) -> np.ndarray:
    p, n = int(ranks), float(nbytes)
    r = np.arange(p)
    depth = int(np.ceil(np.log2(p))) if p > 1 else 0
    level = np.where(r == 0, depth, np.log2(np.maximum(r & -r, 1)).astype(int))
    children = sum(((j < level) & (r + (1 << j) < p)).astype(int) for j in range(depth))
    return n * ((r != 0) + children)


def ps_bytes_sent(ranks: int, nbytes: float, servers: int = 1, colocated: bool = True) -> np.ndarray:
    p, n, s = int(ranks), float(nbytes), int(servers)
    r = np.arange(p)
    if colocated:
        return np.where(r < s, (s - 1) * n / s + (p - 1) * n / s, n)
    return np.concatenate([np.full(p, n), np.full(s, p * n / s)])


def halving_doubling_bytes_sent(ranks: int, nbytes: float) -> np.ndarray:
    p, n = int(ranks), float(nbytes)
    pow2 = 1 << (p.bit_length() - 1)
    rem = p - pow2
    core = 2 * (pow2 - 1) / pow2 * n
    out = np.full(p, core)
    out[: 2 * rem : 2] = n  # even ranks of the pairs only hand their buffer over
    out[1 : 2 * rem : 2] = core + n
    return out

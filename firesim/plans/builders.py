"""All-reduce algorithms, each a builder function written in global view with ``PlanBuilder``.

Every builder returns a ``Plan`` over ``ranks`` workers (plus dedicated servers for a parameter server) that
leaves each worker with the sum of all workers' buffers. Adding an algorithm means a function (here or in
your own module) and a record in ``firesim.plans.registry``; the simulator and the executor run it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from firesim.errors import UserError
from firesim.plans.ir import Plan, PlanBuilder


def _positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise UserError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _ceil_log2(p: int) -> int:
    return max(0, math.ceil(math.log2(p))) if p > 1 else 0


def _lowbit(v: np.ndarray) -> np.ndarray:
    return v & -v


# ---- ring ------------------------------------------------------------------------------------------------
def ring(ranks: int, nbytes: int) -> Plan:
    """Bandwidth-optimal ring: reduce-scatter then all-gather, p-1 steps each, one chunk per rank."""
    p = _positive("ranks", ranks)
    b = PlanBuilder("ring", p, nbytes, chunks=p)
    if p > 1:
        r = np.arange(p)[None, :]
        steps = np.arange(p - 1)[:, None]
        b.transfer(r, (r + 1) % p, (r - steps) % p, reduce=True, step=steps)
        b.transfer(r, (r + 1) % p, (r + 1 - steps) % p, reduce=False, step=p - 1 + steps)
    return b.build()


# ---- binomial tree (the paper's reduction tree) -----------------------------------------------------------
def _binomial(b: PlanBuilder, members: np.ndarray, chunks: Sequence[tuple[int, int]], *, reduce_step: int,
              bcast_step: int | None) -> int:
    """Binomial reduce of each (chunk, span) onto members[0], then (if bcast_step) broadcast back.

    Chunk j's transfers are shifted by j steps so successive chunks pipeline up and down the tree.
    Returns the first step after the last transfer.
    """
    p = len(members)
    depth = _ceil_log2(p)
    if p == 1:
        return reduce_step if bcast_step is None else bcast_step
    v = np.arange(1, p)
    low = _lowbit(v)
    level = np.log2(low).astype(np.int64)  # round in which v sends to v - low in the reduce
    last = reduce_step
    for j, (chunk, span) in enumerate(chunks):
        b.transfer(members[v], members[v - low], chunk, span=span, reduce=True, step=reduce_step + j + level)
        last = max(last, reduce_step + j + depth)
    if bcast_step is None:
        return last
    for j, (chunk, span) in enumerate(chunks):
        # the largest subtree first, as MPICH's binomial broadcast does
        b.transfer(members[v - low], members[v], chunk, span=span, reduce=False,
                   step=bcast_step + j + depth - 1 - level)
        last = max(last, bcast_step + j + depth)
    return last


def binomial_tree(ranks: int, nbytes: int, chunks: int = 1, root: int = 0) -> Plan:
    """Binomial reduce to ``root`` then binomial broadcast: ~2 lg p (alpha + n beta). ``chunks`` > 1 pipelines."""
    p = _positive("ranks", ranks)
    c = _positive("chunks", chunks)
    if not 0 <= root < p:
        raise UserError(f"root: must be in 0..{p - 1}, got {root}")
    b = PlanBuilder("tree", p, nbytes, chunks=c, root=root)
    members = (np.arange(p) + root) % p
    pieces = [(j, 1) for j in range(c)]
    _binomial(b, members, pieces, reduce_step=0, bcast_step=_ceil_log2(p) + c)
    return b.build()


# ---- parameter server ----------------------------------------------------------------------------------------
def parameter_server(ranks: int, nbytes: int, servers: int = 1, colocated: bool = True,
                     chunks: int | None = None) -> Plan:
    """Workers push their gradients to the servers, which sum and send them back.

    Chunk k lives on server k mod ``servers``. Co-located servers are workers 0..servers-1; dedicated
    servers (``colocated=False``) are extra ranks after the workers that hold no data of their own.
    """
    p = _positive("ranks", ranks)
    s = _positive("servers", servers)
    if colocated and s > p:
        raise UserError(f"servers: co-located servers must be <= ranks ({p}), got {s}")
    c = _positive("chunks", s if chunks is None else chunks)
    if c < s:
        raise UserError(f"chunks: must be >= servers ({s}) so every server holds a shard, got {c}")
    total = p if colocated else p + s
    b = PlanBuilder("ps", total, nbytes, chunks=c, workers=p, servers=s, colocated=bool(colocated))
    k = np.arange(c)
    server = k % s if colocated else p + k % s
    w, kk = np.meshgrid(np.arange(p), k, indexing="ij")  # rows: worker, columns: chunk
    owner = server[kk]
    push = w != owner
    first = w == 0  # a dedicated server starts empty: worker 0's shard is copied, the rest added
    b.transfer(w[push & first], owner[push & first], kk[push & first], reduce=colocated, step=0)
    b.transfer(w[push & ~first], owner[push & ~first], kk[push & ~first], reduce=True, step=0)
    # Replies: the server of chunk k answers workers k+1, k+2, ... (dedicated: k, k+1, ...) in turn, so at
    # any moment the servers talk to different workers instead of all queueing on worker 0's link.
    slot, kk = np.meshgrid(np.arange(p), k, indexing="ij")  # rows: reply slot, columns: chunk
    target = (kk + slot + (1 if colocated else 0)) % p
    owner = server[kk]
    reply = target != owner
    b.transfer(owner[reply], target[reply], kk[reply], reduce=False, step=1)
    return b.build()


# ---- recursive halving / doubling (Rabenseifner) --------------------------------------------------------
def halving_doubling(ranks: int, nbytes: int) -> Plan:
    """Rabenseifner: recursive-halving reduce-scatter then recursive-doubling all-gather (MPICH).

    For p not a power of two the first 2r ranks (r = p - 2^floor(lg p)) pair up: even ranks hand their
    buffer to the odd neighbour before and get the result back after.
    """
    p = _positive("ranks", ranks)
    pow2 = 1 << (p.bit_length() - 1)
    rem = p - pow2
    steps = pow2.bit_length() - 1
    b = PlanBuilder("halving_doubling", p, nbytes, chunks=pow2)
    if p == 1:
        return b.build()
    v = np.arange(pow2)
    real = np.where(v < rem, 2 * v + 1, v + rem)  # the rank that plays virtual rank v
    if rem:
        even = np.arange(0, 2 * rem, 2)
        b.transfer(even, even + 1, 0, span=pow2, reduce=True, step=0)
    for s in range(steps):  # reduce-scatter: halve the range each step
        block = pow2 >> s
        half = block // 2
        lo = (v // block) * block
        upper = (v & half) != 0
        partner = v ^ half
        b.transfer(real[v], real[partner], np.where(upper, lo, lo + half), span=half, reduce=True, step=1 + s)
    for s in range(steps):  # all-gather: double it
        width = 1 << s
        lo = (v // width) * width
        b.transfer(real[v], real[v ^ width], lo, span=width, reduce=False, step=1 + steps + s)
    if rem:
        odd = np.arange(1, 2 * rem, 2)
        b.transfer(odd, odd - 1, 0, span=pow2, reduce=False, step=1 + 2 * steps)
    return b.build()


# ---- double binary tree (NCCL) -------------------------------------------------------------------------
def _btree_parents(p: int) -> np.ndarray:
    """NCCL's binary tree (ncclGetBtree): parent of every rank, -1 for the root (rank 0)."""
    r = np.arange(p)
    bit = _lowbit(r)
    up = (r ^ bit) | (bit << 1)
    up = np.where(up >= p, r ^ bit, up)
    up[0] = -1
    return up


def double_binary_tree_parents(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Parents in NCCL's two trees: the second is the first shifted by one rank (odd p) or mirrored (even p)."""
    first = _btree_parents(p)
    r = np.arange(p)
    if p % 2:
        shifted = first[(r - 1) % p]
        return first, np.where(shifted < 0, -1, (shifted + 1) % p)
    mirrored = first[p - 1 - r]
    return first, np.where(mirrored < 0, -1, p - 1 - mirrored)


def double_binary_tree_bytes_sent(ranks: int, nbytes: float, chunks_per_tree: int = 1) -> np.ndarray:
    p, m = int(ranks), float(nbytes) / 2
    out = np.zeros(p)
    for parent in double_binary_tree_parents(p):
        out += m * (parent >= 0) + m * np.bincount(parent[parent >= 0], minlength=p)
    return out


def _tree_levels(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height above the deepest leaf below and depth below the root, for every rank."""
    p = parent.shape[0]
    depth = np.zeros(p, np.int64)
    order = []
    root = int(np.flatnonzero(parent < 0)[0])
    children: list[list[int]] = [[] for _ in range(p)]
    for r in range(p):
        if parent[r] >= 0:
            children[parent[r]].append(r)
    stack = [root]
    while stack:
        u = stack.pop()
        order.append(u)
        for w in children[u]:
            depth[w] = depth[u] + 1
            stack.append(w)
    height = np.zeros(p, np.int64)
    for u in reversed(order):
        if parent[u] >= 0:
            height[parent[u]] = max(height[parent[u]], height[u] + 1)
    return height, depth


def double_binary_tree(ranks: int, nbytes: int, chunks_per_tree: int = 1) -> Plan:
    """Two binary trees, each reducing and broadcasting half the buffer (NCCL's double binary tree).

    The second tree is the first shifted by one rank (odd p) or mirrored (even p), so most ranks are
    interior in one tree and a leaf in the other and both halves use every link in both directions.
    """
    p = _positive("ranks", ranks)
    k = _positive("chunks_per_tree", chunks_per_tree)
    b = PlanBuilder("double_binary_tree", p, nbytes, chunks=2 * k, chunks_per_tree=k)
    if p == 1:
        return b.build()
    first, second = double_binary_tree_parents(p)
    levels = [_tree_levels(first), _tree_levels(second)]
    top = max(int(h.max()) for h, _ in levels)
    for t, parent in enumerate((first, second)):
        height, depth = levels[t]
        child = np.flatnonzero(parent >= 0)
        for j in range(k):
            chunk = t * k + j
            b.transfer(child, parent[child], chunk, reduce=True, step=j + height[child])
            b.transfer(parent[child], child, chunk, reduce=False, step=top + k + j + depth[child] - 1)
    return b.build()


# ---- hierarchical ----------------------------------------------------------------------------------------
def node_groups(ranks: int, ranks_per_node: int) -> list[list[int]]:
    """Consecutive ranks grouped by node: node_groups(8, 4) -> [[0, 1, 2, 3], [4, 5, 6, 7]]."""
    p = _positive("ranks", ranks)
    g = _positive("ranks_per_node", ranks_per_node)
    return [list(range(lo, min(lo + g, p))) for lo in range(0, p, g)]


def hierarchical(groups: Sequence[Sequence[int]], nbytes: int, inter: Callable[[int], Plan], *,
                 intra: str = "tree") -> Plan:
    """Reduce inside each group (node) to its first rank, all-reduce across those leaders with the plan
    ``inter(leaders)`` builds, then broadcast inside each group. ``intra`` is "tree" (binomial) or "direct"
    (every rank to the leader). One group is a reduce and broadcast inside it.
    """
    members = [list(map(int, g)) for g in groups]
    flat = sorted(r for g in members for r in g)
    if not members or any(not g for g in members) or flat != list(range(len(flat))):
        raise UserError("groups: must partition ranks 0..p-1 into non-empty groups")
    if intra not in ("tree", "direct"):
        raise UserError(f"intra: must be 'tree' or 'direct', got {intra!r}")
    leaders = [g[0] for g in members]
    top = inter(len(leaders))
    if top.ranks != len(leaders):
        raise UserError(f"inter: the leaders' plan {top.name} needs {top.ranks} ranks for {len(leaders)} leaders "
                        "(dedicated servers cannot sit between nodes)")
    c = top.chunks
    b = PlanBuilder("hierarchical", len(flat), nbytes, chunks=c, inter=top.name, intra=intra,
                    groups=members, **top.params)
    whole = [(0, c)]
    after_reduce = 0
    for g in members:
        arr = np.asarray(g)
        if intra == "tree":
            after_reduce = max(after_reduce, _binomial(b, arr, whole, reduce_step=0, bcast_step=None))
        elif len(g) > 1:
            b.transfer(arr[1:], arr[0], 0, span=c, reduce=True, step=0)
            after_reduce = max(after_reduce, 1)
    b.extend(top, leaders, step_offset=after_reduce)
    start = after_reduce + int(np.diff(top.offsets).max(initial=0)) + 1
    for g in members:
        arr = np.asarray(g)
        if intra == "tree" and len(g) > 1:
            v = np.arange(1, len(g))
            low = _lowbit(v)
            level = np.log2(low).astype(np.int64)
            b.transfer(arr[v - low], arr[v], 0, span=c, reduce=False,
                       step=start + _ceil_log2(len(g)) - 1 - level)
        elif len(g) > 1:
            b.transfer(arr[0], arr[1:], 0, span=c, reduce=False, step=start)
    return b.build()

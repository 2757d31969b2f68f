"""Prove a plan correct by running it symbolically.

Every chunk at every rank holds the *set* of worker ranks whose data it contains (a Python int used as a
bitset). Sends carry a snapshot of the set, ``reduce`` requires the incoming set to be disjoint from the
local one (a contribution counted twice is an error) and unites them, ``recv`` replaces. The run follows
the issue/complete rules of ``firesim.plans.ir`` exactly, so a plan that verifies cannot deadlock in the
simulator or the executor, and ends with every chunk on every worker summed over all workers exactly once.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from firesim.errors import UserError
from firesim.limits import VERIFY_MAX_OPS, check_ops
from firesim.plans.ir import OP_NAMES, Op, Plan, check_structure


class PlanError(UserError):
    """A plan that is malformed, deadlocks, or does not compute the all-reduce."""


def _bits(mask: int) -> str:
    members = [i for i in range(mask.bit_length()) if mask >> i & 1]
    return "{" + ",".join(map(str, members)) + "}"


def match_messages(plan: Plan) -> np.ndarray:
    """Index of each op's partner (the recv of a send and vice versa; -1 for compute), matched FIFO per pair.

    Raises PlanError if a pair's sends and recvs differ in number or in the chunks they name.
    """
    rank = plan.op_rank().astype(np.int64)
    index = np.arange(plan.n_ops, dtype=np.int64)
    is_send = plan.op == Op.SEND
    is_recv = (plan.op == Op.RECV) | (plan.op == Op.REDUCE)
    sends, recvs = index[is_send], index[is_recv]
    s_src, s_dst = rank[sends], plan.peer[sends].astype(np.int64)
    r_src, r_dst = plan.peer[recvs].astype(np.int64), rank[recvs]
    s_order = np.lexsort((sends, s_dst, s_src))
    r_order = np.lexsort((recvs, r_dst, r_src))
    s_pair = s_src[s_order] * plan.ranks + s_dst[s_order]
    r_pair = r_src[r_order] * plan.ranks + r_dst[r_order]
    if s_pair.shape != r_pair.shape or np.any(s_pair != r_pair):
        s_count = np.bincount(s_pair, minlength=plan.ranks**2)
        r_count = np.bincount(r_pair, minlength=plan.ranks**2)
        bad = int(np.flatnonzero(s_count != r_count)[0])
        src, dst = divmod(bad, plan.ranks)
        raise PlanError(f"plan {plan.name}: rank {src} sends {s_count[bad]} messages to rank {dst}, "
                        f"which posts {r_count[bad]} receives from it")
    s_ops, r_ops = sends[s_order], recvs[r_order]
    differ = (plan.chunk[s_ops] != plan.chunk[r_ops]) | (plan.span[s_ops] != plan.span[r_ops])
    if np.any(differ):
        i = int(np.flatnonzero(differ)[0])
        s, r = s_ops[i], r_ops[i]
        raise PlanError(f"plan {plan.name}: messages {rank[s]}->{rank[r]} out of order: the sender sends "
                        f"chunk {plan.chunk[s]}+{plan.span[s]} where the receiver expects "
                        f"chunk {plan.chunk[r]}+{plan.span[r]}")
    partner = np.full(plan.n_ops, -1, dtype=np.int64)
    partner[s_ops] = r_ops
    partner[r_ops] = s_ops
    return partner


def verify(plan: Plan, *, max_ops: int = VERIFY_MAX_OPS) -> None:
    """Raise PlanError unless the plan is a deadlock-free all-reduce over its workers. Returns None.

    The proof runs op by op in Python (~10 us per op, more with many workers), so a plan of more than
    ``max_ops`` ops is refused up front (``firesim.limits``)."""
    check_structure(plan)
    check_ops(plan.n_ops, f"verify {plan.name} ({plan.ranks} ranks)", max_ops)
    partner = match_messages(plan).tolist()
    op, chunk, span = plan.op.tolist(), plan.chunk.tolist(), plan.span.tolist()
    peer, offsets = plan.peer.tolist(), plan.offsets.tolist()
    full = (1 << plan.workers) - 1
    state = [[(1 << r) if r < plan.workers else 0] * plan.chunks for r in range(plan.ranks)]
    pc = offsets[:-1].copy()
    posted = bytearray(plan.n_ops)  # recv posted / send issued
    value: dict[int, list[int]] = {}  # send op -> snapshot of its chunks' sets
    pending: dict[tuple[int, int], deque] = {}  # (rank, chunk) -> incomplete ops, in program order
    dirty: set[tuple[int, int]] = set()
    todo = deque(range(plan.ranks))

    def chunks_of(j):
        return range(chunk[j], chunk[j] + span[j])

    def enqueue(r, j):
        for c in chunks_of(j):
            pending.setdefault((r, c), deque()).append(j)
            dirty.add((r, c))

    def complete(r, j):
        for c in chunks_of(j):
            q = pending[(r, c)]
            q.popleft()
            if q:
                dirty.add((r, c))
            else:
                del pending[(r, c)]
        todo.append(r)

    def drain(r, c):
        while (q := pending.get((r, c))):
            j = q[0]
            if op[j] == Op.SEND:
                if not posted[partner[j]]:
                    return
            else:
                if not posted[partner[j]] or any(pending[(r, c2)][0] != j for c2 in chunks_of(j)):
                    return
                for c2, incoming in zip(chunks_of(j), value[partner[j]]):
                    if op[j] == Op.REDUCE:
                        twice = state[r][c2] & incoming
                        if twice:
                            raise PlanError(f"plan {plan.name}: rank {r} adds chunk {c2} from rank {peer[j]} "
                                            f"counting ranks {_bits(twice)} twice")
                        state[r][c2] |= incoming
                    else:
                        state[r][c2] = incoming
            complete(r, j)

    def issue(r):
        end = offsets[r + 1]
        while pc[r] < end:
            j = pc[r]
            k = op[j]
            if k == Op.SEND or (k == Op.COMPUTE and chunk[j] >= 0):
                if any((r, c) in pending for c in chunks_of(j)):
                    return  # blocked until earlier ops on these chunks complete
            if k == Op.SEND:
                value[j] = [state[r][c] for c in chunks_of(j)]
                posted[j] = 1
                q = partner[j]
                if not posted[q]:
                    enqueue(r, j)  # completes when the receiver posts
                for c in chunks_of(q):
                    dirty.add((peer[j], c))
            elif k != Op.COMPUTE:
                posted[j] = 1
                enqueue(r, j)
                s = partner[j]
                if posted[s]:
                    for c in chunks_of(s):
                        dirty.add((peer[j], c))
            pc[r] += 1

    while todo or dirty:
        while dirty:
            drain(*dirty.pop())
        if todo:
            issue(todo.popleft())

    stuck = [r for r in range(plan.ranks) if pc[r] < offsets[r + 1]]
    if stuck or pending:
        r = stuck[0] if stuck else next(iter(pending))[0]
        j = pc[r] if stuck else pending[next(iter(pending))][0]
        waiting_on = [pending[(r, c)][0] for c in chunks_of(j) if (r, c) in pending] or [j]
        w = waiting_on[0]
        raise PlanError(f"plan {plan.name}: deadlock: {len(stuck) or 1} rank(s) stuck; rank {r} cannot finish "
                        f"op {j - offsets[r]} ({OP_NAMES[op[j]]} chunk {chunk[j]} peer {peer[j]}), waiting on "
                        f"{OP_NAMES[op[w]]} chunk {chunk[w]} with rank {peer[w]}")
    for r in range(plan.workers):
        for c in range(plan.chunks):
            if state[r][c] != full:
                missing = full & ~state[r][c]
                raise PlanError(f"plan {plan.name}: rank {r} ends with chunk {c} summed over "
                                f"{_bits(state[r][c])}, missing ranks {_bits(missing)}")

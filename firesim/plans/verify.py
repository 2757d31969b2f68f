"""Prove a plan correct by running it symbolically.

Every chunk at every rank holds the *set* of worker ranks whose data it contains. Sends carry a snapshot of
the set, ``reduce`` requires the incoming set to be disjoint from the local one (a contribution counted twice
is an error) and unites them, ``recv`` replaces. The run follows the issue/complete rules of
``firesim.plans.ir`` exactly, so a plan that verifies cannot deadlock in the simulator or the executor, and
ends with every chunk on every worker summed over all workers exactly once.

``verify`` is vectorised like the builders (``make bench``: the 1024-rank ring, ~4 M ops, in about a second).
It splits the proof in two, because under those rules *what* a chunk holds never depends on *when* things
happen:

1. **Schedule** (deadlock freedom): every op has an issue and a completion event, each waiting on a few
   others (the previous op of its rank; the previous op on each of its chunks; the matching send or recv).
   Events fire in rounds, all ready ones at once, as numpy passes over the frontier (a run of posts that
   wait only for their predecessor fires in the same round). An event that never fires is a deadlock.
2. **Values** (exactness): one set per (rank, elementary chunk interval); the receives of each round, in
   round order, read the version their send snapshotted, which is the sender's value after its last earlier
   receive on that chunk (a version overwritten before it is read is kept aside); a reduce of two sets that
   intersect is a double count. Sets are first kept as cyclic intervals of worker ranks (two integers: every
   partial sum of a ring, tree, parameter server or hierarchical plan is one), and only when a union is not an
   interval (recursive halving) as bitsets of uint64 words, in blocks of words so memory stays bounded.

``verify_reference`` is the same proof written as an event loop over Python sets; the tests check that both
give the same verdict (and, where the first error found does not depend on the order, the same message).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from firesim.errors import UserError
from firesim.limits import VERIFY_MAX_OPS, check_ops
from firesim.plans.ir import OP_NAMES, Op, Plan, check_structure, expand_ranges

__all__ = ["PlanError", "match_messages", "verify", "verify_reference"]

STATE_BUDGET_BYTES = 256 << 20  # bitsets held at once; more workers are proven in several passes


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


def _once(items: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``items`` without repeats (order kept up to ties); ``scratch`` is any int64 array indexable by them."""
    if items.size < 2:
        return items
    position = np.arange(items.size)
    scratch[items] = position
    return items[scratch[items] == position]


def _decrement(count: np.ndarray, targets: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """Count one input down at every target (repeats allowed); the targets that reached zero, once each."""
    if targets.size == 0:
        return targets
    np.subtract.at(count, targets, 1)
    return _once(targets[count[targets] == 0], scratch)


class _Proof:
    """The two passes of ``verify`` over one plan (see the module doc)."""

    def __init__(self, plan: Plan, partner: np.ndarray):
        self.plan, self.partner = plan, partner
        n = plan.n_ops
        self.rank = plan.op_rank().astype(np.int64)
        self.is_recv = (plan.op == Op.RECV) | (plan.op == Op.REDUCE)
        self.comm = self.is_recv | (plan.op == Op.SEND)
        named = self.comm | (plan.chunk >= 0)
        self.gated = named & ~self.is_recv  # sends and computes on chunks: issue waits for those chunks
        # Units: one per (op, elementary interval between the chunk bounds any op uses) it covers. The chunks
        # of an interval are always touched together, so one bitset stands for them all.
        first = np.where(named, plan.chunk, 0).astype(np.int64)
        stop = np.where(named, first + plan.span, 0)
        bound = np.zeros(plan.chunks + 1, bool)
        bound[[0, -1]] = True
        bound[first[named]] = bound[stop[named]] = True
        self.bounds = np.flatnonzero(bound)
        self.intervals = self.bounds.size - 1
        self.single = bool(named.all() and self.intervals == plan.chunks and np.all(plan.span == 1))
        if self.single:  # one unit per op, and unit j is op j
            self.unit_ptr = np.arange(n + 1, dtype=np.int64)
            self.unit_op = self.unit_ptr[:-1]
            self.cell = self.rank * self.intervals + first
        else:
            interval = np.cumsum(bound) - 1  # chunk bound -> index of the interval it starts
            lo, hi = interval[first], np.where(named, interval[stop], interval[first])
            self.unit_ptr = np.concatenate([[0], np.cumsum(hi - lo)])
            self.unit_op = np.repeat(np.arange(n, dtype=np.int64), hi - lo)
            self.cell = self.rank[self.unit_op] * self.intervals + expand_ranges(lo, hi)  # (rank, interval) per unit
        # The next unit on the same cell in program order (units are made in op order, ops in rank order).
        by_cell = np.argsort(self.cell, kind="stable")
        follows = self.cell[by_cell[1:]] == self.cell[by_cell[:-1]]
        self.next_unit = np.full(self.unit_op.size, -1, np.int64)
        self.next_unit[by_cell[:-1][follows]] = by_cell[1:][follows]
        self.i_round = np.full(n, -1, np.int32)
        self.c_round = np.full(n, -1, np.int32)

    # ---- pass 1: the schedule --------------------------------------------------------------------------
    def schedule(self) -> None:
        """Fire every issue and completion event that can fire (``i_round``, ``c_round``; -1: never)."""
        plan, n = self.plan, self.plan.n_ops
        offsets, comm, gated, partner = plan.offsets, self.comm, self.gated, self.partner
        first_of_rank = np.zeros(n, bool)
        first_of_rank[offsets[:-1][np.diff(offsets) > 0]] = True
        later = np.where(self.next_unit >= 0, self.unit_op[np.maximum(self.next_unit, 0)], -1)  # per unit
        has_prev = np.bincount(later[later >= 0], minlength=n)  # an op's units that follow another on a cell
        # Inputs each event still waits for: wait[j] for op j's issue, wait[n + j] for its completion.
        wait = np.concatenate([~first_of_rank, 1 + comm]).astype(np.int32)
        wait[:n][gated] += has_prev[gated]
        wait[n:][self.is_recv] += has_prev[self.is_recv]
        # The event a unit's completion feeds: the issue of the next op on its cell if that op waits to issue
        # (a send), else that op's completion (a receive waits to complete).
        later = np.where(later >= 0, later + np.where(gated[np.maximum(later, 0)], 0, n), -1)
        # An op that waits only for its predecessor (a post, a compute on no chunk) issues with it: a ready op j
        # issues j .. run_end[j]-1, where run_end[j] is the next op that waits for more (or its rank's end).
        starts = np.flatnonzero(gated | first_of_rank)
        run_end = np.zeros(n, np.int64)
        run_end[starts] = np.minimum(np.append(starts[1:], n), offsets[1:][self.rank[starts]])
        has_next = np.zeros(n, bool)
        has_next[starts] = run_end[starts] < offsets[1:][self.rank[starts]]
        scratch = np.empty(2 * n, np.int64)
        ready_i = offsets[:-1][np.diff(offsets) > 0]
        ready_c = np.zeros(0, np.int64)
        t = 0
        while ready_i.size or ready_c.size:
            fire = expand_ranges(ready_i, run_end[ready_i])
            self.i_round[fire] = t
            after = run_end[ready_i[has_next[ready_i]]]
            wait[after] -= 1  # the op after each run, once
            next_i = after[wait[after] == 0]
            done = fire + n
            wait[done] -= 1
            talk = partner[fire[comm[fire]]] + n
            wait[talk] -= 1  # a send issued / a recv posted
            talk = talk[wait[talk] == 0]
            ready_c = np.concatenate([ready_c, fire[wait[done] == 0], talk[self.i_round[talk - n] != t] - n])
            t += 1
            self.c_round[ready_c] = t
            if self.single:  # every unit has one successor at most, so the events fed are distinct
                fed = later[ready_c]
                fed = fed[fed >= 0]
                wait[fed] -= 1
                fed = fed[wait[fed] == 0]
            else:
                fed = later[expand_ranges(self.unit_ptr[ready_c], self.unit_ptr[ready_c + 1])]
                fed = _decrement(wait, fed[fed >= 0], scratch)
            issues = fed < n
            ready_i = np.concatenate([next_i, fed[issues]])
            ready_c = fed[~issues] - n
            t += 1

    # ---- pass 2: the values ----------------------------------------------------------------------------
    def values(self) -> tuple | None:
        """Run the receives in the order of their rounds on exact sets: first as cyclic intervals of worker
        ranks (what every builder's partial sums are, 8 bytes a set), else, at the first union that is not one
        interval, again on bitsets.

        Returns ("twice", op, unit, bits) for the first double count found, ("missing", rank, chunk, bits)
        for the first (rank, chunk) of a worker that does not end with the full set, else None.
        """
        reads = self._reads()
        found = self._intervals(reads)
        return self._bitsets(reads) if found == "not an interval" else found

    def _reads(self) -> dict:
        """Every completed receive unit: the cell it reads and the cell it writes, grouped by round."""
        recv_units = np.flatnonzero(self.is_recv[self.unit_op] & (self.c_round[self.unit_op] >= 0))
        ops = self.unit_op[recv_units]
        send_units = self.unit_ptr[self.partner[ops]] + (recv_units - self.unit_ptr[ops])
        at = self.c_round[ops]
        # A receive reads its sender's cell as it is now: the version the send snapshotted, unless the sender
        # received on that cell again before now (``stale``). That next receive (the send's ``replacer``, found
        # by walking the cell's later units) keeps the version aside.
        replacer = self.next_unit[send_units]
        walking = np.flatnonzero(replacer >= 0)
        while walking.size:
            walking = walking[~self.is_recv[self.unit_op[replacer[walking]]]]
            replacer[walking] = self.next_unit[replacer[walking]]
            walking = walking[replacer[walking] >= 0]
        replaced_at = np.where(replacer >= 0, self.c_round[self.unit_op[replacer]], -1)
        stale = (replaced_at >= 0) & (replaced_at < at)
        kept = np.unique(replacer[stale])  # versions kept aside, named by the unit that replaces them
        save = np.isin(recv_units, kept) if kept.size else np.zeros(recv_units.size, bool)
        stale_row = np.searchsorted(kept, replacer) if kept.size else None
        save_row = np.searchsorted(kept, recv_units) if kept.size else None
        reduce = self.plan.op[ops] == Op.REDUCE
        order = np.argsort(at.astype(np.uint16) if at.max(initial=0) < 1 << 16 else at, kind="stable")  # radix
        rounds = []
        for g in np.split(order, np.flatnonzero(np.diff(at[order])) + 1) if order.size else []:
            red = reduce[g]
            rounds.append((g, bool(stale[g].any() or save[g].any()), bool(red.all()), not red.any()))
        return {"units": recv_units, "ops": ops, "src": self.cell[send_units], "own": self.cell[recv_units],
                "stale": stale, "stale_row": stale_row, "save": save, "save_row": save_row, "kept": kept.size,
                "reduce": reduce, "rounds": rounds}

    def _intervals(self, reads: dict):
        """The values pass on sets {lo, lo+1, ..., lo+size-1} (mod workers); "not an interval" if one is not."""
        plan, workers = self.plan, self.plan.workers
        cells = plan.ranks * self.intervals
        lo = np.zeros(cells, np.int64)
        size = np.zeros(cells, np.int64)
        lo[: workers * self.intervals] = np.repeat(np.arange(workers), self.intervals)
        size[: workers * self.intervals] = 1
        aside_lo, aside_size = np.zeros(reads["kept"], np.int64), np.zeros(reads["kept"], np.int64)
        src, own, reduce = reads["src"], reads["own"], reads["reduce"]
        for g, special, all_reduce, no_reduce in reads["rounds"]:
            b_lo, b_size = lo[src[g]], size[src[g]]
            if special:
                s = reads["stale"][g]
                b_lo[s], b_size[s] = aside_lo[reads["stale_row"][g[s]]], aside_size[reads["stale_row"][g[s]]]
                k = g[reads["save"][g]]
                aside_lo[reads["save_row"][k]], aside_size[reads["save_row"][k]] = lo[own[k]], size[own[k]]
            if no_reduce:
                lo[own[g]], size[own[g]] = b_lo, b_size
                continue
            a_lo, a_size = lo[own[g]], size[own[g]]
            if not all_reduce:  # a recv keeps nothing of the local value
                a_size = np.where(reduce[g], a_size, 0)
            overlap = (a_size > 0) & (b_size > 0) & (((b_lo - a_lo) % workers < a_size) |
                                                     ((a_lo - b_lo) % workers < b_size))
            if overlap.any():
                i = int(np.flatnonzero(overlap)[0])
                both = _interval_bits(a_lo[i], a_size[i], workers) & _interval_bits(b_lo[i], b_size[i], workers)
                return "twice", int(reads["ops"][g[i]]), int(reads["units"][g[i]]), both
            b_first = (b_lo + b_size) % workers == a_lo  # b then a
            joined = (a_size == 0) | (b_size == 0) | ((a_lo + a_size) % workers == b_lo) | b_first
            if not joined.all():
                return "not an interval"
            lo[own[g]] = np.where((a_size == 0) | (b_first & (b_size > 0)), b_lo, a_lo)
            size[own[g]] = a_size + b_size
        short = np.flatnonzero(size[: workers * self.intervals] != workers)
        if not short.size:
            return None
        r, i = divmod(int(short[0]), self.intervals)
        return "missing", r, int(self.bounds[i]), _interval_bits(lo[short[0]], size[short[0]], workers)

    def _bitsets(self, reads: dict):
        """The values pass on bitsets, in blocks of 64-bit words of workers so the state stays in budget."""
        plan = self.plan
        cells = plan.ranks * self.intervals
        words = max(1, -(-plan.workers // 64))
        per_word = cells * 8
        if per_word > STATE_BUDGET_BYTES:
            raise UserError(f"verify {plan.name}: {plan.ranks} ranks x {self.intervals} chunk intervals need "
                            f"{per_word / 2**20:.0f} MiB of bitsets per 64 workers; the limit is "
                            f"{STATE_BUDGET_BYTES >> 20} MiB")
        block = min(words, STATE_BUDGET_BYTES // per_word)
        src, own, reduce = reads["src"], reads["own"], reads["reduce"]
        workers = plan.workers * self.intervals
        first_short: dict[int, tuple[int, int]] = {}  # word block -> first worker cell short there, its bits
        for w0 in range(0, words, block):
            nw = min(block, words - w0)
            state = np.zeros((plan.ranks, self.intervals, nw), np.uint64)
            w = np.arange(w0 * 64, min((w0 + nw) * 64, plan.workers))
            state[w, :, w // 64 - w0] = np.left_shift(1, w % 64).astype(np.uint64)[:, None]
            state = state.reshape(cells, nw)
            aside = np.zeros((reads["kept"], nw), np.uint64)
            for g, special, all_reduce, no_reduce in reads["rounds"]:
                incoming = np.take(state, src[g], axis=0)
                if special:
                    s = reads["stale"][g]
                    incoming[s] = aside[reads["stale_row"][g[s]]]
                    k = g[reads["save"][g]]
                    aside[reads["save_row"][k]] = np.take(state, own[k], axis=0)
                if no_reduce:
                    state[own[g]] = incoming
                    continue
                local = np.take(state, own[g], axis=0)
                both = local & incoming
                if not all_reduce:
                    both[~reduce[g]] = 0
                if both.any():
                    i = int(np.flatnonzero(both.any(axis=1))[0])
                    return "twice", int(reads["ops"][g[i]]), int(reads["units"][g[i]]), _to_int(both[i], w0)
                state[own[g]] = local | incoming if all_reduce else np.where(reduce[g][:, None], local | incoming,
                                                                             incoming)
            short = np.flatnonzero(np.any(state[:workers] != _full_words(plan.workers, w0, nw), axis=1))
            if short.size:
                first_short[w0] = int(short[0]), _to_int(state[short[0]], w0)
        if not first_short:
            return None
        # The first short cell overall is the first short cell of every block it is short in; elsewhere full.
        cell = min(c for c, _ in first_short.values())
        bits = 0
        for w0 in range(0, words, block):
            c, b = first_short.get(w0, (-1, 0))
            bits |= b if c == cell else _to_int(_full_words(plan.workers, w0, min(block, words - w0)), w0)
        r, i = divmod(cell, self.intervals)
        return "missing", r, int(self.bounds[i]), bits


def _interval_bits(lo: int, size: int, workers: int) -> int:
    return sum(1 << ((int(lo) + k) % workers) for k in range(int(size)))


def _full_words(workers: int, w0: int, nw: int) -> np.ndarray:
    """Words w0 .. w0+nw-1 of the bitset {0, ..., workers-1}."""
    ones = np.clip(workers - 64 * np.arange(w0, w0 + nw), 0, 64)
    return np.array([(1 << int(n)) - 1 for n in ones], np.uint64)


def _to_int(words: np.ndarray, w0: int) -> int:
    return sum(int(w) << (64 * (w0 + k)) for k, w in enumerate(words.tolist()))


def verify(plan: Plan, *, max_ops: int = VERIFY_MAX_OPS) -> None:
    """Raise PlanError unless the plan is a deadlock-free all-reduce over its workers. Returns None.

    A plan of more than ``max_ops`` ops is refused up front (``firesim.limits``)."""
    check_structure(plan)
    check_ops(plan.n_ops, f"verify {plan.name} ({plan.ranks} ranks)", max_ops)
    proof = _Proof(plan, match_messages(plan))
    proof.schedule()
    found = proof.values()
    op, chunk, span, peer, offsets = plan.op, plan.chunk, plan.span, plan.peer, plan.offsets
    if found is not None and found[0] == "twice":
        _, j, unit, bits = found
        c = int(proof.bounds[proof.cell[unit] % proof.intervals])
        raise PlanError(f"plan {plan.name}: rank {proof.rank[j]} adds chunk {c} from rank {peer[j]} "
                        f"counting ranks {_bits(bits)} twice")
    undone = proof.c_round < 0
    if undone.any():
        unissued = proof.i_round < 0
        stuck = [r for r in range(plan.ranks) if unissued[offsets[r]:offsets[r + 1]].any()]
        if stuck:  # the first rank that cannot issue its next op
            r = stuck[0]
            j = int(offsets[r] + np.flatnonzero(unissued[offsets[r]:offsets[r + 1]])[0])
        else:  # all issued: the first op that never completes
            j = int(np.flatnonzero(undone)[0])
            r = int(proof.rank[j])
        # it waits on the earliest issued, unfinished op of its rank on its first chunk that has one
        pending = offsets[r] + np.flatnonzero((undone & ~unissued)[offsets[r]:offsets[r + 1]])
        w = j
        for c in range(chunk[j], chunk[j] + span[j]):
            on_c = pending[(chunk[pending] <= c) & (c < chunk[pending] + span[pending])]
            if on_c.size:
                w = int(on_c[0])
                break
        raise PlanError(f"plan {plan.name}: deadlock: {len(stuck) or 1} rank(s) stuck; rank {r} cannot finish "
                        f"op {j - offsets[r]} ({OP_NAMES[op[j]]} chunk {chunk[j]} peer {peer[j]}), waiting on "
                        f"{OP_NAMES[op[w]]} chunk {chunk[w]} with rank {peer[w]}")
    if found is not None:
        _, r, c, bits = found
        full = (1 << plan.workers) - 1
        raise PlanError(f"plan {plan.name}: rank {r} ends with chunk {c} summed over "
                        f"{_bits(bits)}, missing ranks {_bits(full & ~bits)}")


def verify_reference(plan: Plan) -> None:
    """``verify`` as an event loop over Python sets: the obvious way, kept to test the fast one against."""
    check_structure(plan)
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

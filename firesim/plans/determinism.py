"""Prove that a plan leaves bit-identical sums on every worker, whatever the data.

Floating-point addition is commutative (a + b and b + a round to the same bits) but not associative, so
two workers hold the same bits for a chunk exactly when they computed the same *expression tree* of adds,
up to swapping the two operands of an add. Data parallelism needs that: replicas whose gradients differ in
the last bit drift apart. Plans that reduce each chunk at one place and then copy it (ring, tree, parameter
server, halving-doubling, double binary tree) pass; a plan in which every rank adds its own partial sums in
its own order would not.

The check runs the plan symbolically, chunk by chunk: each (rank, chunk) applies its ops in program order
(the IR's rule), a send carries the chunk's expression at that point, ``reduce`` makes the node
``add(local, incoming)`` (operands ordered, for commutativity) and ``recv`` replaces. Expressions are
interned as integers, so the cost is linear in the number of ops.
"""

from __future__ import annotations

from firesim.plans.ir import Op, Plan
from firesim.plans.verify import PlanError, match_messages, verify


def final_sums(plan: Plan) -> list[list[int]]:
    """For each worker, each chunk's final expression as an interned id (equal ids = same bits)."""
    verify(plan)
    partner = match_messages(plan).tolist()
    op, chunk, span, offsets = plan.op.tolist(), plan.chunk.tolist(), plan.span.tolist(), plan.offsets.tolist()
    nodes: dict[tuple[int, int], int] = {}

    def add(a: int, b: int) -> int:
        if a < 0:
            return b
        key = (a, b) if a <= b else (b, a)
        return nodes.setdefault(key, plan.workers + len(nodes))

    # each (rank, chunk): the ops touching it, in program order
    queues: dict[tuple[int, int], list[int]] = {}
    for r in range(plan.ranks):
        for j in range(offsets[r], offsets[r + 1]):
            if op[j] != Op.COMPUTE and chunk[j] >= 0:
                for c in range(chunk[j], chunk[j] + span[j]):
                    queues.setdefault((r, c), []).append(j)
    state = {(r, c): (r if r < plan.workers else -1) for r in range(plan.ranks) for c in range(plan.chunks)}
    sent: dict[tuple[int, int], int] = {}  # (send op, chunk) -> expression it carries
    position = dict.fromkeys(queues, 0)
    rank_of = plan.op_rank().tolist()
    progress = True
    while progress:
        progress = False
        for key, ops in queues.items():
            i = position[key]
            while i < len(ops):
                j = ops[i]
                c = key[1]
                if op[j] == Op.SEND:
                    sent[(j, c)] = state[key]
                else:
                    incoming = sent.get((partner[j], c))
                    if incoming is None:
                        break
                    state[key] = add(state[key], incoming) if op[j] == Op.REDUCE else incoming
                i += 1
                progress = True
            position[key] = i
    if any(position[k] < len(v) for k, v in queues.items()):  # cannot happen after verify; kept as a guard
        k = next(k for k, v in queues.items() if position[k] < len(v))
        raise PlanError(f"plan {plan.name}: rank {k[0]} chunk {k[1]} never completes (op of rank "
                        f"{rank_of[queues[k][position[k]]]})")
    return [[state[(r, c)] for c in range(plan.chunks)] for r in range(plan.workers)]


def check_identical_sums(plan: Plan) -> None:
    """Raise PlanError unless every worker ends every chunk with the same expression (so the same bits)."""
    sums = final_sums(plan)
    for c in range(plan.chunks):
        differ = [r for r in range(1, plan.workers) if sums[r][c] != sums[0][c]]
        if differ:
            raise PlanError(f"plan {plan.name}: chunk {c} is summed in a different order on rank {differ[0]} "
                            f"than on rank 0, so their bits may differ")

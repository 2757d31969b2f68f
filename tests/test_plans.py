"""The plan IR: every builder verifies for p in 1..33; the verifier rejects broken plans; JSON round-trips."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firesim.errors import UserError
from firesim.plans import (
    Op,
    Plan,
    PlanBuilder,
    PlanError,
    binomial_tree,
    build,
    halving_doubling,
    match_messages,
    parameter_server,
    ring,
    verify,
)
from firesim.plans.verify import verify_reference

RANKS = range(1, 34)
CASES = [
    ("ring", {}),
    ("tree", {}),
    ("tree", {"chunks": 3}),
    ("tree", {"chunks": 4, "root": 0}),
    ("ps", {}),
    ("ps", {"servers": 2}),
    ("ps", {"servers": 3, "chunks": 7}),
    ("ps", {"servers": 1, "colocated": False}),
    ("ps", {"servers": 3, "colocated": False}),
    ("halving_doubling", {}),
    ("double_binary_tree", {}),
    ("double_binary_tree", {"chunks_per_tree": 3}),
]


@pytest.mark.parametrize(("algo", "options"), CASES, ids=[f"{a}-{o}" for a, o in CASES])
def test_every_builder_verifies_for_p_1_to_33(algo, options):
    for p in RANKS:
        if options.get("colocated", True) and options.get("servers", 1) > p:
            continue
        plan = build(algo, p, 4096, **options)
        verify(plan)
        assert plan.workers == p


@pytest.mark.parametrize("inter", ["ring", "tree", "ps", "halving_doubling", "double_binary_tree"])
@pytest.mark.parametrize("intra", ["tree", "direct"])
def test_hierarchical_verifies_for_p_1_to_33(inter, intra):
    for p in RANKS:
        for per_node in (1, 3, 4, 8):
            verify(build("hierarchical", p, 4096, ranks_per_node=per_node, inter=inter, intra=intra))


def test_tree_root_can_be_any_rank():
    for p in (1, 2, 5, 8, 13):
        for root in range(p):
            verify(binomial_tree(p, 64, root=root))


def test_ring_program_is_the_textbook_one():
    plan = ring(3, 12)
    assert plan.program(0) == [
        ("send", 0, 1, 1, 0.0), ("reduce", 2, 1, 2, 0.0), ("send", 2, 1, 1, 0.0), ("reduce", 1, 1, 2, 0.0),
        ("send", 1, 1, 1, 0.0), ("recv", 0, 1, 2, 0.0), ("send", 0, 1, 1, 0.0), ("recv", 2, 1, 2, 0.0),
    ]
    assert plan.bytes_sent().tolist() == [16, 16, 16]


def test_message_counts_match_the_textbook():
    p = 16
    assert ring(p, p).messages_sent().tolist() == [2 * (p - 1)] * p
    assert halving_doubling(p, p).messages_sent().tolist() == [2 * 4] * p  # 2 lg p
    assert binomial_tree(p, p).messages_sent()[0] == 4  # the root only broadcasts, lg p times
    ps = parameter_server(p, p)
    assert ps.messages_sent()[0] == p - 1 and ps.messages_sent()[1:].tolist() == [1] * (p - 1)


def test_dedicated_servers_are_extra_ranks_without_data():
    plan = parameter_server(4, 4096, servers=2, colocated=False)
    assert (plan.ranks, plan.workers) == (6, 4)
    assert plan.bytes_sent().tolist() == [4096] * 4 + [4 * 2048] * 2


def test_chunk_sizes_split_on_elements_and_sum_to_the_buffer():
    plan = ring(3, 4 * 10 + 2)  # 10 float32 elements and a 2-byte tail
    assert plan.chunk_nbytes(4).tolist() == [12, 12, 18]
    assert plan.chunk_nbytes(4).sum() == plan.nbytes


def test_json_round_trip(tmp_path):
    plan = build("hierarchical", 10, 1 << 20, ranks_per_node=4, inter="halving_doubling")
    plan.save(tmp_path / "p.json")
    back = Plan.load(tmp_path / "p.json")
    for col in ("offsets", "op", "chunk", "span", "peer", "seconds"):
        assert np.array_equal(getattr(plan, col), getattr(back, col))
    assert (back.name, back.ranks, back.workers, back.nbytes, back.chunks) == (
        plan.name, plan.ranks, plan.workers, plan.nbytes, plan.chunks)
    verify(back)


def test_hand_written_plain_json_lists_load():
    plan = Plan.from_programs("pair", 8, 1, [[("send", 0, 1), ("recv", 0, 1)], [("reduce", 0, 0), ("send", 0, 0)]])
    data = plan.to_dict()
    for col in ("offsets", "op", "chunk", "span", "peer", "seconds"):
        data[col] = getattr(plan, col).tolist()
    verify(Plan.from_dict(data))


# ---- the verifier must reject what is wrong ---------------------------------------------------------------
def _pair(programs, chunks=1):
    return Plan.from_programs("bad", 8, chunks, programs)


def test_verify_rejects_a_missing_contribution():
    with pytest.raises(PlanError, match="missing ranks"):
        verify(_pair([[("send", 0, 1)], [("reduce", 0, 0)]]))


def test_verify_rejects_a_contribution_counted_twice():
    plan = _pair([[("send", 0, 1), ("send", 0, 1), ("recv", 0, 1)],
                  [("reduce", 0, 0), ("reduce", 0, 0), ("send", 0, 0)]])
    with pytest.raises(PlanError, match="twice"):
        verify(plan)


def test_verify_rejects_a_deadlock():
    plan = _pair([[("reduce", 0, 1), ("send", 0, 1)], [("reduce", 0, 0), ("send", 0, 0)]])
    with pytest.raises(PlanError, match="deadlock"):
        verify(plan)


def test_verify_rejects_unmatched_and_reordered_messages():
    with pytest.raises(PlanError, match="sends 1 messages to rank 1, which posts 0"):
        verify(_pair([[("send", 0, 1)], []]))
    reordered = _pair([[("send", 0, 1), ("send", 1, 1), ("recv", 0, 1), ("recv", 1, 1)],
                       [("reduce", 1, 0), ("reduce", 0, 0), ("send", 0, 0), ("send", 1, 0)]], chunks=2)
    with pytest.raises(PlanError, match="out of order"):
        verify(reordered)


def test_verify_rejects_every_single_dropped_or_flipped_op():
    """Mutation check: removing any message pair or turning any reduce into a copy breaks a ring."""
    plan = ring(4, 64)
    reduces = np.flatnonzero(plan.op == Op.REDUCE)
    for i in reduces:
        op = plan.op.copy()
        op[i] = Op.RECV
        broken = Plan(**{**plan.__dict__, "op": op})
        with pytest.raises(PlanError):
            verify(broken)


def test_structural_errors_are_one_line_user_errors():
    with pytest.raises(UserError, match="peer"):
        Plan.from_programs("x", 8, 1, [[("send", 0, 0)]])
    with pytest.raises(UserError, match="chunks outside"):
        Plan.from_programs("x", 8, 1, [[("send", 1, 1)], [("recv", 1, 0)]])
    with pytest.raises(UserError, match="ranks: must be an integer >= 1"):
        ring(0, 8)
    with pytest.raises(UserError, match="unknown algorithm"):
        build("butterfly", 4, 8)
    with pytest.raises(UserError, match="servers"):
        parameter_server(2, 8, servers=3)


# ---- properties ----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(p=st.integers(1, 40), nbytes=st.integers(0, 10**7),
       algo=st.sampled_from(["ring", "tree", "ps", "halving_doubling", "double_binary_tree"]))
def test_every_worker_sends_and_receives_the_same_bytes_overall(p, nbytes, algo):
    plan = build(algo, p, nbytes)
    verify(plan)
    recv = np.isin(plan.op, (Op.RECV, Op.REDUCE))
    received = np.bincount(plan.op_rank()[recv], weights=plan.op_nbytes()[recv], minlength=plan.ranks)
    assert plan.bytes_sent().sum() == received.sum()  # every byte sent is received once
    assert plan.with_nbytes(2 * nbytes).nbytes == 2 * nbytes


@settings(max_examples=40, deadline=None)
@given(groups=st.lists(st.integers(1, 5), min_size=1, max_size=6),
       inter=st.sampled_from(["ring", "tree", "halving_doubling", "ps"]), seed=st.integers(0, 2**16))
def test_hierarchical_over_any_partition(groups, inter, seed):
    ranks = np.random.default_rng(seed).permutation(sum(groups)).tolist()
    partition, start = [], 0
    for size in groups:
        partition.append(ranks[start:start + size])
        start += size
    verify(build("hierarchical", len(ranks), 1000, groups=partition, inter=inter))


@settings(max_examples=30, deadline=None)
@given(p=st.integers(2, 12), steps=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_global_view_plans_never_deadlock(p, steps, seed):
    """A plan written with PlanBuilder is ordered by (step, declaration) at both ends, so it cannot deadlock;
    ring reduce-scatter + gather to everybody written at random steps still verifies."""
    rng = np.random.default_rng(seed)
    b = PlanBuilder("random", p, 4 * p, chunks=1)
    root = int(rng.integers(p))
    others = [r for r in range(p) if r != root]
    for r in rng.permutation(others):
        b.transfer(int(r), root, 0, reduce=True, step=int(rng.integers(steps)))
    for r in others:
        b.transfer(root, r, 0, reduce=False, step=steps + int(rng.integers(steps)))
    verify(b.build())


# ---- the vectorised verifier against the event loop ------------------------------------------------------
_SPECS = ["ring", "tree", "tree:chunks=3", "ps", "ps:servers=2", "ps:servers=1,colocated=false",
          "halving_doubling", "double_binary_tree", "double_binary_tree:chunks_per_tree=2",
          "hierarchical:ranks_per_node=2", "hierarchical:ranks_per_node=3,inter=halving_doubling"]


def _mutant(plan: Plan, kind: int, i: int, k: int) -> Plan:
    """One small change to a plan: flip a reduce/recv, swap two neighbours, move an op, rename a message's
    chunk at both ends, or put a compute on a chunk."""
    cols = {c: getattr(plan, c).copy() for c in ("op", "chunk", "span", "peer", "seconds")}
    r = int(plan.op_rank()[i])
    lo, hi = int(plan.offsets[r]), int(plan.offsets[r + 1])
    if kind == 0 and cols["op"][i] in (Op.RECV, Op.REDUCE):
        cols["op"][i] = Op.RECV if cols["op"][i] == Op.REDUCE else Op.REDUCE
    elif kind == 1 and i + 1 < hi:
        for a in cols.values():
            a[[i, i + 1]] = a[[i + 1, i]]
    elif kind == 2:
        to = lo + k % (hi - lo)
        for name, a in cols.items():
            cols[name] = np.insert(np.delete(a, i), to, a[i]).astype(a.dtype)
    elif kind == 3 and cols["op"][i] != Op.COMPUTE and cols["span"][i] == 1:
        j = int(match_messages(plan)[i])
        cols["chunk"][[i, j]] = k % plan.chunks
    elif kind == 4:
        for name, value in (("op", Op.COMPUTE), ("chunk", k % plan.chunks), ("span", 1), ("peer", -1),
                            ("seconds", 0.0)):
            cols[name] = np.insert(cols[name], i, value).astype(cols[name].dtype)
        offsets = plan.offsets.copy()
        offsets[r + 1:] += 1
        return Plan(**{**plan.__dict__, **cols, "offsets": offsets})
    return Plan(**{**plan.__dict__, **cols})


def _verdict(check, plan: Plan) -> str:
    try:
        check(plan)
    except PlanError as err:
        return str(err)
    return "ok"


@settings(max_examples=400, deadline=None)
@given(spec=st.sampled_from(_SPECS), p=st.integers(1, 9), kind=st.integers(0, 4), i=st.integers(0, 10**6),
       k=st.integers(0, 10**6))
def test_verify_agrees_with_the_event_loop_on_broken_plans(spec, p, kind, i, k):
    """Same verdict on every mutant, the same kind of error, and the same message where the error found does not
    depend on the order of the search (a missing contribution)."""
    try:
        plan = build(spec, p, 4096)
    except UserError:
        return
    if plan.n_ops == 0:
        return
    plan = _mutant(plan, kind, i % plan.n_ops, k)
    fast, slow = _verdict(verify, plan), _verdict(verify_reference, plan)
    if "missing ranks" in slow:
        assert fast == slow
    kind = [(text == "ok", "deadlock" in text, "twice" in text, "missing" in text) for text in (fast, slow)]
    assert kind[0] == kind[1], (fast, slow)


def test_verify_proves_large_plans_of_every_builder():
    """The vectorised proof on plans the event loop needs seconds for; a flipped reduce is still caught."""
    for spec in ("ring", "halving_doubling", "double_binary_tree", "ps:servers=4", "hierarchical:ranks_per_node=8"):
        plan = build(spec, 96, 1 << 20)
        verify(plan)
        op = plan.op.copy()
        reduces = np.flatnonzero(op == Op.REDUCE)
        op[reduces[len(reduces) // 2]] = Op.RECV
        with pytest.raises(PlanError, match="missing ranks"):
            verify(Plan(**{**plan.__dict__, "op": op}))

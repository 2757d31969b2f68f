"""Closed forms: tied to the plans they describe (bytes per rank) and to hand-computed values."""

import math

import numpy as np
import pytest

from firesim import analytic
from firesim.errors import UserError
from firesim.plans import allreduce_time, build, resolve

A, B, G = 2e-6, 1e-9, 1e-10  # alpha, beta, gamma
N = 4 * math.lcm(*range(1, 34))  # whole float32 elements for every chunk count used here
CASES = [("ring", {}), ("tree", {}), ("ps", {}), ("ps", {"servers": 3}), ("ps", {"servers": 2, "colocated": False}),
         ("halving_doubling", {}), ("double_binary_tree", {})]


@pytest.mark.parametrize(("algo", "options"), CASES, ids=[f"{a}-{o}" for a, o in CASES])
def test_bytes_each_rank_sends_equals_the_plan(algo, options):
    for p in range(1, 34):
        if options.get("colocated", True) and options.get("servers", 1) > p:
            continue
        plan = build(algo, p, N, **options)
        assert np.array_equal(resolve(algo, **options).bytes_sent(p, N), plan.bytes_sent()), p


def test_ring_by_hand():
    p, n = 4, 4e6
    expect = 2 * 3 * (A + n / 4 * B) + 3 * n / 4 * G
    assert allreduce_time("ring", p, n, A, B, G) == pytest.approx(expect, rel=1e-12)


def test_tree_by_hand_power_of_two_and_not():
    n = 1e6
    hop, add = A + n * B, n * G
    assert allreduce_time("tree", 8, n, A, B, G) == pytest.approx(3 * (hop + add) + 3 * hop)
    # p = 3: ranks 1 and 2 both send to rank 0 at once and share its link: both arrive at alpha + 2 n beta
    assert allreduce_time("tree", 3, n, A, B, G) == pytest.approx(A + 2 * n * B + 2 * add + 2 * hop)
    assert allreduce_time("tree", 1, n, A, B, G) == 0


def test_fair_share_by_hand():
    # one link, flows needing 4 s alone, starting at 0, 1 and 10: the first two share from 1 to 7
    done = analytic.fair_share_finish(np.array([[0.0, 1.0, 10.0]]), np.array([4.0]))
    assert done.tolist() == [[7.0, 8.0, 14.0]]


def test_binomial_reduce_matches_a_brute_force_event_simulation():
    """Every sender of the tree simulated flow by flow (no recursion shared with the closed form)."""
    def brute(p, alpha, work, add):
        ready = {}
        for v in sorted(range(p), key=lambda v: (v & -v) if v else p * 2):
            kids = [v + (1 << j) for j in range(p.bit_length()) if (v == 0 or (1 << j) < (v & -v)) and v + (1 << j) < p]
            if not kids:
                ready[v] = 0.0
                continue
            starts = np.array([[ready[c] + alpha for c in kids]])
            arrived = analytic.fair_share_finish(starts, np.array([work]))[0]
            t = 0.0
            for a in arrived:
                t = max(t, a) + add
            ready[v] = t
        return ready[0]

    for p in range(1, 70):
        assert analytic.binomial_reduce_time(p, 0.3, 1.0, 0.2) == pytest.approx(brute(p, 0.3, 1.0, 0.2)), p


def test_halving_doubling_is_rabenseifner():
    n = 1e6
    assert allreduce_time("hd", 8, n, A, B, G) == pytest.approx(6 * A + 2 * 7 / 8 * n * B + 7 / 8 * n * G)
    assert allreduce_time("hd", 6, n, A, B, G) == pytest.approx(
        4 * A + 2 * 3 / 4 * n * B + 3 / 4 * n * G + 2 * A + 2 * n * B + n * G)


def test_ps_incast_and_replies():
    n = 1e6
    assert allreduce_time("ps", 5, n, A, B, G) == pytest.approx(A + 4 * n * B + 4 * n * G + 4 * (A + n * B))
    assert allreduce_time("ps:servers=2,colocated=false", 4, n, A, B, G) == pytest.approx(
        A + 4 * n / 2 * B + 3 * n / 2 * G + 4 * (A + n / 2 * B))


def test_paper_claim_tree_beats_ps_and_ring_beats_both_at_scale():
    p = np.array([32, 128])
    n = 7e6 * 4  # GoogLeNet gradients
    tree = allreduce_time("tree", p, n, A, B, G)
    ps = allreduce_time("ps", p, n, A, B, G)
    ring = allreduce_time("ring", p, n, A, B, G)
    assert np.all(tree < ps) and np.all(ring < tree)
    assert ps[1] / tree[1] > 10  # O(p) vs O(log p)


def test_vectorised_sweep_equals_scalar_calls():
    rng = np.random.default_rng(0)
    p = rng.integers(1, 200, 50)
    n = rng.integers(1, 2**30, 50).astype(float)
    for algo in ("ring", "tree", "ps", "halving_doubling", "double_binary_tree"):
        vec = allreduce_time(algo, p, n, A, B, G)
        assert np.allclose(vec, [allreduce_time(algo, int(a), b, A, B, G) for a, b in zip(p, n)])


def test_hierarchical_with_one_rank_per_node_is_the_inter_algorithm():
    assert allreduce_time("hierarchical", 16, 1e6, A, B, G, ranks_per_node=1, inter="ring") == pytest.approx(
        allreduce_time("ring", 16, 1e6, A, B, G))


def test_bad_input():
    with pytest.raises(UserError, match="workers"):
        allreduce_time("ring", 0, 1, A, B, G)
    with pytest.raises(UserError, match="nbytes"):
        allreduce_time("ring", 2, -1, A, B, G)
    with pytest.raises(UserError, match="unknown algorithm"):
        allreduce_time("gossip", 2, 1, A, B, G)


def test_both_double_binary_trees_are_ceil_log2_deep():
    from firesim.plans.builders import _tree_levels, double_binary_tree_parents

    for p in range(2, 300):
        depth = max(int(_tree_levels(parent)[1].max()) for parent in double_binary_tree_parents(p))
        assert depth == math.ceil(math.log2(p)), p


def test_binomial_reduce_is_exact_for_large_p_and_any_cost_ratio():
    """The windowed solver against a whole fair-share solve at every node, for p up to 3000."""
    rng = np.random.default_rng(1)
    for p in [*rng.integers(70, 3000, 12), 1023, 1025, 2049]:
        for alpha, work, add in [(0.3, 1.0, 0.2), (5.0, 1.0, 0.0), (0.01, 1.0, 3.0), (1e-3, 1.0, 1e-3)]:
            ready = {}
            p = int(p)
            for v in sorted(range(p), key=lambda v: (v & -v) if v else p * 2):
                low = (v & -v) if v else 1 << p.bit_length()
                kids = [v + (1 << j) for j in range(p.bit_length()) if (1 << j) < low and v + (1 << j) < p]
                t = 0.0
                if kids:
                    arrived = analytic.fair_share_finish(np.array([[ready[c] + alpha for c in kids]]), np.array([work]))[0]
                    for a in arrived:
                        t = max(t, a) + add
                ready[v] = t
            assert analytic.binomial_reduce_time(p, alpha, work, add) == pytest.approx(ready[0], rel=1e-9), (p, alpha)


def test_allreduce_bandwidths_follow_nccl_tests():
    algbw, busbw = analytic.allreduce_bandwidths_GBps(2e9, 1.0, 8)
    assert (algbw, busbw) == (2.0, 2.0 * 2 * 7 / 8)
    assert analytic.allreduce_bandwidths_GBps(1e9, 0.5, 1) == (2.0, 0.0)  # one rank moves nothing
    assert analytic.allreduce_bandwidths_GBps(1e9, 0.0, 1) == (float("inf"), 0.0)  # not NaN

"""The closed-form iteration and time-to-train model."""

import pytest

from firesim.cluster import allreduce_seconds
from firesim.compute import NO_OVERHEADS, Overheads, precision, step_time
from firesim.errors import UserError
from firesim.hardware import comm_params, resolve_cluster
from firesim.plans import allreduce_time
from firesim.training import gradient_buckets, iteration, predict
from firesim.workload import load_workload

GOOGLENET = load_workload("googlenet")
TITAN = resolve_cluster("titan")


def test_buckets_follow_ddp_and_cover_every_gradient():
    buckets = gradient_buckets(GOOGLENET, bucket_nbytes=4 << 20, first_bucket_nbytes=1 << 20)
    assert sum(b.nbytes for b in buckets) == GOOGLENET.params * 4
    assert buckets[0].nbytes >= 1 << 20 and all(b.nbytes >= 4 << 20 for b in buckets[1:-1])
    last_with_params = next(layer.name for layer in reversed(GOOGLENET.layers) if layer.params)
    assert buckets[0].layers[0] == last_with_params  # backward starts at the last layer (after the loss)
    fractions = [b.ready_fraction for b in buckets]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_buckets_are_ready_when_their_layers_backward_time_is_done():
    step = step_time(GOOGLENET, TITAN, 16, precision("fp32"), "momentum")
    buckets = gradient_buckets(GOOGLENET, 4 << 20, 1 << 20, 4, step.backward_layers_s)
    by_name = {layer.name: i for i, layer in enumerate(GOOGLENET.layers)}
    for bucket in buckets:
        first = min(by_name[name] for name in bucket.layers)  # the earliest layer runs its backward last
        assert bucket.ready_fraction == pytest.approx(step.backward_layers_s[first:].sum() / step.backward_s)
    assert sum(b.nbytes for b in gradient_buckets(GOOGLENET, grad_nbytes_per_param=2)) == GOOGLENET.params * 2


def test_one_gpu_has_no_communication():
    it = iteration(GOOGLENET, TITAN, 1, 32, "ring")
    assert it.comm_s == 0 and it.iteration_s == it.compute_s
    step = step_time(GOOGLENET, TITAN, 32, precision("fp32"), "momentum")
    assert it.compute_s == pytest.approx(step.forward_s + step.backward_s + step.optimizer_s)


def test_without_overlap_the_whole_gradient_is_exposed():
    it = iteration(GOOGLENET, TITAN, 64, 16, "tree", overlap=False, overheads=NO_OVERHEADS)
    c = comm_params(TITAN)
    expect = allreduce_time("tree", 64, GOOGLENET.params * 4, c.alpha_s, c.beta_s_per_byte, c.gamma_s_per_byte)
    assert it.exposed_comm_s == pytest.approx(expect) and it.iteration_s == pytest.approx(it.compute_s + expect)


def test_gradient_dtype_sets_the_bytes_exchanged():
    fp32 = iteration(GOOGLENET, resolve_cluster("dgx-a100"), 64, 16, "ring", dtype="bf16", overlap=False)
    bf16 = iteration(GOOGLENET, resolve_cluster("dgx-a100"), 64, 16, "ring", dtype="bf16", grad_dtype="bf16",
                     overlap=False)
    dgx = comm_params(resolve_cluster("dgx-a100"))
    assert fp32.comm_s == pytest.approx(allreduce_time("ring", 64, GOOGLENET.params * 4, dgx.alpha_s,
                                                       dgx.beta_s_per_byte, dgx.gamma_s_per_byte))
    assert bf16.comm_s == pytest.approx(allreduce_time("ring", 64, GOOGLENET.params * 2, dgx.alpha_s,
                                                       dgx.beta_s_per_byte, dgx.gamma_s_per_byte))
    assert bf16.compute_s < fp32.compute_s  # backward writes, and the optimizer reads, half the gradient bytes


def test_accumulation_exchanges_once_per_step():
    dgx, no_ceiling = resolve_cluster("dgx-a100"), Overheads(input_rate=None)
    one = predict(GOOGLENET, dgx, 8, "ring", batch_per_gpu=32, accumulation=1, dtype="fp16", overheads=no_ceiling)
    four = predict(GOOGLENET, dgx, 8, "ring", batch_per_gpu=32, accumulation=4, dtype="fp16", overheads=no_ceiling)
    assert four.batch == 4 * one.batch and four.batch_per_gpu == 32
    assert four.comm_s == pytest.approx(one.comm_s)  # the same gradient, exchanged once
    assert four.samples_per_s > one.samples_per_s


def test_overlap_hides_communication_behind_backward():
    with_overlap = iteration(GOOGLENET, TITAN, 64, 16, "tree")
    without = iteration(GOOGLENET, TITAN, 64, 16, "tree", overlap=False)
    assert with_overlap.exposed_comm_s < without.exposed_comm_s
    assert with_overlap.exposed_comm_s <= with_overlap.comm_s


def test_time_to_train_speedup_and_cost():
    dgx = resolve_cluster("dgx-a100")
    row = predict(GOOGLENET, dgx, 16, "ring", batch=512, epochs=10)
    assert row.iterations == pytest.approx(10 * GOOGLENET.train_samples / 512)
    assert row.time_to_train_s == pytest.approx(row.iterations * row.iteration_s)
    assert row.efficiency == pytest.approx(row.speedup / 16)
    assert row.cost == pytest.approx(16 * 5.12 * row.time_to_train_s / 3600)
    assert predict(GOOGLENET, TITAN, 4, "ring", batch=64).cost is None


def test_firecaffe_shape_ps_collapses_and_tree_scales():
    """The paper's claim: at 128 GPUs a parameter server's O(p) traffic dominates, a tree's does not."""
    ps = predict(GOOGLENET, TITAN, 128, "ps", batch=1024, epochs=72)
    tree = predict(GOOGLENET, TITAN, 128, "tree", batch=1024, epochs=72)
    assert tree.speedup > 2 * ps.speedup
    assert 20 < tree.speedup < 128


def test_intra_node_collectives_use_the_node_link():
    dgx = resolve_cluster("dgx-a100")
    intra, inter = comm_params(dgx, "intra"), comm_params(dgx, "inter")
    n = 1e8
    assert allreduce_seconds(dgx, 8, n, "ring") == pytest.approx(
        allreduce_time("ring", 8, n, intra.alpha_s, intra.beta_s_per_byte, intra.gamma_s_per_byte))
    assert allreduce_seconds(dgx, 16, n, "ring") == pytest.approx(
        allreduce_time("ring", 16, n, inter.alpha_s, inter.beta_s_per_byte, inter.gamma_s_per_byte))
    assert allreduce_seconds(dgx, 64, n, "hierarchical") < allreduce_seconds(dgx, 64, n, "tree")


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="at least 1"):
        predict(GOOGLENET, TITAN, 2048, "ring", batch=1024)
    with pytest.raises(UserError, match="exactly one"):
        predict(GOOGLENET, TITAN, 2, "ring", batch=64, batch_per_gpu=32)
    with pytest.raises(UserError, match="epochs"):
        predict(GOOGLENET, TITAN, 2, "ring", batch=64, epochs=0)

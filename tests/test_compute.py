"""The per-layer roofline, precision, optimizer time, overheads, the overlap schedule and the calibration
against published single-GPU throughput. Exact arithmetic on synthetic profiles and GPUs."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from firesim.compute import (
    NO_OVERHEADS,
    Overheads,
    Rates,
    achieved_rates,
    gpu_spread_factor,
    layer_seconds,
    optimizer_seconds,
    overlap_schedule,
    parse_overheads,
    precision,
    rank_spread_factors,
    resolve_optimizer,
    step_time,
)
from firesim.errors import UserError
from firesim.hardware import GPU, Cluster, load_catalog, resolve_cluster
from firesim.training import iteration, simulate_iteration
from firesim.workload import LayerProfile, ModelProfile

LINK = load_catalog().links["ib-fdr"]


def toy_gpu(**changes) -> GPU:
    fields = dict(name="toy", peak_flops={"fp32": 1e12, "bf16": 4e12}, memory_bandwidth_Bps=1e11, memory_GiB=16,
                  conv_efficiency={"fp32": 0.5, "bf16": 0.5}, matmul_efficiency={"fp32": 0.25, "bf16": 0.5},
                  memory_efficiency=0.5, layer_overhead_s=1e-5)
    return GPU(**{**fields, **changes})


def toy_cluster(gpus_per_node: int = 1, **changes) -> Cluster:
    return Cluster(name="toy", gpu=toy_gpu(), gpus_per_node=gpus_per_node, inter_node_link=LINK,
                   intra_node_link=LINK if gpus_per_node > 1 else None, topology="star", **changes)


def toy_profile(sample: str = "image") -> ModelProfile:
    """A conv (compute bound), a ReLU (memory bound), a flatten (a view) and a linear layer."""
    layers = (
        LayerProfile(name="conv", type="Conv2d", params=100, fwd_flops=10**9, input_elements=1000,
                     output_elements=2000, saved_elements=1000),
        LayerProfile(name="relu", type="ReLU", params=0, fwd_flops=2000, input_elements=2000,
                     output_elements=2000, saved_elements=2000),
        LayerProfile(name="flat", type="Flatten", params=0, fwd_flops=0),
        LayerProfile(name="fc", type="Linear", params=1000, fwd_flops=2 * 10**8, bwd_flops=3 * 10**8,
                     input_elements=2000, output_elements=100, saved_elements=0),
    )
    return ModelProfile(name="toy", input_shape=(3, 8, 8), sample=sample, train_samples=1000,
                        params=1100, fwd_flops=10**9 + 2000 + 2 * 10**8, layers=layers)


# ------------------------------------------------------------------------------------------------ roofline
def test_roofline_exact_per_layer_fp32():
    rates = achieved_rates(toy_cluster(), "fp32")
    assert rates == Rates(conv_flops=5e11, matmul_flops=2.5e11, memory_Bps=5e10, layer_overhead_s=1e-5,
                          vector_flops=1e12)
    B, ov = 4, 1e-5
    fwd, bwd = layer_seconds(toy_profile(), rates, B, precision("fp32"))
    # conv: compute bound at the conv rate; one kernel forward, two backward (input and weight gradients)
    assert fwd[0] == pytest.approx(1e9 * B / 5e11 + ov)
    assert bwd[0] == pytest.approx(2e9 * B / 5e11 + 2 * ov)
    # relu: memory bound; forward reads 2000 and writes 2000, backward reads 2 x in + out
    assert fwd[1] == pytest.approx(4000 * 4 * B / 5e10 + ov)
    assert bwd[1] == pytest.approx(6000 * 4 * B / 5e10 + ov)
    # a view launches nothing
    assert fwd[2] == 0 and bwd[2] == 0
    # linear: the matmul rate, its own backward FLOPs
    assert fwd[3] == pytest.approx(2e8 * B / 2.5e11 + ov)
    assert bwd[3] == pytest.approx(3e8 * B / 2.5e11 + 2 * ov)


def test_roofline_memory_bound_layer_weights_and_mixed_precision():
    layer = LayerProfile(name="big", type="Linear", params=10**6, fwd_flops=2 * 10**6, input_elements=1000,
                         output_elements=1000)
    profile = ModelProfile(name="w", input_shape=(1000,), train_samples=1, params=10**6, fwd_flops=2 * 10**6,
                           layers=(layer,))
    rates = Rates(1e15, 1e15, 1e11, 0.0)
    fwd, bwd = layer_seconds(profile, rates, 1, precision("fp32"))
    assert fwd[0] == pytest.approx((2000 * 4 + 1e6 * 4) / 1e11)  # activations + weights read
    assert bwd[0] == pytest.approx((3000 * 4 + 2e6 * 4) / 1e11)  # + weight gradient written
    fwd16, bwd16 = layer_seconds(profile, rates, 1, precision("bf16"))
    assert fwd16[0] == pytest.approx((2000 * 2 + 1e6 * 2) / 1e11)  # bf16 activations and weight copy
    assert bwd16[0] == pytest.approx((3000 * 2 + 2e6 * 4) / 1e11)  # fp32 gradients (autocast keeps them)
    _, bwd_bf16_grads = layer_seconds(profile, rates, 1, precision("bf16", "bf16"))
    assert bwd_bf16_grads[0] == pytest.approx((3000 * 2 + 2e6 * 2) / 1e11)


def test_dtype_sets_the_rate_and_unknown_dtypes_fail():
    cluster = toy_cluster()
    assert achieved_rates(cluster, "bf16").matmul_flops == 2e12
    assert "fp16" in str(pytest.raises(UserError, achieved_rates, cluster, "fp16").value)
    assert "dtype" in str(pytest.raises(UserError, precision, "fp12").value)
    assert "grad-dtype" in str(pytest.raises(UserError, precision, "bf16", "fp8").value)
    assert precision("bf16").grad_dtype == "fp32" and precision("fp64").grad_dtype == "fp64"
    assert precision("bf16").weight_nbytes == 6 and precision("fp32").weight_nbytes == 4


def test_optimizer_is_a_memory_bound_pass():
    rates = Rates(1e12, 1e12, 1e11, 0.0)
    # momentum, fp32: read grad 4 + read/write weight 8 + read/write momentum 8
    assert optimizer_seconds(10**6, "momentum", precision("fp32"), rates) == pytest.approx(20e6 / 1e11)
    # adamw, bf16 mixed precision: grad 4 + master 8 + two states 16 + write the bf16 copy 2
    assert optimizer_seconds(10**6, "adamw", precision("bf16"), rates) == pytest.approx(30e6 / 1e11)
    assert optimizer_seconds(10**6, "sgd", precision("fp32", "fp32"), rates) == pytest.approx(12e6 / 1e11)
    assert resolve_optimizer("auto", toy_profile("image")) == "momentum"  # 1e9 of 1.2e9 FLOPs in the conv
    from firesim.workload import load_workload

    assert resolve_optimizer(None, load_workload("vit_b16")) == "adamw"  # a conv patch embedding, then attention
    with pytest.raises(UserError, match="optimizer"):
        resolve_optimizer("rmsprop", toy_profile())


def test_one_gpu_iteration_is_the_roofline_step():
    cluster, profile = toy_cluster(), toy_profile()
    step = step_time(profile, cluster, 4, precision("fp32"), "momentum")
    it = iteration(profile, cluster, 1, 4, "ring")
    assert it.compute_s == pytest.approx(step.forward_s + step.backward_s + step.optimizer_s)
    assert it.iteration_s == it.compute_s and it.comm_s == 0 and it.sync_s == 0 and it.interference_s == 0
    off = iteration(profile, cluster, 1, 4, "ring", overheads=NO_OVERHEADS)
    assert off.optimizer_s == 0 and off.compute_s == pytest.approx(step.forward_s + step.backward_s)
    acc = iteration(profile, cluster, 1, 4, "ring", accumulation=3)
    assert acc.compute_s == pytest.approx(3 * (step.forward_s + step.backward_s) + step.optimizer_s)
    assert acc.samples_per_s == pytest.approx(12 / acc.iteration_s)


# ----------------------------------------------------------------------------------------------- overheads
def test_overlap_schedule_hand_example():
    """Buckets ready after 1 s and 3 s of nominal backward, 2 s and 1 s on the wire, 4 s of backward, compute
    1.5x slower while a bucket is on the wire."""
    ready, done, end = overlap_schedule(np.array([1.0, 3.0]), np.array([2.0, 1.0]), 4.0, 0.5)
    # 0-1 alone; 1-3 slowed (1.333 s of work); 3-3.667 alone -> bucket 1 ready; 3.667-4.667 slowed
    # (0.667 s of work); 4.667-5 alone
    assert ready == pytest.approx([1.0, 3 + 2 / 3])
    assert done == pytest.approx([3.0, 4 + 2 / 3])
    assert end == pytest.approx(5.0)
    ready0, done0, end0 = overlap_schedule(np.array([1.0, 3.0]), np.array([2.0, 1.0]), 4.0, 0.0)
    assert list(ready0) == [1.0, 3.0] and list(done0) == [3.0, 4.0] and end0 == 4.0


def test_gpu_spread_waits_for_the_slowest():
    z8 = NormalDist().inv_cdf((8 - 0.375) / (8 + 0.25))
    assert gpu_spread_factor(8, 0.01) == pytest.approx(1 + 0.01 * z8)
    assert gpu_spread_factor(1, 0.01) == 1.0
    factors = rank_spread_factors(8, 0.01, seed=3)
    assert factors.max() == pytest.approx(gpu_spread_factor(8, 0.01)) and factors.mean() == pytest.approx(1.0)
    assert np.array_equal(factors, rank_spread_factors(8, 0.01, seed=3))
    assert gpu_spread_factor(1024, 0.01) > gpu_spread_factor(8, 0.01)


def test_iteration_time_adds_up_and_each_overhead_switches():
    cluster, profile = resolve_cluster("dgx-a100"), toy_profile()
    full = iteration(profile, cluster, 16, 8, "ring")
    assert full.iteration_s == pytest.approx(full.compute_s + full.sync_s + full.interference_s
                                             + full.exposed_comm_s + full.input_wait_s)
    assert full.sync_s == pytest.approx(full.compute_s * (gpu_spread_factor(16, 0.01) - 1))
    bare = iteration(profile, cluster, 16, 8, "ring", overheads=NO_OVERHEADS)
    assert bare.sync_s == bare.interference_s == bare.input_wait_s == bare.optimizer_s == 0
    assert bare.iteration_s < full.iteration_s
    no_interference = iteration(profile, cluster, 16, 8, "ring", overheads=Overheads(interference=0.0))
    assert no_interference.interference_s == 0


def test_input_pipeline_ceiling_per_node():
    cluster, profile = toy_cluster(gpus_per_node=4, input_samples_per_s_per_node=100.0), toy_profile()
    it = iteration(profile, cluster, 8, 50, "ring", overheads=Overheads(interference=0, gpu_spread=0))
    assert it.iteration_s == pytest.approx(4 * 50 / 100.0)  # 4 GPUs of one node eat 200 samples per step
    assert it.input_wait_s == pytest.approx(it.iteration_s - it.compute_s - it.exposed_comm_s)
    unlimited = iteration(profile, cluster, 8, 50, "ring", overheads=Overheads(input_rate=None))
    assert unlimited.input_wait_s == 0 and unlimited.iteration_s < it.iteration_s
    faster = iteration(profile, cluster, 8, 50, "ring", overheads=Overheads(input_rate=400.0, gpu_spread=0))
    assert faster.iteration_s == pytest.approx(max(0.5, faster.compute_s + faster.interference_s
                                                   + faster.exposed_comm_s))
    sequence = iteration(toy_profile("sequence"), cluster, 8, 50, "ring")  # pre-tokenised: no ceiling
    assert sequence.input_wait_s == 0


def test_parse_overheads():
    assert parse_overheads("default") == Overheads() and parse_overheads(None) == Overheads()
    assert parse_overheads("none") == NO_OVERHEADS
    parsed = parse_overheads("interference=0.3, spread=0, optimizer=off, input=20000")
    assert parsed == Overheads(interference=0.3, gpu_spread=0.0, optimizer=False, input_rate=20000.0)
    assert parse_overheads("input=none").input_rate is None
    for bad, match in (("interference=lots", "number"), ("spread=-1", r"\[0, 10\]"), ("optimizer=maybe", "on or off"),
                       ("input=-5", "input"), ("colour=red", "unknown key"), ("interference", "key=value")):
        with pytest.raises(UserError, match=match):
            parse_overheads(bad)


def test_engine_plays_the_same_overheads():
    """Uncontended, the engine with overlap interference agrees with the closed form. With a speed spread the
    engine's slowest rank is the closed form's, but ranks out of step also delay each other's ring steps: the
    engine can only be slower, by a little."""
    from firesim.workload import load_workload

    googlenet = load_workload("googlenet")
    for cluster, gpus, algo in (("ethernet-10g", 8, "ring"), ("dgx-a100", 16, "hierarchical")):
        c = resolve_cluster(cluster)
        interference = Overheads(interference=0.3, gpu_spread=0.0)
        closed = iteration(googlenet, c, gpus, 16, algo, overheads=interference)
        sim = simulate_iteration(googlenet, c, gpus, algo, batch_per_gpu=16, overheads=interference)
        assert closed.interference_s > 0
        assert sim.iteration_s == pytest.approx(closed.iteration_s, rel=1e-3)
        spread = Overheads(interference=0.3, gpu_spread=0.02)
        closed = iteration(googlenet, c, gpus, 16, algo, overheads=spread)
        sim = simulate_iteration(googlenet, c, gpus, algo, batch_per_gpu=16, overheads=spread)
        assert closed.sync_s > 0 and sim.rank_speed.min() == pytest.approx(1 / gpu_spread_factor(gpus, 0.02))
        assert closed.iteration_s * (1 - 1e-6) <= sim.iteration_s <= closed.iteration_s * 1.03


# ------------------------------------------------------------------------------------------ calibration
def test_catalog_efficiencies_are_the_fit_to_single_gpu_figures():
    """Every efficiency a calibration figure names equals what fitting it gives (3 significant digits), and
    every calibration figure is reproduced within rounding; check rows fit nothing."""
    from firesim.throughput import fit_catalog, load_figures, predicted_samples_per_s

    figures = load_figures()
    if any(not _has_profile(f.model) for f in figures):
        pytest.skip("a figure's model profile is not packaged yet")
    catalog = load_catalog()
    for key, value in fit_catalog(catalog).items():
        gpu, field, dtype = key.split(".")
        assert getattr(catalog.gpus[gpu], field)[dtype] == pytest.approx(value, rel=5e-3), key
    for figure in figures:
        if figure.role == "calibrate":
            assert figure.gpus == 1 and figure.fits
            assert predicted_samples_per_s(figure) == pytest.approx(figure.samples_per_s, rel=0.01), figure.name
        else:
            assert not figure.fits


def _has_profile(name: str) -> bool:
    from firesim.workload import list_workloads

    return name in list_workloads()


def test_fit_efficiency_bisects_to_the_figure():
    from firesim.compute import fit_efficiency

    assert fit_efficiency(lambda e: 1000 * e, 250.0) == pytest.approx(0.25, rel=1e-9)
    assert fit_efficiency(lambda e: min(1000 * e, 300.0), 500.0) == 1.0  # memory bound: cannot reach it
    assert math.isclose(fit_efficiency(lambda e: 10 * e**0.5, 5.0), 0.25, rel_tol=1e-9)


def test_profile_counts_drive_the_roofline():
    """Element counts, weight traffic, kernel counts and the matmul/elementwise split from the profiler."""
    layer = LayerProfile(name="block", type="Block", params=10, fwd_flops=1000, bwd_flops=3000, fwd_matmul_flops=800,
                         bwd_matmul_flops=2000, input_elements=50, output_elements=70, weight_elements=30,
                         bwd_input_elements=90, bwd_output_elements=40, bwd_weight_elements=25, fwd_ops=3, bwd_ops=5)
    profile = ModelProfile(name="p", input_shape=(4,), sample="sequence", train_samples=1, params=10, fwd_flops=1000,
                           layers=(layer,))
    rates = Rates(conv_flops=1.0, matmul_flops=100.0, memory_Bps=1e6, layer_overhead_s=0.5, vector_flops=10.0)
    fwd, bwd = layer_seconds(profile, rates, 2, precision("bf16"))
    assert fwd[0] == pytest.approx(max(2 * (800 / 100 + 200 / 10), (120 * 2 * 2 + 30 * 2) / 1e6) + 3 * 0.5)
    assert bwd[0] == pytest.approx(max(2 * (2000 / 100 + 1000 / 10), (130 * 2 * 2 + 25 * 4) / 1e6) + 5 * 0.5)
    slow = Rates(1.0, 1.0, 1.0, 0.0, 1.0)  # now the bytes bind: activations at bf16, backward weights at fp32
    fwd, bwd = layer_seconds(profile, slow, 2, precision("bf16"))
    assert fwd[0] == pytest.approx(max(2000, 120 * 2 * 2 + 30 * 2)) and bwd[0] == pytest.approx(max(6000, 620))

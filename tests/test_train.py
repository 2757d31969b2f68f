"""Training for real: the recipe, the data, bit-identical replicas for every plan, checkpoints that resume bit
for bit after a rank is killed, the accuracy demonstration, and measured vs predicted iterations."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from firerun import checkpoint
from firerun.data import Sampler, digits
from firerun.iteration import OtherLoad, core_binding
from firerun.launch import sbatch_script
from firerun.recipe import LARS, Recipe
from firesim.errors import UserError
from firesim.plans import Plan, resolve, verify
from firesim.plans.determinism import check_identical_sums, final_sums
from firesim.plans.verify import PlanError
from firesim.trace import Phase, Trace, TraceHeader

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the recipe
def _recipe(**kw) -> Recipe:
    return Recipe.make(**{"base_lr": 0.1, "base_batch": 256, "batch": 1024, "total_steps": 100, **kw})


def test_lr_scales_with_the_global_batch():
    assert _recipe(scaling="linear").peak_lr == pytest.approx(0.4)
    assert _recipe(scaling="sqrt").peak_lr == pytest.approx(0.2)
    assert _recipe(scaling="none").peak_lr == pytest.approx(0.1)


def test_warmup_rises_linearly_from_the_base_lr_to_the_peak():
    r = _recipe(warmup_steps=10)
    assert [r.lr_at(s) for s in (0, 5, 10)] == pytest.approx([0.1, 0.25, 0.4])


def test_decays_after_warmup():
    poly = _recipe(warmup_steps=20, decay="poly", power=0.5)
    assert poly.lr_at(20) == pytest.approx(0.4)
    assert poly.lr_at(60) == pytest.approx(0.4 * math.sqrt(0.5))  # FireCaffe's poly, half way
    assert poly.lr_at(100) == 0.0
    cos = _recipe(decay="cosine", final_lr=0.01)
    assert [cos.lr_at(0), cos.lr_at(50), cos.lr_at(100)] == pytest.approx([0.4, 0.205, 0.01])
    step = _recipe(decay="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [step.lr_at(49), step.lr_at(50), step.lr_at(75)] == pytest.approx([0.4, 0.04, 0.004])


@pytest.mark.parametrize("fields, field", [({"base_lr": 0}, "base_lr"), ({"warmup_steps": 100, "decay": "poly"},
                                                                           "warmup_steps"),
                                           ({"milestones": (0.8, 0.2), "decay": "step"}, "milestones"),
                                           ({"scaling": "cubic"}, "scaling")])
def test_bad_recipe_is_one_line(fields, field):
    with pytest.raises(UserError, match=field) as err:
        _recipe(**fields)
    assert "\n" not in str(err.value)


def test_lars_scales_each_weight_by_its_trust_ratio():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5])  # ||g|| = 1
    opt = LARS([w, b], lr=2.0, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    opt.step()
    local = 0.01 * 5 / (1 + 0.1 * 5)
    expect = torch.tensor([[3.0, 4.0]]) - 2.0 * local * (torch.tensor([[0.6, 0.8]]) + 0.1 * torch.tensor([[3.0, 4.0]]))
    assert torch.allclose(w.detach(), expect, rtol=1e-6)
    assert torch.allclose(b.detach(), torch.tensor([0.0]))  # 1-d: plain SGD, no weight decay


# ---------------------------------------------------------------------------------------------- data
def test_digits_split_is_stratified_seeded_and_disjoint():
    a, b = digits(3, 10, seed=0), digits(3, 10, seed=0)
    assert a.train_x.shape[1:] == (3, 8, 8) and a.train_samples + a.test_y.numel() == 1797
    assert torch.equal(a.test_x, b.test_x)
    assert a.test_y.numel() == 359 and a.train_samples == 1438  # 20 % of each class, rounded
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20 % of each class's ~180
    train_rows = {tuple(r) for r in a.train_x[:, 0].reshape(len(a.train_x), -1).tolist()}
    test_rows = [tuple(r) for r in a.test_x[:, 0].reshape(len(a.test_x), -1).tolist()]
    assert sum(r in train_rows for r in test_rows) < 10  # digits has a few duplicate images, no shared rows
    assert not torch.equal(digits(3, 10, seed=1).test_y, a.test_y)


def test_each_step_sees_the_same_samples_however_the_batch_is_split():
    one = Sampler(1000, 64, workers=1, accumulation=1, seed=3)
    many = Sampler(1000, 64, workers=4, accumulation=2, seed=3)
    for step in (0, 14, 15, 31):  # 15 steps per epoch: 15 and 31 are in later epochs
        split = torch.cat([many.indices(step, w, m) for m in range(2) for w in range(4)])
        assert torch.equal(split, one.indices(step, 0, 0))
    assert not torch.equal(one.indices(0, 0, 0), one.indices(15, 0, 0))
    with pytest.raises(UserError, match="does not split"):
        Sampler(1000, 60, workers=4, accumulation=2, seed=0)


# ---------------------------------------------------------------------------------------------- sum order
def _standard_specs(world: int) -> list[str]:
    from firerun.check import standard_algos

    return standard_algos(world)


@pytest.mark.parametrize("world", range(1, 10))
def test_every_registry_plan_sums_in_one_order_on_every_rank(world):
    for spec in _standard_specs(world):
        choice = resolve(spec)
        workers = choice.workers(world)
        plan = choice.check(workers).build(workers, 4 * 997)
        check_identical_sums(plan)


# Three ranks, one chunk: rank 0 ends with x0 + (x1 + x2), rank 1 with (x1 + x2) + x0 (the same bits: an
# add's operands commute), rank 2 with (x2 + x0) + x1 (associated differently: other bits, in general).
ARRIVAL_PROGRAMS = [
    [("send", 0, 2), ("send", 0, 1), ("reduce", 0, 1)],
    [("send", 0, 2), ("reduce", 0, 2), ("send", 0, 0), ("reduce", 0, 0)],
    [("send", 0, 1), ("reduce", 0, 0), ("reduce", 0, 1)],
]


def test_a_plan_whose_ranks_sum_in_different_orders_is_refused():
    plan = Plan.from_programs("arrival_order", 4096, 1, ARRIVAL_PROGRAMS)
    verify(plan)  # a correct all-reduce
    sums = final_sums(plan)
    assert sums[0] == sums[1] != sums[2]
    with pytest.raises(PlanError, match="chunk 0 is summed in a different order on rank 2"):
        check_identical_sums(plan)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_settings_guard(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    assert checkpoint.latest(tmp_path) is None
    for step in (3, 6, 9):
        path = checkpoint.save(tmp_path, step, model, opt, {"algo": "ring"})
    assert checkpoint.latest(tmp_path) == path and sorted(p.name for p in tmp_path.glob("step-*.pt")) == [
        "step-00000006.pt", "step-00000009.pt"]
    assert not list(tmp_path.glob(".*tmp"))
    state = checkpoint.load(path, {"algo": "ring"})
    assert state["step"] == 9 and torch.equal(state["model"]["weight"], model.weight.detach())
    with pytest.raises(UserError, match="algo='ring'"):
        checkpoint.load(path, {"algo": "tree"})
    (tmp_path / "step-00000009.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read"):
        checkpoint.load(path, {"algo": "ring"})


# ---------------------------------------------------------------------------------------------- traces
def test_iteration_trace_round_trips_and_exports(tmp_path):
    header = TraceHeader(plan="small_cnn-train-ring", ranks=2, nbytes=0, chunks=0, source="measured")
    kinds = [Phase.FORWARD, Phase.BACKWARD, Phase.READY, Phase.EXCHANGE, Phase.WAIT, Phase.OPTIMIZER]
    n = len(kinds)
    trace = Trace(header=header, rank=np.zeros(n, np.int32), op=np.array(kinds, np.int8),
                  chunk=np.array([-1, -1, 0, 0, -1, -1], np.int32), peer=np.full(n, -1, np.int32),
                  nbytes=np.array([0, 0, 512, 512, 0, 0]), t_start=np.arange(n, dtype=float),
                  t_end=np.arange(n, dtype=float) + 0.5, step=np.full(n, 7, np.int32))
    trace.save(tmp_path / "t.json")
    back = Trace.load(tmp_path / "t.json")
    assert back.step.tolist() == [7] * n and back.records()[3]["op"] == "exchange"
    chrome = trace.to_chrome(tmp_path / "c.json")
    names = [e["name"] for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert names == ["forward", "backward", "ready bucket 0", "exchange bucket 0", "wait", "optimizer"]
    json.loads((tmp_path / "c.json").read_text())


# ---------------------------------------------------------------------------------------------- prediction
def test_measured_compute_replaces_the_flop_estimate():
    """One 1 MB bucket ready when backward ends, on a star: the iteration is forward + backward + one ring
    all-reduce + optimizer, computed by hand; a bucket ready earlier hides behind backward."""
    from firesim.compute import NO_OVERHEADS
    from firesim.hardware import HardwareProfile, profile_to_cluster
    from firesim.topology import star
    from firesim.training import MeasuredCompute, simulate_iteration
    from firesim.workload import load_workload

    bw, p, n = 1e8, 4, 1 << 20
    cluster = profile_to_cluster(HardwareProfile(name="t", alpha_s=1e-4, beta_s_per_byte=1 / bw,
                                                 gamma_s_per_byte=1e-10, compute_flops=1e9))
    cluster = cluster.model_copy(update={"software_latency_s": 1e-4})
    profile = load_workload("small_cnn")
    late = MeasuredCompute(forward_s=0.01, backward_s=0.02, bucket_nbytes=(n,), bucket_ready_s=(0.02,),
                           optimizer_s=0.001)
    sim = simulate_iteration(profile, cluster, p, "ring", batch_per_gpu=8, topology=star(p, bw, 0.0),
                             overheads=NO_OVERHEADS, measured=late)
    ring = 2 * (p - 1) * (1e-4 + n / p / bw) + (p - 1) * n / p * 1e-10
    assert sim.iteration_s == pytest.approx(0.01 + 0.02 + ring + 0.001, rel=1e-3)
    early = MeasuredCompute(forward_s=0.01, backward_s=0.2, bucket_nbytes=(n,), bucket_ready_s=(0.0,))
    hidden = simulate_iteration(profile, cluster, p, "ring", batch_per_gpu=8, topology=star(p, bw, 0.0),
                                overheads=NO_OVERHEADS, measured=early, rank_speed=np.full(p, 0.5))
    assert hidden.iteration_s == pytest.approx((0.01 + 0.2) / 0.5, rel=1e-6) and hidden.exposed_comm_s < 1e-9


# ---------------------------------------------------------------------------------------------- Slurm
def test_sbatch_for_training_uses_torchrun_and_resumes(tmp_path):
    script = sbatch_script(["train", "--model", "resnet18_cifar_w16", "--checkpoint-dir", "/shared/ck"], nodes=2,
                           tasks_per_node=4, mode="torchrun", gpus_per_node=4)
    line = script.strip().splitlines()[-1]
    assert line.startswith("srun ") and "-m torch.distributed.run --nnodes=2 --nproc-per-node=4" in line
    assert "--max-restarts=3" in line and line.endswith("--device cuda --resume")
    path = tmp_path / "job.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    plain = sbatch_script(["bench"], nodes=1, tasks_per_node=2, mode="torchrun")
    assert "--max-restarts=0" in plain and "--resume" not in plain


# ---------------------------------------------------------------------------------------------- real jobs
def firerun(*args: str, env: dict | None = None, timeout_s: float = 300) -> subprocess.CompletedProcess:
    marker = uuid.uuid4().hex
    proc = subprocess.run([sys.executable, "-m", "firerun", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "FIRERUN_TEST_MARK": marker, **(env or {})})
    from test_firerun_multiproc import live_with_marker

    assert live_with_marker(f"FIRERUN_TEST_MARK={marker}") == [], "orphan processes left behind"
    return proc


@pytest.mark.multiproc
def test_replicas_stay_bit_identical_with_every_plan(tmp_path):
    """Four ranks train with the built-in all-reduce and every registry configuration that fits (dedicated
    parameter servers included); every step ends with the replicas' parameters compared bit for bit."""
    out = tmp_path / "all.json"
    done = firerun("run", "--nproc", "4", "train", "--algo", "all", "--data", "digits", "--steps", "3",
                   "--batch", "8", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    records = json.loads(out.read_text())
    assert [r["config"]["algo"] for r in records] == ["builtin", *_standard_specs(4)]
    for r in records:
        assert r["replicas_identical"] and r["replica_checks"] == 3, r["config"]["algo"]
        assert r["workers"] == resolve(r["config"]["algo"]).workers(4) if r["config"]["algo"] != "builtin" else 4
        assert all(np.isfinite(r["loss"]))


ARRIVAL_PLUGIN = textwrap.dedent(f'''
    from firesim.plans import Algorithm, Plan, register

    def build(p, nbytes, options):
        assert p == 3
        return Plan.from_programs("arrival_order", nbytes, 1, {ARRIVAL_PROGRAMS!r})

    register(Algorithm(name="arrival_order", summary="rank 2 sums in another order", build=build))
''')


@pytest.mark.multiproc
def test_replicas_that_diverge_stop_the_run(tmp_path):
    """The runtime check is no formality: a plan that sums in a different order on each rank is caught."""
    (tmp_path / "arrival_plugin.py").write_text(ARRIVAL_PLUGIN)
    env = {"FIRESIM_PLUGINS": "arrival_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = firerun("run", "--nproc", "3", "train", "--algo", "arrival_order", "--data", "digits", "--steps", "3",
                   "--batch", "8", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "after step 1 the parameters of rank 2 differ from rank 0's" in done.stdout


@pytest.mark.multiproc
def test_resume_after_a_rank_is_killed_is_bit_identical(tmp_path):
    """3 ranks (so the order of sums matters), ring: kill rank 1 in step 7, resume from the step-6 checkpoint;
    the final parameters and momentum equal an uninterrupted run's bit for bit."""
    common = ["run", "--nproc", "3", "train", "--model", "small_cnn", "--data", "digits", "--algo", "ring",
              "--steps", "8", "--batch", "8", "--lr", "0.05", "--checkpoint-every", "3", "--timeout-s", "20"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert firerun(*common, "--checkpoint-dir", str(whole)).returncode == 0
    # small_cnn's 378 KB of gradients are one bucket; a 3-rank ring issues 8 ops per bucket on each rank:
    # the warm-up step and steps 0..6 issue 64, so op 68 is in the middle of step 7.
    killed = firerun(*common, "--checkpoint-dir", str(broken), env={"FIRERUN_FAULT": "rank=1,after=68,mode=exit"})
    assert killed.returncode != 0
    assert checkpoint.latest(broken).name == "step-00000006.pt"
    resumed = firerun(*common, "--checkpoint-dir", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "steps 6..8" in resumed.stdout
    a = torch.load(whole / "step-00000008.pt", weights_only=True)
    b = torch.load(broken / "step-00000008.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    momenta = [(a["optimizer"]["state"][i]["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i in a["optimizer"]["state"]]
    assert momenta and all(torch.equal(x, y) for x, y in momenta)
    six = torch.load(whole / "step-00000006.pt", weights_only=True)
    assert not torch.equal(six["model"]["fc.weight"], a["model"]["fc.weight"])  # it did train on


@pytest.mark.multiproc
def test_large_batch_recipe_keeps_accuracy_on_real_data(tmp_path):
    """digits, held out: batch 256 with the recipe within 1 point of batch 32; batch 256 with batch 32's
    LR measurably worse (>= 5 points). Same epochs, seed 0."""
    out = tmp_path / "lb.json"
    done = firerun("large-batch", "--json", str(out), "--plot", str(tmp_path / "lb.png"), timeout_s=600)
    assert done.returncode == 0, done.stderr[-2000:]
    small, recipe, naive = json.loads(out.read_text())["mean_final_accuracy"]
    assert small >= 0.95
    assert abs(recipe - small) <= 0.01, (small, recipe)
    assert naive <= small - 0.05, (small, naive)
    assert (tmp_path / "lb.png").stat().st_size > 10_000


def test_core_binding_spreads_threads_evenly_and_speeds_follow_it():
    assert core_binding(4, 1, {1, 0}) == [[0], [1], [0], [1]]
    assert core_binding(2, 2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert core_binding(3, 1, [5, 7]) == [[5], [7], [5]]
    load = OtherLoad(cores=2)
    load.samples = [0, 2]  # no other runnable thread, then two (one per core)
    assert load.bound_speeds([[0], [1], [0], [1]]).tolist() == [(0.5 + 1 / 3) / 2] * 4
    assert load.bound_speeds([[0], [1], [0]]).tolist() == [(0.5 + 1 / 3) / 2, (1 + 0.5) / 2, (0.5 + 1 / 3) / 2]


@pytest.mark.multiproc
@pytest.mark.emulated
def test_measured_vs_predicted_on_an_emulated_cluster(netns, tmp_path):
    """The one command: one-rank calibration, 4 ranks on an emulated star, firesim's prediction. What it must
    get right here is structural (the same buckets in the prediction as DDP formed, every phase of every
    rank traced, the error computed from them); how close the figures are is a timing claim, made from a
    quiet machine in the README (python -m bench train), not asserted on a shared one."""
    out, trace_path = tmp_path / "it.json", tmp_path / "trace.json"
    done = firerun("train", "--model", "small_cnn", "--nproc", "4", "--algo", "ring,tree", "--steps", "5",
                   "--skip", "2", "--batch", "16", "--emulate", str(ROOT / "examples/topologies/star4-1g.yaml"),
                   "--json", str(out), "--trace", str(trace_path), "--plot", str(tmp_path / "it.png"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["where"] == "star4-1g (emulated)" and report["nproc"] == 4
    assert [r["algo"] for r in report["results"]] == ["ring", "tree"]
    for r in report["results"]:
        m, p = r["measured"], r["predicted"]
        assert r["replicas_identical"] and r["workers"] == 4
        assert r["bucket_nbytes"] == [378152] == report["firesim_buckets"]  # DDP's bucketing is firesim's
        assert 0 < m["forward_s"] < m["iteration_s"] and 0 < p["exchange_s"] < p["iteration_s"]
        assert r["error"] == pytest.approx((p["iteration_s"] - m["iteration_s"]) / m["iteration_s"])
    threads = report["threads"]
    assert report["binding"] == core_binding(4, threads, os.sched_getaffinity(0))  # the ranks were bound
    assert len(report["rank_cpu_share"]) == 4 and report["net"]["transport"]["eager_window_nbytes"] > 0
    trace = Trace.load(trace_path)
    for rank in range(4):
        for step in (2, 3, 4):
            kinds = set(trace.op[(trace.rank == rank) & (trace.step == step)].tolist())
            assert kinds == {int(k) for k in Phase}, (rank, step)
    assert "error" in done.stdout and "star4-1g" in done.stdout

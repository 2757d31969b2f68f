"""Resource limits (firesim.limits, firerun.launch): the cost is estimated before anything is allocated and a
request beyond the limit is refused in one line that states the estimate and the limit; the limit can be
raised deliberately. Also what reaches a Slurm script."""

from __future__ import annotations

import shlex
import time

import pytest

from firerun.launch import check_local_ranks, sbatch_script, slurm_time
from firesim.errors import UserError
from firesim.limits import MAX_OPS
from firesim.plans import algorithms, build, resolve, verify
from firesim.topology import fat_tree, from_spec, load_topology, star


def _specs():
    for algorithm in algorithms():
        yield from (algorithm.name, *algorithm.examples)
    yield "hierarchical:ranks_per_node=4,inter=ps,servers=2"


@pytest.mark.parametrize("spec", sorted(set(_specs())))
def test_op_estimates_are_exact(spec):
    try:
        choice = resolve(spec)
    except UserError:  # hierarchical needs ranks_per_node
        choice = resolve(spec, ranks_per_node=3)
    for workers in range(1, 34):
        try:
            choice.check(workers)
        except UserError:
            continue
        assert choice.ops(workers) == build(choice, workers, 64).n_ops, workers


def test_an_algorithm_without_an_estimate_is_extrapolated_from_small_builds():
    from firesim.plans import Algorithm, builders, register
    from firesim.plans.registry import unregister

    register(Algorithm(name="toy_ring", summary="a ring without an op count", build=lambda p, n, o: builders.ring(p, n)))
    try:
        choice = resolve("toy_ring")
        assert choice.ops(20) == build("ring", 20, 0).n_ops  # small: built and counted
        exact = 4 * 1000 * 999
        assert exact <= choice.ops(1000) <= 1.2 * exact  # big: a power law through 16 and 32 workers
        with pytest.raises(UserError, match="ops"):
            build("toy_ring", 100_000, 0)
    finally:
        unregister("toy_ring")


def test_a_plan_too_big_is_refused_at_once_with_the_estimate():
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        build("ring", 10_000_000, 1 << 20)
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "399,999,960,000,000 ops" in message and f"{MAX_OPS:,}" in message and "max_ops" in message
    with pytest.raises(UserError, match="ops"):
        build("tree:chunks=1000000", 64, 0)
    assert build("ring", 600, 0, max_ops=2 * 4 * 600 * 599).n_ops == 4 * 600 * 599  # raised deliberately


def test_the_engine_and_the_verifier_check_plans_built_elsewhere():
    from firesim.engine import simulate

    plan = build("ring", 64, 1 << 20)
    with pytest.raises(UserError, match="more than the limit of 1,000 ops"):
        simulate(plan, None, alpha_s=1e-6, gamma_s_per_byte=0.0, beta_s_per_byte=1e-9, max_ops=1000)
    with pytest.raises(UserError, match="verify"):
        verify(plan, max_ops=1000)


def test_topologies_are_counted_before_they_are_built(tmp_path):
    start = time.perf_counter()
    for make in (lambda: star(10_000_000), lambda: fat_tree(200), lambda: from_spec("torus:dims=1000x1000"),
                 lambda: from_spec("dragonfly:groups=1000,routers=100"), lambda: from_spec("star", 10**7)):
        with pytest.raises(UserError, match="nodes.*limit of 131,072 nodes"):
            make()
    assert time.perf_counter() - start < 1.0
    assert len(star(1000, max_nodes=2000).graph["endpoints"]) == 1000
    with pytest.raises(UserError, match="max_nodes"):
        star(1000, max_nodes=500)


def test_a_huge_topology_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    hosts = 200_000
    with path.open("w") as fh:
        fh.write("hosts: [" + ", ".join(f"h{i}" for i in range(hosts)) + "]\nswitches: [s0]\nlinks:\n")
        fh.writelines(f"  - [h{i}, s0, 1gbit]\n" for i in range(hosts))
    start = time.perf_counter()
    with pytest.raises(UserError, match="YAML items"):
        load_topology(path)
    assert time.perf_counter() - start < 2.0


def test_local_ranks_are_bounded_by_cores_and_memory(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    check_local_ranks(8)  # 4 a core, at least 8: the tests start 5 on 2 cores
    with pytest.raises(UserError, match="9 ranks on 2 cores is more than the limit of 8"):
        check_local_ranks(9)
    check_local_ranks(9, allow_oversubscribe=True)
    monkeypatch.setattr("firerun.launch._available_memory_bytes", lambda: 2 * 2**30)
    with pytest.raises(UserError, match="GiB available"):
        check_local_ranks(8, allow_oversubscribe=True)


@pytest.mark.parametrize("text", ["30", "00:30:00", "5:30", "1-12", "1-12:00", "2-00:00:00", "UNLIMITED"])
def test_slurm_times(text):
    assert slurm_time(text) == text


@pytest.mark.parametrize("kwargs, reason", [
    ({"time_limit": "garbage"}, "not a Slurm time"), ({"time_limit": "1:00\n#SBATCH --x"}, "not a Slurm time"),
    ({"partition": "a;rm -rf /"}, "partition"), ({"account": "$(id)"}, "account"), ({"job_name": "a b"}, "job name"),
    ({"extra_sbatch": ["--mem=4G\nrm -rf /"]}, "extra sbatch"), ({"nodes": 0}, "nodes"),
    ({"gpus_per_node": -1}, "gpus_per_node"),
])
def test_slurm_scripts_refuse_what_a_shell_or_sbatch_would_interpret(kwargs, reason):
    with pytest.raises(UserError, match=reason):
        sbatch_script(["bench"], **{"nodes": 2, "tasks_per_node": 4, "mode": "srun", **kwargs})


def test_slurm_scripts_quote_every_word_of_the_command():
    args = ["exec", "--plan", "my plan.json", "--trace", "$(id).json"]
    script = sbatch_script(args, nodes=2, tasks_per_node=4, mode="srun", partition="gpu,debug",
                           extra_sbatch=["--mem=64G", "--exclusive"])
    last = script.strip().splitlines()[-1]
    assert shlex.split(last)[-len(args):] == args and "'$(id).json'" in last
    assert "#SBATCH --partition=gpu,debug" in script and "#SBATCH --exclusive" in script


def test_firerun_slurm_writes_its_documented_example(tmp_path, monkeypatch, capsys):
    from firerun.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["slurm", "--nodes", "4", "-o", "job.sh", "bench", "--sizes", "16MiB"])
    assert exit_.value.code == 0
    script = (tmp_path / "job.sh").read_text()
    assert "--nnodes=4" in script and script.rstrip().endswith("-m firerun bench --sizes 16MiB")
    assert "-o" not in script.rstrip().splitlines()[-1].split("firerun", 1)[1]


@pytest.mark.parametrize("spec", sorted(set(_specs())))
def test_the_largest_job_is_checked_and_costed_without_listing_its_ranks(spec):
    """2**31 - 1 workers (the most any option accepts): checking the options, counting the ops and the closed
    form take no time and no memory proportional to p (hierarchical once built a list of every rank)."""
    from firesim.analytic import CommParams, Levels

    try:
        choice = resolve(spec, ranks_per_node=8)
    except UserError:
        choice = resolve(spec)
    p = 2**31 - 1
    start = time.perf_counter()
    try:
        choice.check(p)
    except UserError:
        return  # an option that does not fit p (root, servers): refused, which is fine
    assert choice.ops(p) > MAX_OPS
    if choice.has_closed_form:
        assert choice.time(p, 2**30, Levels(CommParams(1e-6, 1e-10, 1e-11), CommParams(1e-6, 1e-11, 1e-11), 8)) > 0
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("command", [["predict", "--batch", "2147483647", "--gpus"], ["collective", "--ranks"],
                                     ["predict", "--engine", "des", "--batch", "2147483647", "--gpus"]])
def test_the_largest_counts_any_option_accepts_finish_at_once(command, capsys):
    """Every algorithm at 2**31 - 1 GPUs: a closed-form answer or a one-line refusal within seconds, never a
    list of every rank (hierarchical's groups, the slowest of n GPUs' normal scores once did that)."""
    from firesim.cli import main

    specs = ",".join(sorted(set(_specs()) - {"hierarchical"}))
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        main([*command, str(2**31 - 1), "--algo", specs, "--json"])
    assert exit_.value.code in (0, 2), capsys.readouterr().err
    assert time.perf_counter() - start < 30.0

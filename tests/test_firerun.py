"""firerun without a job: rank detection, parsing, fits, scripts, the launcher's supervision, the CLI's errors.

The executor itself runs in tests/test_firerun_multiproc.py (real processes on loopback).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from firerun.bench import check_data, expected_sum, plan_for
from firerun.calibrate import fit_alpha_beta, fit_slope, pingpong_plan
from firerun.check import standard_algos
from firerun.cli import main
from firerun.env import dist_env
from firerun.executor import Fault, _compile
from firerun.launch import sbatch_script, supervise
from firesim.errors import UserError
from firesim.plans import build, match_messages, split_specs
from firesim.units import parse_size_list as parse_sizes


# ---- rank and world from any launcher ------------------------------------------------------------------
def test_dist_env_single_process():
    e = dist_env({})
    assert (e.rank, e.world_size, e.local_rank, e.source, e.launched) == (0, 1, 0, "single", False)


@pytest.mark.parametrize("environ, expected", [
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "n1",
      "MASTER_PORT": "29500"}, (3, 8, 1, 2, "torchrun")),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4(x4)"},
     (5, 16, 1, 4, "slurm")),
    ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "4"}, (2, 4, 2, 4, "pmi")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (1, 2, 1, 2, "openmpi")),
    # torchrun inside a Slurm step, mpiexec inside an allocation: the inner launcher wins
    ({"RANK": "7", "WORLD_SIZE": "8", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (7, 8, 7, 8, "torchrun")),
    ({"PMI_RANK": "3", "PMI_SIZE": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, (3, 4, 3, 4, "pmi")),
])
def test_dist_env_launchers(environ, expected):
    e = dist_env(environ)
    assert (e.rank, e.world_size, e.local_rank, e.local_world_size, e.source) == expected


def test_dist_env_rejects_nonsense():
    with pytest.raises(UserError, match="RANK"):
        dist_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UserError, match="WORLD_SIZE"):
        dist_env({"RANK": "0", "WORLD_SIZE": "four"})


# ---- the lowered program -------------------------------------------------------------------------------
@pytest.mark.parametrize("world", [2, 3, 5, 8])
def test_tags_pair_every_send_with_its_receive(world):
    """Per-pair sequence tags must agree at both ends of every message, for every algorithm."""
    for algo in standard_algos(world):
        plan = plan_for(algo, world, 4 * 1031)
        tags = np.concatenate([_compile(plan, r, 1031).tag for r in range(world)]) if plan.n_ops else np.zeros(0)
        partner = match_messages(plan)
        comm = partner >= 0
        assert np.array_equal(tags[comm], tags[partner[comm]]), algo
        pairs = _compile(plan, 0, 1031).pairs
        assert pairs == sorted(pairs) and all(a != b for a, b in pairs)


def test_compile_slices_follow_chunk_bounds():
    plan = build("ring", 4, 4 * 10)
    prog = _compile(plan, 1, 10)
    bounds = [0, 2, 5, 7, 10]  # chunk_bounds(10, 4)
    for c0, c1, lo, hi in zip(prog.c0, prog.c1, prog.lo, prog.hi):
        assert (lo, hi) == (bounds[c0], bounds[c1])


# ---- benchmark helpers ---------------------------------------------------------------------------------
def test_parse_sizes_like_nccl_tests():
    assert parse_sizes("1KiB:8KiB") == [1024, 2048, 4096, 8192]
    assert parse_sizes("8:512", factor=4) == [8, 32, 128, 512]
    assert parse_sizes("16MiB,64MiB") == [16 << 20, 64 << 20]
    for bad in ("", "8KiB:1KiB", "lots"):
        with pytest.raises(UserError):
            parse_sizes(bad)


def test_split_specs_keeps_options_together():
    assert split_specs("ring,ps:servers=2,colocated=false,tree") == ["ring", "ps:servers=2,colocated=false", "tree"]


def test_dedicated_servers_come_out_of_the_world():
    plan = plan_for("ps:servers=2,colocated=false", 6, 4096)
    assert (plan.ranks, plan.workers) == (6, 4)
    with pytest.raises(UserError, match="no worker"):
        plan_for("ps:servers=4,colocated=false", 4, 4096)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_check_data_sums_exactly_over_64_ranks(dtype):
    total = expected_sum(64, 5000, dtype)
    exact = sum(check_data(q, 5000, dtype).double() for q in range(64))  # float64 holds these sums exactly
    assert torch.equal(total.double(), exact)
    assert not torch.equal(check_data(0, 100, dtype), check_data(1, 100, dtype))


# ---- calibration fits ----------------------------------------------------------------------------------
def test_fit_recovers_alpha_beta():
    sizes = np.array([8, 64, 512, 4096, 32768, 262144, 2097152])
    alpha, beta = 20e-6, 1 / 3e9
    noise = 1 + 0.01 * np.sin(np.arange(sizes.size))
    a, b = fit_alpha_beta(sizes, (alpha + beta * sizes) * noise)
    assert a == pytest.approx(alpha, rel=0.05) and b == pytest.approx(beta, rel=0.05)
    assert fit_slope(sizes, 2e-10 * sizes) == pytest.approx(2e-10)


def test_pingpong_plan_is_a_valid_exchange():
    plan = pingpong_plan(4, 0, 2, 1024, 3)
    assert plan.n_ops == 12 and np.diff(plan.offsets).tolist() == [6, 0, 6, 0]
    match_messages(plan)


# ---- faults, scripts, launcher -------------------------------------------------------------------------
def test_fault_spec():
    assert Fault.parse("rank=1,after=5") == Fault(rank=1, after_ops=5, mode="exit")
    assert Fault.from_env({"FIRERUN_FAULT": "rank=2,after=0,mode=hang"}).mode == "hang"
    assert Fault.from_env({}) is None
    with pytest.raises(UserError):
        Fault.parse("rank=1,mode=explode")


@pytest.mark.parametrize("mode, needle", [
    ("srun", "srun --kill-on-bad-exit=1"),
    ("torchrun", "-m torch.distributed.run --nnodes=2 --nproc-per-node=4"),
    ("mpiexec", "--mpi=pmi2"),
])
def test_sbatch_script(mode, needle):
    script = sbatch_script(["bench", "--sizes", "16MiB,64MiB"], nodes=2, tasks_per_node=4, mode=mode,
                           gpus_per_node=4, partition="gpu")
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --nodes=2" in script and needle in script
    assert "#SBATCH --partition=gpu" in script and "MASTER_ADDR=$(scontrol show hostnames" in script
    assert "-m firerun bench --sizes 16MiB,64MiB" in script


def live_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are alive (zombies left to a non-reaping PID 1 are dead)."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in "ZX":
            alive.append(int(entry))
    return alive


def _sleeper(seconds: float, code: int = 0, child: bool = False) -> subprocess.Popen:
    body = f"import time, sys; time.sleep({seconds}); sys.exit({code})"
    if child:  # also leave a grandchild in the group, as mpiexec would
        body = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); {body}"
    return subprocess.Popen([sys.executable, "-c", body], start_new_session=True)


def test_supervise_stops_everyone_after_the_first_failure():
    procs = [_sleeper(0.2, code=5), _sleeper(60, child=True), _sleeper(60)]
    start = time.monotonic()
    code = supervise(procs, [f"rank {i}" for i in range(3)], grace_s=0.5)
    assert code == 5
    assert time.monotonic() - start < 10
    assert all(p.poll() is not None for p in procs)
    time.sleep(0.2)
    for p in procs:  # the whole group is gone, grandchildren included
        assert live_in_group(p.pid) == []


def test_supervise_success():
    procs = [_sleeper(0.1), _sleeper(0.2)]
    assert supervise(procs, ["rank 0", "rank 1"], grace_s=1) == 0


# ---- CLI errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["bench", "--sizes", "lots"], "sizes"),
    (["bench", "--dtype", "int3"], "dtype"),
    (["run", "--nproc", "2"], "give the command"),
    (["exec"], "exactly one of"),
    (["bench", "--no-such-flag"], "no-such-flag"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_slurm_prints_a_script(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["slurm", "--nodes", "3", "--mode", "srun", "bench", "--sizes", "1MiB"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=3" in out and "-m firerun bench --sizes 1MiB" in out


# ---- the public API -----------------------------------------------------------------------------------
def test_public_api_is_lazy_and_no_name_is_shadowed_by_a_submodule():
    import pkgutil

    import firerun

    code = "import sys, firerun; firerun.__all__; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # the launcher and --help stay light
    # once imported, a submodule replaces a package attribute of the same name
    assert not {m.name for m in pkgutil.iter_modules(firerun.__path__)} & set(firerun.__all__)
    from firerun import ExecError, Executor, execute, session

    assert callable(execute) and callable(session) and isinstance(Executor, type)
    assert issubclass(ExecError, RuntimeError)

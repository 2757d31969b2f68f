"""The algorithm registry: one record per algorithm, options validated once, and a new algorithm registered from
outside the package works everywhere an algorithm is named (verify, the engine, predict, firerun check)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from firesim.engine import simulate
from firesim.errors import UserError
from firesim.plans import algorithms, build, get, registry, resolve, verify
from firesim.training import predict

# A toy algorithm written as a user would, in a module of their own: a chain that reduces from rank 0 up to
# rank p-1, then copies the sum back down. No closed form, so predict must play it on the engine.
TOY_PLUGIN = textwrap.dedent('''
    import numpy as np
    from firesim.plans import Algorithm, PlanBuilder, register

    def chain(workers, nbytes, options):
        b = PlanBuilder("toy_chain", workers, nbytes, chunks=1)
        up = np.arange(workers - 1)
        b.transfer(up, up + 1, 0, reduce=True, step=up)
        down = np.arange(workers - 1, 0, -1)
        b.transfer(down, down - 1, 0, reduce=False, step=workers - 1 + (workers - 1 - down))
        return b.build()

    register(Algorithm(name="toy_chain", summary="reduce along a chain, copy back", build=chain))
''')


@pytest.fixture
def toy_plugin(tmp_path):
    """Import the toy plugin in this process (registering it) and give the environment for subprocesses."""
    path = tmp_path / "toy_chain_plugin.py"
    path.write_text(TOY_PLUGIN)
    spec = importlib.util.spec_from_file_location("toy_chain_plugin", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    env = {**os.environ, "FIRESIM_PLUGINS": "toy_chain_plugin",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    yield env
    registry.unregister("toy_chain")


def test_toy_algorithm_verifies_simulates_and_predicts(toy_plugin):
    for p in range(1, 10):
        verify(build("toy_chain", p, 4096))
    alpha, beta, gamma, n, p = 1e-5, 1e-9, 1e-10, 1 << 20, 6
    trace = simulate(build("toy_chain", p, n), None, alpha_s=alpha, beta_s_per_byte=beta, gamma_s_per_byte=gamma)
    assert trace.duration_s == pytest.approx(2 * (p - 1) * (alpha + n * beta) + (p - 1) * n * gamma, rel=1e-9)
    row = predict("small_cnn", "ethernet-10g", 4, "toy_chain", batch=128, epochs=1)
    assert row.comm_s > 0 and row.iteration_s >= row.compute_s
    assert "toy_chain" in [a.name for a in algorithms()]


def test_toy_algorithm_through_both_command_lines(toy_plugin):
    predicted = subprocess.run([sys.executable, "-m", "firesim", "predict", "--model", "small_cnn", "--hardware",
                                "ethernet-10g", "--gpus", "2,4", "--algo", "toy_chain,ring", "--batch", "64",
                                "--json"], env=toy_plugin, capture_output=True, text=True, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(predicted.stdout)
    assert [(r["gpus"], r["algo"]) for r in rows] == [(2, "toy_chain"), (2, "ring"), (4, "toy_chain"), (4, "ring")]
    assert all(r["comm_s"] > 0 for r in rows)
    checked = subprocess.run([sys.executable, "-m", "firerun", "run", "--nproc", "3", "check", "--algo", "toy_chain",
                              "--dtype", "float32", "--timeout-s", "60"],
                             env=toy_plugin, capture_output=True, text=True, timeout=180)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert "toy_chain" in checked.stdout and "WRONG" not in checked.stdout


def test_options_are_typed_and_bounded_once():
    assert resolve("ps:servers=4,colocated=false").options.servers == 4
    assert resolve("ps", servers=2).spec == "ps:servers=2"
    assert resolve("hd").name == "halving_doubling" and get("dbt").name == "double_binary_tree"
    for spec, reason in [("ps:servers=abc", "servers"), ("ps:servers=-3", "servers"), ("ps:servers=0", "servers"),
                         ("tree:chunks=0", "chunks"), ("ps:colocated=maybe", "colocated"),
                         ("ring:chunks=2", "unknown field"), ("tree:root", "key=value"),
                         ("hierarchical", "ranks_per_node"), ("hierarchical:ranks_per_node=2,inter=hierarchical", "inter"),
                         ("hierarchical:ranks_per_node=2,inter=ps,servers=x", "servers"), ("gossip", "unknown algorithm")]:
        with pytest.raises(UserError, match=reason) as err:
            resolve(spec)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="root"):
        resolve("tree:root=2", workers=2)
    with pytest.raises(UserError, match="co-located"):
        build("ps:servers=3", 2, 1024)
    with pytest.raises(UserError, match="dedicated servers"):
        build("hierarchical:ranks_per_node=2,inter=ps,colocated=false", 4, 1024)


def test_ranks_needed_and_workers_are_inverse():
    for spec in ("ring", "ps:servers=2,colocated=false", "ps:servers=3"):
        choice = resolve(spec)
        for workers in range(3, 9):
            assert choice.workers(choice.ranks(workers)) == workers
            assert build(spec, workers, 64).ranks == choice.ranks(workers)


def test_hierarchical_on_one_node_is_a_tree_inside_it():
    plan = build("hierarchical:ranks_per_node=8", 4, 4096)
    verify(plan)
    assert np.array_equal(plan.bytes_sent(), build("tree", 4, 4096).bytes_sent())


def test_register_refuses_a_taken_name():
    with pytest.raises(UserError, match="taken"):
        registry.register(registry.Algorithm(name="ring", summary="", build=lambda p, n, o: None))
    with pytest.raises(UserError, match="taken"):
        registry.register(registry.Algorithm(name="mine", summary="", build=lambda p, n, o: None, aliases=("hd",)))

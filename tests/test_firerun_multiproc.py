"""The executor on real processes over loopback: every algorithm exact on every world size and backend, faults
reported by every surviving rank within the timeout, no orphans, results written atomically.

Each world size is started once per backend and runs every builder inside it (`firerun check`): process
start-up dominates on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from firesim.plans import algorithms
from firesim.trace import Trace

pytestmark = pytest.mark.multiproc

WORLDS = [1, 2, 3, 4, 5, 8]


def live_with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (what a launched job leaves behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker.encode() not in fh.read():
                    continue
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in "ZX":
            found.append(int(entry))
    return found


def firerun(*args: str, env: dict | None = None, timeout_s: float = 150) -> tuple[int, str, str, float]:
    """Run `python -m firerun ARGS`; assert it left no process behind."""
    marker = f"FIRERUN_TEST_MARK={uuid.uuid4().hex}"
    key, value = marker.split("=")
    full_env = {**os.environ, key: value, **(env or {})}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "firerun", *args], env=full_env, capture_output=True, text=True,
                          timeout=timeout_s)
    elapsed = time.monotonic() - start
    time.sleep(0.2)
    assert live_with_marker(marker) == [], "orphan processes left behind"
    return proc.returncode, proc.stdout, proc.stderr, elapsed


def _launch(backend: str, nproc: int) -> list[str]:
    return ["run", "--nproc", str(nproc), "--launcher", "mpiexec" if backend == "mpi" else "local"]


@pytest.mark.parametrize("backend", ["torch", "mpi"])
@pytest.mark.parametrize("world", WORLDS)
def test_every_algorithm_exact_on_every_rank(backend, world, tmp_path):
    out = tmp_path / "check.json"
    code, stdout, stderr, _ = firerun(*_launch(backend, world), "check", "--backend", backend,
                                      "--timeout-s", "60", "--json", str(out))
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    data = json.loads(out.read_text())
    records = data["records"]
    assert data["ranks"] == world
    for r in records:
        assert r["wrong"] == 0 and len(r["wrong_by_rank"]) == world, r
        assert r["trace_ok"] is not False, r
    algos = {r["algo"].split(":")[0] for r in records}
    assert algos == {a.name for a in algorithms()} | {"builtin"}
    assert {r["dtype"] for r in records} == {"float32", "float16", "bfloat16"}
    if world >= 3:
        configs = {r["algo"] for r in records}
        assert {"tree", "tree:chunks=3", "ps", "ps:servers=2", "ps:servers=1,colocated=false",
                "ps:servers=2,colocated=false"} <= configs
    # sizes that leave some chunks empty and sizes that do not divide evenly
    assert {max(1, world - 1), 1031, 40_009} <= {r["numel"] for r in records}


# "firerun: rank R: <the rank at fault and why> <what R was waiting for>", e.g. "firerun: rank 2: lost rank 1 (its
# process exited) while waiting for reduce chunk 0 from rank 1 (op 3 of 12)"
FAULT_LINE = re.compile(r"^firerun: rank (\d+): (?:lost rank (\d+) \((.*?)\)|rank (\d+) hung \((.*)\)) "
                        r"(?:while waiting for|after ([\d.]+) s waiting for) "
                        r"(send|recv|reduce) chunks? [\d-]+ (?:to|from) rank (\d+) \(op (\d+) of (\d+)\)$")


def _fault_lines(stderr: str) -> dict[int, re.Match]:
    return {int(m.group(1)): m for m in map(FAULT_LINE.match, stderr.splitlines()) if m}


def _culprit(m: re.Match) -> int:
    return int(m.group(2) or m.group(4))


def test_a_rank_that_dies_is_named_by_every_survivor():
    """Every survivor names rank 1, the dead one, including those waiting for a healthy peer that is stuck
    behind it (before: rank 3 blamed rank 2, rank 0 blamed rank 3), within a second or two of its death."""
    code, _, stderr, elapsed = firerun(*_launch("torch", 4), "exec", "--algo", "ring", "--size", "1MiB",
                                       "--iters", "1", "--timeout-s", "30",
                                       env={"FIRERUN_FAULT": "rank=1,after=3,mode=exit"})
    assert code == 17, stderr  # the job's code is the root cause's: rank 1's deliberate exit
    assert "rank 1 exited with code 17" in stderr
    lines = _fault_lines(stderr)
    assert set(lines) == {0, 2, 3}, stderr
    for rank, m in lines.items():
        assert _culprit(m) == 1 and m.group(3) == "its process exited", m.group(0)
        waited_for = int(m.group(8))
        assert waited_for != rank and int(m.group(9)) <= int(m.group(10))
    assert lines[2].group(7) == "reduce" and lines[2].group(8) == "1"  # rank 2 receives from rank 1 in a ring
    assert elapsed < 30  # long before the 30 s op timeout: the board names the dead rank at once


def test_a_rank_that_hangs_is_named_everywhere_and_is_killed():
    """Rank 1 stays alive but stops making progress: its watcher still answers, saying it waits for nobody."""
    code, _, stderr, elapsed = firerun(*_launch("torch", 4), "--grace-s", "1", "exec", "--algo", "ring",
                                       "--size", "64KiB", "--iters", "1", "--timeout-s", "2",
                                       env={"FIRERUN_FAULT": "rank=1,after=3,mode=hang"})
    assert code == 3, stderr
    lines = _fault_lines(stderr)
    assert set(lines) == {0, 2, 3}, stderr
    for m in lines.values():
        assert _culprit(m) == 1 and m.group(5).startswith("alive, no progress for"), m.group(0)
        assert m.group(6) == "2.0"  # each rank waited its whole 2.0 s timeout
    assert lines[2].group(8) == "1"  # rank 2 was waiting for rank 1 itself
    assert "killing rank 1" in stderr
    assert elapsed < 2 + 1 + 40


def test_mpi_hang_is_bounded_and_named_too():
    code, _, stderr, elapsed = firerun(*_launch("mpi", 3), "exec", "--backend", "mpi", "--algo", "tree",
                                       "--size", "64KiB", "--iters", "1", "--timeout-s", "2",
                                       env={"FIRERUN_FAULT": "rank=1,after=0,mode=hang"})
    assert code != 0
    lines = _fault_lines(stderr)
    assert lines and all(_culprit(m) == 1 for m in lines.values()), stderr
    assert elapsed < 2 + 40


def test_mpi_backend_needs_an_mpi_launcher():
    """A rank started without mpiexec is an MPI world of one: refuse instead of running every rank alone."""
    code, _, stderr, _ = firerun("check", "--backend", "mpi", env={"RANK": "0", "WORLD_SIZE": "2"})
    assert code == 2
    assert "launch with mpiexec" in stderr and "Traceback" not in stderr


def test_exec_writes_trace_and_chrome(tmp_path):
    trace_path, chrome_path = tmp_path / "ring.trace.json", tmp_path / "ring.chrome.json"
    code, stdout, stderr, _ = firerun(*_launch("torch", 3), "exec", "--algo", "hd", "--size", "100KiB",
                                      "--dtype", "bfloat16", "--trace", str(trace_path), "--chrome", str(chrome_path))
    assert code == 0, stderr
    trace = Trace.load(trace_path)
    assert trace.header.source == "measured" and trace.header.ranks == 3 and trace.header.dtype == "bfloat16"
    assert len(trace) > 0 and (trace.t_end >= trace.t_start).all() and trace.t_start.min() >= 0
    assert json.loads(chrome_path.read_text())["traceEvents"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_bench_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    code, stdout, stderr, _ = firerun(*_launch("torch", 2), "bench", "--sizes", "4KiB,256KiB", "--algo",
                                      "ring,tree,ps", "--iters", "2", "--warmup", "1", "--reps", "1",
                                      "--json", str(out))
    assert code == 0, stderr
    for column in ("time_us", "algbw", "busbw", "vs builtin", "#wrong"):
        assert column in stdout
    records = json.loads(out.read_text())["records"]
    assert [(r["size_bytes"], r["algo"]) for r in records][:4] == [(4096, "builtin"), (4096, "ring"),
                                                                     (4096, "tree"), (4096, "ps")]
    for r in records:
        assert r["wrong"] == 0 and r["time_us"] > 0
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 2 * (r["workers"] - 1) / r["workers"])
        assert r["algbw_GBps"] == pytest.approx(r["size_bytes"] / r["time_us"] / 1e3)


def test_mpi_bench_and_calibrate_write_a_profile(tmp_path):
    from firesim.hardware import load_profile

    profile = tmp_path / "profile.yaml"
    code, stdout, stderr, _ = firerun(*_launch("mpi", 4), "calibrate", "--backend", "mpi", "--sizes", "64:256KiB",
                                      "--factor", "16", "--round-trips", "3", "--ranks-per-node", "2",
                                      "--name", "loopback", "--output", str(profile))
    assert code == 0, stderr
    p = load_profile(profile)
    assert p.name == "loopback" and p.alpha_s >= 0 and p.beta_s_per_byte > 0 and p.gamma_s_per_byte > 0
    assert p.compute_flops > 1e6 and "intra" in p.overrides and p.gpus_per_node == 2
    assert "ping-pong 0<->1 (intra)" in stdout and "ping-pong 0<->2 (inter)" in stdout


def test_results_are_replaced_atomically(tmp_path):
    """A failing run never leaves a half-written JSON: the old file stays whole."""
    out = tmp_path / "check.json"
    out.write_text('{"previous": true}')
    code, _, _, _ = firerun(*_launch("torch", 2), "check", "--algo", "ring", "--dtype", "float32", "--json",
                            str(out), "--timeout-s", "3", env={"FIRERUN_FAULT": "rank=1,after=1,mode=exit"})
    assert code != 0
    assert json.loads(Path(out).read_text()) == {"previous": True}


def test_training_with_dedicated_server_keeps_replicas_equal(tmp_path):
    out = tmp_path / "train.json"
    code, stdout, stderr, _ = firerun(*_launch("torch", 3), "train", "--model", "small_cnn", "--algo",
                                      "ps:servers=1,colocated=false", "--steps", "3", "--batch", "8",
                                      "--json", str(out))
    assert code == 0, stderr
    r = json.loads(out.read_text())
    assert r["workers"] == 2 and len(r["loss"]) == 3 and r["replicas_identical"] and r["replica_checks"] == 3

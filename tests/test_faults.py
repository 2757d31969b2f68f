"""Faults, named right: when a rank dies or hangs every other rank names *that* rank (not the healthy peer it
happened to wait for), within about a second of the death or the op timeout; a local job stays on loopback;
two jobs on one MASTER_PORT never join each other; no orphans.

The board's logic (``judge``) and the store's claims (``connect``) are tested in-process in milliseconds; the
end-to-end cases start real jobs of 2 to 4 ranks with an injected fault (``FIRERUN_FAULT``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_firerun_multiproc import firerun, live_with_marker

from firerun.launch import local_job_env, loopback_interface
from firerun.liveness import (
    FaultBoard,
    Verdict,
    Wait,
    connect,
    host_key,
    judge,
    listen_socket,
    process_state,
)
from firesim.errors import UserError

# ---- judging a snapshot of the board -------------------------------------------------------------------


def _ring_waits(p: int, dead: int) -> dict[int, Wait]:
    """Ring all-reduce with ``dead`` gone: every live rank waits for its left neighbour."""
    return {r: Wait(((r - 1) % p,), f"while waiting for reduce chunk 0 from rank {(r - 1) % p}", 5.0,
                    "closed" if (r - 1) % p == dead else None) for r in range(p) if r != dead}


def test_a_silent_rank_is_the_culprit_not_the_neighbour():
    """The measured failure: with rank 3 dead, rank 2 blamed rank 1 and rank 1 blamed rank 0."""
    answers = _ring_waits(4, dead=3)
    for reporter in (0, 1, 2):
        v = judge(reporter, 4, 5.0, answers, {3: ("exited", "")}, answers[reporter].peers)
        assert (v.culprits, v.cause, v.phrase) == ((3,), "lost", "lost rank 3 (its process exited)")


def test_silent_ranks_elsewhere_are_told_apart_by_what_their_peers_saw():
    answers = _ring_waits(4, dead=3)
    far = {3: ("silent", "no answer from node7 in 1.2 s")}
    v = judge(1, 4, 5.0, answers, far, (0,))
    assert v.phrase == "lost rank 3 (connection closed; no answer from node7 in 1.2 s)"
    answers[0] = Wait((3,), "after 5.0 s waiting for recv chunk 0 from rank 3", 5.0, "timeout")
    v = judge(1, 4, 5.0, answers, far, (0,))
    assert (v.cause, v.phrase) == ("hung", "rank 3 hung or lost (no answer from node7 in 1.2 s)")
    v = judge(1, 4, 5.0, answers, {3: ("stopped", "")}, (0,))
    assert (v.cause, v.phrase) == ("hung", "rank 3 hung (its process is stopped)")
    v = judge(1, 4, 5.0, answers, {3: ("running", "does not answer in 2.5 s")}, (0,))
    assert (v.cause, v.phrase) == ("hung", "rank 3 hung (its process runs but does not answer in 2.5 s)")
    v = judge(1, 4, 5.0, answers, {2: ("exited", ""), 3: ("stopped", "")}, (0,))
    assert (v.culprits, v.cause) == ((2, 3), "lost")
    assert v.phrase == "lost rank 2 (its process exited); rank 3 hung (its process is stopped)"


def test_everyone_answers_follow_the_waits_to_the_stuck_rank():
    """Rank 1 is alive (its watcher answers) but waits for nobody and has made no progress: it hangs."""
    answers = {0: Wait((1,), "w", 2.0, "timeout"), 2: Wait((0,), "w", 2.0), 3: Wait((2,), "w", 2.0),
               1: Wait((), "in send chunk 0 to rank 2 (op 4 of 12)", 2.1)}
    v = judge(3, 4, 2.0, answers, {}, (2,))
    assert (v.culprits, v.cause) == ((1,), "hung")
    assert v.phrase == "rank 1 hung (alive, no progress for 2.1 s in send chunk 0 to rank 2 (op 4 of 12))"
    answers[1] = Wait((), "computing (op 4 of 12)", 0.0)  # busy on purpose: not a culprit
    assert judge(3, 4, 2.0, answers, {}, (2,)).cause == "unknown"


def test_a_cycle_of_waits_is_a_deadlock():
    answers = {0: Wait((1,), "w", 5.0, "timeout"), 1: Wait((2,), "w", 5.0), 2: Wait((1,), "w", 5.0)}
    v = judge(0, 3, 5.0, answers, {}, (1,))  # rank 0 waits for 1, and 1 and 2 wait for each other
    assert (v.culprits, v.cause) == ((1, 2), "deadlock") and v.phrase.startswith("ranks 1, 2 wait for each other")
    everyone = {q: Wait(tuple(x for x in range(3) if x != q), "in the built-in all_reduce", 5.0) for q in range(3)}
    assert judge(0, 3, 5.0, everyone, {}, everyone[0].peers).cause == "unknown"  # a collective: no cycle to name


def test_records_round_trip():
    w = Wait((1, 2), "in barrier (waiting for rank 1)", 0.5, "timeout")
    assert Wait.from_json(w.to_json()) == w
    v = Verdict((3,), "lost", "lost rank 3 (its process exited)")
    assert Verdict.from_json(v.to_json()) == v


def test_process_state_tells_exited_from_stopped():
    assert process_state(os.getpid()) == "running"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while process_state(child.pid) != "stopped" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_state(child.pid) == "stopped"
        child.kill()
        deadline = time.monotonic() + 10
        while process_state(child.pid) != "exited" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_state(child.pid) == "exited"  # a zombie: dead, not yet reaped
    finally:
        child.kill()
        child.wait()
    assert process_state(child.pid) == "exited"  # reaped: gone


# ---- the job's store: loopback, one job per port -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_store_host_listens_on_master_addr_only():
    port = _free_port()
    sock = listen_socket("127.0.0.1", port)
    try:
        assert sock.getsockname() == ("127.0.0.1", port)
        with pytest.raises(UserError, match=f"127.0.0.1:{port} is already in use"):
            listen_socket("127.0.0.1", port)
    finally:
        sock.close()
    assert listen_socket("node0.cluster", port) is None  # a host name: torch binds every interface


def test_a_job_never_joins_another_on_the_same_port():
    """Job A holds the port; job B's rank 0 cannot host there, B's rank 1 finds A's run id and refuses, and a
    second process claiming A's rank 1 is refused too. A's own ranks join."""
    port = _free_port()
    a0 = connect(0, 2, "127.0.0.1", port, 10.0, environ={"FIRERUN_RUN_ID": "job-a"})
    with pytest.raises(UserError, match="already in use"):
        connect(0, 2, "127.0.0.1", port, 10.0, environ={"FIRERUN_RUN_ID": "job-b"})
    with pytest.raises(UserError, match="belongs to another job \\(run 'job-a', this is 'job-b'\\)"):
        connect(1, 2, "127.0.0.1", port, 10.0, environ={"FIRERUN_RUN_ID": "job-b"})
    a1 = connect(1, 2, "127.0.0.1", port, 10.0, environ={"FIRERUN_RUN_ID": "job-a"})
    assert a0.hosted and not a1.hosted
    a1.board.set("x", "1")
    assert a0.board.get("x") == b"1"
    # the same rank claimed twice (two jobs without run ids on one port, or a RANK typo)
    a1.board.set("proc/1", json.dumps({"host": "h", "name": "elsewhere", "pid": 1}))
    with pytest.raises(UserError, match="rank 1 of the job at .* is already held by pid 1 on elsewhere"):
        connect(1, 2, "127.0.0.1", port, 10.0, environ={"FIRERUN_RUN_ID": "job-a"})


def test_local_jobs_rendezvous_on_loopback_with_their_own_run_id():
    outer = {"PMI_RANK": "3", "OMPI_COMM_WORLD_RANK": "1", "TORCHELASTIC_USE_AGENT_STORE": "True", "PATH": "/x"}
    a, b = local_job_env(outer), local_job_env(outer, master_port=29555)
    assert a["MASTER_ADDR"] == "127.0.0.1" and b["MASTER_PORT"] == "29555"
    assert a["FIRERUN_RUN_ID"] != b["FIRERUN_RUN_ID"]
    assert not {"PMI_RANK", "OMPI_COMM_WORLD_RANK", "TORCHELASTIC_USE_AGENT_STORE"} & set(a)
    assert a["GLOO_SOCKET_IFNAME"] == loopback_interface() == "lo"
    assert local_job_env({"GLOO_SOCKET_IFNAME": "eth1"})["GLOO_SOCKET_IFNAME"] == "eth1"  # the user's choice
    with pytest.raises(UserError, match="master_port"):
        local_job_env({}, master_port=70000)


# ---- the board, in-process ----------------------------------------------------------------------------
def test_the_first_to_see_a_failure_decides_and_every_live_rank_hears_it():
    """Ranks 0 and 1 live here; rank 2 registered from a process that has since exited. Rank 0 sees a closed
    connection; rank 1, waiting for rank 0, is told by its watcher: lost rank 2, within a fraction of a
    second (rank 2's process state decides it: no need to wait out the answer window)."""
    port = _free_port()
    env = {"FIRERUN_RUN_ID": uuid.uuid4().hex}
    boards = [FaultBoard(connect(r, 3, "127.0.0.1", port, 10.0, environ=env), r, 3, 8.0) for r in (0, 1)]
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    boards[0].rv.board.set("proc/2", json.dumps({"host": host_key(), "name": "here", "pid": gone.pid}))
    heard: list[Verdict] = []
    boards[0].start(lambda: Wait((2,), "w0"), heard.append)
    boards[1].start(lambda: Wait((0,), "while waiting for recv chunk 1 from rank 0 (op 2 of 4)", 1.0), heard.append)
    start = time.monotonic()
    verdict = boards[0].blame(Wait((2,), "while waiting for recv chunk 0 from rank 2 (op 1 of 4)", 0.1, "closed"))
    assert verdict == Verdict((2,), "lost", "lost rank 2 (its process exited)")
    deadline = time.monotonic() + 5
    while not heard and time.monotonic() < deadline:
        time.sleep(0.01)
    assert heard == [verdict]  # rank 1's watcher; rank 0 raised the alarm, its own watcher is not woken
    assert time.monotonic() - start < boards[0].answer_s
    boards[0].rv.board.set("left/2", "1")  # else the store host waits for the dead rank to leave (10 s)
    for b in reversed(boards):
        b.close()


# ---- whole jobs ---------------------------------------------------------------------------------------
BLAME = re.compile(r"^firerun: rank (\d+): (?:lost rank (\d+) \((.*?)\)|rank (\d+) hung \((.*)\)) "
                   r"(while waiting for|after [\d.]+ s waiting for|in the built-in all_reduce|after [\d.]+ s in "
                   r"the built-in all_reduce|in )")


def _blamed(stderr: str) -> dict[int, tuple[int, str, str]]:
    """rank -> (culprit, 'lost'|'hung', the whole line) for every rank's fault line."""
    out = {}
    for line in stderr.splitlines():
        m = BLAME.match(line)
        if m:
            lost = m.group(2) is not None
            out[int(m.group(1))] = (int(m.group(2) if lost else m.group(4)), "lost" if lost else "hung", line)
    return out


def _run(nproc: int, fault: str, *args: str, grace_s: float = 3.0):
    return firerun("run", "--nproc", str(nproc), "--grace-s", str(grace_s), *args,
                   env={"FIRERUN_FAULT": fault}, timeout_s=120)


def test_killed_during_the_builtin_all_reduce_every_survivor_names_the_dead_rank():
    """Before: `built-in all_reduce: Read error [127.0.0.1]:46986: Connection reset by peer`, no rank. Rank 1 is
    not next to rank 3 in gloo's ring: it learns of the death from the board, not from a socket."""
    code, _, stderr, _ = _run(4, "rank=3,after=1,mode=exit", "bench", "--algo", "builtin", "--sizes", "64KiB",
                              "--iters", "5", "--warmup", "0", "--reps", "1", "--timeout-s", "30")
    assert code == 17, stderr  # the job's code is the root cause's: rank 3's deliberate exit
    blamed = _blamed(stderr)
    assert set(blamed) == {0, 1, 2}, stderr
    for culprit, cause, line in blamed.values():
        assert (culprit, cause) == (3, "lost") and "its process exited" in line and "built-in all_reduce" in line
        assert "after" not in line  # named at once, not after the 30 s timeout
    assert "Traceback" not in stderr and "[W" not in stderr  # one line per rank: no C++ warnings


def test_a_stopped_rank_is_named_by_every_rank_within_the_timeout():
    """Before: `built-in all_reduce: Operation timed out!` on every rank."""
    code, _, stderr, elapsed = _run(3, "rank=1,after=1,mode=stop", "bench", "--algo", "builtin", "--sizes",
                                    "64KiB", "--iters", "5", "--warmup", "0", "--reps", "1", "--timeout-s", "2",
                                    grace_s=60)
    assert code == 3, stderr
    blamed = _blamed(stderr)
    assert set(blamed) == {0, 2}, stderr
    for culprit, cause, line in blamed.values():
        assert (culprit, cause) == (1, "hung") and "its process is stopped" in line, line
        assert "after 2.0 s in the built-in all_reduce" in line
    assert "stopped (SIGSTOP)" in stderr and "killing rank 1" in stderr  # not after the 60 s grace
    assert elapsed < 60


def test_the_store_host_dying_is_named_too():
    """Rank 0 hosts the rendezvous store: when it dies the board goes with it, and the others still name it."""
    code, _, stderr, _ = _run(3, "rank=0,after=3,mode=exit", "exec", "--algo", "ring", "--size", "64KiB",
                              "--iters", "1", "--timeout-s", "5")
    assert code == 17, stderr
    blamed = _blamed(stderr)
    assert set(blamed) == {1, 2}, stderr
    assert all(culprit == 0 and cause == "lost" for culprit, cause, _ in blamed.values()), stderr


def _tcp_sockets(pid: int) -> list[tuple[str, int, bool]]:
    """(local IPv4 address, port, listening) of every TCP socket process ``pid`` holds (/proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as fh:
            for row in fh.read().splitlines()[1:]:
                cols = row.split()
                if cols[9] not in inodes:
                    continue
                ip, port = cols[1].split(":")
                if table == "tcp6":  # an IPv4-mapped address, else not IPv4 at all
                    ip = ip[-8:] if ip.startswith("0000000000000000FFFF0000") else "ipv6"
                if ip != "ipv6":
                    ip = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                found.append((ip, int(port, 16), cols[3] == "0A"))
    return found


def test_two_jobs_on_one_port_never_meet_and_a_local_job_stays_on_loopback():
    """Job A runs; job B, given A's MASTER_PORT, is refused in one line (exit 2) and A carries on. Every TCP
    socket of A's ranks (gloo's pairs, the store) is bound to 127.0.0.1."""
    port = _free_port()
    marker = uuid.uuid4().hex
    a = subprocess.Popen([sys.executable, "-m", "firerun", "run", "--nproc", "2", "--master-port", str(port),
                          "exec", "--algo", "ring", "--size", "64KiB", "--iters", "1000000", "--timeout-s", "30"],
                         env={**os.environ, "FIRERUN_TEST_MARK": marker}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        ranks: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until both ranks listen for gloo pairs (the process group is up)
            ranks = [pid for pid in live_with_marker(f"FIRERUN_TEST_MARK={marker}") if pid != a.pid]
            if len(ranks) == 2 and all(any(listening and p != port for _, p, listening in _tcp_sockets(pid))
                                       for pid in ranks):
                break
            assert a.poll() is None, a.communicate()[1]
            time.sleep(0.2)
        sockets = [s for pid in ranks for s in _tcp_sockets(pid)]
        assert {ip for ip, _, _ in sockets} == {"127.0.0.1"}, sockets
        assert ("127.0.0.1", port, True) in sockets  # the store, on loopback only
        code, _, stderr, _ = firerun("run", "--nproc", "2", "--master-port", str(port), "exec", "--algo", "ring",
                                     "--size", "64KiB", "--iters", "1", timeout_s=120)
        assert code == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and f"MASTER_PORT: 127.0.0.1:{port} is already in use" in lines[0], stderr
        assert a.poll() is None  # A was not disturbed
    finally:
        a.send_signal(signal.SIGINT)
        _, a_err = a.communicate(timeout=60)
    assert "firerun: rank" not in a_err, a_err  # no rank of A ever failed
    time.sleep(0.2)
    assert live_with_marker(f"FIRERUN_TEST_MARK={marker}") == []


def test_the_readme_python_example_runs_under_torchrun(tmp_path):
    """The README's `firerun.session` example, as printed, on 2 ranks under torchrun (whose agent hosts the
    store: every rank joins it as a client)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    script = next(b for b in blocks if "from firerun import session" in b)
    (tmp_path / "example.py").write_text(script)
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "example.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=150,
                          env={**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^[\d.]+ ms, every element 1$", proc.stdout, re.M), proc.stdout  # 0 + 1

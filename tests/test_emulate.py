"""The emulated cluster (network namespaces + veths + bridges + tc shaping) and the validation loop on it.

Needs root (``ip netns add``); everything else skips with the reason. Every cluster here records its state
under the test's tmp_path, and the tests check that nothing is left behind: namespaces, root-namespace links.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from firerun.emulate import (
    TCP_GOODPUT_EFFICIENCY,
    TCP_SEND_BUFFER_BYTES,
    EmulatedCluster,
    check_emulable,
    list_clusters,
    parse_ss,
    sampling_tcp,
)
from firesim.errors import UserError
from firesim.io import read_json
from firesim.topology import load_topology

pytestmark = pytest.mark.emulated

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ROOT / "examples" / "topologies"


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=20).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _pair(tmp_path: Path, rate: str = "400mbit") -> Path:
    return _write(tmp_path, "pair", f"""
        name: pair
        hosts: [a, b]
        switches: [s]
        links: [[a, s, {rate}], [b, s, {rate}]]
    """)


# ---------------------------------------------------------------------------------------------------------
# what is refused (pure checks: no root needed)


@pytest.mark.parametrize(("text", "words"), [
    ("hosts: [h0, h1, h2, h3, h4]\nswitches: [s]\nlinks: [[h0, s, 100mbit], [h1, s, 100mbit], [h2, s, 100mbit],"
     " [h3, s, 100mbit], [h4, s, 100mbit]]", "5 hosts"),
    ("hosts: [h0, h1, h2]\nswitches: [s]\nlinks: [[h0, s, 2gbit], [h1, s, 2gbit], [h2, s, 1gbit]]", "5 Gbit/s"),
    ("hosts: [h0, h1]\nswitches: [s]\nlinks: [[h0, s, 1gbit, 50us], [h1, s, 1gbit]]", "netem"),
    ("hosts: [h0, h1]\nswitches: [s, t]\nlinks: [[h0, s, 1gbit], [h1, s, 1gbit], [h0, t, 1gbit]]", "2 links"),
    ("hosts: [h0, h1, h2]\nlinks: [[h0, h1, 1gbit], [h1, h2, 1gbit], [h2, h0, 1gbit]]", "cycle"),
    ("hosts: [{name: h0, gpus: 2}, h1]\ngpu_link: 300GB/s\nswitches: [s]\nlinks: [[h0, s, 1gbit], [h1, s, 1gbit]]",
     "gpu"),
])
def test_refuses_what_it_cannot_emulate(tmp_path, text, words):
    G = load_topology(_write(tmp_path, "bad", text))
    with pytest.raises(UserError, match=words) as err:
        check_emulable(G)
    assert "\n" not in str(err.value)


def test_example_topologies_are_emulable():
    for path in sorted(TOPOLOGIES.glob("*.yaml")):
        check_emulable(load_topology(path))


# ---------------------------------------------------------------------------------------------------------
# lifecycle


def test_up_down_leaves_nothing_behind(netns, tmp_path):
    before_ns, before_links = _namespaces(), _root_links()
    with EmulatedCluster(TOPOLOGIES / "two-level-4.yaml", state_dir=tmp_path) as cluster:
        made = set(cluster.namespaces.values())
        assert made <= _namespaces() and len(made) == 7
        assert _root_links() == before_links  # veths live only inside the namespaces
        assert cluster.state_file.exists()
        status = cluster.status()
        assert status["up"] and {(link["from"], link["to"]) for link in status["links"]} >= {("s0", "spine")}
        # hosts reach each other through leaf - spine - leaf
        probe = cluster.exec_in("h3", [sys.executable, "-c", "import socket; socket.create_connection"
                                       f"(('{cluster.address('h0')}', 9), timeout=5)"], timeout_s=20)
        assert "ConnectionRefused" in probe.stderr  # a RST from h0: the path works (nobody listens on 9)
    assert _namespaces() == before_ns
    assert _root_links() == before_links
    assert not cluster.state_file.exists()


def test_exception_inside_the_context_still_tears_down(netns, tmp_path):
    before = _namespaces()
    with pytest.raises(ZeroDivisionError):
        with EmulatedCluster(TOPOLOGIES / "star4-1g.yaml", state_dir=tmp_path) as cluster:
            sleeper = cluster.run_in("h1", ["sleep", "60"])
            1 / 0  # noqa: B018
    assert _namespaces() == before
    assert sleeper.poll() is not None  # processes started inside were stopped


def test_sigterm_tears_down(netns, tmp_path):
    before = _namespaces()
    script = textwrap.dedent(f"""
        import time
        from firerun.emulate import EmulatedCluster
        with EmulatedCluster({str(TOPOLOGIES / 'star4-1g.yaml')!r}, state_dir={str(tmp_path)!r}) as c:
            print(c.id, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        cluster_id = proc.stdout.readline().strip()
        assert cluster_id and any(ns.startswith(cluster_id) for ns in _namespaces())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert _namespaces() == before
    assert list_clusters(tmp_path) == []


def test_names_are_unique_and_down_works_from_another_process(netns, tmp_path):
    before = _namespaces()
    a = EmulatedCluster(TOPOLOGIES / "star4-1g.yaml", state_dir=tmp_path).up()
    b = EmulatedCluster(TOPOLOGIES / "star4-1g.yaml", state_dir=tmp_path)
    try:
        b.up()
        assert a.id != b.id and not set(a.namespaces.values()) & set(b.namespaces.values())
        cli = [sys.executable, "-m", "firerun", "emulate"]
        status = subprocess.run([*cli, "status", "--json", "--state-dir", str(tmp_path)], capture_output=True,
                                text=True, timeout=60, cwd=ROOT)
        assert sorted(r["id"] for r in json.loads(status.stdout)) == sorted([a.id, b.id])
        down = subprocess.run([*cli, "down", a.id, "--state-dir", str(tmp_path)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        assert down.returncode == 0, down.stderr
        assert not set(a.namespaces.values()) & _namespaces()
        assert set(b.namespaces.values()) <= _namespaces()  # the other cluster is untouched
    finally:
        a.down()
        b.down()
    assert _namespaces() == before


# ---------------------------------------------------------------------------------------------------------
# shaping


_RECEIVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5001)); s.listen(1)
print("listening", flush=True)
conn, _ = s.accept(); conn.settimeout(30); n = 0; first = None
while True:
    data = conn.recv(1 << 20)
    if not data:
        break
    first = first or time.perf_counter()
    n += len(data)
print(n, n / (time.perf_counter() - first), flush=True)
"""
_SENDER = """
import socket, sys
s = socket.create_connection((sys.argv[1], 5001), timeout=30); chunk = b"x" * (1 << 20)
for _ in range(int(sys.argv[2])):
    s.sendall(chunk)
s.close()
"""


def test_shaping_gives_tcp_goodput_at_the_link_rate(netns, tmp_path):
    """A bulk TCP transfer (no iperf: two small Python scripts) runs at rate x 1448/1514, and the counters
    see the payload plus one Ethernet/IP/TCP header per 1448 bytes."""
    topology = _pair(tmp_path, "400mbit")
    G = load_topology(topology)
    with EmulatedCluster(G, state_dir=tmp_path) as cluster:
        receiver = cluster.run_in("b", [sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "listening"
        before = cluster.link_bytes()
        mib = 48
        sent = cluster.exec_in("a", [sys.executable, "-c", _SENDER, cluster.address("b"), str(mib)], timeout_s=60)
        assert sent.returncode == 0, sent.stderr
        nbytes, rate_Bps = receiver.stdout.readline().split()
        receiver.wait(timeout=30)
        after = cluster.link_bytes()
    expected_Bps = G.edges["a", "s"]["bandwidth_Bps"] * TCP_GOODPUT_EFFICIENCY
    assert int(nbytes) == mib << 20
    assert float(rate_Bps) == pytest.approx(expected_Bps, rel=0.05)
    wire = {link: after[link] - before[link] for link in after}
    for link in (("a", "s"), ("s", "b")):
        assert wire[link] == pytest.approx((mib << 20) / TCP_GOODPUT_EFFICIENCY, rel=0.01)
    assert wire[("b", "s")] < 0.01 * wire[("a", "s")]  # only ACKs come back


_ARRIVAL = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5001)); s.listen(1)
print("listening", flush=True)
conn, _ = s.accept(); conn.settimeout(30)
while conn.recv(1 << 20):
    pass
print(time.time(), flush=True)
"""
_ONE_AFTER_THE_OTHER = """
import socket, sys, time
socks = []
for address in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20); s.settimeout(30)
    s.connect((address, 5001)); socks.append(s)
print(time.time(), flush=True)
for s in socks:  # the whole first message is in its socket before the second is written
    s.sendall(b"x" * (1 << 20))
for s in socks:
    s.close()
"""


def test_a_host_shares_its_link_between_peers(netns, tmp_path):
    """With htb each peer of a host has its own class at the host's port (as fq_codel shares a NIC per flow): 1 MiB
    written to one peer and then 1 MiB to another arrive together (measured 0.93-0.99 of each other at 200 Mbit/s),
    where one byte FIFO (tbf, or htb before the classes) mostly delivers the first at half the time of the second."""
    topology = _write(tmp_path, "star3", """
        name: star3
        hosts: [a, b, c]
        switches: [s]
        links: [[a, s, 200mbit], [b, s, 200mbit], [c, s, 200mbit]]
    """)
    with EmulatedCluster(topology, state_dir=tmp_path, shaper="htb") as cluster:
        receivers = [cluster.run_in(h, [sys.executable, "-c", _ARRIVAL], stdout=subprocess.PIPE, text=True)
                     for h in ("b", "c")]
        assert all(r.stdout.readline().strip() == "listening" for r in receivers)
        sent = cluster.exec_in("a", [sys.executable, "-c", _ONE_AFTER_THE_OTHER, cluster.address("b"),
                                     cluster.address("c")], timeout_s=60)
        assert sent.returncode == 0, sent.stderr
        start = float(sent.stdout.split()[0])
        first, second = (float(r.stdout.readline()) - start for r in receivers)
        for r in receivers:
            r.wait(timeout=30)
    assert first > 0.8 * second, (first, second)


def test_a_fresh_connection_buffers_what_a_busy_one_does(netns, tmp_path):
    """Every host's TCP send buffer starts at its ceiling, so the first 2 MiB written to a new connection return
    before they could have crossed the link (the eager window does not depend on what the job sent before): 2 ms
    here, of 88 ms on the wire. With Linux's default start (16 KiB, grown with the congestion window) the buffer
    was 1.6 MB after the write and the write took 23-29 ms."""
    topology = _pair(tmp_path, "200mbit")
    with EmulatedCluster(topology, state_dir=tmp_path) as cluster:
        receiver = cluster.run_in("b", [sys.executable, "-c", _ARRIVAL], stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "listening"
        sent = cluster.exec_in("a", [sys.executable, "-c", _WRITE_TIME, cluster.address("b")], timeout_s=60)
        assert sent.returncode == 0, sent.stderr
        receiver.stdout.readline()
        receiver.wait(timeout=30)
    sndbuf, write_s = sent.stdout.split()
    assert int(sndbuf) == TCP_SEND_BUFFER_BYTES
    wire_s = (2 << 20) / (200e6 / 8 * TCP_GOODPUT_EFFICIENCY)  # 88 ms
    assert float(write_s) < wire_s / 8, (write_s, wire_s)


_WRITE_TIME = """
import socket, sys, time
s = socket.socket(); s.settimeout(30); s.connect((sys.argv[1], 5001))
t = time.perf_counter(); s.sendall(b"x" * (2 << 20)); t = time.perf_counter() - t
print(s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), t, flush=True)
s.close()
"""


_SS = (
    "100000 0      127.0.0.1:5077  127.0.0.1:37538 skmem:(r102496,rb131072,t0,tb4194304,f4000,w0,o0,bl0,d1) bbr "
    "wscale:10,10 rto:204 rtt:0.022/0.011 ato:80 mss:32768 pmtu:65535 rcvmss:34518 advmss:65483 cwnd:10 "
    "bytes_received:100000 segs_out:2 segs_in:6 data_segs_in:4 bbr:(bw:0bps,mrtt:0.022) send 119156363636bps "
    "lastsnd:204 lastrcv:204 lastack:196 pacing_rate 340531187816bps delivered:1 app_limited reordering:20 "
    "rcv_rtt:0.025 rcv_space:65483 rcv_ssthresh:94833 minrtt:0.022 snd_wnd:65536\n"
    "0      0      127.0.0.1:37538 127.0.0.1:5077  skmem:(r0,rb131072,t0,tb4194304,f0,w0,o0,bl0,d0) bbr "
    "wscale:10,10 rto:208 rtt:5.526/11.002 mss:47616 pmtu:65535 rcvmss:536 advmss:65483 cwnd:14 "
    "bytes_sent:134518 bytes_retrans:34518 bytes_acked:100001 segs_out:6 segs_in:3 data_segs_out:4 "
    "bbr:(bw:15237105464bps,mrtt:0.025,pacing_gain:2.88672,cwnd_gain:2.88672) send 965072747bps lastsnd:196 "
    "lastrcv:204 lastack:160 pacing_rate 241468168304bps delivery_rate 26535640bps delivered:5 busy:44ms "
    "rwnd_limited:8ms(0.3%) retrans:0/1 dsack_dups:1 reordering:20 rcv_space:65495 rcv_ssthresh:65495 "
    "minrtt:0.025 snd_wnd:28672\n")


def test_ss_lines_become_connection_records():
    """Two real lines of ``ss -tinmHO`` (iproute2 6.1): each field where the kernel printed it, None where not
    (the receiving side has sent nothing, so no bytes_acked, busy or delivery rate)."""
    receiver, sender = parse_ss(_SS)
    assert sender == {
        "local": "127.0.0.1:37538", "peer": "127.0.0.1:5077", "recv_queue_bytes": 0, "send_queue_bytes": 0,
        "send_buffer_bytes": 4194304, "recv_buffer_bytes": 131072, "congestion_control": "bbr", "rtt_ms": 5.526,
        "cwnd_segments": 14, "mss_bytes": 47616, "bytes_acked": 100001, "bytes_received": None,
        "bytes_retransmitted": 34518, "busy_ms": 44.0, "rwnd_limited_ms": 8.0, "sndbuf_limited_ms": None,
        "min_rtt_ms": 0.025, "pacing_rate_bps": 241468168304.0, "delivery_rate_bps": 26535640.0}
    assert (receiver["recv_queue_bytes"], receiver["bytes_received"], receiver["rtt_ms"], receiver["min_rtt_ms"],
            receiver["bytes_acked"], receiver["busy_ms"], receiver["delivery_rate_bps"]) == (
        100000, 100000, 0.022, 0.022, None, None, None)
    assert parse_ss("") == [] and parse_ss("Recv-Q Send-Q Local Peer\n") == []


def test_tcp_sampling_sees_a_transfer(netns, tmp_path):
    """Sampling every host's connections and every port's queue during a 4 MiB transfer at 200 Mbit/s (176 ms):
    the sender's connection shows the bytes acknowledged so far, growing, and the 4 MiB send buffer; the sender's
    port the bytes its class for b has sent, growing past the payload, and data queued in it; the file parses
    strictly."""
    topology = _pair(tmp_path, "200mbit")
    path = tmp_path / "tcp.json"
    with EmulatedCluster(topology, state_dir=tmp_path) as cluster:
        receiver = cluster.run_in("b", [sys.executable, "-c", _ARRIVAL], stdout=subprocess.PIPE, text=True)
        assert receiver.stdout.readline().strip() == "listening"
        with sampling_tcp(cluster, path, 0.05):
            sent = cluster.exec_in("a", [sys.executable, "-c", _SENDER_THEN_WAIT, cluster.address("b")],
                                   timeout_s=60)
        assert sent.returncode == 0, sent.stderr
        receiver.wait(timeout=30)
    record = read_json(path)  # strict: NaN or Infinity would be refused
    target = f"{record['addresses']['b']}:5001"
    acked = [c["bytes_acked"] for s in record["samples"] for c in s["connections"]
             if c["host"] == "a" and c["peer"] == target]
    assert record["errors"] == [] and len(acked) >= 3
    assert acked == sorted(acked) and acked[-1] >= 4 << 20  # all 4 MiB acknowledged before the close
    assert {c["send_buffer_bytes"] for s in record["samples"] for c in s["connections"]
            if c["host"] == "a" and c["peer"] == target} == {TCP_SEND_BUFFER_BYTES}
    port = [next(q for q in s["ports"] if (q["node"], q["peer"]) == ("a", "s")) for s in record["samples"]]
    assert set(port[0]["classes"]) == {"acks", "other", "b"}  # htb: a class per peer of a host
    to_b = [q["classes"]["b"]["sent_bytes"] for q in port]
    assert to_b == sorted(to_b) and to_b[-1] >= 4 << 20 and max(q["backlog_bytes"] for q in port) > 0
    with pytest.raises(UserError, match="interval: between 0.05 and 60 s"), sampling_tcp(cluster, tmp_path / "x.json", 0.001):
        pass
    assert not (tmp_path / "x.json").exists()


_SENDER_THEN_WAIT = """
import socket, sys, time
s = socket.socket(); s.settimeout(30); s.connect((sys.argv[1], 5001))
s.sendall(b"x" * (4 << 20)); time.sleep(0.5)  # the connection stays open while the last ACKs are sampled
s.close()
"""


# ---------------------------------------------------------------------------------------------------------
# the validation loop


def test_small_validation_predicts_time_and_ranking(netns, tmp_path):
    """ring, tree and a parameter server on a dedicated host (3 workers + 1 server) at 4 MiB on the two-level
    tree (500 Mbit/s hosts, 300 Mbit/s uplinks), with the progress reported run by run."""
    from firerun.validate import validate
    from firerun.validate_report import format_table, plot_timelines

    runs = []
    report = validate(TOPOLOGIES / "two-level-4.yaml", ["ring", "tree", "ps:servers=1,colocated=false"], [4 << 20],
                      repeat=3, out_dir=tmp_path / "out", state_dir=tmp_path, timeout_s=240,
                      on_run=lambda spec, n: runs.append(spec))
    print(format_table(report))
    assert runs == ["ring"] * 4 + ["tree"] * 4 + ["ps:servers=1,colocated=false"] * 4
    assert [(c.ranks, c.workers) for c in report.cases] == [(4, 4), (4, 4), (4, 3)]
    assert all(abs(c.link_bytes_error) <= 0.03 for c in report.cases), format_table(report)
    plot_timelines(report, tmp_path / "timelines.png")
    assert (tmp_path / "timelines.png").stat().st_size > 10_000
    for c in report.cases:
        assert Path(c.measured_trace).exists() and Path(c.predicted_trace).exists()
    if report.warnings:
        pytest.skip(f"timings not trustworthy: {'; '.join(report.warnings)}")
    errors = sorted(abs(c.error) for c in report.cases)
    assert errors[len(errors) // 2] <= 0.05, format_table(report)
    assert errors[-1] <= 0.10, format_table(report)
    assert report.ranking_match, format_table(report)


def test_mpi_backend_runs_through_the_emulated_links(netns, tmp_path):
    """mpiexec across the namespaces (ssh stand-in, -iface, shared memory off): the bytes cross the shapers."""
    pytest.importorskip("mpi4py", reason="mpi4py (and the mpich wheel) not installed")
    from firerun.validate import validate
    from firerun.validate_report import format_table

    report = validate(TOPOLOGIES / "two-level-4.yaml", ["ring", "ps"], [4 << 20], repeat=2, backend="mpi",
                      out_dir=tmp_path / "out", state_dir=tmp_path, timeout_s=240)
    print(format_table(report))
    assert all(abs(c.link_bytes_error) <= 0.03 for c in report.cases), format_table(report)  # no shm bypass
    if report.warnings:
        pytest.skip(f"timings not trustworthy: {'; '.join(report.warnings)}")
    assert all(abs(c.error) <= 0.10 for c in report.cases), format_table(report)

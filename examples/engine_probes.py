"""The measurements behind docs/engine.md's transport mechanisms, on emulated clusters (needs root).

    sudo .venv/bin/python examples/engine_probes.py            # all probes, ~4 min on an idle 2-core machine
    sudo .venv/bin/python examples/engine_probes.py burst p2p  # some of them

burst   one TCP message at a time from h0 to h1 (1 Gbit/s) and to a 200 Mbit/s host, after 100 ms idle:
        one-way time by size (raw sockets): the shapers' token bucket, and the rate at which it empties.
p2p     one message at a time rank 0 -> 1 (1 Gbit/s pair) with gloo and with MPI: one-way time and when the
        send returns, by size: socket buffering (gloo), MPI's eager/rendezvous switch and handshake cost.
ring    a raw-socket ring of 4 MiB messages on two-level-4 with tbf and htb shaping, with BBR and with
        Reno congestion control: median step time (the model says 116.95 ms).
join    h1 sends 8 MiB to h0 through a 250 Mbit/s switch port (a FIFO); h2's 4 MiB to h0 joins with 1.48 MB
        of it left (htb, raw sockets, fresh connections and connections warmed by a 4 MiB transfer first):
        when the first flow ends, against an equal share from the join and against keeping the port.

Prints one table per probe and writes its results into examples/engine_probes.json (the other probes' results
stay). The machine's load average is printed with every table: other processes' CPU use slows the ranks, so run
it on a quiet machine.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PORT = 5301
BURST_SIZES = [16 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 4 << 20]
P2P_SIZES = [4, 64 << 10, 256 << 10, 1 << 20, 2 << 20, 3 << 20, 4 << 20, 8 << 20, 16 << 20]
REPEAT = 7
JOIN_BYTES = (8 << 20, 4 << 20)  # the established flow, the joining one
JOIN_LEFT_BYTES = 1.48e6  # of the established flow when the other joins (halving-doubling on chain3-mixed)
JOIN_RATE_bps = 250e6


def _graph(rates_bps: list[float], name: str) -> nx.Graph:
    """Hosts h0.. on one switch, host i's link at rates_bps[i]."""
    G = nx.Graph(name=name)
    G.add_node("s0", role="switch")
    for i, rate in enumerate(rates_bps):
        G.add_node(f"h{i}", role="host")
        G.add_edge(f"h{i}", "s0", bandwidth_Bps=rate / 8, latency_s=0.0, efficiency=1.0)
    G.graph["endpoints"] = [f"h{i}" for i in range(len(rates_bps))]
    return G


# --------------------------------------------------------------------------------------------------------
# workers (run inside the namespaces)


def _recv_exactly(conn: socket.socket, view: memoryview, n: int) -> None:
    got = 0
    while got < n:
        got += conn.recv_into(view[got:n], n - got)


def _connect(addr: str) -> socket.socket:
    """A TCP connection to ``addr``'s probe port (retried for up to 10 s while the peer starts), Nagle off."""
    conn = socket.socket()
    for _ in range(200):
        try:
            conn.connect((addr, PORT))
            break
        except OSError:
            time.sleep(0.05)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _burst_server(n_msgs: int, out: str) -> None:
    srv = socket.create_server(("0.0.0.0", PORT))
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = memoryview(bytearray(max(BURST_SIZES)))
    ends = []
    for _ in range(n_msgs):
        header = bytearray(8)
        _recv_exactly(conn, memoryview(header), 8)
        _recv_exactly(conn, buf, struct.unpack("<Q", header)[0])
        ends.append(time.monotonic())
        conn.sendall(b"k")
    Path(out).write_text(json.dumps(ends))


def _burst_client(addr: str, sizes: list[int], out: str) -> None:
    conn = _connect(addr)
    starts = []
    for n in sizes:
        time.sleep(0.1)  # idle: the buckets refill
        data = struct.pack("<Q", n) + bytes(n)
        starts.append(time.monotonic())
        conn.sendall(data)
        conn.recv(1)
    Path(out).write_text(json.dumps(starts))


def _join_server(out: str) -> None:
    """Two connections, each sending length-prefixed messages until it closes: when each one's last ended."""
    srv = socket.create_server(("0.0.0.0", PORT))
    ends: dict[str, float] = {}

    def serve(conn: socket.socket) -> None:
        buf = memoryview(bytearray(max(JOIN_BYTES)))
        name = conn.recv(1).decode()
        header = bytearray(8)
        while conn.recv_into(header, 8, socket.MSG_WAITALL) == 8:
            _recv_exactly(conn, buf, struct.unpack("<Q", header)[0])
            ends[name] = time.monotonic()
            conn.sendall(b"k")

    threads = [threading.Thread(target=serve, args=(srv.accept()[0],)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(ends))


def _join_client(name: str, addr: str, nbytes: int, warm_nbytes: int, warm_at: float, start_at: float,
                 out: str) -> None:
    conn = _connect(addr)
    conn.sendall(name.encode())
    for n, at in ((warm_nbytes, warm_at), (nbytes, start_at)):
        if n:
            while time.monotonic() < at:
                time.sleep(0.0002)
            started = time.monotonic()
            conn.sendall(struct.pack("<Q", n) + bytes(n))
            conn.recv(1)
    conn.close()
    Path(out).write_text(json.dumps(started))


def _ring_rank(r: int, p: int, addrs: list[str], nbytes: int, steps: int, out: str) -> None:
    srv = socket.create_server(("0.0.0.0", PORT))
    nxt = _connect(addrs[(r + 1) % p])
    prv, _ = srv.accept()
    prv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data, buf = bytes(nbytes), memoryview(bytearray(nbytes))
    ends = []
    time.sleep(0.5)
    for _ in range(steps):
        sender = threading.Thread(target=nxt.sendall, args=(data,))
        sender.start()
        _recv_exactly(prv, buf, nbytes)
        sender.join()
        ends.append(time.monotonic())
    Path(out).write_text(json.dumps(ends))


def _p2p_worker(backend: str, out: str) -> None:
    import numpy as np

    if backend == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
        barrier = comm.Barrier
        send, recv = (lambda a: comm.Isend(a, 1, 7)), (lambda a: comm.Irecv(a, 0, 7))
        wait = lambda req: req.Wait()  # noqa: E731
    else:
        import datetime as dt

        import torch
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
        rank = dist.get_rank()
        barrier = dist.barrier
        send = lambda a: dist.isend(torch.from_numpy(a), 1)  # noqa: E731
        recv = lambda a: dist.irecv(torch.from_numpy(a), 0)  # noqa: E731
        wait = lambda work: work.wait()  # noqa: E731
    times: dict[int, list] = {}
    for n in P2P_SIZES:
        buf = np.zeros(max(n // 4, 1), np.float32)
        for i in range(REPEAT + 1):  # the first is a warm-up
            barrier()
            request = recv(buf) if rank == 1 else None
            barrier()
            time.sleep(0.05)
            if rank == 0:
                t0 = time.monotonic()
                wait(send(buf))
                record = (t0, time.monotonic())
            else:
                wait(request)
                record = time.monotonic()
            if i:
                times.setdefault(n, []).append(record)
    Path(f"{out}.{rank}").write_text(json.dumps(times))
    if backend != "mpi":
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------
# probes (run as root in the root namespace)


def _cluster(topology, shaper: str = "htb"):
    sys.path.insert(0, str(ROOT))
    from firerun.emulate import EmulatedCluster

    return EmulatedCluster(topology, shaper=shaper)


def _me(*args) -> list[str]:
    return [sys.executable, __file__, "worker", *map(str, args)]


def probe_burst(tmp: Path) -> dict:
    sizes = [n for n in BURST_SIZES for _ in range(REPEAT)]
    out = {}
    with _cluster(_graph([1e9, 1e9, 200e6], "probe-burst")) as cl:
        for dst in (1, 2):
            server = cl.run_in(dst, _me("burst-server", len(sizes), tmp / "ends.json"))
            time.sleep(0.3)
            client = cl.run_in(0, _me("burst-client", cl.address(dst), json.dumps(sizes), tmp / "starts.json"))
            client.wait(timeout=300)
            server.wait(timeout=30)
            starts, ends = json.loads((tmp / "starts.json").read_text()), json.loads((tmp / "ends.json").read_text())
            per: dict[int, list] = {}
            for n, a, b in zip(sizes, starts, ends):
                per.setdefault(n, []).append(b - a)
            out[f"h0->h{dst}"] = {n: statistics.median(v) for n, v in per.items()}
    return out


def probe_p2p(tmp: Path) -> dict:
    out = {}
    for backend in ("torch", "mpi"):
        with _cluster(_graph([1e9, 1e9], "probe-pair")) as cl:
            argv = _me("p2p", backend, tmp / "p2p")
            env = {"OMP_NUM_THREADS": "1"}
            if backend == "mpi":
                procs = [cl.run_in(0, cl.mpiexec_argv(argv, tmp), env)]
            else:
                env.update(MASTER_ADDR=cl.address(0), MASTER_PORT="29517", WORLD_SIZE="2", GLOO_SOCKET_IFNAME=cl.ifname)
                procs = [cl.run_in(r, argv, {**env, "RANK": str(r)}) for r in range(2)]
            for proc in procs:
                proc.wait(timeout=600)
        r0 = json.loads((tmp / "p2p.0").read_text())
        r1 = json.loads((tmp / "p2p.1").read_text())
        out[backend] = {n: {"one_way_s": statistics.median(b - a for (a, _), b in zip(r0[n], r1[n])),
                            "one_way_min_s": min(b - a for (a, _), b in zip(r0[n], r1[n])),
                            "send_returns_s": statistics.median(s - a for a, s in r0[n])} for n in r0}
    return out


def probe_ring(tmp: Path, steps: int = 30) -> dict:
    from firesim.topology import load_topology

    G = load_topology(ROOT / "examples" / "topologies" / "two-level-4.yaml")
    out = {}
    for cc in ("bbr", "reno"):
        for shaper in ("tbf", "htb"):
            with _cluster(G, shaper) as cl:
                p = len(cl.hosts)
                for i in range(p):  # reno is allowed in namespaces (cubic is not, on this kernel)
                    subprocess.run(["ip", "netns", "exec", cl.namespace(i), "sysctl", "-qw",
                                    f"net.ipv4.tcp_congestion_control={cc}"], check=True)
                addrs = json.dumps([cl.address(i) for i in range(p)])
                procs = [cl.run_in(i, _me("ring", i, p, addrs, 4 << 20, steps, tmp / f"ring{i}.json")) for i in range(p)]
                for proc in procs:
                    proc.wait(timeout=300)
            ends = [json.loads((tmp / f"ring{i}.json").read_text()) for i in range(p)]
            step_s = [max(e[k] for e in ends) - max(e[k - 1] for e in ends) for k in range(1, steps)]
            out[f"{cc} {shaper}"] = statistics.median(step_s)
    return out


def probe_join(tmp: Path, runs: int = 6) -> dict:
    established, joining = JOIN_BYTES
    goodput_Bps = JOIN_RATE_bps / 8 * 1448 / 1514
    join_s = (established - JOIN_LEFT_BYTES) / goodput_Bps
    out = {"equal share from the join": join_s + 2 * JOIN_LEFT_BYTES / goodput_Bps,
           "keeping the port": established / goodput_Bps}
    with _cluster(_graph([JOIN_RATE_bps, 2 * JOIN_RATE_bps, 2 * JOIN_RATE_bps], "probe-join")) as cl:
        for label, warm in (("fresh", 0), ("warm", 4 << 20)):
            ends = []
            for _ in range(runs):
                server = cl.run_in(0, _me("join-server", tmp / "join.json"))
                time.sleep(0.3)
                t0 = time.monotonic() + 1.5
                clients = [cl.run_in(h, _me("join-client", name, cl.address(0), n, warm, t0 - lead, t0 + delay,
                                            tmp / f"join-{name}.json"))
                           for h, name, n, lead, delay in ((1, "a", established, 0.9, 0.0),
                                                           (2, "b", joining, 0.6, join_s))]
                for proc in (*clients, server):
                    proc.wait(timeout=60)
                ends.append(json.loads((tmp / "join.json").read_text())["a"]
                            - json.loads((tmp / "join-a.json").read_text()))
            out[f"{label}: first flow ends (median)"] = statistics.median(ends)
            out[f"{label}: earliest"], out[f"{label}: latest"] = min(ends), max(ends)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        kind, args = argv[1], argv[2:]
        if kind == "burst-server":
            _burst_server(int(args[0]), args[1])
        elif kind == "burst-client":
            _burst_client(args[0], json.loads(args[1]), args[2])
        elif kind == "ring":
            _ring_rank(int(args[0]), int(args[1]), json.loads(args[2]), int(args[3]), int(args[4]), args[5])
        elif kind == "p2p":
            _p2p_worker(args[0], args[1])
        elif kind == "join-server":
            _join_server(args[0])
        elif kind == "join-client":
            _join_client(args[0], args[1], int(args[2]), int(args[3]), float(args[4]), float(args[5]), args[6])
        return 0
    if os.geteuid() != 0:
        print("engine_probes: needs root (network namespaces)", file=sys.stderr)
        return 2
    probes = {"burst": probe_burst, "p2p": probe_p2p, "ring": probe_ring, "join": probe_join}
    chosen = argv or list(probes)
    unknown = [c for c in chosen if c not in probes]
    if unknown:
        print(f"engine_probes: unknown probe {unknown[0]!r} (have {', '.join(probes)})", file=sys.stderr)
        return 2
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"engine-probes-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in chosen:
        load = os.getloadavg()[0]
        results[name] = {"load_before": load, "result": probes[name](tmp)}
        print(f"\n== {name} (load {load:.1f} before)")
        for key, value in results[name]["result"].items():
            if isinstance(value, dict):
                print(f"{key}:")
                for n, v in value.items():
                    shown = {k: f"{x * 1e3:.3f} ms" for k, x in v.items()} if isinstance(v, dict) else f"{v * 1e3:.3f} ms"
                    print(f"  {int(n):>9,d} B  {shown}")
            else:
                print(f"{key}: {value * 1e3:.2f} ms")
    path = ROOT / "examples" / "engine_probes.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}  # the probes not run this time stay
    path.write_text(json.dumps({**earlier, **results}, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

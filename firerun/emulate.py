"""An emulated cluster on one Linux machine, built from a topology file: namespaces, veths, bridges, tc shaping.

Every host is a network namespace with one interface ``eth0`` and an address in a private /24 (the addresses
exist only inside the namespaces: the root namespace sees nothing). Every switch is a namespace holding one
Linux bridge; a link is a veth pair created directly inside its two namespaces, so no interface ever appears
in the root namespace and no name can collide with anything outside. Hosts under a tree of switches share
one L2 segment: the bridges forward through each other, so a packet from a leaf to another leaf really
crosses leaf - spine - leaf and pays each hop's shaping.

Each direction of a link is its own resource, as in the model: a shaper sits on the egress of *both* veth
ends at the link rate. The token-bucket settings come from measurements on this kind of machine
(REFERENCE.md): burst >= 128 KB (smaller makes the shaper split GSO packets in software and the two cores
saturate), queue limit 4 MB, MTU 1500. The shaper counts Ethernet frames, so TCP goodput is rate x 1448/1514
(``TCP_GOODPUT_EFFICIENCY``).

The default shaper is ``htb``: one token bucket at the link rate (same burst, same 4 MB byte FIFO) whose
packets under 128 bytes (pure ACKs, small control messages) are sent before bulk data. With a plain ``tbf``
FIFO the ACKs of a flow wait behind up to 4 MB of another flow's data leaving the same port (a ring sends
both ways through every link), the sender's RTT grows to tens of ms and its 4 MB socket buffer caps what it
has in flight: a raw-socket ring of 4 MiB messages over the two-level tree ran 11 % below the link rate with
``tbf`` and within 0.3 % of it with ``htb`` (1 MiB messages: +1-2 % and 0.0 %). Real NICs (fq) and switches
(shallow buffers) do not make ACKs queue behind megabytes either; ``shaper="tbf"`` is kept for comparison.
With ``htb`` a host's port also has one class per peer, taking turns of 64 KiB, so what a host sends to two
peers at once shares its link per flow as Linux's default ``fq_codel`` does (this kernel has no fq, fq_codel,
sfq or drr); with one FIFO, 1 MiB written to one peer and then 1 MiB to another arrived at 8.4-8.8 ms and
16.9-17.4 ms over 1 Gbit/s, with the classes at 14.7-18.6 and 17.2-20.1 ms. Switch ports stay one FIFO, as a
switch's. Every host's TCP send buffer starts at its 4 MiB ceiling (``TCP_WMEM``), the size a busy connection
grows to, so a send's eager window is the same in the first run of a job as in its thousandth.

What cannot be emulated faithfully is refused with one line (``UserError``): more than 4 hosts or more than
~4 Gbit/s of host links (two cores cannot move more through veths and qdiscs), link latency (netem is not
in this kernel), cycles (plain bridges have no STP), multi-homed hosts, GPUs and routers.

Teardown always runs: the context manager tears down on exceptions, Ctrl-C, SIGTERM and SIGHUP, and every
name is written to a state file (``/run/firerun-emulate/<id>.json``) *before* it is created, so
``firerun emulate down <id|state file|topology>`` cleans up from another process even after a SIGKILL.
``down`` removes exactly the namespaces named in the state file (deleting a namespace deletes its veths).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import networkx as nx
import typer

from firesim.clikit import output_dir
from firesim.errors import UserError
from firesim.io import dumps, read_json, write_json_atomic

__all__ = [
    "EmulatedCluster",
    "MAX_HOSTS",
    "MAX_HOST_RATE_bps",
    "host_rate_bps",
    "SHAPER_BURST_BYTES",
    "STATE_DIR",
    "TCP_GOODPUT_EFFICIENCY",
    "check_emulable",
    "check_tcp_interval",
    "down_cluster",
    "parse_ss",
    "sampling_tcp",
    "emulate_app",
    "list_clusters",
]

# Token-bucket settings measured on this kind of machine (REFERENCE.md). tc's "kb" is 1024 bytes.
SHAPER_BURST_BYTES = 128 << 10
TBF_BURST = f"{SHAPER_BURST_BYTES}b"
QUEUE_LIMIT_BYTES = 4 << 20  # per port, in bytes (tc "limit 4mb")
FAIR_QUANTUM_BYTES = 64 << 10  # htb's round-robin turn between the flows of one port: one GSO packet
MTU_BYTES = 1500
# Every host's TCP send buffer starts at its ceiling (tcp_wmem: min, default, max), the size Linux's autotuning
# grows a busy connection's to and never shrinks it from. From the default start (16 KiB) it grew with each
# connection's congestion window, so the eager window depended on what the job had sent so far (``ss -tmi`` on
# chain3-mixed: h0 -> h1 69 KB, 1.59 MB after the calibration probes, 2.27 and 4.19 MB during the cases).
TCP_SEND_BUFFER_BYTES = 4 << 20
TCP_WMEM = f"4096 {TCP_SEND_BUFFER_BYTES} {TCP_SEND_BUFFER_BYTES}"
MIN_TCP_INTERVAL_s, MAX_TCP_SAMPLES = 0.05, 20_000  # sampling_tcp
TCP_SAMPLES_FORMAT = "firerun-tcp-samples/1"
# TCP payload per Ethernet frame that tbf counts: MSS 1448 (1500 - IP 20 - TCP 20 - timestamps 12) of 1514.
TCP_GOODPUT_EFFICIENCY = 1448 / 1514
# What two cores move through veths + bridges + shapers without the CPU becoming the bottleneck.
MAX_HOSTS = 4
MAX_HOST_RATE_bps = 4e9
MIN_RATE_bps = 10e6  # below this the 128 KB burst credit is a large part of every transfer
SUBNET = "10.77.0"  # /24, only ever inside this cluster's namespaces
HOST_IFNAME = "eth0"
BRIDGE = "br0"
STATE_DIR = Path("/run/firerun-emulate")
STATE_FORMAT = "firerun.emulate/1"
_CMD_TIMEOUT_s = 20.0


def _sh(argv: Sequence[str], *, check: bool = True, timeout_s: float = _CMD_TIMEOUT_s) -> subprocess.CompletedProcess:
    """Run one ip/tc command; a failure is a one-line error naming the command and what it printed."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"emulate: {' '.join(argv)}: no answer in {timeout_s:.0f} s") from None
    if check and done.returncode != 0:
        raise RuntimeError(f"emulate: {' '.join(argv)}: {(done.stderr or done.stdout).strip() or done.returncode}")
    return done


def _safe(name: Hashable) -> str:
    """A node name as a fragment of a namespace name (letters, digits, dash, underscore)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(name))[:24] or "n"


def _bits(bandwidth_Bps: float) -> int:
    return int(round(bandwidth_Bps * 8))


# --------------------------------------------------------------------------------------------------------
# what can be emulated


def _load(topology: str | os.PathLike | nx.Graph) -> tuple[nx.Graph, str]:
    if isinstance(topology, nx.Graph):
        return topology, ""
    from firesim.topology import load_topology

    path = Path(topology)
    return load_topology(path), str(path.resolve())


def host_rate_bps(G: nx.Graph) -> float:
    """The hosts' link rates added up: what the machine's cores must shape (``MAX_HOST_RATE_bps``)."""
    hosts = [n for n, r in G.nodes(data="role") if r == "host"]
    return sum(float(G.edges[e]["bandwidth_Bps"]) * 8 for h in hosts for e in G.edges(h))


def check_emulable(G: nx.Graph) -> None:
    """Raise a one-line ``UserError`` if this machine cannot emulate ``G`` faithfully (see module doc)."""
    name = G.graph.get("name", "topology")
    endpoints = list(G.graph.get("endpoints") or [])
    for node, role in G.nodes(data="role"):
        if role not in ("host", "switch"):
            raise UserError(f"emulate {name}: {role} {node!r}: the emulator builds hosts and switches only")
    hosts = [n for n, r in G.nodes(data="role") if r == "host"]
    if len(hosts) > MAX_HOSTS:
        raise UserError(f"emulate {name}: {len(hosts)} hosts; two cores emulate at most {MAX_HOSTS} faithfully")
    if sorted(map(str, endpoints)) != sorted(map(str, hosts)):
        raise UserError(f"emulate {name}: endpoints must be exactly the hosts")
    if not nx.is_connected(G) or G.number_of_edges() != G.number_of_nodes() - 1:
        raise UserError(f"emulate {name}: links form a cycle; bridges without STP need a tree")
    for h in hosts:
        if G.degree(h) != 1:
            raise UserError(f"emulate {name}: host {h!r} has {G.degree(h)} links; the emulator gives a host one NIC")
    for u, v, data in G.edges(data=True):
        rate_bps = float(data["bandwidth_Bps"]) * 8
        if data.get("latency_s", 0.0) > 0:
            raise UserError(f"emulate {name}: link {u}-{v} has latency {data['latency_s']:g} s; netem is not in "
                            "this kernel, so delay cannot be emulated (drop the latency)")
        if rate_bps < MIN_RATE_bps:
            raise UserError(f"emulate {name}: link {u}-{v} at {rate_bps / 1e6:g} Mbit/s; below "
                            f"{MIN_RATE_bps / 1e6:g} Mbit/s the tbf burst credit distorts every transfer")
    host_bps = host_rate_bps(G)
    if host_bps > MAX_HOST_RATE_bps * 1.001:
        raise UserError(f"emulate {name}: host links add up to {host_bps / 1e9:.3g} Gbit/s; two cores shape at "
                        f"most {MAX_HOST_RATE_bps / 1e9:g} Gbit/s faithfully (lower the rates)")


@dataclass(frozen=True)
class _Port:
    """One end of a link: the interface in ``ns`` whose egress carries the direction ``node -> peer``."""

    node: str
    peer: str
    ns: str
    ifname: str
    rate_bps: int


def _layout(G: nx.Graph, prefix: str) -> tuple[dict[str, str], dict[str, str], list[tuple[_Port, _Port]]]:
    """Namespace of every node, address of every host, and the two ports of every link."""
    ns: dict[str, str] = {}
    for i, node in enumerate(G.nodes):
        base = f"{prefix}-{_safe(node)}"
        ns[str(node)] = base if base not in ns.values() else f"{base}-{i}"
    hosts = [str(h) for h in G.graph["endpoints"]]
    addr = {h: f"{SUBNET}.{i + 1}" for i, h in enumerate(hosts)}
    index = {str(n): i for i, n in enumerate(G.nodes)}
    links = []

    def port(a: str, b: str, rate_bps: int) -> _Port:
        ifname = HOST_IFNAME if a in addr else f"p{index[b]}"
        return _Port(node=a, peer=b, ns=ns[a], ifname=ifname, rate_bps=rate_bps)

    for u, v, data in G.edges(data=True):
        u, v = str(u), str(v)
        rate = _bits(float(data["bandwidth_Bps"]))
        links.append((port(u, v, rate), port(v, u, rate)))
    return ns, addr, links


# hydra calls "<standin> [ssh options] HOST COMMAND..."; run COMMAND in HOST's namespace instead.
_SSH_STANDIN = """#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
host="$1"; shift
ns=$(awk -v h="$host" '$1 == h {{print $2}}' {table})
[ -n "$ns" ] || {{ echo "netns-ssh: $host is not a host of this emulated cluster" >&2; exit 255; }}
exec ip netns exec "$ns" sh -c "$*"
"""


# --------------------------------------------------------------------------------------------------------
# state files: what a cluster created, readable by any process


def _state_path(state_dir: Path, cluster_id: str) -> Path:
    return Path(state_dir) / f"{cluster_id}.json"


def list_clusters(state_dir: str | os.PathLike = STATE_DIR) -> list[dict]:
    """The state of every cluster recorded under ``state_dir`` (each with its ``state_file``)."""
    out = []
    for path in sorted(Path(state_dir).glob("*.json")) if Path(state_dir).is_dir() else []:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # not ours, or half written
            continue
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            out.append({**state, "state_file": str(path)})
    return out


def _shaping_commands(port: _Port, shaper: str, queue_limit_bytes: int,
                      peer_addresses: Sequence[str] = ()) -> list[list[str]]:
    """tc commands that shape the egress of one port at its rate.

    ``peer_addresses``: on a host's port, the other hosts' addresses. With htb each gets its own class, so
    the messages a host sends to several peers at once share its link per flow, as Linux's default qdisc
    (``fq_codel``) and a NIC's ``fq`` share it; switch ports (none given) stay one FIFO, as a switch's."""
    tc = ["tc", "-n", port.ns]
    dev = ["dev", port.ifname]
    rate = f"{port.rate_bps}bit"
    limit = str(int(queue_limit_bytes))
    if shaper == "tbf":
        return [[*tc, "qdisc", "replace", *dev, "root", "tbf", "rate", rate, "burst", TBF_BURST, "limit", limit]]
    # htb: the same token bucket at the link rate, but packets under 128 bytes (pure ACKs, small control
    # messages) go first instead of waiting behind up to queue_limit_bytes of data bound the same way. The
    # classes under the link's (1:1) guarantee a hundredth of it and borrow the rest from 1:1, whose bucket is
    # the link's (rate, burst); classes of one priority borrow in turns of one quantum (round robin).
    small = f"{max(port.rate_bps // 100, 1000)}bit"
    shaped = ["burst", TBF_BURST, "cburst", TBF_BURST]

    def leaf(minor: int, guaranteed: str, prio: int) -> list[list[str]]:
        return [[*tc, "class", "add", *dev, "parent", "1:1", "classid", f"1:{minor}", "htb", "rate", guaranteed,
                 "ceil", rate, "prio", str(prio), "quantum", str(FAIR_QUANTUM_BYTES), *shaped],
                [*tc, "qdisc", "add", *dev, "parent", f"1:{minor}", "handle", f"{minor}:", "bfifo", "limit", limit]]

    commands = [
        [*tc, "qdisc", "replace", *dev, "root", "handle", "1:", "htb", "default", "20", "r2q", "1000"],
        [*tc, "class", "add", *dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate, "ceil", rate, *shaped],
        *leaf(10, small, 0),
        *leaf(20, small if peer_addresses else rate, 1),
        [*tc, "filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "u16", "0x0000", "0xff80", "at", "2", "flowid", "1:10"],
    ]
    for i, address in enumerate(peer_addresses):
        commands += [*leaf(100 + i, small, 1),
                     [*tc, "filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "2", "u32",
                      "match", "ip", "dst", f"{address}/32", "flowid", f"1:{100 + i}"]]
    return commands


def _port_queues(namespace: str) -> dict[str, dict[str, Any]]:
    """Per interface of one namespace, its root shaper's (tbf or htb) bytes sent and bytes queued, and with htb
    the same per leaf class (``classes``, by class minor as ``_shaping_commands`` writes it: "10" small packets,
    "20" the rest, "100" + i the host's i-th peer)."""
    qdiscs = json.loads(_sh(["tc", "-s", "-j", "-n", namespace, "qdisc", "show"]).stdout or "[]")
    ports = {q.get("dev", ""): {"sent_bytes": int(q.get("bytes", 0)), "backlog_bytes": int(q.get("backlog", 0)),
                                "classes": {}}
             for q in qdiscs if q.get("root") and q.get("kind") in ("tbf", "htb")}
    for q in qdiscs:
        parent = str(q.get("parent", ""))
        if q.get("dev") in ports and parent.startswith("1:"):
            ports[q["dev"]]["classes"][parent[2:]] = {"sent_bytes": int(q.get("bytes", 0)),
                                                      "backlog_bytes": int(q.get("backlog", 0))}
    return ports


def _qdisc_bytes(namespace: str) -> dict[str, int]:
    """Bytes each interface's root shaper (tbf or htb) has sent, in one namespace."""
    return {dev: port["sent_bytes"] for dev, port in _port_queues(namespace).items()}


# tcp_info fields ``ss -tinmO`` prints as name:value, and the name each gets in a connection record
_TCP_INFO_FIELDS = {"cwnd": "cwnd_segments", "mss": "mss_bytes", "bytes_acked": "bytes_acked",
                    "bytes_received": "bytes_received", "bytes_retrans": "bytes_retransmitted",
                    "busy": "busy_ms", "rwnd_limited": "rwnd_limited_ms", "sndbuf_limited": "sndbuf_limited_ms",
                    "minrtt": "min_rtt_ms"}
_SS_NUMBER = r"([0-9.]+)"
TCP_RECORD_KEYS = ("local", "peer", "recv_queue_bytes", "send_queue_bytes", "send_buffer_bytes", "recv_buffer_bytes",
                   "congestion_control", "rtt_ms", *_TCP_INFO_FIELDS.values(), "pacing_rate_bps", "delivery_rate_bps")


def parse_ss(text: str) -> list[dict[str, Any]]:
    """Connections from ``ss -tinmHO state established`` (one per line): addresses, the bytes not yet
    acknowledged (Send-Q) and not yet read (Recv-Q), the send and receive buffers (``skmem`` tb, rb), the
    congestion control, its window and RTT, and the kernel's time counters of what limited the sender
    (``busy``, ``rwnd_limited``, ``sndbuf_limited``: send buffer and receive window; the rest of busy is the
    congestion window). A field the kernel did not print is None."""
    out = []
    for line in text.splitlines():
        head = line.split()
        if len(head) < 4 or not head[0].isdigit():
            continue
        rec: dict[str, Any] = {"local": head[2], "peer": head[3], "recv_queue_bytes": int(head[0]),
                               "send_queue_bytes": int(head[1])}
        if m := re.search(r"skmem:\(([^)]*)\)", line):
            mem = dict(re.findall(r"([a-z]+)(\d+)", m.group(1)))
            rec["send_buffer_bytes"], rec["recv_buffer_bytes"] = int(mem.get("tb", 0)), int(mem.get("rb", 0))
        if m := re.search(r"\)\s+([a-z_0-9]+)\s+wscale", line):
            rec["congestion_control"] = m.group(1)
        if m := re.search(rf"\srtt:{_SS_NUMBER}/", line):
            rec["rtt_ms"] = float(m.group(1))
        for name, key in _TCP_INFO_FIELDS.items():
            if m := re.search(rf"\s{name}:{_SS_NUMBER}", line):
                rec[key] = float(m.group(1)) if key.endswith("_ms") else int(m.group(1))
        for name in ("pacing_rate", "delivery_rate"):
            if m := re.search(rf"\s{name} {_SS_NUMBER}bps", line):
                rec[f"{name}_bps"] = float(m.group(1))
        out.append({k: rec.get(k) for k in TCP_RECORD_KEYS})
    return out


def _existing_namespaces() -> set[str]:
    done = _sh(["ip", "netns", "list"], check=False)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _kill_pids_in(namespace: str, grace_s: float = 2.0) -> None:
    """Stop the processes still running in one of *our* namespaces (a namespace with processes in it
    outlives ``ip netns del``): SIGTERM, then SIGKILL after ``grace_s``."""
    done = _sh(["ip", "netns", "pids", namespace], check=False)
    pids = [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if Path(f"/proc/{p}").exists()]
            time.sleep(0.05)
        pids = alive
        if not pids:
            return


def down_cluster(state_file: str | os.PathLike) -> list[str]:
    """Remove every namespace the state file records as created (and with them their veths and bridges),
    then the file. Returns the namespaces that were removed; nothing else is ever touched.
    """
    path = Path(state_file)
    if not path.exists():
        return []
    state = read_json(path, "state file")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"emulate down: {str(path)!r} is not a {STATE_FORMAT} state file")
    wanted = list(state.get("namespaces_created", []))
    prefix = state.get("id", "")
    existing = _existing_namespaces()
    removed = []
    for namespace in wanted:
        if not namespace.startswith(prefix + "-") or namespace not in existing:
            continue
        _kill_pids_in(namespace)
        _sh(["ip", "netns", "del", namespace], check=False)
        removed.append(namespace)
    left = _existing_namespaces() & set(wanted)
    if left:
        raise RuntimeError(f"emulate down: could not remove {', '.join(sorted(left))}; state kept in {path}")
    path.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------------------------------------
# the cluster


class EmulatedCluster:
    """One emulated cluster. Use as a context manager (``with EmulatedCluster("t.yaml") as c: ...``) so it
    always comes down, or call ``up()`` / ``down()`` yourself (``up`` alone leaves it running for the CLI).

    Hosts are addressed by node name or rank (rank i = ``G.graph["endpoints"][i]``).
    """

    def __init__(self, topology: str | os.PathLike | nx.Graph, *, state_dir: str | os.PathLike = STATE_DIR,
                 cluster_id: str | None = None, shaper: str = "htb", queue_limit_bytes: int = QUEUE_LIMIT_BYTES):
        if shaper not in ("tbf", "htb"):
            raise UserError(f"shaper: 'tbf' or 'htb', got {shaper!r}")
        if not 64 << 10 <= queue_limit_bytes <= 64 << 20:
            raise UserError(f"queue_limit_bytes: between 64 KiB and 64 MiB, got {queue_limit_bytes}")
        self.shaper = shaper
        self.queue_limit_bytes = int(queue_limit_bytes)
        self.graph, self.topology_path = _load(topology)
        check_emulable(self.graph)
        self.id = cluster_id or f"fr{secrets.token_hex(3)}"
        if not re.fullmatch(r"[a-z][a-z0-9]{1,11}", self.id):
            raise UserError(f"cluster id: 2-12 lowercase letters and digits starting with a letter, got {self.id!r}")
        self.state_file = _state_path(Path(state_dir), self.id)
        self.namespaces, self.addresses, self.links = _layout(self.graph, self.id)
        self.hosts = [str(h) for h in self.graph.graph["endpoints"]]
        self._procs: list[subprocess.Popen] = []
        self._created: list[str] = []
        self._old_handlers: dict[int, Any] = {}
        self._is_up = False

    # ---- names -------------------------------------------------------------------------------------------
    def host(self, host: str | int) -> str:
        """The node name of a host given by name or rank."""
        if isinstance(host, int) and not isinstance(host, bool):
            if not 0 <= host < len(self.hosts):
                raise UserError(f"emulate: rank {host} outside 0..{len(self.hosts) - 1}")
            return self.hosts[host]
        if str(host) not in self.addresses:
            raise UserError(f"emulate: {host!r} is not a host of {self.graph.graph.get('name')!r}")
        return str(host)

    def namespace(self, host: str | int) -> str:
        return self.namespaces[self.host(host)]

    def address(self, host: str | int) -> str:
        return self.addresses[self.host(host)]

    def _peers(self, node: Hashable) -> list[str]:
        """A host's peers in the order of its port's htb classes (1:100, 1:101, ...); none for a switch."""
        return [h for h in self.addresses if h != node] if node in self.addresses else []

    @property
    def ifname(self) -> str:
        """The interface every host sends on (for GLOO_SOCKET_IFNAME and mpiexec -iface)."""
        return HOST_IFNAME

    # ---- state -------------------------------------------------------------------------------------------
    def _write_state(self) -> None:
        """Record the plan and the namespaces created so far (``down`` removes only those)."""
        write_json_atomic(self.state_file, {
            "format": STATE_FORMAT, "id": self.id, "topology": self.graph.graph.get("name", ""),
            "topology_path": self.topology_path, "shaper": self.shaper,
            "queue_limit_bytes": self.queue_limit_bytes, "creator_pid": os.getpid(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "namespaces": self.namespaces, "namespaces_created": self._created, "addresses": self.addresses,
            "hosts": self.hosts,
            "ports": [{"node": p.node, "peer": p.peer, "ns": p.ns, "ifname": p.ifname, "rate_bps": p.rate_bps}
                      for pair in self.links for p in pair],
        })

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def up(self) -> EmulatedCluster:
        """Create namespaces, bridges, veths, addresses and shaping. On any failure, removes what it made."""
        if os.geteuid() != 0:
            raise UserError("emulate: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise UserError(f"emulate: {tool!r} (iproute2) is not installed")
        if self._is_up:
            return self
        self._created = []
        self._write_state()  # before anything exists: a crash from here on leaves a file `down` can act on
        self._is_up = True
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for node, namespace in self.namespaces.items():
            _sh(["ip", "netns", "add", namespace])  # fails if the name exists: never adopt a foreign one
            self._created.append(namespace)
            self._write_state()
            # No IPv6 chatter (router solicitations) in the byte counters. TCP keeps the machine's congestion
            # control (bbr here: with the htb shaper it fills a link to within 1 %, measured on an idle
            # machine); its send buffer starts where a busy connection ends up (TCP_SEND_BUFFER_BYTES).
            _sh(["ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1", f"net.ipv4.tcp_wmem={TCP_WMEM}"])
            _sh(["ip", "-n", namespace, "link", "set", "lo", "up"])
            if self.graph.nodes[node]["role"] == "switch":
                _sh(["ip", "-n", namespace, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
                     "forward_delay", "0"])
                _sh(["ip", "-n", namespace, "link", "set", BRIDGE, "up"])
        for a, b in self.links:
            _sh(["ip", "link", "add", a.ifname, "netns", a.ns, "type", "veth", "peer", "name", b.ifname,
                 "netns", b.ns])
            for port in (a, b):
                _sh(["ip", "-n", port.ns, "link", "set", port.ifname, "mtu", str(MTU_BYTES)])
                peers = [self.addresses[h] for h in self._peers(port.node)]
                for argv in _shaping_commands(port, self.shaper, self.queue_limit_bytes, peers):
                    _sh(argv)
                if port.node not in self.addresses:
                    _sh(["ip", "-n", port.ns, "link", "set", port.ifname, "master", BRIDGE])
                else:
                    _sh(["ip", "-n", port.ns, "addr", "add", f"{self.addresses[port.node]}/24", "dev", port.ifname])
                _sh(["ip", "-n", port.ns, "link", "set", port.ifname, "up"])
        self._wait_links_up()

    def _wait_links_up(self, timeout_s: float = 10.0) -> None:
        """Wait until every port reports carrier (veths and bridge ports come up asynchronously)."""
        deadline = time.monotonic() + timeout_s
        want = {(p.ns, p.ifname) for pair in self.links for p in pair}
        while True:
            up = set()
            for namespace in {ns for ns, _ in want}:
                done = _sh(["ip", "-j", "-n", namespace, "link", "show"], check=False)
                up |= {(namespace, i["ifname"]) for i in json.loads(done.stdout or "[]")
                       if "LOWER_UP" in i.get("flags", []) and i.get("operstate") in ("UP", "UNKNOWN")}
            missing = want - up
            if not missing:
                return
            if time.monotonic() > deadline:
                ns, ifname = sorted(missing)[0]
                raise RuntimeError(f"emulate: {ifname} in {ns} still down after {timeout_s:g} s")
            time.sleep(0.05)

    def down(self) -> None:
        """Stop processes started here, then remove every namespace this cluster created (and the state file).

        Ctrl-C, SIGTERM and SIGHUP are held back while it runs (and delivered after), so a second Ctrl-C
        cannot leave half a cluster behind.
        """
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        on_main = threading.current_thread() is threading.main_thread()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held) if on_main else None
        try:
            self._down()
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _down(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in self._procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        if self._is_up or self.state_file.exists():
            down_cluster(self.state_file)
        self._is_up = False

    def status(self) -> dict:
        """Which of this cluster's namespaces exist, the host addresses and the wire bytes per directed link."""
        existing = _existing_namespaces()
        alive = {node: ns in existing for node, ns in self.namespaces.items()}
        counters = self.link_bytes() if all(alive.values()) else {}
        return {"id": self.id, "topology": self.graph.graph.get("name", ""), "state_file": str(self.state_file),
                "up": all(alive.values()), "namespaces": self.namespaces, "alive": alive,
                "addresses": self.addresses,
                "links": [{"from": u, "to": v, "rate_bps": self._rate(u, v), "wire_bytes": n}
                          for (u, v), n in counters.items()]}

    def _rate(self, u: str, v: str) -> int:
        return _bits(float(self.graph.edges[u, v]["bandwidth_Bps"]))

    # ---- signals: SIGTERM / SIGHUP unwind through __exit__ like Ctrl-C does ----------------------------------
    def _on_signal(self, signum, frame) -> None:
        raise SystemExit(128 + signum)

    def __enter__(self) -> EmulatedCluster:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            return self.up()
        except BaseException:
            self._restore_signals()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.down()
        finally:
            self._restore_signals()

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    # ---- running things inside -----------------------------------------------------------------------------
    def mpiexec_argv(self, argv: Sequence[str], workdir: str | os.PathLike, mpiexec: str | None = None) -> list[str]:
        """An MPICH (hydra) command line that starts one rank of ``argv`` per host; run it in host 0.

        Hydra reaches the other hosts through an ssh stand-in written to ``workdir`` that maps each host
        address to its namespace and runs the proxy there with ``ip netns exec``. ``-iface`` binds MPI's TCP
        traffic to the emulated interface. All namespaces share this machine's hostname and /dev/shm, so MPICH
        would move data between them through shared memory and bypass the emulated links: ``MPIR_CVAR_NOLOCAL=1``
        turns off MPICH's own shared memory and ``UCX_TLS=tcp,self`` UCX's (the mpich wheel's ch4:ucx
        netmod), on ``UCX_NET_DEVICES=eth0``.
        """
        import sys

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        table = workdir / f"{self.id}-hosts"
        table.write_text("".join(f"{self.addresses[h]} {self.namespaces[h]}\n" for h in self.hosts))
        standin = workdir / f"{self.id}-netns-ssh"
        standin.write_text(_SSH_STANDIN.format(table=table))
        standin.chmod(0o755)
        mpiexec = mpiexec or str(Path(sys.executable).parent / "mpiexec")
        return [mpiexec, "-launcher", "ssh", "-launcher-exec", str(standin),
                "-hosts", ",".join(self.addresses[h] for h in self.hosts), "-iface", HOST_IFNAME,
                "-n", str(len(self.hosts)), "-ppn", "1", "-genv", "MPIR_CVAR_NOLOCAL", "1",
                "-genv", "UCX_TLS", "tcp,self", "-genv", "UCX_NET_DEVICES", HOST_IFNAME, *map(str, argv)]

    def argv_in(self, host: str | int, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside the host's namespace."""
        return ["ip", "netns", "exec", self.namespace(host), *map(str, argv)]

    def run_in(self, host: str | int, argv: Sequence[str], env: Mapping[str, str] | None = None,
               **popen_kw: Any) -> subprocess.Popen:
        """Start ``argv`` in the host's namespace (environment = ours updated with ``env``); ``down`` stops it."""
        if not self._is_up:
            raise RuntimeError("emulate: the cluster is not up")
        proc = subprocess.Popen(self.argv_in(host, argv), env={**os.environ, **(env or {})}, **popen_kw)
        self._procs.append(proc)
        return proc

    def exec_in(self, host: str | int, argv: Sequence[str], env: Mapping[str, str] | None = None,
                timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``argv`` in the host's namespace to completion (killed after ``timeout_s``), capturing output."""
        proc = self.run_in(host, argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            raise RuntimeError(f"emulate: {' '.join(map(str, argv))} in {host}: timed out after {timeout_s:g} s") from None
        finally:
            self._procs.remove(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    # ---- counters ------------------------------------------------------------------------------------------
    def tcp_connections(self) -> list[dict[str, Any]]:
        """Every established TCP connection of every host, as the kernel has it now (``parse_ss``)."""
        return [{"host": h, **c} for h in self.hosts
                for c in parse_ss(_sh(["ip", "netns", "exec", self.namespace(h), "ss", "-tinmHO", "state",
                                       "established"]).stdout)]

    def port_queues(self) -> list[dict[str, Any]]:
        """Every directed link's shaper now: bytes sent and queued, and at a host's htb port the same per class
        (``acks``: packets under 128 bytes, ``other``, and one per peer host)."""
        by_ns = {ns: _port_queues(ns) for ns in sorted({p.ns for pair in self.links for p in pair})}
        out = []
        for pair in self.links:
            for port in pair:
                q = by_ns[port.ns].get(port.ifname, {"sent_bytes": 0, "backlog_bytes": 0, "classes": {}})
                names = {"10": "acks", "20": "other"} | {str(100 + i): str(h)
                                                         for i, h in enumerate(self._peers(port.node))}
                out.append({"node": str(port.node), "peer": str(port.peer), "sent_bytes": q["sent_bytes"],
                            "backlog_bytes": q["backlog_bytes"],
                            "classes": {names.get(minor, minor): c for minor, c in sorted(q["classes"].items())}})
        return out

    def link_bytes(self) -> dict[tuple[str, str], int]:
        """Wire bytes (Ethernet frames, as tbf counts them) sent so far on every directed link ``(u, v)``.

        Read from ``tc -s qdisc``: unlike the interface counters, the qdisc counts the headers of every
        segment of a GSO packet. Take two readings and subtract.
        """
        by_ns = {ns: _qdisc_bytes(ns) for ns in sorted({p.ns for pair in self.links for p in pair})}
        return {(p.node, p.peer): by_ns[p.ns].get(p.ifname, 0) for pair in self.links for p in pair}


def check_tcp_interval(interval_s: float) -> None:
    """``sampling_tcp``'s interval: ss in every namespace takes ~10 ms per host, so not faster than 0.05 s."""
    if not MIN_TCP_INTERVAL_s <= interval_s <= 60:
        raise UserError(f"tcp sampling interval: between {MIN_TCP_INTERVAL_s:g} and 60 s, got {interval_s:g}")


@contextmanager
def sampling_tcp(cluster: EmulatedCluster, path: str | os.PathLike, interval_s: float,
                 max_samples: int = MAX_TCP_SAMPLES) -> Iterator[list[dict]]:
    """Every host's TCP connections (``EmulatedCluster.tcp_connections``) and every link's queue
    (``port_queues``) every ``interval_s`` while the block runs, at most ``max_samples`` times, written to
    ``path`` as JSON at its end: each connection's window, RTT and buffers and each port's backlog over a job
    (docs/validation.md, causes 3, 6 and 7). A sample runs ``ss`` and ``tc`` in every namespace: on two cores,
    0.2 s apart took about a fifth of the machine, so the job meanwhile runs slower."""
    check_tcp_interval(interval_s)
    samples: list[dict] = []
    errors: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set() and len(samples) < max_samples:
            try:
                samples.append({"t_unix_s": time.time(), "connections": cluster.tcp_connections(),
                                "ports": cluster.port_queues()})
            except RuntimeError as e:  # a namespace going away under us: keep what we have
                errors.append(str(e))
                return
            stop.wait(interval_s)

    thread = threading.Thread(target=sample, name="tcp-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)
        write_json_atomic(path, {"format": TCP_SAMPLES_FORMAT, "topology": cluster.graph.graph.get("name", ""),
                                 "interval_s": interval_s, "addresses": cluster.addresses, "errors": errors,
                                 "samples": samples})


# --------------------------------------------------------------------------------------------------------
# CLI: firerun emulate up | down | status

emulate_app = typer.Typer(no_args_is_help=True, help="Emulated clusters: network namespaces shaped with tc.")
def _state_dir(value) -> Path:
    """The state directory to read: the default may not exist yet (no cluster was ever built); one that is
    given must be a directory."""
    path = Path(value)
    if path != STATE_DIR and not path.is_dir():
        raise typer.BadParameter(f"{str(path)!r} is not a directory")
    return path


StateDirOpt = Annotated[Path, typer.Option("--state-dir", parser=_state_dir,
                                           help="Where clusters record what they created.")]


def _targets(target: str, state_dir: Path) -> list[dict]:
    """Clusters named by a state file, a cluster id or the topology file they were built from."""
    path = Path(target)
    clusters = list_clusters(state_dir)
    if path.suffix == ".json" and path.exists():
        state = read_json(path, "state file")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise UserError(f"state file {str(path)!r}: not a {STATE_FORMAT} file")
        return [{**state, "state_file": str(path)}]
    resolved = str(path.resolve()) if path.exists() else None
    return [c for c in clusters if c.get("id") == target or (resolved and c.get("topology_path") == resolved)]


@emulate_app.command("up")
def up_cmd(topology: Annotated[Path, typer.Argument(help="Topology YAML.")],
           state_dir: Annotated[Path, typer.Option("--state-dir", parser=output_dir,
                                                   help="Where clusters record what they created.")] = STATE_DIR,
           shaper: Annotated[Literal["htb", "tbf"], typer.Option(help="htb (ACKs first, a class per peer at hosts) or tbf (one FIFO).")] = "htb",
           ) -> None:
    """Build the cluster and leave it running; prints its id, namespaces and addresses."""
    cluster = EmulatedCluster(topology, state_dir=state_dir, shaper=shaper)
    cluster.up()
    typer.echo(f"cluster {cluster.id} up ({cluster.graph.graph.get('name')}); state: {cluster.state_file}")
    for h in cluster.hosts:
        typer.echo(f"  {h}: ip netns exec {cluster.namespace(h)} ...   {cluster.address(h)} on {HOST_IFNAME}")
    typer.echo(f"take it down with: firerun emulate down {cluster.id}")


@emulate_app.command("down")
def down_cmd(target: Annotated[str, typer.Argument(help="Cluster id, state file, or topology YAML (all its clusters).")],
             state_dir: StateDirOpt = STATE_DIR) -> None:
    """Remove a cluster: exactly the namespaces its state file names."""
    found = _targets(target, state_dir)
    if not found:
        raise UserError(f"emulate down: no cluster {target!r} under {state_dir}")
    for cluster in found:
        removed = down_cluster(cluster["state_file"])
        typer.echo(f"cluster {cluster['id']} down ({len(removed)} namespaces removed)")


@emulate_app.command("status")
def status_cmd(target: Annotated[str | None, typer.Argument(help="Cluster id, state file or topology; all if omitted.")] = None,
               state_dir: StateDirOpt = STATE_DIR,
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Clusters recorded on this machine: alive namespaces and wire bytes per directed link."""
    clusters = _targets(target, state_dir) if target is not None else list_clusters(state_dir)
    if target is not None and not clusters:
        raise UserError(f"emulate status: no cluster {target!r} under {str(state_dir)!r}")
    existing = _existing_namespaces()
    records = []
    for c in clusters:
        alive = {node: ns in existing for node, ns in c.get("namespaces", {}).items()}
        links = []
        if alive and all(alive.values()):
            by_ns: dict[str, dict[str, int]] = {}
            for port in c.get("ports", []):
                if port["ns"] not in by_ns:
                    by_ns[port["ns"]] = _qdisc_bytes(port["ns"])
                links.append({"from": port["node"], "to": port["peer"], "rate_bps": port["rate_bps"],
                              "wire_bytes": by_ns[port["ns"]].get(port["ifname"], 0)})
        records.append({"id": c["id"], "topology": c.get("topology"), "state_file": c["state_file"],
                        "up": bool(alive) and all(alive.values()), "alive": alive,
                        "addresses": c.get("addresses", {}), "links": links})
    if as_json:
        typer.echo(dumps(records, indent=2))
        return
    if not records:
        typer.echo("no emulated clusters")
    for r in records:
        state = "up" if r["up"] else f"partial ({sum(r['alive'].values())}/{len(r['alive'])} namespaces)"
        typer.echo(f"{r['id']} {r['topology']}: {state}  [{r['state_file']}]")
        for host, address in r["addresses"].items():
            typer.echo(f"  {host} {address}")
        for link in r["links"]:
            typer.echo(f"  {link['from']:>6} -> {link['to']:<6} {link['rate_bps'] / 1e6:8.0f} Mbit/s "
                       f"{link['wire_bytes']:>14,d} B")

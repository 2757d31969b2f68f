"""Who is really lost when a collective fails: the job's liveness side channel, and its rendezvous store.

A rank that times out waiting for a peer cannot tell a dead peer from a healthy one that is itself stuck: in
a ring with rank 3 dead, rank 2 waits for rank 1, which waits for rank 0, which waits for rank 3. Blaming the
peer one waits for names the wrong rank (and a peer that closes its connections on the way out looks "lost"
to its neighbours). So the ranks keep a board in the job's rendezvous TCPStore:

* at start every rank registers its host and pid (``proc/<rank>``);
* a rank that sees a failure (a broken connection, a timeout) publishes what it was waiting for and raises
  the alarm; every live rank answers at once from a watcher thread, which does not depend on its main thread,
  with what it is waiting for (``state/<rank>``);
* a rank that does not answer is the lost or hung one. On our host its process state tells which (exited,
  stopped); elsewhere the error its neighbours saw does (connection closed, or silence). When every rank
  answers, a rank alive but waiting for nobody and stuck is the hung one; a cycle of waits is a deadlock;
* the first rank to raise the alarm publishes the verdict (compare-and-set: one verdict per job), and every
  rank reports that root cause beside what it was itself waiting for, within ~``answer_s`` of the failure.

TCPStore calls to a store host that is stopped block forever whatever their timeout, so every call made while
handling a failure runs in a helper thread with a deadline of our own.

The store also keeps jobs apart: its keys live under the job's run id, and the first key written
(``firerun/owner``) is that run id, so a job given another job's MASTER_PORT fails in one line instead of
joining it. The store host binds the listening socket itself: to MASTER_ADDR when it is an IP address (local
runs: loopback only), otherwise to every interface as torch does.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import errno
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from firerun.errors import ExecError
from firesim.errors import UserError

RUN_ID_ENV = "FIRERUN_RUN_ID"
OWNER_KEY = "firerun/owner"
WATCH_WAIT = dt.timedelta(days=7)  # the watcher blocks until woken; "bye" wakes it at the end
LEAVE_WAIT_S = 10.0  # the store host waits at most this long for every rank to leave before closing the store

Cause = Literal["lost", "hung", "deadlock", "unknown"]


def answer_window_s(timeout_s: float) -> float:
    """How long a live rank gets to answer the alarm: its watcher answers in milliseconds, so this only has
    to outlast a loaded machine's scheduling delays, and stay well inside the op timeout."""
    return min(3.0, max(1.0, timeout_s / 4))


def run_id(environ=None) -> str | None:
    """The job's identity, shared by all its ranks: ours, torchrun's (``--rdzv-id``) or Slurm's job step."""
    env = os.environ if environ is None else environ
    if env.get(RUN_ID_ENV):
        return env[RUN_ID_ENV]
    if env.get("TORCHELASTIC_RUN_ID", "none") not in ("", "none"):
        return env["TORCHELASTIC_RUN_ID"]
    if env.get("SLURM_JOB_ID"):
        return f"slurm-{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', '0')}"
    return None


def host_key() -> str:
    """Processes with the same key see each other's pids: same kernel (boot id) and pid namespace."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return f"{socket.gethostname()}/?"


def process_state(pid: int) -> Literal["exited", "stopped", "running", "unknown"]:
    """A local process's state from /proc: a zombie has exited too (its launcher has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "exited"
    except (OSError, IndexError):
        return "unknown"
    return {"Z": "exited", "X": "exited", "T": "stopped", "t": "stopped"}.get(state, "running")


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Wait:
    """What a rank is blocked on: the peers it waits for (none: it waits for nobody), a phrase for messages
    ("while waiting for reduce chunk 3 from rank 1 (op 7 of 12)"), how long since its last progress, and what
    it saw go wrong ("closed": a broken connection, "timeout", or None)."""

    peers: tuple[int, ...]
    what: str
    idle_s: float = 0.0
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: bytes | str) -> Wait:
        d = json.loads(text)
        return cls(peers=tuple(d["peers"]), what=d["what"], idle_s=d["idle_s"], error=d["error"])


@dataclass(frozen=True)
class Verdict:
    """The root cause of a failed job: the ranks at fault, and why (one phrase per rank)."""

    culprits: tuple[int, ...]
    cause: Cause
    phrase: str  # "lost rank 3 (its process exited)", "rank 3 hung (its process is stopped)", ...

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: bytes | str) -> Verdict:
        d = json.loads(text)
        return cls(culprits=tuple(d["culprits"]), cause=d["cause"], phrase=d["phrase"])


def ranks_phrase(ranks) -> str:
    ranks = sorted(ranks)
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


# What is known of a rank that did not answer: its process state when it runs on this host ("running": alive
# but its watcher cannot answer, e.g. a C call holding the GIL), else "silent" and a phrase.
Silence = tuple[Literal["exited", "stopped", "running", "silent"], str]


def judge(rank: int, size: int, timeout_s: float, answers: dict[int, Wait], silent: dict[int, Silence],
          start: tuple[int, ...]) -> Verdict:
    """The root cause from a snapshot of the board (pure: unit-tested on made-up snapshots).

    ``answers``: the ranks that answered the alarm and what each waits for. ``silent``: the ranks that did not
    answer (and have not left the job), with what is known of each (``Silence``). ``start``: the peers the
    reporting ``rank`` waits for.
    """
    if silent:  # a live rank always answers (its watcher does not need its main thread)
        closed = {q for w in answers.values() if w.error == "closed" for q in w.peers}
        lost, hung = [], []
        for q in sorted(silent):
            state, why = silent[q]
            if state == "exited":
                lost.append(f"lost rank {q} (its process exited)")
            elif state == "stopped":
                hung.append(f"rank {q} hung (its process is stopped)")
            elif state == "running":
                hung.append(f"rank {q} hung (its process runs but {why})")
            elif q in closed:
                lost.append(f"lost rank {q} (connection closed; {why})")
            else:
                hung.append(f"rank {q} hung or lost ({why})")
        return Verdict(tuple(sorted(silent)), "lost" if lost else "hung", "; ".join(lost + hung))
    # Everyone answered: a rank reachable through the waits that waits for nobody and has been stuck about as
    # long as the timeout hangs (busy in Python, a long compute, a bug) ...
    seen: list[int] = []
    frontier = [q for q in start if q != rank]
    while frontier:
        q = frontier.pop(0)
        if q not in seen and q in answers:
            seen.append(q)
            frontier += answers[q].peers
    stuck = [q for q in seen if not answers[q].peers and answers[q].idle_s >= timeout_s / 2]
    if stuck:
        q = stuck[0]
        w = answers[q]
        return Verdict((q,), "hung", f"rank {q} hung (alive, no progress for {w.idle_s:.1f} s {w.what})")
    # ... else point-to-point waits that come back on themselves are a deadlock (the ranks disagree on the plan).
    path: list[int] = []
    q = start[0] if len(start) == 1 else -1
    while q in answers and q not in path and len(answers[q].peers) == 1:
        path.append(q)
        q = answers[q].peers[0]
    if q in path:
        cycle = sorted(path[path.index(q):])
        return Verdict(tuple(cycle), "deadlock", f"{ranks_phrase(cycle)} wait for each other (a deadlock: do all "
                                                 f"ranks run the same plan?)")
    return Verdict((), "unknown", "")


# ------------------------------------------------------------------------------------------------ store
def _bind_address(master_addr: str) -> str | None:
    """Where the store host listens: MASTER_ADDR itself when it is an IP address (or localhost), else None
    (every interface, as torch does: a host name may resolve differently here and on the other nodes)."""
    if master_addr == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(master_addr))
    except ValueError:
        return None


def listen_socket(master_addr: str, port: int) -> socket.socket | None:
    """The store host's listening socket, bound to MASTER_ADDR:MASTER_PORT; None to let torch bind it."""
    address = _bind_address(master_addr)
    if address is None:
        return None
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"MASTER_PORT: {address}:{port} is already in use (another job's rendezvous?); give "
                            f"each job its own port (`firerun run` picks a free one unless --master-port is set)"
                            ) from None
        if err.errno == errno.EADDRNOTAVAIL:
            return None  # not one of our addresses (a forwarded one): listen everywhere, as torch would
        raise UserError(f"MASTER_ADDR: cannot listen on {address}:{port}: {err.strerror}") from None
    sock.listen(1024)
    return sock


@dataclass
class Rendezvous:
    """The job's TCPStore connections: ``store`` for the process group (prefixed by the run id), ``board`` for
    the fault board, ``watch`` for the watcher's blocking wait (a blocked client serves nobody else)."""

    store: Any
    board: Any
    watch: Any
    hosted: bool  # this process hosts the store server
    agent: bool  # torchrun's agent hosts it (else rank 0 does)
    address: str


def connect(rank: int, size: int, master_addr: str, master_port: int, timeout_s: float, *,
            environ=None) -> Rendezvous:
    """Host (rank 0) or join the job's TCPStore at MASTER_ADDR:MASTER_PORT and claim it for this run.

    Under torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE=True) every rank is a client. Raises UserError
    when the port is taken or belongs to another job, or when another process already holds this rank.
    """
    import torch.distributed as dist

    env = os.environ if environ is None else environ
    timeout = dt.timedelta(seconds=timeout_s)
    address = f"{master_addr}:{master_port}"
    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    hosted = rank == 0 and not agent
    try:
        if hosted:
            sock = listen_socket(master_addr, master_port)
            fd = sock.detach() if sock is not None else None
            base = dist.TCPStore(master_addr, master_port, size, True, timeout, wait_for_workers=False,
                                 master_listen_fd=fd)
        else:
            base = dist.TCPStore(master_addr, master_port, size, False, timeout)
        board = base if hosted else dist.TCPStore(master_addr, master_port, size, False, timeout)
        watch = dist.TCPStore(master_addr, master_port, size, False, timeout)
    except UserError:
        raise
    except Exception as err:  # DistNetworkError: nothing answers there, or the address is taken
        text = str(err).split("\n")[0]
        if "EADDRINUSE" in text or "address already in use" in text:
            raise UserError(f"MASTER_PORT: {address} is already in use (another job's rendezvous?); give each "
                            f"job its own port") from None
        raise ExecError(f"rank {rank}: cannot reach the rendezvous store at {address} within {timeout_s:g} s "
                        f"({text.split('. ')[0]})", rank=rank, timed_out=True) from None
    run = run_id(env) or "anonymous"
    owner = base.compare_set(OWNER_KEY, "", run).decode()
    if owner != run:
        raise UserError(f"MASTER_PORT: the rendezvous at {address} belongs to another job (run {owner!r}, this is "
                        f"{run!r}); give each job its own port")
    prefix = f"firerun/{run}/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}/"  # torchrun restarts: a fresh board
    me = json.dumps({"host": host_key(), "name": socket.gethostname(), "pid": os.getpid()})
    board_store = dist.PrefixStore(prefix + "board/", board)
    holder = board_store.compare_set(f"proc/{rank}", "", me).decode()
    if holder != me:
        other = json.loads(holder)
        raise UserError(f"RANK: rank {rank} of the job at {address} is already held by pid {other['pid']} on "
                        f"{other['name']} (two jobs on one port? set {RUN_ID_ENV} per job)")
    return Rendezvous(store=dist.PrefixStore(prefix + "pg/", base), board=board_store,
                      watch=dist.PrefixStore(prefix + "board/", watch), hosted=hosted, agent=agent,
                      address=address)


# ------------------------------------------------------------------------------------------------ board
class FaultBoard:
    """One rank's side of the board: registration is done by ``connect``; ``start`` runs the watcher,
    ``blame`` resolves a failure this rank saw, ``close`` leaves the job."""

    def __init__(self, rv: Rendezvous, rank: int, size: int, timeout_s: float):
        self.rv, self.rank, self.size, self.timeout_s = rv, rank, size, timeout_s
        self.answer_s = answer_window_s(timeout_s)
        self._calls = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="firerun-board")
        self._watcher: threading.Thread | None = None
        self._closing = False
        self._dead = False  # the store stopped answering: never call it again (calls would block forever)
        self._state: Callable[[], Wait] | None = None
        self._on_verdict: Callable[[Verdict], None] | None = None
        self._procs: dict[int, dict] = {}
        self._verdict: Verdict | None = None  # the job's verdict, once this rank has it
        self._alarmed = False  # this rank has seen the alarm: the store host may exit once it has reported
        self._settling = threading.Lock()

    # ---- bounded store calls ----------------------------------------------------------------------------
    def _deadline(self) -> float:
        """For handling one failure: the answers (up to 2 windows for a live rank on this host), the verdict,
        and the store host's wait for everyone to have it (2 windows)."""
        return time.perf_counter() + 5 * self.answer_s + 1.0

    def _call(self, deadline: float, fn: Callable, *args):
        """``fn(*args)`` in the helper thread, given up at ``deadline`` (perf_counter seconds)."""
        if self._dead:
            raise StoreGone("the store stopped answering earlier")
        future = self._calls.submit(fn, *args)
        try:
            return future.result(timeout=max(deadline - time.perf_counter(), 0.001))
        except concurrent.futures.TimeoutError:
            self._dead = True
            raise StoreGone(f"no answer from the rendezvous store at {self.rv.address}") from None
        except Exception:
            self._dead = True
            raise StoreGone(f"the rendezvous store at {self.rv.address} closed") from None

    def absentees(self) -> str | None:
        """Why the rendezvous failed, from the board: ranks that never registered, or that registered here and
        have since exited or stopped; None if the store cannot tell."""
        deadline = time.perf_counter() + self.answer_s
        try:
            never, gone = [], []
            for q in range(self.size):
                proc = self._proc(q, deadline)
                if proc is None:
                    never.append(q)
                elif proc["host"] == host_key() and (state := process_state(proc["pid"])) != "running":
                    gone.append(f"rank {q}'s process {state}")
        except StoreGone:
            return None
        parts = ([f"{ranks_phrase(never)} never joined"] if never else []) + gone
        return "; ".join(parts) or None

    # ---- watcher -----------------------------------------------------------------------------------------
    def start(self, state: Callable[[], Wait], on_verdict: Callable[[Verdict], None]) -> None:
        """Answer alarms with ``state()`` and hand every verdict to ``on_verdict`` (from the watcher thread)."""
        self._state, self._on_verdict = state, on_verdict
        if not self.rv.agent:  # who hosts the store, to tell its death from a network failure later
            try:
                self._proc(0, time.perf_counter() + self.answer_s)
            except StoreGone:
                pass
        self._watcher = threading.Thread(target=self._watch, name="firerun-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        key = f"wake/{self.rank}"
        try:
            self.rv.watch.wait([key], WATCH_WAIT)
            reason = self.rv.watch.get(key).decode()
        except Exception:  # the store host is gone
            if not self._closing:
                self._deliver(self._verdict or self._store_verdict())
            return
        if reason == "bye" or self._closing:
            return
        self._alarmed = True
        deadline = self._deadline()
        try:
            self._call(deadline, self.rv.board.compare_set, f"state/{self.rank}", "", self._state().to_json())
            verdict = self._await_verdict(deadline)
            if verdict is not None:
                self._settle(verdict, deadline)
        except StoreGone:
            verdict = self._verdict or self._store_verdict()
        if verdict is not None:
            self._deliver(verdict)

    def _deliver(self, verdict: Verdict) -> None:
        if self.rank not in verdict.culprits and self._on_verdict is not None and verdict.cause != "unknown":
            self._on_verdict(verdict)

    def _await_verdict(self, deadline: float) -> Verdict | None:
        board = self.rv.board
        while time.perf_counter() < deadline:
            if self._call(deadline, board.check, ["verdict"]):
                return Verdict.from_json(self._call(deadline, board.get, "verdict"))
            time.sleep(0.02)
        return None

    # ---- a failure seen here -------------------------------------------------------------------------------
    def blame(self, mine: Wait) -> Verdict:
        """Publish what this rank was waiting for, raise the alarm, and return the job's verdict."""
        board, me = self.rv.board, self.rank
        deadline = self._deadline()
        try:
            self._call(deadline, board.compare_set, f"state/{me}", "", mine.to_json())
            first = self._call(deadline, board.compare_set, "alarm", "", str(me)).decode() == str(me)
            self._alarmed = True
            if first:
                for q in range(self.size):
                    if q != me:
                        self._call(deadline, board.set, f"wake/{q}", "alarm")
                verdict = self._resolve(mine, deadline)  # "unknown" too: nobody waits for a verdict in vain
                verdict = Verdict.from_json(self._call(deadline, board.compare_set, "verdict", "", verdict.to_json()))
            else:
                verdict = self._await_verdict(deadline)
                if verdict is None:
                    return Verdict((), "unknown", "")
            self._settle(verdict, deadline)
            return verdict
        except StoreGone:
            return self._verdict or self._store_verdict()

    def _settle(self, verdict: Verdict, deadline: float) -> None:
        """Say this rank has the verdict; the store host stays until every live rank has it (its exit takes
        the store down, which a rank still waiting for the verdict would take for the host's death). The main
        thread and the watcher may both get here: the second waits until the first is done."""
        with self._settling:
            if self._verdict is not None:
                return
            self._verdict = verdict
            board = self.rv.board
            self._call(deadline, board.set, f"ack/{self.rank}", "1")
            if not self.rv.hosted:
                return
            keys = [f"ack/{q}" for q in range(self.size) if q not in verdict.culprits]
            end = min(deadline, time.perf_counter() + 2 * self.answer_s)
            while time.perf_counter() < end and not self._call(deadline, board.check, keys):
                time.sleep(0.02)

    def _proc(self, q: int, deadline: float) -> dict | None:
        if q not in self._procs:
            board = self.rv.board
            if not self._call(deadline, board.check, [f"proc/{q}"]):
                return None
            self._procs[q] = json.loads(self._call(deadline, board.get, f"proc/{q}"))
        return self._procs[q]

    def _why_silent(self, q: int, deadline: float, waited_s: float) -> Silence | None:
        """What is known of a rank that has not answered: None while it may still answer."""
        proc = self._proc(q, deadline)
        local = proc is not None and proc["host"] == host_key()
        state = process_state(proc["pid"]) if local else "unknown"
        if state in ("exited", "stopped"):
            return state, ""
        if state == "running":  # alive: give a starved watcher longer before calling it hung
            return ("running", f"does not answer in {waited_s:.1f} s") if waited_s >= 2 * self.answer_s else None
        if waited_s < self.answer_s:
            return None
        where = f" from {proc['name']}" if proc is not None else ""
        return "silent", f"no answer{where} in {waited_s:.1f} s"

    def _resolve(self, mine: Wait, deadline: float) -> Verdict:
        """Collect answers for up to answer_s (less when every silent rank is known to have exited or
        stopped), then judge."""
        board = self.rv.board
        answers = {self.rank: mine}
        pending = set(range(self.size)) - {self.rank}
        silent: dict[int, Silence] = {}
        start = time.perf_counter()
        while pending:
            for q in sorted(pending):
                if self._call(deadline, board.check, [f"state/{q}"]):
                    answers[q] = Wait.from_json(self._call(deadline, board.get, f"state/{q}"))
                    pending.discard(q)
                elif self._call(deadline, board.check, [f"left/{q}"]):
                    pending.discard(q)
            waited = time.perf_counter() - start
            silent = {q: why for q in pending if (why := self._why_silent(q, deadline, waited)) is not None}
            if len(silent) == len(pending):
                break
            time.sleep(0.02)
        return judge(self.rank, self.size, self.timeout_s, answers, silent, mine.peers)

    def _store_verdict(self) -> Verdict:
        """The store itself failed: its host (rank 0, unless torchrun's agent hosts it) is lost or hung; unless
        the alarm was already up, when the host may just have exited after reporting (then: unknown)."""
        if self._alarmed:
            return Verdict((), "unknown", "")
        if self.rv.agent:
            return Verdict((), "lost", f"lost the rendezvous store at {self.rv.address} (torchrun's agent)")
        proc = self._procs.get(0)
        state = process_state(proc["pid"]) if proc is not None and proc["host"] == host_key() else "unknown"
        if state == "stopped":
            return Verdict((0,), "hung", "rank 0 hung (its process is stopped; it hosts the rendezvous store)")
        if state == "exited":
            return Verdict((0,), "lost", "lost rank 0 (its process exited; it hosted the rendezvous store)")
        return Verdict((0,), "lost", f"lost rank 0 (the rendezvous store it hosts at {self.rv.address} does "
                                     f"not answer)")

    # ---- the end ---------------------------------------------------------------------------------------------
    def close(self, wait: bool = True) -> None:
        """Leave the job: stop the watcher, say so, and (the store host, with ``wait``) wait until everyone has
        left, so that nobody's watcher sees the store vanish and takes it for a failure."""
        self._closing = True
        board = self.rv.board
        deadline = time.perf_counter() + LEAVE_WAIT_S
        try:
            self._call(deadline, board.set, f"left/{self.rank}", "1")
            self._call(deadline, board.set, f"wake/{self.rank}", "bye")
            if self._watcher is not None:
                self._watcher.join(timeout=max(deadline - time.perf_counter(), 0.0))
            if self.rv.hosted and wait:
                keys = [f"left/{q}" for q in range(self.size)]
                while time.perf_counter() < deadline and not self._call(deadline, board.check, keys):
                    time.sleep(0.01)
        except StoreGone:
            pass
        finally:
            self._calls.shutdown(wait=False)


class StoreGone(RuntimeError):
    """The rendezvous store did not answer in time, or closed."""

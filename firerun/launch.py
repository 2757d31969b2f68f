"""Start a job: N local processes (torchrun-compatible variables), mpiexec, or an sbatch script for Slurm.

The local launcher supervises its children the way an HPC user expects: when the first rank fails, the others
get ``grace_s`` to report what they were waiting for (the fault board has them name a dead peer within about
a second, a hung one within their op timeout), then the whole process group of every rank is killed.
Children also die with the launcher (PR_SET_PDEATHSIG), so no run leaves orphans behind.

Everything of a local job stays on loopback: MASTER_ADDR is 127.0.0.1 (the rendezvous store binds there) and
gloo binds ``lo`` (GLOO_SOCKET_IFNAME, unless you set it). Each job gets its own run id (FIRERUN_RUN_ID), so a
job can never join another that was given the same MASTER_PORT.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Literal

from firerun.errors import PEER_FAILED
from firerun.liveness import RUN_ID_ENV, process_state
from firesim.errors import UserError

ROOT_CAUSE_WAIT_S = 0.5
BAD_INPUT = 2  # exit code of a rank that refused its input (one line, printed by rank 0)


def free_port() -> int:
    """A TCP port free right now on this host (the rendezvous binds it moments later)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free right now (for jobs started side by side): all bound at once."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def loopback_interface() -> str | None:
    """The name of the loopback interface ('lo' on Linux), for GLOO_SOCKET_IFNAME."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((n for n in names if n in ("lo", "lo0")), None)


def local_job_env(environ: dict, master_port: int | None = None) -> dict:
    """The variables every rank of a job on this machine shares: rendezvous on loopback at MASTER_PORT (a free
    port unless given), gloo on the loopback interface unless GLOO_SOCKET_IFNAME says otherwise, a fresh run
    id, and torch's C++ warnings off (a failing rank prints one line, not a stack of socket warnings)."""
    if master_port is not None and not 1 <= master_port <= 65535:
        raise UserError(f"master_port: must be in 1..65535, got {master_port}")
    env = dict(environ)
    for name in list(env):  # variables of an outer launcher would make every child think it is that rank
        if name.startswith(("OMPI_COMM_WORLD_", "PMI_", "PMIX_", "SLURM_PROCID", "SLURM_LOCALID", "MPI_LOCAL",
                            "TORCHELASTIC_")):
            del env[name]
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master_port or free_port()),
               **{RUN_ID_ENV: uuid.uuid4().hex[:12]})
    loopback = loopback_interface()
    if loopback and not env.get("GLOO_SOCKET_IFNAME"):
        env["GLOO_SOCKET_IFNAME"] = loopback
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return env


def mpiexec_path() -> str:
    """The venv's mpiexec (the ``mpich`` wheel installs one beside python), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    if local.exists():
        return str(local)
    found = shutil.which("mpiexec")
    if not found:
        raise UserError("launcher mpiexec: no mpiexec beside python or on PATH (pip install mpich)")
    return found


def _mpiexec_flags(mpiexec: str, nproc: int) -> list[str]:
    """Open MPI refuses to run as root or to oversubscribe cores unless told; MPICH's hydra needs nothing."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    if "Open MPI" not in out and "OpenRTE" not in out:
        return []
    flags = ["--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return flags


def _die_with_parent() -> None:
    """In the child: get SIGKILL if the launcher dies (Linux), and lead a process group of our own."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "firerun", *args]


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _say(message: str) -> None:
    sys.stderr.write(f"firerun run: {message}\n")  # one write, so it never splits another rank's line
    sys.stderr.flush()


def launch(nproc: int, args: list[str], *, launcher: Literal["local", "mpiexec"] = "local",
           grace_s: float = 3.0, timeout_s: float | None = None, env: dict | None = None,
           master_port: int | None = None, allow_oversubscribe: bool = False) -> int:
    """Run ``firerun <args>`` as ``nproc`` ranks on this machine; return the job's exit code.

    The exit code is the root cause's: the first rank to fail other than by losing a peer (a lost rank's own
    code: 137 for SIGKILL), else 3 (a rank hung and was killed), 0 when all succeed. ``timeout_s`` bounds
    the whole job. ``master_port``: the rendezvous port (default: a free one). More ranks than the machine
    runs are refused first (``check_local_ranks``).
    """
    check_local_ranks(nproc, allow_oversubscribe=allow_oversubscribe)
    if grace_s < 0:
        raise UserError(f"grace_s: must be >= 0, got {grace_s}")
    base = local_job_env(dict(os.environ if env is None else env), master_port)
    procs: list[subprocess.Popen] = []
    names: list[str] = []
    if launcher == "local":
        for rank in range(nproc):
            procs.append(_start_local_rank(args, base, rank, nproc))
            names.append(f"rank {rank}")
    elif launcher == "mpiexec":
        mpiexec = mpiexec_path()
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            base.pop(name, None)
        cmd = [mpiexec, *_mpiexec_flags(mpiexec, nproc), "-n", str(nproc), *worker_command(args)]
        procs.append(subprocess.Popen(cmd, env=base, start_new_session=True, preexec_fn=_die_with_parent))
        names.append("mpiexec")
    else:
        raise UserError(f"launcher: must be local or mpiexec, got {launcher!r}")
    return supervise(procs, names, grace_s=grace_s, timeout_s=timeout_s)


def _start_local_rank(args: list[str], base: dict, rank: int, nproc: int) -> subprocess.Popen:
    """Rank ``rank`` of ``nproc`` on this machine: torchrun's variables on top of the job's ``base``."""
    child = dict(base, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc),
                 GROUP_RANK="0", ROLE_RANK=str(rank))
    return subprocess.Popen(worker_command(args), env=child, start_new_session=True, preexec_fn=_die_with_parent)


def launch_alone(jobs: list[list[str]], *, grace_s: float = 3.0, timeout_s: float | None = None,
                 env: dict | None = None) -> int:
    """Run each ``firerun <args>`` of ``jobs`` as a one-rank job of its own (its own rendezvous port, no world in
    common), all at once on this machine and supervised together; the exit code as ``launch``'s."""
    check_local_ranks(len(jobs))
    procs = [_start_local_rank(args, local_job_env(dict(os.environ if env is None else env), port), 0, 1)
             for args, port in zip(jobs, free_ports(len(jobs)))]
    return supervise(procs, [f"job {i}" for i in range(len(jobs))], grace_s=grace_s, timeout_s=timeout_s)


def supervise(procs: list[subprocess.Popen], names: list[str], *, grace_s: float,
              timeout_s: float | None = None) -> int:
    """Wait for every process; after the first failure give the rest ``grace_s`` then kill their groups."""
    start = time.monotonic()
    first: tuple[str, int] | None = None
    failed_at = 0.0
    interrupted: list[int] = []

    def on_signal(signum, frame):
        interrupted.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            exited = [(name, proc.poll()) for name, proc in zip(names, procs)]
            failed = [(name, code) for name, code in exited if code not in (None, 0)]
            # A rank that lost a peer exits with PEER_FAILED, sometimes before the culprit is seen to have
            # exited: wait a moment for a root cause before naming the first failure.
            roots = [item for item in failed if item[1] != PEER_FAILED]
            if failed and first is None:
                if not failed_at:
                    failed_at = time.monotonic()
                everyone_done = all(code is not None for _, code in exited)
                if roots or everyone_done or time.monotonic() - failed_at >= ROOT_CAUSE_WAIT_S:
                    first = (roots or failed)[0]
                    alive = sum(code is None for _, code in exited)
                    code = first[1]
                    reason = f"signal {-code}" if code < 0 else f"code {code}"
                    if code != BAD_INPUT:  # a rank refused bad input and said so in one line: add nothing
                        _say(f"{first[0]} exited with {reason}" + (
                            f"; giving the {alive} other(s) {grace_s:g} s to report, then stopping them"
                            if alive else ""))
            alive = [(n, p) for n, p in zip(names, procs) if p.poll() is None]
            if not alive:
                break
            now = time.monotonic()
            reason = None
            if interrupted:
                reason = "interrupted"
            elif first is not None and all(process_state(p.pid) == "stopped" for _, p in alive):
                reason = "the rest are stopped (SIGSTOP) and cannot report"
            elif first is not None and now - failed_at >= grace_s:
                reason = f"{first[0]} failed"
            elif first is None and failed_at and now - failed_at >= grace_s:
                reason = "a rank failed"
            elif timeout_s is not None and now - start >= timeout_s:
                reason = f"job timed out after {timeout_s:g} s"
            if reason is not None:
                if first is None or first[1] != BAD_INPUT:
                    _say(f"{reason}: killing {', '.join(n for n, _ in alive)}")
                _stop([p for _, p in alive])
                if first is None:
                    first = ("job", 130) if interrupted else (roots or failed)[0] if failed else ("job", 124)
                break
            time.sleep(0.01)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop([p for p in procs if p.poll() is None])
    for p in procs:  # also reap any stragglers in the groups (grandchildren under mpiexec)
        _kill_group(p, signal.SIGKILL)
    return 0 if first is None else first[1] if first[1] > 0 else 128 - first[1]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM every group, then SIGKILL what is left a second later."""
    for p in procs:
        _kill_group(p, signal.SIGTERM)
    deadline = time.monotonic() + 1.0
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            _kill_group(p, signal.SIGKILL)
            p.wait(timeout=5)


# ------------------------------------------------------------------------------------------------- Slurm
# Slurm's --time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds; or UNLIMITED / infinite.
_SLURM_TIME = re.compile(r"(\d{1,7})(:\d{1,2})?|\d{1,6}:\d{1,2}:\d{1,2}|\d{1,5}-\d{1,2}(:\d{1,2}){0,2}|"
                         r"UNLIMITED|unlimited|infinite|INFINITE")
# Partition and account names: what Slurm allows in practice, nothing a shell or #SBATCH line interprets.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}(,[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}){0,15}")
_SBATCH_OPTION = re.compile(r"--[a-z][a-z0-9-]{0,40}(=[A-Za-z0-9_.,:+/@%-]{1,200})?")


def slurm_time(text: str) -> str:
    """``text`` if it is one of Slurm's --time formats (``30``, ``00:30:00``, ``1-12:00``, ``UNLIMITED``)."""
    if not isinstance(text, str) or not _SLURM_TIME.fullmatch(text):
        raise UserError(f"time: {text!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS "
                        "or UNLIMITED)")
    return text


def _slurm_name(value: str | None, what: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not _SLURM_NAME.fullmatch(value)):
        raise UserError(f"{what}: {value!r} is not a Slurm name (letters, digits and _.+-, comma-separated)")
    return value


TRAIN_RESTARTS = 3


def _train_args(args: list[str], gpus_per_node: int) -> tuple[list[str], int]:
    """A training job on GPUs trains on them (``--device cuda``: NCCL), and one that checkpoints resumes:
    ``--resume`` (a no-op on the first start), so torchrun can restart the ranks after a failure
    (``--max-restarts``) and a requeued job goes on where it stopped. Other commands are left as they are."""
    if not args or args[0] != "train":
        return args, 0
    args = list(args)
    if gpus_per_node and not any(a == "--device" or a.startswith("--device=") for a in args):
        args += ["--device", "cuda"]
    if any(a == "--checkpoint-dir" or a.startswith("--checkpoint-dir=") for a in args):
        if "--resume" not in args:
            args.append("--resume")
        return args, TRAIN_RESTARTS
    return args, 0


def sbatch_script(args: list[str], *, nodes: int, tasks_per_node: int, mode: Literal["srun", "torchrun", "mpiexec"],
                  job_name: str = "firerun", time_limit: str = "00:30:00", partition: str | None = None,
                  account: str | None = None, gpus_per_node: int = 0, port: int = 29500,
                  python: str | None = None, extra_sbatch: list[str] | None = None) -> str:
    """An sbatch script that runs ``firerun <args>`` on ``nodes`` x ``tasks_per_node`` ranks.

    srun: one task per rank; ranks read SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID.
    torchrun: one task per node running torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK.
    mpiexec: srun with PMI (``--mpi=pmi2``), for ``--backend mpi``.

    Everything that reaches the script is checked or quoted: names (job, partition, account) must be plain
    names, ``time_limit`` one of Slurm's formats, counts in range, ``extra_sbatch`` items plain ``--key=value``
    options; the command's words are ``shlex.quote``d.
    """
    for name, value, low, high in (("nodes", nodes, 1, 100_000), ("tasks_per_node", tasks_per_node, 1, 1024),
                                   ("gpus_per_node", gpus_per_node, 0, 64), ("port", port, 1, 65535)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(f"{name}: must be an integer in {low}..{high}, got {value!r}")
    if mode not in ("srun", "torchrun", "mpiexec"):
        raise UserError(f"mode: must be srun, torchrun or mpiexec, got {mode!r}")
    for what, value in (("job name", job_name), ("partition", partition), ("account", account)):
        _slurm_name(value, what)
    slurm_time(time_limit)
    for item in extra_sbatch or []:
        if not _SBATCH_OPTION.fullmatch(item):
            raise UserError(f"extra sbatch option: expected a plain --key or --key=value, got {item!r}")
    py = python or sys.executable
    args, restarts = _train_args(args, gpus_per_node)
    tail = " ".join(shlex.quote(a) for a in args)
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}", f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={1 if mode == 'torchrun' else tasks_per_node}",
             f"#SBATCH --time={time_limit}"]
    if mode == "torchrun":
        lines.append(f"#SBATCH --cpus-per-task={tasks_per_node}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    if gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    lines += [f"#SBATCH {x}" for x in (extra_sbatch or [])]
    lines += ["", "set -euo pipefail",
              "# rank 0's node hosts the torch.distributed rendezvous",
              'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
              f"export MASTER_PORT=${{MASTER_PORT:-{port}}}", ""]
    if mode == "srun":
        lines.append(f"srun --kill-on-bad-exit=1 {shlex.quote(py)} -m firerun {tail}")
    elif mode == "torchrun":
        lines.append(f"srun --kill-on-bad-exit=1 {shlex.quote(py)} -m torch.distributed.run "
                     f"--nnodes={nodes} --nproc-per-node={tasks_per_node} --max-restarts={restarts} --rdzv-backend=c10d "
                     f'--rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="$SLURM_JOB_ID" '
                     f"-m firerun {tail}")
    else:
        lines.append(f"srun --kill-on-bad-exit=1 --mpi=pmi2 {shlex.quote(py)} -m firerun {tail}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- limits
# A rank imports torch and holds its buffers: ~220 MB resident before any buffer (measured: `import torch,
# torch.distributed`), so 512 MiB a rank is a fair floor. Ranks mostly wait on messages, so a few per core
# still run (the tests start 5 on 2 cores), but hundreds thrash the machine.
RANK_MEMORY_BYTES = 512 * 2**20
RANKS_PER_CORE = 4
MIN_RANKS_LIMIT = 8


def check_local_ranks(nproc: int, *, allow_oversubscribe: bool = False) -> None:
    """Refuse, in one line with the estimate and the limit, to start more local ranks than this machine runs:
    more than ``RANKS_PER_CORE`` a core (at least ``MIN_RANKS_LIMIT``) unless ``allow_oversubscribe``, and
    never more than its available memory holds at ``RANK_MEMORY_BYTES`` a rank."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UserError(f"nproc: must be an integer >= 1, got {nproc!r}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = max(MIN_RANKS_LIMIT, RANKS_PER_CORE * cores)
    if nproc > limit and not allow_oversubscribe:
        raise UserError(f"nproc: {nproc} ranks on {cores} cores is more than the limit of {limit} "
                        f"({RANKS_PER_CORE} a core); --allow-oversubscribe starts them anyway")
    available = _available_memory_bytes()
    if available is not None and nproc * RANK_MEMORY_BYTES > available:
        raise UserError(f"nproc: {nproc} ranks need ~{nproc * RANK_MEMORY_BYTES / 2**30:.1f} GiB "
                        f"({RANK_MEMORY_BYTES >> 20} MiB each); this machine has {available / 2**30:.1f} GiB available")


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None

"""`firerun`: run communication plans for real, benchmark them, calibrate the cost model, launch jobs.

Rank 0 alone prints. Bad input exits 2 with one line; a rank that loses a peer or times out prints one line
naming itself, the op and the peer, and exits 3; a wrong result exits 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from firerun import emulate, validate
from firerun.env import dist_env
from firerun.errors import ExecError
from firerun.names import BUILTIN, dtype_name
from firesim.clikit import Column, command, handle_error, output_dir, output_file, print_table, safe_name
from firesim.errors import UserError
from firesim.io import write_json_atomic, write_text_atomic
from firesim.plans import Plan, resolve, split_specs
from firesim.units import (
    MAX_COUNT,
    format_bytes,
    parse_bytes,
    parse_fraction,
    parse_int_list,
    parse_size_list,
    split_list,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run communication plans for real (torch.distributed or MPI), benchmark, calibrate, launch.")
app.add_typer(emulate.emulate_app, name="emulate")
app.command("validate")(validate.validate_cmd)

Backend = Annotated[Literal["torch", "mpi"], typer.Option("--backend", help="torch (gloo on CPU, NCCL on GPU) or "
                                                                              "mpi (mpi4py).")]
Device = Annotated[Literal["cpu", "cuda"], typer.Option("--device", help="cpu or cuda (cuda: torch backend, NCCL).")]
Timeout = Annotated[float, typer.Option("--timeout-s", min=0.001, max=7 * 86400.0,
                                        help="Longest wait for any one message or barrier.")]
JsonOut = Annotated[Path | None, typer.Option("--json", parser=output_file(".json"),
                                              help="Write the records to this file (atomically).")]
Iters = Annotated[int, typer.Option(min=1, max=10**6, help="Timed runs per round.")]
Reps = Annotated[int, typer.Option(min=1, max=1000, help="Rounds interleaving the algorithms; the median is reported.")]
Factor = Annotated[float, typer.Option(min=1.01, max=1024.0, help="Step factor between sizes of a range (nccl-tests -f).")]
SYNTHETIC_LIMIT_NBYTES = 1 << 30  # synthetic images held by each rank
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
# Elements per buffer a check may ask for: 2**28 float32 is 1 GiB on every rank.
MAX_NUMEL = 2**28
# Commands that do not join a job, so `firerun run` / `firerun slurm` cannot start them as ranks.
NOT_JOBS = ("run", "slurm", "emulate", "validate")
# Set while `firerun run` / `slurm` check the command they are given (to who checks and how the ranks will
# start): _run_worker then stops before joining.
_checking: ContextVar[dict | None] = ContextVar("firerun_checking", default=None)


class _Checked(Exception):
    """Raised by _run_worker in place of joining the job when a command is only being checked."""


def _rank() -> int:
    try:
        return dist_env().rank
    except UserError:
        return 0


def _run_worker(backend: str, device: str, timeout_s: float, body: Callable) -> None:
    """Join the job, run ``body(executor, console)`` and map failures to exit codes (see module docstring).

    Every command parses and checks all of its input before calling this, so bad input is refused before a
    job is joined, and `firerun run` can refuse it before starting any rank (``check_command``)."""
    checking = _checking.get()
    if checking is not None:
        if checking.get("launcher") == "local" and checking.get("nproc", 1) > 1 and backend == "mpi":
            raise UserError("backend mpi: MPI ranks need MPI's launcher: firerun run --launcher mpiexec ...")
        if checking.get("launcher") and device == "cuda" and not os.path.exists("/dev/nvidiactl"):
            raise UserError("device cuda: this machine has no NVIDIA GPU (no /dev/nvidiactl)")
        raise _Checked
    from firerun.worker import session

    with session(backend, device=device, timeout_s=timeout_s) as ex:  # type: ignore[arg-type]
        wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ  # piped: a whole table, not 80 columns
        console = Console(quiet=ex.rank != 0, width=150 if wide else None, markup=False,
                          highlight=False, emoji=False)
        code = body(ex, console) or 0
        ex.barrier("final barrier")  # nobody tears down while a peer still needs it
    if code:
        raise typer.Exit(code)


def _torch_dtype(name: str):
    """The torch dtype of a checked name (called inside a job, where torch is imported anyway)."""
    import torch

    return getattr(torch, name)


# nccl-tests' columns, one row per (size, algorithm); time in one unit (us) down the column, as nccl-tests.
BENCH_COLUMNS = [
    Column("size_bytes", "size", format_bytes), Column("count", "count", optional=2),
    Column("dtype", "type", text=True, optional=1), Column("algo", "algo", text=True),
    Column("time_us", "time_us", lambda x: f"{x:.1f}"), Column("algbw_GBps", "algbw GB/s", lambda x: f"{x:.3f}"),
    Column("busbw_GBps", "busbw GB/s", lambda x: f"{x:.3f}"),
    Column("vs_builtin", "vs builtin", lambda x: "" if x is None else f"{x:.2f}"),
    Column("wrong", "#wrong", lambda x: "N/A" if x < 0 else str(x)),
]
CHECK_COLUMNS = [
    Column("algo", "algo", text=True), Column("dtype", "dtype", text=True), Column("numel", "numel"),
    Column("ops", "ops"), Column("wrong", "#wrong"),
    Column("wrong_by_rank", "wrong ranks", lambda w: ",".join(str(q) for q, n in enumerate(w) if n), text=True),
    Column("trace_ok", "trace", lambda ok: "" if ok is None else ("ok" if ok else "BAD"), text=True),
]


def _algos(text: str, also: tuple[str, ...] = ()) -> list[str]:
    """Algorithm specs (or the names in ``also``), each checked against the registry now; the bounds that
    depend on the job's size are checked once it is known."""
    specs = split_specs(text)
    for spec in specs:
        if spec not in also:
            resolve(spec)
    return specs


def check_command(args: list[str], who: str, **start) -> None:
    """Parse and check ``firerun <args>`` here, without joining a job: bad input, an unwritable output or a
    command that is not a job is refused before `firerun run` starts a rank or `firerun slurm` writes a
    script. ``start`` says how the ranks will start (``launcher``, ``nproc``: local ones are checked against
    this machine)."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name in NOT_JOBS:
        raise UserError(f"{who}: `firerun {name}` does not run as ranks of a job")
    token = _checking.set({"who": who, **start})
    try:
        command(app)(args=list(args), standalone_mode=False, prog_name="firerun")
    except _Checked:
        return
    finally:
        _checking.reset(token)
    raise UserError(f"{who}: `firerun {' '.join(args)}` does not join a job")


# ------------------------------------------------------------------------------------------------- bench
@app.command()
def bench(
    sizes: Annotated[str, typer.Option(help="Sizes: '1KiB:64MiB' doubles from -b to -e like nccl-tests; "
                                            "or a list '16MiB,64MiB'.")] = "1KiB:64MiB",
    factor: Factor = 2.0,
    algo: Annotated[str, typer.Option(help="Algorithms beside the built-in all_reduce, "
                                           "comma-separated, e.g. ring,tree,hd or ps:servers=2.")] = "ring,tree,ps",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    iters: Iters = 20,
    warmup: Annotated[int, typer.Option(min=0, max=10**6, help="Untimed runs first.")] = 5,
    reps: Reps = 3,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Check every result (#wrong).")] = True,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 60.0,
    json_path: JsonOut = None,
) -> None:
    """nccl-tests-style table: time, algbw, busbw, speed vs the built-in all_reduce, #wrong."""
    size_list = parse_size_list(sizes, factor)
    algos = _algos(algo, also=(BUILTIN,))
    dtype = dtype_name(dtype)

    def body(ex, console: Console) -> int:
        from firerun.bench import run_bench

        records = run_bench(ex, algos, size_list, dtype=_torch_dtype(dtype), iters=iters, warmup=warmup, reps=reps,
                            check=check)
        title = (f"all-reduce, {ex.size} ranks, {ex.transport.name}, {iters} iters x {reps} rounds "
                 f"(time: mean per run on the slowest rank, median of rounds)")
        print_table(console, title, [r.to_dict() for r in records], BENCH_COLUMNS, section="size_bytes")
        if json_path is not None and ex.rank == 0:
            write_json_atomic(json_path, {"kind": "firerun.bench/1", "ranks": ex.size,
                                          "backend": ex.transport.name, "records": [r.to_dict() for r in records]})
        return 1 if any(r.wrong > 0 for r in records) else 0

    _run_worker(backend, device, timeout_s, body)


# ------------------------------------------------------------------------------------------------- check
@app.command()
def check(
    algo: Annotated[str, typer.Option(help="'all' (every builder that fits) or a list like 'ring,tree'.")] = "all",
    dtype: Annotated[str, typer.Option(help="Comma-separated dtypes.")] = "float32,float16,bfloat16",
    numel: Annotated[str | None, typer.Option(help="Element counts; default: p-1, 1031, 40009.")] = None,
    trace: Annotated[bool, typer.Option("--trace/--no-trace", help="Also gather and check the Trace.")] = True,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 60.0,
    json_path: JsonOut = None,
) -> None:
    """Run every algorithm on awkward sizes and check each result against the exact sum on every rank."""
    dtypes = [dtype_name(d) for d in split_list(dtype, "dtype")]
    numels = None if numel is None else parse_int_list(numel, "numel", minimum=0, maximum=MAX_NUMEL)
    algos = None if algo.strip() == "all" else _algos(algo)

    def body(ex, console: Console) -> int:
        from firerun.check import run_check, standard_algos, standard_numels

        algos_here = standard_algos(ex.size) if algos is None else algos
        records = run_check(ex, algos_here, numels or standard_numels(ex.size), dtypes, traced=trace)
        print_table(console, f"firerun check: {ex.size} ranks, {ex.transport.name}", [r.to_dict() for r in records],
                    CHECK_COLUMNS)
        bad = [r for r in records if r.wrong or r.trace_ok is False]
        console.print(f"{len(records) - len(bad)} of {len(records)} runs exact" + (f", {len(bad)} WRONG" if bad else ""))
        if json_path is not None and ex.rank == 0:
            write_json_atomic(json_path, {"kind": "firerun.check/1", "ranks": ex.size, "backend": ex.transport.name,
                                          "records": [r.to_dict() for r in records]})
        return 1 if bad else 0

    _run_worker(backend, device, timeout_s, body)


# ------------------------------------------------------------------------------------------------- exec
@app.command("exec")
def exec_(
    plan_path: Annotated[Path | None, typer.Option("--plan", help="A plan JSON file (firesim plans save).")] = None,
    algo: Annotated[str | None, typer.Option(help="Or build one: 'ring', 'ps:servers=2' ...")] = None,
    size: Annotated[str | None, typer.Option(help="Buffer size when building (default 16MiB), or to resize the "
                                                  "plan.")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16.")] = "float32",
    iters: Annotated[int, typer.Option(min=1, max=10**6, help="Runs; the trace is of the last one.")] = 3,
    trace_path: Annotated[Path | None, typer.Option("--trace", parser=output_file(".json"),
                                                    help="Write the measured Trace (JSON).")] = None,
    chrome_path: Annotated[Path | None, typer.Option("--chrome", parser=output_file(".json"),
                                                     help="Write a Chrome/Perfetto trace.")] = None,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 60.0,
) -> None:
    """Execute one plan and save its measured Trace (to compare with `firesim`'s prediction)."""
    if (plan_path is None) == (algo is None):
        raise UserError("exec: give exactly one of --plan FILE or --algo NAME")
    dtype = dtype_name(dtype)
    nbytes = None if size is None else parse_bytes(size, "size")
    loaded = None if plan_path is None else Plan.load(plan_path)
    if algo is not None:
        _algos(algo)

    def body(ex, console: Console) -> int:
        import torch

        from firerun.bench import check_data, count_wrong, plan_for

        torch_dtype = _torch_dtype(dtype)
        itemsize = torch.empty(0, dtype=torch_dtype).element_size()
        if loaded is not None:
            plan = loaded if nbytes is None else loaded.with_nbytes(nbytes)
        else:
            plan = plan_for(algo, ex.size, 16 * 2**20 if nbytes is None else nbytes)
        if plan.nbytes % itemsize:
            plan = plan.with_nbytes(plan.nbytes - plan.nbytes % itemsize)
        numel = plan.nbytes // itemsize
        worker = ex.rank < plan.workers
        trace = None
        wrong = 0
        for _ in range(iters):
            buf = check_data(ex.rank, numel, torch_dtype).to(ex.device) if worker else None
            trace = ex.run(plan, buf, trace=True, dtype=torch_dtype)
            wrong += count_wrong(buf, plan.workers) if worker else 0
        wrong = int(ex.reduce_sum([wrong])[0])
        if ex.rank == 0 and trace is not None:
            console.print(f"{plan.name}: {plan.ranks} ranks, {plan.nbytes} bytes, {plan.n_ops} ops, "
                          f"{trace.duration_s * 1e3:.3f} ms (last of {iters}), #wrong {wrong}")
            if trace_path is not None:
                trace.save(trace_path)
            if chrome_path is not None:
                trace.to_chrome(chrome_path)
        return 1 if wrong else 0

    _run_worker(backend, device, timeout_s, body)


@app.command()
def overhead(
    size: Annotated[str, typer.Option(help="Message size.")] = "1KiB",
    round_trips: Annotated[int, typer.Option(min=1, max=10**6, help="Round trips per measurement.")] = 100,
    reps: Annotated[int, typer.Option(min=1, max=1000, help="Interleaved rounds; medians are reported.")] = 5,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 60.0,
    json_path: JsonOut = None,
) -> None:
    """The interpreter's cost per op: a ping-pong as raw backend calls vs as a plan (ranks 0 and 1)."""
    from dataclasses import asdict

    nbytes = max(4, parse_bytes(size, "size") // 4 * 4)

    def body(ex, console: Console) -> int:
        from firerun.bench import measure_overhead

        o = measure_overhead(ex, nbytes, round_trips, reps)
        console.print(f"{o.backend}, {o.ranks} ranks, {o.nbytes} B ping-pong 0<->1: raw {o.raw_one_way_us:.1f} us, "
                      f"plan {o.plan_one_way_us:.1f} us one-way; interpreter overhead {o.per_op_us:.1f} us per op")
        if json_path is not None and ex.rank == 0:
            write_json_atomic(json_path, {"kind": "firerun.overhead/1", **asdict(o)})
        return 0

    _run_worker(backend, device, timeout_s, body)


# --------------------------------------------------------------------------------------------- calibrate
@app.command()
def calibrate(
    sizes: Annotated[str, typer.Option(help="Ping-pong sizes (range doubles by --factor).")] = "8:4MiB",
    factor: Factor = 4.0,
    ranks_per_node: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Fit intra-node (0,1) and "
                                                       "inter-node (0,N) pairs separately.")] = None,
    dtype: Annotated[str, typer.Option(help="Element type of the reduce and matmul probes.")] = "float32",
    round_trips: Annotated[int, typer.Option(min=1, max=10**6, help="Round trips per ping-pong plan.")] = 30,
    name: Annotated[str, typer.Option(help="Profile name (letters, digits, ._+-).")] = "calibrated",
    output: Annotated[Path, typer.Option(parser=output_file(".yaml", ".yml"), help="Hardware profile YAML (for "
                                         "firesim's --hardware).")] = Path("profile.yaml"),
    compute: Annotated[bool, typer.Option(help="Also measure the compute roofline: matmul, memory bandwidth, "
                                               "kernel overhead, zoo models' step times (alone on one rank).")] = False,
    models: Annotated[str | None, typer.Option(help="Zoo models whose steps --compute times (default: "
                                                    "small_cnn, resnet18_cifar_w16 on cpu; resnet50, bert_base on cuda).")] = None,
    compute_batch: Annotated[int | None, typer.Option(min=1, max=4096, help="Batch of the timed steps (default 8 "
                                                      "on cpu, 64 on cuda).")] = None,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 60.0,
    json_path: JsonOut = None,
) -> None:
    """Fit alpha/beta (ping-pong plans), gamma (reduce) and FLOP/s (matmul); with --compute the per-layer
    roofline rates from measured training steps; write a hardware profile."""
    from dataclasses import asdict

    from rich.table import Table

    from firesim.workload import list_workloads

    safe_name(name, "name")
    size_list = parse_size_list(sizes, factor)
    dtype = dtype_name(dtype)
    compute_models: list[str] = []
    if compute:
        gpu = device == "cuda"
        compute_models = split_list(models or ("resnet50,bert_base" if gpu else "small_cnn,resnet18_cifar_w16"),
                                    "models")
        unknown = [m for m in compute_models if m not in list_workloads()]
        if unknown:
            raise UserError(f"models: no saved profile for {', '.join(unknown)} (firesim models list)")
        compute_batch = compute_batch or (64 if gpu else 8)
    elif models is not None or compute_batch is not None:
        raise UserError("models: --models and --compute-batch need --compute")

    def body(ex, console: Console) -> int:
        from firerun.calibrate import calibrate as run_calibration
        from firerun.calibrate import to_profile

        cal = run_calibration(ex, size_list, dtype=_torch_dtype(dtype), ranks_per_node=ranks_per_node,
                              round_trips=round_trips, compute_models=compute_models,
                              compute_batch=compute_batch or 8)
        for fit in cal.links:
            table = Table(title=f"ping-pong {fit.pair[0]}<->{fit.pair[1]} ({fit.level}): alpha "
                                f"{fit.alpha_s * 1e6:.1f} us, {fit.bandwidth_Bps / 1e9:.3f} GB/s", title_justify="left")
            for col in ("size", "one-way us", "fit us", "error"):
                table.add_column(col, justify="right")
            for n, t, f in zip(fit.sizes, fit.one_way_s, fit.predict(fit.sizes)):
                table.add_row(str(n), f"{t * 1e6:.1f}", f"{f * 1e6:.1f}", f"{(f - t) / t:+.1%}")
            console.print(table)
        if cal.gamma_s_per_byte is not None:
            console.print(f"gamma {cal.gamma_s_per_byte * 1e9:.4f} ns/byte ({1 / cal.gamma_s_per_byte / 1e9:.2f} GB/s "
                          f"reduced), compute {cal.compute_flops / 1e9:.2f} GFLOP/s per rank")
        if cal.compute is not None:
            c = cal.compute
            table = Table(title=f"compute roofline ({cal.dtype}): matmul {c.matmul_flops / 1e9:.2f} GFLOP/s, conv "
                                f"{c.conv_flops / 1e9:.2f} GFLOP/s (fitted), memory {c.memory_Bps / 1e9:.2f} GB/s, "
                                f"kernel {c.layer_overhead_s * 1e6:.1f} us", title_justify="left")
            for col in ("model", "batch", "fwd ms", "bwd ms", "roofline fwd ms", "roofline bwd ms", "error"):
                table.add_column(col, justify="right")
            for m, (f, b) in zip(c.steps, c.predicted):
                table.add_row(m.model, str(m.batch), f"{m.forward_s * 1e3:.1f}", f"{m.backward_s * 1e3:.1f}",
                              f"{f * 1e3:.1f}", f"{b * 1e3:.1f}",
                              f"{(f + b - m.forward_s - m.backward_s) / (m.forward_s + m.backward_s):+.1%}")
            console.print(table)
        if ex.rank == 0:
            from firesim.hardware import save_profile

            path = save_profile(to_profile(cal, name, ranks_per_node), output)
            console.print(f"wrote {path}")
            if json_path is not None:
                write_json_atomic(json_path, {"kind": "firerun.calibrate/1", **asdict(cal)})
        return 0

    _run_worker(backend, device, timeout_s, body)


# ------------------------------------------------------------------------------------------------- train
@app.command()
def train(
    model: Annotated[str, typer.Option(help="A CIFAR-size model of models.zoo: small_cnn, resnet18_cifar_w16 ...")]
    = "small_cnn",
    data: Annotated[Literal["digits", "synthetic"], typer.Option(help="digits (real 8x8 images from scikit-learn, held-out split) or "
                                           "synthetic (random images, for timing).")] = "synthetic",
    algo: Annotated[str, typer.Option(help="Gradient exchange: a plan (ring, tree, ps:servers=2 ...) or builtin "
                                           "(the backend's all_reduce). With --nproc, a list to rank.")] = "ring",
    steps: Annotated[int, typer.Option(min=1, max=10**6, help="Optimizer steps of the whole run.")] = 20,
    batch: Annotated[int, typer.Option(min=1, max=2**16, help="Micro-batch per worker (global batch = batch x "
                                       "workers x accumulation).")] = 32,
    accumulation: Annotated[int, typer.Option(min=1, max=2**16, help="Micro-batches per optimizer step "
                                              "(ddp.no_sync).")] = 1,
    lr: Annotated[float, typer.Option(min=1e-9, max=1e3, help="Learning rate tuned for --base-batch.")] = 0.05,
    base_batch: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Global batch --lr was tuned for "
                                                   "(default: this run's, no scaling).")] = None,
    lr_scaling: Annotated[Literal["linear", "sqrt", "none"], typer.Option(
        help="Scale the LR with batch/base-batch: linear, sqrt or none.")] = "linear",
    warmup_steps: Annotated[int, typer.Option(min=0, max=10**6, help="Gradual warmup from --lr to the scaled LR "
                                              "over these steps.")] = 0,
    decay: Annotated[Literal["constant", "poly", "step", "cosine"], typer.Option(
        help="After warmup: constant, poly (FireCaffe), step or cosine.")] = "constant",
    power: Annotated[float, typer.Option(min=1e-6, max=100.0, help="poly decay exponent.")] = 0.5,
    milestones: Annotated[str, typer.Option(help="step decay: fractions of the decay phase.")] = "0.5,0.75",
    gamma: Annotated[float, typer.Option(min=1e-9, max=1.0, help="step decay factor.")] = 0.1,
    momentum: Annotated[float, typer.Option(min=0.0, max=0.9999, help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option(min=0.0, max=1.0, help="L2 weight decay.")] = 0.0,
    lars: Annotated[bool, typer.Option("--lars/--no-lars", help="Layer-wise adaptive rate scaling.")] = False,
    bucket_size: Annotated[str, typer.Option(help="DDP bucket size (bucket_cap_mb).")] = "25MiB",
    first_bucket_size: Annotated[str, typer.Option(help="DDP's first bucket (torch's default 1 MiB).")] = "1MiB",
    seed: Annotated[int, typer.Option(min=0, max=2**31 - 1, help="Seed of the weights, the data split and the "
                                      "sampler.")] = 0,
    samples: Annotated[int, typer.Option(min=2, max=2**24, help="Synthetic images to make.")] = 1024,
    eval_every: Annotated[int, typer.Option(min=0, max=10**6, help="Held-out evaluation every N steps (0: at the "
                                            "end).")] = 0,
    check_every: Annotated[int, typer.Option(min=0, max=10**6, help="Compare the replicas' parameters every N "
                                             "steps (0: never).")] = 1,
    checkpoint_dir: Annotated[Path | None, typer.Option(parser=output_dir, help="Directory for checkpoints.")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=0, max=10**6, help="Save a checkpoint every N steps (and at "
                                                  "the end).")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in "
                                                          "--checkpoint-dir.")] = False,
    step_barrier: Annotated[bool, typer.Option("--step-barrier", help="Start every step at a barrier (timing).")]
    = False,
    threads: Annotated[int | None, typer.Option(min=1, max=1024, help="torch threads per rank (default: cores / "
                                                "local ranks).")] = None,
    nproc: Annotated[int | None, typer.Option(min=1, max=4096, help="Measure vs predict: start NPROC ranks here (after one-rank "
                                                   "compute calibrations, one per rank at once) and print firesim's prediction beside "
                                                   "the measurement.")] = None,
    emulate: Annotated[Path | None, typer.Option(help="With --nproc: run the ranks on this emulated topology "
                                                      "(root; firerun.emulate).")] = None,
    skip: Annotated[int, typer.Option(min=0, max=10**6, help="With --nproc: first steps not timed.")] = 3,
    trace_path: Annotated[Path | None, typer.Option("--trace", parser=output_file(".json"),
                                                    help="Write the measured iteration Trace (JSON).")] = None,
    chrome_path: Annotated[Path | None, typer.Option("--chrome", parser=output_file(".json"),
                                                     help="Write it as a Chrome/Perfetto trace.")] = None,
    plot: Annotated[Path | None, typer.Option(parser=output_file(".png"), help="With --nproc: measured vs "
                                              "predicted timeline (PNG).")] = None,
    backend: Backend = "torch",
    device: Device = "cpu",
    timeout_s: Timeout = 120.0,
    json_path: JsonOut = None,
) -> None:
    """Data-parallel training with DDP, the gradient exchange a plan; the large-batch recipe; checkpoints.

    `firerun run --nproc 4 train --steps 20` trains; `firerun train --nproc 4 --steps 12` measures an iteration
    and prints it beside firesim's prediction.
    """
    import numpy as np

    from firerun.train import TrainConfig
    from models.zoo import get_spec

    stones = tuple(parse_fraction(x, "milestones") for x in split_list(milestones, "milestones"))
    fields = dict(model=model, data=data, steps=steps, batch=batch, accumulation=accumulation, lr=lr,
                  base_batch=base_batch, scaling=lr_scaling, warmup_steps=warmup_steps, decay=decay, power=power,
                  milestones=stones, gamma=gamma, momentum=momentum, weight_decay=weight_decay, lars=lars,
                  bucket_nbytes=parse_bytes(bucket_size, "bucket size"),
                  first_bucket_nbytes=parse_bytes(first_bucket_size, "first bucket size"), seed=seed,
                  samples=samples)
    algos = split_specs(algo)
    every = algos == ["all"]  # every registry configuration that fits the job, and the built-in all-reduce
    if not algos:
        raise UserError("algo: give an algorithm, e.g. ring")
    configs = [TrainConfig.make(**fields, algo="ring" if every else a) for a in algos]
    for a in algos:
        if a not in ("all", "builtin"):
            resolve(a)
    spec = get_spec(model)
    if spec.sample != "image":
        raise UserError(f"model: {model} takes token sequences; firerun train runs image models (small_cnn, "
                        "resnet18_cifar_w16, ...)")
    configs[0].recipe(1)  # a recipe that cannot work fails here, not in every rank
    if data == "digits" and spec.input_shape != (3, 32, 32):
        raise UserError(f"data digits: 8x8 images suit the CIFAR-size models (small_cnn, resnet18_cifar_w16, "
                        f"...), not {model} ({'x'.join(map(str, spec.input_shape))} inputs)")
    synthetic_nbytes = 4 * samples * int(np.prod(spec.input_shape))
    if data == "synthetic" and synthetic_nbytes > SYNTHETIC_LIMIT_NBYTES:
        raise UserError(f"samples: {samples} synthetic images of {'x'.join(map(str, spec.input_shape))} take "
                        f"{synthetic_nbytes / 2**30:.1f} GiB per rank; use fewer (--samples)")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise UserError("checkpoint-dir: needed with --checkpoint-every and --resume")
    if nproc is not None:
        from firerun.iteration import measure_and_predict
        from firerun.launch import check_local_ranks

        if dist_env().launched or _checking.get() is not None:
            raise UserError("nproc: this process is already a rank of a job; use --nproc from a plain shell")
        if every or device != "cpu" or checkpoint_dir is not None:
            raise UserError("nproc: measures CPU ranks against the prediction; name the plans (--algo ring,tree), "
                            "no --device cuda or checkpoints")
        check_local_ranks(nproc)
        try:
            report = measure_and_predict(configs, nproc, emulate=emulate, skip=skip, timeout_s=timeout_s,
                                         threads=threads, plot=plot, trace_path=trace_path, chrome_path=chrome_path,
                                         log=lambda m: Console(stderr=True, markup=False).print(m, highlight=False))
        except RuntimeError as err:  # a rank failed (it said why) or the cluster could not be built
            Console(stderr=True, markup=False).print(f"firerun train: {err}", highlight=False)
            raise typer.Exit(1) from None
        Console(width=None if sys.stdout.isatty() else 150, markup=False).print(report.table(), highlight=False)
        if json_path is not None:
            write_json_atomic(json_path, report.to_dict())
        raise typer.Exit(0 if report.replicas_identical else 1)
    if emulate is not None:
        raise UserError("emulate: needs --nproc (the ranks are started inside the emulated cluster)")
    if (every or len(configs) > 1) and (checkpoint_dir is not None or trace_path or chrome_path):
        raise UserError("algo: checkpoints and traces are per run; give one algorithm")

    def body(ex, console: Console) -> int:
        from firerun.check import standard_algos

        runs = [configs[0].model_copy(update={"algo": a}) for a in [BUILTIN, *standard_algos(ex.size)]] \
            if every else configs
        return _train_body(ex, console, runs, check_every=check_every, eval_every=eval_every,
                           checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume,
                           step_barrier=step_barrier, threads=threads, trace_path=trace_path,
                           chrome_path=chrome_path, json_path=json_path)

    _run_worker(backend, device, timeout_s, body)


def _train_body(ex, console: Console, configs, *, trace_path, chrome_path, json_path, **kwargs) -> int:
    """One rank of a training job: train with each config in turn (same seed), report, write (rank 0)."""
    from rich.progress import Progress

    from firerun.train import ReplicaMismatch
    from firerun.train import train as run_training
    from firesim.io import jsonable

    results = []
    for cfg in configs:
        with Progress(console=console, transient=True, disable=ex.rank != 0 or not console.is_terminal) as bar:
            task = bar.add_task(f"{cfg.algo}: training", total=cfg.steps)
            try:
                r = run_training(ex, cfg, on_step=lambda done, task=task: bar.update(task, completed=done),
                                 **kwargs)
            except ReplicaMismatch as err:
                console.print(str(err), highlight=False)
                return 1
        results.append(r)
        head = (f"{cfg.model} on {cfg.data}, {cfg.algo}, {r.workers} workers x batch {cfg.batch} x "
                f"{cfg.accumulation} = {r.global_batch}")
        if not r.loss:
            console.print(f"{head}: nothing to do, the checkpoint is at step {r.start_step}", highlight=False)
            continue
        final = r.evals[-1]
        console.print(f"{head}: steps {r.start_step}..{cfg.steps}, loss {r.loss[0]:.3f} -> {r.loss[-1]:.3f}, "
                      f"held-out accuracy {final.accuracy:.2%}; replicas bit-identical at {r.replica_checks} "
                      f"checks", highlight=False)
        if r.trace is not None:
            from firerun.iteration import measured_breakdown

            b = measured_breakdown(r.trace, r.workers, skip=min(3, len(r.loss) - 1))
            console.print(f"  step {b.iteration_s * 1e3:.1f} ms (median): forward {b.forward_s * 1e3:.1f}, backward "
                          f"{b.backward_s * 1e3:.1f}, exposed exchange {b.exposed_s * 1e3:.1f} of "
                          f"{b.exchange_s * 1e3:.1f}, optimizer {b.optimizer_s * 1e3:.1f} ms", highlight=False)
    if ex.rank == 0:
        if json_path is not None:
            records = [{"kind": "firerun.train/2", **jsonable(r.to_dict())} for r in results]
            write_json_atomic(json_path, records[0] if len(records) == 1 else records)
        trace = results[0].trace
        if trace is not None and trace_path is not None:
            trace.save(trace_path)
        if trace is not None and chrome_path is not None:
            trace.to_chrome(chrome_path)
    return 0


@app.command("large-batch")
def large_batch(
    seeds: Annotated[str, typer.Option(help="Seeds to run (each: the three configurations).")] = "0",
    epochs: Annotated[int, typer.Option(min=6, max=10**4, help="Epochs of every run (> 5: the large batch warms "
                                        "up for 5).")] = 30,
    plot: Annotated[Path | None, typer.Option(parser=output_file(".png"), help="Learning curves (PNG).")] = None,
    backend: Backend = "torch",
    timeout_s: Timeout = 120.0,
    json_path: JsonOut = None,
) -> None:
    """The large-batch recipe on real data (digits): batch 32 vs batch 256 with and without LR scaling."""
    seed_list = parse_int_list(seeds, "seeds", minimum=0)

    def body(ex, console: Console) -> int:
        from firerun import largebatch

        by_seed = {}
        for seed in seed_list:
            by_seed[seed] = largebatch.demonstrate(ex, seed, epochs, on_run=lambda c, seed=seed: console.print(
                f"seed {seed}: {c.label}: {c.steps} steps, peak LR {c.peak_lr:g}, held-out accuracy {c.final:.2%}",
                highlight=False))
        finals = [[c.final for c in curves] for curves in by_seed.values()]
        mean = [sum(col) / len(col) for col in zip(*finals)]
        console.print(f"mean over seeds {', '.join(map(str, seed_list))}: small {mean[0]:.2%}, large + recipe "
                      f"{mean[1]:.2%} ({(mean[1] - mean[0]) * 100:+.1f} points), large with the small-batch LR "
                      f"{mean[2]:.2%} ({(mean[2] - mean[0]) * 100:+.1f} points)", highlight=False)
        if ex.rank == 0:
            if plot is not None:
                largebatch.plot(by_seed, plot)
            if json_path is not None:
                write_json_atomic(json_path, {"runs": [largebatch.to_dict(c, s) for s, c in by_seed.items()],
                                              "mean_final_accuracy": mean})
        return 0

    _run_worker(backend, "cpu", timeout_s, body)


@app.command("train-worker", hidden=True)
def train_worker(spec: Path) -> None:
    """One rank of firerun train --nproc (started by it)."""
    from firerun.iteration import worker_main

    raise typer.Exit(worker_main(str(spec)))


# ------------------------------------------------------------------------------------------------ profile
@app.command()
def profile(
    model: Annotated[str, typer.Option(help="A zoo model (gpt2, resnet50, ...) or your own 'package.module:factory' "
                                            "(a callable returning an nn.Module; importable: mind PYTHONPATH).")],
    output: Annotated[Path, typer.Option("--output", "-o", parser=output_file(".json"),
                                         help="Profile JSON to write (for firesim's --model).")],
    input_shape: Annotated[str | None, typer.Option("--input", help="One sample's float input, e.g. 3x224x224.")]
    = None,
    seq_len: Annotated[int | None, typer.Option(min=1, max=2**24, help="Tokens per sample: token-id input of this "
                                                "length (zoo default: the model's usual), or marks --input a "
                                                "sequence.")] = None,
    kwargs: Annotated[list[str] | None, typer.Option("--kwargs", help="key=value for the factory (repeatable).")]
    = None,
    train_samples: Annotated[int | None, typer.Option(min=1, max=2**50, help="Samples per epoch.")] = None,
    train_tokens: Annotated[int | None, typer.Option(min=1, max=2**60, help="Tokens per epoch (samples = tokens / "
                                                     "seq-len).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Name of the training set, for the record (letters, digits, "
                                                "._+-).")] = None,
    name: Annotated[str | None, typer.Option(help="Name in the profile (default: the factory's; letters, digits, "
                                             "._+-).")] = None,
) -> None:
    """Profile a model on the meta device (FLOPs, elements moved, activations saved, per layer) for firesim."""
    from firerun.profile import profile_command

    safe_name(dataset, "dataset")
    safe_name(name, "name")
    p = profile_command(model, output, input_text=input_shape, seq_len=seq_len, kwargs=kwargs or [],
                        train_samples=train_samples, train_tokens=train_tokens, dataset=dataset or "", name=name)
    sample = f"sequence of {p.seq_len} tokens" if p.sample == "sequence" else "sample"
    Console(markup=False).print(f"wrote {output}: {p.name}, {len(p.layers)} layers, {p.params / 1e6:.2f} M params "
                    f"({format_bytes(p.gradient_nbytes())} of fp32 gradients), {p.train_flops / 1e9:.3f} GFLOP "
                    f"per {sample} (forward + backward), {p.saved_elements / 1e6:.2f} M activation elements "
                    f"saved per {sample}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------- launch
@app.command(context_settings=PASSTHROUGH)
def run(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option(min=1, max=4096, help="Ranks to start on this machine.")] = 2,
    launcher: Annotated[Literal["local", "mpiexec"], typer.Option(help="local (torchrun-style variables) or "
                                                                       "mpiexec (for --backend mpi).")] = "local",
    grace_s: Annotated[float, typer.Option(min=0.0, max=3600.0, help="After the first failure, time the other "
                                           "ranks get to report before they are killed.")] = 3.0,
    job_timeout_s: Annotated[float | None, typer.Option(min=0.001, max=1e7, help="Kill the whole job after "
                                                        "this long.")] = None,
    master_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Rendezvous port on 127.0.0.1 "
                                                    "(default: a free one). A port another job holds is refused.")]
    = None,
    allow_oversubscribe: Annotated[bool, typer.Option(help="Start more ranks than 4 a core (memory still "
                                                           "bounds them).")] = False,
) -> None:
    """Start NPROC ranks of a firerun command here: `firerun run --nproc 4 bench --sizes 16MiB`."""
    from firerun.launch import check_local_ranks, launch

    if not ctx.args:
        raise UserError("run: give the command to run, e.g. `firerun run --nproc 4 bench --sizes 16MiB`")
    check_local_ranks(nproc, allow_oversubscribe=allow_oversubscribe)
    check_command(list(ctx.args), "run", launcher=launcher, nproc=nproc)
    code = launch(nproc, list(ctx.args), launcher=launcher, grace_s=grace_s, timeout_s=job_timeout_s,
                  master_port=master_port, allow_oversubscribe=allow_oversubscribe)
    raise typer.Exit(code)


@app.command(context_settings=PASSTHROUGH)
def slurm(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option(min=1, max=100_000, help="Nodes.")] = 2,
    tasks_per_node: Annotated[int, typer.Option(min=1, max=1024, help="Ranks per node (usually GPUs per node).")] = 4,
    mode: Annotated[Literal["srun", "torchrun", "mpiexec"], typer.Option(
        help="srun (a task per rank), torchrun (a task per node) or mpiexec (srun --mpi=pmi2, for --backend "
             "mpi).")] = "torchrun",
    gpus_per_node: Annotated[int, typer.Option(min=0, max=64, help="GPUs to request per node (0: none).")] = 0,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    account: Annotated[str | None, typer.Option(help="Slurm account.")] = None,
    time_limit: Annotated[str, typer.Option("--time", help="Wall-clock limit in a Slurm format: minutes, "
                                            "HH:MM:SS, D-HH:MM ...")] = "00:30:00",
    output: Annotated[Path | None, typer.Option("--output", "-o", parser=output_file(),
                                                help="Write the script here (else print it).")] = None,
) -> None:
    """Write an sbatch script running a firerun command: `firerun slurm --nodes 4 -o job.sh bench --sizes 16MiB`."""
    from firerun.launch import sbatch_script

    if not ctx.args:
        raise UserError("slurm: give the command to run, e.g. `firerun slurm --nodes 2 bench --device cuda`")
    script = sbatch_script(list(ctx.args), nodes=nodes, tasks_per_node=tasks_per_node, mode=mode,
                           time_limit=time_limit, partition=partition, account=account, gpus_per_node=gpus_per_node)
    check_command(list(ctx.args), "slurm")
    if output is None:
        sys.stdout.write(script)
        return
    write_text_atomic(output, script).chmod(0o755)
    Console(stderr=True, markup=False, highlight=False).print(f"wrote {output}: submit with `sbatch {output}`",
                                                              soft_wrap=True)


@app.command("env")
def env_() -> None:
    """Show the rank, world size and launcher this process would use (debugging a job script)."""
    if _checking.get() is not None:
        raise _Checked
    e = dist_env()
    print(f"rank {e.rank} of {e.world_size} (local {e.local_rank} of {e.local_world_size}) from {e.source}; "
          f"MASTER_ADDR={e.master_addr} MASTER_PORT={e.master_port}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line and exit 2 for bad input, exit 3 with the failing op for a lost or hung peer."""
    try:
        code = command(app)(args=argv, standalone_mode=False, prog_name="firerun")
    except ExecError as err:
        sys.stdout.flush()
        sys.stderr.write(f"firerun: {err}\n")  # one write: lines of several ranks never interleave
        sys.stderr.flush()
        os._exit(3)  # peers may be gone: interpreter teardown could block in the backend
    except EOFError:
        sys.exit(130)
    except (Exception, KeyboardInterrupt) as err:
        code = handle_error(err, "firerun", quiet=_rank() != 0)  # bad input, usage errors, Ctrl-C
        if code is None:
            raise
        sys.exit(code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""`firesim`: predict training time and collective cost, search what to buy, show plans, list hardware and
models.

Every command takes ``--json`` for machine-readable output (strict JSON). Bad input exits with code 2 and one
line, before any work starts (``firesim.clikit``); tables never cut a number (``--wide`` for every column).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from firesim.analytic import allreduce_bandwidths_GBps
from firesim.clikit import Column, output_file, print_table, run_app
from firesim.cluster import allreduce_seconds
from firesim.errors import UserError
from firesim.hardware import comm_params, list_presets, load_catalog, price_per_gpu_hour, resolve_cluster
from firesim.io import dumps, write_csv_atomic, write_json_atomic
from firesim.limits import MAX_NODES, MAX_OPS, VERIFY_MAX_OPS, check_ops
from firesim.plans import build, resolve, split_specs, verify
from firesim.training import predict as predict_training
from firesim.units import (
    MAX_COUNT,
    format_bytes,
    format_count,
    format_duration,
    parse_bytes,
    parse_int_list,
    parse_seconds,
    parse_size_list,
    split_list,
)
from firesim.whatif import WhatIf, parse_whatif
from firesim.workload import list_workloads, load_workload

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predict how fast a network trains on a GPU cluster, and which gradient exchange wins.")
plans_app = typer.Typer(no_args_is_help=True, help="Inspect and check communication plans.")
hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog.")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo's saved profiles.")
app.add_typer(plans_app, name="plans")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")


def _console() -> Console:
    """Standard output for text: never markup; piped without COLUMNS, tables keep their columns (wider than
    rich's 80-column default off a terminal). Made per use: COLUMNS is read when a console is made."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if piped else None, markup=False, highlight=False, emoji=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, even beyond the terminal's width.")]
CatalogOpt = Annotated[Path | None, typer.Option("--hardware-catalog", help="Extra YAML that overrides or adds catalog entries.")]
MaxOpsOpt = Annotated[int, typer.Option("--max-ops", min=1, max=2**40, help="Refuse plans of more ops than this "
                                        "(memory and time grow with it; see firesim.limits).")]
MaxNodesOpt = Annotated[int, typer.Option("--max-nodes", min=1, max=2**30, help="Refuse topologies of more nodes.")]
PlotOpt = Annotated[Path | None, typer.Option(parser=output_file(".png"), help="Also save the figure as this PNG.")]
WorkersOpt = Annotated[int, typer.Option(min=1, max=4096, help="Processes to run the search on (local), or MPI "
                                         "ranks to spawn (mpi).")]
ExecutorOpt = Annotated[Literal["local", "mpi"], typer.Option(
    help="local (worker processes) or mpi (mpi4py.futures: launch as "
         "mpiexec -n N python -m mpi4py.futures -m firesim ... --executor mpi).")]
StragglersOpt = Annotated[str | None, typer.Option(
    help="Seeded stragglers, e.g. probability=0.05, slowdown=1.5 (optional jitter=0.1); with --engine des.")]
RankSpeedOpt = Annotated[str | None, typer.Option(
    help="Compute speed of single ranks, e.g. 0=0.5,7=0.8 (others 1; with --engine des).")]
LinkOpt = Annotated[list[str] | None, typer.Option(
    "--link", help="Override one link's figures, repeatable, e.g. h3-s0:latency=5us (keys: bandwidth, latency, "
                   "efficiency); with --engine des.")]
SeedOpt = Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the stragglers and of ECMP path choice.")]
GradDtypeOpt = Annotated[str | None, typer.Option(
    help="Gradient type exchanged: fp32 (default; mixed precision keeps fp32 gradients), bf16, fp16.")]
OptimizerOpt = Annotated[str, typer.Option(help="auto (the model's usual), sgd, momentum, adam, adamw, lamb.")]
EpochsOpt = Annotated[float, typer.Option(min=1e-6, max=1e6, help="Epochs to train.")]
OverlapOpt = Annotated[bool, typer.Option(help="Overlap bucketed gradient exchange with backward (DDP).")]
BucketSizeOpt = Annotated[str, typer.Option(help="Gradient bucket size.")]
Engine = Literal["analytic", "des"]
# Searches with at least this many configurations show a progress bar (on stderr).
PROGRESS_MIN = 500


def _gbps(x: float) -> str:
    return f"{x:.2f}" if x == x and x != float("inf") else "-"


def _dollars(x: float | None) -> str:
    return "-" if x is None else f"${x:,.0f}"


def _emit(records: list[dict], as_json: bool, title: str, columns: list[Column], wide: bool = False) -> None:
    if as_json:
        sys.stdout.write(dumps(records, indent=2) + "\n")
    else:
        print_table(_console(), title, records, columns, wide=wide)


def _cluster(hardware: str, catalog: Path | None):
    return resolve_cluster(hardware, load_catalog(catalog) if catalog else None)


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr for long searches; None (no bar) for short ones."""
    if total < PROGRESS_MIN:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True, markup=False), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _memory(cell: tuple[float, bool | None, float | None]) -> str:
    """GiB per GPU, '3.2G'; with the GPU's size and a '!' when it does not fit: '112G>80!'."""
    gib, fits, capacity = cell
    text = f"{gib:,.0f}G" if gib >= 100 else f"{gib:.3g}G"
    return f"{text}>{capacity:g}!" if fits is False else text


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Model from `firesim models list`, or a profile .json.")] = "googlenet",
    seq_len: Annotated[int | None, typer.Option(min=1, max=2**24, help="Tokens per sequence; must be the profile's "
                                                "own (firerun profile --seq-len N writes others).")] = None,
    hardware: Annotated[str, typer.Option(help="Preset from `firesim hardware list`, or a cluster/profile YAML.")] = "titan",
    gpus: Annotated[str, typer.Option(help="GPU counts: 1,32,128 or 1:128.")] = "1,32,128",
    algo: Annotated[str, typer.Option(help="Algorithms, comma-separated (see `firesim plans list`).")] = "tree,ps,ring",
    batch: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Global batch per optimizer step (split "
                                              "over the GPUs).")] = None,
    batch_per_gpu: Annotated[int | None, typer.Option(min=1, max=MAX_COUNT, help="Micro-batch per GPU (global "
                                                      "batch grows with GPUs).")] = None,
    accumulation: Annotated[int, typer.Option(min=1, max=2**16, help="Micro-batches per optimizer step (gradient "
                                              "accumulation).")] = 1,
    epochs: EpochsOpt = 90.0,
    baseline_batch: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Batch of the one-GPU run that speedup "
                                                "compares against.")] = 32,
    dtype: Annotated[str, typer.Option(help="Compute type: fp32, tf32, or mixed precision fp16, bf16, fp8 (fp32 master weights).")] = "fp32",
    grad_dtype: Annotated[str | None, typer.Option(help="Gradient type exchanged: fp32 (default; mixed precision keeps fp32 gradients), bf16, fp16.")] = None,
    optimizer: Annotated[str, typer.Option(help="auto (momentum for convnets, adamw otherwise), sgd, momentum, adam, adamw, lamb.")] = "auto",
    overheads: Annotated[str, typer.Option(help="default, none, or key=value items, e.g. interference=0.189, spread=0.01, optimizer=on, "
                                             "input=catalog or none or a RATE.")] = "default",
    overlap: OverlapOpt = True,
    bucket_size: BucketSizeOpt = "25MiB",
    engine: Annotated[Engine, typer.Option(help="analytic (closed form, instant) or des (the simulator; needed by "
                                           "--stragglers, --rank-speed and --link).")] = "analytic",
    stragglers: StragglersOpt = None,
    rank_speed: RankSpeedOpt = None,
    link: LinkOpt = None,
    seed: SeedOpt = 0,
    timeline: Annotated[Path | None, typer.Option(parser=output_file(".png"),
        help="With --engine des: save the played iterations (at most 4) as a timeline PNG, each beside its "
             "nominal run when a what-if is given.")] = None,
    hardware_catalog: CatalogOpt = None,
    max_ops: MaxOpsOpt = MAX_OPS,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Predict iteration time, time to train, speedup, cost and memory per GPU for each GPU count and algorithm.

    What-if: --stragglers, --rank-speed and --link perturb the cluster; the simulator plays them (--engine des).
    """
    from firesim.compute import parse_overheads

    if batch is None and batch_per_gpu is None:
        batch = 1024
    profile = load_workload(model, seq_len)
    cluster = _cluster(hardware, hardware_catalog)
    gpu_counts = parse_int_list(gpus, "gpus")
    algos = split_specs(algo)
    for a in algos:
        resolve(a, ranks_per_node=cluster.gpus_per_node)
    bucket_nbytes = parse_bytes(bucket_size, "bucket-size")
    costs = parse_overheads(overheads)
    whatif = parse_whatif(stragglers, rank_speed, link, seed)
    if timeline is not None and (engine != "des" or len(gpu_counts) * len(algos) > 4):
        raise UserError("timeline: needs --engine des and at most 4 configurations (GPU counts x algorithms)")
    options = dict(dtype=dtype, grad_dtype=grad_dtype, optimizer=optimizer, overheads=costs, accumulation=accumulation,
                   overlap=overlap, bucket_nbytes=bucket_nbytes)
    records = [
        predict_training(profile, cluster, g, a, batch=batch, batch_per_gpu=batch_per_gpu, epochs=epochs,
                         baseline_batch=baseline_batch, engine=engine, whatif=whatif, max_ops=max_ops,
                         **options).record()
        for g in gpu_counts for a in algos
    ]
    if timeline is not None:
        _save_timelines(timeline, profile, cluster, records, whatif, **options)
    head = records[0]
    title = (f"{profile.name} on {cluster.name} ({engine}), {head['dtype']} (grads {head['grad_dtype']}, "
             f"{head['optimizer']}), batch {batch if batch else f'{batch_per_gpu}/GPU'}, {epochs:g} epochs "
             f"(speedup vs 1 GPU at batch {baseline_batch})" + (f"; what-if: {whatif.describe()}" if whatif.active else ""))
    rows = [{**r, "memory": (r["memory_GiB"], r["fits"], r["memory_capacity_GiB"])} for r in records]
    _emit(records if as_json else rows, as_json, title, [
        Column("gpus", "gpus"), Column("algo", "algo", text=True),
        Column("compute_s", "compute", format_duration, optional=3),
        Column("comm_s", "comm", format_duration, optional=2),
        Column("exposed_comm_s", "exposed", format_duration, optional=4),
        Column("iteration_s", "iter", format_duration), Column("speedup", "speedup", lambda x: f"{x:.1f}x"),
        Column("efficiency", "eff", lambda x: f"{x:.0%}", optional=1), Column("time_to_train_s", "train", format_duration),
        Column("cost", "cost", _dollars, optional=5), Column("memory", "mem", _memory)], wide)
    if not as_json and any(r["fits"] is False for r in records):
        _console().print("! does not fit the GPU's memory: plain data parallelism keeps a full replica (weights, "
                      "gradients, optimizer state) on every GPU; shard it (ZeRO/FSDP), shrink the batch per GPU, or "
                      "use bigger GPUs.")


def _save_timelines(path: Path, profile, cluster, records: list[dict], whatif: WhatIf, **options) -> None:
    """The iterations behind ``records`` played again on the engine (beside the nominal ones for a what-if)."""
    from firesim.plots import save_figure, timeline_figure
    from firesim.training import simulate_iteration
    from firesim.whatif import iteration_kwargs

    sims, titles = [], []
    for rec in records:
        runs = [("nominal", {}), ("what-if", iteration_kwargs(whatif, cluster, rec["gpus"], rec["algo"]))]
        for label, kwargs in runs if whatif.active else runs[:1]:
            sim = simulate_iteration(profile, cluster, rec["gpus"], rec["algo"], batch_per_gpu=rec["batch_per_gpu"],
                                     **options, **kwargs)
            sims.append(sim)
            titles.append(f"{rec['algo']} on {rec['gpus']} GPUs, {label}: iteration {sim.iteration_s * 1e3:.1f} ms, "
                          f"exposed comm {sim.exposed_comm_s * 1e3:.1f} ms")
    what = f"; what-if: {whatif.describe()}" if whatif.active else ""
    save_figure(timeline_figure(sims, titles, f"{profile.name} on {cluster.name}, batch {records[0]['batch']}{what} "
                                              "(top of each lane: forward, backward; bottom: bucket all-reduces)"), path)


def _collective_record(algo: str, ranks: int, nbytes: int, cluster) -> dict:
    time_s = float(allreduce_seconds(cluster, ranks, nbytes, algo))
    algbw, busbw = allreduce_bandwidths_GBps(nbytes, time_s, ranks)
    return {"algo": algo, "ranks": ranks, "nbytes": nbytes, "time_s": time_s, "algbw_GBps": algbw,
            "busbw_GBps": busbw, "hardware": cluster.name}


@app.command()
def collective(
    algo: Annotated[str, typer.Option(help="Algorithms, comma-separated.")] = "ring",
    ranks: Annotated[str, typer.Option(help="Rank counts: 8 or 2:64.")] = "8",
    size: Annotated[str, typer.Option(help="Buffer sizes: 1GiB or 1KiB:1GiB (doubling).")] = "1GiB",
    hardware: Annotated[str, typer.Option(help="Preset or YAML.")] = "dgx-a100",
    hardware_catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """All-reduce time, algbw and busbw (nccl-tests definitions) predicted in closed form."""
    cluster = _cluster(hardware, hardware_catalog)
    algos, rank_counts, sizes = split_specs(algo), parse_int_list(ranks, "ranks"), parse_size_list(size, what="size")
    for a in algos:
        resolve(a)
    records = [_collective_record(a, p, n, cluster) for a in algos for p in rank_counts for n in sizes]
    _emit(records, as_json, f"all-reduce on {cluster.name} (predicted)", [
        Column("algo", "algo", text=True), Column("ranks", "ranks"), Column("nbytes", "size", format_bytes),
        Column("time_s", "time", format_duration), Column("algbw_GBps", "algbw GB/s", _gbps),
        Column("busbw_GBps", "busbw GB/s", _gbps)], wide)


@app.command()
def sweep(
    out: Annotated[Path, typer.Option(parser=output_file(".csv", ".json"), help="Output file: .csv or .json.")],
    model: Annotated[str, typer.Option(help="Models (zoo names or profile JSON files), comma-separated.")] = "googlenet,nin",
    hardware: Annotated[str, typer.Option(help="Presets or YAMLs, comma-separated.")] = "titan",
    gpus: Annotated[str, typer.Option(help="GPU counts.")] = "1:128",
    algo: Annotated[str, typer.Option(help="Algorithms.")] = "tree,ps,ring",
    batch: Annotated[str, typer.Option(help="Global batches: 256,1024 or 256:8192 (doubling).")] = "256,1024",
    dtype: Annotated[str, typer.Option(help="Compute types, comma-separated (fp32, tf32, fp16, bf16, fp8).")] = "fp32",
    grad_dtype: GradDtypeOpt = None,
    optimizer: OptimizerOpt = "auto",
    epochs: EpochsOpt = 90.0,
    engine: Annotated[Engine, typer.Option(help="analytic or des (the simulator: at most 200 configurations of at "
                                              "most 64 GPUs).")] = "analytic",
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    hardware_catalog: CatalogOpt = None,
) -> None:
    """Predict a whole grid (models x hardware x GPUs x algorithms x batches x precisions) into a CSV or JSON
    file, on local worker processes or MPI ranks (the same records either way)."""
    from firesim.search import make_executor
    from firesim.search import sweep as run_sweep

    setting, cases = _search_space(model, hardware, gpus, algo, batch, dtype, hardware_catalog, epochs=epochs,
                                   engine=engine, grad_dtype=grad_dtype, optimizer=optimizer)
    with make_executor(executor, workers) as pool, _progress(len(cases), "sweep") as advance:
        records = run_sweep(setting, cases, executor=pool, progress=advance)
    # every prediction is written, those that do not fit memory too (their `fits` column says so)
    rows = [{k: v for k, v in r.items() if k not in ("status", "reason", "detail")} for r in records if "iteration_s" in r]
    if out.suffix.lower() == ".json":
        write_json_atomic(out, rows)
    else:
        write_csv_atomic(out, rows)
    skipped: dict[str, int] = {}
    for r in records:
        if "iteration_s" not in r:
            skipped[r["reason"]] = skipped.get(r["reason"], 0) + 1
    why = "; ".join(f"{n} {reason}" for reason, n in skipped.items())
    unfit = sum(r["fits"] is False for r in rows)
    _console().print(f"wrote {len(rows)} predictions to {out}" + (f", {unfit} of them do not fit memory" if unfit else "")
                  + (f" (skipped: {why})" if why else ""), highlight=False, markup=False)


def _search_space(model: str, hardware: str, gpus: str, algo: str | None, batch: str, dtype: str,
                  hardware_catalog: Path | None, **setting):
    """The command-line lists of a sweep or a search as ``firesim.search.sweep.search_space`` arguments."""
    from firesim.search.sweep import search_space

    return search_space(
        split_list(model, "model"), None if hardware == "all" else split_list(hardware, "hardware"),
        parse_int_list(gpus, "gpus"), None if algo is None else split_specs(algo), parse_int_list(batch, "batch"),
        split_list(dtype, "dtype"), catalog=load_catalog(hardware_catalog) if hardware_catalog else None, **setting)


@app.command()
def simulate(
    plan: Annotated[str, typer.Option(help="Algorithm, e.g. ring, tree, ps:servers=4.")] = "ring",
    ranks: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Number of ranks.")] = 64,
    size: Annotated[str, typer.Option(help="Buffer size.")] = "64MiB",
    topology: Annotated[str | None, typer.Option(
        help="fat-tree:k=8, torus:dims=4x4x4, star, dragonfly:..., a topology YAML; default: the hardware's.")] = None,
    hardware: Annotated[str, typer.Option(help="Preset or YAML: link rates, latencies, software alpha, gamma.")] = "dgx-a100",
    eager: Annotated[bool, typer.Option(help="Sends complete when handed to the transport (TCP socket buffers).")] = False,
    trace: Annotated[Path | None, typer.Option(parser=output_file(".json"), help="Write the predicted Trace (JSON).")] = None,
    chrome: Annotated[Path | None, typer.Option(parser=output_file(".json"), help="Write a Chrome/Perfetto trace.")] = None,
    compute: Annotated[str, typer.Option(
        help="Compute before the collective on every rank (e.g. 20ms), slowed by --rank-speed and --stragglers: "
             "ranks then arrive at different times.")] = "0",
    stragglers: Annotated[str | None, typer.Option(
        help="Seeded stragglers, e.g. probability=0.1, slowdown=2: they finish --compute later.")] = None,
    rank_speed: Annotated[str | None, typer.Option(help="Speed of single ranks' --compute, e.g. 0=0.5.")] = None,
    link: LinkOpt = None,
    seed: SeedOpt = 0,
    hardware_catalog: CatalogOpt = None,
    max_ops: MaxOpsOpt = MAX_OPS,
    max_nodes: MaxNodesOpt = MAX_NODES,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Play one all-reduce plan on a network with the discrete-event engine (links shared max-min fairly).

    What-if: --link changes single links; --stragglers and --rank-speed delay ranks' --compute before it.
    """
    import time

    import numpy as np

    from firesim.engine import simulate as run_engine
    from firesim.topology import from_spec
    from firesim.training import cluster_topology

    cluster = _cluster(hardware, hardware_catalog)
    nbytes = parse_bytes(size)
    compute_s = parse_seconds(compute, "compute")
    whatif = parse_whatif(stragglers, rank_speed, link, seed)
    if (whatif.stragglers is not None or whatif.rank_speeds) and not compute_s > 0:
        raise UserError("stragglers and rank-speed slow the --compute before the collective: give --compute, e.g. 20ms")
    built = build(plan, ranks, nbytes, max_ops=max_ops)
    inter = cluster.inter_node_link
    graph = (cluster_topology(cluster, built.ranks) if topology is None else
             from_spec(topology, built.ranks, bandwidth_Bps=inter.bandwidth_Bps, latency_s=inter.latency_s / 2,
                       efficiency=inter.efficiency, max_nodes=max_nodes))
    speed = whatif.rank_speed(built.ranks)
    speed = np.ones(built.ranks) if speed is None else speed
    if whatif.stragglers is not None:
        speed = speed * whatif.stragglers.speeds(built.ranks, seed)
    cost = comm_params(cluster)
    start = time.perf_counter()
    result = run_engine(built, graph, alpha_s=cluster.software_latency_s, gamma_s_per_byte=cost.gamma_s_per_byte,
                        eager=eager, seed=seed, start_s=compute_s / speed, link_overrides=whatif.link_overrides(graph),
                        max_ops=max_ops)
    wall_s = time.perf_counter() - start
    if trace:
        result.save(trace)
    if chrome:
        result.to_chrome(chrome)
    time_s = result.duration_s - compute_s
    algbw, busbw = allreduce_bandwidths_GBps(nbytes, time_s, ranks)
    record = {"plan": plan, "ranks": ranks, "nbytes": nbytes, "topology": graph.graph.get("name", topology),
              "hardware": cluster.name, "time_s": time_s, "algbw_GBps": algbw,
              "busbw_GBps": busbw, "ops": built.n_ops,
              "events": int(result.header.extra.get("events", 0)), "wall_s": wall_s, "compute_s": compute_s}
    _emit([record], as_json, f"{plan} on {record['topology']} (simulated)", [
        Column("ranks", "ranks"), Column("nbytes", "size", format_bytes), Column("time_s", "time", format_duration),
        Column("algbw_GBps", "algbw GB/s", _gbps), Column("busbw_GBps", "busbw GB/s", _gbps),
        Column("ops", "ops", format_count), Column("wall_s", "wall", format_duration, optional=1)], wide)


@app.command()
def paper(
    setup: Annotated[Path | None, typer.Option(help="YAML of PaperSetup fields to change (epochs, baselines, GPU "
                                                    "counts, algorithms, ...); defaults are the paper's.")] = None,
    hardware: Annotated[str | None, typer.Option(help="Cluster preset or YAML instead of titan.")] = None,
    algo: Annotated[str | None, typer.Option(help="Algorithms of part (b), the first is the headline (default: tree, ps).")] = None,
    engine: Annotated[Engine | None, typer.Option(help="analytic (closed forms) or des (iterations on the 3D torus).")] = None,
    plot: PlotOpt = None,
    hardware_catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reproduce FireCaffe on Titan: (a) parameter server vs reduction tree per iteration for NiN, AlexNet,
    GoogLeNet, VGG-19 on 1..256 GPUs; (b) time to train and speedup of GoogLeNet and NiN on 1, 32, 128 GPUs at
    batch 256 and 1024, beside the published 47x and 39x. Every assumption is printed with its source."""
    from firesim.plots import paper_figure, save_figure
    from firesim.search.paper import load_setup, parse_algos, reproduce_paper

    chosen = load_setup(setup, hardware=hardware, algos=parse_algos(algo), engine=engine)
    catalog = load_catalog(hardware_catalog) if hardware_catalog else None
    result = reproduce_paper(chosen, resolve_cluster(chosen.hardware, catalog), catalog=catalog)
    if plot is not None:
        save_figure(paper_figure(result), plot)
    if as_json:
        sys.stdout.write(dumps(result.to_dict(), indent=2) + "\n")
        return
    _print_paper(result)
    if plot is not None:
        _console().print(f"figure: {plot}", highlight=False, markup=False)


def _print_paper(result) -> None:
    comm = result.communication
    models = list(dict.fromkeys(r["model"] for r in comm))
    algos = list(dict.fromkeys(r["algo"] for r in comm))
    by_gpus: dict[int, dict] = {}
    for r in comm:
        by_gpus.setdefault(r["gpus"], {"gpus": r["gpus"]})[(r["model"], r["algo"])] = r["comm_s"]
    print_table(_console(), f"(a) communication per iteration on {result.setup.hardware} (fp32 gradients; closed forms)",
                [{**row, **{(m, a): row.get((m, a)) for m in models for a in algos}} for row in by_gpus.values()],
                [Column("gpus", "gpus")] + [Column((m, a), f"{m} {a}", format_duration) for m in models for a in algos])
    print_table(_console(), f"(b) time to train on {result.setup.hardware} ({result.setup.engine}; speedup vs the "
                "single-GPU baseline)", result.training, [
        Column("model", "model", text=True), Column("batch", "batch"), Column("gpus", "gpus"),
        Column("algo", "algo", text=True), Column("epochs", "epochs", lambda x: f"{x:g}", optional=4),
        Column("compute_s", "compute", format_duration, optional=3),
        Column("exposed_comm_s", "comm", format_duration, optional=2), Column("iteration_s", "iter", format_duration),
        Column("time_to_train_s", "train", format_duration), Column("speedup", "speedup", lambda x: f"{x:.1f}x"),
        Column("speedup_serial_staging", "serial staging", lambda x: f"{x:.1f}x", optional=1),
        Column("published_speedup", "published", lambda x: "" if x is None else f"{x:g}x")])
    print_table(_console(), "assumptions", result.assumptions, [
        Column("name", "name", text=True), Column("value", "value", text=True), Column("source", "source", text=True)])


@app.command()
def recommend(
    model: Annotated[str, typer.Option(help="Zoo name (`firesim models list`) or a profile JSON file.")],
    epochs: Annotated[float | None, typer.Option(min=1e-6, max=1e6, help="Epochs to train (90 unless --steps).")]
    = None,
    steps: Annotated[int | None, typer.Option(min=1, max=10**12, help="Iterations to train instead of epochs.")]
    = None,
    samples: Annotated[int | None, typer.Option(min=1, max=2**50, help="Training samples per epoch (the "
                                                "profile's dataset).")] = None,
    deadline: Annotated[str | None, typer.Option(help="Time to train at most: 24h, 3d, 90min.")] = None,
    budget: Annotated[str | None, typer.Option(help="USD for the whole run at most: 20000 or $20,000.")] = None,
    hardware: Annotated[str, typer.Option(help="Presets or YAMLs, comma-separated; 'all' = every catalog preset.")] = "all",
    gpus: Annotated[str, typer.Option(help="GPU counts.")] = "1:1024",
    algo: Annotated[str | None, typer.Option(help="Algorithms (every registered one with a closed form).")] = None,
    batch: Annotated[str, typer.Option(help="Global batches (large ones need the large-batch recipe).")] = "256:8192",
    dtype: Annotated[str, typer.Option(help="Compute types to consider; each GPU keeps those it has.")] = "fp32,tf32,bf16,fp16",
    grad_dtype: GradDtypeOpt = None,
    optimizer: OptimizerOpt = "auto",
    overlap: OverlapOpt = True,
    bucket_size: BucketSizeOpt = "25MiB",
    engine: Annotated[Engine, typer.Option(help="analytic, or des (the simulator, needed by the what-if options; "
                                              "at most 200 configurations of at most 64 GPUs).")] = "analytic",
    stragglers: StragglersOpt = None,
    rank_speed: RankSpeedOpt = None,
    link: LinkOpt = None,
    seed: SeedOpt = 0,
    plot: PlotOpt = None,
    workers: WorkersOpt = 1,
    executor: ExecutorOpt = "local",
    hardware_catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What should we buy? Search hardware x GPUs x algorithm x batch x precision; print the fastest
    configuration within the budget, the cheapest within the deadline, the Pareto front of time vs cost,
    and why every other region was rejected."""
    from firesim.plots import pareto_figure, save_figure
    from firesim.search import make_executor
    from firesim.search.recommend import choose

    if epochs is not None and steps is not None:
        raise UserError("epochs: give epochs or steps, not both")
    deadline_s = None if deadline is None else _parse_duration(deadline, "deadline")
    budget_usd = None if budget is None else _parse_usd(budget, "budget")
    setting, cases = _search_space(
        model, hardware, gpus, algo, batch, dtype, hardware_catalog, epochs=90.0 if epochs is None else epochs,
        steps=steps, samples=samples, overlap=overlap, bucket_nbytes=parse_bytes(bucket_size, "bucket-size"),
        grad_dtype=grad_dtype, optimizer=optimizer,
        engine=engine, whatif=parse_whatif(stragglers, rank_speed, link, seed))
    with make_executor(executor, workers) as pool, _progress(len(cases), "recommend") as advance:
        result = choose(setting, cases, deadline_s=deadline_s, budget_usd=budget_usd, executor=pool,
                               progress=advance)
    profile = next(iter(setting.profiles.values()))
    samples = f"sequences of {profile.seq_len} tokens" if profile.sample == "sequence" else "samples"
    length = f"{steps:,} steps" if steps is not None else f"{setting.epochs:g} epochs of {profile.train_samples:,} {samples}"
    limits = ", ".join(x for x in (deadline and f"deadline {format_duration(deadline_s)}",
                                    budget and f"budget {_dollars(budget_usd)}") if x)
    title = f"{profile.name}, {length}; {limits}; {len(cases):,} configurations"
    if plot is not None:
        save_figure(pareto_figure(result, title), plot)
    if as_json:
        sys.stdout.write(dumps({"model": profile.name, **result.to_dict()}, indent=2) + "\n")
        return
    _print_recommendation(result, title)
    if plot is not None:
        _console().print(f"figure: {plot}", highlight=False, markup=False)


_PICK_COLUMNS = [Column("hardware", "hardware", text=True), Column("gpus", "gpus"), Column("algo", "algo", text=True),
                 Column("batch", "batch"), Column("dtype", "dtype", text=True, optional=1),
                 Column("iteration_s", "iter", format_duration, optional=2),
                 Column("time_to_train_s", "train", format_duration), Column("cost", "cost", _dollars)]


def _print_recommendation(result, title: str) -> None:
    _console().print(Text(title, style="bold"), soft_wrap=True)
    for label, pick in (("fastest within the budget", result.fastest),
                        ("cheapest within the deadline", result.cheapest)):
        if pick is None:
            _console().print(f"{label}: none (see the rejected regions)")
            continue
        meets = "meets both limits" if pick["verdict"] is None else pick["verdict"]
        _console().print(f"{label}: {pick['hardware']}, {pick['gpus']} GPUs, {pick['algo']}, batch {pick['batch']}, "
                      f"{pick['dtype']}: {format_duration(pick['time_to_train_s'])}, {_dollars(pick['cost'])} ({meets})")
    front = [{**r, "ok": "yes" if r["verdict"] is None else "no"} for r in result.pareto]
    print_table(_console(), "Pareto front (time vs cost)", front, [*_PICK_COLUMNS, Column("ok", "ok")])
    _console().print("(nothing else is both faster and cheaper; ok = within every limit given)")
    print_table(_console(), "rejected regions", result.regions, [
        Column("hardware", "hardware", text=True), Column("reason", "reason", text=True),
        Column("configurations", "configs"), Column("dtypes", "dtype", ",".join, text=True, optional=2),
        Column("gpus", "gpus", optional=3), Column("batch", "batch", optional=4),
        Column("min_time_to_train_s", "fastest", lambda x: "-" if x is None else format_duration(x), optional=1),
        Column("min_cost", "cheapest", _dollars)])


def _parse_duration(text: str, what: str) -> float:
    """'24h', '90min', '3d', '3600' -> seconds (days on top of firesim.units.parse_seconds)."""
    text = str(text).strip()
    if text.endswith("d") and text[:-1].strip():
        return parse_seconds(text[:-1].strip(), what) * 86400
    return parse_seconds(text, what)


def _parse_usd(text: str, what: str) -> float:
    """'20000', '$20,000', '2e4' -> 20000.0; must be a positive, finite amount."""
    try:
        value = float(str(text).strip().lstrip("$").replace(",", "").replace("_", ""))
    except ValueError:
        raise UserError(f"{what}: expected an amount in USD such as 20000 or $20,000, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise UserError(f"{what}: must be a positive amount, got {text!r}")
    return value


@plans_app.command("list")
def plans_list(as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Every registered algorithm: name, aliases, options with their bounds, closed-form cost."""
    from firesim.plans import algorithms

    records = []
    for a in algorithms():
        records.append({"name": a.name, "aliases": list(a.aliases), "summary": a.summary, "options": a.options.describe(),
                        "closed_form": a.time is not None, "cost": a.cost or "engine only"})
    _emit(records, as_json, "algorithms (firesim.plans.registry)", [
        Column("name", "algorithm", text=True), Column("aliases", "aliases", ", ".join, text=True, optional=1),
        Column("options", "options (default, bounds)", lambda o: "; ".join(o) or "-", text=True),
        Column("cost", "closed-form cost", text=True)], wide)


@plans_app.command("show")
def plans_show(
    algo: Annotated[str, typer.Argument(help="Algorithm, e.g. ring or ps:servers=2.")],
    ranks: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Number of ranks.")] = 4,
    size: Annotated[str, typer.Option(help="Buffer size.")] = "1MiB",
    max_ops: Annotated[int, typer.Option("--max-ops", min=1, max=2**40, help="Refuse plans of more ops than this "
                                         "(each is printed and proved).")] = VERIFY_MAX_OPS,
    as_json: JsonOpt = False,
) -> None:
    """Print every rank's program (op, chunk, peer, bytes)."""
    plan = build(algo, ranks, parse_bytes(size), max_ops=max_ops)
    verify(plan, max_ops=max_ops)
    if as_json:
        sys.stdout.write(dumps(plan.to_dict()) + "\n")
        return
    nbytes = plan.op_nbytes()
    _console().print(f"{plan.name}: {plan.ranks} ranks ({plan.workers} workers), "
                  f"{format_bytes(plan.nbytes)} in {plan.chunks} chunks, {plan.n_ops} ops — verified", soft_wrap=True)
    for r in range(plan.ranks):
        lo = int(plan.offsets[r])
        steps = []
        for i, (op, chunk, span, peer, seconds) in enumerate(plan.program(r)):
            chunks = f"c{chunk}" if span == 1 else f"c{chunk}..{chunk + span - 1}"
            arrow = {"send": "->", "recv": "<-", "reduce": "<+"}.get(op)
            steps.append(f"{op} {chunks} {arrow} {peer} ({format_bytes(nbytes[lo + i])})" if arrow else
                         f"compute {format_duration(seconds)}")
        _console().print(f"rank {r}: " + "; ".join(steps), soft_wrap=True)


@plans_app.command("verify")
def plans_verify(
    algo: Annotated[str, typer.Argument(help="Algorithm.")],
    ranks: Annotated[str, typer.Option(help="Rank counts: 1:64 or 3,5,7.")] = "1:64",
) -> None:
    """Prove the plan correct (every rank ends with the full sum, nothing counted twice, no deadlock)."""
    counts = parse_int_list(ranks, "ranks")
    choice = resolve(algo)
    for p in counts:  # refuse a size too big to prove before proving the small ones
        check_ops(choice.ops(p), f"verify {choice.spec} on {p} ranks", VERIFY_MAX_OPS)
    for p in counts:
        verify(build(choice, p, 4 * p, max_ops=VERIFY_MAX_OPS))
    _console().print(f"{algo}: verified for ranks {', '.join(map(str, counts))}", soft_wrap=True)


@hardware_app.command("list")
def hardware_list(hardware_catalog: CatalogOpt = None, as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Cluster presets with their cost-model figures."""
    records = []
    for c in list_presets(load_catalog(hardware_catalog) if hardware_catalog else None):
        inter = comm_params(c, "inter")
        records.append({"name": c.name, "gpu": c.gpu.name, "gpus_per_node": c.gpus_per_node,
                        "inter_node_link": c.inter_node_link.name, "alpha_s": inter.alpha_s,
                        "bandwidth_GBps": 1 / inter.beta_s_per_byte / 1e9,
                        "price_per_gpu_hour_usd": price_per_gpu_hour(c), "description": c.description})
    _emit(records, as_json, "cluster presets", [
        Column("name", "preset", text=True), Column("gpu", "gpu", text=True),
        Column("gpus_per_node", "gpus/node"), Column("inter_node_link", "inter-node link", text=True, optional=2),
        Column("alpha_s", "alpha", format_duration), Column("bandwidth_GBps", "GB/s/GPU", _gbps),
        Column("price_per_gpu_hour_usd", "$/GPU-h", lambda x: "-" if x is None else f"{x:.2f}", optional=1)], wide)


@models_app.command("list")
def models_list(as_json: JsonOpt = False, wide: WideOpt = False) -> None:
    """Models with saved profiles: parameters, input, forward FLOPs per sample, dataset."""
    records = []
    for name in list_workloads():
        p = load_workload(name)
        sample = f"{p.seq_len} tokens" if p.sample == "sequence" else "x".join(map(str, p.input_shape))
        records.append({"name": name, "params": p.params, "sample": sample, "fwd_flops": p.fwd_flops,
                        "gradient_nbytes": p.params * 4, "dataset": p.dataset, "layers": len(p.layers)})
    _emit(records, as_json, "model zoo", [
        Column("name", "model", text=True), Column("params", "params", lambda x: f"{x / 1e6:.1f} M"),
        Column("sample", "sample", text=True, optional=3),
        Column("fwd_flops", "fwd GFLOP/sample", lambda x: f"{x / 1e9:.2f}"),
        Column("gradient_nbytes", "fp32 grads", format_bytes), Column("dataset", "dataset", text=True, optional=1),
        Column("layers", "layers", optional=2)], wide)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one line on stderr and exit code 2 (``firesim.clikit``)."""
    sys.exit(run_app(app, "firesim", argv))

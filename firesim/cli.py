"""`firesim`: predict training time and collective cost, show plans, list hardware and models.

Every command takes ``--json`` for machine-readable output. Bad input exits with code 2 and one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from firesim.analytic import allreduce_bandwidths_GBps
from firesim.cluster import allreduce_seconds
from firesim.errors import UserError
from firesim.hardware import comm_params, list_presets, load_catalog, price_per_gpu_hour, resolve_cluster
from firesim.io import write_csv_atomic, write_json_atomic
from firesim.plans import build, resolve, split_specs, verify
from firesim.training import predict as predict_training
from firesim.units import format_bytes, parse_bytes, parse_int_list, parse_size_list, split_list
from firesim.workload import list_workloads, load_workload

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predict how fast a network trains on a GPU cluster, and which gradient exchange wins.")
plans_app = typer.Typer(no_args_is_help=True, help="Inspect and check communication plans.")
hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog.")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo's saved profiles.")
app.add_typer(plans_app, name="plans")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")
console = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")]


def _table(title: str, records: list[dict], columns: list[tuple[str, str, Callable]]) -> Table:
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for _, header, _ in columns:
        table.add_column(header, justify="right", no_wrap=True)
    for rec in records:
        table.add_row(*(fmt(rec[key]) for key, _, fmt in columns))
    return table


def _seconds(x: float) -> str:
    """Compact durations for tables: 8.78s, 775ms, 26.1h."""
    if x == 0:
        return "0"
    for unit, scale in (("d", 86400.0), ("h", 3600.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(x) >= scale and not (unit == "d" and x < 4 * 86400):
            return f"{x / scale:.3g}{unit}"
    return f"{x * 1e9:.3g}ns"


def _dollars(x: float | None) -> str:
    return "-" if x is None else f"${x:,.0f}"


def _emit(records: list[dict], as_json: bool, table: Table) -> None:
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    else:
        console.print(table)


def _cluster(hardware: str, catalog: Path | None):
    return resolve_cluster(hardware, load_catalog(catalog) if catalog else None)


CatalogOpt = Annotated[Path | None, typer.Option("--hardware-catalog", help="Extra YAML that overrides or adds catalog entries.")]


def _memory(cell: tuple[float, bool | None, float | None]) -> str:
    """GiB per GPU, '3.2G'; in red with the GPU's size when it does not fit: '112G>80!'."""
    gib, fits, capacity = cell
    text = f"{gib:,.0f}G" if gib >= 100 else f"{gib:.3g}G"
    return f"[red]{text}>{capacity:g}![/red]" if fits is False else text


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="Model from `firesim models list`, or a profile .json.")] = "googlenet",
    seq_len: Annotated[int | None, typer.Option(help="Tokens per sequence; must be the profile's own "
                                                     "(`firerun profile --seq-len` writes others).")] = None,
    hardware: Annotated[str, typer.Option(help="Preset from `firesim hardware list`, or a cluster/profile YAML.")] = "titan",
    gpus: Annotated[str, typer.Option(help="GPU counts: 1,32,128 or 1:128.")] = "1,32,128",
    algo: Annotated[str, typer.Option(help="Algorithms: tree,ps,ring,halving_doubling,double_binary_tree,hierarchical.")] = "tree,ps,ring",
    batch: Annotated[int | None, typer.Option(help="Global batch per optimizer step (split over the GPUs).")] = None,
    batch_per_gpu: Annotated[int | None, typer.Option(help="Micro-batch per GPU (global batch grows with GPUs).")] = None,
    accumulation: Annotated[int, typer.Option(help="Micro-batches per optimizer step (gradient accumulation).")] = 1,
    epochs: Annotated[float, typer.Option(help="Epochs to train.")] = 90.0,
    baseline_batch: Annotated[int, typer.Option(help="Batch of the one-GPU run that speedup compares against.")] = 32,
    dtype: Annotated[str, typer.Option(help="Compute type: fp32, tf32, or mixed precision fp16, bf16, fp8 (fp32 master weights).")] = "fp32",
    grad_dtype: Annotated[str | None, typer.Option(help="Gradient type exchanged: fp32 (default; mixed precision keeps fp32 gradients), bf16, fp16.")] = None,
    optimizer: Annotated[str, typer.Option(help="auto (momentum for convnets, adamw otherwise), sgd, momentum, adam, adamw, lamb.")] = "auto",
    overheads: Annotated[str, typer.Option(help="default, none, or interference=0.189,spread=0.01,optimizer=on,input=catalog|none|RATE.")] = "default",
    overlap: Annotated[bool, typer.Option(help="Overlap bucketed gradient exchange with backward (DDP).")] = True,
    bucket_size: Annotated[str, typer.Option(help="Gradient bucket size.")] = "25MiB",
    engine: Annotated[str, typer.Option(help="analytic (closed form, instant) or des (the simulator).")] = "analytic",
    hardware_catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict iteration time, time to train, speedup, cost and memory per GPU for each GPU count and algorithm."""
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
    records = [
        predict_training(profile, cluster, g, a, batch=batch, batch_per_gpu=batch_per_gpu, epochs=epochs,
                         baseline_batch=baseline_batch, dtype=dtype, grad_dtype=grad_dtype, optimizer=optimizer,
                         overheads=costs, accumulation=accumulation, overlap=overlap, bucket_nbytes=bucket_nbytes,
                         engine=engine).record()
        for g in gpu_counts for a in algos
    ]
    head = records[0]
    title = (f"{model} on {cluster.name} ({engine}), {head['dtype']} (grads {head['grad_dtype']}, {head['optimizer']}), "
             f"batch {batch if batch else f'{batch_per_gpu}/GPU'}, {epochs:g} epochs "
             f"(speedup vs 1 GPU at batch {baseline_batch})")
    rows = [{**r, "memory": (r["memory_GiB"], r["fits"], r["memory_capacity_GiB"])} for r in records]
    table = _table(title, rows, [
        ("gpus", "gpus", str), ("algo", "algo", str),
        ("compute_s", "compute", _seconds), ("comm_s", "comm", _seconds), ("exposed_comm_s", "exposed", _seconds),
        ("iteration_s", "iter", _seconds), ("speedup", "speedup", lambda x: f"{x:.1f}x"), ("efficiency", "eff", lambda x: f"{x:.0%}"),
        ("time_to_train_s", "train", _seconds), ("cost", "cost", _dollars), ("memory", "mem", _memory)])
    _emit(records, as_json, table)
    if not as_json and any(r["fits"] is False for r in records):
        console.print("[red]![/red] does not fit the GPU's memory: plain data parallelism keeps a full replica (weights, gradients, optimizer "
                      "state) on every GPU; shard it (ZeRO/FSDP), shrink the batch per GPU, or use bigger GPUs.")


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
) -> None:
    """All-reduce time, algbw and busbw (nccl-tests definitions) predicted in closed form."""
    cluster = _cluster(hardware, hardware_catalog)
    records = [_collective_record(a, p, n, cluster)
               for a in split_specs(algo)
               for p in parse_int_list(ranks, "ranks") for n in parse_size_list(size, what="size")]
    table = _table(f"all-reduce on {cluster.name} (predicted)", records, [
        ("algo", "algo", str), ("ranks", "ranks", str), ("nbytes", "size", format_bytes),
        ("time_s", "time", _seconds), ("algbw_GBps", "algbw GB/s", lambda x: f"{x:.2f}"),
        ("busbw_GBps", "busbw GB/s", lambda x: f"{x:.2f}")])
    _emit(records, as_json, table)


@app.command()
def sweep(
    out: Annotated[Path, typer.Option(help="Output file: .csv or .json.")],
    model: Annotated[str, typer.Option(help="Models, comma-separated.")] = "googlenet,nin",
    hardware: Annotated[str, typer.Option(help="Presets or YAMLs, comma-separated.")] = "titan",
    gpus: Annotated[str, typer.Option(help="GPU counts.")] = "1:128",
    algo: Annotated[str, typer.Option(help="Algorithms.")] = "tree,ps,ring",
    batch: Annotated[str, typer.Option(help="Global batches, comma-separated.")] = "256,1024",
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 90.0,
    hardware_catalog: CatalogOpt = None,
) -> None:
    """Predict a whole grid (models x hardware x GPUs x algorithms x batches) into a CSV or JSON file."""
    if out.suffix not in (".csv", ".json"):
        raise UserError(f"out: must end in .csv or .json, got {out.name!r}")
    models = split_list(model)
    clusters = [_cluster(h, hardware_catalog) for h in split_list(hardware)]
    profiles = [load_workload(m) for m in models]
    records = []
    for profile in profiles:
        for cluster in clusters:
            for g in parse_int_list(gpus, "gpus"):
                for a in split_specs(algo):
                    for b in parse_int_list(batch, "batch"):
                        if b >= g:
                            records.append(predict_training(profile, cluster, g, a, batch=b, epochs=epochs).record())
    if out.suffix == ".json":
        write_json_atomic(out, records)
    else:
        write_csv_atomic(out, records)
    console.print(f"wrote {len(records)} predictions to {out}")


@app.command()
def simulate(
    plan: Annotated[str, typer.Option(help="Algorithm, e.g. ring, tree, ps:servers=4.")] = "ring",
    ranks: Annotated[int, typer.Option(help="Number of ranks.")] = 64,
    size: Annotated[str, typer.Option(help="Buffer size.")] = "64MiB",
    topology: Annotated[str | None, typer.Option(
        help="fat-tree:k=8, torus:dims=4x4x4, star, dragonfly:..., a topology YAML; default: the hardware's.")] = None,
    hardware: Annotated[str, typer.Option(help="Preset or YAML: link rates, latencies, software alpha, gamma.")] = "dgx-a100",
    eager: Annotated[bool, typer.Option(help="Sends complete when handed to the transport (TCP socket buffers).")] = False,
    trace: Annotated[Path | None, typer.Option(help="Write the predicted Trace (JSON).")] = None,
    chrome: Annotated[Path | None, typer.Option(help="Write a Chrome/Perfetto trace.")] = None,
    seed: Annotated[int, typer.Option(help="Seed (ECMP path choice).")] = 0,
    hardware_catalog: CatalogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Play one all-reduce plan on a network with the discrete-event engine (links shared max-min fairly)."""
    import time

    from firesim.engine import simulate as run_engine
    from firesim.topology import from_spec
    from firesim.training import cluster_topology

    if ranks < 1:
        raise UserError(f"ranks: must be >= 1, got {ranks}")
    cluster = _cluster(hardware, hardware_catalog)
    nbytes = parse_bytes(size)
    built = build(plan, ranks, nbytes)
    link = cluster.inter_node_link
    graph = (cluster_topology(cluster, ranks) if topology is None else
             from_spec(topology, ranks, bandwidth_Bps=link.bandwidth_Bps, latency_s=link.latency_s / 2,
                       efficiency=link.efficiency))
    cost = comm_params(cluster)
    start = time.perf_counter()
    result = run_engine(built, graph, alpha_s=cluster.software_latency_s, gamma_s_per_byte=cost.gamma_s_per_byte,
                        eager=eager, seed=seed)
    wall_s = time.perf_counter() - start
    if trace:
        result.save(trace)
    if chrome:
        result.to_chrome(chrome)
    time_s = result.duration_s
    algbw, busbw = allreduce_bandwidths_GBps(nbytes, time_s, ranks)
    record = {"plan": plan, "ranks": ranks, "nbytes": nbytes, "topology": graph.graph.get("name", topology),
              "hardware": cluster.name, "time_s": time_s, "algbw_GBps": algbw,
              "busbw_GBps": busbw, "ops": built.n_ops,
              "events": int(result.header.extra.get("events", 0)), "wall_s": wall_s}
    table = _table(f"{plan} on {record['topology']} (simulated)", [record], [
        ("ranks", "ranks", str), ("nbytes", "size", format_bytes), ("time_s", "time", _seconds),
        ("algbw_GBps", "algbw GB/s", lambda x: f"{x:.2f}"), ("busbw_GBps", "busbw GB/s", lambda x: f"{x:.2f}"),
        ("ops", "ops", lambda x: f"{x:,}"), ("wall_s", "wall", _seconds)])
    _emit([record], as_json, table)


@plans_app.command("list")
def plans_list(as_json: JsonOpt = False) -> None:
    """Every registered algorithm: name, aliases, options with their bounds, closed-form cost."""
    from firesim.plans import algorithms

    records = []
    for a in algorithms():
        records.append({"name": a.name, "aliases": list(a.aliases), "summary": a.summary, "options": a.options.describe(),
                        "closed_form": a.time is not None, "cost": a.cost or "engine only"})
    table = Table(title="algorithms (firesim.plans.registry)", header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("algorithm", no_wrap=True)
    table.add_column("options (default, bounds)", overflow="fold")
    table.add_column("closed-form cost", overflow="fold")
    for rec in records:
        aliases = f"\n[dim]{', '.join(rec['aliases'])}[/dim]" if rec["aliases"] else ""
        table.add_row(escape(rec["name"]) + aliases, escape("\n".join(rec["options"]) or "-"), escape(rec["cost"]))
    _emit(records, as_json, table)


@plans_app.command("show")
def plans_show(
    algo: Annotated[str, typer.Argument(help="Algorithm, e.g. ring or ps:servers=2.")],
    ranks: Annotated[int, typer.Option(help="Number of ranks.")] = 4,
    size: Annotated[str, typer.Option(help="Buffer size.")] = "1MiB",
    as_json: JsonOpt = False,
) -> None:
    """Print every rank's program (op, chunk, peer, bytes)."""
    if ranks < 1:
        raise UserError(f"ranks: must be >= 1, got {ranks}")
    plan = build(algo, ranks, parse_bytes(size))
    verify(plan)
    if as_json:
        sys.stdout.write(json.dumps(plan.to_dict()) + "\n")
        return
    nbytes = plan.op_nbytes()
    console.print(f"[bold]{plan.name}[/bold]: {plan.ranks} ranks ({plan.workers} workers), "
                  f"{format_bytes(plan.nbytes)} in {plan.chunks} chunks, {plan.n_ops} ops — verified")
    for r in range(plan.ranks):
        lo = int(plan.offsets[r])
        steps = []
        for i, (op, chunk, span, peer, seconds) in enumerate(plan.program(r)):
            chunks = f"c{chunk}" if span == 1 else f"c{chunk}..{chunk + span - 1}"
            arrow = {"send": "->", "recv": "<-", "reduce": "<+"}.get(op)
            steps.append(f"{op} {chunks} {arrow} {peer} ({format_bytes(nbytes[lo + i])})" if arrow else
                         f"compute {seconds:g}s")
        console.print(f"rank {r}: " + "; ".join(steps))


@plans_app.command("verify")
def plans_verify(
    algo: Annotated[str, typer.Argument(help="Algorithm.")],
    ranks: Annotated[str, typer.Option(help="Rank counts: 1:64 or 3,5,7.")] = "1:64",
) -> None:
    """Prove the plan correct (every rank ends with the full sum, nothing counted twice, no deadlock)."""
    counts = parse_int_list(ranks, "ranks")
    for p in counts:
        verify(build(algo, p, 4 * p))
    console.print(f"{algo}: verified for ranks {', '.join(map(str, counts))}")


@hardware_app.command("list")
def hardware_list(hardware_catalog: CatalogOpt = None, as_json: JsonOpt = False) -> None:
    """Cluster presets with their cost-model figures."""
    records = []
    for c in list_presets(load_catalog(hardware_catalog) if hardware_catalog else None):
        inter = comm_params(c, "inter")
        records.append({"name": c.name, "gpu": c.gpu.name, "gpus_per_node": c.gpus_per_node,
                        "inter_node_link": c.inter_node_link.name, "alpha_s": inter.alpha_s,
                        "bandwidth_GBps": 1 / inter.beta_s_per_byte / 1e9,
                        "price_per_gpu_hour_usd": price_per_gpu_hour(c), "description": c.description})
    table = _table("cluster presets", records, [
        ("name", "preset", str), ("gpu", "gpu", str), ("gpus_per_node", "gpus/node", str),
        ("inter_node_link", "inter-node link", str), ("alpha_s", "alpha", _seconds),
        ("bandwidth_GBps", "GB/s per GPU", lambda x: f"{x:.2f}"),
        ("price_per_gpu_hour_usd", "$/GPU-h", lambda x: "-" if x is None else f"{x:.2f}")])
    _emit(records, as_json, table)


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """Models with saved profiles: parameters, input, forward FLOPs per sample, dataset."""
    records = []
    for name in list_workloads():
        p = load_workload(name)
        sample = f"{p.seq_len} tokens" if p.sample == "sequence" else "x".join(map(str, p.input_shape))
        records.append({"name": name, "params": p.params, "sample": sample, "fwd_flops": p.fwd_flops,
                        "gradient_nbytes": p.params * 4, "dataset": p.dataset, "layers": len(p.layers)})
    table = _table("model zoo", records, [
        ("name", "model", str), ("params", "params", lambda x: f"{x / 1e6:.1f} M"), ("sample", "sample", str),
        ("fwd_flops", "fwd GFLOP/sample", lambda x: f"{x / 1e9:.2f}"), ("gradient_nbytes", "fp32 grads", format_bytes),
        ("dataset", "dataset", str), ("layers", "layers", str)])
    _emit(records, as_json, table)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except UserError as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


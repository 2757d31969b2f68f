"""`firesim`: predict training time and collective cost, show plans, list hardware and models.

Every command takes ``--json`` for machine-readable output. Bad input exits with code 2 and one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from firesim.analytic import allreduce_bandwidths_GBps
from firesim.clikit import Column, output_file, print_table, run_app
from firesim.cluster import allreduce_seconds
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
    parse_size_list,
    split_list,
)
from firesim.workload import list_workloads, load_workload

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Predict how fast a network trains on a GPU cluster, and which gradient exchange wins.")
plans_app = typer.Typer(no_args_is_help=True, help="Inspect and check communication plans.")
hardware_app = typer.Typer(no_args_is_help=True, help="The hardware catalog.")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo's saved profiles.")
app.add_typer(plans_app, name="plans")
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")
console = Console(markup=False, highlight=False, emoji=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Every column, even beyond the terminal's width.")]
CatalogOpt = Annotated[Path | None, typer.Option("--hardware-catalog", help="Extra YAML that overrides or adds catalog entries.")]
MaxOpsOpt = Annotated[int, typer.Option("--max-ops", min=1, max=2**40, help="Refuse plans of more ops than this "
                                        "(memory and time grow with it; see firesim.limits).")]
MaxNodesOpt = Annotated[int, typer.Option("--max-nodes", min=1, max=2**30, help="Refuse topologies of more nodes.")]


def _gbps(x: float) -> str:
    return f"{x:.2f}" if x == x and x != float("inf") else "-"


def _dollars(x: float | None) -> str:
    return "-" if x is None else f"${x:,.0f}"


def _emit(records: list[dict], as_json: bool, title: str, columns: list[Column], wide: bool = False) -> None:
    if as_json:
        sys.stdout.write(dumps(records, indent=2) + "\n")
    else:
        print_table(console, title, records, columns, wide=wide)


def _cluster(hardware: str, catalog: Path | None):
    return resolve_cluster(hardware, load_catalog(catalog) if catalog else None)


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
    epochs: Annotated[float, typer.Option(min=1e-6, max=1e6, help="Epochs to train.")] = 90.0,
    baseline_batch: Annotated[int, typer.Option(min=1, max=MAX_COUNT, help="Batch of the one-GPU run that speedup "
                                                "compares against.")] = 32,
    dtype: Annotated[str, typer.Option(help="Compute type: fp32, tf32, or mixed precision fp16, bf16, fp8 (fp32 master weights).")] = "fp32",
    grad_dtype: Annotated[str | None, typer.Option(help="Gradient type exchanged: fp32 (default; mixed precision keeps fp32 gradients), bf16, fp16.")] = None,
    optimizer: Annotated[str, typer.Option(help="auto (momentum for convnets, adamw otherwise), sgd, momentum, adam, adamw, lamb.")] = "auto",
    overheads: Annotated[str, typer.Option(help="default, none, or key=value items, e.g. interference=0.189, spread=0.01, optimizer=on, "
                                             "input=catalog or none or a RATE.")] = "default",
    overlap: Annotated[bool, typer.Option(help="Overlap bucketed gradient exchange with backward (DDP).")] = True,
    bucket_size: Annotated[str, typer.Option(help="Gradient bucket size.")] = "25MiB",
    engine: Annotated[Literal["analytic", "des"], typer.Option(help="analytic (closed form, instant) or des (the simulator).")] = "analytic",
    hardware_catalog: CatalogOpt = None,
    max_ops: MaxOpsOpt = MAX_OPS,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
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
                         engine=engine, max_ops=max_ops).record()
        for g in gpu_counts for a in algos
    ]
    head = records[0]
    title = (f"{profile.name} on {cluster.name} ({engine}), {head['dtype']} (grads {head['grad_dtype']}, "
             f"{head['optimizer']}), batch {batch if batch else f'{batch_per_gpu}/GPU'}, {epochs:g} epochs "
             f"(speedup vs 1 GPU at batch {baseline_batch})")
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
        console.print("! does not fit the GPU's memory: plain data parallelism keeps a full replica (weights, "
                      "gradients, optimizer state) on every GPU; shard it (ZeRO/FSDP), shrink the batch per GPU, or "
                      "use bigger GPUs.")


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
    model: Annotated[str, typer.Option(help="Models, comma-separated.")] = "googlenet,nin",
    hardware: Annotated[str, typer.Option(help="Presets or YAMLs, comma-separated.")] = "titan",
    gpus: Annotated[str, typer.Option(help="GPU counts.")] = "1:128",
    algo: Annotated[str, typer.Option(help="Algorithms.")] = "tree,ps,ring",
    batch: Annotated[str, typer.Option(help="Global batches, comma-separated.")] = "256,1024",
    epochs: Annotated[float, typer.Option(min=1e-6, max=1e6, help="Epochs.")] = 90.0,
    hardware_catalog: CatalogOpt = None,
) -> None:
    """Predict a whole grid (models x hardware x GPUs x algorithms x batches) into a CSV or JSON file."""
    clusters = [_cluster(h, hardware_catalog) for h in split_list(hardware, "hardware")]
    profiles = [load_workload(m) for m in split_list(model, "model")]
    gpu_counts, algos = parse_int_list(gpus, "gpus"), split_specs(algo)
    batches = parse_int_list(batch, "batch")
    for a in algos:
        resolve(a)
    records = [predict_training(profile, cluster, g, a, batch=b, epochs=epochs).record()
               for profile in profiles for cluster in clusters for g in gpu_counts for a in algos for b in batches
               if b >= g]
    if out.suffix.lower() == ".json":
        write_json_atomic(out, records)
    else:
        write_csv_atomic(out, records)
    console.print(f"wrote {len(records)} predictions to {out}")


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
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed (ECMP path choice).")] = 0,
    hardware_catalog: CatalogOpt = None,
    max_ops: MaxOpsOpt = MAX_OPS,
    max_nodes: MaxNodesOpt = MAX_NODES,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Play one all-reduce plan on a network with the discrete-event engine (links shared max-min fairly)."""
    import time

    from firesim.engine import simulate as run_engine
    from firesim.topology import from_spec
    from firesim.training import cluster_topology

    cluster = _cluster(hardware, hardware_catalog)
    nbytes = parse_bytes(size)
    built = build(plan, ranks, nbytes, max_ops=max_ops)
    link = cluster.inter_node_link
    graph = (cluster_topology(cluster, built.ranks) if topology is None else
             from_spec(topology, built.ranks, bandwidth_Bps=link.bandwidth_Bps, latency_s=link.latency_s / 2,
                       efficiency=link.efficiency, max_nodes=max_nodes))
    cost = comm_params(cluster)
    start = time.perf_counter()
    result = run_engine(built, graph, alpha_s=cluster.software_latency_s, gamma_s_per_byte=cost.gamma_s_per_byte,
                        eager=eager, seed=seed, max_ops=max_ops)
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
    _emit([record], as_json, f"{plan} on {record['topology']} (simulated)", [
        Column("ranks", "ranks"), Column("nbytes", "size", format_bytes), Column("time_s", "time", format_duration),
        Column("algbw_GBps", "algbw GB/s", _gbps), Column("busbw_GBps", "busbw GB/s", _gbps),
        Column("ops", "ops", format_count), Column("wall_s", "wall", format_duration, optional=1)], wide)


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
    console.print(f"{plan.name}: {plan.ranks} ranks ({plan.workers} workers), "
                  f"{format_bytes(plan.nbytes)} in {plan.chunks} chunks, {plan.n_ops} ops — verified", soft_wrap=True)
    for r in range(plan.ranks):
        lo = int(plan.offsets[r])
        steps = []
        for i, (op, chunk, span, peer, seconds) in enumerate(plan.program(r)):
            chunks = f"c{chunk}" if span == 1 else f"c{chunk}..{chunk + span - 1}"
            arrow = {"send": "->", "recv": "<-", "reduce": "<+"}.get(op)
            steps.append(f"{op} {chunks} {arrow} {peer} ({format_bytes(nbytes[lo + i])})" if arrow else
                         f"compute {format_duration(seconds)}")
        console.print(f"rank {r}: " + "; ".join(steps), soft_wrap=True)


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
    console.print(f"{algo}: verified for ranks {', '.join(map(str, counts))}", soft_wrap=True)


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

"""Compute model vs published throughput: every single-GPU calibration figure (predicted, published, error),
the 8-GPU prediction beside it with the held-out published 8-GPU figure, the other held-out checks, and
FireCaffe's 128-GPU speedups. Deterministic (no timing): the same numbers on any machine.

`python -m bench compute` prints the tables; `python -m bench.compute --fit` prints the efficiencies the
calibration figures give (what hardware.yaml holds), `--markdown` the tables as Markdown for the README.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from firesim.hardware import load_catalog
from firesim.throughput import (
    PublishedFigure,
    figure_cluster,
    fit_catalog,
    load_figures,
    predicted_samples_per_s,
)
from firesim.training import iteration, predict
from firesim.workload import list_workloads, load_workload

DGX_OF = {"a100-sxm4-80gb": "dgx-a100", "v100-sxm2": "dgx-1v"}
FIRECAFFE = (("googlenet", 32, 47.0), ("nin", 256, 39.0))  # model, one-GPU batch, the paper's 128-GPU speedup


def _error(predicted: float, published: float) -> str:
    return f"{(predicted - published) / published:+.1%}"


def _where_time_goes(figure: PublishedFigure) -> str:
    """The 8-GPU step's losses against N x one GPU, as fractions of the step."""
    it = iteration(load_workload(figure.model), figure_cluster(figure), figure.gpus, figure.batch_per_gpu, "ring",
                   dtype=figure.dtype, optimizer=figure.optimizer, accumulation=figure.accumulation)
    parts = (("sync", it.sync_s), ("interference", it.interference_s), ("comm", it.exposed_comm_s),
             ("input", it.input_wait_s))
    return ", ".join(f"{name} {t / it.iteration_s:.1%}" for name, t in parts if t > 0) or "-"


def rows() -> tuple[list[dict], list[dict], list[dict]]:
    """(calibration rows with their 8-GPU predictions, other held-out checks, FireCaffe speedups)."""
    figures = [f for f in load_figures() if f.model in list_workloads()]
    checks = {(f.model, f.dtype, f.hardware, f.gpus): f for f in figures if f.role == "check"}
    calibration, held_out = [], []
    for f in figures:
        predicted = predicted_samples_per_s(f)
        row = {"name": f.name, "model": f.model, "hardware": f.hardware, "gpus": f.gpus, "dtype": f.dtype,
               "batch": f"{f.batch_per_gpu}" + (f"x{f.accumulation}" if f.accumulation > 1 else ""),
               "mode": f.mode, "published": f.samples_per_s, "predicted": predicted,
               "error": _error(predicted, f.samples_per_s)}
        if f.role == "check":
            if f.gpus > 1:
                row["lost"] = _where_time_goes(f)
            held_out.append(row)
            continue
        preset = DGX_OF.get(f.hardware)
        if preset:
            eight = f.model_copy(update={"hardware": preset, "gpus": 8, "role": "check", "fits": ()})
            row.update(preset=preset, eight_predicted=predicted_samples_per_s(eight),
                       eight_scaling=predicted_samples_per_s(eight) / predicted)
            published = checks.get((f.model, f.dtype, preset, 8))
            if published:
                row.update(eight_published=published.samples_per_s,
                           eight_published_scaling=published.samples_per_s / f.samples_per_s,
                           eight_error=_error(row["eight_predicted"], published.samples_per_s))
        calibration.append(row)
    firecaffe = []
    for model, baseline, paper in FIRECAFFE:
        if model in list_workloads():
            p = predict(model, "titan", 128, "tree", batch=1024, baseline_batch=baseline, overlap=False)
            firecaffe.append({"model": model, "gpus": 128, "batch": 1024, "baseline_batch": baseline,
                              "predicted": p.speedup, "paper": paper, "error": _error(p.speedup, paper)})
    return calibration, held_out, firecaffe


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def tables() -> list[Table]:
    calibration, held_out, firecaffe = rows()
    t1 = Table(title="single-GPU calibration figures (fitted: error is rounding) and 8 GPUs predicted beside "
                     "the held-out published figure", title_justify="left")
    for col in ("figure", "dtype", "batch", "published/s", "predicted/s", "error", "8-GPU preset", "8 GPUs pred",
                "scaling", "8 GPUs published", "scaling", "8-GPU error"):
        t1.add_column(col, justify="right")
    for r in calibration:
        t1.add_row(r["name"], r["dtype"], r["batch"], _rate(r["published"]), _rate(r["predicted"]), r["error"],
                   r.get("preset", "-"), _rate(r.get("eight_predicted")),
                   f"{r['eight_scaling']:.2f}x" if "eight_scaling" in r else "-", _rate(r.get("eight_published")),
                   f"{r['eight_published_scaling']:.2f}x" if "eight_published_scaling" in r else "-",
                   r.get("eight_error", "-"))
    t2 = Table(title="held-out checks (never fitted)", title_justify="left")
    for col in ("figure", "hardware", "gpus", "dtype", "mode", "published/s", "predicted/s", "error",
                "predicted losses vs N x 1 GPU"):
        t2.add_column(col, justify="right")
    for r in held_out:
        t2.add_row(r["name"], r["hardware"], str(r["gpus"]), r["dtype"], r["mode"], _rate(r["published"]),
                   _rate(r["predicted"]), r["error"], r.get("lost", "-"))
    t3 = Table(title="FireCaffe on Titan, 128 GPUs, reduction tree, exchange after backward (held out)",
               title_justify="left")
    for col in ("model", "batch", "1-GPU batch", "predicted speedup", "paper", "error"):
        t3.add_column(col, justify="right")
    for r in firecaffe:
        t3.add_row(r["model"], str(r["batch"]), str(r["baseline_batch"]), f"{r['predicted']:.1f}x",
                   f"{r['paper']:.0f}x", r["error"])
    return [t1, t2, t3]


def markdown() -> str:
    """The same tables as Markdown, for the README."""
    out = []
    for table in tables():
        headers = [str(c.header) for c in table.columns]
        cells = [list(c.cells) for c in table.columns]
        out += [f"**{table.title}**", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(str(col[i]) for col in cells) + " |" for i in range(len(cells[0]))]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--fit" in argv:
        catalog = load_catalog()
        for key, value in fit_catalog(catalog).items():
            gpu, field, dtype = key.split(".")
            print(f"{key}: fitted {value:.4f}  (catalog {getattr(catalog.gpus[gpu], field)[dtype]})")
        return
    if "--markdown" in argv:
        print(markdown())
        return
    console = Console(width=200)
    for table in tables():
        console.print(table)


if __name__ == "__main__":
    main()

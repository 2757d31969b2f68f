"""Figures people would rather look at than read: the FireCaffe reproduction, the Pareto front of a
recommendation, and timelines (one training iteration on the engine; any Trace, measured or predicted).

Each ``*_figure`` returns a ``matplotlib.figure.Figure`` built without pyplot (no backend, no global state:
it shows inline in Jupyter and saves anywhere); ``save_figure`` writes it as a PNG atomically. The
``draw_*`` functions take an ``Axes``, so notebooks can compose them.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from firesim.io import check_writable, write_bytes_atomic

__all__ = ["draw_iteration", "draw_pareto", "draw_trace", "paper_figure", "pareto_figure", "save_figure",
           "timeline_figure"]

_OP_COLORS = {"send": "tab:blue", "recv": "tab:orange", "reduce": "tab:green", "compute": "tab:gray"}


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    """Write ``fig`` as a PNG atomically (an unwritable path is refused before drawing)."""
    check_writable(path, "plot")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------- the paper
def paper_figure(result):
    """(a) communication per iteration vs GPUs, one panel per model; (b) speedup vs GPUs for the training
    runs with the published points; and the main assumptions (``firesim.search.paper.PaperResult``)."""
    comm, train, setup = result.communication, result.training, result.setup
    models = list(dict.fromkeys(r["model"] for r in comm))
    train_models = list(dict.fromkeys(r["model"] for r in train))
    cols = max(len(models), len(train_models) + 2)
    fig = _figure(figsize=(4 * cols, 8.2))
    axes = fig.subplots(2, cols, squeeze=False)
    algos = list(dict.fromkeys(r["algo"] for r in comm))
    colors = {a: c for a, c in zip(algos, ("tab:red", "tab:blue", "tab:orange", "tab:green", "tab:purple"))}
    for ax, model in zip(axes[0], models):
        rows = [r for r in comm if r["model"] == model and r["gpus"] > 1]
        for algo in algos:
            mine = [r for r in rows if r["algo"] == algo]
            if not mine:
                continue
            g = [r["gpus"] for r in mine]
            ax.plot(g, [r["comm_s"] * 1e3 for r in mine], "o-", color=colors[algo], label=_algo_label(algo))
            formula = [r["paper_formula_s"] for r in mine]
            if all(f is not None for f in formula):
                ax.plot(g, [f * 1e3 for f in formula], ":", color=colors[algo], label=f"{_algo_label(algo)}, paper's formula")
        nbytes = rows[0]["gradient_nbytes"] if rows else 0
        ax.set(xscale="log", yscale="log", xlabel="GPUs", ylabel="communication per iteration (ms)",
               title=f"(a) {model}: {nbytes / 1e6:.0f} MB of fp32 gradients")
        ax.set_xticks([r["gpus"] for r in rows if r["algo"] == algos[0]])
        ax.get_xaxis().set_major_formatter(_plain_ticks())
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    for ax in axes[0][len(models):]:
        ax.axis("off")
    for ax, model in zip(axes[1], train_models):
        rows = [r for r in train if r["model"] == model]
        for batch, color in zip(dict.fromkeys(r["batch"] for r in rows), ("tab:blue", "tab:green", "tab:purple")):
            for algo in dict.fromkeys(r["algo"] for r in rows if r["algo"] != "none"):
                mine = [r for r in rows if r["batch"] == batch and r["algo"] in (algo, "none")]
                style = "-" if algo == setup.algos[0] else "--"
                g = [r["gpus"] for r in mine]
                ax.plot(g, [r["speedup"] for r in mine], "o" + style, color=color,
                        label=f"batch {batch}, {_algo_label(algo)}")
                if algo == setup.algos[0] and setup.staging_link:
                    ax.fill_between(g, [r["speedup_serial_staging"] for r in mine], [r["speedup"] for r in mine],
                                    color=color, alpha=0.15, lw=0,
                                    label="down to: copies to host not overlapped" if batch == rows[-1]["batch"] else None)
        published = [(r["gpus"], r["published_speedup"]) for r in rows if r["published_speedup"]]
        for g, s in published:
            ax.plot([g], [s], "k*", markersize=14, label=f"published {s:g}x")
        gmax = max(r["gpus"] for r in rows)
        ax.plot([1, gmax], [1, gmax], color="0.6", lw=0.8, label="linear")
        ax.set(xscale="log", yscale="log", xlabel="GPUs", ylabel="speedup vs the single-GPU baseline",
               title=f"(b) {model} on {result.assumptions[0]['value']}: predicted vs published")
        ax.get_xaxis().set_major_formatter(_plain_ticks())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    text_ax = axes[1][len(train_models)]
    for ax in axes[1][len(train_models):]:
        ax.axis("off")
    text_ax.text(0, 1, _assumption_text(result), va="top", ha="left", fontsize=7.5, family="monospace",
                 transform=text_ax.transAxes, wrap=True)
    fig.suptitle("FireCaffe on Titan, predicted by firesim (nothing fitted to the paper's speedups)")
    fig.tight_layout()
    return fig


def _algo_label(algo: str) -> str:
    if algo.startswith("ps:servers=") and algo.count("=") == 1:
        return f"parameter server, {algo.split('=')[1]} shards"
    return {"ps": "parameter server (1 server)", "tree": "reduction tree"}.get(algo, algo)


def _plain_ticks():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x:g}")


def _assumption_text(result) -> str:
    """The assumptions that move the numbers most, one short line each."""
    keep = ("peak_flops", "achieved", "cray-gemini.bandwidth", "cray-gemini.efficiency", "alpha, beta", "overlap",
            "baseline", "epochs")
    lines = ["assumptions (firesim paper prints them all):"]
    for row in result.assumptions:
        if any(k in row["name"] for k in keep):
            lines.append(f"{row['name']}: {row['value']}"[:70])
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- the Pareto
def pareto_figure(rec, title: str = ""):
    """``draw_pareto`` in a figure of its own."""
    fig = _figure(figsize=(11, 5.5))
    draw_pareto(fig.subplots(), rec, title)
    fig.tight_layout()
    return fig


def draw_pareto(ax, rec, title: str = "") -> None:
    """Every priced configuration of a ``Recommendation`` as time to train vs cost (log-log), coloured by
    hardware; the Pareto front, the deadline and the budget, and the two picks."""
    priced = [r for r in rec.records if r["status"] == "ok" and r["cost"] is not None]
    for hw in dict.fromkeys(r["hardware"] for r in priced):
        mine = [r for r in priced if r["hardware"] == hw]
        ax.scatter([r["time_to_train_s"] / 3600 for r in mine], [r["cost"] for r in mine], s=8, alpha=0.35, label=hw)
    front = rec.pareto
    if front:
        ax.step([r["time_to_train_s"] / 3600 for r in front], [r["cost"] for r in front], "k-", where="post",
                lw=1.2, label="Pareto front")
        ax.plot([r["time_to_train_s"] / 3600 for r in front], [r["cost"] for r in front], "k.", ms=5)
    if rec.deadline_s is not None:
        ax.axvline(rec.deadline_s / 3600, color="tab:red", ls="--", lw=1, label="deadline")
    if rec.budget_usd is not None:
        ax.axhline(rec.budget_usd, color="tab:purple", ls="--", lw=1, label="budget")
    for pick, marker, label in ((rec.fastest, "*", "fastest within budget"), (rec.cheapest, "D", "cheapest by deadline")):
        if pick is not None:
            ax.plot([pick["time_to_train_s"] / 3600], [pick["cost"]], marker, color="gold", mec="k", ms=13,
                    label=f"{label}: {_short(pick)}")
    ax.set(xscale="log", yscale="log", xlabel="time to train (hours)", ylabel="cost (USD)")
    ax.set_title(title or "time to train vs cost, every priced configuration", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _short(r: dict) -> str:
    return f"{r['hardware']} x{r['gpus']} {r['algo']} b{r['batch']} {r['dtype']}"


# ------------------------------------------------------------------------------------------- timelines
def draw_trace(ax, trace, title: str | None = None, t_max_s: float | None = None) -> None:
    """One lane per rank: sends in the upper half, receives and reduces in the lower, times in ms."""
    from firesim.plans.ir import OP_NAMES

    span_ms = (t_max_s or trace.duration_s) * 1e3
    for kind, name in enumerate(OP_NAMES):
        sel = trace.op == kind
        if not sel.any():
            continue
        lane = trace.rank[sel] + (0.05 if name == "send" else 0.5)
        start = trace.t_start[sel] * 1e3
        width = np.maximum((trace.t_end[sel] - trace.t_start[sel]) * 1e3, span_ms * 2e-3)
        ax.barh(lane, width, left=start, height=0.42, align="edge", color=_OP_COLORS.get(name, "k"), alpha=0.65,
                label=name)
    ranks = trace.header.ranks
    ax.set_xlim(0, span_ms * 1.02)
    ax.set_ylim(ranks, 0)
    ax.set_yticks(np.arange(ranks) + 0.5, [f"r{r}" for r in range(ranks)])
    ax.set_xlabel("ms")
    ax.set_title(title or f"{trace.header.plan} ({trace.header.source}): {trace.duration_s * 1e3:.2f} ms", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def draw_iteration(ax, sim, title: str | None = None, max_ranks: int = 16) -> None:
    """A training iteration played on the engine (``firesim.training.simulate_iteration``): per rank, forward
    and backward (at the rank's speed, backward slowed where buckets are on the wire) on the upper half of its
    lane, each gradient bucket's all-reduce (from when backward produced it to when it finished there) on the
    lower half; the vertical line is the end of the iteration."""
    from matplotlib import colormaps

    ranks = min(sim.gpus, max_ranks)
    lanes = np.arange(ranks)
    speed = sim.rank_speed[:ranks]
    start, end = sim.backward_start_s[:ranks], sim.backward_end_s[:ranks]
    ms = 1e3
    ax.barh(lanes + 0.05, start * ms, left=0, height=0.42, align="edge", color="0.75", label="forward")
    ax.barh(lanes + 0.05, (end - start) * ms, left=start * ms, height=0.42, align="edge", color="tab:gray",
            label="backward")
    cmap = colormaps["tab20"]
    for b in range(sim.bucket_ready_s.shape[0]):
        ready, done = sim.bucket_ready_s[b, :ranks], sim.bucket_done_s[b, :ranks]
        ax.barh(lanes + 0.5, (done - ready) * ms, left=ready * ms, height=0.42, align="edge", color=cmap(b % 20),
                alpha=0.85, label="bucket all-reduce" if b == 0 else None)
    ax.axvline(sim.iteration_s * ms, color="k", lw=0.8)
    slow = speed < 0.95 * np.median(speed)  # a straggler, not the few-percent spread of the overheads
    ax.set_ylim(ranks, 0)
    ax.set_yticks(lanes + 0.5, [f"r{r}" + ("*" if slow[r] else "") for r in range(ranks)])
    ax.set_xlabel("ms")
    marks = ", * = straggler" if slow.any() else ""
    ax.set_title(title or f"{sim.algo} on {sim.gpus} GPUs: iteration {sim.iteration_s * ms:.1f} ms, "
                 f"exposed communication {sim.exposed_comm_s * ms:.1f} ms{marks}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")


def timeline_figure(sims: Sequence, titles: Sequence[str] | None = None, suptitle: str = ""):
    """Iterations (``SimulatedIteration``) or Traces side by side, on a common time axis."""
    fig = _figure(figsize=(6.5 * len(sims), 0.6 + 0.32 * max(_lanes(s) for s in sims) + 1.5))
    axes = fig.subplots(1, len(sims), squeeze=False, sharex=True)
    t_max = max(getattr(s, "iteration_s", None) or s.duration_s for s in sims)
    for i, (ax, sim) in enumerate(zip(axes[0], sims)):
        title = titles[i] if titles else None
        if hasattr(sim, "bucket_ready_s"):
            draw_iteration(ax, sim, title)
        else:
            draw_trace(ax, sim, title, t_max)
        ax.set_xlim(0, t_max * 1e3 * 1.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _lanes(sim) -> int:
    return min(sim.gpus, 16) if hasattr(sim, "bucket_ready_s") else sim.header.ranks


"""The validation report: tables, figures and docs/validation.md from ``firerun.validate`` reports.

docs/validation.md is part hand-written (how it is measured, the analysis of every miss) and part generated:
each block between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` is replaced on every run, the rest
of the file is kept. A missing file is created with every block under a stub heading.
"""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from firerun.validate import (
    LARGE_NBYTES,
    RANK_TIE,
    TARGET_LARGE,
    TARGET_LARGE_MEDIAN,
    TARGET_SMALL,
    CaseResult,
    ValidationReport,
    error_summary,
)
from firesim.errors import UserError
from firesim.io import write_json_atomic
from firesim.trace import Trace
from firesim.units import format_bytes

__all__ = ["check_writable", "format_table", "plot_overview", "plot_timelines", "summary_line", "summary_text",
           "write_report"]

DOC_NAME = "validation.md"
BLOCKS = ("run", "summary", "misses", "figures", "tables")


def check_writable(folder: Path) -> None:
    """Refuse a report folder that cannot be written, before a long run rather than after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".validate-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"out: cannot write to {str(folder)!r}: {err.strerror or err}") from None


# --------------------------------------------------------------------------------------------------------
# text


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 10 else f"{x:.2f} s"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def summary_line(report: ValidationReport) -> str:
    cal = report.calibration
    return (f"{report.topology}: {report.hosts} ranks, {report.backend}, {report.shaper} shaping, alpha "
            f"{cal.alpha_s * 1e6:.0f} us, message overhead {cal.message_overhead_s * 1e6:.0f} us, gamma "
            f"{cal.gamma_s_per_byte * 1e9:.3f} ns/B, TCP buffering {cal.buffered_bytes / 2**20:.2f} MiB, "
            f"rendezvous from {_rendezvous(cal)}, burst peak {cal.peak_bandwidth_Bps / 1e9:.2f} GB/s, swap "
            f"{cal.swap_serialized:.0%} serialized ({cal.swap_over_model:+.0%} over the model), "
            f"{report.repeat} repeats ({report.machine}, {report.date}, CPU {report.background_cpu:.0%} busy before)")


def _rendezvous(cal) -> str:
    """The smallest message that waits for its receive, as the late-receive probes found it."""
    if cal.rendezvous_nbytes is None:
        return "none probed"
    return "any size" if cal.rendezvous_nbytes == 0 else format_bytes(int(cal.rendezvous_nbytes))


def _case_row(c: CaseResult) -> list[str]:
    return [c.spec, format_bytes(c.nbytes), f"{_ms(c.measured_s)} ({_ms(c.measured_min_s)}-{_ms(c.measured_max_s)})",
            _ms(c.predicted_s), f"{c.error:+.1%}" + ("" if c.ok else " ✗"),
            f"{c.op_error_median:.1%} / {c.op_error_p95:.1%}", f"{c.rank_error_max:.1%}",
            f"{c.link_bytes_error:+.1%}", "yes" if c.ranking_right else "**no**", c.cause]


_CASE_HEAD = ["algorithm", "size", "measured median (min-max)", "predicted", "error",
              "per-op error median / p95", "per-rank error max", "link bytes", "ranking right", "cause (if missed)"]


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    align = ["---" if i == 0 or h in ("topology", "shaper", "backend", "algorithm", "cause (if missed)",
                                      "ranking", "ranking right", "worst case") else "---:"
             for i, h in enumerate(head)]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _wrong_pairs(order: dict) -> str:
    """'a/b (why), ...' for the wrongly ordered pairs of one ranking."""
    why = order.get("why") or [None] * len(order["wrong"])
    return ", ".join("/".join(w) + (f" ({_reason(y)})" if y else "") for w, y in zip(order["wrong"], why))


def _reason(why: dict) -> str:
    if why["outside_target"]:
        return " and ".join(why["outside_target"]) + " outside target"
    return f"both within target, {why['apart']:.1%} apart"


def format_table(report: ValidationReport) -> str:
    """One configuration as a Markdown table, then its rankings."""
    lines = [_markdown(_CASE_HEAD, [_case_row(c) for c in report.cases]), ""]
    for size, order in report.ranking.items():
        m, pr = " < ".join(order["measured"]), " < ".join(order["predicted"])
        verdict = "match" if not order["wrong"] else "MISMATCH " + _wrong_pairs(order)
        tie = f"; tie within {RANK_TIE:.0%}: " + ", ".join("/".join(t) for t in order["ties"]) if order["ties"] else ""
        lines.append(f"- {format_bytes(int(size))}: measured {m}; predicted {pr} ({verdict}{tie})")
    return "\n".join(lines)


def _targets(cases: Sequence[CaseResult], reports: Sequence[ValidationReport]) -> list[str]:
    """One line per target of the issue: met or not, with the numbers."""
    s = error_summary(cases)
    large, small = s["large"], s["small"]
    lines = []
    if large["cases"]:
        lines.append(f"every case >= 4 MiB within {TARGET_LARGE:.0%}: {'met' if not large['misses'] else 'NOT met'} "
                     f"({large['cases'] - large['misses']}/{large['cases']}; worst {_pct(large['max_abs_error'])}, "
                     f"{large['worst']})")
        median = large["median_abs_error"]
        lines.append(f"median |error| >= 4 MiB <= {TARGET_LARGE_MEDIAN:.0%}: "
                     f"{'met' if median <= TARGET_LARGE_MEDIAN else 'NOT met'} ({_pct(median)})")
    if small["cases"]:
        lines.append(f"every case < 4 MiB within {TARGET_SMALL:.0%}: {'met' if not small['misses'] else 'NOT met'} "
                     f"({small['cases'] - small['misses']}/{small['cases']}; median {_pct(small['median_abs_error'])}, "
                     f"worst {_pct(small['max_abs_error'])}, {small['worst']})")
    groups = sum(len(r.ranking) for r in reports)
    wrong = sum(bool(order["wrong"]) for r in reports for order in r.ranking.values())
    lines.append(f"predicted ranking right: {'met' if not wrong else 'NOT met'} ({groups - wrong}/{groups} "
                 "(configuration, size) groups)")
    why = [y for r in reports for order in r.ranking.values() for y in order.get("why", [])]
    near = [y["apart"] for y in why if not y["outside_target"]]
    if why:
        lines.append(f"wrongly ordered pairs: {len(why)}, {len(why) - len(near)} with a case outside its accuracy "
                     f"target" + (f", {len(near)} with both within it (measured {min(near):.1%}-{max(near):.1%} apart)"
                                  if near else ""))
    return lines


def summary_text(reports: Sequence[ValidationReport], failures: Sequence[str]) -> str:
    """The targets over every case of every report, for the terminal."""
    cases = [c for r in reports for c in r.cases]
    lines = [f"{len(cases)} cases in {len(reports)} configurations", *_targets(cases, reports)]
    lines += [f"FAILED: {f}" for f in failures]
    return "\n".join(lines)


def _summary_rows(reports: Sequence[ValidationReport]) -> list[list[str]]:
    rows = []
    for r in reports:
        s = r.error_summary()
        large, small = s["large"], s["small"]
        wrong = [f"{format_bytes(int(n))}: " + _wrong_pairs(o) for n, o in r.ranking.items() if o["wrong"]]
        rows.append([r.topology, r.shaper, r.backend, _pct(large["median_abs_error"]),
                     f"{_pct(large['max_abs_error'])} ({large['worst']})" if large["cases"] else "-",
                     _pct(small["median_abs_error"]), _pct(small["max_abs_error"]),
                     f"{large['misses'] + small['misses']}/{large['cases'] + small['cases']}",
                     "right" if r.ranking_match else "wrong: " + "; ".join(wrong),
                     f"{r.background_cpu:.0%}"])
    return rows


_SUMMARY_HEAD = ["topology", "shaper", "backend", "median \\|error\\| >= 4 MiB", "worst >= 4 MiB",
                 "median \\|error\\| < 4 MiB", "worst < 4 MiB", "misses", "ranking", "CPU busy before"]


def _blocks(reports: Sequence[ValidationReport], failures: Sequence[str], figures: list[Path], command: str,
            wall_s: float) -> dict[str, str]:
    cases = [c for r in reports for c in r.cases]
    machines = sorted({r.machine for r in reports})
    dates = sorted({r.date for r in reports})
    busy = [r.background_cpu for r in reports]
    run = [f"- **Command**: `{command}` ({wall_s / 60:.0f} min on this machine).",
           f"- **Machine**: {', '.join(machines)}; **date** {', '.join(dates)}; CPU busy before each "
           f"configuration {min(busy, default=0):.0%}-{max(busy, default=0):.0%} (other processes).",
           f"- **Runs**: {reports[0].repeat if reports else 0} measured runs per case after a warm-up; "
           f"{len(cases)} cases in {len(reports)} configurations.", ""]
    head = ["topology", "shaper", "backend", "alpha", "message overhead", "gamma", "TCP buffering",
            "rendezvous from", "burst peak", "swap: send-first serialized", "swap over the model"]
    run.append(_markdown(head, [[r.topology, r.shaper, r.backend, f"{r.calibration.alpha_s * 1e6:.0f} us",
                                 f"{r.calibration.message_overhead_s * 1e6:.0f} us",
                                 f"{r.calibration.gamma_s_per_byte * 1e9:.3f} ns/B",
                                 f"{r.calibration.buffered_bytes / 2**20:.2f} MiB",
                                 _rendezvous(r.calibration), f"{r.calibration.peak_bandwidth_Bps / 1e9:.2f} GB/s",
                                 f"{r.calibration.swap_serialized:.0%}", f"{r.calibration.swap_over_model:+.0%}"]
                                for r in reports]))
    busy_runs = [r for r in reports if r.warnings]
    if busy_runs:
        run += ["", f"**Warning**: {len(busy_runs)} of {len(reports)} configurations ran on a busy machine (other "
                f"processes used {min(r.background_cpu for r in busy_runs):.0%}-"
                f"{max(r.background_cpu for r in busy_runs):.0%} of the CPUs around the run): their times include "
                "CPU contention, which no network model should absorb."]
    run += [f"- FAILED {f}" for f in failures]
    summary = [f"- {line}" for line in _targets(cases, reports)] + ["", _markdown(_SUMMARY_HEAD, _summary_rows(reports))]
    misses = [c for c in cases if not c.ok or not c.ranking_right]
    owner = {id(c): r for r in reports for c in r.cases}
    miss_rows = [[owner[id(c)].topology, owner[id(c)].shaper, owner[id(c)].backend, c.spec, format_bytes(c.nbytes),
                  f"{c.error:+.1%}", "yes" if c.ranking_right else "**no**", c.cause or "ranking only"] for c in misses]
    miss_text = (_markdown(["topology", "shaper", "backend", "algorithm", "size", "error", "ranking right",
                            "cause (if missed)"], miss_rows) if misses else "No case misses its target.")
    figure_text = "\n\n".join(f"![{p.stem}]({p.name})" for p in figures)
    tables = []
    for topology in dict.fromkeys(r.topology for r in reports):
        rows = [[r.shaper, r.backend, *_case_row(c)] for r in reports if r.topology == topology for c in r.cases]
        tables += [f"### {topology}", "", _markdown(["shaper", "backend", *_CASE_HEAD], rows), ""]
    return {"run": "\n".join(run), "summary": "\n".join(summary), "misses": miss_text, "figures": figure_text,
            "tables": "\n".join(tables).rstrip()}


def _splice(text: str, blocks: dict[str, str]) -> str:
    """Replace each generated block of ``text``; blocks it lacks are appended."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        replacement = f"<!-- generated: {name} -->\n{body}\n<!-- end: {name} -->"
        if pattern.search(text):
            text = pattern.sub(lambda m, r=replacement: r, text)
        else:
            text = text.rstrip() + f"\n\n## {name.capitalize()}\n\n{replacement}\n"
    return text


def write_report(reports: Sequence[ValidationReport], failures: Sequence[str], out: Path, *, command: str,
                 wall_s: float) -> list[Path]:
    """docs/validation.md (its generated blocks), the figures and validation.json, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if reports:
        figures.append(out / "validation-overview.png")
        plot_overview(reports, figures[-1])
        for topology in dict.fromkeys(r.topology for r in reports):
            report = next(r for r in reports if r.topology == topology)  # its first shaper and backend
            figures.append(out / f"validation-{topology}.png")
            plot_timelines(report, figures[-1], nbytes=max(c.nbytes for c in report.cases if c.nbytes <= LARGE_NBYTES)
                           if any(c.nbytes <= LARGE_NBYTES for c in report.cases) else None)
    write_json_atomic(out / "validation.json", {"command": command, "wall_s": wall_s, "failures": list(failures),
                                                "reports": [r.to_dict() for r in reports]})
    doc = out / DOC_NAME
    text = doc.read_text() if doc.exists() else "# Validation: the simulator against real runs on an emulated cluster\n"
    _write_text(doc, _splice(text, _blocks(reports, failures, figures, command, wall_s)))
    return [doc, out / "validation.json", *figures]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------
# figures


def plot_timelines(report: ValidationReport, path: str | os.PathLike, nbytes: int | None = None,
                   max_cases: int = 9) -> None:
    """Measured (left) and predicted (right) timelines, one lane per rank, one row per case (of one size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from firesim.plans import Op

    cases = [c for c in report.cases if nbytes is None or c.nbytes == nbytes][:max_cases]
    fig, axes = plt.subplots(len(cases), 2, figsize=(12, 1.0 + 1.5 * len(cases)), squeeze=False)
    colors = {Op.SEND: "tab:blue", Op.RECV: "tab:orange", Op.REDUCE: "tab:green", Op.COMPUTE: "tab:gray"}
    for row, c in enumerate(cases):
        traces = [Trace.load(c.measured_trace), Trace.load(c.predicted_trace)]
        t_max = max(t.duration_s for t in traces) * 1e3
        for col, (trace, label) in enumerate(zip(traces, ("measured", "predicted"))):
            ax = axes[row][col]
            for kind, color in colors.items():
                sel = trace.op == kind
                if not sel.any():
                    continue
                lane = trace.rank[sel] + (0.05 if kind == Op.SEND else 0.5)
                start_ms = trace.t_start[sel] * 1e3
                width_ms = np.maximum(trace.t_end[sel] - trace.t_start[sel], 0) * 1e3
                ax.barh(lane, np.maximum(width_ms, t_max * 2e-3), left=start_ms, height=0.4, color=color,
                        alpha=0.6, align="edge", label=Op(kind).name.lower())
            ax.set_xlim(0, t_max * 1.02)
            ax.set_ylim(trace.header.ranks, 0)
            ax.set_yticks(np.arange(trace.header.ranks) + 0.5, [f"r{r}" for r in range(trace.header.ranks)])
            ax.set_title(f"{c.spec} {format_bytes(c.nbytes)} {label}: {trace.duration_s * 1e3:.1f} ms", fontsize=9)
            if row == len(cases) - 1:
                ax.set_xlabel("ms")
    axes[0][1].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{report.topology} ({report.shaper}, {report.backend}): measured vs predicted "
                 "(sends above, recv/reduce below each rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overview(reports: Sequence[ValidationReport], path: str | os.PathLike) -> None:
    """Predicted against measured for every case (left), and the signed error by size and topology (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    algos = list(dict.fromkeys(c.algorithm for r in reports for c in r.cases))
    colors = {a: plt.get_cmap("tab10")(i % 10) for i, a in enumerate(algos)}
    markers = {"torch": "o", "mpi": "^"}
    for r in reports:
        for c in r.cases:
            face = colors[c.algorithm] if r.shaper == "htb" else "none"
            left.scatter(c.measured_s * 1e3, c.predicted_s * 1e3, s=22, marker=markers.get(r.backend, "s"),
                         facecolors=face, edgecolors=colors[c.algorithm], linewidths=0.8)
    lo = min(c.measured_s for r in reports for c in r.cases) * 1e3 * 0.8
    hi = max(c.measured_s for r in reports for c in r.cases) * 1e3 * 1.25
    xs = np.geomspace(lo, hi, 50)
    left.plot(xs, xs, "k-", lw=0.8)
    left.fill_between(xs, xs * (1 - TARGET_LARGE), xs * (1 + TARGET_LARGE), color="0.85", zorder=0)
    left.set(xscale="log", yscale="log", xlabel="measured median (ms)", ylabel="predicted (ms)",
             title=f"every case (band: ±{TARGET_LARGE:.0%}); filled htb, hollow tbf; o gloo, ^ MPI")
    for a in algos:
        left.scatter([], [], color=colors[a], label=a, s=22)
    left.legend(fontsize=7, loc="upper left")
    topologies = list(dict.fromkeys(r.topology for r in reports))
    sizes = sorted({c.nbytes for r in reports for c in r.cases})
    width = 0.8 / max(len(topologies), 1)
    for t, topology in enumerate(topologies):
        for s, nbytes in enumerate(sizes):
            errors = [c.error * 100 for r in reports if r.topology == topology for c in r.cases if c.nbytes == nbytes]
            x = s + (t - (len(topologies) - 1) / 2) * width
            jitter = np.linspace(-width / 3, width / 3, len(errors)) if len(errors) > 1 else np.zeros(len(errors))
            right.scatter(x + jitter, errors, s=10, color=plt.get_cmap("tab10")(t % 10),
                          label=topology if s == 0 else None)
            if errors:
                right.plot([x - width / 2, x + width / 2], [statistics.median(errors)] * 2, "k-", lw=1.5)
    for level, style in ((TARGET_LARGE, "--"), (TARGET_SMALL, ":")):
        right.axhline(level * 100, color="0.4", ls=style, lw=0.8)
        right.axhline(-level * 100, color="0.4", ls=style, lw=0.8)
    right.axhline(0, color="k", lw=0.6)
    right.set_xticks(range(len(sizes)), [format_bytes(n) for n in sizes])
    right.set(xlabel="buffer size", ylabel="error (%): (predicted - measured) / measured",
              title=f"signed error by size and topology (bar: median; lines ±{TARGET_LARGE:.0%}, ±{TARGET_SMALL:.0%})")
    right.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

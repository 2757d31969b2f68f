"""Measured vs predicted training iterations (``firerun train --nproc 4 --emulate ...``), on the example
topologies: a compute-bound and a communication-bound configuration, three plans each, so the predicted
ranking is checked too. Emulated clusters need root; without it the same cases run on loopback.

Regenerate the README's table and ``docs/training-*.png`` on a quiet machine: ``python -m bench train``.
Targets (issue 10): iteration error <= 10 %, predicted ranking of the plans right.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = ROOT / "examples" / "topologies"
CASES = [  # (name, model, batch per worker, topology, steps)
    ("compute-bound", "resnet18_cifar_w16", 32, "star4-1g", 12),
    ("communication-bound", "resnet18_cifar_w16", 4, "two-level-4", 12),
]
ALGOS = ("ring", "tree", "ps")


def main() -> None:
    from firerun.emulate import check_emulable  # noqa: F401  (fails early if the package is broken)
    from firerun.iteration import MARKDOWN_HEADER, markdown_rows, measure_and_predict
    from firerun.train import TrainConfig

    emulate = os.geteuid() == 0
    if not emulate:
        print("not root: running on loopback instead of the emulated topologies")
    lines = list(MARKDOWN_HEADER)
    verdicts = []
    for name, model, batch, topology, steps in CASES:
        configs = [TrainConfig.make(model=model, batch=batch, steps=steps, algo=a) for a in ALGOS]
        report = measure_and_predict(configs, 4, emulate=TOPOLOGIES / f"{topology}.yaml" if emulate else None,
                                     skip=3, plot=ROOT / "docs" / f"training-{name}.png",
                                     log=lambda m: print(f"  {m}", flush=True))
        lines += markdown_rows(report, name)
        worst = max(abs(r.error) for r in report.results)
        verdicts.append(f"{name}: worst |error| {worst:.1%} (target <= 10 %), ranking "
                        f"{'right' if report.ranking_right else 'WRONG'}; cpu share {report.cpu_share:.2f}, "
                        f"{report.background_threads[1]:.1f} other runnable threads")
    print("\n".join(lines))
    print("\n".join(verdicts))

"""firesim: predict how fast a network trains on a GPU cluster, and which gradient exchange wins.

The public API, in the order a user meets it::

    from firesim import build, verify, simulate, predict, load_topology, compare
    plan = build("ring", 8, 64 << 20)            # a plan: every rank's program of sends, receives, reduces
    verify(plan)                                 # proof that it all-reduces, without deadlock
    trace = simulate(plan, "fat-tree:k=4", alpha_s=5e-6, gamma_s_per_byte=1e-11)   # the predicted Trace
    predict("googlenet", "titan", 128, "tree", batch=1024, epochs=72).speedup

Names load on first use, so ``import firesim.units`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build": "firesim.plans", "verify": "firesim.plans", "resolve": "firesim.plans", "register": "firesim.plans",
    "Algorithm": "firesim.plans", "Plan": "firesim.plans", "PlanBuilder": "firesim.plans",
    "simulate": "firesim.engine",
    "predict": "firesim.training", "iteration": "firesim.training", "simulate_iteration": "firesim.training",
    "load_topology": "firesim.topology", "from_spec": "firesim.topology",
    "Trace": "firesim.trace", "compare": "firesim.trace",
    "resolve_cluster": "firesim.hardware", "load_catalog": "firesim.hardware",
    "load_workload": "firesim.workload", "ModelProfile": "firesim.workload",
    "allreduce_seconds": "firesim.cluster",
    "UserError": "firesim.errors",
    "reproduce_paper": "firesim.search.paper", "PaperSetup": "firesim.search.paper",
    "recommend": "firesim.search.recommend", "sweep": "firesim.search.sweep", "grid": "firesim.search.sweep",
    "Setting": "firesim.search.sweep", "Case": "firesim.search.sweep", "search_space": "firesim.search.sweep",
    "make_executor": "firesim.search.executor",
    "WhatIf": "firesim.whatif", "parse_whatif": "firesim.whatif",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firesim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

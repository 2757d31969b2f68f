"""firerun: run communication plans for real, and name the rank at fault when one dies or hangs.

The public API, in the order a user meets it (inside a job started by ``firerun run``, torchrun or srun)::

    import torch
    from firerun import session
    from firesim import build

    with session("torch", timeout_s=30) as ex:       # joins the job: rendezvous, process group, fault board
        plan = build("ring", ex.size, 64 << 20)
        buf = torch.ones(16 << 20)
        trace = ex.run(plan, buf)                     # all-reduced in place; rank 0 gets the measured Trace

``execute(plan, tensor)`` is the one-shot form on a process group you set up yourself. A lost or hung peer
raises ``ExecError`` naming the rank at fault. Names load on first use, so ``import firerun`` (the launcher,
``firerun --help``) does not import torch. (No name here is also a submodule's: once imported, the submodule
would take its place.)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "session": "firerun.worker",
    "Executor": "firerun.executor", "execute": "firerun.executor", "Fault": "firerun.executor",
    "run_bench": "firerun.bench", "run_check": "firerun.check",
    "DistEnv": "firerun.env", "dist_env": "firerun.env",
    "ExecError": "firerun.errors",
    "Verdict": "firerun.liveness", "Wait": "firerun.liveness",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'firerun' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

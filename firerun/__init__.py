"""Run communication plans for real: the executor, benchmarks, calibration and launchers.

``from firerun.execute import execute`` then ``execute(plan, tensor, backend="torch")`` runs the calling
rank's program of a ``firesim`` plan with torch.distributed (gloo / NCCL) or mpi4py; ``firerun.Executor``
does the same for repeated runs. torch is imported on first use of those names, so the launcher and
``firerun --help`` start fast. (``firerun.execute`` itself is the module: a package attribute cannot be both.)
"""

from __future__ import annotations

from firerun.env import DistEnv, dist_env
from firerun.errors import ExecError

__all__ = ["DistEnv", "ExecError", "Executor", "Fault", "dist_env"]


def __getattr__(name: str):
    if name in ("Executor", "Fault"):
        import firerun.execute as module

        return getattr(module, name)
    raise AttributeError(f"module 'firerun' has no attribute {name!r}")

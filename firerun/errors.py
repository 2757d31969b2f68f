"""Failures of a running job (torch-free, so the launcher and the CLI's error path import nothing heavy)."""

from __future__ import annotations

PEER_FAILED = 3  # exit code of a rank that stopped because a peer died or hung (see firerun.cli)


class ExecError(RuntimeError):
    """This rank could not finish: a peer died, hung, or a transfer failed. The message is one line that names
    this rank, the rank at fault and what this rank was waiting for, e.g. ``rank 2: lost rank 3 (its process
    exited) while waiting for reduce chunk 3 from rank 1 (op 7 of 12)``.

    ``peer`` is the rank this one waited for; ``culprits`` the ranks at fault and ``cause`` why ('lost',
    'hung', 'deadlock'), when the job's fault board found them (empty / None otherwise).
    """

    def __init__(self, message: str, *, rank: int, op_index: int | None = None, peer: int | None = None,
                 timed_out: bool = False, culprits: tuple[int, ...] = (), cause: str | None = None):
        super().__init__(message)
        self.rank, self.op_index, self.peer, self.timed_out = rank, op_index, peer, timed_out
        self.culprits, self.cause = tuple(culprits), cause

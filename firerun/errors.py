"""Failures of a running job (torch-free, so the launcher and the CLI's error path import nothing heavy)."""

from __future__ import annotations


class ExecError(RuntimeError):
    """This rank could not finish: a peer died, hung, or a transfer failed. The message is one line that names
    this rank, the op it was waiting for and the peer, e.g. ``rank 2: timed out after 5.0 s waiting for reduce
    chunk 3 from rank 1 (op 7 of 12)``."""

    def __init__(self, message: str, *, rank: int, op_index: int | None = None, peer: int | None = None,
                 timed_out: bool = False):
        super().__init__(message)
        self.rank, self.op_index, self.peer, self.timed_out = rank, op_index, peer, timed_out

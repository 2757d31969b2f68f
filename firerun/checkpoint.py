"""Training checkpoints: written atomically, found again by ``--resume``.

A checkpoint holds what a resumed run needs to continue bit for bit: the model's parameters and buffers,
the optimizer's state (momentum), the number of optimizer steps done, and the run's settings (a resumed run
must use the same ones). Nothing else is needed: the learning rate is a function of the step
(``firerun.recipe``), the sampler a function of (seed, step) (``firerun.data``) and the random generator is
reseeded from (seed, step) at every step.

Rank 0 writes (replicas are identical, and checked to be before a checkpoint is written) into
``DIR/step-00000040.pt`` through a temporary file, fsync and rename, then points ``DIR/latest`` at it the
same way: a rank killed at any moment leaves either the previous checkpoint or the new one, never half a
file. The two newest are kept.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from firesim.errors import UserError

FORMAT = "firerun.checkpoint/1"
KEEP = 2


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save(directory: str | os.PathLike, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         settings: dict) -> Path:
    """Write the checkpoint after ``step`` optimizer steps; return its path."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"step-{step:08d}.pt"
        state = {"format": FORMAT, "step": step, "settings": settings,
                 "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "optimizer": optimizer.state_dict()}
        _write_atomic(path, lambda fh: torch.save(state, fh))
        _write_atomic(directory / "latest", lambda fh: fh.write(path.name.encode() + b"\n"))
    except OSError as err:
        raise UserError(f"checkpoint: cannot write into {str(directory)!r} ({err.strerror or err})") from None
    for old in sorted(directory.glob("step-*.pt"))[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``directory``, or None if there is none."""
    pointer = Path(directory) / "latest"
    try:
        name = pointer.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise UserError(f"checkpoint: cannot read {str(pointer)!r} ({err.strerror or err})") from None
    path = pointer.parent / name
    if not name or not path.is_file():
        raise UserError(f"checkpoint: {str(pointer)!r} names {name!r}, which is missing")
    return path


def load(path: str | os.PathLike, settings: dict) -> dict:
    """Read a checkpoint and check it was written by a run with the same ``settings``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise UserError(f"checkpoint: cannot read {str(path)!r} ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint: {str(path)!r} is not a {FORMAT} file")
    differ = sorted(k for k in set(settings) | set(state["settings"]) if settings.get(k) != state["settings"].get(k))
    if differ:
        k = differ[0]
        raise UserError(f"checkpoint: {str(path)!r} was written with {k}={state['settings'].get(k)!r}, this run "
                        f"has {k}={settings.get(k)!r}; resume with the same settings")
    return state

"""Who am I in this job? One function that reads rank and world size from whatever launched us.

Launchers name the same three numbers differently. The order below matters where several are set at once:
torchrun inside an Slurm step sets RANK *and* SLURM_PROCID (the step's, not ours), and ``mpiexec`` inside an
allocation sets PMI_RANK beside the batch step's SLURM_PROCID; the more specific launcher wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from firesim.errors import UserError

# (source, rank, world size, local rank, local world size) variable names, most specific launcher first.
_SCHEMES: tuple[tuple[str, str, str, str, str], ...] = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("pmix", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
)


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. ``source`` says which launcher's variables it came from."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str | None
    master_port: int | None
    source: str

    @property
    def launched(self) -> bool:
        return self.source != "single"


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value.split("(")[0].split(",")[0])  # SLURM_NTASKS_PER_NODE may read "4(x2)" or "4,2"
    except ValueError:
        raise UserError(f"{name}: expected an integer, got {value!r}") from None


def dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Rank, world size and local rank from torchrun, Open MPI, MPICH/PMI, PMIx or Slurm variables.

    Without any of them this is a single process (rank 0 of 1). MASTER_ADDR / MASTER_PORT are passed
    through when set (torch.distributed needs them; MPI does not).
    """
    env = os.environ if environ is None else environ
    for source, rank_var, size_var, local_var, local_size_var in _SCHEMES:
        rank = _int(env, rank_var)
        size = _int(env, size_var)
        if rank is None or size is None:
            continue
        if not 0 <= rank < size:
            raise UserError(f"{rank_var}: {rank} is outside 0..{size - 1} ({size_var}={size})")
        local = _int(env, local_var, rank)
        local_size = _int(env, local_size_var, size)
        port = _int(env, "MASTER_PORT")
        return DistEnv(rank=rank, world_size=size, local_rank=local, local_world_size=local_size,
                       master_addr=env.get("MASTER_ADDR") or None, master_port=port, source=source)
    return DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1,
                   master_addr=env.get("MASTER_ADDR") or None, master_port=_int(env, "MASTER_PORT"),
                   source="single")

"""Saved model profiles, readable without torch.

The simulator (`firesim`) must never import torch, so it learns about models only through the JSON
files in `models/profiles/` that `python -m models.profiling --write` generates from the zoo. This module
validates them with pydantic. Do not import torch (or `models.zoo` / `models.profiling`) here.
"""

from __future__ import annotations

import json
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from firesim.errors import UserError

__all__ = ["LayerProfile", "ModelProfile", "list_profiles", "load_profile"]

_PACKAGE = "models"
_PROFILES = "profiles"


class LayerProfile(BaseModel):
    """One leaf layer's cost for one sample, in forward execution order (see `models.profiling`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    params: int = Field(ge=0)
    fwd_macs: int = Field(ge=0, description="multiply-accumulates of conv/linear layers, else 0")
    fwd_flops: int = Field(ge=0, description="2 x MACs for conv/linear; elementwise op count otherwise")
    output_shape: tuple[int, ...]


class ModelProfile(BaseModel):
    """A model's per-sample costs plus what the training model needs (dataset size for epochs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int = Field(gt=0)
    dataset: str
    train_images: int = Field(gt=0, description="training-set size: samples per epoch")
    params: int = Field(ge=0)
    fwd_macs: int = Field(ge=0)
    fwd_flops: int = Field(ge=0)
    layers: tuple[LayerProfile, ...]

    def gradient_nbytes(self, bytes_per_param: int = 4) -> int:
        """Bytes of gradient exchanged per iteration (fp32 by default)."""
        return self.params * bytes_per_param


def list_profiles() -> list[str]:
    """Names of the saved profiles, sorted."""
    directory = resources.files(_PACKAGE) / _PROFILES
    return sorted(entry.name[: -len(".json")] for entry in directory.iterdir() if entry.name.endswith(".json"))


def load_profile(name: str) -> ModelProfile:
    """The saved profile of model `name`; an unknown name raises `UserError` listing the known ones."""
    known = list_profiles()
    if name not in known:
        raise UserError(f"model: unknown name {name!r}; known: {', '.join(known)}")
    text = (resources.files(_PACKAGE) / _PROFILES / f"{name}.json").read_text(encoding="utf-8")
    return ModelProfile.model_validate(json.loads(text))

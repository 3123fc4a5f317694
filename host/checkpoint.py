"""Training checkpoints: written atomically, loaded without unpickling arbitrary code.

A checkpoint is a ``torch.save`` file of plain containers and tensors
(``torch.load(weights_only=True)`` reads it, so a checkpoint cannot run code).
It is written to a temporary file in the same folder and renamed over the old
one, so a run killed at any moment leaves either the previous checkpoint or
the new one, never half a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from bitspike.errors import CheckpointError
from bitspike.io import atomic_file

__all__ = ["CHECKPOINT_NAME", "FORMAT", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_NAME = "checkpoint.ckpt"
FORMAT = "bitspike-checkpoint"
VERSION = 1
REQUIRED = ("config", "epoch", "model", "history")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain containers and tensors) atomically to ``path``."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    with atomic_file(path) as fh:
        torch.save(payload, fh)
    return Path(path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a checkpoint.

    Raises
    ------
    CheckpointError
        When the file is missing, truncated, corrupt or not a bitspike checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train first (bitspike train ... --out DIR)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "the file is truncated or corrupt: delete it to start over, or restore a copy"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bitspike training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r}, this bitspike reads {VERSION}")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; the file is damaged")
    return state

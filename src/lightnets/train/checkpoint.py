"""Checkpoints: written atomically, read back without unpickling arbitrary objects.

A lightnets checkpoint is a dict of tensors and plain Python values (loadable with
``torch.load(path, weights_only=True)``)::

    {
      "format": "lightnets-checkpoint", "format_version": 1,
      "hparams": {...},          # model.hparams: create_model(**hparams) rebuilds the network
      "model": state_dict,       # weights
      "dataset": {"name", "classes", "mean", "std", "input_size"},   # optional
      ...                        # training state added by the trainer (optimizer, epoch, ...)
    }
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightnets.errors import CheckpointError, LightnetsError
from lightnets.fileio import atomic_path
from lightnets.models import LightweightNet, create_model

FORMAT = "lightnets-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A crash or Ctrl-C mid-write leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        torch.save(state, temp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a lightnets checkpoint safely (``weights_only=True``) and check its format."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory; pass a checkpoint file such as {path}/best.pt"
        )
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {reason[:200]}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a lightnets checkpoint")
    if not isinstance(state.get("hparams"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} lacks the model's hparams or weights")
    return state


def model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, use_ema: bool = True
) -> tuple[LightweightNet, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Uses the EMA weights when the checkpoint has them and ``use_ema`` is true. Returns the model
    (in eval mode) and the whole checkpoint dict (for its ``dataset`` metadata and so on).
    """
    from lightnets.deploy.compression import is_compressed, load_compressed

    if is_compressed(path):  # a `lightnets compress` file: decoded to a dense model
        return load_compressed(path, map_location)
    state = load_checkpoint(path, map_location)
    hparams = dict(state["hparams"])
    try:
        model = create_model(hparams.pop("name"), **hparams)
    except (LightnetsError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    weights = state["ema"] if use_ema and isinstance(state.get("ema"), dict) else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model: {first}") from exc
    model.eval()
    return model, state

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

import re
from pathlib import Path
from typing import Any

import torch

from lightnets.errors import (
    CheckpointError,
    LightnetsError,
    check_float,
    check_int,
    first_line,
)
from lightnets.fileio import atomic_path
from lightnets.models import LightweightNet, create_model
from lightnets.models.memory import check_memory
from lightnets.train.config import TrainConfig

FORMAT = "lightnets-checkpoint"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A crash or Ctrl-C mid-write leaves the previous file at ``path`` untouched. The fault points
    ``write:<name>`` (temporary file written, not yet renamed) and ``saved:<name>`` serve the
    crash tests (:func:`lightnets.train.rundir.fault_point`).
    """
    from lightnets.train.rundir import fault_point

    path = Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        torch.save(state, temp)
        fault_point(f"write:{path.name}", state.get("epoch"))
    fault_point(f"saved:{path.name}", state.get("epoch"))


def _what_file_is(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, from its first bytes; None if it might be."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if head.startswith((ZIP_MAGIC, b"\x80")):  # torch.save's zip, or a legacy pickle
        return None
    if not head:
        return "the file is empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a PyTorch checkpoint (unrecognised contents)"
    if all(c.isprintable() or c.isspace() for c in text):
        return "a text file, not a PyTorch checkpoint"
    return "not a PyTorch checkpoint (unrecognised contents)"


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """A one-line CheckpointError that says what ``path`` is, for a failed ``torch.load``."""
    reason = _what_file_is(path)
    message = str(exc)
    if reason is None and "Weights only load failed" in message:
        found = re.search(r"GLOBAL (\S+)", message)
        holds = f" ({found.group(1)})" if found else ""
        reason = (
            f"not a weights-only checkpoint: it holds Python objects{holds}, which lightnets "
            "will not unpickle (unpickling can run arbitrary code)"
        )
    if reason is None:
        reason = first_line(exc, 200)
    return CheckpointError(f"cannot read checkpoint {path}: {reason}")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a lightnets checkpoint safely (``weights_only=True``) and check its format.

    The stored model hyperparameters, data-set metadata (preprocessing) and run configuration
    are validated like user input: a malformed one is a one-line CheckpointError here, not a
    crash later.
    """
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
        raise _unreadable(path, exc) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a lightnets checkpoint")
    if not isinstance(state.get("hparams"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} lacks the model's hparams or weights")
    try:
        _validate_stored(state)
    except LightnetsError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return state


def _validate_stored(state: dict[str, Any]) -> None:
    """Check what a checkpoint stores besides weights, as user input is checked."""
    if not isinstance(state["hparams"].get("name"), str):
        raise CheckpointError("its hparams name no model")
    if state.get("dataset") is not None:
        validate_dataset_metadata(state["dataset"])
    if state.get("config") is not None:
        try:
            TrainConfig.from_dict(state["config"]).validate()
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            reason = first_line(exc)
            raise CheckpointError(f"malformed run configuration ({reason})") from exc


def validate_dataset_metadata(info: Any) -> None:
    """A checkpoint's ``dataset`` entry (see the module docstring), checked field by field:
    class names are strings, mean and std hold 1 or 3 finite numbers (std > 0), input_size
    is (channels, height, width) of positive integers."""
    if not isinstance(info, dict):
        raise CheckpointError(f"dataset metadata must be a dict, found {type(info).__name__}")
    if info.get("name") is not None and not isinstance(info["name"], str):
        raise CheckpointError(f"dataset.name={info['name']!r} is not a string")
    classes = info.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
    ):
        raise CheckpointError("dataset.classes must be a list of class names")
    for key, minimum, exclusive in (("mean", None, False), ("std", 0.0, True)):
        values = info.get(key)
        if values is None:
            continue
        if not isinstance(values, (list, tuple)) or len(values) not in (1, 3):
            raise CheckpointError(f"dataset.{key}={values!r} must list 1 or 3 numbers")
        for i, value in enumerate(values):
            check_float(f"dataset.{key}[{i}]", value, minimum=minimum, exclusive_minimum=exclusive)
    size = info.get("input_size")
    if size is not None:
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise CheckpointError(f"dataset.input_size={size!r} must be [channels, height, width]")
        for i, value in enumerate(size):
            check_int(f"dataset.input_size[{i}]", value, minimum=1)


def model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, use_ema: bool = True
) -> tuple[LightweightNet, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Uses the EMA weights when the checkpoint has them and ``use_ema`` is true. Returns the model
    (in eval mode) and the whole checkpoint dict (for its ``dataset`` metadata and so on). The
    stored hyperparameters are checked against this machine's memory before the model is built
    (:func:`lightnets.models.memory.check_memory`), at the stored input size.
    """
    from lightnets.deploy.compression import is_compressed, load_compressed

    if is_compressed(path):  # a `lightnets compress` file: decoded to a dense model
        return load_compressed(path, map_location)
    state = load_checkpoint(path, map_location)
    hparams = dict(state["hparams"])
    size = (state.get("dataset") or {}).get("input_size")
    try:
        check_memory(hparams, tuple(size) if size else None)
        model = create_model(hparams.pop("name"), **hparams)
    except (LightnetsError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    weights = state["ema"] if use_ema and isinstance(state.get("ema"), dict) else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {first_line(exc)}") from exc
    model.eval()
    return model, state

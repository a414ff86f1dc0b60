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

import io
import os
import re
from pathlib import Path
from typing import Any

import torch

from lightnets.errors import CheckpointError, LightnetsError, first_line
from lightnets.fileio import atomic_path, check_regular, open_regular, saving
from lightnets.formats import identify, not_weights
from lightnets.models import LightweightNet, create_model
from lightnets.models.memory import check_stored_model
from lightnets.models.weights.compressed import is_compressed, load_compressed
from lightnets.models.weights.files import check_torch_archive
from lightnets.stored import (
    check_dataset_metadata,
    check_finite_weights,
    check_stored_hparams,
    reading,
)
from lightnets.train.config import TrainConfig

FORMAT = "lightnets-checkpoint"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"


#: ``LIGHTNETS_FAULT_AT=POINT[@EPOCH]`` kills the process at that point (crash tests).
FAULT_ENV = "LIGHTNETS_FAULT_AT"


def fault_point(name: str, epoch: int | None = None) -> None:
    """Die here, as ``kill -9`` would (``os._exit(137)``), if ``$LIGHTNETS_FAULT_AT`` is
    ``name`` or ``name@epoch``: fault injection for the crash tests."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, at = spec.partition("@")
    if point == name and (not at or (epoch is not None and at == str(epoch))):
        os._exit(137)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A crash or Ctrl-C mid-write leaves the previous file at ``path`` untouched. The fault points
    ``write:<name>`` (temporary file written, not yet renamed) and ``saved:<name>`` serve the
    crash tests (:func:`fault_point`).
    """
    path = Path(path)
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory first: torch's own file writer reports a full disk as
    # "inline_container.cc ... unexpected pos"; Python's write names the real cause.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with saving(path), atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(buffer.getbuffer())
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
        reason = first_line(exc)
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
    check_torch_archive(path)
    exported = identify(path)  # an exported model, a TorchScript program among them: not loaded
    if exported is not None:
        raise CheckpointError(not_weights(path, exported, "a lightnets checkpoint"))
    with open_regular(path) as handle:  # a FIFO or a device: refused, not waited on
        try:
            state = torch.load(handle, map_location=map_location, weights_only=True)
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
    """Check what a checkpoint stores besides weights, as user input is checked
    (:mod:`lightnets.stored`: no path among the hparams, finite mean/std, one class name per
    output)."""
    hparams = check_stored_hparams(state["hparams"])
    if state.get("dataset") is not None:
        check_dataset_metadata(state["dataset"], hparams.get("num_classes"))
    if state.get("config") is not None:
        try:
            TrainConfig.from_dict(state["config"]).validate()
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            reason = first_line(exc)
            raise CheckpointError(f"malformed run configuration ({reason})") from exc


def model_from_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, use_ema: bool = True
) -> tuple[LightweightNet, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint and load its weights.

    Uses the EMA weights when the checkpoint has them and ``use_ema`` is true. Returns the model
    (in eval mode) and the whole checkpoint dict (for its ``dataset`` metadata and so on). The
    stored hyperparameters are checked against this machine's memory before the model is built
    (:func:`lightnets.models.memory.check_stored_model`), at the stored input size.
    """
    if Path(path).exists() and not Path(path).is_dir():
        check_regular(path)  # a FIFO or a device: refused at once, never waited on
    if is_compressed(path):  # a `lightnets compress` file: decoded to a dense model
        with reading(path):
            return load_compressed(path, map_location)
    state = load_checkpoint(path, map_location)
    size = (state.get("dataset") or {}).get("input_size")
    try:
        hparams, _ = check_stored_model(state["hparams"], size)
        model = create_model(hparams.pop("name"), **hparams)
    except (LightnetsError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    weights = state["ema"] if use_ema and isinstance(state.get("ema"), dict) else state["model"]
    check_finite_weights(weights, str(path))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {first_line(exc)}") from exc
    model.eval()
    return model, state

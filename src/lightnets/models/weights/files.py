"""Weights files on disk: recognised by their content, read without unpickling code, written
atomically.

Four containers are recognised from their first bytes, whatever the file is called:

- a PyTorch file (``torch.save``: a zip archive, or the legacy pickle stream), read with
  ``torch.load(..., weights_only=True)``: a lightnets checkpoint, a plain state dict
  (torchvision's ``*.pth``, timm's ``pytorch_model.bin``), or a training checkpoint that wraps
  one under ``state_dict`` / ``model`` (DDP's ``module.`` prefix removed);
- a safetensors file (an 8-byte little-endian header length, then a JSON header): timm's
  ``model.safetensors``, or one written by ``lightnets convert`` (its metadata then holds the
  model's hyperparameters and preprocessing);
- a lightnets compressed file (``lightnets compress``'s ``.lnz``), decoded to dense tensors by
  :mod:`.compressed` without building its model.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch

from lightnets.errors import CheckpointError, LightnetsError, first_line
from lightnets.fileio import check_regular, open_regular, write_bytes_atomic
from lightnets.formats import identify, not_weights
from lightnets.models.weights.compressed import is_compressed, read_compressed
from lightnets.stored import (
    check_dataset_metadata,
    check_finite_weights,
    check_stored_hparams,
    reading,
)

#: ``metadata["format"]`` of a safetensors file written by lightnets.
LIGHTNETS_SAFETENSORS = "lightnets-weights"
#: Keys under which training checkpoints of other libraries keep their state dict, in order.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
#: First bytes of files people pass by mistake -> what they are.
OTHER_MAGIC: dict[bytes, str] = {
    b"\x89HDF": "an HDF5 file (Keras .h5?)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"GGUF": "a GGUF file",
    b"\x1f\x8b": "a gzip archive",
    b"%PDF": "a PDF document",
    b"version https://git-lfs": "a Git LFS pointer (run git lfs pull)",
}


@dataclass
class WeightsFile:
    """The tensors of a weights file and what the file says about them.

    ``container`` names the file type for messages; ``hparams`` and ``dataset`` are known for
    lightnets files only (the model's hyperparameters, the preprocessing it was trained with);
    ``checkpoint`` is the whole lightnets checkpoint dict when the file is one.
    """

    path: Path
    container: str
    tensors: dict[str, torch.Tensor]
    hparams: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)


def sniff(path: Path) -> str:
    """``"zip"``, ``"pickle"`` or ``"safetensors"`` from the first bytes; else a one-line error.

    Only a regular file is opened (a FIFO or a device is refused at once, not waited on), and
    an exported model (a TorchScript program among them) is refused as weights before anything
    loads it.
    """
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a weights file")
    if not path.exists():
        raise CheckpointError(f"weights file not found: {path}")
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(32)
    if not head:
        raise CheckpointError(f"{path} is empty, not a weights file")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        if 8 + int.from_bytes(head[:8], "little") > size:
            raise CheckpointError(f"{path} is a truncated safetensors file (header past its end)")
        return "safetensors"
    exported = identify(path)  # reads the zip directory or parses the graph; runs nothing
    if exported is not None:
        raise CheckpointError(not_weights(path, exported))
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    what = next((text for magic, text in OTHER_MAGIC.items() if head.startswith(magic)), None)
    if what is None:
        text = all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head)
        what = "a text file" if text else "of an unknown type"
    raise CheckpointError(
        f"{path} is {what}, not a weights file (expected a PyTorch .pth/.pt/.bin or .safetensors)"
    )


def read_weights_file(path: str | Path, *, use_ema: bool = True) -> WeightsFile:
    """Read any recognised weights file (module docstring); errors are one line.

    Everything the file says besides its tensors is checked as user input
    (:mod:`lightnets.stored`): its hparams name no file to open, its preprocessing and class
    names are well formed, and its weights are finite.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        check_regular(path)  # a FIFO or a device: refused at once, never waited on
    with reading(path):  # the one boundary every weights file passes: bare errors become one line
        weights = _read(path, use_ema)
    _check_stored(weights)
    return weights


def _read(path: Path, use_ema: bool) -> WeightsFile:
    if is_compressed(path):  # `lightnets compress` output: decoded to dense tensors
        decoded = read_compressed(path)
        return WeightsFile(
            path,
            "lightnets compressed file",
            decoded.state_dict,
            decoded.hparams,
            decoded.header.dataset,
        )
    kind = sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _unwrap(path, _torch_load(path), use_ema=use_ema)


#: ``torch.save`` stores every record uncompressed. A record another zip tool deflated is read up
#: to this many times its stored size (trained weights deflate by ~1.1x; a gigabyte of zeros
#: deflates 1000-fold into a kilobyte-sized file).
MAX_RECORD_EXPANSION = 8
#: A record this small may inflate further (fresh BatchNorm buffers are all zeros or ones).
SMALL_RECORD = 1 << 20
#: Records a PyTorch archive may hold: one per tensor storage, and a few of metadata.
MAX_RECORDS = 100_000


def check_torch_archive(path: str | Path) -> None:
    """Refuse a PyTorch zip archive whose records would inflate past what the file holds.

    ``torch.load`` reads each record whole, at the size the zip directory declares, before any
    check of its own: a 950 KB file can declare a 1 GB deflated record. So the directory is
    read first (its size and entry count bounded), and each record must be stored (as
    ``torch.save`` writes it) or deflated by at most :data:`MAX_RECORD_EXPANSION`. A legacy
    (non-zip) file is left to ``torch.load``: its storages are read from the file as they are.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        return  # the caller says what the path is
    with open(path, "rb") as handle:
        if handle.read(4) != b"PK\x03\x04":
            return
        # The stdlib's own reader of the end record (private: typeshed leaves it out).
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end is None:
        raise CheckpointError(f"{path} is a truncated or corrupt zip archive (no directory)")
    entries = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
    if entries > MAX_RECORDS:
        raise CheckpointError(
            f"{path}: its zip directory lists {entries} records; a "
            f"PyTorch file has one per tensor (at most {MAX_RECORDS} are read)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        reason = first_line(exc)
        raise CheckpointError(f"{path} is a truncated or corrupt zip archive: {reason}") from exc
    size = path.stat().st_size
    for record in records:
        stored = record.compress_type == zipfile.ZIP_STORED
        if record.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{path}: record {record.filename} uses zip method {record.compress_type}; "
                "PyTorch files store their records (or at most deflate them)"
            )
        limit = (
            record.compress_size
            if stored
            else max(SMALL_RECORD, MAX_RECORD_EXPANSION * record.compress_size)
        )
        if record.file_size > limit or record.compress_size > size:
            raise CheckpointError(
                f"{path}: record {record.filename} would inflate to {record.file_size:,} "
                f"bytes from {record.compress_size:,} (at most {MAX_RECORD_EXPANSION}x is "
                "read; torch.save stores records uncompressed: re-save the file with it)"
            )


def _check_stored(weights: WeightsFile) -> None:
    """The file's hparams, preprocessing and weights, checked as user input."""
    try:
        num_classes = None
        if weights.hparams is not None:
            weights.hparams = check_stored_hparams(weights.hparams)
            num_classes = weights.hparams.get("num_classes")
        if weights.dataset is not None:
            check_dataset_metadata(weights.dataset, num_classes)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights.path}: {exc}") from exc
    check_finite_weights(weights.tensors, str(weights.path))


def _torch_load(path: Path) -> Any:
    check_torch_archive(path)
    try:
        with open_regular(path) as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it needs {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} pickles Python objects besides tensors{what}; lightnets loads weights-only "
            "files: re-save just the state dict (torch.save(model.state_dict(), ...))"
        ) from exc
    except Exception as exc:  # torch's unpickler raises many types on a damaged file
        reason = first_line(exc)
        raise CheckpointError(f"{path} is truncated or corrupt: {reason}") from exc


def _read_safetensors(path: Path) -> WeightsFile:
    """Metadata first: a lightnets file's model is checked before its tensors are read."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            lightnets = metadata.get("format") == LIGHTNETS_SAFETENSORS
            hparams, dataset = _lightnets_metadata(path, metadata) if lightnets else (None, None)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        reason = first_line(exc)
        raise CheckpointError(
            f"{path} is a truncated or corrupt safetensors file: {reason}"
        ) from exc
    if not lightnets:
        return WeightsFile(path, "safetensors file", tensors)
    return WeightsFile(path, "lightnets safetensors file", tensors, hparams, dataset)


def _lightnets_metadata(path: Path, metadata: dict[str, str]) -> tuple[dict[str, Any], Any]:
    try:
        hparams = json.loads(metadata["hparams"])
        dataset = json.loads(metadata["dataset"]) if "dataset" in metadata else None
    except (KeyError, ValueError, RecursionError) as exc:
        reason = first_line(exc)
        raise CheckpointError(f"{path}: unreadable lightnets metadata ({reason})") from exc
    return check_file_model(path, hparams, dataset), dataset


def check_file_model(path: Path, hparams: Any, dataset: Any) -> dict[str, Any]:
    """The model a lightnets file records, checked before it is built or its tensors read:
    ``hparams`` and the data set's ``input_size`` (:func:`lightnets.models.memory.
    check_stored_model`: types, this machine's memory at that input size)."""
    from lightnets.models.memory import check_stored_model

    try:  # first as plain data (lightnets.stored), then against this machine's memory
        hparams = check_stored_hparams(hparams)
        if dataset is not None:
            check_dataset_metadata(dataset, hparams.get("num_classes"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    try:
        checked, _ = check_stored_model(hparams, (dataset or {}).get("input_size"))
    except LightnetsError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from exc
    return checked


def _is_state_dict(value: Any) -> TypeGuard[dict[str, torch.Tensor]]:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _unwrap(path: Path, obj: Any, *, use_ema: bool = True) -> WeightsFile:
    """The state dict inside what ``torch.load`` returned (module docstring)."""
    if isinstance(obj, dict) and obj.get("format") == "lightnets-checkpoint":
        weights = obj.get("ema") if use_ema and _is_state_dict(obj.get("ema")) else obj.get("model")
        if not isinstance(obj.get("hparams"), dict) or not _is_state_dict(weights):
            raise CheckpointError(f"{path} is a lightnets checkpoint without hparams or weights")
        return WeightsFile(
            path,
            "lightnets checkpoint",
            dict(weights),
            check_file_model(path, obj["hparams"], obj.get("dataset")),
            obj.get("dataset"),
            obj,
        )
    if _is_state_dict(obj):
        return WeightsFile(path, "PyTorch state dict", _strip_module(obj))
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                container = f"PyTorch checkpoint (state dict under {key!r})"
                return WeightsFile(path, container, _strip_module(obj[key]))
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise CheckpointError(f"{path} holds a dict ({keys}) but no state dict of tensors")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix DistributedDataParallel puts on every key."""
    if all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


#: Output suffix -> how to write a plain state dict.
WRITE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def write_weights_file(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` atomically: ``.safetensors`` (with ``metadata``) or a torch state dict
    (``.pth``, ``.pt``, ``.bin``; ``metadata`` is then not stored)."""
    path = Path(path)
    plain = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
    # Serialised in memory, then written by Python: a full disk is then ENOSPC (a one-line
    # SaveError), not safetensors' or torch's own error from the middle of their writers.
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        data: bytes | memoryview = save(plain, metadata=metadata)
    else:
        buffer = io.BytesIO()
        torch.save(plain, buffer)
        data = buffer.getbuffer()
    write_bytes_atomic(path, data)
    return path

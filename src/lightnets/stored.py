"""What a file stores besides its tensors, checked as user input before anything uses it.

A checkpoint, a ``.safetensors`` or compressed file, or an exported model's metadata may come
from anyone. Everything lightnets reads from one is checked here, in one place, before it builds,
opens or computes anything with it:

- the model's hyperparameters are plain data naming a model, and never a path:
  ``create_model(weights=PATH)`` opens the file it is given, so a file whose ``hparams`` held
  ``weights`` would make lightnets open whatever that file names (a FIFO, ``/etc/shadow``,
  itself);
- the preprocessing: mean and std are 1 (one value for every channel) or 3 finite numbers,
  std > 0 (a std of 0 divides by zero and every answer becomes NaN);
- class names are a list of strings, one per classifier output (a string such as
  ``"abcdefghij"`` would otherwise read as ten one-letter names);
- the weights are finite: NaN or infinite weights give NaN probabilities that print as an
  answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from lightnets.errors import CheckpointError, LightnetsError, check_float, check_int, first_line

__all__ = [
    "MODEL_ARGUMENTS",
    "channel_stats",
    "check_classes",
    "check_dataset_metadata",
    "check_finite_weights",
    "check_stored_hparams",
    "reading",
    "validate_metadata",
]

#: What the readers of a malformed file raise besides our own errors (torch, safetensors, the
#: decoders of a compressed file): turned into one line naming the file by :func:`reading`.
MALFORMED = (ValueError, RuntimeError, KeyError, TypeError, IndexError, OverflowError, EOFError)

#: ``create_model`` arguments stored beside a family's hyperparameters in ``hparams``.
MODEL_ARGUMENTS = ("name", "num_classes", "variant")
#: ``create_model`` arguments a file must never set: each makes it open a path.
PATH_ARGUMENTS = ("weights",)


def check_stored_hparams(hparams: Any, what: str = "hparams") -> dict[str, Any]:
    """A copy of a file's model ``hparams``: a dict naming a model by a string, with plain
    values, and no argument that names a file (:data:`PATH_ARGUMENTS`). The family checks each
    value when the model is built (``create_model``); this only makes sure that building it
    reads nothing but the numbers."""
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{what} must be a dict, found {type(hparams).__name__}")
    if not isinstance(hparams.get("name"), str):
        raise CheckpointError(f"{what} name no model (no 'name' string)")
    for key, value in hparams.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{what} has a key {key!r} that is not a string")
        if key in PATH_ARGUMENTS:
            raise CheckpointError(
                f"{what} name a file to load ({key}={value!r}); lightnets never opens a path "
                "that a file names: pass weights on the command line (--weights FILE)"
            )
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise CheckpointError(
                f"{what}.{key} is a {type(value).__name__}; hyperparameters are plain values"
            )
    return dict(hparams)


def channel_stats(values: Any, name: str, *, std: bool = False) -> tuple[float, float, float]:
    """Per-channel ``mean`` or ``std`` (``std=True``: each > 0) as three finite floats.

    A file may hold 1 value (the same for every channel, as for a grayscale data set) or 3.
    """
    if not isinstance(values, (list, tuple)) or len(values) not in (1, 3):
        raise CheckpointError(
            f"{name}={values!r} must list 1 number (every channel) or 3 (one per channel)"
        )
    checked = [
        check_float(f"{name}[{i}]", value, minimum=0.0 if std else None, exclusive_minimum=std)
        for i, value in enumerate(values)
    ]
    return tuple(checked * (3 // len(checked)))  # type: ignore[return-value]


def check_classes(classes: Any, num_classes: Any = None, what: str = "classes") -> None:
    """``classes`` is None or a list of strings, as many as the model's outputs when known."""
    if classes is None:
        return
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(
            f"{what} must be a list of class names (strings), found {type(classes).__name__}"
            + (f" {classes[:40]!r}" if isinstance(classes, str) else "")
        )
    if isinstance(num_classes, int) and len(classes) != num_classes:
        raise CheckpointError(
            f"{what} lists {len(classes)} names but the model has {num_classes} outputs"
        )


def check_dataset_metadata(info: Any, num_classes: Any = None, what: str = "dataset") -> None:
    """A file's ``dataset`` record (``name``, ``classes``, ``mean``, ``std``, ``input_size``),
    checked field by field; ``num_classes``, when known, is the number of class names."""
    if not isinstance(info, dict):
        raise CheckpointError(f"{what} metadata must be a dict, found {type(info).__name__}")
    if info.get("name") is not None and not isinstance(info["name"], str):
        raise CheckpointError(f"{what}.name={info['name']!r} is not a string")
    check_classes(info.get("classes"), num_classes, f"{what}.classes")
    for key in ("mean", "std"):
        if info.get(key) is not None:
            channel_stats(info[key], f"{what}.{key}", std=key == "std")
    size = info.get("input_size")
    if size is not None:
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise CheckpointError(f"{what}.input_size={size!r} must be [channels, height, width]")
        for i, value in enumerate(size):
            check_int(f"{what}.input_size[{i}]", value, minimum=1)


def check_finite_weights(tensors: Mapping[str, Any], what: str = "the file") -> None:
    """Refuse NaN or infinite values in any floating-point tensor, naming the first."""
    import torch

    for key, tensor in tensors.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not bool(torch.isfinite(tensor).all())
        ):
            raise CheckpointError(
                f"{what}: tensor {key} holds NaN or infinite values; its answers would be "
                "NaN (a diverged or damaged model)"
            )


@contextlib.contextmanager
def reading(path: Any) -> Iterator[None]:
    """The boundary around reading a file a user named: a malformed file whose reader raised a
    bare error (:data:`MALFORMED`) is a one-line :class:`CheckpointError` naming the file."""
    try:
        yield
    except LightnetsError:
        raise
    except MALFORMED as exc:
        reason = first_line(exc)
        raise CheckpointError(f"{path} is malformed: {type(exc).__name__}: {reason}") from exc


#: ``preprocessing.mode`` -> channels of the decoded image.
MODES = {"L": 1, "RGB": 3}


def validate_metadata(meta: Any) -> None:
    """Check an exported model's metadata document (:mod:`lightnets.deploy.metadata`) field by
    field (what :meth:`~lightnets.deploy.prediction.Preprocessing.from_metadata` and
    ``reference_model`` read), as user input is checked: a missing or malformed field is one
    line naming it, never a crash in the middle of a prediction."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"it is a {type(meta).__name__}, not a JSON object")
    rule = meta.get("preprocessing")
    if not isinstance(rule, dict):
        raise CheckpointError("preprocessing is missing (or not an object)")
    if rule.get("mode") not in MODES:
        raise CheckpointError(
            f"preprocessing.mode={rule.get('mode')!r} is not allowed; use L or RGB"
        )
    for key in ("mean", "std"):
        channel_stats(rule.get(key), f"preprocessing.{key}", std=key == "std")
    size = rule.get("input_size")
    if not isinstance(size, list) or len(size) != 3:
        raise CheckpointError(f"preprocessing.input_size={size!r} must be [3, height, width]")
    for i, value in enumerate(size):
        check_int(f"preprocessing.input_size[{i}]", value, minimum=1)
    model = meta.get("model")
    num_classes = None
    if model:
        hparams = check_stored_hparams(model, "model")
        num_classes = hparams.get("num_classes")
    check_classes(meta.get("classes"), num_classes)
    dataset = meta.get("dataset")
    if dataset is not None:
        check_dataset_metadata(dataset, num_classes)

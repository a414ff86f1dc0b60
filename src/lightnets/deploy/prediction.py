"""Classify image files with a model or checkpoint, preprocessing them as its data set was.

Images are decoded with Pillow and brought to what the network saw in training:

- MNIST / Fashion-MNIST checkpoints: grayscale (``convert("L")``), fitted to 28 x 28 (shorter side
  resized, centre crop; a 28 x 28 image is left as it is), zero-padded to 32 x 32 as
  :mod:`lightnets.data.idx` pads the IDX images, normalised with the checkpoint's mean/std,
  then resized to the model's input and expanded to three channels, as the loader does;
- CIFAR and synthetic: RGB, fitted to 32 x 32 the same way, then normalised and resized;
- image folders and bare zoo models (ImageNet): :func:`lightnets.data.folder.decode_image`
  (shorter side to 1.14 S, centre crop S), normalised with the checkpoint's or ImageNet's
  statistics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightnets.data.folder import RESIZE_RATIO
from lightnets.data.idx import PADDED_SIZE
from lightnets.errors import CheckpointError, DataError, InvalidArgumentError
from lightnets.fileio import check_regular
from lightnets.stored import channel_stats, check_dataset_metadata, validate_metadata

__all__ = ["Prediction", "load_image", "predict", "preprocessing_from_checkpoint"]

IDX_SIZE = 28
NATIVE_SIZES = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "synthetic": 32}


@dataclass(frozen=True)
class Preprocessing:
    """How to turn an image file into the network's input."""

    dataset: str | None  # None: a bare zoo model (ImageNet statistics, no class names)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    classes: list[str] | None

    def rule(self) -> dict[str, Any]:
        """The preprocessing as plain data, complete enough to redo it without lightnets.

        Steps, in order: open with Pillow; if ``draft``, ``image.draft(mode, (resize, resize))``
        (JPEG: decode at reduced scale); ``convert(mode)``; resize so that the shorter side is
        ``resize`` (new sides ``max(crop, round(side * resize / shorter))``, Pillow filter
        ``filter``; an image already of that size is left as it is); centre crop
        ``crop`` (offsets ``(new - crop) // 2``); zero-pad ``pad`` pixels on every side;
        ``(x / 255 - mean[c]) / std[c]`` in float32; if ``final_resize``, a bilinear
        (antialiased when shrinking) resize to ``input_size``; a grayscale image is repeated
        to 3 channels; layout NCHW.
        """
        native = NATIVE_SIZES.get(self.dataset or "")
        side = self.input_size[1]
        if native is None:
            resize, crop, pad, mode = round(RESIZE_RATIO * side), side, 0, "RGB"
        else:
            resize, crop, mode = native, native, "L" if native == IDX_SIZE else "RGB"
            pad = (PADDED_SIZE - IDX_SIZE) // 2 if native == IDX_SIZE else 0
        return {
            "mode": mode,
            "draft": native is None,
            "resize": resize,
            "filter": "bilinear",
            "crop": crop,
            "pad": pad,
            "scale": "1/255",
            "mean": list(self.mean[: 1 if mode == "L" else 3]),
            "std": list(self.std[: 1 if mode == "L" else 3]),
            "final_resize": None if crop + 2 * pad == side else "bilinear-antialias",
            "channels": "gray repeated to 3" if mode == "L" else "RGB",
            "layout": "NCHW",
            "input_size": list(self.input_size),
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Preprocessing:
        """The preprocessing recorded in an exported file's metadata (see :meth:`rule`)."""
        validate_metadata(meta)  # one-line errors for a missing or malformed field
        rule, data = meta["preprocessing"], meta.get("dataset") or {}
        channels, height, width = (int(v) for v in rule["input_size"])
        return cls(
            dataset=data.get("name"),
            mean=channel_stats(rule["mean"], "preprocessing.mean"),
            std=channel_stats(rule["std"], "preprocessing.std", std=True),
            input_size=(channels, height, width),
            classes=list(meta["classes"]) if meta.get("classes") else None,
        )


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image: (index, name or None, probability) each."""

    image: str
    topk: list[tuple[int, str | None, float]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "topk": [
                {"index": index, "class": name, "probability": prob}
                for index, name, prob in self.topk
            ],
        }


def preprocessing_from_checkpoint(
    state: dict[str, Any] | None, input_size: tuple[int, int, int]
) -> Preprocessing:
    """Preprocessing from a checkpoint's ``dataset`` metadata (ImageNet's for a bare model) at
    ``input_size``, the size the model runs at (callers default it to the recorded one)."""
    from lightnets.data.splits import IMAGENET_MEAN, IMAGENET_STD

    info = (state or {}).get("dataset")
    if not isinstance(info, dict):
        return Preprocessing(None, IMAGENET_MEAN, IMAGENET_STD, input_size, None)
    check_dataset_metadata(info)
    size = input_size
    classes = info.get("classes")
    return Preprocessing(
        dataset=str(info.get("name")),
        mean=channel_stats(info.get("mean", IMAGENET_MEAN), "dataset.mean"),
        std=channel_stats(info.get("std", IMAGENET_STD), "dataset.std", std=True),
        input_size=(3, int(size[1]), int(size[2])),
        classes=list(classes) if classes else None,
    )


def _check_batch_memory(model: nn.Module, input_size: tuple[int, int, int], batch: int) -> None:
    """A batch at the recorded input size must fit in memory (an exported file's size comes from
    its metadata): checked with the model its hparams describe, before any image is decoded."""
    from lightnets.models import list_models
    from lightnets.models.memory import check_input_memory, check_stored_model

    hparams = getattr(model, "hparams", None)
    if isinstance(hparams, dict) and hparams.get("name") in list_models():
        check_stored_model(hparams, list(input_size), batch)
    else:
        check_input_memory(list(input_size), batch)


def _fit(image: Image.Image, side: int) -> Image.Image:
    """Shorter side to ``side`` (bilinear) and centre crop; unchanged if already that size."""
    from PIL import Image

    if image.size == (side, side):
        return image
    w, h = image.size
    scale = side / min(w, h)
    new_w, new_h = max(side, round(w * scale)), max(side, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - side) // 2, (new_h - side) // 2
    return image.crop((left, top, left + side, top + side))


def load_image(path: str | Path, pre: Preprocessing) -> torch.Tensor:
    """One image file -> normalised float32 (3, H, W) network input."""
    from lightnets.data import augment
    from lightnets.data.folder import decode_image
    from lightnets.data.images import open_image

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such image file")
    check_regular(path)  # a FIFO or a device: refused now, not waited on
    native = NATIVE_SIZES.get(pre.dataset or "")
    if native is None:
        array = decode_image(path, pre.input_size[1], train=False)
    else:
        # One opener, one pixel limit, for every path (decompression bombs refused).
        with open_image(path) as image:
            mode = "L" if native == IDX_SIZE else "RGB"
            array = np.asarray(_fit(image.convert(mode), native), dtype=np.uint8)
    x = torch.from_numpy(array.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    x = x.unsqueeze(0).contiguous()  # uint8 (1, C, H, W)
    if native == IDX_SIZE:
        pad = (PADDED_SIZE - IDX_SIZE) // 2
        x = F.pad(x, (pad, pad, pad, pad))
    x = augment.resize(augment.normalize(x, pre.mean, pre.std), pre.input_size[1])
    return x.expand(-1, 3, -1, -1)[0].contiguous()


#: Images decoded and run at once: memory stays that of one batch however many files are given.
PREDICT_BATCH = 16


def predict(
    model: nn.Module, images: Sequence[str | Path], pre: Preprocessing, *, topk: int = 5
) -> list[Prediction]:
    """Top-``topk`` softmax probabilities of ``model`` for each image file, :data:`PREDICT_BATCH`
    images at a time (after checking that such a batch fits in memory at the input size)."""
    if topk < 1:
        raise InvalidArgumentError(f"--topk must be >= 1, got {topk}")
    if not images:
        raise InvalidArgumentError("no images given")
    batch_size = min(PREDICT_BATCH, len(images))
    _check_batch_memory(model, pre.input_size, batch_size)
    values: list[list[float]] = []
    indices: list[list[int]] = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([load_image(path, pre) for path in images[start : start + batch_size]])
        with torch.inference_mode():
            logits = model.eval()(batch)
        if not bool(torch.isfinite(logits).all()):
            raise CheckpointError(
                "the model's outputs are NaN or infinite, so it has no answer: its weights are "
                "not all finite numbers (a diverged or damaged model)"
            )
        probs = logits.softmax(dim=1)
        top = probs.topk(min(topk, probs.shape[1]), dim=1)
        values += top.values.tolist()
        indices += top.indices.tolist()
    results = []
    for path, vals, idxs in zip(images, values, indices, strict=True):
        names = pre.classes
        results.append(
            Prediction(
                str(path),
                [
                    (i, names[i] if names and i < len(names) else None, v)
                    for i, v in zip(idxs, vals, strict=True)
                ],
            )
        )
    return results

"""Train / validation / test splits of every supported data set, behind one function.

The validation split, which picks the best epoch, is carved from the training set: a seeded
random choice of ``val_size`` images (default 5,000 for CIFAR and (Fashion-)MNIST), disjoint from
the images trained on. The test set is kept apart and evaluated once, at the end. ``train_subset``
then keeps the first N remaining training images (in file order), for quick experiments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightnets.data.cifar import load_cifar
from lightnets.data.dataset import ImageDataset, TensorImageDataset, channel_stats
from lightnets.data.folder import DEFAULT_IMAGE_SIZE, load_folder
from lightnets.data.idx import load_idx
from lightnets.data.synthetic import load_synthetic
from lightnets.errors import InvalidArgumentError, check_int

DATASET_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist", "folder", "synthetic")
DEFAULT_VAL_SIZE = {"cifar10": 5000, "cifar100": 5000, "mnist": 5000, "fashion-mnist": 5000}
DEFAULT_VAL_FRACTION = 0.1  # folder and synthetic
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Whether a horizontal flip is a valid augmentation: mirrored digits are other symbols, and a
#: flip turns one synthetic class's grating into another's.
HFLIP = {"mnist": False, "synthetic": False}
# Seed of the test split carved from a folder that has neither val/ nor test/: fixed, so every
# run and every `lightnets eval` sees the same test images whatever its training seed.
FOLDER_TEST_SEED = 0
#: Largest random seed: torch's generators take seeds up to 2**64 - 1, and a run seeds each
#: process with seed + rank; 2**63 - 1 leaves room for that and stays exact in every file.
MAX_SEED = 2**63 - 1


@dataclass
class DataSplits:
    """A data set ready to train on: three splits and what the network needs to know.

    ``augmentation`` is ``"crop"`` (pad ``crop_padding`` + random crop, then flip if ``hflip``;
    CIFAR-like sets) or ``"resized_crop"`` (random resized crop + flip; image folders).
    ``train_indices`` / ``val_indices`` say which images of the official training set went where
    (None for splits that came from separate folders).
    """

    name: str
    classes: list[str]
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    augmentation: str = "crop"
    crop_padding: int = 4
    hflip: bool = True
    train_indices: torch.Tensor | None = field(default=None, repr=False)
    val_indices: torch.Tensor | None = field(default=None, repr=False)
    #: Where a split came from when that is not what its name says (a folder's ``val/`` used
    #: as the test set), for the first line of a run; None otherwise.
    origin: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def metadata(self) -> dict[str, Any]:
        """Plain data stored in checkpoints: name, classes, mean, std, input_size."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "input_size": [int(v) for v in self.input_size],
        }


def carve_validation(
    num_images: int, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices), both sorted: a seeded random ``val_size`` of the images."""
    perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def _split(
    name: str, full_train: ImageDataset, val_size: int, train_subset: int | None, seed: int
) -> tuple[ImageDataset, ImageDataset, torch.Tensor, torch.Tensor]:
    n = len(full_train)
    if val_size >= n:
        raise InvalidArgumentError(
            f"val_size={val_size} is not allowed; {name} has {n} training images, so use 0..{n - 1}"
        )
    train_idx, val_idx = carve_validation(n, val_size, seed)
    if train_subset is not None:
        if train_subset > len(train_idx):
            raise InvalidArgumentError(
                f"train_subset={train_subset} is not allowed; {name} has {len(train_idx)} "
                f"training images after the {val_size}-image validation split"
            )
        train_idx = train_idx[:train_subset]
    return full_train.subset(train_idx), full_train.subset(val_idx), train_idx, val_idx


def _stats(
    dataset: TensorImageDataset,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    mean, std = channel_stats(dataset.images)
    std = [max(s, 1 / 255) for s in std]  # constant images must not divide by zero
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return (mean[0], mean[1], mean[2]), (std[0], std[1], std[2])


def _check_arguments(
    name: str,
    val_size: int | None,
    train_subset: int | None,
    seed: int,
    image_size: int | None,
    num_classes: int | None,
) -> None:
    if name not in DATASET_NAMES:
        raise InvalidArgumentError(
            f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}"
        )
    if val_size is not None:
        check_int("val_size", val_size, minimum=0)
    if train_subset is not None:
        check_int("train_subset", train_subset, minimum=1)
    if image_size is not None:
        check_int("image_size", image_size, minimum=8)
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    if num_classes is not None:
        if name != "synthetic":
            raise InvalidArgumentError(
                f"num_classes applies to the synthetic dataset only, not "
                f"{name!r} (its classes come from its files)"
            )
        check_int("num_classes", num_classes, minimum=2)


def _read_tensor_set(
    name: str,
    data_dir: str | Path | None,
    download: bool,
    num_classes: int | None,
    image_size: int | None,
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    """(train, test, classes) of an in-memory data set (every one but ``folder``)."""
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir, download=download)
    if name in ("mnist", "fashion-mnist"):
        return load_idx(name, data_dir, download=download)
    return load_synthetic(num_classes or 10, image_size or 32)


def load_splits(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_size: int | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
    num_classes: int | None = None,
) -> DataSplits:
    """Load a data set by name and split it into train / val / test.

    ``val_size`` None -> 5000 for cifar10, cifar100, mnist, fashion-mnist; 10% of the training
    images for folder and synthetic. ``data_dir`` None -> the default location:
    ``/usr/share/datasets/fashion-mnist``, ``/usr/share/datasets/mnist``, ``./data`` for CIFAR
    (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``; likewise CIFAR-100); required for
    ``folder``. ``image_size`` None -> the native size (32; 28-pixel IDX images are padded to
    32), 224 for folders; another size makes the loader resize batches. ``num_classes`` applies
    to ``synthetic`` only (default 10). Normalisation statistics are measured on the whole
    official training set (ImageNet's for folders). Bad paths or files -> DataError.
    """
    _check_arguments(name, val_size, train_subset, seed, image_size, num_classes)
    if name == "folder":
        return _load_folder_splits(data_dir, val_size, train_subset, seed, image_size)
    train, test, classes = _read_tensor_set(name, data_dir, download, num_classes, image_size)
    if val_size is None:
        val_size = DEFAULT_VAL_SIZE.get(name, round(DEFAULT_VAL_FRACTION * len(train)))
    mean, std = _stats(train)
    train_split, val_split, train_idx, val_idx = _split(name, train, val_size, train_subset, seed)
    size = image_size or train.image_size[0]
    return DataSplits(
        name=name,
        classes=classes,
        train=train_split,
        val=val_split,
        test=test,
        mean=mean,
        std=std,
        input_size=(3, size, size),
        augmentation="crop",
        crop_padding=max(1, size // 8) if name == "synthetic" else 4,
        hflip=HFLIP.get(name, True),
        train_indices=train_idx,
        val_indices=val_idx,
    )


def _load_folder_splits(
    data_dir: str | Path | None,
    val_size: int | None,
    train_subset: int | None,
    seed: int,
    image_size: int | None,
) -> DataSplits:
    """Folder policy: val/ and test/ both present -> used as they are. Only one of them ->
    it is the test set, and the validation split is carved from train/. Neither -> a test split
    (10% of train/, fixed seed) and then the validation split are carved from train/."""
    if data_dir is None:
        raise InvalidArgumentError(
            "the folder dataset needs a data directory (--data-dir ROOT "
            "with ROOT/train/<class>/<image>)"
        )
    size = image_size or DEFAULT_IMAGE_SIZE
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset | None
    train, val, test, classes = load_folder(data_dir, size)
    train_idx = val_idx = None
    origin = None
    if val is not None and test is not None:
        if train_subset is not None:
            if train_subset > len(train):
                raise InvalidArgumentError(
                    f"train_subset={train_subset} is not allowed; "
                    f"{data_dir}/train has {len(train)} images"
                )
            train = train.subset(torch.arange(train_subset))
    else:
        if test is None and val is not None:
            test = val
            origin = (
                f"test split = {Path(data_dir) / 'val'} (there is no test/ folder); "
                "validation carved from train/"
            )
        if test is None:
            test_size = max(1, round(DEFAULT_VAL_FRACTION * len(train)))
            if test_size >= len(train):
                raise InvalidArgumentError(
                    f"{data_dir}/train has too few images ({len(train)}) "
                    f"to carve a test split; add {data_dir}/test"
                )
            rest, test_idx = carve_validation(len(train), test_size, FOLDER_TEST_SEED)
            train, test = train.subset(rest), train.subset(test_idx)
            origin = f"test split = {test_size} images carved from train/ (no val/ or test/ folder)"
        if val_size is None:
            val_size = round(DEFAULT_VAL_FRACTION * len(train))
        train, val, train_idx, val_idx = _split("folder", train, val_size, train_subset, seed)
    return DataSplits(
        name="folder",
        classes=classes,
        train=train,
        val=val,
        test=test,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=(3, size, size),
        augmentation="resized_crop",
        crop_padding=0,
        hflip=True,
        train_indices=train_idx,
        val_indices=val_idx,
        origin=origin,
    )

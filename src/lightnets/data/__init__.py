"""Data sets and batched augmentation: CIFAR-10/100, MNIST, Fashion-MNIST, image folders and a
synthetic set, split into train / validation / test, loaded as uint8 batches and augmented on
the training device. See ``docs/data.md``."""

from lightnets.data.dataset import ImageDataset, TensorImageDataset
from lightnets.data.folder import ImageFolderDataset
from lightnets.data.loader import Augmentation, BatchLoader, make_loader, shard_indices
from lightnets.data.splits import DATASET_NAMES, DataSplits, carve_validation, load_splits

__all__ = [
    "DATASET_NAMES",
    "Augmentation",
    "BatchLoader",
    "DataSplits",
    "ImageDataset",
    "ImageFolderDataset",
    "TensorImageDataset",
    "carve_validation",
    "load_splits",
    "make_loader",
    "shard_indices",
]

"""Image data sets as the loaders see them: uint8 images (N, C, H, W) and int64 labels.

Two kinds exist. :class:`TensorImageDataset` holds every image in memory as one uint8 tensor
(CIFAR, MNIST, Fashion-MNIST, synthetic: at most a few hundred MB). :class:`ImageFolderDataset`
(in :mod:`lightnets.data.folder`) keeps file paths and decodes lazily, in loader workers.
Both hand the loader whole batches of uint8 images; augmentation then runs on those batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ImageDataset:
    """A labelled image data set: ``len(ds)`` images, ``ds.labels`` int64 (N,).

    Subclasses implement :meth:`subset` and say how their images reach the loader.
    """

    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """The data set restricted to ``indices`` (in that order)."""
        raise NotImplementedError

    @property
    def num_channels(self) -> int:
        """Channels as stored: 1 for grayscale sets (expanded to 3 on the device), else 3."""
        raise NotImplementedError


class TensorImageDataset(ImageDataset):
    """All images in memory: ``images`` uint8 (N, C, H, W), C in {1, 3}; ``labels`` int64 (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N={images.shape[0]}, got {tuple(labels.shape)}"
            )
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> TensorImageDataset:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(self.images[index], self.labels[index])

    @property
    def num_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __repr__(self) -> str:
        return (
            f"TensorImageDataset(images={tuple(self.images.shape)}, classes<={self._max_label()})"
        )

    def _max_label(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0


def channel_stats(images: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), in [0, 1] units.

    Exact: from the per-channel histogram of the 256 byte values (integer counts), so a
    50,000-image set needs neither a float copy nor a float accumulation.
    """
    channels = images.shape[1]
    counts = torch.zeros(channels, 256, dtype=torch.int64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk]
        for c in range(channels):
            counts[c] += torch.bincount(block[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64)
    total = counts.sum(dim=1).to(torch.float64).clamp_min(1)
    mean = counts.to(torch.float64) @ values / total
    var = (counts.to(torch.float64) @ values.square() / total - mean.square()).clamp_min(0)
    return (mean / 255).tolist(), (var.sqrt() / 255).tolist()

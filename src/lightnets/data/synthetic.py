"""``synthetic``: a generated image classification set with learnable structure.

Each class is a colour pattern of oriented sinusoidal gratings: class ``c`` has its own
orientation, spatial frequency and per-channel contrast (a sign and weight for R, G, B). Every
image draws a random phase, contrast and brightness and adds Gaussian pixel noise, so a network
must learn orientation/frequency/colour filters, not memorise pixels; a small CNN gets far above
chance within a few hundred steps. The data depend only on (num_classes, image_size, sample
counts) and a fixed data seed: every call, on every machine and rank, builds the same images, so
a checkpoint evaluates on the same test set it was trained beside.
"""

from __future__ import annotations

import math

import torch

from lightnets.data.dataset import TensorImageDataset

DATA_SEED = 20240601
NOISE_STD = 0.2  # in [0, 1] pixel units
MAX_TRAIN_BYTES = 150_000_000


def default_sizes(image_size: int) -> tuple[int, int]:
    """(train, test) sample counts: 10,000 / 2,000 at <= 38 px, fewer above (<= ~150 MB)."""
    train = max(100, min(10_000, MAX_TRAIN_BYTES // (3 * image_size * image_size)))
    return train, max(20, train // 5)


def _class_parameters(num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(DATA_SEED)
    # Orientations spread over [0, pi) with jitter, frequencies 1.5..4.5 cycles per image side,
    # channel contrasts in [-1, 1] (the sign pattern carries colour information).
    orientation = (
        (torch.arange(num_classes) + 0.3 * torch.rand(num_classes, generator=gen))
        * math.pi
        / num_classes
    )
    frequency = 1.5 + 3.0 * torch.rand(num_classes, generator=gen)
    contrast = torch.rand(num_classes, 3, generator=gen) * 2 - 1
    return orientation, frequency, contrast


def make_synthetic(
    num_samples: int, num_classes: int = 10, image_size: int = 32, *, split_seed: int = 0
) -> TensorImageDataset:
    """``num_samples`` images uint8 (N, 3, S, S) with balanced labels (``i % num_classes``).

    ``split_seed`` separates independent draws (0: train, 1: test) of the same distribution.
    """
    orientation, frequency, contrast = _class_parameters(num_classes)
    gen = torch.Generator().manual_seed(DATA_SEED + 1000003 * (split_seed + 1))
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=gen)]
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    images = torch.empty(num_samples, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, num_samples, 1024):
        y = labels[start : start + 1024]
        n = y.shape[0]
        phase = 2 * math.pi * torch.rand(n, 1, 1, generator=gen)
        amplitude = 0.25 + 0.15 * torch.rand(n, 1, 1, 1, generator=gen)
        brightness = 0.5 + 0.2 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
        theta = orientation[y].view(n, 1, 1)
        wave = torch.sin(
            2
            * math.pi
            * frequency[y].view(n, 1, 1)
            * (xs * torch.cos(theta) + ys * torch.sin(theta))
            + phase
        )
        pixels = brightness + amplitude * contrast[y].view(n, 3, 1, 1) * wave.unsqueeze(1)
        pixels += NOISE_STD * torch.randn(n, 3, image_size, image_size, generator=gen)
        images[start : start + n] = (pixels * 255).round_().clamp_(0, 255).to(torch.uint8)
    return TensorImageDataset(images, labels)


def load_synthetic(
    num_classes: int = 10,
    image_size: int = 32,
    train_size: int | None = None,
    test_size: int | None = None,
) -> tuple[TensorImageDataset, TensorImageDataset, list[str]]:
    """(train, test, class names) of the synthetic set."""
    default_train, default_test = default_sizes(image_size)
    train = make_synthetic(train_size or default_train, num_classes, image_size, split_seed=0)
    test = make_synthetic(test_size or default_test, num_classes, image_size, split_seed=1)
    return train, test, [f"class_{i}" for i in range(num_classes)]

"""Batched augmentation against per-sample numpy oracles, exact to the pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightnets.data import augment


def batch(n=16, c=3, h=12, w=10, seed=0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize(("mode", "np_mode"), [("zeros", "constant"), ("reflect", "reflect")])
def test_crop_flip_is_a_window_of_the_padded_image(mode, np_mode):
    images = batch()
    n, _, h, w = images.shape
    p = 3
    gen = torch.Generator().manual_seed(1)
    top = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    left = torch.randint(0, 2 * p + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    top[:2], left[:2] = torch.tensor([0, 2 * p]), torch.tensor([2 * p, 0])  # extreme corners
    out = augment.crop_flip(images, top, left, flip, p, mode)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i in range(n):
        padded = np.pad(images[i].numpy(), ((0, 0), (p, p), (p, p)), mode=np_mode)
        window = padded[:, top[i] : top[i] + h, left[i] : left[i] + w]
        if flip[i]:
            window = window[:, :, ::-1]
        np.testing.assert_array_equal(out[i].numpy(), window)


def test_flip_only_and_identity():
    images = batch()
    n = images.shape[0]
    centre = torch.full((n,), 4)
    no = torch.zeros(n, dtype=torch.bool)
    assert torch.equal(augment.crop_flip(images, centre, centre, no, 4), images)
    assert torch.equal(augment.crop_flip(images, centre, centre, ~no, 4), images.flip(3))
    gen = torch.Generator().manual_seed(0)
    out = augment.random_crop_flip(images, 0, gen, flip=True)
    flipped = [torch.equal(out[i], images[i].flip(2)) for i in range(n)]
    kept = [torch.equal(out[i], images[i]) for i in range(n)]
    assert all(a or b for a, b in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < n
    assert torch.equal(augment.random_crop_flip(images, 0, gen, flip=False), images)


def test_normalize_exact():
    images = batch(c=3)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = augment.normalize(images, mean, std)
    ref = (images.double() / 255 - torch.tensor(mean).double().view(1, 3, 1, 1)) / torch.tensor(
        std
    ).double().view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)
    gray = augment.normalize(images[:, :1], (0.25,) * 3, (0.5,) * 3)
    torch.testing.assert_close(
        gray.double(), (images[:, :1].double() / 255 - 0.25) / 0.5, rtol=0, atol=1e-5
    )


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(64, 3, 16, 16)
    augment.cutout(x, 8, torch.Generator().manual_seed(0))
    zero = x[:, 0] == 0
    assert torch.equal(zero, (x == 0).all(dim=1))  # same square in every channel
    for i in range(64):
        rows, cols = zero[i].any(1).nonzero().flatten(), zero[i].any(0).nonzero().flatten()
        assert len(rows) <= 8 and len(cols) <= 8
        assert zero[i].sum() == len(rows) * len(cols)  # a full rectangle
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
    # Unclipped squares are exactly 8x8; some squares are clipped at the border.
    areas = zero.sum((1, 2))
    assert (areas == 64).any() and (areas < 64).any()


def test_random_erasing_probability_and_area():
    x = torch.ones(400, 3, 32, 32)
    augment.random_erasing(x, 0.5, torch.Generator().manual_seed(0))
    area = (x[:, 0] == 0).sum((1, 2)).double() / (32 * 32)
    erased = area > 0
    assert 160 < erased.sum() < 240  # ~Binomial(400, 0.5)
    # s in (0.02, 0.33) before the sides are rounded to whole pixels.
    assert area[erased].min() >= 0.015 and area[erased].max() <= 0.37
    y = torch.ones(50, 3, 32, 32)
    augment.random_erasing(y, 0.0, torch.Generator().manual_seed(0))
    assert (y == 1).all()


def test_resized_crop_flip_matches_integer_boxes():
    images = batch(n=4, h=16, w=16)
    n = images.shape[0]
    # A box of exactly the output size is a plain crop (bilinear at pixel centres).
    top, left = torch.tensor([0.0, 3, 8, 5]), torch.tensor([0.0, 8, 1, 4])
    size = torch.full((n,), 8.0)
    flip = torch.tensor([False, True, False, True])
    out = augment.resized_crop_flip(images, top, left, size, size, flip, 8)
    for i in range(n):
        t, l_ = int(top[i]), int(left[i])
        ref = images[i, :, t : t + 8, l_ : l_ + 8].float()
        if flip[i]:
            ref = ref.flip(2)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-3)
    gen = torch.Generator().manual_seed(3)
    rand = augment.random_resized_crop_flip(images, 12, gen)
    assert rand.shape == (n, 3, 12, 12) and rand.dtype == torch.float32
    assert rand.min() >= 0 and rand.max() <= 255


def test_random_draws_depend_only_on_the_generator():
    images = batch(n=64, h=32, w=32)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        x = augment.random_crop_flip(images, 4, gen)
        x = augment.normalize(x, (0.5,) * 3, (0.25,) * 3)
        augment.cutout(x, 8, gen)
        return augment.random_erasing(x, 0.5, gen)

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))

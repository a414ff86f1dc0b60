"""Batched data augmentation on uint8 image tensors, on whatever device trains.

Every function takes a whole batch (N, C, H, W) and is vectorised: no Python loop over samples.
Randomness comes from an explicit CPU :class:`torch.Generator` (a handful of numbers per sample,
copied to the batch's device), so a batch's augmentation depends only on that generator's state.

- :func:`crop_flip` / :func:`random_crop_flip`: random crop with padding and horizontal flip, the
  standard CIFAR augmentation (Krizhevsky et al., 2012, *ImageNet Classification with Deep
  Convolutional Neural Networks*, Section 4.1; the CIFAR form "pad 4, random 32x32 crop, flip"
  of He et al., 2016, *Deep Residual Learning*, Section 4.2). Both are one gather: each output
  pixel reads the source pixel its (shift, flip) maps to, from a zero-padded copy ("zeros",
  the default, as in the usual CIFAR code) or from the image itself by reflection ("reflect").
- :func:`normalize`: uint8 -> float32, ``(x / 255 - mean) / std`` as one multiply-add.
- :func:`cutout` (DeVries & Taylor, 2017, arXiv:1708.04552): one L x L square per image, centre
  uniform over the image, clipped at the border, set to 0 after normalisation (the mean).
- :func:`random_erasing` (Zhong et al., 2020, AAAI, arXiv:1708.04896, Algorithm 1): with
  probability p a rectangle of area s*H*W, s ~ U(0.02, 0.33), aspect ratio log-uniform in
  (0.3, 3.3), up to 10 tries per image; filled with 0 after normalisation (torchvision's default).
- :func:`random_resized_crop_flip` (Szegedy et al., 2015, *Going Deeper with Convolutions*,
  Section 6): area in (0.08, 1) of the image, aspect ratio log-uniform in (3/4, 4/3), 10 tries
  then the whole image, bilinear resampling via ``grid_sample``; for image folders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

PADDING_MODES = ("zeros", "reflect")


def crop_flip(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    padding: int,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Crop every image of a batch at its own offset in the padded image, then flip some.

    ``out[n, c, i, j] = padded[n, c, top[n] + i, left[n] + (W - 1 - j if flip[n] else j)]``
    where ``padded`` is ``images`` with ``padding`` pixels on each side (zeros or a reflection)
    and ``0 <= top, left <= 2 * padding``. Output: same shape and dtype as ``images``.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    n, c, h, w = images.shape
    device = images.device
    rows = top.to(device).view(n, 1) + torch.arange(h, device=device)  # padded coords
    cols = left.to(device).view(n, 1) + torch.arange(w, device=device)
    cols = torch.where(flip.to(device).view(n, 1), cols.flip(1), cols)
    if padding_mode == "zeros":
        source = F.pad(images, (padding, padding, padding, padding))
        src_w = w + 2 * padding
    else:
        if padding >= min(h, w):
            raise ValueError(f"reflect padding {padding} needs images larger than {padding}")
        source = images
        src_w = w
        rows = _reflect(rows - padding, h)
        cols = _reflect(cols - padding, w)
    index = (rows.view(n, h, 1) * src_w + cols.view(n, 1, w)).view(n, 1, h * w)
    out = torch.gather(source.reshape(n, c, -1), 2, index.expand(n, c, h * w))
    return out.view(n, c, h, w)


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    # Reflection without repeating the edge pixel (numpy/torch "reflect"): -1 -> 1, size -> size-2.
    coord = coord.abs()
    return torch.where(coord > size - 1, 2 * (size - 1) - coord, coord)


def random_crop_flip(
    images: torch.Tensor,
    padding: int,
    generator: torch.Generator,
    *,
    flip: bool = True,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Random crop with ``padding`` (offsets uniform in 0..2*padding) and, if ``flip``, a
    horizontal flip with probability 1/2; see :func:`crop_flip`."""
    n = images.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros(n, dtype=torch.bool)
    return crop_flip(images, offsets[0], offsets[1], flips, padding, padding_mode)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean[c]) / std[c]``; C may be 1 (uses mean[0])."""
    c = images.shape[1]
    mean_t = torch.tensor(list(mean)[:c], dtype=torch.float64)
    std_t = torch.tensor(list(std)[:c], dtype=torch.float64)
    scale = (1.0 / (255.0 * std_t)).to(images.device, torch.float32).view(1, c, 1, 1)
    shift = (-mean_t / std_t).to(images.device, torch.float32).view(1, c, 1, 1)
    return images.to(torch.float32).mul_(scale).add_(shift)


def _box_mask(
    top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    # (N, 1, H, W) bool: True inside [top, top+height) x [left, left+width) of each image.
    device = top.device
    i = torch.arange(h, device=device).view(1, h)
    j = torch.arange(w, device=device).view(1, w)
    rows = (i >= top.view(-1, 1)) & (i < (top + height).view(-1, 1))
    cols = (j >= left.view(-1, 1)) & (j < (left + width).view(-1, 1))
    return (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image (clipped at the border), in place."""
    n, _, h, w = x.shape
    centre_y = torch.randint(0, h, (n,), generator=generator).to(x.device)
    centre_x = torch.randint(0, w, (n,), generator=generator).to(x.device)
    y0 = (centre_y - size // 2).clamp(0, h)
    y1 = (centre_y + size // 2).clamp(0, h)
    x0 = (centre_x - size // 2).clamp(0, w)
    x1 = (centre_x + size // 2).clamp(0, w)
    return x.masked_fill_(_box_mask(y0, x0, y1 - y0, x1 - x0, h, w), 0.0)


def _sample_boxes(
    n: int,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    tries: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's box sampling, vectorised: ``tries`` candidates per image, the first that
    fits wins. Returns (top, left, height, width, found) as float/bool CPU tensors."""
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, tries, generator=generator
    )
    aspect = log_r.exp()
    bw = (area * aspect).sqrt().round()
    bh = (area / aspect).sqrt().round()
    fits = (bw >= 1) & (bw <= w) & (bh >= 1) & (bh <= h)
    found = fits.any(dim=1)
    first = fits.to(torch.int8).argmax(dim=1, keepdim=True)
    bw = bw.gather(1, first).squeeze(1)
    bh = bh.gather(1, first).squeeze(1)
    u = torch.rand(2, n, generator=generator)
    top = ((h - bh + 1) * u[0]).floor().clamp(max=h - bh)
    left = ((w - bw + 1) * u[1]).floor().clamp(max=w - bw)
    return top, left, bh, bw, found


def random_erasing(
    x: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Erase (set to 0) one random rectangle in each image with ``probability``, in place."""
    n, _, h, w = x.shape
    apply = torch.rand(n, generator=generator) < probability
    top, left, bh, bw, found = _sample_boxes(n, h, w, scale, ratio, generator)
    bh = torch.where(apply & found, bh, torch.zeros_like(bh))
    device = x.device
    mask = _box_mask(
        top.long().to(device),
        left.long().to(device),
        bh.long().to(device),
        bw.long().to(device),
        h,
        w,
    )
    return x.masked_fill_(mask, 0.0)


def resized_crop_flip(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    flip: torch.Tensor,
    size: int,
) -> torch.Tensor:
    """Crop box (top, left, height, width) of each image, resized bilinearly to size x size,
    flipped where ``flip``; float32 output. One ``grid_sample`` call for the whole batch."""
    n, _, h, w = images.shape
    device = images.device
    top, left, height, width = (t.to(device, torch.float32) for t in (top, left, height, width))
    sign = 1.0 - 2.0 * flip.to(device, torch.float32)
    theta = torch.zeros(n, 2, 3, device=device)
    # align_corners=False: normalised -1..1 spans pixel edges 0..W, so a box [l, l+bw] maps to
    # x_in = (bw / W) * x_out + (2 l + bw) / W - 1; a flip negates the scale.
    theta[:, 0, 0] = sign * width / w
    theta[:, 0, 2] = (2 * left + width) / w - 1
    theta[:, 1, 1] = height / h
    theta[:, 1, 2] = (2 * top + height) / h - 1
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    source = images if images.is_floating_point() else images.to(torch.float32)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_flip(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Random resized crop (whole image when no box fits in 10 tries) and flip; float32 out."""
    n, _, h, w = images.shape
    top, left, bh, bw, found = _sample_boxes(n, h, w, scale, ratio, generator)
    top = torch.where(found, top, torch.zeros_like(top))
    left = torch.where(found, left, torch.zeros_like(left))
    bh = torch.where(found, bh, torch.full_like(bh, h))
    bw = torch.where(found, bw, torch.full_like(bw, w))
    flips = torch.rand(n, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros(n, dtype=torch.bool)
    return resized_crop_flip(images, top, left, bh, bw, flips, size)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to size x size (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(
        x,
        size=(size, size),
        mode="bilinear",
        align_corners=False,
        antialias=size < max(x.shape[-2:]),
    )

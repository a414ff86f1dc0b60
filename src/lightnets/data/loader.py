"""Batch loaders: sharding across ranks, seeded shuffling, augmentation on the device.

In-memory data sets (CIFAR, (Fashion-)MNIST, synthetic) are indexed a batch at a time straight
from their uint8 tensor (copied once to an accelerator, when training on one); image folders are
decoded by a :class:`torch.utils.data.DataLoader` with worker processes. Either way the loader
then augments and normalises the whole uint8 batch on the training device (``augment.py``).

Reproducibility: the permutation of an epoch derives only from (seed, epoch) -- the same on
every rank -- and the augmentation only from (seed, epoch, rank), each through its own
:class:`torch.Generator`; so resuming at epoch k replays exactly the batches of a straight run.

Sharding (like ``DistributedSampler``): for training, the permutation is padded by repeating
its start to a multiple of ``world_size`` and rank r takes every ``world_size``-th index from r,
so all ranks see the same number of samples; for evaluation, rank r takes images r, r + W, ...
in order, without padding: the shards are disjoint and their union is exactly the data set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightnets.data import augment
from lightnets.data.dataset import ImageDataset, TensorImageDataset
from lightnets.data.folder import ImageFolderDataset
from lightnets.data.splits import MAX_SEED, DataSplits
from lightnets.errors import DataError, InvalidArgumentError, check_float, check_int

# Data sets up to this size are copied whole to an accelerator once, then indexed there.
DEVICE_CACHE_BYTES = 4 << 30
_PERMUTATION, _AUGMENT = 0, 1
#: Label of the padding images of :func:`pad_batch` (cross_entropy's default ignore_index).
IGNORE_INDEX = -100


def derive_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for torch.Generator."""
    state = np.random.SeedSequence([v % (1 << 64) for v in values]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def shard_indices(
    num_images: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> torch.Tensor:
    """Indices rank ``rank`` visits in epoch ``epoch`` (see the module docstring)."""
    if not train:
        return torch.arange(rank, num_images, world_size)
    gen = torch.Generator().manual_seed(derive_seed(seed, epoch, _PERMUTATION))
    perm = torch.randperm(num_images, generator=gen)
    total = -(-num_images // world_size) * world_size
    if total > num_images:
        repeats = -(-total // num_images)
        perm = torch.cat([perm] * repeats)[:total]
    return perm[rank:total:world_size]


@dataclass(frozen=True)
class Augmentation:
    """What a training loader does to its images besides the data set's own preprocessing.

    ``crop_and_flip``: the data set's random crop and horizontal flip (``False``: neither; the
    other options still apply). ``padding_mode``: how the random crop pads, ``"zeros"`` (the
    usual CIFAR code) or ``"reflect"``. ``cutout``: the side in pixels of one square cut out of
    every image (0: none). ``random_erasing``: the probability of erasing a rectangle of each
    image (0: never). Evaluation loaders apply none of them.
    """

    crop_and_flip: bool = True
    padding_mode: str = "zeros"
    cutout: int = 0
    random_erasing: float = 0.0

    def validate(self) -> Augmentation:
        """One-line errors for a value out of range; returns itself, with plain types."""
        check_int("cutout", self.cutout, minimum=0)
        check_float("random_erasing", self.random_erasing, minimum=0.0, maximum=1.0)
        if self.padding_mode not in augment.PADDING_MODES:
            raise InvalidArgumentError(
                f"padding_mode={self.padding_mode!r} is not allowed; use one of "
                f"{', '.join(augment.PADDING_MODES)}"
            )
        return dataclasses.replace(
            self, crop_and_flip=bool(self.crop_and_flip), random_erasing=float(self.random_erasing)
        )


class _FolderSource(Dataset):
    """Adapter for DataLoader workers: index -> (uint8 image, error message or None)."""

    def __init__(self, dataset: ImageFolderDataset, train: bool) -> None:
        self.dataset = dataset
        self.train = train

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str | None]:
        return self.dataset.load(index, self.train)


def _collate(items: list[tuple[torch.Tensor, str | None]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([image for image, _ in items]), [e for _, e in items if e is not None]


class BatchLoader:
    """Iterates (images float32 (N, 3, H, W) normalised and augmented on ``device``, labels int64).

    Build it with :func:`make_loader`. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        splits: DataSplits,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        num_workers: int,
        channels_last: bool,
        augmentation: Augmentation = Augmentation(),
        device_data: bool = True,
        pad_last: bool = False,
    ) -> None:
        self.dataset = dataset
        self.splits = splits
        self.batch_size = batch_size
        self.train = train
        self.device = device
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.channels_last = channels_last
        self.augmentation = augmentation
        self.device_data = device_data
        self.pad_last = pad_last
        self.crop_and_flip = train and augmentation.crop_and_flip
        self.epoch = 0
        self._device_images: torch.Tensor | None = None
        n = len(dataset)
        self.num_samples = -(-n // world_size) if train else len(range(rank, n, world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration replays."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def indices(self) -> torch.Tensor:
        """The dataset indices this rank visits this epoch, in order."""
        return shard_indices(
            len(self.dataset),
            train=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def _batches(self) -> list[torch.Tensor]:
        batches = [b for b in self.indices().split(self.batch_size) if len(b)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(
            derive_seed(self.seed, self.epoch, self.rank, _AUGMENT)
        )
        labels = self.dataset.labels
        for index, images in self._uint8_batches():
            targets = labels[index].to(self.device, non_blocking=True)
            if self.pad_last and len(index) < self.batch_size:
                images, targets = pad_batch(images, targets, self.batch_size)
            yield self.transform(images, generator), targets

    def _uint8_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        if isinstance(self.dataset, TensorImageDataset):
            source = self._source_images()
            for index in batches:
                yield index, source[index.to(source.device)].to(self.device, non_blocking=True)
            return
        if not isinstance(self.dataset, ImageFolderDataset):
            raise TypeError(f"unsupported dataset type {type(self.dataset).__name__}")
        loader = DataLoader(
            _FolderSource(self.dataset, self.train),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        for index, (images, errors) in zip(batches, loader, strict=True):
            if errors:
                raise DataError(errors[0])
            yield index, images.to(self.device, non_blocking=True)

    def _source_images(self) -> torch.Tensor:
        images = self.dataset.images  # type: ignore[attr-defined]
        if not self.device_data or self.device.type == "cpu" or images.numel() > DEVICE_CACHE_BYTES:
            return images
        if self._device_images is None:
            self._device_images = images.to(self.device)
        return self._device_images

    def transform(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 batch -> float32 network input: augment (train), normalise, 3 channels, size."""
        splits = self.splits
        size = splits.input_size[1]
        if self.crop_and_flip and splits.augmentation == "resized_crop":
            x = augment.random_resized_crop_flip(images, size, generator, flip=splits.hflip)
            c = x.shape[1]
            mean = torch.tensor(splits.mean[:c], device=x.device).view(1, c, 1, 1)
            std = torch.tensor(splits.std[:c], device=x.device).view(1, c, 1, 1)
            x = x.div_(255.0).sub_(mean).div_(std)
        else:
            if self.crop_and_flip and (splits.crop_padding > 0 or splits.hflip):
                images = augment.random_crop_flip(
                    images,
                    splits.crop_padding,
                    generator,
                    flip=splits.hflip,
                    padding_mode=self.augmentation.padding_mode,
                )
            x = augment.normalize(images, splits.mean, splits.std)
            x = augment.resize(x, size)
        options = self.augmentation
        if self.train and options.cutout > 0:
            x = augment.cutout(x, options.cutout, generator)
        if self.train and options.random_erasing > 0:
            x = augment.random_erasing(x, options.random_erasing, generator)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)


def pad_batch(
    images: torch.Tensor, targets: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A short batch padded to ``size`` with blank images labelled :data:`IGNORE_INDEX`.

    Static shapes for evaluation: every batch then has one shape (one cuDNN autotuning, one
    CUDA graph), and :func:`lightnets.train.evaluate.evaluate` leaves the padding out.
    """
    missing = size - len(targets)
    images = torch.cat([images, images.new_zeros((missing, *images.shape[1:]))])
    targets = torch.cat([targets, targets.new_full((missing,), IGNORE_INDEX)])
    return images, targets


def make_loader(
    dataset: ImageDataset,
    splits: DataSplits,
    *,
    batch_size: int,
    train: bool,
    device: str | torch.device = "cpu",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    augmentation: Augmentation | None = None,
    num_workers: int = 0,
    channels_last: bool = False,
    device_data: bool = True,
    pad_last: bool = False,
) -> BatchLoader:
    """A :class:`BatchLoader` over ``dataset`` (one of ``splits``' train / val / test).

    ``train=True``: shuffled each epoch, augmented (``splits.augmentation``, and what
    ``augmentation`` adds or leaves out: :class:`Augmentation`), padded shards, ``drop_last`` by
    default. ``train=False``: in order, normalised only, disjoint shards. ``num_workers``
    decode image folders. ``device_data``: an in-memory data set up to ``DEVICE_CACHE_BYTES``
    is copied whole to an accelerator ``device`` once (else each batch is copied).
    ``pad_last`` (evaluation only): the last, short batch is padded to ``batch_size`` by
    :func:`pad_batch`.
    """
    check_int("batch_size", batch_size, minimum=1)
    check_int("world_size", world_size, minimum=1)
    check_int("rank", rank, minimum=0, maximum=world_size - 1)
    check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    check_int("num_workers", num_workers, minimum=0)
    augmentation = (augmentation or Augmentation()).validate()
    if pad_last and train:
        raise InvalidArgumentError("pad_last applies to evaluation; training drops the last batch")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(f"device={device!r} is not a torch device") from exc
    loader = BatchLoader(
        dataset,
        splits,
        batch_size=batch_size,
        train=train,
        device=device,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=train if drop_last is None else bool(drop_last),
        num_workers=num_workers,
        channels_last=channels_last,
        augmentation=augmentation,
        device_data=bool(device_data),
        pad_last=bool(pad_last),
    )
    if train and len(dataset) and len(loader) == 0:
        raise InvalidArgumentError(
            f"batch_size={batch_size} is larger than the "
            f"{loader.num_samples} training images per process; use a "
            f"smaller batch size or drop_last=False"
        )
    return loader

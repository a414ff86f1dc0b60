"""BatchLoader: sharding across ranks, reproducible epochs, what the network receives."""

from __future__ import annotations

import pytest
import torch

from lightnets.data import (
    Augmentation,
    DataSplits,
    TensorImageDataset,
    make_loader,
    shard_indices,
)
from lightnets.data.augment import normalize
from lightnets.errors import InvalidArgumentError


def make_splits(n=37, channels=3, size=8, **kwargs) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    # Image i carries its index in pixel (0, 0, 0), so batches can be traced back to indices.
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    data = TensorImageDataset(images, torch.arange(n) % 5)
    fields = dict(
        name="t",
        classes=[str(i) for i in range(5)],
        train=data,
        val=data,
        test=data,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        input_size=(3, size, size),
    )
    fields.update(kwargs)
    return DataSplits(**fields)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize("n", [37, 38, 3])
def test_train_shards_are_equal_and_cover_the_data(n):
    shards = [shard_indices(n, train=True, seed=3, epoch=1, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == -(-n // 2)
    assert set(torch.cat(shards).tolist()) == set(range(n))
    if n % 2 == 0:
        assert not set(shards[0].tolist()) & set(shards[1].tolist())
    splits = make_splits(n=max(n, 4))
    loaders = [
        make_loader(
            splits.train, splits, batch_size=4, train=True, rank=r, world_size=2, drop_last=False
        )
        for r in range(2)
    ]
    assert loaders[0].num_samples == loaders[1].num_samples == -(-len(splits.train) // 2)


def test_eval_shards_are_disjoint_and_exactly_the_data():
    splits = make_splits(n=37)
    labels = []
    for rank in range(2):
        loader = make_loader(
            splits.test, splits, batch_size=5, train=False, rank=rank, world_size=2
        )
        x, y = collect(loader)
        assert len(y) == loader.num_samples == (19 if rank == 0 else 18)
        assert len(loader) == 4  # ceil(19 / 5), ceil(18 / 5)
        labels.append(loader.indices())
        expected = normalize(splits.test.images[loader.indices()], splits.mean, splits.std)
        assert torch.equal(x, expected)  # in order, not augmented
    assert sorted(torch.cat(labels).tolist()) == list(range(37))


def test_train_loader_is_reproducible_from_seed_epoch_rank():
    splits = make_splits(n=64)

    def run(seed=0, epoch=0, rank=0):
        loader = make_loader(
            splits.train,
            splits,
            batch_size=16,
            train=True,
            seed=seed,
            rank=rank,
            world_size=2,
            augmentation=Augmentation(cutout=4, random_erasing=0.5),
        )
        loader.set_epoch(epoch)
        return collect(loader)

    a = run()
    assert all(torch.equal(u, v) for u, v in zip(a, run(), strict=True))
    for other in (run(epoch=1), run(seed=1), run(rank=1)):
        assert not torch.equal(a[0], other[0])
    # A fresh loader at epoch 1 replays what a loader that ran epoch 0 then 1 produces.
    loader = make_loader(
        splits.train,
        splits,
        batch_size=16,
        train=True,
        rank=0,
        world_size=2,
        augmentation=Augmentation(cutout=4, random_erasing=0.5),
    )
    collect(loader)
    loader.set_epoch(1)
    assert torch.equal(collect(loader)[0], run(epoch=1)[0])


def test_train_batches_are_augmented_windows_of_their_images():
    splits = make_splits(n=40, size=8)
    loader = make_loader(splits.train, splits, batch_size=8, train=True)
    assert len(loader) == 5 and loader.num_samples == 40
    x, y = collect(loader)
    order = loader.indices()
    assert torch.equal(y, splits.train.labels[order])
    assert sorted(order.tolist()) == list(range(40))
    shifted = 0
    for row, index in zip(x, order.tolist(), strict=True):
        # Oracle: every 8x8 window of the zero-padded uint8 image, flipped or not, normalised.
        padded = torch.nn.functional.pad(splits.train.images[index], (4, 4, 4, 4))
        windows = [padded[:, t : t + 8, s : s + 8] for t in range(9) for s in range(9)]
        windows += [w.flip(2) for w in windows]
        candidates = normalize(torch.stack(windows), splits.mean, splits.std)
        assert any(torch.equal(row, c) for c in candidates)
        shifted += not torch.equal(row, candidates[40])  # centre, unflipped
    assert shifted > 30


def test_grayscale_reaches_the_network_as_three_equal_channels():
    splits = make_splits(n=10, channels=1, mean=(0.3,) * 3, std=(0.2,) * 3)
    for train in (True, False):
        loader = make_loader(splits.train, splits, batch_size=5, train=train, channels_last=True)
        x, _ = next(iter(loader))
        assert x.shape == (5, 3, 8, 8) and x.dtype == torch.float32
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_resize_to_a_requested_input_size():
    splits = make_splits(n=6, input_size=(3, 16, 16))
    x, _ = next(iter(make_loader(splits.test, splits, batch_size=6, train=False)))
    assert x.shape == (6, 3, 16, 16)


def test_drop_last_and_bad_arguments():
    splits = make_splits(n=37)
    assert len(make_loader(splits.train, splits, batch_size=10, train=True)) == 3
    assert len(make_loader(splits.train, splits, batch_size=10, train=True, drop_last=False)) == 4
    assert len(make_loader(splits.test, splits, batch_size=10, train=False)) == 4
    bad = [
        dict(batch_size=0),
        dict(batch_size=1, rank=2, world_size=2),
        dict(batch_size=1, augmentation=Augmentation(random_erasing=1.5)),
        dict(batch_size=1, augmentation=Augmentation(cutout=-1)),
        dict(batch_size=1, augmentation=Augmentation(padding_mode="wrap")),
        dict(batch_size=64),
        dict(batch_size=1, device="nodevice"),
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            make_loader(splits.train, splits, train=True, **kwargs)
    loader = make_loader(splits.train, splits, batch_size=4, train=True)
    with pytest.raises(InvalidArgumentError, match="epoch"):
        loader.set_epoch(-1)


def test_load_splits_arguments_and_empty_validation():
    from lightnets.data import load_splits

    with pytest.raises(InvalidArgumentError, match="unknown dataset 'imagenet'"):
        load_splits("imagenet")
    with pytest.raises(InvalidArgumentError, match="num_classes applies to the synthetic"):
        load_splits("cifar10", num_classes=5)
    for kwargs in (dict(val_size=-1), dict(train_subset=0), dict(seed=-3), dict(val_size=1.5)):
        with pytest.raises(InvalidArgumentError):
            load_splits("synthetic", image_size=8, **kwargs)
    splits = load_splits("synthetic", image_size=8, val_size=0)
    assert len(splits.val) == 0 and len(splits.train) == 10_000
    loader = make_loader(splits.val, splits, batch_size=4, train=False)
    assert len(loader) == 0 and list(loader) == []
    assert splits.metadata() == {
        "name": "synthetic",
        "classes": splits.classes,
        "mean": list(splits.mean),
        "std": list(splits.std),
        "input_size": [3, 8, 8],
    }


def test_static_shapes_pad_the_last_eval_batch_with_ignored_labels():
    from lightnets.data.loader import IGNORE_INDEX
    from lightnets.train.evaluate import evaluate

    splits = make_splits(n=37)
    plain = make_loader(splits.test, splits, batch_size=10, train=False)
    padded = make_loader(splits.test, splits, batch_size=10, train=False, pad_last=True)
    assert len(padded) == len(plain) == 4
    batches = list(padded)
    assert {tuple(x.shape) for x, _ in batches} == {(10, 3, 8, 8)}
    x, y = batches[-1]
    assert torch.equal(y[7:], torch.full((3,), IGNORE_INDEX))
    assert torch.equal(y[:7], splits.test.labels[30:])
    x_plain, _ = collect(plain)
    assert torch.equal(torch.cat([b[0] for b in batches])[:37], x_plain)
    # Evaluation leaves the padding out: the same result as the ragged loader's.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5)
    )
    model(x)
    results = [
        evaluate(model, loader, num_classes=5, device=torch.device("cpu"), per_class=True)
        for loader in (plain, padded)
    ]
    assert results[0].images == results[1].images == 37
    assert results[0].top1 == results[1].top1 and results[0].top5 == results[1].top5
    assert results[0].per_class == results[1].per_class
    assert results[1].loss == pytest.approx(results[0].loss, rel=1e-6)
    with pytest.raises(InvalidArgumentError, match="pad_last"):
        make_loader(splits.train, splits, batch_size=10, train=True, pad_last=True)


@pytest.mark.parametrize("device_data", [True, False])
def test_device_data_copies_the_whole_set_to_the_device_once(device_data):
    # The meta device stands in for a GPU: tensors with shapes and no storage.
    splits = make_splits(n=20)
    loader = make_loader(
        splits.train, splits, batch_size=5, train=True, device="meta", device_data=device_data
    )
    shapes = [tuple(x.shape) for x, _ in loader]
    assert shapes == [(5, 3, 8, 8)] * 4
    resident = loader._device_images
    assert (resident is not None) == device_data
    if device_data:
        assert resident.device.type == "meta" and resident.dtype == torch.uint8
        assert resident.shape == splits.train.images.shape
        list(loader)
        assert loader._device_images is resident  # copied once, not per epoch


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_augmentation_options_reach_the_random_crop(mode):
    # White images, cropped with padding 4: zero padding brings black pixels in (0 after
    # normalisation is -mean/std), reflection never does (every pixel stays (1 - mean) / std).
    splits = make_splits(n=64, crop_padding=4)
    white = TensorImageDataset(torch.full((64, 3, 8, 8), 255, dtype=torch.uint8), torch.zeros(64))
    loader = make_loader(
        white, splits, batch_size=64, train=True, augmentation=Augmentation(padding_mode=mode)
    )
    x, _ = next(iter(loader))
    mean, std = torch.tensor(splits.mean).view(3, 1, 1), torch.tensor(splits.std).view(3, 1, 1)
    black = (x == (-mean / std).expand(3, 8, 8)).all(dim=1)  # pixels black in every channel
    if mode == "reflect":
        assert torch.allclose(x, ((1 - mean) / std).expand_as(x))
    else:
        assert black.any()  # 64 random shifts of up to 4 pixels: some land in the padding
    plain = make_loader(
        white, splits, batch_size=64, train=True, augmentation=Augmentation(crop_and_flip=False)
    )
    assert torch.allclose(next(iter(plain))[0], ((1 - mean) / std).expand_as(x))

"""The synthetic data set: deterministic, any size, and learnable."""

from __future__ import annotations

import torch
from torch import nn

from lightnets.data import load_splits, make_loader
from lightnets.data.synthetic import make_synthetic


def test_synthetic_is_deterministic_and_sized():
    a = make_synthetic(50, num_classes=7, image_size=20)
    b = make_synthetic(50, num_classes=7, image_size=20)
    assert a.images.shape == (50, 3, 20, 20) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.bincount(a.labels).tolist() == [8, 7, 7, 7, 7, 7, 7]  # balanced: i % 7
    test = make_synthetic(50, num_classes=7, image_size=20, split_seed=1)
    assert not torch.equal(a.images, test.images)
    splits = load_splits("synthetic", image_size=12, num_classes=3, val_size=10, seed=1)
    assert splits.classes == ["class_0", "class_1", "class_2"]
    assert splits.input_size == (3, 12, 12) and len(splits.val) == 10
    assert splits.train.images.shape[1:] == (3, 12, 12)
    assert not splits.hflip  # a flip maps one class's grating to another's


def test_a_small_cnn_learns_synthetic_far_above_chance():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread is faster and immune to busy cores
    try:
        torch.manual_seed(0)
        splits = load_splits("synthetic", image_size=16)
        model = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )
        optimizer = torch.optim.Adam(model.parameters(), 3e-3)
        loader = make_loader(splits.train, splits, batch_size=64, train=True)
        for step, (x, y) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step == 120:
                break
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in make_loader(splits.test, splits, batch_size=500, train=False):
                correct += (model(x).argmax(1) == y).sum().item()
        # Chance is 10%; this run reaches ~98%.
        assert correct / len(splits.test) > 0.7
    finally:
        torch.set_num_threads(threads)

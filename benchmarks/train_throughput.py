"""Training throughput: the model alone, lightnets' data path, and a conventional data path.

Measures, for one CIFAR-variant model and one batch size, on CIFAR-like data (random 32x32 uint8
images in CIFAR's layout, so no download is needed):

  (a) step rate on pre-made tensors: forward + backward + SGD step on one fixed batch, no data
      path at all -- the ceiling;
  (b) lightnets: ``lightnets.data.make_loader`` (whole-batch random crop with 4-pixel padding,
      horizontal flip and normalisation on uint8 tensors, on the training device) feeding the
      same step;
  (c) the conventional pipeline of the common CIFAR repositories: per-sample Pillow transforms
      (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize -- written with
      Pillow and numpy, as torchvision is not used here) in a torch DataLoader with worker
      processes, feeding the same step;

and prints b/a (the share of step time the data path costs) and b/c. It also reports each data
path alone (no model), which shows where (c) gets its cost from. Each figure is the batch size
over the median step time of interleaved rounds, robust to bursts of other processes.

    python benchmarks/train_throughput.py [--model mobilenet_v2] [--width-mult 1.0]
        [--batch-size 128] [--steps 10] [--rounds 3] [--workers 2] [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightnets
from lightnets.data import DataSplits, TensorImageDataset, make_loader

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class ConventionalCifar(Dataset):
    """Per-sample transforms as in the common CIFAR repositories, with Pillow and numpy."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = images  # uint8 (N, 32, 32, 3), CIFAR's in-memory layout after transpose
        self.labels = labels
        self.mean = np.array(CIFAR_MEAN, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(CIFAR_STD, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[index])
        # RandomCrop(32, padding=4)
        img = ImageOps.expand(img, border=4, fill=0)
        i, j = np.random.randint(0, 9, size=2)
        img = img.crop((j, i, j + 32, i + 32))
        # RandomHorizontalFlip()
        if np.random.rand() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # ToTensor() + Normalize(mean, std)
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        x = (x - self.mean) / self.std
        return torch.from_numpy(x), int(self.labels[index])


def _cycle(make_iter: Callable[[int], Iterator]) -> Iterator:
    epoch = 0
    while True:
        yield from make_iter(epoch)
        epoch += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_times(
    batches: Iterator, step, steps: int, warmup: int, device: torch.device
) -> list[float]:
    """Seconds of each of ``steps`` steps (fetching the batch included), after ``warmup``."""
    for _ in range(warmup):
        step(*next(batches))
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step(*next(batches))
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of (c)")
    parser.add_argument("--images", type=int, default=10_000, help="size of the data set")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    kwargs = {} if args.width_mult is None else {"width_mult": args.width_mult}
    model = lightnets.create_model(args.model, num_classes=10, variant="cifar", **kwargs)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def no_step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images.to(device, non_blocking=True)

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.images,), generator=gen)
    b, n, w = args.batch_size, args.steps, args.warmup

    # (a) pre-made tensors
    fixed = (torch.randn(b, 3, 32, 32, device=device), labels[:b].to(device))
    source_a = _cycle(lambda e: iter([fixed]))

    # (b) lightnets' data path
    train = TensorImageDataset(images, labels)
    splits = DataSplits(
        name="cifar-like",
        classes=[str(i) for i in range(10)],
        train=train,
        val=train.subset(range(0)),
        test=train.subset(range(0)),
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        input_size=(3, 32, 32),
        augmentation="crop",
        crop_padding=4,
        hflip=True,
    )
    loader = make_loader(train, splits, batch_size=b, train=True, device=device)

    def lightnets_epoch(epoch: int) -> Iterator:
        loader.set_epoch(epoch)
        return iter(loader)

    source_b = _cycle(lightnets_epoch)

    # (c) conventional per-sample pipeline with worker processes
    conventional = DataLoader(
        ConventionalCifar(images.permute(0, 2, 3, 1).numpy(), labels.numpy()),
        batch_size=b,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    source_c = _cycle(lambda e: iter(conventional))

    # Interleaved rounds; the median step time of each method over all rounds. On a shared
    # machine the median ignores the steps that other processes happened to slow down.
    times: dict[str, list[float]] = {k: [] for k in ("a", "b", "c", "data_b", "data_c")}
    for _ in range(args.rounds):
        times["a"] += _step_times(source_a, step, n, w, device)
        times["b"] += _step_times(source_b, step, n, w, device)
        times["c"] += _step_times(source_c, step, n, w, device)
        times["data_b"] += _step_times(source_b, no_step, 4 * n, w, device)
        times["data_c"] += _step_times(source_c, no_step, 4 * n, w, device)
    rates = {k: b / statistics.median(v) for k, v in times.items()}
    rate_a, rate_b, rate_c = rates["a"], rates["b"], rates["c"]
    data_b, data_c = rates["data_b"], rates["data_c"]

    result = {
        "model": model.hparams,
        "device": args.device,
        "batch_size": b,
        "steps": n,
        "rounds": args.rounds,
        "step_seconds": times,
        "threads": torch.get_num_threads(),
        "workers_c": args.workers,
        "a_pure_step_img_s": rate_a,
        "b_lightnets_img_s": rate_b,
        "c_conventional_img_s": rate_c,
        "b_over_a": rate_b / rate_a,
        "b_over_c": rate_b / rate_c,
        "data_only_b_img_s": data_b,
        "data_only_c_img_s": data_c,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    name = args.model + ("" if args.width_mult is None else f" {args.width_mult}x")
    print(
        f"{name} (cifar variant), batch {b}, {args.device}, {result['threads']} threads, "
        f"median of {args.rounds} x {n} steps"
    )
    print(f"  (a) pure step, pre-made tensors       {rate_a:9.1f} img/s")
    print(
        f"  (b) lightnets data path + step        {rate_b:9.1f} img/s   "
        f"(data path alone {data_b:,.0f} img/s)"
    )
    print(
        f"  (c) per-sample PIL + DataLoader({args.workers}) {rate_c:9.1f} img/s   "
        f"(data path alone {data_c:,.0f} img/s)"
    )
    print(f"  b/a = {rate_b / rate_a:.3f}   b/c = {rate_b / rate_c:.3f}")


if __name__ == "__main__":
    main()

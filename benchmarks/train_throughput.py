"""Training throughput: the conventional loop, eager bf16, and lightnets' default path.

For one CIFAR-variant model on 32x32 images -- lightnets' ``synthetic`` set (10,000 training
images in CIFAR's shape, generated, so no download is needed) -- it measures training images/s:

  (a) the conventional loop of the common CIFAR repositories: fp32, NCHW, batch 128, per-sample
      Pillow transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize --
      written with Pillow and numpy, as torchvision is not used here) in a torch DataLoader with
      worker processes;
  (b) eager bf16: the same model in bf16 autocast and channels_last at ``--batch-size``, fed by
      lightnets' loader (whole-batch crop/flip/normalise on the training device), plain
      ``forward / backward / SGD step`` in Python;
  (c) lightnets' default path: ``lightnets train`` itself (:class:`lightnets.train.Trainer`) on
      the same images at ``--batch-size``, with the settings :func:`lightnets_config` gives (the
      one place to adapt as the trainer's defaults change); its rate is the training images/s the
      trainer logs per epoch (data path, step, metrics; not the evaluation), the median over
      the epochs after the first, whose warm-up (cuDNN autotuning, compilation, graph capture)
      is reported on its own;

and prints c/b and c/a (issue 9's targets on one H100: c/b >= 3 and c/a >= 10 for mobilenet_v2
and shufflenet_v2). (a) and (b) are the batch size over the median step time of interleaved
rounds, robust to bursts of other processes; on CUDA the device is synchronised around each step.

    python benchmarks/train_throughput.py --device cuda [--model mobilenet_v2] [--width-mult 1.0]
        [--batch-size 512] [--steps 20] [--rounds 3] [--workers 4] [--epochs 4] [--json]
    python benchmarks/train_throughput.py --device cpu --batch-size 64 --steps 3 --rounds 1 \\
        --epochs 2 --images 1024     # a smoke run on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lightnets
from lightnets.data import load_splits, make_loader
from lightnets.jsonio import dumps
from lightnets.train import TrainConfig, Trainer, get_recipe

CONVENTIONAL_BATCH = 128


class ConventionalCifar(Dataset):
    """Per-sample transforms as in the common CIFAR repositories, with Pillow and numpy."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std) -> None:
        self.images = images  # uint8 (N, 32, 32, 3), CIFAR's in-memory layout after transpose
        self.labels = labels
        self.mean = np.array(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(std, dtype=np.float32).reshape(3, 1, 1)

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


def lightnets_config(args: argparse.Namespace, output: str) -> TrainConfig:
    """(c)'s run: what ``lightnets train --dataset synthetic --device D --batch-size B`` does.

    The one place to adapt to the trainer: today's fast settings are flags (bf16 autocast,
    channels_last); where the trainer makes its CUDA path the default, the defaults apply.
    """
    fast = args.device == "cuda"
    return TrainConfig(
        model=args.model,
        output=output,
        dataset="synthetic",
        model_hparams=_hparams(args),
        recipe=get_recipe("cifar", epochs=args.epochs, batch_size=args.batch_size, lr=0.1),
        val_size=0,
        train_subset=args.images,
        image_size=32,
        device=args.device,
        amp="bf16" if fast else "none",
        channels_last=fast,
    )


def _hparams(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.width_mult is None else {"width_mult": args.width_mult}


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


def make_step(model: nn.Module, device: torch.device, *, bf16: bool, channels_last: bool):
    """forward + backward + SGD step of ``model`` on one batch, as a plain Python loop does it."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_loops(args: argparse.Namespace, splits, device: torch.device) -> dict[str, float]:
    """Images/s of (a) the conventional loop and (b) eager bf16, interleaved rounds."""
    kwargs = {"num_classes": 10, "variant": "cifar", **_hparams(args)}
    torch.manual_seed(0)
    model_a = lightnets.create_model(args.model, **kwargs).to(device).train()
    model_b = lightnets.create_model(args.model, **kwargs).to(device).train()
    step_a = make_step(model_a, device, bf16=False, channels_last=False)
    step_b = make_step(model_b, device, bf16=True, channels_last=True)
    train = splits.train
    conventional = DataLoader(
        ConventionalCifar(
            train.images.permute(0, 2, 3, 1).numpy(), train.labels.numpy(), splits.mean, splits.std
        ),
        batch_size=CONVENTIONAL_BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    loader = make_loader(
        train, splits, batch_size=args.batch_size, train=True, device=device, channels_last=True
    )

    def lightnets_epoch(epoch: int) -> Iterator:
        loader.set_epoch(epoch)
        return iter(loader)

    source_a = _cycle(lambda e: iter(conventional))
    source_b = _cycle(lightnets_epoch)
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(args.rounds):
        times["a"] += _step_times(source_a, step_a, args.steps, args.warmup, device)
        times["b"] += _step_times(source_b, step_b, args.steps, args.warmup, device)
    return {
        "a": CONVENTIONAL_BATCH / statistics.median(times["a"]),
        "b": args.batch_size / statistics.median(times["b"]),
    }


def measure_lightnets(args: argparse.Namespace) -> dict[str, float]:
    """(c): ``lightnets train`` for ``--epochs`` epochs; its logged training images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(lightnets_config(args, tmp))
        start = time.perf_counter()
        try:
            trainer.fit()
        finally:
            trainer.close()
        wall = time.perf_counter() - start
    rates = [record["images_per_sec"] for record in trainer.history]
    steady = rates[1:] or rates
    return {
        "c": statistics.median(steady),
        "c_first_epoch_img_s": rates[0],
        "c_first_epoch_s": trainer.history[0]["seconds"],
        "c_wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width-mult", type=float, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="(b), (c) batch (default 512 cuda, 128 cpu)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round of (a), (b)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of (a)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of (c)")
    parser.add_argument("--images", type=int, default=10_000, help="training images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 512 if args.device == "cuda" else 128
    device = torch.device(args.device)
    if device.type == "cuda":
        from lightnets.deploy.cuda import require_cuda

        require_cuda()
        torch.backends.cudnn.benchmark = True
    splits = load_splits("synthetic", val_size=0, train_subset=args.images, image_size=32)
    rates = measure_loops(args, splits, device)
    rates.update(measure_lightnets(args))
    result = {
        "model": args.model,
        "hparams": _hparams(args),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "batch_a": CONVENTIONAL_BATCH,
        "batch_bc": args.batch_size,
        "workers_a": args.workers,
        "a_conventional_img_s": rates["a"],
        "b_eager_bf16_img_s": rates["b"],
        "c_lightnets_img_s": rates["c"],
        "c_first_epoch_img_s": rates["c_first_epoch_img_s"],
        "c_first_epoch_s": rates["c_first_epoch_s"],
        "c_wall_s": rates["c_wall_s"],
        "c_over_b": rates["c"] / rates["b"],
        "c_over_a": rates["c"] / rates["a"],
    }
    if args.json:
        print(dumps(result, indent=2))
        return
    name = args.model + ("" if args.width_mult is None else f" {args.width_mult}x")
    print(
        f"{name} (cifar variant), 32 px, {result['device']}, {result['threads']} threads, "
        f"{args.images} images"
    )
    print(
        f"  (a) conventional: fp32, PIL + DataLoader({args.workers}), batch "
        f"{CONVENTIONAL_BATCH}  {rates['a']:10.1f} img/s"
    )
    print(
        f"  (b) eager bf16 + channels_last, batch {args.batch_size:<13d} {rates['b']:10.1f} img/s"
    )
    print(
        f"  (c) lightnets train, batch {args.batch_size:<24d} {rates['c']:10.1f} img/s   "
        f"(first epoch {rates['c_first_epoch_s']:.1f} s at {rates['c_first_epoch_img_s']:.0f} "
        "img/s)"
    )
    print(f"  c/b = {result['c_over_b']:.2f}   c/a = {result['c_over_a']:.2f}")


if __name__ == "__main__":
    main()

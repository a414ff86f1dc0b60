"""Training throughput: lightnets train against the bare step and the conventional loop.

For one CIFAR-variant model on 32x32 images -- lightnets' ``synthetic`` set (CIFAR's shape,
generated, so no download is needed) -- it measures training images/s of:

  (a) the conventional loop of the common CIFAR repositories: fp32, NCHW, batch 128, per-sample
      Pillow transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize --
      written with Pillow and numpy, as torchvision is not used here) in a torch DataLoader with
      ``--workers`` worker processes;
  (s) the bare training step: the same model, ``forward / backward / SGD step`` on one batch
      made once (no data path at all), in the precision and layout (c) trains in: the ceiling
      of any training loop;
  (b) on CUDA only, eager bf16: bf16 autocast and channels_last, fed by lightnets' loader, plain
      Python loop (issue 9's reference);
  (c) ``lightnets train`` itself (:class:`lightnets.train.Trainer`, the settings
      :func:`lightnets_config` gives) at ``--batch-size``: every iteration of its loop (fetching
      the batch from its loader, the step, metrics, divergence checks, progress) timed from the
      hand-over of one batch to the next.

All four run in one process, in interleaved rounds: the trainer's epochs are the rounds of (c),
and before each epoch (in the loader's ``set_epoch``, outside (c)'s timed iterations) one round
of the others runs. Each rate is the batch size over the median step time of its rounds
(robust to bursts of other processes), with the thread count the trainer's thread policy
chose, for all. It prints c/s and c/a (issue 22's targets on the CPU: c/s >= 0.97, c/a >= 1.0)
and on CUDA c/b (issue 9's: >= 3). The trainer's own epoch lines (and a busy-machine warning)
include the other loops' rounds, which run inside its epochs (the DataLoader workers of (a)
count as other processes): the figures to read are the script's.

    python benchmarks/train_throughput.py [--model shufflenet_v2] [--width-mult 1.0]
        [--batch-size 128] [--steps 10] [--rounds 3] [--workers 2] [--json]
    python benchmarks/train_throughput.py --device cuda --batch-size 512
    python benchmarks/train_throughput.py --steps 3 --rounds 2 --images 512   # a smoke run
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
from lightnets.analysis.machine import cpu_name, load_average
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
        recipe=get_recipe("cifar", epochs=args.rounds, batch_size=args.batch_size, lr=0.1),
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


class TimedLoader:
    """The trainer's own training loader, timing every iteration of the trainer's loop (from the
    hand-over of one batch to the hand-over of the next: the step on it, the trainer's
    book-keeping, the next batch's fetch) and running ``between(epoch)`` in ``set_epoch``,
    before the epoch's first batch, where none of (c)'s iterations is being timed."""

    def __init__(self, loader: Any, between: Callable[[int], None]) -> None:
        self.loader, self.between = loader, between
        self.times: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.between(epoch)
        self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        handed = None
        for batch in self.loader:
            now = time.perf_counter()
            if handed is not None:
                self.times.append(now - handed)
            handed = time.perf_counter()
            yield batch


def other_loops(args: argparse.Namespace, splits, device: torch.device, amp: bool, nhwc: bool):
    """{name: (batch, one round of timed steps)} for (a), (s) and, on CUDA, (b)."""
    kwargs = {"num_classes": len(splits.classes), "variant": "cifar", **_hparams(args)}
    torch.manual_seed(0)
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
    step_a = make_step(
        new_model(args.model, kwargs, device), device, bf16=False, channels_last=False
    )
    step_s = make_step(new_model(args.model, kwargs, device), device, bf16=amp, channels_last=nhwc)
    first = next(
        iter(
            make_loader(
                train,
                splits,
                batch_size=args.batch_size,
                train=True,
                device=device,
                channels_last=nhwc,
            )
        )
    )
    loops = {
        "a": (CONVENTIONAL_BATCH, _cycle(lambda e: iter(conventional)), step_a),
        "s": (args.batch_size, _repeat(first), step_s),
    }
    if device.type == "cuda":
        step_b = make_step(
            new_model(args.model, kwargs, device), device, bf16=True, channels_last=True
        )
        loader = make_loader(
            train,
            splits,
            batch_size=args.batch_size,
            train=True,
            device=device,
            channels_last=True,
        )

        def lightnets_epoch(epoch: int) -> Iterator:
            loader.set_epoch(epoch)
            return iter(loader)

        loops["b"] = (args.batch_size, _cycle(lightnets_epoch), step_b)
    return loops


def new_model(name: str, kwargs: dict[str, Any], device: torch.device) -> nn.Module:
    return lightnets.create_model(name, **kwargs).to(device).train()


def _repeat(batch: Any) -> Iterator:
    while True:
        yield batch


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Images/s of (a), (s), (b) and (c) from one interleaved run (the trainer's epochs)."""
    splits = load_splits("synthetic", val_size=0, train_subset=args.images, image_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(lightnets_config(args, tmp))  # applies the thread policy for all
        loops = other_loops(
            args, splits, device, trainer.config.amp == "bf16", bool(trainer.config.channels_last)
        )
        times: dict[str, list[float]] = {name: [] for name in loops}

        def one_round(epoch: int) -> None:
            for name, (_, batches, step) in loops.items():
                times[name] += _step_times(batches, step, args.steps, args.warmup, device)

        timed = TimedLoader(trainer.train_loader, one_round)
        trainer.train_loader = timed
        try:
            trainer.fit()
        finally:
            trainer.close()
    steady = timed.times[args.warmup :]  # the first epoch's first steps warm up
    rates = {name: batch / statistics.median(times[name]) for name, (batch, _, _) in loops.items()}
    rates["c"] = args.batch_size / statistics.median(steady)
    return {
        "rates": rates,
        "steps": {**{name: len(t) for name, t in times.items()}, "c": len(steady)},
        "threads": trainer.threads.line(),
        "amp": trainer.config.amp,
        "channels_last": trainer.config.channels_last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shufflenet_v2")
    parser.add_argument("--width-mult", type=float, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="(b), (c) batch (default 512 cuda, 128 cpu)"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round of a, s, b")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of (a)")
    parser.add_argument(
        "--images", type=int, default=1280, help="training images: an epoch of (c) is a round"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 512 if args.device == "cuda" else 128
    device = torch.device(args.device)
    if device.type == "cuda":
        from lightnets.deploy.cuda import require_cuda

        require_cuda()
        torch.backends.cudnn.benchmark = True
    measured = measure(args, device)
    rates = measured["rates"]
    result = {
        "model": args.model,
        "hparams": _hparams(args),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": measured["threads"],
        "torch": torch.__version__,
        "batch_a": CONVENTIONAL_BATCH,
        "batch_sc": args.batch_size,
        "workers_a": args.workers,
        "images_per_sec": rates,
        "timed_steps": measured["steps"],
        "c_over_s": rates["c"] / rates["s"],
        "c_over_a": rates["c"] / rates["a"],
        **({"c_over_b": rates["c"] / rates["b"]} if "b" in rates else {}),
        "load_average_1min": load_average(),
    }
    if args.json:
        print(dumps(result, indent=2))
        return
    name = args.model + ("" if args.width_mult is None else f" {args.width_mult}x")
    precision = f"{measured['amp'] if measured['amp'] != 'none' else 'fp32'}" + (
        ", channels_last" if measured["channels_last"] else ""
    )
    print(f"{name} (cifar variant), 32 px, {result['device']}, torch {torch.__version__}")
    print(f"{result['threads']}; {args.images} images, {args.rounds} interleaved rounds")
    print(
        f"  (a) conventional: fp32, Pillow + DataLoader({args.workers}), batch "
        f"{CONVENTIONAL_BATCH:<6d} {rates['a']:8.1f} img/s"
    )
    print(f"  (s) bare step, {precision}, batch {args.batch_size:<21d} {rates['s']:8.1f} img/s")
    if "b" in rates:
        print(
            f"  (b) eager bf16 + channels_last, batch {args.batch_size:<12d} "
            f"{rates['b']:8.1f} img/s"
        )
    print(
        f"  (c) lightnets train, {precision}, batch {args.batch_size:<14d} {rates['c']:8.1f} img/s"
    )
    line = f"  c/s = {result['c_over_s']:.3f}   c/a = {result['c_over_a']:.3f}"
    if "b" in rates:
        line += f"   c/b = {result['c_over_b']:.2f}"
    print(line + f"   (load average {result['load_average_1min']})")


if __name__ == "__main__":
    main()

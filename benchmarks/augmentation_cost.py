"""Cost of the data path against a training step, side by side from one run.

Times, at the same batch size, (a) one loader batch of the CIFAR training path -- gather from
the in-memory uint8 set, random crop with padding 4, flip, normalise (optionally cutout and
random erasing) -- and (b) one training step (forward, backward, SGD) of a CIFAR-variant
network, on the CPU with the current thread count. Prints both and their ratio. A measurement
tool for the documentation, not a test.

    python benchmarks/augmentation_cost.py [--model mobilenet_v1] [--cutout 16 --random-erasing 0.5]
"""

from __future__ import annotations

import argparse
import time

import torch

from lightnets.data import Augmentation, DataSplits, TensorImageDataset, make_loader
from lightnets.jsonio import dumps
from lightnets.models import create_model


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    model_name: str = "mobilenet_v2",
    batch_size: int = 128,
    steps: int = 5,
    batches: int = 50,
    cutout: int = 0,
    random_erasing: float = 0.0,
) -> dict:
    """Median seconds of one augmented batch and of one training step, and their ratio."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=gen)
    data = TensorImageDataset(images, torch.randint(0, 10, (50_000,), generator=gen))
    splits = DataSplits(
        "bench",
        [str(i) for i in range(10)],
        data,
        data,
        data,
        (0.49, 0.48, 0.45),
        (0.25, 0.24, 0.26),
        (3, 32, 32),
    )
    loader = make_loader(
        data,
        splits,
        batch_size=batch_size,
        train=True,
        augmentation=Augmentation(cutout=cutout, random_erasing=random_erasing),
    )
    iterator = iter(loader)

    def one_batch():
        return next(iterator)

    batch_s = _median_seconds(one_batch, batches)

    model = create_model(model_name, num_classes=10, variant="cifar")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = next(iter(loader))

    def one_step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = _median_seconds(one_step, steps)
    return {
        "model": model_name,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "data_ms_per_batch": 1e3 * batch_s,
        "train_ms_per_step": 1e3 * step_s,
        "data_fraction_of_step": batch_s / step_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cutout", type=int, default=0)
    parser.add_argument("--random-erasing", type=float, default=0.0)
    args = parser.parse_args(argv)
    result = measure(
        args.model,
        args.batch_size,
        args.steps,
        cutout=args.cutout,
        random_erasing=args.random_erasing,
    )
    print(dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

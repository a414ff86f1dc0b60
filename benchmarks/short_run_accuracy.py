"""Short-run accuracy: ``lightnets train``'s default recipe against a plain PyTorch loop.

Both train the same network (same seed, same initial weights) on the same images -- the first
``--images`` of the Fashion-MNIST training set -- for ``--epochs`` epochs at batch 128, and both
are tested on the same official test images with their final weights:

  lightnets: :class:`lightnets.train.Trainer` with the default recipe for ``--epochs`` epochs
      (:func:`lightnets.train.recipes.default_recipe_name`; or ``--recipe``), the data
      set's default augmentation (4-pixel-padded random crop + flip) and no validation split,
      so its test figure is that of the last epoch's weights, like the plain loop's;
  plain:     the loop most tutorials write: SGD (momentum 0.9, weight decay 5e-4) with
      ``torch.optim.lr_scheduler.OneCycleLR(max_lr=0.2)`` stepped every batch, no augmentation,
      the same normalisation.

It prints both test top-1 figures and lightnets minus plain. A short default run must not lose to
the plain loop (issue 9); the long-run recipe is the published one, which this script does not
retrain (200 epochs).

    python benchmarks/short_run_accuracy.py [--model shufflenet_v2] [--width-mult 0.5]
        [--images 10000] [--epochs 3] [--test-images 10000] [--recipe NAME] [--lr LR]
        [--plain-lr 0.2] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch
from torch import nn

import lightnets
from lightnets.data import augment, load_splits, make_loader
from lightnets.jsonio import dumps
from lightnets.train import TrainConfig, Trainer, evaluate, get_recipe
from lightnets.train.recipes import default_recipe_name

BATCH = 128


def _normalised(images: torch.Tensor, splits) -> torch.Tensor:
    """uint8 (N, 1|3, H, W) -> float, normalised, resized, 3 channels, as lightnets' loader."""
    x = augment.resize(augment.normalize(images, splits.mean, splits.std), splits.input_size[1])
    return x.expand(-1, 3, -1, -1).contiguous()


def plain_loop(model: nn.Module, images, labels, *, epochs: int, max_lr: float, seed: int) -> None:
    """SGD + OneCycleLR, no augmentation, reshuffled every epoch: the tutorial loop."""
    optimizer = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=0.9, weight_decay=5e-4)
    steps = len(labels) // BATCH
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps
    )
    criterion = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for i in range(steps):
            index = order[i * BATCH : (i + 1) * BATCH]
            loss = criterion(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()


def lightnets_run(args: argparse.Namespace, recipe_name: str, test) -> tuple[float, float]:
    """(test top-1, seconds) of ``lightnets train`` with ``recipe_name``, tested on ``test``."""
    hparams = {} if args.width_mult is None else {"width_mult": args.width_mult}
    name, _, lr = recipe_name.partition(":")
    lr = float(lr) if lr else args.lr
    recipe = get_recipe(name, epochs=args.epochs, batch_size=BATCH, lr=lr)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            model=args.model,
            output=tmp,
            dataset="fashion-mnist",
            data_dir=args.data_dir,
            model_hparams=hparams,
            recipe=recipe,
            val_size=0,
            train_subset=args.images,
            image_size=args.input_size,
            seed=args.seed,
            device="cpu",
        )
        trainer = Trainer(config)
        # The same test images as the plain loop's (a subset when --test-images asks for one).
        trainer.test_loader = make_loader(
            test, trainer.splits, batch_size=500, train=False, device="cpu"
        )
        start = time.perf_counter()
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    return summary["test_top1"], time.perf_counter() - start


def run(args: argparse.Namespace) -> dict[str, Any]:
    splits = load_splits(
        "fashion-mnist",
        args.data_dir,
        val_size=0,
        train_subset=args.images,
        seed=args.seed,
        image_size=args.input_size,
    )
    test = splits.test.subset(range(min(args.test_images, len(splits.test))))
    hparams = {} if args.width_mult is None else {"width_mult": args.width_mult}
    torch.manual_seed(args.seed)  # the Trainer seeds the same way: same initial weights
    model = lightnets.create_model(
        args.model, num_classes=len(splits.classes), variant="cifar", **hparams
    )
    train_x = _normalised(splits.train.images, splits)
    start = time.perf_counter()
    plain_loop(
        model,
        train_x,
        splits.train.labels,
        epochs=args.epochs,
        max_lr=args.plain_lr,
        seed=args.seed,
    )
    plain_seconds = time.perf_counter() - start
    test_x = _normalised(test.images, splits)
    batches = [(test_x[i : i + 500], test.labels[i : i + 500]) for i in range(0, len(test), 500)]
    plain = evaluate(model, batches, num_classes=len(splits.classes), device=torch.device("cpu"))
    print(f"plain loop: test top-1 {100 * plain.top1:.2f}% ({plain_seconds:.0f} s)", flush=True)
    runs = {}
    for name in args.recipe.split(","):
        top1, seconds = lightnets_run(args, name, test)
        runs[name] = {"top1": top1, "seconds": seconds, "difference": top1 - plain.top1}
    return {
        "model": args.model,
        "hparams": hparams,
        "train_images": len(splits.train),
        "test_images": len(test),
        "input_size": splits.input_size[1],
        "epochs": args.epochs,
        "batch_size": BATCH,
        "threads": torch.get_num_threads(),
        "lr_override": args.lr,
        "lightnets": runs,
        "plain_top1": plain.top1,
        "plain_seconds": plain_seconds,
        "plain_max_lr": args.plain_lr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shufflenet_v2")
    parser.add_argument("--width-mult", type=float, default=0.5)
    parser.add_argument("--images", type=int, default=10_000, help="training images")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--input-size", type=int, default=None, help="resize to N px (default: native 32)"
    )
    parser.add_argument("--test-images", type=int, default=10_000, help="first N test images")
    parser.add_argument(
        "--recipe",
        default=None,
        help="lightnets' recipes, comma-separated: NAME or NAME:LR (default: the default)",
    )
    parser.add_argument("--lr", type=float, default=None, help="override the recipe's lr")
    parser.add_argument("--plain-lr", type=float, default=0.2, help="the plain loop's max_lr")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.recipe = args.recipe or default_recipe_name(args.epochs)
    result = run(args)
    if args.json:
        print(dumps(result, indent=2))
        return
    name = args.model + ("" if args.width_mult is None else f" {args.width_mult}x")
    print(
        f"{name} (cifar variant), {result['train_images']} Fashion-MNIST training images, "
        f"{result['input_size']} px, {args.epochs} epochs, batch {BATCH}, tested on "
        f"{result['test_images']} test images, "
        f"{result['threads']} threads"
    )
    plain = result["plain_top1"]
    print(
        f"  {'plain loop (OneCycleLR ' + str(args.plain_lr) + ')':32s} test top-1 "
        f"{100 * plain:6.2f}%   ({result['plain_seconds']:.0f} s)"
    )
    for recipe, r in result["lightnets"].items():
        print(
            f"  {'lightnets, recipe ' + recipe:32s} test top-1 {100 * r['top1']:6.2f}%   "
            f"({r['seconds']:.0f} s)   lightnets - plain = {100 * r['difference']:+.2f} points"
        )


if __name__ == "__main__":
    main()

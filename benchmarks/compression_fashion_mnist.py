"""Deep Compression on Fashion-MNIST: dense vs 8-bit vs 6-bit, with and without fine-tuning.

Trains a small network here (Adam, one pass over a subset, one thread: the CI boxes have two
shared cores), then compresses it at the SqueezeNet paper's density (33%) with 8-bit and 6-bit
shared weights, with and without a short fine-tune (one epoch after pruning, one after weight
sharing; without it, only the BatchNorm statistics are re-estimated on 20 training batches),
and prints file bytes, ratio to the fp32 weights, and test top-1 side by side.

    PYTHONPATH=src python benchmarks/compression_fashion_mnist.py --model squeezenet1_1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import lightnets
from lightnets.data import load_splits, make_loader
from lightnets.deploy.compression import CompressionData, CompressionSettings, compress
from lightnets.train.checkpoint import model_from_checkpoint, save_checkpoint
from lightnets.train.evaluate import evaluate

MODELS = {
    "squeezenet1_1": {"batch_norm": True},  # plain SqueezeNet stalled at chance here
    "mobilenet_v2": {"width_mult": 0.5},
    "shufflenet_v2": {"width_mult": 0.5},
}


def train(name: str, splits, steps_images: int, lr: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = lightnets.create_model(name, variant="cifar", num_classes=10, **MODELS[name])
    optimizer = torch.optim.Adam(model.parameters(), lr)
    model.train()
    seen = 0
    for epoch in range(1000):
        loader = make_loader(splits.train, splits, batch_size=64, train=True, seed=epoch)
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
            if seen >= steps_images:
                return model.eval()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="squeezenet1_1")
    parser.add_argument("--train-images", type=int, default=12000, help="images trained on")
    parser.add_argument("--subset", type=int, default=6000, help="training subset")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--finetune-images", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--cache", default=None, help="checkpoint to reuse (written if missing)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_splits(
        "fashion-mnist", train_subset=args.subset, val_size=500, image_size=args.image_size
    )
    test = splits.test.subset(torch.arange(args.eval_images))
    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.exists():
        model, _ = model_from_checkpoint(cache)
        print(f"loaded {cache}")
    else:
        t0 = time.time()
        model = train(args.model, splits, args.train_images, args.lr)
        print(f"trained {args.model} on {args.train_images} images in {time.time() - t0:.0f} s")
        if cache is not None:
            save_checkpoint(
                cache,
                {
                    "hparams": model.hparams,
                    "model": model.state_dict(),
                    "dataset": splits.metadata(),
                },
            )
    tune_splits = load_splits(
        "fashion-mnist",
        train_subset=args.finetune_images,
        val_size=500,
        image_size=args.image_size,
    )
    rows = []
    dense = evaluate(
        model,
        make_loader(test, splits, batch_size=256, train=False),
        num_classes=10,
        device=torch.device("cpu"),
    ).top1
    print(f"dense top-1 {100 * dense:.2f}%")
    fp32 = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    rows.append(("dense fp32", "-", fp32, 1.0, dense))
    with tempfile.TemporaryDirectory() as folder:
        for bits in (8, 6):
            for epochs in (0, 1):
                data = CompressionData(
                    finetune=make_loader(tune_splits.train, tune_splits, batch_size=64, train=True),
                    evaluate=make_loader(test, splits, batch_size=256, train=False),
                    num_classes=10,
                    finetune_epochs=epochs,
                    lr=5e-3,
                    name="fashion-mnist",
                )
                path = Path(folder) / f"{bits}_{epochs}.lnz"
                t0 = time.time()
                report, _ = compress(model, path, CompressionSettings(bits=bits), data=data)
                tune = (
                    f"{epochs} ep x {args.finetune_images} img per stage"
                    if epochs
                    else "none (BatchNorm statistics re-estimated)"
                )
                rows.append(
                    (
                        f"{bits}-bit, 33% kept",
                        tune,
                        report.file_bytes,
                        report.ratio,
                        report.accuracy["compressed"],
                    )
                )
                print(
                    f"  {bits}-bit fine-tune={epochs}: {time.time() - t0:.0f} s; "
                    f"coders {report.coder_totals}; pruned-only top-1 "
                    f"{100 * report.accuracy['pruned']:.2f}%"
                )
    print(
        f"\n{args.model} (cifar, {args.image_size} px), Fashion-MNIST, "
        f"top-1 on the first {args.eval_images} test images"
    )
    print("| weights | fine-tune | bytes | ratio | top-1 | change |")
    print("|---|---|---:|---:|---:|---:|")
    for name, tune, size, ratio, top1 in rows:
        print(
            f"| {name} | {tune} | {size:,} | {ratio:.1f}x | {100 * top1:.2f}% | "
            f"{100 * (top1 - dense):+.2f} |"
        )


if __name__ == "__main__":
    main()

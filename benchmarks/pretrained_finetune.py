"""From scratch vs frozen backbone vs full fine-tune, on Fashion-MNIST class folders.

ImageNet weights cannot be fetched here, so the "pretrained" backbone is trained by lightnets on
one half of Fashion-MNIST's classes (T-shirt, trouser, pullover, dress, coat) and fine-tuned on
a few hundred images of the other half (sandal, shirt, sneaker, bag, ankle boot): new classes,
disjoint images, through the image-folder pipeline a user's own photos would take.

    OMP_NUM_THREADS=1 python benchmarks/pretrained_finetune.py --out /tmp/ft   # folders + 4 runs

(One thread: on a machine shared with other jobs, two OpenMP threads spinning for a contended
core made these small models up to 30x slower here.)

Rerunning prints the table again (finished runs are reused).

Each run is one ``lightnets train`` command (printed); the table shows test top-1 and the
training seconds per epoch of each.

``--lrs 0.003,0.01,0.03,0.1 --seeds 0 1 2`` then compares learning rates for the two fine-tunes
with ``train``'s defaults otherwise (the ``finetune`` recipe: SGD, cosine, no warm-up), beside
the default before it (the ``onecycle`` recipe, peak lr 0.1): test top-1 per seed, the mean, and
the largest validation loss of any epoch (a spike shows an lr too high for the loaded weights).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

SOURCE_CLASSES = range(0, 5)
TARGET_CLASSES = range(5, 10)


def write_folders(out: Path, source_per_class: int, target_per_class: int, test_per_class: int):
    """PNG class folders: out/source/{train,test}/<class>, out/target/{train,test}/<class>."""
    from PIL import Image

    from lightnets.data.idx import load_idx

    train, test, classes = load_idx("fashion-mnist")
    plan = [
        ("source", SOURCE_CLASSES, source_per_class),
        ("target", TARGET_CLASSES, target_per_class),
    ]
    for task, class_ids, per_class in plan:
        for split, data, count in (("train", train, per_class), ("test", test, test_per_class)):
            for label in class_ids:
                folder = out / task / split / classes[label].replace("/", "-")
                folder.mkdir(parents=True, exist_ok=True)
                indices = (data.labels == label).nonzero().flatten()[:count]
                for i in indices.tolist():
                    image = data.images[i, 0, 2:30, 2:30].numpy()  # the 28x28 original
                    Image.fromarray(image, mode="L").save(folder / f"{i}.png")


def train(out: Path, name: str, args: str) -> dict:
    run = out / "runs" / name
    if not (run / "summary.json").exists():
        command = f"{sys.executable} -m lightnets train --output {run} {args}"
        print("$", command, flush=True)
        subprocess.run(shlex.split(command), check=True)
    summary = json.loads((run / "summary.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary["epoch_seconds"] = sum(r["seconds"] for r in history) / len(history)
    summary["largest_val_loss"] = max(r["val_loss"] for r in history)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--model", default="mobilenet_v1 --width-mult 0.25")
    parser.add_argument("--source-per-class", type=int, default=1000)
    parser.add_argument("--target-per-class", type=int, default=60)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--source-epochs", type=int, default=8)
    parser.add_argument(
        "--lrs", default="", help="comma-separated fine-tuning lrs to compare (default: none)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    args.lrs = [float(lr) for lr in args.lrs.split(",") if lr]
    if not (args.out / "target").exists():
        write_folders(args.out, args.source_per_class, args.target_per_class, args.test_per_class)
    common = (
        f"--model {args.model} --dataset folder --input-size {args.input_size} --variant cifar "
        "--device cpu --batch-size 32 --recipe cosine --lr 0.05 --warmup-epochs 0"
    )
    source = f"{common} --data-dir {args.out / 'source'} --epochs {args.source_epochs}"
    train(args.out, "source", source)
    pretrained = args.out / "runs" / "source" / "best.pt"
    target = f"{common} --data-dir {args.out / 'target'} --epochs {args.epochs}"
    finetune = f"{target} --weights {pretrained} --num-classes 5"
    rows = {
        "from scratch": train(args.out, "scratch", target),
        "frozen backbone": train(args.out, "frozen", f"{finetune} --freeze-backbone"),
        "full fine-tune": train(args.out, "full", finetune),
    }
    print(f"| start | test top-1 | s / epoch |  ({args.model}, {args.epochs} epochs)")
    print("|---|---|---|")
    for label, s in rows.items():
        print(f"| {label} | {100 * s['test_top1']:.1f}% | {s['epoch_seconds']:.1f} |")
    if args.lrs:
        compare_lrs(args, pretrained)


def compare_lrs(args: argparse.Namespace, pretrained: Path) -> None:
    """Fine-tuning learning rates with train's defaults otherwise, and the earlier default."""
    target = (
        f"--model {args.model} --dataset folder --input-size {args.input_size} --variant cifar "
        f"--device cpu --batch-size 32 --data-dir {args.out / 'target'} --epochs {args.epochs} "
        f"--weights {pretrained} --num-classes 5"
    )
    choices = [("onecycle, lr 0.1 (the default before)", "onecycle", "--recipe onecycle")]
    choices += [(f"finetune, lr {lr:g}", f"lr{lr:g}", f"--lr {lr:g}") for lr in args.lrs]
    seeds = " | ".join(f"seed {seed}" for seed in args.seeds)
    print(f"\n| start | recipe | {seeds} | mean | largest val loss |")
    print("|---|---|" + "---|" * (len(args.seeds) + 2))
    for mode, flag in (("frozen backbone", "--freeze-backbone"), ("full fine-tune", "")):
        for label, tag, flags in choices:
            runs = [
                train(
                    args.out,
                    f"{mode.split()[0]}-{tag}-s{seed}",
                    f"{target} {flag} {flags} --seed {seed}",
                )
                for seed in args.seeds
            ]
            tops = [100 * r["test_top1"] for r in runs]
            cells = " | ".join(f"{t:.1f}%" for t in tops)
            worst = max(r["largest_val_loss"] for r in runs)
            print(f"| {mode} | {label} | {cells} | {sum(tops) / len(tops):.1f}% | {worst:.2f} |")


if __name__ == "__main__":
    main()

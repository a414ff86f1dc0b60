"""Short-run accuracy of every family with ``lightnets train``'s defaults, several seeds each.

Each run is the command a new user types for a quick try, everything else left at its default:

    lightnets train --model M --variant cifar --dataset fashion-mnist --train-subset 5000 \\
        --epochs 3 --seed S --output RUN

that is: the recipe ``train`` picks (``onecycle`` below 30 epochs, with the values the family
declares on its registry entry, ``ModelEntry.recipe_defaults``; batch 128 unless the family
declares another), no crop and flip, the first 5,000 training images after a 5,000-image
validation split (which picks the best epoch), the 10,000 official test images evaluated once.
One row per run: family, seed, test top-1, whether the run ended finite (a diverged run stops
with the NaN guard's message), its seconds; then one summary line per family and whether every
run ended finite and above ``--bar``.

``--flags "..."`` adds flags to every run: ``--flags "--lr 0.1"`` trains the one-cycle recipe at
its own peak lr instead of the family's, the default before per-family values. ``--plain`` also
trains, per run, the loop most tutorials write on the same images from the same initial weights
(SGD momentum 0.9, weight decay 5e-4, ``OneCycleLR(max_lr=--plain-lr)`` stepped per batch, no
augmentation), tested with its final weights, and prints lightnets minus plain.

    OMP_NUM_THREADS=1 python benchmarks/short_run_accuracy.py --out /tmp/short \\
        [--models squeezenet1_0,...] [--seeds 0 1 2] [--images 5000] [--epochs 3] \\
        [--flags "..."] [--plain] [--bar 0.8] [--json]

Runs are kept under ``--out`` (``runs/`` and ``results.jsonl``): rerunning reuses finished runs,
so an interrupted benchmark continues where it stopped; another ``--flags`` needs another
``--out``. One thread per run: on a machine shared with other jobs, OpenMP threads spinning for
a contended core made these small models many times slower here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = (
    "squeezenet1_0",
    "squeezenet1_1",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
)
#: The message of the trainer's NaN guard (lightnets.train.trainer.TrainingDiverged).
DIVERGED = "became NaN or infinite"


def machine() -> str:
    """CPU model name, the vector ISA flags that matter to PyTorch's kernels, torch, threads."""
    import torch

    name, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return (
        f"{name} ({os.cpu_count()} CPUs; {' '.join(isa) or 'no AVX2'}), torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def train_command(args: argparse.Namespace, model: str, seed: int, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lightnets",
        "train",
        "--model",
        model,
        "--variant",
        "cifar",
        "--dataset",
        "fashion-mnist",
        "--train-subset",
        str(args.images),
        "--epochs",
        str(args.epochs),
        "--seed",
        str(seed),
        "--output",
        str(run_dir),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
        *shlex.split(args.flags),
    ]


def lightnets_run(args: argparse.Namespace, model: str, seed: int) -> dict[str, Any]:
    """One ``lightnets train`` process; its test top-1 (None when it diverged) and seconds."""
    run_dir = args.out / "runs" / f"{model}-seed{seed}"
    command = train_command(args, model, seed, run_dir)
    log = args.out / "logs" / f"{model}-seed{seed}.log"
    if (run_dir / "summary.json").exists() and log.exists():  # finished, not yet recorded
        summary = json.loads((run_dir / "summary.json").read_text())
        first_line = (log.read_text().splitlines() or [""])[0]
        return {
            "model": model,
            "seed": seed,
            "seconds": summary["wall_time_s"],
            "first_line": first_line,
            "top1": summary["test_top1"],
            "finite": True,
            "error": None,
        }
    print("$", shlex.join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    first_line = (done.stdout.splitlines() or [""])[0]
    record = {"model": model, "seed": seed, "seconds": seconds, "first_line": first_line}
    if done.returncode == 0:
        summary = json.loads((run_dir / "summary.json").read_text())
        return {**record, "top1": summary["test_top1"], "finite": True, "error": None}
    if DIVERGED in done.stderr:
        return {**record, "top1": None, "finite": False, "error": done.stderr.strip()}
    raise SystemExit(f"{model} seed {seed} failed (exit {done.returncode}):\n{done.stderr}")


def plain_run(args: argparse.Namespace, model: str, seed: int) -> float:
    """Test top-1 of the tutorial loop on the run's training images and initial weights."""
    import torch
    from torch import nn

    import lightnets
    from lightnets.data import augment, load_splits
    from lightnets.train import evaluate

    splits = load_splits(
        "fashion-mnist", args.data_dir, train_subset=args.images, seed=seed, image_size=None
    )

    def normalised(images: torch.Tensor) -> torch.Tensor:
        x = augment.normalize(images, splits.mean, splits.std)
        return x.expand(-1, 3, -1, -1).contiguous()

    torch.manual_seed(seed)  # as the Trainer seeds: the same initial weights
    net = lightnets.create_model(model, num_classes=len(splits.classes), variant="cifar")
    images, labels = normalised(splits.train.images), splits.train.labels
    batch, steps = 128, len(labels) // 128
    optimizer = torch.optim.SGD(net.parameters(), lr=args.plain_lr, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.plain_lr, epochs=args.epochs, steps_per_epoch=steps
    )
    generator = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(args.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            loss = nn.functional.cross_entropy(net(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    test_x = normalised(splits.test.images)
    batches = [
        (test_x[i : i + 500], splits.test.labels[i : i + 500]) for i in range(0, 10_000, 500)
    ]
    result = evaluate(net, batches, num_classes=len(splits.classes), device=torch.device("cpu"))
    return result.top1 if torch.isfinite(torch.tensor(result.loss)) else float("nan")


def load_results(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["model"], r["seed"]): r for r in records}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.jsonl"
    done = load_results(path)
    records = []
    for model in args.models:  # one family after another: its seeds side by side in the log
        for seed in args.seeds:
            record = done.get((model, seed))
            if record is None or (args.plain and "plain_top1" not in record):
                record = record or lightnets_run(args, model, seed)
                if args.plain:
                    record["plain_top1"] = plain_run(args, model, seed)
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            records.append(record)
            print(row(record), flush=True)
    return records


def row(r: dict[str, Any]) -> str:
    top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%"
    cells = [
        r["model"],
        str(r["seed"]),
        top1,
        "yes" if r["finite"] else "NO",
        f"{r['seconds']:.0f}",
    ]
    if "plain_top1" in r:
        plain = r["plain_top1"]
        cells.append(f"{100 * plain:.2f}%")
        diff = None if r["top1"] is None else 100 * (r["top1"] - plain)
        cells.append("-" if diff is None or diff != diff else f"{diff:+.2f}")
    return "| " + " | ".join(cells) + " |"


def summary_lines(records: list[dict[str, Any]], bar: float) -> list[str]:
    lines = []
    for model in dict.fromkeys(r["model"] for r in records):
        runs = [r for r in records if r["model"] == model]
        finite = [r["top1"] for r in runs if r["finite"]]
        spread = (
            f"top-1 min {100 * min(finite):.2f}% / mean {100 * statistics.mean(finite):.2f}% / "
            f"max {100 * max(finite):.2f}%"
            if finite
            else "no finite run"
        )
        above = sum(1 for t in finite if t > bar)
        lines.append(
            f"{model}: {len(finite)}/{len(runs)} finite, {above}/{len(runs)} above "
            f"{100 * bar:g}%, {spread}, {statistics.mean(r['seconds'] for r in runs):.0f} s a run"
        )
    ok = all(r["finite"] and r["top1"] > bar for r in records)
    lines.append(
        f"every run finite and above {100 * bar:g}%: {'yes' if ok else 'NO'} ({len(records)} runs)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="runs and results.jsonl")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=5000, help="--train-subset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--flags", default="", help="extra `lightnets train` flags for every run")
    parser.add_argument("--plain", action="store_true", help="also train the plain loop")
    parser.add_argument("--plain-lr", type=float, default=0.2, help="the plain loop's max_lr")
    parser.add_argument("--bar", type=float, default=0.8, help="top-1 every run must beat")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.models = args.models.split(",")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    records = run(args)
    if args.json:
        print(json.dumps({"machine": machine(), "records": records}, indent=2))
        return
    flags = f", extra flags {args.flags!r}" if args.flags else ""
    print(
        f"\nFashion-MNIST, cifar variant, {args.images} training images, {args.epochs} epochs, "
        f"defaults of `lightnets train`{flags}; {machine()}; load average at the end "
        f"{os.getloadavg()[0]:.1f}"
    )
    header = ["family", "seed", "test top-1", "finite", "seconds"]
    if args.plain:
        header += [f"plain loop (OneCycleLR {args.plain_lr:g})", "lightnets - plain"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for record in records:
        print(row(record))
    print()
    for line in summary_lines(records, args.bar):
        print(line)


if __name__ == "__main__":
    main()

"""A busy machine: compare and train with their default threads against their 1-thread figures.

Issue 22: with other jobs on the machine, a thread pool sized for every core is many times
slower than one thread (each parallel region waits for the thread that lost its core). The
thread policy (lightnets.analysis.threads) sizes the pool to the cores free at start. This
script shows what that buys, in one run:

  1. quiet: ``lightnets compare`` and ``lightnets train`` with ``--threads 1``;
  2. busy: ``--busy N`` processes spinning on the CPU (default: all cores but one; each stops by
     itself after ``--busy-seconds`` and is terminated when the script ends), then the same two
     commands with their default threads (the policy's choice, printed) and with
     ``--threads <all cores>`` (the old default, for contrast);

and prints busy/quiet ratios: latency (compare, per model) and seconds per image (train). The
goal: the defaults stay within 1.5x of the quiet 1-thread figures. "Quiet" means no spinners of
ours: on a machine shared with other people's jobs it is not idle, and the script prints the
load average of each phase so that the reader can judge.

    python benchmarks/busy_machine.py [--busy 1] [--seconds 1] [--images 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODELS = ("mobilenet_v2", "shufflenet_v2:width_mult=0.5")
SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def lightnets(*argv: str) -> subprocess.CompletedProcess:
    """``python -m lightnets ARGV`` with this interpreter and environment; fails loudly."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the policy decides
    result = subprocess.run(
        [sys.executable, "-m", "lightnets", *argv], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise SystemExit(f"lightnets {' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    return result


def threads_line(stderr: str) -> str:
    return next((line for line in stderr.splitlines() if line.startswith("threads: ")), "?")


def compare(seconds: float, threads: int | None) -> dict[str, Any]:
    """Median batch-1 latency (ms) of each of MODELS, and the thread policy's line."""
    flags = ["--threads", str(threads)] if threads else []
    result = lightnets("compare", *MODELS, "--seconds", str(seconds), "--json", *flags)
    data = json.loads(result.stdout)
    return {
        "ms": {row["label"]: row["latency"]["median_ms"] for row in data["rows"]},
        "threads": data["thread_policy"]["reason"],
    }


def train(images: int, threads: int | None, out: Path) -> dict[str, Any]:
    """Training images/s of a short shufflenet_v2 0.5x run (the median epoch after the first)."""
    flags = ["--threads", str(threads)] if threads else []
    argv = ["train", "--model", "shufflenet_v2", "--width-mult", "0.5", "--dataset", "synthetic"]
    argv += ["--train-subset", str(images), "--val-size", "0", "--batch-size", "64"]
    argv += ["--epochs", "3", "--input-size", "32", "--output", str(out), *flags]
    result = lightnets(*argv)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = sorted(r["images_per_sec"] for r in records[1:])
    return {"img_s": rates[len(rates) // 2], "threads": threads_line(result.stdout)}


@contextmanager
def spinners(count: int, seconds: float):
    """``count`` processes burning a core each, for at most ``seconds``."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)]) for _ in range(count)
    ]
    try:
        time.sleep(1.0)  # let the scheduler see them before the policy samples
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def phase(args: argparse.Namespace, threads: int | None, tmp: Path, name: str) -> dict[str, Any]:
    measured = {
        "compare": compare(args.seconds, threads),
        "train": train(args.images, threads, tmp / name),
        "load_average_1min": os.getloadavg()[0],
    }
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument(
        "--busy", type=int, default=max(cores - 1, 1), help="spinning processes (default: cores-1)"
    )
    parser.add_argument("--busy-seconds", type=float, default=900, help="each spinner's limit")
    parser.add_argument("--seconds", type=float, default=1.0, help="compare --seconds")
    parser.add_argument("--images", type=int, default=512, help="train --train-subset")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        quiet = phase(args, 1, tmp, "quiet")
        with spinners(args.busy, args.busy_seconds):
            default = phase(args, None, tmp, "busy-default")
            every = phase(args, cores, tmp, "busy-all")
    result = {
        "cores": cores,
        "busy_processes": args.busy,
        "quiet_1_thread": quiet,
        "busy_default": default,
        "busy_all_cores": every,
        "ratios": {
            which: {
                **{
                    f"compare {label}": phase_result["compare"]["ms"][label] / ms
                    for label, ms in quiet["compare"]["ms"].items()
                },
                "train s/img": quiet["train"]["img_s"] / phase_result["train"]["img_s"],
            }
            for which, phase_result in (("default", default), ("all_cores", every))
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{cores} cores; busy phase: {args.busy} spinning process(es) of ours")
    print(f"{'':38s} {'quiet, 1 thread':>16s} {'busy, default':>14s} {'busy, all cores':>16s}")
    for label, ms in quiet["compare"]["ms"].items():
        print(
            f"compare {label + ' (ms)':30s} {ms:16.2f} {default['compare']['ms'][label]:14.2f} "
            f"{every['compare']['ms'][label]:16.2f}"
        )
    print(
        f"{'train shufflenet_v2 0.5x (img/s)':38s} {quiet['train']['img_s']:16.1f} "
        f"{default['train']['img_s']:14.1f} {every['train']['img_s']:16.1f}"
    )
    print(
        f"{'load average (1 min) after':38s} {quiet['load_average_1min']:16.1f} "
        f"{default['load_average_1min']:14.1f} {every['load_average_1min']:16.1f}"
    )
    for which in ("default", "all_cores"):
        ratios = "  ".join(f"{k} {v:.2f}x" for k, v in result["ratios"][which].items())
        print(f"busy {which} / quiet 1 thread: {ratios}")
    print(f"default threads while busy: {default['compare']['threads']}")
    worst = max(result["ratios"]["default"].values())
    print(f"worst default ratio {worst:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()

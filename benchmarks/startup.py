"""Start-up: ``lightnets --help`` and ``lightnets models`` against the interpreter's own start.

Each is a fresh process (this interpreter, ``-m lightnets``), timed wall-clock from spawn to
exit, in interleaved rounds beside two floors: ``python -c pass`` (what any Python command
costs) and ``python -c "import torch"`` (what any command that needs PyTorch costs). Prints the
medians and the ratios to the floors. Issue 22's goals on the 2-core development VM: ``--help``
under 0.3 s, ``models`` under 1.5 s. A console script installed by pyenv goes through a shell
shim first (``~/.pyenv/shims/lightnets``), which adds its own start-up on top.

    python benchmarks/startup.py [--rounds 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "lightnets --help": ["-m", "lightnets", "--help"],
    "lightnets models": ["-m", "lightnets", "models"],
}


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for round_ in range(args.rounds):
        names = list(CASES)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate the order
        for name in names:
            times[name].append(once(CASES[name]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "median_s": medians,
        "spread_s": {name: [min(t), max(t)] for name, t in times.items()},
        "help_over_python": medians["lightnets --help"] / medians["python -c pass"],
        "models_over_torch": medians["lightnets models"] / medians["import torch"],
        "load_average_1min": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"median of {args.rounds} interleaved rounds (fresh process each), {sys.executable}")
    for name, median in medians.items():
        low, high = result["spread_s"][name]
        print(f"  {name:18s} {median:6.3f} s   (min {low:.3f}, max {high:.3f})")
    print(
        f"  --help / python -c pass = {result['help_over_python']:.2f}   "
        f"models / import torch = {result['models_over_torch']:.2f}   "
        f"(load average {result['load_average_1min']:.1f})"
    )


if __name__ == "__main__":
    main()

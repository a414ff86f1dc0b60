"""Do the tests pass in any order? Runs them reversed and shuffled, and says which orders fail.

The project's rule is that tests pass in any order and leave no state behind; a test that only
passes after (or before) another one hides shared state, as a failed OpenVINO conversion did by
leaving the root logger at ERROR for every later test (issue 18). This script runs the chosen
tests (default: the whole suite) in one pytest process per order:

- ``reversed``: the collected order, back to front (a small plugin in this file);
- ``seed N``: pytest-random-order's global shuffle, ``--random-order-bucket=global
  --random-order-seed=N`` (``pip install pytest-random-order``, in the dev extra);

and prints one row per order: passed/failed counts, the failing tests and the time. Exit status
1 when any order failed. It is not part of CI (the whole suite takes minutes per order):

    PYTHONPATH=src python benchmarks/order_independence.py --seeds 1 2 3
    PYTHONPATH=src python benchmarks/order_independence.py tests/test_finetune.py \\
        tests/test_weights_formats.py tests/test_deploy_logging.py --seeds 7
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The environment variable that switches this file's reversing plugin on.
REVERSE = "LIGHTNETS_REVERSE_TEST_ORDER"
#: pytest's closing line, e.g. "3 failed, 839 passed, 6 skipped in 275.31s (0:04:35)".
SUMMARY = re.compile(
    r"^=*\s*(\d+ (?:passed|failed|skipped|errors?|deselected)\b.*?) in [\d.]+s", re.M
)


def pytest_collection_modifyitems(session, config, items) -> None:  # pragma: no cover
    """pytest hook (this file loaded with ``-p order_independence``): reverse the order."""
    if os.environ.get(REVERSE) == "1":
        items.reverse()


@dataclass
class OrderRun:
    """One pytest process: its order, outcome counts, failing test ids and duration."""

    order: str
    returncode: int
    counts: str
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_order(order: str, tests: list[str], extra: list[str], timeout: float) -> OrderRun:
    """Run pytest on ``tests`` in ``order`` ('reversed' or 'seed N') in a fresh process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), str(REPO / "benchmarks"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    args = ["-p", "order_independence"]
    if order == "reversed":
        env[REVERSE] = "1"
    else:
        seed = order.removeprefix("seed ")
        args += ["--random-order-bucket=global", f"--random-order-seed={seed}"]
    with tempfile.TemporaryDirectory() as cache:
        command = [sys.executable, "-m", "pytest", "-q", "-rf", "-o", f"cache_dir={cache}"]
        start = time.perf_counter()
        try:
            result = subprocess.run(
                [*command, *args, *extra, *tests],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return OrderRun(order, -1, f"timed out after {timeout:.0f} s", [], timeout)
        seconds = time.perf_counter() - start
    output = result.stdout + result.stderr
    summaries = SUMMARY.findall(output)
    counts = summaries[-1] if summaries else f"no summary (exit status {result.returncode})"
    failed = [line.split()[1] for line in output.splitlines() if line.startswith("FAILED ")]
    failed += [line.split()[1] for line in output.splitlines() if line.startswith("ERROR ")]
    return OrderRun(order, result.returncode, counts, failed, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=["tests"], help="test files (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3], help="shuffle seeds")
    parser.add_argument("--no-reverse", action="store_true", help="skip the reversed order")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds per order (default 3600)"
    )
    parser.add_argument(
        "--pytest-args", default="", help="extra pytest arguments, e.g. \"-m 'not slow'\""
    )
    args = parser.parse_args(argv)
    orders = ([] if args.no_reverse else ["reversed"]) + [f"seed {s}" for s in args.seeds]
    extra = shlex.split(args.pytest_args)
    print(f"{' '.join(args.tests)}: {len(orders)} order(s), one pytest process each", flush=True)
    runs = []
    for order in orders:
        run = run_order(order, args.tests, extra, args.timeout)
        runs.append(run)
        status = "ok    " if run.ok else "FAILED"
        print(f"{status} {run.order:<10} {run.seconds:7.1f} s  {run.counts}", flush=True)
        for test in run.failed:
            print(f"         {test}", flush=True)
    bad = [r for r in runs if not r.ok]
    print(
        f"{len(runs) - len(bad)} of {len(runs)} order(s) passed"
        + (f"; failing: {', '.join(r.order for r in bad)}" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

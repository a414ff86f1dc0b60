"""Run Python code under an address-space limit and record its own peak memory (tests' helper).

``python tests/measured_run.py PEAK_FILE ADDRESS_LIMIT -m MODULE ARGS...`` (or ``SCRIPT ARGS...``)
sets ``RLIMIT_AS`` to ADDRESS_LIMIT bytes, runs the module or script in this process as
``python -m MODULE ARGS`` would, and on the way out writes this process's peak resident memory
in bytes to PEAK_FILE. The peak is ``VmHWM`` from ``/proc/self/status``: the high-water mark of
this process's own memory since it started. ``ru_maxrss`` (``os.wait4``, ``getrusage``) would
not do: Linux carries the high-water mark of the process a child was forked (or vforked) from
across ``exec``, so a child of a test process that has grown to 1 GB reports 1 GB, whatever the
child itself used.
"""

from __future__ import annotations

import resource
import runpy
import sys
from pathlib import Path


def peak_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    peak_file, limit, *rest = sys.argv[1:]
    resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    try:
        if rest[0] == "-m":
            sys.argv = [rest[1], *rest[2:]]
            runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = rest
            sys.path.insert(0, str(Path(rest[0]).resolve().parent))
            runpy.run_path(rest[0], run_name="__main__")
    finally:
        Path(peak_file).write_text(str(peak_bytes()))


if __name__ == "__main__":
    main()

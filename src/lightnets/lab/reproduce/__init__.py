"""``lightnets reproduce``: every table of the five papers that can be rebuilt here, on one page.

One module per section (:mod:`.mobilenet_v1`, :mod:`.mobilenet_v2`, :mod:`.shufflenet_v1`,
:mod:`.shufflenet_v2`, :mod:`.squeezenet`, :mod:`.machine`), each calling the library's own
counting, timing, training and compression; :mod:`.report` holds what a section returns (tables
of the paper's figure, ours, the difference and a verdict), :mod:`.store` the report's folder
(one atomically written result per section, so a rerun skips finished ones), :mod:`.page` the
self-contained HTML page and :mod:`.runner` the order of it all.

>>> from lightnets.lab.reproduce import QUICK, run_reproduce
>>> result = run_reproduce("report", plan=QUICK)        # doctest: +SKIP
>>> result.index                                        # doctest: +SKIP
PosixPath('report/index.html')
"""

from lightnets.lab.reproduce.plan import FULL, PLANS, QUICK, Plan
from lightnets.lab.reproduce.runner import SECTIONS, ReproduceResult, parse_sections, run_reproduce

__all__ = [
    "FULL",
    "PLANS",
    "QUICK",
    "SECTIONS",
    "Plan",
    "ReproduceResult",
    "parse_sections",
    "run_reproduce",
]

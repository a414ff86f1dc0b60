"""ShuffleNet V2's four guidelines, re-run on this machine (Ma et al., ECCV 2018, Section 2).

Each guideline is a small benchmark network built from the paper's table
(:data:`~lightnets.lab.guidelines.paper.GUIDELINE_TABLES`): G1 ten blocks of two 1x1
convolutions c1 -> c2 -> c1 (Table 1), G2 ten pointwise group convolutions (Table 2), G3 ten
blocks of 1-4 fragments in series or parallel (Table 3, Appendix Fig. 1), G4 ten ResNet
bottleneck units with ReLU and/or shortcut removed (Table 4). For every configuration the
report holds lightnets' own counts (MACs and memory access from :func:`lightnets.profile`,
per image), the G1 lower bound of Eq. 1, the measured speed (median of interleaved rounds), and
the paper's GPU and ARM figures, all normalised to the first row of their table so that shapes
compare across machines.

One module per job: :mod:`.paper` (Tables 1-4 as data), :mod:`.networks` (the benchmark
networks and their counts), :mod:`.timing` (timing runs), :mod:`.verdicts` (the records, the
report and whether this machine agrees with the paper), :mod:`.plotting` (the figure) and
:mod:`.runner` (all of it, in order).

>>> report = run_guidelines(["G1"], quick=True)      # doctest: +SKIP
>>> print(report.to_markdown())                       # doctest: +SKIP
"""

from lightnets.lab.guidelines.networks import (
    GUIDELINES,
    Experiment,
    build_experiments,
    g1_lower_bound,
)
from lightnets.lab.guidelines.plotting import plot_guidelines
from lightnets.lab.guidelines.runner import check_guideline_options, run_guidelines
from lightnets.lab.guidelines.timing import Timing, time_calls
from lightnets.lab.guidelines.verdicts import (
    FLAT,
    TOLERANCE,
    GuidelineRecord,
    GuidelineReport,
    timing_summary,
    verdict,
)

__all__ = [
    "FLAT",
    "GUIDELINES",
    "TOLERANCE",
    "Experiment",
    "GuidelineRecord",
    "GuidelineReport",
    "Timing",
    "build_experiments",
    "check_guideline_options",
    "g1_lower_bound",
    "plot_guidelines",
    "run_guidelines",
    "time_calls",
    "timing_summary",
    "verdict",
]

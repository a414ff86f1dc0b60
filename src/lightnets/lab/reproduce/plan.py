"""How much each section measures: the quick plan (under 10 minutes on 2 cores) and the full one.

Counting (MACs, parameters, memory, compressed sizes) is exact and costs seconds, so both plans
count everything; they differ in what takes time: training (the MobileNet V1 accuracy trend),
timing rounds (ShuffleNet V2's guidelines, the latency table, the rooflines).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from lightnets.errors import check_float, check_int

__all__ = ["FULL", "PLANS", "QUICK", "Plan"]

#: One model per family: the rooflines and the quick latency table.
ONE_PER_FAMILY: tuple[str, ...] = (
    "squeezenet1_1",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet_v1",
    "shufflenet_v2",
)
#: ShuffleNet V2, Section 1 (MACs are an indirect measure of speed): networks of about the same
#: MACs (41M, 41M, 38M), each built as its paper describes.
SAME_MACS: tuple[str, ...] = (
    "shufflenet_v2:width_mult=0.5",
    "mobilenet_v1:width_mult=0.25",
    "shufflenet_v1:width_mult=0.5",
)


@dataclass(frozen=True)
class Plan:
    """The budget of every section that trains or times (counting is always complete).

    MobileNet V1's trend: ``sweep_widths`` at ``sweep_size`` pixels, and width 1 at each of
    ``sweep_resolutions`` (none: the resolution trend is skipped), each cell trained on the
    first ``sweep_train_subset`` Fashion-MNIST images for ``sweep_epochs`` epochs.
    ShuffleNet V2: ``guidelines_quick`` runs the x1 scale only; ``latency_seconds`` is the
    minimum timing per model. This machine: the latency table of ``compare_specs``, and the
    roofline of each of ``roofline_specs`` (``seconds_per_layer``, roofs over ``peak_seconds``).
    Every timing uses ``threads`` torch threads.
    """

    name: str
    sweep_widths: tuple[float, ...]
    sweep_size: int
    sweep_resolutions: tuple[int, ...]
    sweep_train_subset: int
    sweep_epochs: int
    sweep_batch_size: int
    guidelines: tuple[str, ...]
    guidelines_quick: bool
    latency_seconds: float
    compare_specs: tuple[str, ...]
    roofline_specs: tuple[str, ...]
    seconds_per_layer: float
    peak_seconds: float
    threads: int = 1

    def validate(self) -> Plan:
        check_int("threads", self.threads, minimum=1)
        check_int("sweep train subset", self.sweep_train_subset, minimum=1)
        check_int("sweep epochs", self.sweep_epochs, minimum=1)
        check_float("latency seconds", self.latency_seconds, minimum=0.0)
        check_float("seconds per layer", self.seconds_per_layer, minimum=0.0)
        check_float("peak seconds", self.peak_seconds, minimum=0.0, exclusive_minimum=True)
        return self

    def with_threads(self, threads: int) -> Plan:
        return replace(self, threads=threads).validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Plan(
    name="quick",
    sweep_widths=(1.0, 0.75, 0.5, 0.25),
    sweep_size=16,
    sweep_resolutions=(),
    sweep_train_subset=2000,
    sweep_epochs=2,
    sweep_batch_size=64,
    guidelines=("G1", "G2", "G3", "G4"),
    guidelines_quick=True,
    latency_seconds=0.5,
    compare_specs=ONE_PER_FAMILY,
    roofline_specs=ONE_PER_FAMILY,
    seconds_per_layer=0.01,
    peak_seconds=1.0,
)

FULL = Plan(
    name="full",
    sweep_widths=(1.0, 0.75, 0.5, 0.25),
    sweep_size=28,
    # The paper's 224/192/160/128 px are 1, 6/7, 5/7 and 4/7 of 224: the same steps from 28 px.
    sweep_resolutions=(28, 24, 20, 16),
    sweep_train_subset=3000,
    sweep_epochs=3,
    sweep_batch_size=64,
    guidelines=("G1", "G2", "G3", "G4"),
    guidelines_quick=False,
    latency_seconds=1.0,
    compare_specs=(
        "squeezenet1_0",
        "squeezenet1_1",
        "mobilenet_v1",
        "mobilenet_v1:width_mult=0.5",
        "mobilenet_v1:width_mult=0.25",
        "mobilenet_v2",
        "mobilenet_v2:width_mult=1.4",
        "shufflenet_v1",
        "shufflenet_v1:groups=8",
        "shufflenet_v2:width_mult=0.5",
        "shufflenet_v2",
        "shufflenet_v2:width_mult=2.0",
    ),
    roofline_specs=ONE_PER_FAMILY,
    seconds_per_layer=0.05,
    peak_seconds=3.0,
)

PLANS: dict[str, Plan] = {"quick": QUICK, "full": FULL}

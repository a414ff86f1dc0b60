"""ShuffleNet (Zhang et al. 2018): the complexity and stage widths for g = 1..8 (Table 1) and
the 0.5x-2x scales (Table 2), counted on the networks lightnets builds."""

from __future__ import annotations

from typing import Any

from lightnets.lab.reproduce.common import COST_COLUMNS, Context, add_cost_rows, widest
from lightnets.lab.reproduce.report import SectionResult, Table, number, verdict

ID = "shufflenet_v1"
TITLE = "ShuffleNet V1"
PAPER = "ShuffleNet (Zhang et al. 2018, arXiv:1707.01083)"

#: Table 1: output channels of stages 2, 3, 4 (28x28, 14x14, 7x7 at 224 px) at 1x, per g.
PAPER_STAGE_WIDTHS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
STAGE_RESOLUTIONS = (28, 14, 7)


def inputs(ctx: Context) -> dict[str, Any]:
    return {}


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "Group convolutions let ShuffleNet widen its stages as g grows at about the same cost: "
        "the complexity and widths of Table 1 and the scaled networks of Table 2, counted.",
    )
    groups = Table(
        "shufflenet_v1.groups",
        "Table 1: complexity and stage widths for g = 1, 2, 3, 4, 8 (1x, 224 px)",
        "lightnets.profile of shufflenet_v1 (1000 classes, batch 1): MACs of convolutions and "
        "the FC layer, all parameters; stage widths = the widest output at 28x28, 14x14 and "
        "7x7 (each stage's output)",
        COST_COLUMNS,
    )
    for g, paper_widths in PAPER_STAGE_WIDTHS.items():
        label = f"1x g={g}"
        prof = add_cost_rows(groups, label, "shufflenet_v1", {"groups": g, "width_mult": 1.0})
        found = widest(r for r in prof.rows if not r.free)
        ours_widths = tuple(found.get(r, 0) for r in STAGE_RESOLUTIONS)
        groups.add(
            f"{label} 224 stage widths",
            label,
            "224 px",
            "stage widths",
            "/".join(map(str, paper_widths)),
            "/".join(map(str, ours_widths)),
            number(None, "equal" if ours_widths == paper_widths else "-"),
            verdict("agrees" if ours_widths == paper_widths else "differs"),
            "Table 1",
        )
    result.tables.append(groups)
    scales = Table(
        "shufflenet_v1.scales",
        "Table 2: ShuffleNet sx, g = 3 (224 px)",
        "lightnets.profile of shufflenet_v1 (groups 3, 1000 classes, batch 1); the stem widths "
        "at sx follow the reference code (12/24/24/48 channels at 0.5x/1x/1.5x/2x)",
        COST_COLUMNS,
    )
    for width in (0.5, 1.5, 2.0):
        add_cost_rows(
            scales, f"{width:g}x g=3", "shufflenet_v1", {"groups": 3, "width_mult": width}
        )
    result.tables.append(scales)
    return result

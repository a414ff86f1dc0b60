"""MobileNetV2 (Sandler et al. 2018): MACs and parameters per width (Table 4), and Table 3, the
memory that must be materialised at each resolution, against MobileNet V1 and ShuffleNet
(2x, g=3): the paper's argument for inverted residuals with linear bottlenecks."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightnets.analysis.report import LayerRecord
from lightnets.lab.reproduce.common import (
    COST_COLUMNS,
    Context,
    add_cost_rows,
    count,
    widest,
)
from lightnets.lab.reproduce.report import (
    SectionResult,
    Table,
    integer_text,
    number,
    signed,
    verdict,
)

ID = "mobilenet_v2"
TITLE = "MobileNet V2"
PAPER = "MobileNetV2 (Sandler et al. 2018, arXiv:1801.04381)"

#: Bytes per activation value: Table 3 assumes 16-bit floats.
BYTES_PER_VALUE = 2
#: Table 3's rows: the spatial resolutions of a 224x224 input.
RESOLUTIONS = (112, 56, 28, 14, 7, 1)
#: Memory within this relative distance of the paper's kilobytes agrees (the paper prints two
#: or three significant digits: 627 KB is its "600K").
MEMORY_TOLERANCE = 0.05


@dataclass(frozen=True)
class Network:
    """One column of Table 3: a zoo network and how its tensors group into blocks.

    ``block``: a pattern whose first group names the block a module path belongs to
    (``features.3``, ``stage2.0``); only a block's output must be kept whole, its inner tensors
    can be computed piece by piece (Section 5.1). ``None``: every layer's output is kept
    (MobileNet V1).
    ``stem_streamed``: the first layer's output is not counted (the caption's "trick").
    """

    key: str
    label: str
    name: str
    hparams: tuple[tuple[str, Any], ...]
    block: str | None
    stem_streamed: bool
    #: Table 3, arXiv:1801.04381v4: resolution -> (channels, kilobytes) the paper prints.
    paper: dict[int, tuple[int, int]]
    paper_max_kb: int


NETWORKS = (
    Network(
        "mobilenet_v1",
        "MobileNet V1",
        "mobilenet_v1",
        (),
        None,
        False,
        {
            112: (64, 1600),
            56: (128, 800),
            28: (256, 400),
            14: (512, 200),
            7: (1024, 199),
            1: (1024, 2),
        },
        1600,
    ),
    Network(
        "mobilenet_v2",
        "MobileNet V2",
        "mobilenet_v2",
        (),
        r"^(features\.\d+)",
        True,
        {112: (16, 400), 56: (32, 200), 28: (64, 100), 14: (160, 62), 7: (320, 32), 1: (1280, 2)},
        400,
    ),
    Network(
        "shufflenet_v1",
        "ShuffleNet (2x, g=3)",
        "shufflenet_v1",
        (("groups", 3), ("width_mult", 2.0)),
        r"^(stage\d\.\d+|conv1|maxpool)",
        True,
        {
            112: (32, 800),
            56: (48, 300),
            28: (400, 600),
            14: (800, 310),
            7: (1600, 156),
            1: (1600, 3),
        },
        600,
    ),
)

_G2_WIDTHS = (
    "the paper's 400/800/1600 channels are ShuffleNet 2x at g=2 (Table 1 of ShuffleNet: "
    "200/400/800, doubled); at g=3 the stages are 480/960/1920 wide"
)
#: Why a row differs, where the reason is known: (network, resolution) -> note.
NOTES: dict[tuple[str, int], str] = {
    ("mobilenet_v1", 7): "1024 x 7 x 7 x 2 bytes is 100 KB; the paper prints twice that",
    ("mobilenet_v2", 56): "the paper lists the width made by the next stride-2 stage (32, "
    "at 28x28); the blocks at 56x56 are 24 channels wide (its Table 2)",
    ("mobilenet_v2", 28): "the paper lists 64 (made at 14x14); the blocks at 28x28 are 32 wide",
    ("mobilenet_v2", 14): "the paper lists 160 (made at 7x7); the widest blocks at 14x14 are 96",
    ("mobilenet_v2", 7): "the last 1x1 convolution makes 1280 channels at 7x7, before the "
    "pooling; the paper lists 1280 only at 1x1 (streamed into the pooling, 125 KB otherwise)",
    ("mobilenet_v2", 1): "1280 x 2 bytes is 2.56 KB; the paper prints whole kilobytes",
    ("shufflenet_v1", 112): "the 2x network's only 112x112 tensor is the stem's output (48 "
    "channels), which the caption's first-layer trick removes",
    ("shufflenet_v1", 28): _G2_WIDTHS,
    ("shufflenet_v1", 14): "g=2's width again (see 28x28)",
    ("shufflenet_v1", 7): "g=2's width again (see 28x28)",
    ("shufflenet_v1", 1): "g=2's width again (see 28x28)",
}


def inputs(ctx: Context) -> dict[str, Any]:
    return {}


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "MACs and parameters at widths 1.0 and 1.4 (Table 4), and the activation memory "
        "inverted residuals need at each resolution against MobileNet V1 and ShuffleNet "
        "(Table 3).",
    )
    widths = Table(
        "mobilenet_v2.widths",
        "Table 4: MACs and parameters per width (224 px)",
        "lightnets.profile of mobilenet_v2 (1000 classes, batch 1): MACs of convolutions and "
        "the FC layer; parameters = all of the model's",
        COST_COLUMNS,
    )
    add_cost_rows(widths, "1.0x", "mobilenet_v2", {"width_mult": 1.0})
    add_cost_rows(
        widths,
        "1.4x",
        "mobilenet_v2",
        {"width_mult": 1.4},
        notes={
            "params": "the TF-slim reference network at 1.4 has 6.06M (6.11M with our "
            "1000-class head); the paper's 6.9M is not reproducible from its Table 2",
        },
    )
    result.tables.append(widths)
    memory, figure_data = table3()
    result.tables.append(memory)
    result.figures.append(_figure(ctx, figure_data))
    return result


# -- Table 3 -------------------------------------------------------------------------------------
def _blocks(rows: Iterable[LayerRecord], block: str | None) -> list[LayerRecord]:
    """The last operation of each block (consecutive rows of one block): its output is the
    block's output. ``block`` None: every operation is its own block."""
    outputs: list[LayerRecord] = []
    previous: object = None
    for row in rows:
        if row.free:
            continue
        found = re.match(block, row.module) if block is not None else None
        key = found.group(1) if found else (row.module, row.index)
        if key == previous:
            outputs[-1] = row
        else:
            outputs.append(row)
        previous = key
    return outputs


def materialised(network: Network) -> tuple[dict[int, int], dict[int, int], int]:
    """From the counter's rows: resolution -> channels that must be kept whole (the paper's
    rule: block outputs, stem streamed where the caption says), the same for every single
    tensor of a layer-by-layer run, and the counter's peak of live activations (fp32 bytes)."""
    prof = count(network.name, 224, **dict(network.hparams))
    blocks = _blocks(prof.rows, network.block)
    if network.stem_streamed:
        blocks = blocks[1:]
    return widest(blocks), widest(r for r in prof.rows if not r.free), prof.peak_activation_bytes


def kilobytes(channels: int, resolution: int) -> float:
    return channels * resolution * resolution * BYTES_PER_VALUE / 1000


def table3() -> tuple[Table, dict[str, Any]]:
    table = Table(
        "mobilenet_v2.table3",
        "Table 3: the most channels / memory to materialise at each resolution (16-bit)",
        "lightnets.profile of each network at 224x224, batch 1: the output shape of the last "
        "operation of every block (a MobileNet V2 bottleneck, a ShuffleNet unit; every layer "
        "of MobileNet V1), the widest at each resolution, x 2 bytes; the first layer's output "
        "left out for MobileNet V2 and ShuffleNet, as the caption says. KB = 1000 bytes",
        [
            "network",
            "resolution",
            "paper channels",
            "ours channels",
            "paper KB",
            "ours KB",
            "difference",
            "verdict",
            "note",
        ],
    )
    figure: dict[str, Any] = {}
    maxima: dict[str, float] = {}
    for network in NETWORKS:
        ours, eager, peak = materialised(network)
        for resolution in RESOLUTIONS:
            _memory_row(table, network, resolution, ours.get(resolution, 0))
        best = max(ours, key=lambda r: kilobytes(ours[r], r))
        maxima[network.key] = kilobytes(ours[best], best)
        _max_row(table, network, maxima[network.key], best, ours[best])
        worst = max(eager, key=lambda r: kilobytes(eager[r], r))
        table.notes.append(
            f"{network.label} layer by layer (every tensor whole, as eager PyTorch runs it): "
            f"the widest tensor is {eager[worst]} channels at {worst}x{worst}, "
            f"{kilobytes(eager[worst], worst):.0f} KB; the counter's peak of live "
            f"activations is {peak / 1e6:.2f} MB in float32"
        )
        figure[network.label] = {
            "paper": [network.paper[r][1] for r in RESOLUTIONS],
            "ours": [kilobytes(ours.get(r, 0), r) for r in RESOLUTIONS],
        }
    _claim_row(table, maxima)
    table.notes.append(
        "The paper's figures are those of arXiv:1801.04381v4; earlier versions printed 1/O(1) "
        "at 112x112 and maxima of 800K / 200K / 600K"
    )
    return table, figure


def _memory_row(table: Table, network: Network, resolution: int, channels: int) -> None:
    paper_channels, paper_kb = network.paper[resolution]
    ours_kb = kilobytes(channels, resolution)
    relative = 100 * (ours_kb - paper_kb) / paper_kb
    # The paper prints whole kilobytes, cut rather than rounded (1280 channels at 1x1: "2").
    close = abs(relative) <= 100 * MEMORY_TOLERANCE or abs(ours_kb - paper_kb) < 1
    agrees = channels == paper_channels and close
    table.add(
        f"{network.key} {resolution}",
        network.label,
        f"{resolution}x{resolution}",
        number(paper_channels, str(paper_channels)),
        number(channels, str(channels)) if channels else number(None, "none"),
        number(paper_kb, integer_text(paper_kb)),
        number(ours_kb, f"{ours_kb:.1f}") if channels else number(None, "-"),
        number(relative, signed(relative, 0, "%")) if channels else number(None, "-"),
        verdict("agrees" if agrees else "differs"),
        NOTES.get((network.key, resolution), ""),
    )


def _max_row(table: Table, network: Network, ours_kb: float, at: int, channels: int) -> None:
    relative = 100 * (ours_kb - network.paper_max_kb) / network.paper_max_kb
    judged = "agrees" if abs(relative) <= 100 * MEMORY_TOLERANCE else "differs"
    note = f"at {at}x{at} ({channels} channels)"
    if network.key == "shufflenet_v1":
        note += "; the paper's 600 KB is 400 channels at 28x28, g=2's width"
    table.add(
        f"{network.key} max",
        network.label,
        "max",
        number(None, "-"),
        number(None, "-"),
        number(network.paper_max_kb, integer_text(network.paper_max_kb)),
        number(ours_kb, f"{ours_kb:.1f}"),
        number(relative, signed(relative, 0, "%")),
        verdict(judged),
        note,
    )


def _claim_row(table: Table, maxima: dict[str, float]) -> None:
    """The table's point: MobileNet V2 needs the least memory of the three."""
    v2 = maxima["mobilenet_v2"]
    others = min(value for key, value in maxima.items() if key != "mobilenet_v2")
    holds = v2 < others
    table.add(
        "claim",
        "MobileNet V2 needs the least",
        "max",
        number(None, "-"),
        number(None, "-"),
        number(None, "400 < 600 < 1600"),
        number(v2, f"{v2:.1f} < {others:.1f}" if holds else f"{v2:.1f} >= {others:.1f}"),
        number(None, "-"),
        verdict("holds" if holds else "fails"),
        "the inverted residual keeps only its thin bottleneck tensors whole",
    )


def _figure(ctx: Context, data: dict[str, Any]) -> dict[str, str]:
    """Grouped bars: kilobytes per resolution, the paper's and ours, for the three networks."""
    from lightnets.figures.bars import paper_and_ours_figure

    fig = paper_and_ours_figure(
        data,
        [f"{r}x{r}" for r in RESOLUTIONS],
        ylabel="KB to materialise (16-bit)",
        title="MobileNetV2's Table 3: memory at each resolution",
    )
    return ctx.workspace.save_figure(
        fig,
        "mobilenet_v2_table3",
        "Table 3 of MobileNetV2: the largest tensor kept whole at each resolution, in KB at 16 "
        "bits per value, the paper's (grey) and lightnets' count (blue)",
    )

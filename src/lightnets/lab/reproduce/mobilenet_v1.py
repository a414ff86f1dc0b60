"""MobileNets (Howard et al. 2017): Table 2 (cost by layer type), Tables 6-7 (the width and
resolution multipliers' MACs and parameters), and the accuracy trend of the multipliers, trained
here on Fashion-MNIST by :func:`lightnets.lab.sweep.run_sweep` beside the paper's ImageNet
top-1."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightnets.lab.sweep import SweepResult

import contextlib
from typing import Any

from lightnets.analysis.reference import MOBILENET_V1_TABLE2, paper_figures
from lightnets.errors import LightnetsError
from lightnets.lab.reproduce.common import COST_COLUMNS, Context, add_cost_rows, count
from lightnets.lab.reproduce.report import (
    SectionResult,
    Table,
    compare_points,
    millions_text,
    number,
    percent_text,
    signed,
    verdict,
)

ID = "mobilenet_v1"
TITLE = "MobileNet V1"
PAPER = "MobileNets (Howard et al. 2017, arXiv:1704.04861)"

#: Table 2's layer types, as the paper names them.
TYPE_NAMES = {
    "conv1x1": "conv 1x1",
    "dw3x3": "conv dw 3x3",
    "conv3x3": "conv 3x3 (the stem)",
    "fc": "fully connected",
}
DIGIT_SWAP = (
    "the paper's 1.19% is 1.91% with two digits swapped: its four MAC shares then sum to 99.29%"
)
#: Fashion-MNIST has 10 classes: a top-1 this close to 10% means the run learned nothing.
CHANCE_TOP1 = 0.15
#: Table 7's input sizes, largest first (the paper's resolution multiplier).
PAPER_RESOLUTIONS = (224, 192, 160, 128)


def inputs(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    return {
        "widths": list(plan.sweep_widths),
        "size": plan.sweep_size,
        "resolutions": list(plan.sweep_resolutions),
        "train_subset": plan.sweep_train_subset,
        "epochs": plan.sweep_epochs,
        "batch_size": plan.sweep_batch_size,
        "threads": plan.threads,
    }


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        ID,
        TITLE,
        PAPER,
        "Where the cost of a depthwise separable network goes (Table 2), what the width and "
        "resolution multipliers cost (Tables 6-7), and whether accuracy falls with them as on "
        "ImageNet, trained here on Fashion-MNIST.",
    )
    result.tables.append(table2())
    result.tables.append(multipliers())
    trend, figures = accuracy_trend(ctx)
    result.tables.append(trend)
    result.figures += figures
    return result


def table2() -> Table:
    """Table 2: shares of MACs and of weights per layer type, from :meth:`Profile.by_type`."""
    table = Table(
        "mobilenet_v1.table2",
        "Table 2: resources per layer type (1.0 MobileNet-224)",
        "lightnets.profile of mobilenet_v1 (width 1.0, 224x224, 1000 classes, batch 1), "
        "Profile.by_type(): MACs of every convolution and the FC layer; weights = conv and FC "
        "weight tensors only (FC bias and BatchNorm left out, as the paper's shares are)",
        ["layer type", "quantity", "paper", "ours", "difference", "verdict", "note"],
    )
    shares = {share.type: share for share in count("mobilenet_v1").by_type()}
    for quantity, index, attribute in (
        ("MACs", 0, "macs_percent"),
        ("weights", 1, "params_percent"),
    ):
        for kind, name in TYPE_NAMES.items():
            paper = MOBILENET_V1_TABLE2[kind][index]
            ours = getattr(shares[kind], attribute)
            cells = compare_points(paper, ours)
            note = ""
            if kind == "conv3x3" and quantity == "MACs":
                note = DIGIT_SWAP
            table.add(f"{kind} {quantity}", name, f"{quantity} %", *cells, note)
        paper_sum = sum(MOBILENET_V1_TABLE2[kind][index] for kind in TYPE_NAMES)
        ours_sum = sum(getattr(shares[kind], attribute) for kind in TYPE_NAMES)
        note = DIGIT_SWAP if quantity == "MACs" else ""
        table.add(
            f"sum {quantity}",
            "all four",
            f"{quantity} %",
            *compare_points(paper_sum, ours_sum),
            note,
        )
    return table


def multipliers() -> Table:
    """Tables 6 and 7: MACs and parameters at each width (224 px) and resolution (width 1)."""
    table = Table(
        "mobilenet_v1.multipliers",
        "Tables 6-7: the width multiplier (224 px) and the resolution multiplier (width 1.0)",
        "lightnets.profile of mobilenet_v1 (1000 classes, batch 1): MACs of convolutions and "
        "the FC layer; parameters = all of the model's (BatchNorm included)",
        COST_COLUMNS,
    )
    notes = {"params": "the paper rounds 470,072 to 0.5M"}
    for width in (1.0, 0.75, 0.5, 0.25):
        add_cost_rows(
            table,
            f"{width:g}x",
            "mobilenet_v1",
            {"width_mult": width},
            notes=notes if width == 0.25 else None,
        )
    for size in PAPER_RESOLUTIONS[1:]:
        add_cost_rows(table, "1x", "mobilenet_v1", {"width_mult": 1.0}, size=size)
    return table


def _paper_top1(width: float, resolution: int = 224) -> float | None:
    for figure in paper_figures("mobilenet_v1"):
        if figure.resolution == resolution and dict(figure.hparams).get("width_mult") == width:
            return figure.top1
    return None


def _sweep(ctx: Context, axes: dict[str, list], folder: str) -> SweepResult:
    """:func:`run_sweep` on Fashion-MNIST with the plan's budget; the trainer's own output goes
    to ``work/<folder>.log``."""
    from lightnets.lab.sweep import run_sweep
    from lightnets.train import TrainConfig, get_recipe
    from lightnets.train.recipes import default_recipe_name

    plan = ctx.plan
    recipe = get_recipe(
        default_recipe_name(plan.sweep_epochs),
        epochs=plan.sweep_epochs,
        batch_size=plan.sweep_batch_size,
    )
    base = TrainConfig(
        model="mobilenet_v1",
        output="",
        dataset="fashion-mnist",
        train_subset=plan.sweep_train_subset,
        val_size=0,
        recipe=recipe,
        device="cpu",
    )
    output = ctx.workspace.work / folder
    with (
        open(ctx.workspace.work / f"{folder}.log", "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
    ):
        result = run_sweep(base, axes, output, log=ctx.log)
    if result is None:  # only with max_cells, or on a process other than the main one
        raise RuntimeError(f"the {folder} sweep stopped before its last cell")
    return result


def accuracy_trend(ctx: Context) -> tuple[Table, list[dict[str, str]]]:
    """Test top-1 on Fashion-MNIST against the width (and resolution) multiplier, beside the
    paper's ImageNet top-1 (Tables 6-7): the trend, not the level, is comparable."""
    plan = ctx.plan
    table = Table(
        "mobilenet_v1.trend",
        "Tables 6-7: accuracy against the multipliers (ours on Fashion-MNIST, the paper's on "
        "ImageNet)",
        f"lightnets sweep: mobilenet_v1 (cifar variant, 10 classes) trained from scratch on the "
        f"first {plan.sweep_train_subset:,} Fashion-MNIST training images, {plan.sweep_epochs} "
        f"epoch(s), batch {plan.sweep_batch_size}, the default short-run recipe, seed 0, one "
        "run per cell; test top-1 on all 10,000 test images. The paper: ImageNet, 224 px, 1000 "
        "classes. The levels are not comparable, the change from the full network is",
        [
            "network",
            "input (ours / paper)",
            "paper (ImageNet)",
            "ours (Fashion-MNIST)",
            "paper change",
            "ours change",
            "difference",
            "verdict",
            "MACs here",
        ],
    )
    figures: list[dict[str, str]] = []
    try:
        width_sweep = _sweep(
            ctx,
            {"width_mult": list(plan.sweep_widths), "input_size": [plan.sweep_size]},
            f"sweep-{plan.name}-width",
        )
    except LightnetsError as exc:
        table.notes.append(f"not measured: {exc}")
        return table, figures
    records = {r["cell"][0][1]: r for r in width_sweep.records}
    reference = records.get(1.0)
    for width in plan.sweep_widths:
        _trend_row(
            table,
            f"{width:g}x",
            records[width],
            reference,
            _paper_top1(width),
            _paper_top1(1.0),
            f"{plan.sweep_size} / 224 px",
            f"width {width:g}",
        )
    figures.append(_figure(ctx, width_sweep, "mobilenet_v1_width", "width multiplier"))
    resolutions = [s for s in plan.sweep_resolutions if s != plan.sweep_size]
    if resolutions and reference is not None:
        resolution_sweep = _sweep(
            ctx,
            {"width_mult": [1.0], "input_size": resolutions},
            f"sweep-{plan.name}-resolution",
        )
        sizes = {r["cell"][1][1]: r for r in resolution_sweep.records}
        sizes[plan.sweep_size] = reference
        for ours_size, paper_size in zip(plan.sweep_resolutions, PAPER_RESOLUTIONS, strict=False):
            _trend_row(
                table,
                "1x",
                sizes[ours_size],
                reference,
                _paper_top1(1.0, paper_size),
                _paper_top1(1.0),
                f"{ours_size} / {paper_size} px",
                f"resolution {ours_size}",
            )
        figures.append(
            _figure(ctx, resolution_sweep, "mobilenet_v1_resolution", "resolution multiplier")
        )
    table.notes.append(_ordering_note(table))
    return table, figures


def _trend_row(
    table: Table,
    label: str,
    record: dict[str, Any],
    reference: dict[str, Any] | None,
    paper: float | None,
    paper_reference: float | None,
    sizes: str,
    key: str,
) -> None:
    ours = 100 * record["test_top1"]
    ours_ref = 100 * reference["test_top1"] if reference else None
    is_reference = record is reference
    paper_change = paper - paper_reference if paper is not None and paper_reference else None
    ours_change = ours - ours_ref if ours_ref is not None else None
    if is_reference:
        judged = verdict("reference")
    elif record["test_top1"] < CHANCE_TOP1:
        judged = verdict("differs", "differs (chance level)")
    elif ours_change is None or paper_change is None:
        judged = verdict("n/a")
    else:
        judged = verdict("agrees" if (ours_change < 0) == (paper_change < 0) else "differs")
    difference = (
        number(ours_change - paper_change, signed(ours_change - paper_change, 1, " points"))
        if ours_change is not None and paper_change is not None and not is_reference
        else number(None, "-")
    )
    table.add(
        key,
        label,
        sizes,
        number(paper, percent_text(paper, 1)) if paper is not None else number(None, "-"),
        number(ours, percent_text(ours, 2)),
        number(paper_change, signed(paper_change, 1, " points"))
        if paper_change is not None and not is_reference
        else number(None, "-"),
        number(ours_change, signed(ours_change, 2, " points"))
        if ours_change is not None and not is_reference
        else number(None, "-"),
        difference,
        judged,
        number(record["macs"], millions_text(record["macs"], 2)),
    )


def _ordering_note(table: Table) -> str:
    agreeing = sum(
        1
        for row in table.rows
        if any(c.get("verdict") == "agrees" for c in row["cells"] if isinstance(c, dict))
    )
    judged = sum(
        1
        for row in table.rows
        if any(
            c.get("verdict") in ("agrees", "differs") for c in row["cells"] if isinstance(c, dict)
        )
    )
    return (
        f"{agreeing} of {judged} smaller networks lose accuracy against the full one, as on "
        "ImageNet (a short run on a small subset: differences of a point or two are noise)"
    )


def _figure(ctx: Context, sweep: Any, name: str, what: str) -> dict[str, str]:
    from lightnets.lab.sweep import plot_sweep

    scratch = plot_sweep(sweep, ctx.workspace.work / f"{name}.full.png")
    return ctx.workspace.adopt_png(
        scratch,
        name,
        f"MobileNet V1's {what} on Fashion-MNIST: test top-1 against MACs, parameters and "
        "latency measured here, and the paper's ImageNet rows",
    )

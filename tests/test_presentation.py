"""The presentation layer: rich tables from rows of text (rendered as rich renders the table
built by hand), and figures from plain data (what each draws, read back from matplotlib)."""

from __future__ import annotations

import io

import pytest

from lightnets.errors import InvalidArgumentError
from lightnets.figures import save_figure
from lightnets.figures.bars import SpeedPanel, normalised_speed_figure
from lightnets.figures.curves import training_curves
from lightnets.figures.roofline import Roof, RooflineLayer, roofline_figure
from lightnets.figures.zoo import SPARE_STYLES, FamilyStyle, ZooPoint, zoo_figure
from lightnets.tables import PIPED_WIDTH, Column, rich_table, terminal_console


def _text(table, width: int = 70) -> str:
    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_rich_table_is_the_table_rich_builds_by_hand():
    from rich import box
    from rich.table import Table

    rows = [["conv", "1.5M", "a long description that has to wrap"], ["fc", "12", ""]]
    hand = Table(title="t", header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 2))
    hand.add_column("kind", style="bold", no_wrap=True)
    hand.add_column("MACs", justify="right")
    hand.add_column("note")
    for row in rows:
        hand.add_row(*row)
    hand.caption = "c"
    ours = rich_table(
        [Column("kind", no_wrap=True, style="bold"), Column("MACs", "right"), "note"],
        rows,
        title="t",
        caption="c",
        header_style="bold",
        box="simple_head",
        padding=(0, 2),
    )
    assert _text(ours, 40) == _text(hand, 40)
    # Left at None, every option keeps rich's default.
    plain = Table()
    plain.add_column("a")
    plain.add_row("1")
    assert _text(rich_table(["a"], [["1"]])) == _text(plain)


def test_terminal_console_is_wide_when_piped(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert not terminal_console().is_terminal  # pytest captures standard output
    assert terminal_console().width == PIPED_WIDTH
    assert terminal_console(piped_width=None).width == 80  # rich's own choice


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_roofline_figure_draws_what_its_data_says():
    roof = Roof("test cpu", gflops=100.0, bandwidth_gb_s=10.0, threads=2)
    assert roof.ridge_point == 10.0
    layers = [
        RooflineLayer("conv", 20.0, 50.0, 1.0),
        RooflineLayer("pointwise_conv", 2.0, 30.0, 2.0, in_cache=True),
        RooflineLayer("depthwise_conv", 1.0, 150.0, 0.5, above_peak=True),
        RooflineLayer("batchnorm", 0.5, 1.0, 0.1),  # a kind the figure does not draw
    ]
    fig = roofline_figure("net", (1, 3, 32, 32), roof, layers, stable=False, note="busy; more")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "roof: min(peak, intensity × bandwidth)",
        "standard conv (1)",
        "pointwise 1x1 (1)",
        "depthwise (1)",
    ]
    (notes,) = [t for t in _texts(ax) if t.startswith("Points above")]
    assert "Circled in red: 1 point(s) above the compute peak" in notes
    assert notes.endswith("Measurement NOT STABLE: busy")
    assert "3x32x32 input, batch 1" in ax.get_title() and "2 threads" in ax.get_title()
    quiet = roofline_figure("net", (1, 3, 32, 32), roof, layers[:1])
    assert not any(t.startswith("Points above") for t in _texts(quiet.axes[0]))


def test_zoo_figure_panels_and_families():
    points = [
        ZooPoint("v2 0.5x", "shufflenet_v2", 41_000_000, 2.0, 1.8, 2.5, top1=60.3),
        ZooPoint("mnv1 0.25x", "mobilenet_v1", 41_000_000, 1.0, 0.9, 1.2, top1=None),
        ZooPoint("sq 1.1", "squeezenet", 349_000_000, top1=57.5),  # not timed
    ]
    styles = {
        "squeezenet": FamilyStyle("tab:brown", "s", "#5b3a29"),
        "mobilenet_v1": FamilyStyle("tab:blue", "o", "#0b4f8a"),
        "shufflenet_v2": FamilyStyle("tab:red", "v", "#a01818"),
    }
    fig = zoo_figure(
        points, styles=styles, device="cpu", threads=1, input_size=224, stable=False, note="why"
    )
    speed, accuracy = fig.axes
    legend = [t.get_text() for t in speed.get_legend().get_texts()]
    assert legend == ["mobilenet_v1", "shufflenet_v2", "p10-p90"]  # families in the styles' order
    from matplotlib.colors import to_rgba

    colours = {
        c.get_label(): tuple(c.get_facecolor()[0])
        for c in speed.collections
        if c.get_label() in styles
    }
    assert colours["mobilenet_v1"] == to_rgba("tab:blue")
    assert colours["shufflenet_v2"] == to_rgba("tab:red")
    assert sorted(_texts(speed)) == ["mnv1 0.25x", "v2 0.5x"]
    assert sorted(_texts(accuracy)) == ["sq 1.1", "v2 0.5x"]
    assert fig.get_suptitle().endswith("latencies NOT STABLE: why")
    empty = zoo_figure(points[2:], device="cpu", threads=1, input_size=224)
    assert _texts(empty.axes[0]) == ["nothing to show"]


def test_zoo_figure_draws_a_family_without_a_style_in_a_spare_one():
    points = [
        ZooPoint("a", "mobilenet_v1", 41_000_000, 1.0, 0.9, 1.2),
        ZooPoint("b", "newnet", 80_000_000, 2.0, 1.9, 2.2),
    ]
    styles = {"mobilenet_v1": FamilyStyle("tab:blue", "o", "#0b4f8a")}
    speed = zoo_figure(points, styles=styles, device="cpu", threads=1, input_size=224).axes[0]
    legend = [t.get_text() for t in speed.get_legend().get_texts()]
    assert legend == ["mobilenet_v1", "newnet", "p10-p90"]
    from matplotlib.colors import to_rgba

    (newnet,) = [c for c in speed.collections if c.get_label() == "newnet"]
    assert tuple(newnet.get_facecolor()[0]) == to_rgba(SPARE_STYLES[0].colour)


def test_training_curves_show_validation_only_when_there_is_some():
    plain = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_top1": 0.1 * e} for e in (1, 2)]
    loss, acc, lr = training_curves(plain, title="x").axes
    assert (len(loss.lines), len(acc.lines), len(lr.lines)) == (1, 1, 1)
    validated = [{**r, "val_loss": 1.0, "val_top1": 0.5, "val_top5": None} for r in plain]
    loss, acc, _ = training_curves(validated).axes
    assert (len(loss.lines), len(acc.lines)) == (2, 2)  # no top-5 for 5 classes or fewer
    validated[1]["val_top5"] = 0.9
    assert len(training_curves(validated).axes[1].lines) == 3


def test_speed_bars_and_saving(tmp_path):
    panels = [SpeedPanel("G1 x1: claim", ["1:1", "1:2"], [1.0, 0.8], [1.0, 0.9], [1.0, 0.95])]
    fig = normalised_speed_figure(panels)
    (ax,) = fig.axes
    heights = [round(p.get_height(), 2) for p in ax.patches]
    assert heights == [1.0, 0.8, 1.0, 0.9, 1.0, 0.95]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1:1", "1:2"]
    svg = save_figure(fig, tmp_path / "g.svg")
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    png = save_figure(fig, tmp_path / "g.png", dpi=50)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InvalidArgumentError, match="must end in"):
        save_figure(fig, tmp_path / "g.txt")

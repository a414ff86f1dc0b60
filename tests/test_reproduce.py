"""`lightnets reproduce`: the sections' numbers are the library's own (and closed-form ones),
results.json is strict and holds every number on the page, finished sections are skipped and
broken ones recomputed, bad arguments are one line, and the page renders in a real browser.

One small real run of every section (a tiny plan: two Fashion-MNIST cells of 256 images, G4
only, short timings) is shared by the tests that read a whole report.
"""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser

import pytest
import torch

import lightnets
from conftest import n_params, needs_fashion
from lightnets.analysis.formulas import (
    conv2d_macs,
    conv2d_output_size,
    conv2d_params,
    linear_macs,
    linear_params,
)
from lightnets.cli import main
from lightnets.lab.reproduce import QUICK, SECTIONS, run_reproduce
from lightnets.lab.reproduce.browser import check_page, find_browser

TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    sweep_widths=(1.0, 0.25),
    sweep_size=16,
    sweep_train_subset=256,
    sweep_epochs=1,
    guidelines=("G4",),
    latency_seconds=0.05,
    compare_specs=("mobilenet_v1:width_mult=0.25", "shufflenet_v2:width_mult=0.5"),
    roofline_specs=("mobilenet_v1",),
    seconds_per_layer=0.002,
    peak_seconds=0.2,
)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Every section, once, with the tiny plan: (results.json as loaded, the report folder)."""
    out = tmp_path_factory.mktemp("report")
    lines: list[str] = []
    run_reproduce(out, plan=TINY, progress=lines.append)
    text = (out / "results.json").read_text(encoding="utf-8")
    return json.loads(text), out, lines


def section(document, section_id):
    return next(s for s in document["sections"] if s["id"] == section_id)


def cell(document, table_id, row_key, column):
    """The cell of ``column`` in row ``row_key`` of table ``table_id``."""
    for s in document["sections"]:
        for table in s["tables"]:
            if table["id"] == table_id:
                row = next(r for r in table["rows"] if r["key"] == row_key)
                return row["cells"][table["columns"].index(column)]
    raise KeyError(table_id)


# -- the numbers are the library's own -------------------------------------------------------
#: MobileNets, Table 1: the 13 depthwise separable layers as (pointwise output, stride).
MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5]
MOBILENET_V1 += [(1024, 2), (1024, 1)]


def mobilenet_v1_closed_form(width: float, size: int = 224):
    """MACs and weights per layer type from the formulas (MobileNets, Eqs. 2-3, Table 1)."""
    c = lambda n: int(n * width)  # noqa: E731 (the paper's widths are whole at 1/.75/.5/.25)
    h = conv2d_output_size(size, 3, 2, 1)
    macs = {"conv3x3": conv2d_macs(3, c(32), 3, h), "dw3x3": 0, "conv1x1": 0}
    weights = {"conv3x3": conv2d_params(3, c(32), 3), "dw3x3": 0, "conv1x1": 0}
    channels = c(32)
    for out, stride in MOBILENET_V1:
        h = conv2d_output_size(h, 3, stride, 1)
        macs["dw3x3"] += conv2d_macs(channels, channels, 3, h, groups=channels)
        weights["dw3x3"] += conv2d_params(channels, channels, 3, groups=channels)
        macs["conv1x1"] += conv2d_macs(channels, c(out), 1, h)
        weights["conv1x1"] += conv2d_params(channels, c(out), 1)
        channels = c(out)
    macs["fc"] = linear_macs(channels, 1000)
    weights["fc"] = linear_params(channels, 1000)
    return macs, weights


def test_mobilenet_v1_tables_equal_the_closed_form_and_the_model(report):
    document, _, _ = report
    macs, weights = mobilenet_v1_closed_form(1.0)
    for kind in macs:
        share = 100 * macs[kind] / sum(macs.values())
        assert cell(document, "mobilenet_v1.table2", f"{kind} MACs", "ours")["value"] == (
            pytest.approx(share, rel=1e-12)
        )
        share = 100 * weights[kind] / sum(weights.values())
        assert cell(document, "mobilenet_v1.table2", f"{kind} weights", "ours")["value"] == (
            pytest.approx(share, rel=1e-12)
        )
    # The paper's 1.19% is flagged, not silently "agreed" with.
    assert cell(document, "mobilenet_v1.table2", "conv3x3 MACs", "verdict")["verdict"] == "differs"
    for width in (1.0, 0.75, 0.5, 0.25):
        key = f"{width:g}x 224"
        assert cell(document, "mobilenet_v1.multipliers", f"{key} MACs", "ours")["value"] == sum(
            mobilenet_v1_closed_form(width)[0].values()
        )
        model = lightnets.create_model("mobilenet_v1", width_mult=width)
        assert cell(document, "mobilenet_v1.multipliers", f"{key} params", "ours")["value"] == (
            n_params(model)
        )
    for size in (192, 160, 128):
        assert cell(document, "mobilenet_v1.multipliers", f"1x {size} MACs", "ours")[
            "value"
        ] == sum(mobilenet_v1_closed_form(1.0, size)[0].values())


def test_costs_equal_pytorchs_flop_counter(report, count_macs):
    document, _, _ = report
    assert cell(document, "mobilenet_v2.widths", "1.4x 224 MACs", "ours")["value"] == count_macs(
        "mobilenet_v2", width_mult=1.4
    )
    assert cell(document, "shufflenet_v1.groups", "1x g=8 224 MACs", "ours")["value"] == (
        count_macs("shufflenet_v1", groups=8)
    )
    assert cell(document, "shufflenet_v1.groups", "1x g=8 224 stage widths", "ours") == (
        "384/768/1536"
    )
    assert cell(document, "shufflenet_v2.widths", "0.5x 224 params", "ours")["value"] == 1_366_792


def test_table3_memory_is_the_bottleneck_tensors(report):
    document, _, _ = report
    from lightnets.models.shufflenet_v1 import stage_widths

    # MobileNet V2's widest block output: the first bottleneck's 16 channels at 112x112, fp16.
    assert cell(document, "mobilenet_v2.table3", "mobilenet_v2 max", "ours KB")["value"] == (
        16 * 112 * 112 * 2 / 1000
    )
    # ShuffleNet 2x, g=3: stage 2's output at 28x28 is the widest kept tensor.
    width = stage_widths(3, 2.0)[0]
    assert (
        cell(document, "mobilenet_v2.table3", "shufflenet_v1 28", "ours channels")["value"] == width
    )
    assert cell(document, "mobilenet_v2.table3", "shufflenet_v1 max", "ours KB")["value"] == (
        width * 28 * 28 * 2 / 1000
    )
    assert cell(document, "mobilenet_v2.table3", "claim", "verdict")["verdict"] == "holds"


def test_squeezenet_table1_and_compression_are_the_librarys(report, tmp_path):
    document, _, _ = report
    from lightnets.deploy.compression import CompressionSettings, compress

    # Table 1's fire2: squeeze 96->16, expand 16->64 (1x1) and 16->64 (3x3), biases included.
    fire2 = sum(
        conv2d_params(i, o, k, bias=True) for i, o, k in ((96, 16, 1), (16, 64, 1), (16, 64, 3))
    )
    assert cell(document, "squeezenet.table1", "fire2", "ours params")["value"] == fire2 == 11_920
    assert cell(document, "squeezenet.table1", "conv1", "ours output") == "111x111x96"
    total = n_params(lightnets.create_model("squeezenet1_0"))
    assert cell(document, "squeezenet.table1", "total", "ours params")["value"] == total
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = lightnets.create_model("squeezenet1_0")
    ours, _ = compress(model, tmp_path / "s.lnz", CompressionSettings(density=0.33, bits=6))
    size = cell(document, "squeezenet.compression", "squeezenet1_0 6-bit", "ours")["value"]
    assert size == ours.file_bytes / 2**20
    assert "random weights" in cell(
        document, "squeezenet.compression", "squeezenet1_0 6-bit", "weights"
    )


def test_squeezenet_is_compressed_on_the_weights_dir_files(tmp_path):
    from lightnets.deploy.compression import CompressionSettings, compress

    # torchvision's file name and layout (our state dict is torchvision's, tensor for tensor).
    weights = tmp_path / "weights"
    weights.mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(7)
        model = lightnets.create_model("squeezenet1_0")
    torch.save(model.state_dict(), weights / "squeezenet1_0-b66bff10.pth")
    lines: list[str] = []
    run_reproduce(
        tmp_path / "out", sections=["squeezenet"], weights_dir=weights, progress=lines.append
    )
    document = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    table = section(document, "squeezenet")["tables"][1]
    assert "random weights" not in table["title"]  # 1.1 is still random, and says so per row
    row = "squeezenet1_0 8-bit"
    assert cell(document, "squeezenet.compression", row, "weights") == (
        "torchvision weights squeezenet1_0-b66bff10.pth"
    )
    assert cell(document, "squeezenet.compression", "squeezenet1_1 8-bit", "weights") == (
        "random weights (size only)"
    )
    ours, _ = compress(model, tmp_path / "s.lnz", CompressionSettings(density=0.33, bits=8))
    assert cell(document, "squeezenet.compression", row, "ours")["value"] == ours.file_bytes / 2**20
    # A changed weights file makes the stored section stale: it is recomputed.
    torch.save(
        lightnets.create_model("squeezenet1_0").state_dict(), weights / "squeezenet1_0-b66bff10.pth"
    )
    lines.clear()
    run_reproduce(
        tmp_path / "out", sections=["squeezenet"], weights_dir=weights, progress=lines.append
    )
    assert any("made with other settings, rerunning" in line for line in lines)


def test_guideline_rows_are_the_counters(report):
    document, _, _ = report
    from lightnets.lab.guidelines import build_experiments

    experiment = build_experiments(["G4"], (1,))[0]
    expected = lightnets.profile(experiment.build(), experiment.input_shape).memory_access
    found = cell(document, "shufflenet_v2.g4", "x1 relu+shortcut", "memory access")
    assert found["value"] == expected
    assert cell(document, "shufflenet_v2.g4", "x1 relu+shortcut", "verdict")["verdict"] == (
        "reference"
    )


@needs_fashion
def test_fashion_mnist_trend_was_trained(report):
    document, out, lines = report
    trend = next(
        t for t in section(document, "mobilenet_v1")["tables"] if t["id"].endswith("trend")
    )
    top1 = [row["cells"][trend["columns"].index("ours (Fashion-MNIST)")] for row in trend["rows"]]
    assert len(top1) == 2 and all(0 < c["value"] <= 100 for c in top1)
    assert (
        out / "work" / "sweep-tiny-width" / "width_mult-0.25_input_size-16" / "best.pt"
    ).is_file()
    assert any("cell width_mult-0.25_input_size-16: trained" in line for line in lines)


def test_timings_say_whether_they_were_stable(report):
    document, _, _ = report
    machine = section(document, "machine")
    assert machine["conditions"]["threads used for every timing"] == 1
    assert machine["conditions"]["processor"]
    latency = next(t for t in machine["tables"] if t["id"] == "machine.latency")
    for row in latency["rows"]:
        judged = row["cells"][latency["columns"].index("verdict")]["verdict"]
        note = row["cells"][latency["columns"].index("note")]
        assert judged in ("stable", "unstable")
        assert (judged == "stable") == note.startswith("stable")


# -- the report: complete, strict, self-contained --------------------------------------------
class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def _json_numbers(value, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            _json_numbers(key, found)
            _json_numbers(item, found)
    elif isinstance(value, list):
        for item in value:
            _json_numbers(item, found)
    elif isinstance(value, str):
        found.update(NUMBER.findall(value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        found.add(str(value))
    return found


def test_results_json_is_strict_and_holds_every_number_on_the_page(report):
    document, out, _ = report

    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")

    json.loads((out / "results.json").read_text(encoding="utf-8"), parse_constant=refuse)
    assert [s["id"] for s in document["sections"]] == list(SECTIONS)
    assert document["missing"] == []
    parser = _Text()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    on_page = set(NUMBER.findall(" ".join(parser.parts)))
    in_json = _json_numbers(document, set())
    assert on_page and on_page <= in_json, sorted(on_page - in_json)[:10]
    for s in document["sections"]:
        for table in s["tables"]:
            assert table["measured"], table["id"]
            if table["rows"]:
                assert "verdict" in table["columns"], table["id"]
        for figure in s["figures"]:
            assert (out / figure["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resumable, and bad input ----------------------------------------------------------------
def test_rerun_skips_finished_sections_and_recomputes_a_broken_one(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["reproduce", "--sections", "mobilenet_v2,shufflenet_v1", "-o", str(out)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "[1/2] MobileNet V2: running" in first and "[2/2] ShuffleNet V1: done in" in first
    stored = {p.name: p.stat().st_mtime_ns for p in (out / "sections").iterdir()}

    assert main(args) == 0
    second = capsys.readouterr().out
    assert (
        "MobileNet V2: finished earlier" in second and "ShuffleNet V1: finished earlier" in second
    )
    assert {p.name: p.stat().st_mtime_ns for p in (out / "sections").iterdir()} == stored

    (out / "sections" / "shufflenet_v1.json").write_text('{"schema": 1, "resu', encoding="utf-8")
    (out / "figures" / "mobilenet_v2_table3.png").write_bytes(b"not a png")
    assert main(args) == 0
    third = capsys.readouterr().out
    assert "ShuffleNet V1: stored result unreadable (JSONDecodeError), rerunning" in third
    assert "MobileNet V2: figure figures/mobilenet_v2_table3.png missing or changed" in third
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [s["id"] for s in document["sections"]] == ["mobilenet_v2", "shufflenet_v1"]
    assert {m["id"] for m in document["missing"]} == set(SECTIONS) - {
        "mobilenet_v2",
        "shufflenet_v1",
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sections", "mobilenet_v3"], "unknown section 'mobilenet_v3'; allowed: mobilenet_v1"),
        (["--threads", "0"], "--threads=0 is not allowed"),
        (["--weights-dir", "{tmp}/absent"], "is not a folder"),
        (["-o", "{tmp}/file.txt"], "exists and is not a folder"),
        (["-o", "{tmp}/mine"], "holds files that are not a lightnets report"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "index.html").write_text("my own page\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out")]
    assert main(["reproduce", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert (tmp_path / "mine" / "index.html").read_text() == "my own page\n"
    assert (tmp_path / "file.txt").read_text() == "mine\n"


def test_output_folder_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--quick"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-o/--output" in err


# -- looked at as a person would -------------------------------------------------------------
def test_the_page_renders_in_a_headless_browser(report, tmp_path):
    if find_browser() is None:
        pytest.skip(
            "skipped: no Chromium could be installed here (.ci/run installs Debian's "
            "chromium when it runs as root)"
        )
    document, out, _ = report
    from PIL import Image

    check = check_page(out / "index.html", tmp_path / "screenshot.png", width=1280, height=1600)
    assert check.console == []
    assert check.broken_images == []
    assert check.external_references == []
    figures = sum(len(s["figures"]) for s in document["sections"])
    assert check.images == figures >= 4
    with Image.open(check.screenshot) as shot:
        assert shot.size == (1280, 1600)
        # Not a blank page: the rendered text and badges make many distinct colours.
        assert len(shot.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50

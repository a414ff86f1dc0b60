"""ShuffleNet V2's guideline experiments (Section 2, Tables 1-4): the benchmark networks have
the paper's equal MACs, lightnets' counter matches the closed forms exactly, memory access
orders the configurations as Eq. 1 and Eq. 2 say, and the report's JSON has its schema."""

from __future__ import annotations

import json

import pytest
import torch

from lightnets.analysis import threads as threads_module
from lightnets.analysis.formulas import conv1x1_memory_access, conv2d_memory_access_bytes
from lightnets.cli import main
from lightnets.lab.guidelines import (
    GuidelineRecord,
    GuidelineReport,
    build_experiments,
    g1_lower_bound,
    timing_summary,
    verdict,
)
from lightnets.lab.guidelines.networks import _counts
from lightnets.lab.guidelines.paper import GUIDELINE_TABLES, SCALES

HW = 56
F32 = 4


def _closed_form(e) -> tuple[int, int]:
    """(MACs, memory bytes) of one image through 10 blocks, from closed-form formulas."""
    row, hw = e.row, HW * HW
    if e.guideline == "G1":
        c1, c2 = e.channels
        macs = 2 * hw * c1 * c2
        memory = conv1x1_memory_access(HW, HW, c1, c2) + conv1x1_memory_access(HW, HW, c2, c1)
        return 10 * macs, 10 * F32 * memory
    (c,) = e.channels
    if e.guideline == "G2":
        g = row.groups
        return 10 * hw * c * c // g, 10 * F32 * conv1x1_memory_access(HW, HW, c, c, g)
    if e.guideline == "G3":
        k = row.fragments
        memory = k * conv1x1_memory_access(HW, HW, c, c)
        if row.arrangement == "parallel":
            memory += (k - 1) * 3 * hw * c  # each sum reads two maps and writes one
        return 10 * k * hw * c * c, 10 * F32 * memory
    conv_bytes = 2 * F32 * conv1x1_memory_access(HW, HW, c, c) + conv2d_memory_access_bytes(
        c, c, 3, HW, HW
    )
    eltwise = (3 * 2 * hw * c if row.relu else 0) + (3 * hw * c if row.shortcut else 0)
    return 10 * 11 * hw * c * c, 10 * (conv_bytes + F32 * eltwise)


def _meta_counts(e) -> dict:
    with torch.device("meta"):
        model = e.build()
    return _counts(e, model)


ALL = [e for widths in ("arm", "gpu") for e in build_experiments(widths=widths)]


@pytest.mark.parametrize(
    "e", ALL, ids=lambda e: f"{e.widths}-{e.guideline}-x{e.scale}-{e.row.config}"
)
def test_counter_equals_closed_form_exactly(e):
    counts = _meta_counts(e)
    assert (counts["macs"], counts["memory_access"]) == _closed_form(e)


@pytest.mark.parametrize("widths", ["arm", "gpu"])
@pytest.mark.parametrize("guideline", list(GUIDELINE_TABLES))
@pytest.mark.parametrize("scale", SCALES)
def test_every_table_has_equal_macs(widths, guideline, scale):
    """Equal MACs across a table's rows, as the paper builds them: its own channel pairs are
    equal to within 5.5% (Table 1, (22,44) at 968 vs 1024 c1*c2); G3 and G4 exactly where
    sqrt(k) is whole (4 fragments) or no width changes (G4)."""
    rows = build_experiments([guideline], [scale], widths)
    macs = [_closed_form(e)[0] for e in rows]
    assert max(macs) / min(macs) <= 1.06
    if guideline == "G4":
        assert len(set(macs)) == 1
    if guideline == "G3":
        assert macs[0] == macs[2] == macs[4]  # 1 fragment == 4 fragments of c/2


def test_paper_channel_numbers_are_used():
    g1 = {e.row.config: e.channels for e in build_experiments(["G1"], [1], "gpu")}
    assert g1 == {"1:1": (128, 128), "1:2": (90, 180), "1:6": (52, 312), "1:12": (36, 432)}
    g1_arm = [e.channels for e in build_experiments(["G1"], [4], "arm")]
    assert g1_arm == [(128, 128), (88, 176), (52, 312), (36, 432)]
    g2 = [(e.channels, e.row.groups) for e in build_experiments(["G2"], [1], "gpu")]
    assert g2 == [((128,), 1), ((180,), 2), ((256,), 4), ((360,), 8)]
    # Table 2's ARM c=180 at g=8 is not divisible by 8: the nearest width in MACs that is.
    assert build_experiments(["G2"], [1], "arm")[3].channels == (176,)


@pytest.mark.parametrize("widths", ["arm", "gpu"])
@pytest.mark.parametrize("scale", SCALES)
def test_memory_access_minimal_at_equal_widths_and_rising_with_groups(widths, scale):
    g1 = [(e, _meta_counts(e)) for e in build_experiments(["G1"], [scale], widths)]
    memory = [c["memory_access"] for _, c in g1]
    assert memory[0] == min(memory) and memory == sorted(memory)
    # Eq. 1: 1:1 sits on the lower bound, the others above their own bound.
    for e, c in g1:
        bound = 20 * F32 * g1_lower_bound(HW, HW, c["macs"] // 20)
        assert c["memory_access_bound"] == round(bound)
        if e.row.config == "1:1":
            assert c["memory_access"] == pytest.approx(bound, rel=1e-12)
        else:
            assert c["memory_access"] > bound
    g2 = [_meta_counts(e)["memory_access"] for e in build_experiments(["G2"], [scale], widths)]
    assert g2 == sorted(g2) and len(set(g2)) == 4


def test_g4_removing_relu_and_shortcut_removes_their_traffic():
    rows = {e.row.config: _meta_counts(e) for e in build_experiments(["G4"], [1], "arm")}
    hw_c = HW * HW * 32 * F32
    full, relu, shortcut, none = (
        rows[k]["memory_access"] for k in ("relu+shortcut", "relu", "shortcut", "none")
    )
    assert full - relu == 10 * 3 * hw_c  # the sum: two reads, one write
    assert full - shortcut == 10 * 3 * 2 * hw_c  # three ReLUs: one read, one write each
    assert none < min(relu, shortcut)


def _record(config, norm, gpu, arm):
    return GuidelineRecord(
        guideline="G1",
        config=config,
        channels=[1, 1],
        groups=1,
        scale=1,
        widths="arm",
        feature_map=HW,
        batch_size=1,
        macs=1,
        memory_access=1,
        memory_access_bound=None,
        params=1,
        ms=1.0,
        batches_per_sec=1.0,
        images_per_sec=norm,
        spread=0.0,
        stable=True,
        measured_norm=norm,
        paper_gpu_norm=gpu,
        paper_arm_norm=arm,
    )


def test_verdict_names_fewer_macs_of_a_faster_row():
    rows = [_record("1:1", 1.0, 1, 1), _record("1:2", 1.07, 0.88, 0.96)]
    rows[0].macs, rows[1].macs = 1000, 945
    assert "1:2 runs at 1.07x the speed of 1:1, with 6% fewer MACs" in verdict("G1", rows)


def test_verdict_says_where_this_machine_agrees_and_where_not():
    agree = [_record("1:1", 1.0, 1, 1), _record("1:12", 0.6, 0.51, 0.76)]
    assert "agrees: 1:1 is the fastest; 1:12 runs at 0.60x" in verdict("G1", agree)
    flat = [_record("1:1", 1.0, 1, 1), _record("1:6", 1.05, 0.59, 0.91)]
    text = verdict("G1", flat)
    assert "does not agree: 1:6 runs at 1.05x" in text and "paper: GPU 0.59x, ARM 0.91x" in text
    # G4 predicts the full unit slowest: a faster stripped unit agrees.
    g4 = [_record("relu+shortcut", 1.0, 1, 1), _record("none", 1.2, 1.17, 1.17)]
    assert "agrees: relu+shortcut is the slowest" in verdict("G4", g4)


def test_timing_is_one_summary_line_however_many_rows_are_unstable():
    rows = [_record(f"1:{i}", 1.0, 1, 1) for i in (1, 2, 6, 12)]
    for row in rows:
        row.paper_gpu = row.paper_arm = 1.0
    for i, row in enumerate(rows[1:], start=1):
        row.stable, row.spread = False, 0.1 * i
        row.timing_note = f"machine busy: other processes used 1.{i} of 2 cores"
    report = GuidelineReport(rows, {"G1 x1": "agrees"})
    lines = [line for line in report.to_markdown().splitlines() if "timing" in line]
    assert lines == [
        "- timing: 3 of 4 configurations unstable, marked (unstable) in the tables; first, "
        "G1 1:2: machine busy: other processes used 1.1 of 2 cores"
    ]
    for row in rows:
        row.stable = True
    assert timing_summary(rows) == "all 4 configurations stable; widest spread 30% (1:12)"


def test_json_schema_and_plot(tmp_path, capsys):
    plot = tmp_path / "g.png"
    code = main(
        ["guidelines", "G1", "G2", "--quick", "--rounds", "1", "--json", "--plot", str(plot)]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    records = data["records"]
    assert [r["config"] for r in records] == [
        "1:1",
        "1:2",
        "1:6",
        "1:12",
        "g=1",
        "g=2",
        "g=4",
        "g=8",
    ]
    for r in records:
        assert {
            "guideline",
            "config",
            "channels",
            "groups",
            "scale",
            "macs",
            "memory_access",
            "ms",
            "images_per_sec",
            "batches_per_sec",
            "paper_gpu",
            "paper_arm",
            "paper_gpu_norm",
            "paper_arm_norm",
            "measured_norm",
            "stable",
        } <= set(r)
        assert r["scale"] == 1 and r["ms"] > 0
        assert r["images_per_sec"] == pytest.approx(1e3 / r["ms"])
    first = records[0]
    assert first["measured_norm"] == 1.0 and first["paper_gpu"] == 1480
    assert records[3]["paper_arm_norm"] == pytest.approx(57.6 / 76.2)
    assert [r["groups"] for r in records[4:]] == [1, 2, 4, 8]
    assert set(data["verdicts"]) == {"G1 x1", "G2 x1"}
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["guidelines", "G5"], "unknown guideline 'G5'; allowed: G1, G2, G3, G4"),
        (["guidelines", "--batch-size", "0"], "batch_size=0 is not allowed"),
        (["guidelines", "--rounds", "0"], "rounds=0 is not allowed"),
        (["guidelines", "--plot", "/nonexistent/x.png"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, monkeypatch):
    # As in a fresh process: the thread policy has not spoken yet (it speaks once per process).
    monkeypatch.setattr(threads_module, "_chosen", {})
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_one_line(capsys):
    assert main(["guidelines", "--device", "cuda", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device is available" in err and err.count("\n") == 1

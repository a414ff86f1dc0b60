"""`lightnets profile`, `compare` and `roofline`: output formats and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from lightnets.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_json_has_rows_totals_and_the_paper(capsys):
    code, out, err = run_cli(capsys, "profile", "mobilenet_v1", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["totals"]["macs"] == 568_740_352
    assert data["totals"]["flops"] == 2 * 568_740_352
    assert data["totals"]["params"] == 4_231_976
    assert "bias adds are not MACs" in data["conventions"]["macs"]
    assert data["paper"]["macs"] == 569_000_000
    assert sum(row["macs"] for row in data["rows"]) == data["totals"]["macs"]


def test_profile_by_type_reproduces_table_2_beside_the_paper(capsys):
    code, out, _ = run_cli(capsys, "profile", "mobilenet_v1", "--by-type", "--markdown")
    assert code == 0
    lines = {line.split("|")[1].strip(): line for line in out.splitlines() if "|" in line}
    assert "| 94.86 | 94.86 |" in lines["conv1x1"]
    assert "| 1.91 | 1.19 |" in lines["conv3x3"]
    assert "| 24.33 | 24.33 |" in lines["fc"]
    code, out, _ = run_cli(capsys, "profile", "mobilenet_v1", "--by-type")  # rich table
    assert code == 0 and "1.19 (sic)" in out and "94.86" in out
    # JSON: the shares with the model, its totals and the paper's figures; no per-op rows.
    code, out, _ = run_cli(
        capsys, "profile", "mobilenet_v1", "--width-mult", "0.5", "--by-type", "--json"
    )
    data = json.loads(out)
    assert code == 0 and "rows" not in data and data["hparams"]["width_mult"] == 0.5
    assert data["totals"]["macs"] == sum(share["macs"] for share in data["by_type"])
    assert data["totals"]["params"] == 1_331_592 and data["paper"]["macs"] == 149_000_000


def test_profile_csv_and_model_flags(capsys):
    code, out, _ = run_cli(
        capsys,
        "profile",
        "shufflenet_v1",
        "--groups",
        "8",
        "--variant",
        "cifar",
        "--num-classes",
        "10",
        "--csv",
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {"module", "kind", "macs", "memory_access", "intensity"} <= set(rows[0])
    assert any(r["kind"] == "group_conv" and r["groups"] == "8" for r in rows)
    assert rows[-1]["output_shape"] == "1x10"


def test_profile_squeezenet_version_and_input_size(capsys):
    code, out, _ = run_cli(
        capsys, "profile", "squeezenet", "--version", "1.1", "--input-size", "128", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "squeezenet1_1" and data["input_shape"] == [1, 3, 128, 128]
    assert "paper" not in data  # the paper's figures are for 224 px


def test_profile_terminal_table_spells_out_the_conventions(capsys):
    code, out, _ = run_cli(capsys, "profile", "shufflenet_v2", "--width-mult", "0.5")
    assert code == 0
    assert "channel_shuffle" in out and "multiply-accumulates" in out and "2 x MACs" in out
    assert "41M MACs" in out  # the paper's figure beside ours


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "mobilenet_v9"], "unknown model"),
        (["profile", "mobilenet_v1", "--input-size", "0"], "input-size"),
        (["profile", "mobilenet_v2", "--input-size", "16"], ">= 32"),
        (["profile", "shufflenet_v2", "--variant", "cifar", "--input-size", "4"], ">= 8"),
        (["profile", "mobilenet_v1", "--width-mult", "-1"], "width_mult"),
        (["compare", "mobilenet_v1", "nosuchnet"], "unknown model"),
        (["compare", "--input-size", "0"], "input-size"),
        (["compare", "squeezenet1_0", "--input-size", "16"], "too small"),
        (["compare", "--plot", "/nonexistent-dir/compare.png"], "does not exist"),
        (["compare", "--plot", "/proc/compare.png"], "cannot write"),
        (["roofline", "mobilenet_v1", "--plot", "/nonexistent-dir/r.png"], "does not exist"),
        (["roofline", "mobilenet_v1", "--input-size", "8"], "too small"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("lightnets ")


def test_compare_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "compare.png"
    code, out, _ = run_cli(
        capsys,
        "compare",
        "mobilenet_v1:width_mult=0.25",
        "shufflenet_v2",
        "--seconds",
        "0.01",
        "--threads",
        "1",
        "--plot",
        str(plot),
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["threads"] == 1
    assert data["thread_policy"]["reason"].endswith("(--threads 1)")
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["mobilenet_v1 0.25x", "shufflenet_v2 1x"]
    assert data["rows"][1]["paper"]["top1"] == 69.4
    assert all(row["latency"]["median_ms"] > 0 for row in data["rows"])
    assert isinstance(data["stable"], bool) and data["note"]
    for row in data["rows"]:
        latency = row["latency"]
        assert latency["p10_ms"] <= latency["median_ms"] <= latency["p90_ms"]
        assert {"iqr_ms", "ci_rel", "stable", "note"} <= set(latency)
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_roofline_json_and_plot(capsys, tmp_path):
    plot = tmp_path / "roofline.png"
    code, out, _ = run_cli(
        capsys,
        "roofline",
        "mobilenet_v1",
        "--width-mult",
        "0.25",
        "--input-size",
        "64",
        "--peak-seconds",
        "0.3",
        "--layer-seconds",
        "0.001",
        "--plot",
        str(plot),
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert data["peak"]["gflops"] > 0 and data["peak"]["bandwidth_gb_s"] > 0
    assert len(data["points"]) == 28  # 27 convolutions and the classifier
    assert {p["bound"] for p in data["points"]} <= {"memory", "compute"}
    # The thread policy's count (printed, recorded), for the roofs and the layers alike.
    assert data["peak"]["threads"] == data["thread_policy"]["threads"] >= 1
    assert data["model"] == "mobilenet_v1" and data["hparams"]["width_mult"] == 0.25
    assert data["hparams"]["variant"] == "imagenet" and data["input_shape"] == [1, 3, 64, 64]
    assert isinstance(data["stable"], bool) and data["note"]
    assert all(0 <= p["fraction"] <= 1 for p in data["points"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_errors_reach_the_shell_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "lightnets", "profile", "mobilenet_v1", "--input-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "input-size" in result.stderr

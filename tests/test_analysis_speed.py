"""Timing, the roofline, the comparison and their figures."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch
from torch import nn

import lightnets
from lightnets.analysis import compare as compare_module
from lightnets.analysis import render
from lightnets.analysis.compare import ModelSpec, compare, parse_spec
from lightnets.analysis.plots import plot_comparison, plot_roofline
from lightnets.analysis.roofline import MachinePeak, measure_machine_peak, roofline
from lightnets.analysis.timing import LatencyStats, measure_latency
from lightnets.errors import InvalidArgumentError
from lightnets.figures import check_writable, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_measure_latency_times_what_it_is_given():
    stats = measure_latency(lambda: time.sleep(0.002), warmup=1, min_iters=5, min_seconds=0.02)
    assert isinstance(stats, LatencyStats)
    assert stats.iters >= 5
    assert stats.min_ms >= 2.0
    assert stats.min_ms <= stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert isinstance(stats.stable, bool) and stats.note


def test_measure_latency_respects_min_iters_and_counts_calls():
    calls = []
    stats = measure_latency(
        lambda: calls.append(1), warmup=3, min_iters=7, min_seconds=0, target_ci=None, max_seconds=0
    )
    assert stats.iters == 7 and len(calls) == 10


@pytest.mark.parametrize(
    "kwargs",
    [{"warmup": -1}, {"min_iters": 0}, {"min_seconds": -1.0}, {"min_iters": True}, {"rounds": 0}],
)
def test_measure_latency_refuses_bad_arguments(kwargs):
    with pytest.raises(InvalidArgumentError):
        measure_latency(lambda: None, **kwargs)


def test_machine_peak_is_measured_once_per_process():
    peak = measure_machine_peak("cpu", seconds=0.4)
    assert peak.gflops > 0.5 and peak.bandwidth_gb_s > 0.1
    assert peak.ridge_point == pytest.approx(peak.gflops / peak.bandwidth_gb_s)
    assert measure_machine_peak("cpu", seconds=0.4) is peak
    assert peak.attainable_gflops(1e9) == peak.gflops
    assert peak.attainable_gflops(0.5) == pytest.approx(min(peak.gflops, 0.5 * peak.bandwidth_gb_s))


FAKE_PEAK = MachinePeak("cpu", gflops=100.0, bandwidth_gb_s=10.0, threads=1, method="fixed")


def test_roofline_places_every_conv_and_linear_layer_under_the_roof():
    model = lightnets.create_model("mobilenet_v1", width_mult=0.25)
    result = roofline(model, (3, 64, 64), peak=FAKE_PEAK, seconds_per_layer=0.001, threads=1)
    timed = [
        r
        for r in result.profile.rows
        if r.kind in ("conv", "pointwise_conv", "depthwise_conv", "linear")
    ]
    assert [p.index for p in result.points] == [r.index for r in timed]
    for point in result.points:
        assert point.attainable_gflops == pytest.approx(min(100.0, 10.0 * point.intensity))
        assert point.bound == ("memory" if point.intensity < 10.0 else "compute")
        assert point.achieved_gflops == pytest.approx(point.flops / point.latency_ms / 1e6)
        assert point.fraction == pytest.approx(
            min(1.0, point.achieved_gflops / point.attainable_gflops)
        )
        assert point.latency_p10_ms <= point.latency_ms <= point.latency_p90_ms
    kinds = {p.kind: p.bound for p in result.points}
    assert kinds["depthwise_conv"] == "memory"  # ~1-2 FLOP/byte: under the slanted roof
    data = result.to_dict()
    assert len(data["points"]) == len(result.points) and data["peak"]["gflops"] == 100.0
    assert isinstance(data["stable"], bool) and data["note"]


def test_roofs_and_layers_are_measured_with_the_same_threads():
    model = nn.Sequential(nn.Conv2d(3, 8, 1))
    with pytest.raises(InvalidArgumentError, match="same thread count"):
        roofline(model, (3, 8, 8), peak=FAKE_PEAK, threads=2)


def test_roofline_figure_is_written_atomically(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(), nn.Linear(8 * 28 * 28, 4)
    )
    result = roofline(model, (3, 32, 32), peak=FAKE_PEAK, seconds_per_layer=0.001, threads=1)
    assert {p.kind for p in result.points} == {"conv", "depthwise_conv", "linear"}
    path = save_figure(plot_roofline(result), tmp_path / "roof.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["roof.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_check_writable_refuses_before_any_work(tmp_path):
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        check_writable(tmp_path / "missing" / "x.png")
    with pytest.raises(InvalidArgumentError, match=r"\.png"):
        check_writable(tmp_path / "x.txt")
    with pytest.raises(InvalidArgumentError, match="directory"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "ok.png") == tmp_path / "ok.png"
    assert list(tmp_path.iterdir()) == []


def test_parse_spec_reads_hyperparameters():
    assert parse_spec("mobilenet_v1") == ModelSpec("mobilenet_v1")
    spec = parse_spec("shufflenet_v1:groups=8,width_mult=0.5")
    assert spec.kwargs == {"groups": 8, "width_mult": 0.5}
    assert spec.label == "shufflenet_v1 0.5x g=8"
    with pytest.raises(InvalidArgumentError, match="key=value"):
        parse_spec("mobilenet_v1:0.5")


def test_compare_counts_times_and_cites(tmp_path):
    threads_before = torch.get_num_threads()
    result = compare(
        ["mobilenet_v1:width_mult=0.25", "shufflenet_v2:width_mult=0.5"],
        latency_seconds=0.01,
        threads=1,
    )
    assert result.threads == 1 and torch.get_num_threads() == threads_before
    small, shuffle = result.rows
    assert (
        small.macs
        == lightnets.profile(lightnets.create_model("mobilenet_v1", width_mult=0.25)).macs
    )
    assert small.flops == 2 * small.macs
    assert small.weights_bytes_fp32 == 4 * small.params == 4 * small.weights_bytes_int8
    assert small.paper.macs == 41_000_000 and small.paper.top1 == 50.6
    assert shuffle.paper.top1 == 60.3
    assert small.latency.iters >= 10 and small.latency.median_ms > 0
    assert small.latency.rounds == shuffle.latency.rounds  # timed together, round by round
    assert isinstance(result.stable, bool) and result.note
    assert result.to_dict()["stable"] == result.stable
    assert "| mobilenet_v1 0.25x |" in render.comparison_markdown(result)
    path = save_figure(plot_comparison(result), tmp_path / "compare.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_compare_fails_fast_on_bad_models_and_sizes(monkeypatch):
    def no_timing(*args, **kwargs):
        raise AssertionError("timing started before the input was checked")

    monkeypatch.setattr(compare_module, "measure_interleaved", no_timing)
    with pytest.raises(InvalidArgumentError, match="unknown model"):
        compare(["mobilenet_v1", "mobilenet_v9"])
    with pytest.raises(InvalidArgumentError, match="too small"):
        compare(["squeezenet1_1", "mobilenet_v2"], input_size=8)
    with pytest.raises(InvalidArgumentError):
        compare(["mobilenet_v1"], input_size=0)


def test_time_layer_runs_on_the_recorded_shapes():
    from lightnets.analysis.roofline import time_layer

    prof = lightnets.profile(nn.Conv2d(4, 8, 3, stride=2, groups=2), (4, 16, 16))
    (row,) = [r for r in prof.rows if r.macs]
    stats = time_layer(row, min_seconds=0.0)
    assert stats.iters >= 5
    with pytest.raises(InvalidArgumentError, match="not a convolution"):
        time_layer(dataclasses.replace(row, kind="batchnorm"))


def test_cuda_synchronisation_is_requested_only_for_cuda(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this check fakes CUDA on machines without one")
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    once = {"warmup": 1, "min_iters": 3, "min_seconds": 0, "rounds": 1, "max_seconds": 0}
    measure_latency(lambda: None, target_ci=None, device="cuda", **once)
    assert len(calls) == 1 + 3  # after warm-up, then after every timed call
    measure_latency(lambda: None, target_ci=None, device="cpu", **once)
    assert len(calls) == 4

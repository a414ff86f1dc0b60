"""One accuracy rule per precision: fp32/bf16 by logit difference, int8 by top-1 change within a
budget, the same in quantize and bench (and bench --backend best --allow-int8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lightnets
from conftest import needs_fashion
from lightnets.deploy import quantization as quantization_module
from lightnets.deploy.accuracy import Top1Change, tolerance, top1_change
from lightnets.deploy.backends import BACKENDS, Backend
from lightnets.deploy.bench import Int8Data, benchmark
from lightnets.deploy.quantization import (
    QuantizationAccuracyError,
    calibration_source,
    quantize,
    synthetic_batches,
)
from lightnets.errors import InvalidArgumentError
from test_deploy_fuse import randomize_batchnorm

SIZE = (3, 32, 32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = lightnets.create_model("mobilenet_v2", variant="cifar", num_classes=4, width_mult=0.35)
    return randomize_batchnorm(net).eval()


def _logits(rows):
    return lambda x: np.asarray(rows, dtype=np.float32)


def test_top1_change_counts_accuracy_against_labels_and_agreement_without():
    fp32 = _logits([[2, 0, 0], [0, 2, 0], [0, 0, 2], [2, 0, 0]])  # predicts 0, 1, 2, 0
    int8 = _logits([[2, 0, 0], [2, 0, 0], [0, 0, 2], [0, 2, 0]])  # predicts 0, 0, 2, 1
    images, labels = torch.zeros(4, 1), torch.tensor([0, 1, 2, 1])
    change = top1_change(fp32, int8, [(images, labels)], max_drop=1.0)
    assert (change.metric, change.images) == ("accuracy", 4)
    assert (change.fp32_top1, change.int8_top1, change.change) == (75.0, 75.0, 0.0)
    assert change.within_budget and change.max_abs_diff == 2.0
    agree = top1_change(fp32, int8, [(images, None)], max_drop=10.0)
    assert (agree.metric, agree.fp32_top1, agree.int8_top1) == ("agreement", 100.0, 50.0)
    assert not agree.within_budget and "budget -10" in agree.describe()
    assert not top1_change(fp32, int8, [], max_drop=1.0).within_budget  # nothing measured


def test_fp32_and_bf16_tolerances_scale_with_the_logits():
    assert tolerance(torch.tensor([0.5, -0.2])) == pytest.approx(1e-4)
    assert tolerance(torch.tensor([30.0, -50.0]), "bf16") == pytest.approx(2.5)


class FakeInt8(Backend):
    """int8 whose answers are eager's, or eager's with the top class swapped on every image."""

    name, precision = "fake-int8", "int8"
    broken = False

    def __init__(
        self, threads=None, calibration=None, evaluation=None, max_drop=1.0, calibration_name=""
    ):
        super().__init__(threads)
        self.evaluation, self.max_drop = evaluation, max_drop

    def _run(self, model):
        def run(x):
            with torch.no_grad():
                out = model(x)
            return out.flip(1) if self.broken else out

        return run

    def prepare(self, model, example):
        return self._run(model)

    def top1_change(self, model) -> Top1Change:
        run = self._run(model)
        evaluation = self.evaluation or [(x, None) for x in synthetic_batches(SIZE, count=32)]
        with torch.no_grad():
            return top1_change(
                lambda x: model(x).numpy(),
                lambda x: run(x).numpy(),
                evaluation,
                max_drop=self.max_drop,
            )


@pytest.mark.parametrize("broken", [False, True])
def test_bench_judges_int8_by_top1_and_best_takes_it_only_within_budget(model, monkeypatch, broken):
    monkeypatch.setattr(FakeInt8, "broken", broken)
    monkeypatch.setitem(BACKENDS, "fake-int8", FakeInt8)
    monkeypatch.setattr(
        lightnets.deploy.bench, "best_candidates", lambda **kw: ["eager", "fake-int8"]
    )
    (record,) = benchmark(model, ["fake-int8"], model_name="m", input_size=SIZE, min_seconds=0.01)
    assert record.precision == "int8" and record.max_drop == 1.0
    assert record.status == ("wrong" if broken else "ok")
    assert record.top1_change == (pytest.approx(-100.0, abs=10) if broken else 0.0)
    assert (record.latency_ms_median is None) == broken
    records = benchmark(
        model, ["best"], model_name="m", input_size=SIZE, min_seconds=0.01, allow_int8=True
    )
    best = next(r for r in records if r.best)
    assert "fake-int8" in best.extra["candidates"] or broken
    if broken:
        assert best.backend == "eager" and "fake-int8" not in best.extra["candidates"]
        assert [r.status for r in records if not r.best] == ["wrong"]


def test_bench_reads_int8_data_only_when_an_int8_backend_runs(model, monkeypatch):
    monkeypatch.setitem(BACKENDS, "fake-int8", FakeInt8)
    unreadable = Int8Data("folder")  # a folder and no --data-dir: an error once it is read
    (record,) = benchmark(
        model, ["eager"], model_name="m", input_size=SIZE, min_seconds=0.01, int8_data=unreadable
    )
    assert record.status == "ok" and unreadable.loaded_from == ""
    with pytest.raises(InvalidArgumentError, match="--calibration folder needs --data-dir"):
        benchmark(model, ["fake-int8"], model_name="m", input_size=SIZE, int8_data=unreadable)


@needs_fashion
def test_bench_judges_int8_on_the_checkpoints_data_set(model, monkeypatch):
    """A checkpoint's data set is the default: its held-out images, with labels, judge int8."""
    monkeypatch.setitem(BACKENDS, "fake-int8", FakeInt8)
    state = {"dataset": {"name": "fashion-mnist"}, "config": {"seed": 0}}
    data = Int8Data(checkpoint=state, calibration_images=8, eval_images=64)
    (record,) = benchmark(
        model, ["fake-int8"], model_name="m", input_size=SIZE, min_seconds=0.01, int8_data=data
    )
    assert data.loaded_from == "fashion-mnist"
    assert sum(len(labels) for _, labels in data.evaluation) == 64
    top1 = record.extra["top1"]
    assert (top1["metric"], top1["images"], record.top1_change) == ("accuracy", 64, 0.0)
    assert record.status == "ok"


@pytest.mark.parametrize("saturates", [False, True])
def test_bench_names_each_int8_rows_scheme_as_quantize_does(model, monkeypatch, saturates):
    from lightnets.analysis import machine

    pytest.importorskip("nncf")
    monkeypatch.setattr(machine, "int8_pairs_saturate", lambda: saturates)
    (record,) = benchmark(model, ["int8"], model_name="m", input_size=SIZE, min_seconds=0.01)
    assert record.precision == "int8"
    reduced = ", 7-bit range (-64..64) but depthwise convolutions (NNCF's overflow fix)"
    weights = "int8 symmetric per-channel" + (reduced if saturates else "")
    assert record.extra["scheme"] == (
        f"PTQ: weights {weights}, activations int8 symmetric per-tensor "
        "(NNCF performance preset, min-max calibration); 64 synthetic calibration images"
    )
    # Each int8 backend is the int8 model of one `quantize --method`, worded the same way.
    assert {name: cls.method for name, cls in BACKENDS.items() if cls.precision == "int8"} == {
        "int8": "openvino",
        "executorch-int8": "executorch",
        "litert-int8": "litert",
    }
    assert BACKENDS["eager"]().scheme() == ""  # fp32: no scheme


@needs_fashion
def test_an_int8_rows_scheme_names_the_calibration_data_set(model):
    pytest.importorskip("nncf")
    state = {"dataset": {"name": "fashion-mnist"}, "config": {"seed": 0}}
    data = Int8Data(checkpoint=state, calibration_images=16, eval_images=64)
    (record,) = benchmark(
        model, ["int8"], model_name="m", input_size=SIZE, min_seconds=0.01, int8_data=data
    )
    assert record.extra["scheme"].endswith("; 16 fashion-mnist calibration images")


def test_quantize_with_max_drop_fails_and_writes_nothing(model, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    bad = Top1Change("accuracy", 100, 80.0, 72.5, -7.5, 2.0, 3.8)
    monkeypatch.setattr(quantization_module, "top1_change", lambda *a, **kw: bad)
    calib = synthetic_batches(SIZE, count=8, batch_size=8)
    path = tmp_path / "q.xml"
    with pytest.raises(QuantizationAccuracyError, match=r"-7\.50 points.*--max-drop 2"):
        quantize(model, path, calib, [], SIZE, max_drop=2.0, strict=True)
    assert list(tmp_path.iterdir()) == []


def test_calibration_defaults_to_the_checkpoints_data_set():
    state = {
        "dataset": {"name": "folder"},
        "config": {"data_dir": "/data/flowers", "val_size": 50, "seed": 3},
    }
    assert calibration_source(state, None, None) == (
        "folder",
        {"data_dir": "/data/flowers", "val_size": 50, "seed": 3},
    )
    assert calibration_source(state, "folder", None)[1]["data_dir"] == "/data/flowers"
    assert calibration_source(state, "folder", "/elsewhere")[1]["data_dir"] == "/elsewhere"
    assert calibration_source(state, "cifar10", None) == ("cifar10", {"data_dir": None})
    assert calibration_source(None, None, None) == ("synthetic", {"data_dir": None})
    fm = {"dataset": {"name": "fashion-mnist"}}
    assert calibration_source(fm, None, None)[0] == "fashion-mnist"
    with pytest.raises(InvalidArgumentError, match="needs --data-dir"):
        calibration_source(None, "folder", None)
    with pytest.raises(InvalidArgumentError, match="allowed: fashion-mnist"):
        calibration_source(None, "imagenet", None)


def test_quantize_json_is_strict_when_nothing_was_measured(capsys):
    import json
    import math

    from lightnets.cli.quantize import _print_report
    from lightnets.deploy.quantization import QuantizationReport

    nan = math.nan
    report = QuantizationReport(
        "q.xml", "openvino", "synthetic", 8, 1.0, 0.4, 2.0, 1.0, 2.0, 0, "agreement",
        nan, nan, nan, 0.0, 1.0, False,
    )  # fmt: skip
    policy = {"threads": 1, "reason": "--threads"}
    _print_report(report, as_json=True, threads=policy)
    out, err = capsys.readouterr()

    def refuse(name):
        raise AssertionError(f"not JSON: {name}")

    data = json.loads(out, parse_constant=refuse)
    assert data["fp32_top1"] is None and data["within_budget"] is False
    assert data["thread_policy"] == policy
    assert "not measured" in err
